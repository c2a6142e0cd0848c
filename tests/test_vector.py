"""Vectorized notebooks: our vector env, gymnasium's vectorizers, no cross-talk, clean close."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import glob
import json
import os

import gymnasium as gym
import numpy as np
import psutil
import pytest
from gymnasium.vector import AutoresetMode

import l0_env
from l0_env.checker import spawned_pids
from l0_env.policies import OraclePolicy
from l0_env.vector import NotebookVectorEnv, info_at

SANDBOX = "bwrap"
TRIVIAL = "<think>A trivial computation step.</think><code>print(6 * 7)</code>"


def kernel_processes() -> list[psutil.Process]:
    """Live processes this test started: its descendants and the kernels forked for it."""
    out = []
    for pid in spawned_pids():
        with contextlib.suppress(psutil.Error):
            out.append(psutil.Process(pid))
    return out


def runtime_dirs() -> set[str]:
    return set(glob.glob(os.path.join(os.environ["L0_RUNTIME_DIR"], "l0k-*")))


def episode_script(i: int) -> list[str]:
    """A per-env episode whose outputs depend on state kept in the kernel between steps."""
    return [
        f"<think>Remember my number in the kernel.</think><code>secret = {i} * 1000 + 7\nopen('mine.txt', 'w').write(str(secret))\nprint('set', secret)</code>",
        "<think>Read back what I stored before.</think><code>import os\nprint(secret, open('mine.txt').read(), sorted(f for f in os.listdir('.') if not f.startswith('.')))</code>",
        "<think>Search and answer with my number.</think><code>hits = web_search('Harvey Pekar', k=2)\nprint(len(hits))\nsubmit_final_answer(str(secret))</code>",
    ]


def outcome(step_result) -> tuple:
    _obs, reward, terminated, truncated, info = step_result
    outputs = tuple(o["text"] for o in info["cell_outputs"])
    return outputs, round(reward, 9), terminated, truncated, info["final_answer"]


def test_make_vec_returns_our_vector_env_with_the_gymnasium_api():
    venv = gym.make_vec(
        l0_env.ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", sandbox=SANDBOX, max_steps=2
    )
    try:
        assert isinstance(venv, NotebookVectorEnv)
        assert venv.single_observation_space == l0_env.ChatSpace()
        assert len(venv.action_space.spaces) == 3
        obs, infos = venv.reset(seed=10)
        assert len(obs) == 3 and all(venv.single_observation_space.contains(o) for o in obs)
        assert infos["_task"].all()
        obs, rewards, terminated, truncated, infos = venv.step([TRIVIAL] * 3)
        assert rewards.dtype == np.float64 and rewards.shape == (3,)
        assert terminated.dtype == bool and truncated.dtype == bool
        assert all("42" in o[-1]["content"] for o in obs)
        # max_steps=2: the second step truncates, the third (next-step autoreset) resets
        _, _, _, truncated, _ = venv.step([TRIVIAL] * 3)
        assert truncated.all()
        obs, rewards, terminated, truncated, infos = venv.step(["ignored"] * 3)
        assert (rewards == 0).all() and not truncated.any() and (infos["step"] == 0).all()
    finally:
        venv.close()


def test_same_step_autoreset_puts_the_final_observation_in_infos():
    venv = NotebookVectorEnv(2, autoreset_mode="same_step", sandbox=SANDBOX, max_steps=1)
    try:
        venv.reset(seed=0)
        obs, _, _, truncated, infos = venv.step([TRIVIAL] * 2)
        assert truncated.all()
        assert "42" in infos["final_obs"][0][-1]["content"]
        assert all(len(o) == 2 for o in obs), "obs is the new episode's first observation"
        assert info_at(infos, 1)["final_info"]["step"] == 1
    finally:
        venv.close()


def test_disabled_autoreset_refuses_to_step_a_finished_env():
    venv = NotebookVectorEnv(2, autoreset_mode=AutoresetMode.DISABLED, sandbox=SANDBOX, max_steps=1)
    try:
        venv.reset(seed=0)
        venv.step([TRIVIAL] * 2)
        with pytest.raises(RuntimeError, match="reset"):
            venv.step([TRIVIAL] * 2)
        venv.reset(options={"reset_mask": np.array([True, True])})
        venv.step([TRIVIAL] * 2)
    finally:
        venv.close()


def test_indexed_async_and_streaming_steps():
    venv = NotebookVectorEnv(3, sandbox=SANDBOX, max_steps=3)
    try:
        venv.reset_some({0: {"seed": 1}, 2: {"seed": 2}})
        slow = (
            "<think>This cell takes a while.</think><code>import time; time.sleep(1.5); print('slow')</code>"
        )
        order = [i for i, _ in venv.iter_step_some({0: slow, 2: TRIVIAL})]
        assert order == [2, 0], "the fast env's result arrives first"

        async def rollout():
            return await asyncio.gather(
                venv.astep(0, TRIVIAL), venv.areset(1, seed=5), venv.astep(2, TRIVIAL)
            )

        (step0, reset1, step2) = asyncio.run(rollout())
        assert step0[4]["step"] == 2 and reset1[1]["step"] == 0 and step2[4]["step"] == 2
        with pytest.raises(IndexError):
            venv.step_some({3: TRIVIAL})
    finally:
        venv.close()


def test_submit_step_and_submit_reset_return_futures():
    venv = NotebookVectorEnv(2, sandbox=SANDBOX, max_steps=2)
    try:
        resets = [venv.submit_reset(i, seed=i) for i in range(2)]
        assert all(isinstance(f, cf.Future) for f in resets)
        assert all(f.result()[1]["step"] == 0 for f in resets)
        slow = "<think>This cell takes a while.</think><code>import time; time.sleep(2); print('slow')</code>"
        futures = {venv.submit_step(0, slow): 0, venv.submit_step(1, TRIVIAL): 1}
        done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
        assert [futures[f] for f in done] == [1], "the fast env's future is done first"
        (fast_result,) = done
        assert "42" in fast_result.result()[0][-1]["content"]
        assert [f.result()[4]["step"] for f in futures] == [1, 1]
        # The batched API sees envs reset through submit_reset as reset (no autoreset step).
        venv.reset(seed=0)
        _, _, _, truncated, _ = venv.step([TRIVIAL] * 2)
        _, _, _, truncated, _ = venv.step([TRIVIAL] * 2)
        assert truncated.all()
        assert [venv.submit_reset(i).result()[1]["step"] for i in range(2)] == [0, 0]
        _, _, _, _, infos = venv.step([TRIVIAL] * 2)
        assert (infos["step"] == 1).all()
        with pytest.raises(IndexError):
            venv.submit_step(2, TRIVIAL)
    finally:
        venv.close()
    with pytest.raises(RuntimeError, match="closed"):
        venv.submit_reset(0)


def test_32_concurrent_sandboxed_episodes_equal_the_same_episodes_run_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("L0_RUNTIME_DIR", str(tmp_path))  # a private place: other runs make l0k-* dirs too
    n = 32
    tasks = [
        {"id": f"t{i}", "question": f"What is secret {i}?", "answers": [str(i * 1000 + 7)]} for i in range(n)
    ]
    before_procs = {p.pid for p in kernel_processes()}
    before_dirs = runtime_dirs()
    venv = NotebookVectorEnv(n, sandbox=SANDBOX, tasks=tasks, max_steps=4)
    try:
        venv.reset_some({i: {"options": {"task_index": i}} for i in range(n)})
        together = {i: [] for i in range(n)}
        for t in range(3):
            for i, result in venv.step_some({i: episode_script(i)[t] for i in range(n)}).items():
                together[i].append(outcome(result))
        assert len({p.pid for p in kernel_processes()} - before_procs) >= n
    finally:
        venv.close()
    assert {p.pid for p in kernel_processes()} <= before_procs, (
        "closing left kernel or bwrap processes behind"
    )
    assert runtime_dirs() <= before_dirs, "closing left runtime directories (sockets) behind"
    alone_env = gym.make(l0_env.ENV_ID, sandbox=SANDBOX, tasks=tasks, max_steps=4)
    try:
        for i in (0, 13, 31):
            alone_env.reset(options={"task_index": i})
            alone = [outcome(alone_env.step(a)) for a in episode_script(i)]
            assert together[i] == alone, f"env {i} differs from the same episode run alone"
    finally:
        alone_env.close()
    for i in range(n):
        assert together[i][-1][2] is True and together[i][-1][4] == str(i * 1000 + 7)
        assert together[i][1][0][0].startswith(f"{i * 1000 + 7} {i * 1000 + 7} ['mine.txt']")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_gymnasium_vectorizers_work_with_shared_memory_off(mode):
    kwargs = {"shared_memory": False} if mode == "async" else {}
    venv = gym.make_vec(
        l0_env.ENV_ID, num_envs=2, vectorization_mode=mode, vector_kwargs=kwargs, sandbox=SANDBOX, max_steps=3
    )
    try:
        venv.reset(seed=0)
        obs, rewards, *_ = venv.step([TRIVIAL, TRIVIAL.replace("6 * 7", "6 * 8")])
        assert "42" in obs[0][-1]["content"] and "48" in obs[1][-1]["content"], (
            "fresh strings, not stale ones"
        )
        assert rewards.tolist() == pytest.approx([0.2, 0.2])
    finally:
        venv.close()


def test_async_with_shared_memory_fails_loudly_instead_of_returning_stale_text():
    with pytest.raises(ValueError, match="shared_memory"):
        gym.make_vec(l0_env.ENV_ID, num_envs=2, vectorization_mode="async", sandbox=SANDBOX)


def test_recording_works_in_every_flavour(tmp_path):
    oracle = OraclePolicy("gold", read_steps=1)
    venv = NotebookVectorEnv(2, sandbox=SANDBOX, max_steps=3, record_dir=str(tmp_path / "vec"))
    try:
        results = venv.reset_some({0: {"seed": 0}, 1: {"seed": 1}})
        state = {i: info for i, (_, info) in results.items()}
        for _ in range(2):
            for i, (_obs, _, _, _, info) in venv.step_some(
                {i: oracle(None, state[i]) for i in range(2)}
            ).items():
                state[i] = info
        paths = venv.save_notebooks(str(tmp_path / "nb"))
        assert len(paths) == 2
    finally:
        venv.close()
    lines = (tmp_path / "vec" / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["metrics"]["em"] == 1.0 for line in lines)
    assert len(list((tmp_path / "vec").glob("*.ipynb"))) == 2
    sync = gym.make_vec(
        l0_env.ENV_ID,
        num_envs=2,
        vectorization_mode="sync",
        sandbox=SANDBOX,
        max_steps=1,
        record_dir=str(tmp_path / "sync"),
    )
    try:
        sync.reset(seed=0)
        sync.step([TRIVIAL, TRIVIAL])
    finally:
        sync.close()
    assert len((tmp_path / "sync" / "episodes.jsonl").read_text().splitlines()) == 2
