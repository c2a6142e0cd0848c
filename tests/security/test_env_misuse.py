"""The Python API under misuse: failed resets, odd actions, records that cannot be written, fork.

Each case once broke the env from the outside (a careless caller, not the agent): the first step
after a failed reset raised TypeError after its cell ran; a failed reset left the old episode
running with the new task; an action whose ``__str__`` raised escaped ``env.step``; the last step
raised when the record could not be written (its reward lost); ``print('<think>')`` in code scored
format 0; and searches in gymnasium's async vector workers all timed out when the parent had
searched before forking.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gymnasium as gym
import pytest

import l0_env
from l0_env.checker import spawned_pids

from .conftest import TASK, TinySearch, cell_text, make_env, step

OTHER_TASK = {"id": "t1", "question": "Who designed the Analytical Engine?", "answers": ["Charles Babbage"]}


def live_children() -> set[int]:
    return spawned_pids()  # forked kernels live outside this process's tree


@pytest.mark.parametrize(
    "bad_reset",
    [
        {"options": {"task_index": None}},
        {"options": {"task": 5}},
        {"options": {"task": {"question": "no answer"}}},
        {"options": "task_index=1"},
        {"seed": -1},
    ],
    ids=["task_index-None", "task-int", "task-no-answer", "options-str", "seed-negative"],
)
def test_a_failed_first_reset_does_not_break_the_next_episode(secret_env, bad_reset):
    env = make_env()
    try:
        with pytest.raises((ValueError, gym.error.Error)):
            env.reset(**bad_reset)
        env.reset(seed=0)
        _, terminated, info = step(env, "print(6 * 7)")
        assert info["cell_status"] == "ok" and "42" in cell_text(info) and not terminated
        _, terminated, info = step(env, "submit_final_answer('Ada Lovelace')")
        assert terminated and info["reward_components"]["em"] == 1.0
    finally:
        env.close()


def test_a_reset_that_fails_half_way_ends_the_episode_cleanly(secret_env):
    """The old episode does not go on under the new task, and no kernel is left running."""
    env = make_env(tasks=[TASK, OTHER_TASK])
    try:
        env.reset(options={"task_index": 0})
        step(env, "x = 1")
        kernels = live_children()
        assert kernels
        with pytest.raises(ValueError, match="task_index"):
            env.reset(options={"task_index": "1"})
        with pytest.raises(RuntimeError, match="reset"):
            env.step("<think>go on</think><code>submit_final_answer('Ada Lovelace')</code>")
        assert not (kernels & live_children()), "the failed reset left the old kernel running"
        env.reset(options={"task_index": 1})
        _, terminated, info = step(env, "print('x' in dir())\nsubmit_final_answer('Charles Babbage')")
        assert "False" in cell_text(info), "the next episode must start on a fresh kernel"
        assert terminated and info["reward_components"]["em"] == 1.0
        assert info["task"]["id"] == "t1"
    finally:
        env.close()


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text here")


class Weird(str):
    def replace(self, *args, **kwargs):  # a str subclass with hostile methods
        raise RuntimeError("no replacing")


def test_actions_that_are_not_text_get_an_observation_not_an_exception(env):
    obs, reward, terminated, truncated, info = env.step(Unprintable())
    assert "could not be read as text" in obs[-1]["content"] and "RuntimeError" in obs[-1]["content"]
    assert reward == 0.0 and info["reward_components"]["format"] == 0.0 and not (terminated or truncated)
    _, _, _, _, info = env.step(
        Weird("<think>a str subclass with odd methods</think><code>print(6 * 7)</code>")
    )
    assert "42" in cell_text(info) and info["reward_components"]["format"] == 1.0
    _, _, _, _, info = env.step(
        bytearray(b"<think>bytes are decoded as UTF-8</think><code>print(6 * 8)</code>")
    )
    assert "48" in cell_text(info)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("<think>I print a tag.</think><code>print('<think>')</code>", "<think>"),
        ("<think>Then a <code> block runs; it ends at </code>.</think><code>print('ran')</code>", "ran"),
        ('<think>Closing tag in a string.</think><code>print("</code>" + "!")</code>', "</code>!"),
    ],
)
def test_tags_mentioned_in_think_or_printed_by_code_keep_format_1(env, action, expected):
    _, _, _, _, info = env.step(action)
    assert info["format_problems"] == [] and info["reward_components"]["format"] == 1.0
    assert info["cell_status"] == "ok" and cell_text(info).strip() == expected


def test_a_record_dir_that_breaks_mid_run_costs_no_step_result(secret_env, tmp_path: Path):
    """The final step still returns (reward, terminated) and says in info that recording failed."""
    record_dir = tmp_path / "records"
    env = make_env(record_dir=str(record_dir))
    try:
        env.reset(seed=0)
        shutil.rmtree(record_dir, ignore_errors=True)
        record_dir.write_text("a file where the directory was")
        _, reward, terminated, _, info = env.step(
            "<think>answer</think><code>submit_final_answer('Ada Lovelace')</code>"
        )
        assert terminated and reward > 0.8 and info["reward_components"]["em"] == 1.0
        assert "record_error" in info and "Error" in info["record_error"], info.get("record_error")
        assert env.unwrapped.episode.final_answer == "Ada Lovelace"
    finally:
        env.close()


def test_async_vector_workers_search_after_the_parent_searched(secret_env):
    """Forked workers inherit no thread pool: each makes its own, so their searches answer."""
    parent = make_env()
    try:
        parent.reset(seed=0)
        _, _, info = step(parent, "print(len(web_search('Analytical Engine')))")
        assert "2" in cell_text(info), cell_text(info)  # the parent's backend pool now has threads
    finally:
        parent.close()
    venv = gym.make_vec(
        l0_env.ENV_ID,
        num_envs=2,
        vectorization_mode="async",
        vector_kwargs={"shared_memory": False},
        tasks=[TASK],
        search=TinySearch(),
        sandbox="bwrap",
        pool_size=0,
        tool_timeout=15,
        max_steps=3,
    )
    try:
        venv.reset(seed=0)
        action = "<think>search</think><code>print('HITS', len(web_search('Ada', k=2)))</code>"
        obs, *_ = venv.step([action, action])
        for messages in obs:
            assert "HITS 2" in messages[-1]["content"], messages[-1]["content"]
    finally:
        venv.close()
