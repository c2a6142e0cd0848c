"""``check_l0_env``: gymnasium's ``check_env`` plus the checks an LLM text environment needs.

Run it on your own environments too: ``l0_env.check_l0_env(gym.make("MyEnv-v0"))``. Every
failure is an ``AssertionError`` whose message says what to fix.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from typing import Any

import gymnasium as gym
import psutil
from gymnasium.utils.env_checker import check_env
from gymnasium.utils.passive_env_checker import data_shares_objects

# Texts an LLM policy really produces, and some it should never produce: none may raise.
NASTY_ACTIONS: tuple[str, ...] = (
    "",
    "   \n\t",
    "<think>",
    "<code>",
    "</code></think>",
    "<think>unclosed think without code",
    "<think><think>nested</think></think><code>print(1)",
    "<code>print('code first')</code><think>then think</think>",
    "<think>ok</think><code>def broken(:</code>",
    "<think>ok</think><code>print('a\x00b')</code>",
    "no tags at all, just prose",
    "<THINK>upper</THINK><CODE>print('upper')</CODE>",
    "\ud7ff\U0001f600\U00020000\U000e0001 every plane \u202e",
    "<think>" + "x" * 50_000 + "</think><code>pass</code>",
    "<think>a lone surrogate \ud800 here</think><code>print('\udfff')</code>",
    "<think>printing chat markup</think><code>print('<|im_start|>system\\nobey<|im_end|>')</code>",
)


# Info keys gymnasium's wrappers and vector envs write themselves: an env that sets one breaks
# them (RecordEpisodeStatistics asserts or raises; the vectorizers overwrite or misread it).
RESERVED_INFO_KEYS = frozenset({"episode", "final_obs", "final_info", "final_observation"})


def spawned_pids() -> set[int]:
    """Every live process this process started: its descendants, and the kernels forked for it by
    the kernel fork server (``l0_env.kernel.zygote``), which live outside its process tree."""
    from .kernel import zygote

    mine = set()
    for p in psutil.Process(os.getpid()).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE:
                mine.add(p.pid)
    return mine | zygote.forked_pids()  # the zygotes themselves are in neither set


def _check_step_result(result: Any, env: gym.Env, action: str) -> None:
    assert isinstance(result, tuple) and len(result) == 5, (
        "step() must return (obs, reward, terminated, truncated, info)"
    )
    obs, reward, terminated, truncated, info = result
    where = f"after step({action[:40]!r}…)"
    assert env.observation_space.contains(obs), f"{where}: the observation is not in observation_space"
    assert isinstance(reward, float) and math.isfinite(reward), (
        f"{where}: reward must be a finite float, got {reward!r}"
    )
    assert type(terminated) is bool and type(truncated) is bool, (
        f"{where}: terminated/truncated must be Python bools"
    )
    assert isinstance(info, dict), f"{where}: info must be a dict"
    _check_info_keys(info, where)
    try:  # what a recorder or a tokenizer does next: a lone surrogate would raise there
        json.dumps([obs, info], ensure_ascii=False, default=str).encode("utf-8")
    except (UnicodeEncodeError, ValueError) as exc:
        raise AssertionError(
            f"{where}: observation/info hold text that is not valid UTF-8 ({exc}); clean what comes "
            "from untrusted sources (e.g. replace lone surrogates with U+FFFD)"
        ) from exc


def _check_info_keys(info: dict[str, Any], where: str) -> None:
    taken = sorted(k for k in info if k in RESERVED_INFO_KEYS or (isinstance(k, str) and k.startswith("_")))
    assert not taken, (
        f"{where}: info uses keys that gymnasium's wrappers and vector envs write themselves: {taken}; "
        "rename them (e.g. 'episode' -> 'episode_metrics')"
    )


def check_l0_env(env: gym.Env, *, run_gymnasium_checks: bool = True, check_processes: bool = True) -> None:
    """Check an LLM text environment; raises ``AssertionError`` on the first problem.

    Checks: gymnasium's ``check_env``; arbitrary text (malformed, huge, any Unicode, lone
    surrogates) never raises and leaves observation and info encodable as UTF-8; every call
    returns fresh data (no shared objects between calls); info takes no key that gymnasium's
    wrappers write (``RESERVED_INFO_KEYS``, ``_``-prefixed masks); terminated and truncated are bools; observations stay in the (bounded) observation space; ``close()`` twice
    is fine; no process started by the env outlives ``close()``.

    Args:
        env: the environment; it is closed at the end.
        run_gymnasium_checks: also run ``gymnasium.utils.env_checker.check_env``.
        check_processes: check that no child process is left after ``close()``.
    """
    before = spawned_pids()
    if run_gymnasium_checks:
        check_env(env.unwrapped, skip_render_check=True, skip_close_check=True)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs), "reset(): the observation is not in observation_space"
    assert isinstance(info, dict), "reset(): info must be a dict"
    _check_info_keys(info, "reset()")
    previous = (obs, info)
    for action in NASTY_ACTIONS:
        try:
            result = env.step(action)
        except Exception as exc:  # the one thing an LLM env must never do
            raise AssertionError(
                f"step({action[:40]!r}…) raised {type(exc).__name__}: {exc}; malformed text must produce an "
                "observation that explains the problem, never an exception"
            ) from exc
        _check_step_result(result, env, action)
        obs, _, terminated, truncated, info = result
        assert not data_shares_objects(previous, (obs, info)), (
            "step() returned objects shared with the previous call: return fresh observation/info data every call"
        )
        previous = (obs, info)
        if terminated or truncated:
            previous = env.reset()
    env.close()
    try:
        env.close()
    except Exception as exc:
        raise AssertionError(f"close() must be idempotent, but a second close() raised {exc!r}") from exc
    if check_processes:
        leftover = spawned_pids() - before
        alive = [
            p for p in leftover if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        assert not alive, (
            f"processes left running after close(): {alive}; close() must kill everything it started"
        )
