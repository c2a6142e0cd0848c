"""Fixtures for the attack tests: a real env over the real bubblewrap sandbox.

Every attack runs as agent code through ``env.step`` and is checked twice: the attack failed, and
the env still works afterwards (a print and a ``web_search`` call succeed).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import gymnasium as gym
import psutil
import pytest

import l0_env
from l0_env.kernel import zygote
from l0_env.kernel.sandbox import SandboxLimits, check_bwrap
from l0_env.tools.search import Hit, Page, PageNotFound, SearchBackend

SECRET_NAME, SECRET_VALUE = "L0_TEST_SECRET", "s3cr3t-l0-test-value"
# The project checkout, wherever it is (/work/main here, a fresh clone elsewhere in CI).
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(l0_env.__file__)))
# Generous: under load (other test suites, other engineers' work) an ordinary cell that walks
# directories or starts a subprocess can take seconds, and a cell timeout in a test that is not
# about timeouts only makes it flaky. Tests of the timeout itself use SHORT_CELL_TIMEOUT.
CELL_TIMEOUT = 60.0
SHORT_CELL_TIMEOUT = 3.0
LIMITS = SandboxLimits(disk_bytes=32 << 20, max_file_bytes=16 << 20, max_processes=64)
# The whole suite runs once per kernel start mode: against spawned kernels and against kernels
# forked from the warm zygote (l0_env/kernel/zygote.py; root hosts). L0_TEST_KERNEL_START=spawn (or
# zygote) runs one mode only.
KERNEL_STARTS = (
    [os.environ["L0_TEST_KERNEL_START"]] if "L0_TEST_KERNEL_START" in os.environ else ["spawn", "zygote"]
)
_mode = {"kernel_start": KERNEL_STARTS[0]}
TASK = {"id": "t0", "question": "Who wrote the Analytical Engine notes?", "answers": ["Ada Lovelace"]}


@pytest.fixture(scope="session", autouse=True)
def requires_bwrap() -> None:
    """The suite is about the real sandbox: without bubblewrap there is nothing to test."""
    problem = check_bwrap()
    if problem is not None:
        pytest.skip(f"bubblewrap unavailable: {problem}")


@pytest.fixture(scope="session", autouse=True, params=KERNEL_STARTS)
def kernel_start(request) -> Iterator[str]:
    """The start mode every env of the suite uses now (the suite runs once per mode: session scope,
    so pytest runs all tests in one mode, then all in the other)."""
    if request.param == "zygote" and zygote.unsupported_reason(True) is not None:
        pytest.skip(f"forked kernels: {zygote.unsupported_reason(True)}")
    _mode["kernel_start"] = request.param
    yield request.param


@pytest.fixture(autouse=True)
def kernels_really_forked(kernel_start: str) -> Iterator[None]:
    """In zygote mode a fallback to spawning would let the suite pass without testing forked
    kernels: every test fails that caused one."""
    before = zygote.fallbacks
    yield
    if kernel_start == "zygote":
        assert zygote.fallbacks == before, "a zygote start fell back to spawning (see the warning logged)"


class TinySearch(SearchBackend):
    """Two passages, answered instantly: the attacks test the sandbox, not retrieval."""

    PAGES: ClassVar[dict[str, Page]] = {
        "p1": Page("p1", "Ada Lovelace", "Ada Lovelace wrote notes on the Analytical Engine."),
        "p2": Page("p2", "Charles Babbage", "Babbage designed the Analytical Engine."),
    }

    def search(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        hits = [Hit(p.doc_id, p.title, p.text[:40], 1.0) for p in self.PAGES.values()][:k]
        return [list(hits) for _ in queries]

    def get(self, doc_id: str) -> Page:
        if doc_id not in self.PAGES:
            raise PageNotFound(doc_id)
        return self.PAGES[doc_id]


def make_env(**kwargs: Any) -> gym.Env:
    options = dict(
        tasks=[TASK],
        search=TinySearch(),
        sandbox="bwrap",
        cell_timeout=CELL_TIMEOUT,
        limits=LIMITS,
        pool_size=0,
        max_steps=100,
        max_output_chars=2_000,
        kernel_start=_mode["kernel_start"],
    )
    options.update(kwargs)
    return gym.make("L0Notebook-v0", **options)


@pytest.fixture(scope="module")
def secret_env() -> Iterator[None]:
    """A host secret in the test process's environment before any kernel starts."""
    old = os.environ.get(SECRET_NAME)
    os.environ[SECRET_NAME] = SECRET_VALUE
    yield
    if old is None:
        os.environ.pop(SECRET_NAME, None)
    else:
        os.environ[SECRET_NAME] = old


@pytest.fixture(scope="module")
def shared_env(secret_env: None, kernel_start: str) -> Iterator[gym.Env]:
    env = make_env()
    yield env
    env.close()


@pytest.fixture
def env(shared_env: gym.Env) -> gym.Env:
    """The module's env, reset to a fresh episode (a fresh kernel) for each test."""
    shared_env.reset(seed=0)
    return shared_env


def step(env: gym.Env, code: str) -> tuple[str, bool, dict[str, Any]]:
    """Run ``code`` as the agent; returns (observation text of this step, terminated, info)."""
    obs, _reward, terminated, _truncated, info = env.step(f"<think>attack</think><code>{code}</code>")
    return obs[-1]["content"], terminated, info


def cell_text(info: dict[str, Any]) -> str:
    return "\n".join(o["text"] for o in info["cell_outputs"])


def kernel_of(env: gym.Env):
    kernel = env.unwrapped.kernel
    assert kernel is not None, "no kernel: call reset() first"
    return kernel


def assert_env_works(env: gym.Env) -> None:
    """The env still runs code and tools after an attack."""
    _, terminated, info = step(env, "print('still', 'alive', 6 * 7)")
    assert info["cell_status"] == "ok", cell_text(info)
    assert "still alive 42" in cell_text(info)
    assert not terminated
    _, _, info = step(env, "hits = web_search('Analytical Engine', k=2)\nprint(len(hits), hits[0]['id'])")
    assert info["cell_status"] == "ok", cell_text(info)
    assert "2 p1" in cell_text(info), cell_text(info)


def uid_processes(uid: int) -> list[psutil.Process]:
    """Live (non-zombie) host processes running as ``uid``."""
    found = []
    for proc in psutil.process_iter(["uids", "status"]):
        uids = proc.info["uids"]
        if uids is not None and uid in (uids.real, uids.effective) and proc.info["status"] != "zombie":
            found.append(proc)
    return found


def processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] != "zombie" and any(text in part for part in cmdline):
            found.append(proc)
    return found


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# Kernel-side source of a raw client for the tool bridge: ``raw(payload) -> reply bytes``, bypassing
# the tool proxies' own checks. ``BRIDGE`` is the socket path (see ``bridge_client``).
RAW_BRIDGE_CLIENT = """
import socket as _rs
def raw(payload, read=True, timeout=20):
    s = _rs.socket(_rs.AF_UNIX, _rs.SOCK_STREAM); s.settimeout(timeout)
    s.connect(BRIDGE); s.sendall(payload)
    data = b''
    while read and not data.endswith(b'\\n'):
        c = s.recv(65536)
        if not c:
            break
        data += c
    s.close()
    return data
"""


def bridge_client(env: gym.Env) -> str:
    """Code that defines ``BRIDGE`` and ``raw()`` in the kernel (prefix it to an attack)."""
    return f"BRIDGE = {kernel_of(env).bridge.path!r}\n{RAW_BRIDGE_CLIENT}\n"


def fresh_env(**kwargs: Any) -> Iterator[gym.Env]:
    """A separate env (for tests that need their own configuration), reset and closed after."""
    env = make_env(**kwargs)
    try:
        env.reset(seed=0)
        yield env
    finally:
        env.close()
