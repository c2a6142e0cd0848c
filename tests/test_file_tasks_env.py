"""The bundled file tasks (``l0_env/data/file_tasks``, GAIA's layout) through the real sandbox:
the oracle solves every one with reward 1.0 (reading the files with ``view_file`` and the parser
libraries inside the sandbox), and a random policy solves none."""

from __future__ import annotations

import gymnasium as gym
import pytest

import l0_env
from l0_env.kernel.sandbox import check_bwrap
from l0_env.policies import FileTaskOracle, RandomPolicy
from l0_env.tasks import FILE_TASKS_DIR, load_tasks

pytestmark = pytest.mark.skipif(check_bwrap() is not None, reason=f"bubblewrap unavailable: {check_bwrap()}")

TASKS = load_tasks(FILE_TASKS_DIR)


def play(env: gym.Env, policy, index: int) -> dict:
    obs, info = env.reset(options={"task_index": index})
    while True:
        obs, _reward, terminated, truncated, info = env.step(policy(obs, info))
        if terminated or truncated:
            return info


@pytest.fixture(scope="module")
def env():
    env = gym.make(l0_env.ENV_ID, tasks=str(FILE_TASKS_DIR), sandbox="bwrap", cell_timeout=120, max_steps=4)
    yield env
    env.close()


def test_the_bundled_set_covers_the_formats() -> None:
    names = {f.rsplit(".", 1)[-1] for t in TASKS for f in t.files}
    assert {"csv", "xlsx", "pdf", "docx", "json", "html", "md", "png"} <= names
    assert any(not t.files for t in TASKS)
    assert any(t.numeric_tolerance is not None for t in TASKS)


def test_the_oracle_solves_every_bundled_task_with_reward_one(env) -> None:
    oracle = FileTaskOracle()
    for i, task in enumerate(TASKS):
        info = play(env, oracle, i)
        metrics = info["episode_metrics"]
        outputs = "\n".join(o["text"] for o in info["cell_outputs"])
        assert info["final_answer"] is not None, (task.id, outputs)
        assert metrics["em"] == 1.0, (task.id, info["final_answer"], task.answers, outputs)
        assert metrics["return"] == pytest.approx(1.0), (task.id, metrics)


def test_a_random_policy_solves_none(env) -> None:
    for seed in range(2):
        policy = RandomPolicy(seed=seed)
        for i in range(len(TASKS)):
            info = play(env, policy, i)
            assert info["episode_metrics"]["em"] == 0.0, (TASKS[i].id, info["final_answer"])
            assert info["episode_metrics"]["return"] < 0.5
