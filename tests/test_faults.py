"""Fault injection for the env: the kernel killed from the host (mid-cell and between steps), and
tool backends that raise or hang. Every case must end in a clear message to the agent, a usable
env, and an intact episode record (earlier steps unchanged, notepad restored).

The learner and the search server have their own fault tests.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import psutil
import pytest

import l0_env  # noqa: F401  (registers L0Notebook-v0)
from l0_env.kernel.sandbox import SandboxLimits, check_bwrap
from l0_env.tools.search import Hit
from tests.security.conftest import TinySearch

SANDBOX = "bwrap" if check_bwrap() is None else "none"
TASK = {"id": "t0", "question": "Who wrote the Analytical Engine notes?", "answers": ["Ada Lovelace"]}
# Generous (an ordinary cell under load can take seconds); the test of the cell timeout sets its own.
CELL_TIMEOUT = 60.0
SHORT_CELL_TIMEOUT = 3.0


def make_env(**kwargs: Any) -> gym.Env:
    options: dict[str, Any] = dict(
        tasks=[TASK],
        search=TinySearch(),
        sandbox=SANDBOX,
        cell_timeout=CELL_TIMEOUT,
        limits=SandboxLimits(disk_bytes=16 << 20),
        pool_size=0,
        max_steps=50,
    )
    options.update(kwargs)
    return gym.make("L0Notebook-v0", **options)


@pytest.fixture(scope="module")
def shared_env() -> Iterator[gym.Env]:
    env = make_env()
    yield env
    env.close()


@pytest.fixture
def env(shared_env: gym.Env) -> gym.Env:
    shared_env.reset(seed=0)
    return shared_env


def act(env: gym.Env, code: str) -> tuple[str, dict[str, Any]]:
    obs, _, _, _, info = env.step(f"<think>a step of the fault test</think><code>{code}</code>")
    return obs[-1]["content"], info


def text_of(info: dict[str, Any]) -> str:
    return "\n".join(o["text"] for o in info["cell_outputs"])


def kernel_pids(env: gym.Env) -> tuple[int, int]:
    """(the launcher's pid: bwrap or python, the ipykernel python's pid)."""
    kernel = env.unwrapped.kernel
    for pid in kernel.process_pids():  # a forked kernel is not under its launcher
        proc = psutil.Process(pid)
        if "ipykernel_launcher" in proc.cmdline() and proc.name().startswith("python"):
            return kernel.pid, proc.pid
    raise AssertionError("no ipykernel process under the kernel's launcher")


def prepare(env: gym.Env) -> list[dict[str, Any]]:
    """Two steps of history and a notepad; returns a copy of the steps' records."""
    act(env, "notepad.add_fact('author', 'Ada')\nnotepad.add_todo('verify')\nx = 41")
    act(env, "x += 1\nprint(x)")
    return [s.to_dict() for s in env.unwrapped.episode.steps]


def assert_recovered(env: gym.Env, before: list[dict[str, Any]]) -> None:
    """Earlier steps intact, notepad restored, code and tools run, the episode can finish."""
    steps = env.unwrapped.episode.steps
    assert [s.to_dict() for s in steps[: len(before)]] == before, "a fault altered earlier steps"
    _, info = act(env, "print(notepad.facts, [i['text'] for i in notepad.plan])")
    assert "{'author': 'Ada'} ['verify']" in text_of(info), text_of(info)
    _, info = act(env, "print(len(web_search('Ada', k=2)), 6 * 7)")
    assert info["cell_status"] == "ok" and "2 42" in text_of(info), text_of(info)
    _, _, terminated, _, info = env.step(
        "<think>finish the episode</think><code>submit_final_answer('Ada Lovelace')</code>"
    )
    assert terminated and info["episode_metrics"]["em"] == 1.0


def kill_later(pid: int, delay: float) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("target", ["launcher", "ipykernel"])
def test_kernel_killed_mid_cell(env, target):
    before = prepare(env)
    launcher, ipykernel = kernel_pids(env)
    killer = kill_later(launcher if target == "launcher" else ipykernel, 1.0)
    started = time.monotonic()
    obs_text, info = act(env, "import time\nprint('working', flush=True)\ntime.sleep(20)\nprint('never')")
    killer.join()
    assert time.monotonic() - started < 15
    assert info["cell_status"] == "died" and info["kernel_restarted"]
    assert "KernelDied" in obs_text and "restarted" in obs_text and "variables" in obs_text, obs_text
    assert "working" in obs_text  # output before the kill is kept
    assert not psutil.pid_exists(launcher) or psutil.Process(launcher).status() == psutil.STATUS_ZOMBIE
    assert_recovered(env, before)


def test_kernel_killed_between_steps(env):
    before = prepare(env)
    launcher, _ = kernel_pids(env)
    os.kill(launcher, signal.SIGKILL)
    time.sleep(0.3)
    obs_text, info = act(env, "print('x' in dir(), 'fresh')")
    assert info["cell_status"] == "ok" and info["kernel_restarted"]
    assert "False fresh" in text_of(info)
    assert "KernelRestarted" in obs_text and "variables" in obs_text, obs_text  # the agent is told
    assert info["reward_components"]["code"] == 1.0  # not the agent's error
    assert_recovered(env, before)


def test_killed_between_episodes_reset_recovers():
    env = make_env(pool_size=1)  # the warm spare is killed while it waits
    try:
        env.reset(seed=0)
        pool = env.unwrapped.kernel_pool
        assert pool.wait_ready(timeout=60)
        spare = pool._ready[0]
        os.kill(spare.pid, signal.SIGKILL)
        spare._proc.wait(timeout=10)
        env.reset(seed=1)
        _, info = act(env, "print('ok', 1)")
        assert info["cell_status"] == "ok" and "ok 1" in text_of(info)
        assert not info["kernel_restarted"]  # a dead spare is replaced, not handed out
    finally:
        env.close()


class RaisingSearch(TinySearch):
    def search(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        raise ConnectionError("the retrieval service is down")


class HangingSearch(TinySearch):
    """Hangs on the first query until ``release`` is set (at most a minute), then answers normally."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def search(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        self.calls += 1
        if self.calls == 1:
            self.release.wait(timeout=60)
        return super().search(queries, k)


def test_search_backend_that_raises():
    env = make_env(search=RaisingSearch())
    try:
        env.reset(seed=0)
        obs_text, info = act(env, "try:\n    web_search('x')\nexcept ToolError as e:\n    print('caught', e)")
        assert "caught web_search failed on the host (ConnectionError); try again" in obs_text
        assert info["tool_calls"] and info["tool_calls"][0]["tool"] == "web_search"
        obs_text, info = act(env, "web_search('x')")  # uncaught: a clear error, not a crash
        assert info["cell_status"] == "error" and "ToolError" in obs_text and not info["kernel_restarted"]
        _, info = act(env, "print(open_page('p1')[:40])")
        assert "Ada Lovelace" in text_of(info)
        _, _, terminated, _, _ = env.step(
            "<think>answer it now</think><code>submit_final_answer('Ada Lovelace')</code>"
        )
        assert terminated
    finally:
        env.close()


def test_search_backend_that_hangs_past_the_tool_timeout():
    """A hung backend call is abandoned at ``tool_timeout``: the agent gets a ToolError, the bridge
    is free for the next call, and a call that finishes late does not touch the next episode."""
    search = HangingSearch()
    env = make_env(search=search, tool_timeout=1.0)
    try:
        env.reset(seed=0)
        started = time.monotonic()
        obs_text, info = act(
            env, "try:\n    web_search('slow')\nexcept ToolError as e:\n    print('caught', e)"
        )
        assert "caught web_search timed out after 1s" in obs_text, obs_text
        assert time.monotonic() - started < CELL_TIMEOUT
        assert info["tool_calls"][0]["ok"] is False
        _, info = act(env, "print(len(web_search('queued', k=2)))")  # the bridge serves again at once
        assert info["cell_status"] == "ok" and "2" in text_of(info), text_of(info)
        env.reset(seed=1)
        search.release.set()  # the abandoned call returns now, after the reset
        _, info = act(env, "print('fresh', 1)")
        assert info["tool_calls"] == [], "a late call from the last episode must not land in this one"
    finally:
        search.release.set()
        env.close()


def test_search_backend_that_hangs_past_the_cell_timeout():
    """With a tool timeout longer than the cell's, the cell is interrupted and the agent told."""
    search = HangingSearch()
    env = make_env(search=search, tool_timeout=60.0, cell_timeout=SHORT_CELL_TIMEOUT)
    try:
        env.reset(seed=0)
        obs_text, info = act(env, "hits = web_search('slow')")
        assert info["cell_status"] == "timeout" and "TimeoutError" in obs_text, obs_text
        assert not info["kernel_restarted"]  # the interrupt reached Python code: no restart
        _, info = act(env, "print('no tools', 1 + 1)")
        assert info["cell_status"] == "ok" and "no tools 2" in text_of(info)
        search.release.set()  # the backend comes back
        _, info = act(env, "print(len(web_search('fast', k=2)))")
        assert info["cell_status"] == "ok" and "2" in text_of(info), text_of(info)
        _, _, terminated, _, _ = env.step(
            "<think>answer it now</think><code>submit_final_answer('Ada Lovelace')</code>"
        )
        assert terminated
    finally:
        search.release.set()
        env.close()


def test_one_kernel_killed_in_a_vector_env_leaves_the_others_alone():
    from l0_env.vector import NotebookVectorEnv

    venv = NotebookVectorEnv(
        3, pool_size=0, tasks=[TASK], search=TinySearch(), sandbox=SANDBOX, cell_timeout=CELL_TIMEOUT
    )
    try:
        venv.reset(seed=0)
        action = "<think>sleep a little then print</think><code>import time; time.sleep(2); print('done', 7)</code>"
        killer = kill_later(venv.envs[1].kernel.pid, 0.8)
        results = venv.step_some({0: action, 1: action, 2: action})
        killer.join()
        statuses = {i: r[4]["cell_status"] for i, r in results.items()}
        assert statuses == {0: "ok", 1: "died", 2: "ok"}, statuses
        again = venv.step_some({i: action for i in range(3)})
        assert all(r[4]["cell_status"] == "ok" for r in again.values())
    finally:
        venv.close()
