"""The env under gymnasium's standard wrappers, single and vectorized, as a new user would stack them.

``RecordEpisodeStatistics`` writes ``info["episode"]``; the env used to write that key itself at
an episode's end, so the single-env wrapper failed its assertion and the vector one raised
``ValueError: Attempted to add episode stats with key 'episode' but this key already exists``.
The env's metrics are ``info["episode_metrics"]`` now. ``TimeLimit`` cuts an episode without the
env's final scoring; these tests pin down exactly what happens then (see ``NotebookEnv``'s docstring).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import RecordEpisodeStatistics, TimeLimit
from gymnasium.wrappers.vector import RecordEpisodeStatistics as VectorRecordEpisodeStatistics

import l0_env
from l0_env import rewards as R
from l0_env.checker import check_l0_env
from l0_env.kernel.sandbox import check_bwrap
from l0_env.spaces import ChatSpace, TextSpace
from l0_env.vector import NotebookVectorEnv, info_at
from tests.security.conftest import TinySearch

SANDBOX = "bwrap" if check_bwrap() is None else "none"
TASK = {"id": "t0", "question": "Who wrote the Analytical Engine notes?", "answers": ["Ada Lovelace"]}
PRINT = "<think>Look first.</think><code>print(6 * 7)</code>"
SUBMIT = "<think>I know it.</think><code>submit_final_answer('Ada Lovelace')</code>"
SETTINGS: dict[str, Any] = dict(tasks=[TASK], search=TinySearch(), sandbox=SANDBOX, cell_timeout=60.0)


def make(**kwargs: Any) -> gym.Env:
    return gym.make(l0_env.ENV_ID, **{**SETTINGS, "pool_size": 0, **kwargs})


def test_record_episode_statistics_adds_episode_beside_the_envs_own_metrics() -> None:
    env = RecordEpisodeStatistics(make(max_steps=4))
    try:
        env.reset(seed=0)
        rewards = []
        for action in (PRINT, SUBMIT):
            _, reward, terminated, truncated, info = env.step(action)
            rewards.append(reward)
        assert terminated and not truncated
        assert info["episode"]["l"] == 2 and info["episode"]["r"] == pytest.approx(sum(rewards))
        metrics = info["episode_metrics"]
        assert metrics["return"] == pytest.approx(sum(rewards)) and metrics["length"] == 2
        assert metrics["em"] == 1.0 and metrics["tool_calls"] == {"submit_final_answer": 1}
    finally:
        env.close()


@pytest.mark.parametrize("how", ["TimeLimit", "make(max_episode_steps=)"])
def test_an_outer_time_limit_ends_the_episode_unscored_with_the_envs_own_rewards(how: str) -> None:
    """What the env docstring promises: an ordinary last step (qa None, no metrics, no record),
    rewards that still sum to L0's trajectory reward with qa 0, and a clean next reset."""
    env = TimeLimit(make(max_steps=5), 2) if how == "TimeLimit" else make(max_steps=5, max_episode_steps=2)
    try:
        env.reset(seed=0)
        rewards, infos = [], []
        for action in (PRINT, "no tags: a format error"):
            _, reward, terminated, truncated, info = env.step(action)
            rewards.append(reward)
            infos.append(info)
        assert truncated and not terminated, "the wrapper truncates at its limit"
        last = infos[-1]
        assert last["reward_components"]["qa"] is None and "em" not in last["reward_components"]
        assert "episode_metrics" not in last
        episode = env.unwrapped.episode
        assert not episode.terminated and not episode.truncated and episode.metrics == {}
        formats = [i["reward_components"]["format"] for i in infos]
        codes = [i["reward_components"]["code"] for i in infos]
        assert formats == [1.0, 0.0] and codes == [1.0, 0.0]
        assert sum(rewards) == pytest.approx(R.trajectory_reward(formats, codes, 0.0))
        assert env.unwrapped.kernel is not None, "the kernel is held until the next reset"
        env.reset(seed=1)
        _, _, terminated, _, info = env.step(SUBMIT)
        assert terminated and info["episode_metrics"]["em"] == 1.0 and info["step"] == 1
    finally:
        env.close()


def test_the_envs_own_step_limit_scores_where_an_outer_time_limit_does_not() -> None:
    env = make(max_steps=2)
    try:
        env.reset(seed=0)
        rewards = [env.step(PRINT)[1] for _ in range(1)]
        _, reward, terminated, truncated, info = env.step("no tags: a format error")
        rewards.append(reward)
        assert truncated and not terminated
        assert info["reward_components"]["qa"] == 0.0 and info["reward_components"]["has_answer"] == 0.0
        assert info["episode_metrics"]["return"] == pytest.approx(sum(rewards))
        assert sum(rewards) == pytest.approx(R.trajectory_reward([1.0, 0.0], [1.0, 0.0], 0.0))
    finally:
        env.close()


def _run_vector_episode(venv: gym.vector.VectorEnv) -> dict[str, Any]:
    venv.reset(seed=0)
    _, rewards_1, _, _, _ = venv.step([PRINT, PRINT])
    _, rewards_2, terminated, _, infos = venv.step([SUBMIT, SUBMIT])
    assert terminated.all()
    assert infos["_episode"].all()
    np.testing.assert_allclose(infos["episode"]["r"], rewards_1 + rewards_2)
    assert (infos["episode"]["l"] == 2).all()
    for i in range(2):
        metrics = info_at(infos, i)["episode_metrics"]
        assert metrics["em"] == 1.0 and metrics["return"] == pytest.approx(rewards_1[i] + rewards_2[i])
    return infos


def test_vector_record_episode_statistics_on_gymnasiums_sync_vector_env() -> None:
    venv = VectorRecordEpisodeStatistics(
        gym.make_vec(
            l0_env.ENV_ID, num_envs=2, vectorization_mode="sync", pool_size=0, max_steps=4, **SETTINGS
        )
    )
    try:
        _run_vector_episode(venv)
        assert len(venv.return_queue) == 2
    finally:
        venv.close()


@pytest.mark.parametrize("build", ["NotebookVectorEnv", "make_vec(vector_entry_point)"])
def test_vector_record_episode_statistics_on_our_vector_env(build: str) -> None:
    if build == "NotebookVectorEnv":
        inner = NotebookVectorEnv(2, pool_size=0, max_steps=4, **SETTINGS)
    else:
        inner = gym.make_vec(
            l0_env.ENV_ID,
            num_envs=2,
            vectorization_mode="vector_entry_point",
            pool_size=0,
            max_steps=4,
            **SETTINGS,
        )
    venv = VectorRecordEpisodeStatistics(inner)
    try:
        _run_vector_episode(venv)
        # next-step autoreset: the round after the end resets, and the statistics start over
        venv.step([PRINT, PRINT])
        _, rewards, _, _, infos = venv.step([SUBMIT, SUBMIT])
        assert "episode" in infos and (infos["episode"]["l"] == 1).all()
        np.testing.assert_allclose(infos["episode"]["r"], rewards)
    finally:
        venv.close()


def _documented_keys(doc: str) -> set[str]:
    """The ``key`` names in the first column of a docstring's reST table."""
    lines = doc.splitlines()
    border = next(line for line in lines if line.strip().startswith("===="))
    start = border.index("=")
    width = len(border[start:].split(" ")[0])
    inside = [i for i, line in enumerate(lines) if line.strip().startswith("====")]
    keys: set[str] = set()
    for line in lines[inside[0] + 1 : inside[1]]:
        first = line[start : start + width].strip()
        keys.update(k.strip("`") for k in first.split(", ") if k.startswith("``"))
    return keys


def test_reset_and_step_docstrings_list_every_info_key_they_return() -> None:
    env = make(max_steps=2)
    try:
        _, reset_info = env.reset(seed=0)
        assert set(reset_info) == _documented_keys(l0_env.NotebookEnv.reset.__doc__ or "")
        step_keys = _documented_keys(l0_env.NotebookEnv.step.__doc__ or "")
        _, _, _, _, info = env.step(PRINT)
        assert set(info) <= step_keys, f"undocumented: {set(info) - step_keys}"
        _, _, terminated, _, info = env.step(SUBMIT)
        assert terminated and set(info) <= step_keys, f"undocumented: {set(info) - step_keys}"
        assert step_keys - set(info) == {"record_error"}, "only the failure-only key is absent"
    finally:
        env.close()


class _EnvWritingEpisode(gym.Env):
    """A text env that makes the old mistake: its own ``info["episode"]``."""

    def __init__(self) -> None:
        self.observation_space = ChatSpace()
        self.action_space = TextSpace(max_length=100_000)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return [{"role": "user", "content": "Say something."}], {}

    def step(self, action: Any):
        return [{"role": "user", "content": "Done."}], 0.0, True, False, {"episode": {"return": 0.0}}


def test_check_l0_env_refuses_info_keys_that_gymnasiums_wrappers_write() -> None:
    with pytest.raises(AssertionError, match=r"\['episode'\].*episode_metrics"):
        check_l0_env(_EnvWritingEpisode(), run_gymnasium_checks=False, check_processes=False)
