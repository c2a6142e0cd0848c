"""Fault injection for the search server, with the real pieces: ``python -m l0_env.tools.search_server``
as a subprocess on 127.0.0.1, the sandboxed notebook env searching through it (``search=URL``),
and the server frozen (SIGSTOP) or killed (SIGKILL) while the agent's query is in flight.

Every case must end in a ToolError the agent reads in its observation (no exception out of
``env.step``, no wait past the tool timeout), an episode that goes on, and search that works again
through the same env (the same pooled HTTP client) once the server is back on the same port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import httpx
import pytest

pytest.importorskip("fastapi", reason="the 'server' extra is not installed")
pytest.importorskip("uvicorn", reason="the 'server' extra is not installed")

import l0_env
from l0_env.kernel.sandbox import check_bwrap

ROOT = Path(__file__).resolve().parents[1]
SANDBOX = "bwrap" if check_bwrap() is None else "none"
PASSAGES = [
    {"id": "p1", "title": "Ada Lovelace", "text": "Ada Lovelace was an English mathematician and writer."},
    {"id": "p2", "title": "Charles Babbage", "text": "Babbage designed the Analytical Engine, a computer."},
    {"id": "p3", "title": "Alan Turing", "text": "Turing was a pioneer of theoretical computer science."},
]
TASK = {"id": "t0", "question": "Who designed the Analytical Engine?", "answers": ["Charles Babbage"]}
SEARCH = "print([h['id'] for h in web_search('Analytical Engine Babbage', k=2)])"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SearchServer:
    """``python -m l0_env.tools.search_server`` on 127.0.0.1:``port``, started and killed for real."""

    def __init__(self, corpus: Path, cache: Path, port: int) -> None:
        self.corpus, self.cache, self.port = corpus, cache, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SearchServer:
        cmd = [sys.executable, "-m", "l0_env.tools.search_server", "--corpus", str(self.corpus)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--cache-dir", str(self.cache)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180  # imports and the index build, on a busy machine
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1, trust_env=False).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise AssertionError(f"the search server exited (rc {self.proc.returncode}):\n{out}")
            assert time.monotonic() < deadline, "the search server did not come up"
            time.sleep(0.1)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("search-faults")
    path = d / "passages.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PASSAGES))
    return path, d / "cache"


@pytest.fixture
def server(corpus: tuple[Path, Path]) -> Iterator[SearchServer]:
    srv = SearchServer(*corpus, port=free_port()).start()
    yield srv
    if srv.proc is not None and srv.proc.poll() is None:
        srv.signal(signal.SIGCONT)
    srv.kill()


def make_env(search: Any, **kwargs: Any) -> gym.Env:
    return gym.make(
        l0_env.ENV_ID, tasks=[TASK], search=search, sandbox=SANDBOX, pool_size=0, max_steps=20, **kwargs
    )


def act(env: gym.Env, code: str) -> tuple[str, dict[str, Any], float]:
    started = time.monotonic()
    obs, _, terminated, truncated, info = env.step(f"<think>search fault test</think><code>{code}</code>")
    assert not terminated and not truncated
    return obs[-1]["content"], info, time.monotonic() - started


def assert_search_works(env: gym.Env) -> None:
    text, info, _ = act(env, SEARCH)
    assert info["cell_status"] == "ok", text
    assert "['p2'" in text, text


def test_server_killed_mid_query_is_a_tool_error_and_search_recovers_on_restart(
    server: SearchServer, corpus: tuple[Path, Path]
) -> None:
    env = make_env(server.url)  # the one setting: HTTPSearch with its default timeouts and retries
    tool_timeout = env.unwrapped.tool_timeout
    try:
        env.reset(seed=0)
        assert_search_works(env)  # the client's pool now holds a keep-alive connection
        # Freeze the server: the next query is sent and hangs; kill the server 1 s into it.
        server.signal(signal.SIGSTOP)
        killer = threading.Timer(1.0, server.kill)
        killer.start()
        text, info, elapsed = act(env, SEARCH)
        killer.join()
        assert info["cell_status"] == "error", text
        assert "ToolError" in text and "web_search failed" in text and server.url in text, text
        assert "search is unavailable right now" in text, text
        assert info["tool_calls"][0]["ok"] is False
        assert 1.0 <= elapsed < tool_timeout, (
            f"the agent waited {elapsed:.1f}s (tool timeout {tool_timeout}s)"
        )

        _, info, _ = act(env, "print(6 * 7)")  # the episode goes on
        assert info["cell_status"] == "ok" and info["cell_outputs"][0]["text"].strip() == "42"

        # The server comes back on the same port: the same env (same pooled client) searches again.
        restarted = SearchServer(*corpus, port=server.port).start()
        server.proc = restarted.proc
        assert_search_works(env)
        assert_search_works(env)
        _, _, terminated, _, info = env.step(
            "<think>done</think><code>submit_final_answer('Charles Babbage')</code>"
        )
        assert terminated and info["episode_metrics"]["em"] == 1.0
    finally:
        env.close()


def test_server_frozen_mid_query_is_abandoned_at_the_tool_timeout(server: SearchServer) -> None:
    """A server that accepts the query and never answers: the agent hears about it at the tool
    timeout (the client's own timeouts and retries would take 40 s); when the server wakes up,
    the same env searches again."""
    env = make_env(server.url, tool_timeout=2.0)
    try:
        env.reset(seed=0)
        assert_search_works(env)
        server.signal(signal.SIGSTOP)
        text, info, elapsed = act(env, SEARCH)
        assert info["cell_status"] == "error", text
        assert "ToolError" in text and "web_search timed out after 2s" in text, text
        assert elapsed < 2.0 + 3.0, f"the agent waited {elapsed:.1f}s"
        server.signal(signal.SIGCONT)
        assert_search_works(env)
        _, _, terminated, _, _ = env.step(
            "<think>done</think><code>submit_final_answer('Charles Babbage')</code>"
        )
        assert terminated
    finally:
        env.close()
