"""Tasks whose answer is a number: the stated number against the gold's, with a tolerance."""

from __future__ import annotations

import gymnasium as gym
import pytest

import l0_env
from l0_env import rewards as R
from l0_env.answers import numbers_match, parse_number
from l0_env.tasks import task_from_mapping


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1234", 1234.0),
        (" 1,234.5 ", 1234.5),
        ("$12", 12.0),
        ("-$3.50", -3.5),
        ("12%", 12.0),
        ("-3e2", -300.0),
        (".5", 0.5),
        ("about 12", None),
        ("12 apples", None),
        ("1,23", None),  # not thousands grouping
        ("nan", None),
        ("inf", None),
        ("1e999", None),
        ("", None),
        ("twelve", None),
    ],
)
def test_numbers_are_read_from_how_answers_write_them(text: str, value: float | None) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize(
    ("prediction", "golds", "tolerance", "score"),
    [
        ("1,234", ["1234"], 1e-6, 1.0),
        ("1234.0", ["1234"], 1e-6, 1.0),
        ("$1234", ["1234"], 1e-6, 1.0),
        ("1234.5", ["1234"], 1e-6, 0.0),
        ("101", ["100"], 0.01, 1.0),
        ("102", ["100"], 0.01, 0.0),
        ("0.0000001", ["0"], 1e-6, 1.0),  # absolute near zero
        ("3", ["three", "3"], 1e-6, 1.0),  # a text alias is skipped, a numeric one counts
        ("three", ["3"], 1e-6, 0.0),
        (None, ["3"], 1e-6, 0.0),
    ],
)
def test_numbers_match_within_the_tolerance(prediction, golds, tolerance, score) -> None:
    assert numbers_match(prediction, golds, tolerance=tolerance) == score


def test_the_answer_reward_scores_numbers_without_partial_credit() -> None:
    weights = R.RewardWeights.preset("paper")  # 0.5 EM + 0.4 F1 + 0.1 has_answer
    assert weights.qa_reward("1,234", ["1234"], tolerance=1e-6) == pytest.approx(1.0)
    assert weights.qa_reward("1,235", ["1234"], tolerance=1e-6) == pytest.approx(0.1)
    assert weights.qa_reward("1,234", ["1234"]) == pytest.approx(1.0), "as text, the comma is punctuation"
    assert weights.qa_reward("1234.0", ["1234"]) == pytest.approx(0.1), "as text, 1234.0 is 12340"


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({"question": "Q?", "answers": ["many"], "answer_type": "number"}, "is no number"),
        ({"question": "Q?", "answers": ["3"], "answer_type": "integer"}, "answer_type must be"),
        ({"question": "Q?", "answers": ["3"], "answer_type": "number", "tolerance": -1}, "tolerance must be"),
        (
            {"question": "Q?", "answers": ["3"], "answer_type": "number", "tolerance": "1%"},
            "tolerance must be",
        ),
    ],
)
def test_bad_numeric_tasks_are_refused_with_the_reason(row: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        task_from_mapping(row, default_id="t0")


def test_an_episode_with_a_numeric_answer_scores_the_number() -> None:
    task = {"question": "What is the total of the amounts?", "answers": ["1234"], "answer_type": "number"}
    env = gym.make(l0_env.ENV_ID, sandbox="bwrap", tasks=[task], pool_size=0, cell_timeout=60)
    try:
        env.reset(seed=0)
        *_, terminated, _, info = env.step(
            "<think>Sum, then answer.</think><code>submit_final_answer('1,234.0')</code>"
        )
        assert terminated
        assert info["reward_components"]["em"] == 1.0 and info["reward_components"]["f1"] == 1.0
    finally:
        env.close()


def test_the_trl_reward_reads_numeric_rows_from_the_dataset_columns() -> None:
    from l0_env.trl_rewards import QAReward

    completions = ["<think>The total.</think><code>submit_final_answer('1,234.0')</code>"] * 2
    scores = QAReward()(
        ["q", "q"],
        completions,
        answers=[["1234"], ["1234"]],
        answer_type=["number", "text"],
        tolerance=[None, None],
    )
    assert scores == [pytest.approx(1.0), pytest.approx(0.1)]
