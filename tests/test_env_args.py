"""Every numeric argument of ``gym.make("L0Notebook-v0", ...)`` is checked at construction.

``cell_timeout=nan`` used to disable the cell timeout (``while True: pass`` then hung ``env.step``
for good), a negative ``max_context_tokens`` ended every episode at step 1, a typo in a
``tool_budgets`` name silently removed that budget, and dicts for ``limits``/``reward_weights``
failed late. No kernel starts here: a bad value must fail before any does.
"""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import pytest

import l0_env
from l0_env.kernel.sandbox import SandboxLimits
from l0_env.rewards import RewardWeights

TASKS = [{"question": "Q?", "answers": ["a"]}]
NAN, INF = math.nan, math.inf

BAD_VALUES = {
    "cell_timeout": [NAN, INF, -INF, 0, -1, "30", True, None],
    "tool_timeout": [NAN, INF, 0, -0.5, "20", False],
    "max_steps": [0, -3, 2.0, NAN, True, "12"],
    "max_context_tokens": [-1, 0, 10, 1.5e4, NAN, INF, True],
    "max_action_chars": [0, -5, 100.0, NAN, None],
    "max_output_chars": [0, 99, -1, 4000.0, NAN],
    "pool_size": [-1, 1.0, NAN, "1"],
}


def make(**kwargs):
    return gym.make(l0_env.ENV_ID, tasks=TASKS, sandbox="none", **kwargs)


@pytest.mark.parametrize(
    ("name", "value"), [(name, value) for name, values in BAD_VALUES.items() for value in values]
)
def test_bad_numbers_are_a_value_error_naming_the_argument(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        make(**{name: value})


@pytest.mark.parametrize(
    ("budgets", "fragment"),
    [
        ({"web_serach": 5}, "unknown tool 'web_serach'"),
        ({"web_search": -1}, "tool_budgets\\['web_search'\\]"),
        ({"web_search": NAN}, "tool_budgets\\['web_search'\\]"),
        ({"open_page": 2.5}, "tool_budgets\\['open_page'\\]"),
        ({"open_page": True}, "tool_budgets\\['open_page'\\]"),
        (["web_search"], "tool_budgets must be a mapping"),
    ],
)
def test_tool_budgets_names_and_values_are_checked(budgets: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        make(tool_budgets=budgets)


def test_limits_and_reward_weights_are_accepted_as_dicts() -> None:
    env = make(
        limits={"memory_bytes": 1 << 30, "max_processes": 32}, reward_weights={"qa": 0.7, "format": 0.2}
    )
    try:
        limits = env.unwrapped.kernel_config.limits
        assert isinstance(limits, SandboxLimits) and (limits.memory_bytes, limits.max_processes) == (
            1 << 30,
            32,
        )
        weights = env.unwrapped.reward_weights
        assert isinstance(weights, RewardWeights) and (weights.qa, weights.format, weights.code) == (
            0.7,
            0.2,
            0.1,
        )
    finally:
        env.close()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"limits": {"memory": 1}}, "limits: unknown keys \\['memory'\\]"),
        ({"limits": {"memory_bytes": -1}}, "limits: SandboxLimits.memory_bytes must be a positive int"),
        ({"limits": "2GB"}, "limits must be a SandboxLimits or a dict"),
        (
            {"reward_weights": {"qa_weight": 1.0}},
            "reward_weights: unknown RewardWeights field\\(s\\) \\['qa_weight'\\]",
        ),
        ({"reward_weights": {"qa": NAN}}, "reward_weights: RewardWeights.qa must be a finite number"),
        (
            {"reward_weights": {"format": "0.1"}},
            "reward_weights: RewardWeights.format must be a finite number",
        ),
        ({"reward_weights": {"answer_metric": "bleu"}}, "reward_weights: answer_metric"),
        ({"reward_weights": "l1"}, "reward_weights: unknown reward preset 'l1'"),
        ({"reward_weights": 0.8}, "reward_weights: reward weights must be a RewardWeights"),
        ({"count_tokens": 4}, "count_tokens must be a callable"),
        ({"kernel_pool": "shared"}, "kernel_pool must be a KernelPool"),
    ],
)
def test_other_arguments_are_refused_clearly(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        make(**kwargs)


def test_record_dir_is_checked_at_construction(tmp_path: Path) -> None:
    """An unwritable record_dir used to fail only at the final step, losing that step's reward."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    for bad in (a_file, a_file / "below", "/proc/l0-cannot-create-here"):
        with pytest.raises(ValueError, match=r"record_dir .* cannot be written"):
            make(record_dir=bad)
    env = make(record_dir=tmp_path / "new" / "dir")
    env.close()
    assert (tmp_path / "new" / "dir").is_dir() and not list((tmp_path / "new" / "dir").iterdir())


def test_good_values_still_build() -> None:
    env = make(
        cell_timeout=0.5,
        tool_timeout=1,
        max_steps=1,
        max_context_tokens=8_000,
        max_action_chars=1,
        max_output_chars=100,
        pool_size=0,
        tool_budgets={"web_search": 0, "open_page": 3, "submit_final_answer": 1},
    )
    env.close()
