"""MCP servers as tools, against a real MCP server (``tests/mcp_servers/geo_server.py``, written
with the official SDK) over stdio and over streamable HTTP on 127.0.0.1, through the real sandbox.

The server's tools are ``geo.<tool>(...)`` in the kernel with keyword arguments from their input
schemas (checked with jsonschema on the host); its failures, a 100 MB result, a hang and a crash
are ``ToolError`` s and the episode goes on; ``close`` leaves no process.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import psutil
import pytest

import l0_env
from l0_env.checker import check_l0_env
from l0_env.mcp_tools import MCPStartError

pytest.importorskip("mcp")

SERVER = str(Path(__file__).parent / "mcp_servers" / "geo_server.py")
STDIO = {"command": sys.executable, "args": [SERVER]}


def make(**kwargs: Any) -> gym.Env:
    kwargs = {"mcp_servers": {"geo": STDIO}, "tool_timeout": 3, **kwargs}
    return gym.make(l0_env.ENV_ID, sandbox="bwrap", pool_size=0, cell_timeout=300, max_steps=20, **kwargs)


def run(env: gym.Env, code: str) -> tuple[str, dict[str, Any]]:
    _obs, _r, _term, _trunc, info = env.step(f"<think>Use the MCP tools.</think><code>{code}</code>")
    return "\n".join(o.get("text", "") for o in info["cell_outputs"]), info


def server_processes(besides: set[int] = frozenset()) -> list[psutil.Process]:  # type: ignore[assignment]
    """The test server's processes under this one, except the pids in ``besides`` (the module's env's)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if (
                p.pid not in besides
                and SERVER in " ".join(p.cmdline())
                and p.status() != psutil.STATUS_ZOMBIE
            ):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def running_pids() -> set[int]:
    return {p.pid for p in server_processes()}


@pytest.fixture(scope="module")
def env():
    env = make()
    yield env
    env.close()


def test_the_servers_tools_are_an_object_in_the_kernel_and_in_the_prompt(env) -> None:
    obs, _ = env.reset(seed=0)
    system = obs[0]["content"]
    assert "geo.distance(*, a, b, unit=...)" in system and "Great-circle distance" in system
    assert "bad-name" not in system, "a tool name the kernel cannot use is skipped"
    text, info = run(
        env,
        "print(geo.distance(a='paris', b='berlin'))\nprint(geo.capital(country='Italy'))\nprint(geo)\n"
        "help(geo.capital)",
    )
    assert info["cell_status"] == "ok", text
    assert '"distance": 877.5' in text
    assert "{'text': 'Rome', 'structured': {'result': 'Rome'}}" in text, "structured content where given"
    assert "<tools of geo: big, capital, crash, distance, fail, huge, sleep>" in text
    assert "The capital of a country." in text
    assert [c["tool"] for c in info["tool_calls"]] == ["geo.distance", "geo.capital"]


def test_arguments_are_checked_against_the_input_schema(env) -> None:
    env.reset(seed=0)
    code = (
        "for call in [lambda: geo.distance(a=1, b='rome'), lambda: geo.distance(a='paris'),\n"
        "             lambda: geo.distance('paris', 'rome'), lambda: geo.capital(country='x', extra=1)]:\n"
        "    try:\n"
        "        call()\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__, '|', exc)\n"
    )
    lines = run(env, code)[0].splitlines()
    assert lines[0] == "TypeError | geo.distance: a: 1 is not of type 'string'"
    assert lines[1].startswith(
        "TypeError | geo.distance(*, a, b, unit=...): missing a required argument: 'b'"
    )
    assert lines[2].startswith("TypeError | geo.distance(*, a, b, unit=...): too many positional arguments")
    assert lines[3].startswith(
        "TypeError | geo.capital(*, country): got an unexpected keyword argument 'extra'"
    )


def test_a_tool_error_and_a_hang_are_tool_errors_and_the_episode_goes_on(env) -> None:
    env.reset(seed=0)
    started = time.monotonic()
    code = (
        "for call in [lambda: geo.fail(reason='bad input'), lambda: geo.sleep(seconds=60)]:\n"
        "    try:\n"
        "        call()\n"
        "    except ToolError as exc:\n"
        "        print(exc)\n"
        "print(geo.capital(country='France')['text'])\n"
    )
    text, info = run(env, code)
    lines = text.splitlines()
    assert info["cell_status"] == "ok", text
    assert lines[0].startswith("geo.fail reported an error: Error executing tool fail")
    assert lines[1] == "geo.sleep timed out after 3s; try again"
    assert lines[2] == "Paris", "the server still answers after a hung call"
    assert time.monotonic() - started < 50, "the hung call was abandoned, not waited for"


def test_results_past_the_size_cap_are_refused(env) -> None:
    env.reset(seed=0)
    text, info = run(env, "try:\n    geo.big()\nexcept ToolError as e:\n    print(e)\nprint('next')")
    assert info["cell_status"] == "ok", text
    # 5 MB of text, twice: as text and as structured content
    assert text.startswith("geo.big returned 10,000,0") and "at most 1,048,576" in text, text
    assert text.splitlines()[-1] == "next"


def test_a_100_mb_result_ends_in_a_tool_error_at_the_deadline_and_close_stops_it() -> None:
    """The SDK's stdio reader must take the whole line before anything can refuse it (and it
    joins the chunks quadratically): the agent gets a ToolError at the tool's deadline, the
    episode goes on, and close stops the server and the read."""
    before = running_pids()
    env = make()
    try:
        env.reset(seed=0)
        text, info = run(env, "try:\n    geo.huge()\nexcept ToolError as e:\n    print(e)\nprint('next')")
        assert info["cell_status"] == "ok", text
        assert text.splitlines() == ["geo.huge timed out after 3s; try again", "next"], text
    finally:
        env.close()
    assert server_processes(before) == []


def test_a_crashed_server_is_a_tool_error_and_close_leaves_no_process() -> None:
    before = running_pids()
    env = make()
    try:
        assert len(server_processes(before)) == 1
        env.reset(seed=0)
        text, info = run(env, "try:\n    geo.crash()\nexcept ToolError as e:\n    print(e)\nprint(1 + 1)")
        assert info["cell_status"] == "ok" and text.splitlines()[-1] == "2", text
        assert text.startswith("geo.crash: the MCP server 'geo' stopped"), text
        text, info = run(env, "geo.capital(country='France')")
        assert info["cell_status"] == "error" and "ToolError" in text and "not running" in text, text
    finally:
        env.close()
    assert server_processes(before) == []


def test_close_stops_the_stdio_server() -> None:
    before = running_pids()
    env = make()
    (proc,) = server_processes(before)
    env.close()
    assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    assert server_processes(before) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_streamable_http_server_by_url_and_check_env() -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, SERVER, "--http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the HTTP server did not start"
                time.sleep(0.2)
        env = make(mcp_servers={"geo": f"http://127.0.0.1:{port}/mcp"})
        try:
            env.reset(seed=0)
            text, _ = run(env, "print(geo.capital(country='Germany')['text'])")
            assert text.strip() == "Berlin"
            check_l0_env(env)
        finally:
            env.close()
        assert server.poll() is None, "a server the env did not start is left running"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize(
    ("servers", "fragment"),
    [
        ({"geo": "ftp://127.0.0.1/x"}, "must be http"),
        ({"geo": {"command": 5}}, "must be a URL or"),
        ({"geo": {"command": "python", "argv": []}}, "unknown key 'argv'"),
        ({"geo": {"command": "python", "args": "x.py"}}, "list of str"),
        ({"print": STDIO}, "taken in the kernel"),
        ({"web_search": STDIO}, "names both a tool and a server"),
        (["geo"], "must be a mapping"),
    ],
)
def test_bad_server_specs_fail_at_make_with_the_reason(servers: Any, fragment: str) -> None:
    before = running_pids()
    with pytest.raises(ValueError, match=fragment):
        make(mcp_servers=servers)
    assert server_processes(before) == []


def test_a_server_that_does_not_start_is_refused_at_make_and_nothing_is_left() -> None:
    before = running_pids()
    with pytest.raises(MCPStartError, match=r"MCP server 'geo' .* failed"):
        make(mcp_servers={"geo": {"command": sys.executable, "args": ["-c", "import sys; sys.exit(3)"]}})
    with pytest.raises(ValueError, match="max_context_tokens"):  # a later argument error: the server stops
        make(max_context_tokens=10)
    assert server_processes(before) == []
