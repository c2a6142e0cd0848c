"""Tests for l0_env.rewards, l0_env.answers and l0_env.trl_rewards: SQuAD/HotpotQA metrics, L0's
reward combination and presets, TRL callables."""

from __future__ import annotations

import math
import pickle
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l0_env.actions import parse_action
from l0_env.rewards import (
    REWARD_PRESETS,
    RewardWeights,
    as_reward_weights,
    code_execution_reward,
    exact_match,
    f1_score,
    format_reward,
    has_answer,
    l0_step_rewards,
    normalize_answer,
    online_step_reward,
    qa_reward,
    trajectory_reward,
)
from l0_env.trl_rewards import FormatReward, QAReward, completion_text, extract_final_answer

GOOD = "<think>The answer is clearly Paris.</think><code>submit_final_answer('Paris')</code>"

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)

# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The Beatles!", "beatles"),
        ("  A   cat, an apple; THE end.  ", "cat apple end"),
        ("theatre", "theatre"),  # articles only as whole words
        ("an", ""),
        ("U.S.A.", "usa"),
        ("", ""),
        ("Hello\tworld\n", "hello world"),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


@given(st.text())
@settings(max_examples=500)
def test_normalize_is_idempotent(s: str) -> None:
    once = normalize_answer(s)
    assert normalize_answer(once) == once


# --------------------------------------------------------------------------- EM / F1 / has-answer


def test_exact_match_squad_examples() -> None:
    assert exact_match("The Beatles!", ["beatles"]) == 1.0
    assert exact_match("beatles", ["Rolling Stones", "The Beatles"]) == 1.0
    assert exact_match("Beatles band", ["beatles"]) == 0.0
    assert exact_match("Paris", "paris") == 1.0  # a bare string is one gold


@pytest.mark.parametrize("pred", [None, "", "   ", "the", "!!!"])
def test_empty_prediction_scores_zero(pred: str | None) -> None:
    assert exact_match(pred, ["a", ""]) == 0.0
    assert f1_score(pred, ["a", ""]) == 0.0


def test_exact_match_no_golds() -> None:
    assert exact_match("x", []) == 0.0
    assert f1_score("x", []) == 0.0


def test_f1_examples() -> None:
    assert f1_score("yes", ["no"]) == 0.0
    assert f1_score("yes", ["yes"]) == 1.0
    assert f1_score("no", ["no answer no"]) == 0.0  # special answer on one side only
    assert f1_score("noanswer", ["noanswer"]) == 1.0
    assert f1_score("The Beatles", ["beatles"]) == 1.0
    # pred tokens {barack, obama}, gold {obama}: p=1/2, r=1 -> 2/3
    assert f1_score("Barack Obama", ["Obama"]) == pytest.approx(2 / 3)
    assert f1_score("Barack Obama", ["Michelle", "Obama"]) == pytest.approx(2 / 3)  # best over golds
    assert f1_score("red blue", ["green"]) == 0.0


def test_f1_counts_repeated_tokens() -> None:
    # common = min counts: {a: 1} ... "x x y" vs "x y y": common x1 y1 = 2, p = r = 2/3
    assert f1_score("x x y", ["x y y"]) == pytest.approx(2 / 3)


def test_has_answer() -> None:
    assert has_answer("Paris") == 1.0
    assert has_answer("  ") == 0.0
    assert has_answer("") == 0.0
    assert has_answer(None) == 0.0
    assert has_answer("the") == 1.0  # submitted, even if it normalises to nothing


def test_qa_reward() -> None:
    assert qa_reward("Paris", ["paris"]) == pytest.approx(1.0)
    assert qa_reward("London", ["paris"]) == pytest.approx(0.1)
    assert qa_reward(None, ["paris"]) == 0.0
    assert qa_reward("Barack Obama", ["Obama"], metric="f1") == pytest.approx(0.9 * 2 / 3 + 0.1)
    assert qa_reward("Paris", ["paris"], em_weight=0.5, has_answer_weight=0.5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="metric"):
        qa_reward("x", ["x"], metric="bleu")


@given(st.one_of(st.none(), st.text()), st.lists(st.text(), max_size=4))
@settings(max_examples=300)
def test_answer_metrics_in_range(pred: str | None, golds: list[str]) -> None:
    em, f1 = exact_match(pred, golds), f1_score(pred, golds)
    assert em in (0.0, 1.0)
    assert 0.0 <= f1 <= 1.0
    assert f1 >= em  # an exact match has F1 1
    assert 0.0 <= qa_reward(pred, golds) <= 1.0 + 1e-12
    assert 0.0 <= qa_reward(pred, golds, metric="f1") <= 1.0 + 1e-12


# --------------------------------------------------------------------------- format / code


def test_format_reward() -> None:
    assert format_reward(GOOD) == 1.0
    assert format_reward(parse_action(GOOD)) == 1.0
    assert format_reward("<think>short</think><code>submit_final_answer('x')</code>") == 0.0  # think <= 10
    assert format_reward("<think>long enough thought</think><code>x=1</code>") == 0.0  # code <= 5
    assert format_reward("<think>long enough thought</think><code>x = 12</code>") == 1.0
    assert format_reward("<think>long enough thought</think><code>x = 12") == 1.0  # stop string stripped
    assert format_reward("<think>long enough thought</think><code>x = 12</code><code>y = 1</code>") == 0.0
    assert format_reward("<think>long enough thought <code>x = 12</code>") == 0.0  # missing </think>
    assert format_reward("just text") == 0.0
    assert format_reward("") == 0.0


def test_code_execution_reward() -> None:
    # Without the host's view (outputs only): L0's ratio, and L0's rule for a silent cell.
    assert code_execution_reward(4, 1) == pytest.approx(0.75)
    assert code_execution_reward(2, 2) == 0.0
    assert code_execution_reward(0, 0) == 0.0  # ran silently: no credit (L0's rule)
    assert code_execution_reward(0, 0, silent=1.0) == 1.0
    assert code_execution_reward(3, 0, ran=False) == 0.0
    assert code_execution_reward(1, 5) == 0.0  # clamped
    assert code_execution_reward(2, -1) == 1.0  # clamped


def test_code_execution_reward_from_the_execute_reply() -> None:
    # With the host's view: the reply decides, not how many outputs were errors.
    assert code_execution_reward(100, 1, failed=True) == 0.0  # an error diluted by 99 displays
    assert code_execution_reward(3, 0, failed=True) == 0.0  # a silenced traceback
    assert code_execution_reward(2, 1, failed=False) == 1.0  # a hook printed a fake error
    assert code_execution_reward(0, 0, failed=False) == 0.0  # silent
    assert code_execution_reward(0, 0, failed=False, silent=1.0) == 1.0
    assert code_execution_reward(0, 0, failed=True, silent=1.0) == 0.0  # silent and failed


@given(st.integers(-5, 50), st.integers(-5, 50), st.booleans(), st.sampled_from([None, True, False]), unit)
def test_code_execution_reward_in_range(
    n: int, e: int, ran: bool, failed: bool | None, silent: float
) -> None:
    assert 0.0 <= code_execution_reward(n, e, ran=ran, failed=failed, silent=silent) <= 1.0


# --------------------------------------------------------------------------- combination


def test_reward_weights_defaults_are_l0() -> None:
    w = RewardWeights()
    assert (w.qa, w.format, w.code, w.em, w.has_answer, w.f1, w.answer_metric, w.silent_cell) == (
        0.8,
        0.1,
        0.1,
        0.9,
        0.1,
        0.0,
        "em",
        0.0,
    )
    assert REWARD_PRESETS["l0"] == w
    assert w.qa_reward("Paris", ["paris"]) == pytest.approx(1.0)
    assert RewardWeights(answer_metric="f1").qa_reward("Barack Obama", ["Obama"]) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="answer_metric"):
        RewardWeights(answer_metric="rouge")
    with pytest.raises(ValueError, match="finite"):
        RewardWeights(f1=float("nan"))
    with pytest.raises(ValueError, match="silent_cell"):
        RewardWeights(silent_cell=2.0)


def test_paper_and_l0_presets_worked_by_hand() -> None:
    paper, l0 = RewardWeights.preset("paper"), RewardWeights.preset("l0")
    # "Barack Obama" vs gold "Obama": EM 0, F1 2/3, has-answer 1.
    assert l0.qa_reward("Barack Obama", ["Obama"]) == pytest.approx(0.9 * 0 + 0.1)  # 0.1
    assert paper.qa_reward("Barack Obama", ["Obama"]) == pytest.approx(0.5 * 0 + 0.4 * 2 / 3 + 0.1)  # 0.3667
    # Exact: both 1.0. Nothing submitted: both 0.
    assert paper.qa_reward("Obama", ["obama"]) == pytest.approx(1.0) == l0.qa_reward("Obama", ["obama"])
    assert paper.qa_reward(None, ["Obama"]) == 0.0 == l0.qa_reward(None, ["Obama"])
    # A wrong answer: has-answer only.
    assert paper.qa_reward("Bush", ["Obama"]) == pytest.approx(0.1)
    # A 2-step paper episode, both steps well formed, step 1 silent (code 0), step 2 ran with output:
    # 0.8·0.3667 + 0.1·1 + 0.1·0.5 = 0.4433.
    qa = paper.qa_reward("Barack Obama", ["Obama"])
    assert trajectory_reward([1, 1], [0, 1], qa, paper) == pytest.approx(
        0.8 * (0.4 * 2 / 3 + 0.1) + 0.1 + 0.05
    )
    assert RewardWeights.preset("paper", silent_cell=1.0).silent_cell == 1.0
    with pytest.raises(ValueError, match="unknown reward preset"):
        RewardWeights.preset("l1")


def test_reward_weights_from_user_values() -> None:
    assert as_reward_weights(None) == RewardWeights()
    assert as_reward_weights("paper") == REWARD_PRESETS["paper"]
    assert as_reward_weights({"preset": "paper", "qa": 0.7}).qa == 0.7
    assert as_reward_weights({"code": 0.2}) == RewardWeights(code=0.2)
    with pytest.raises(ValueError, match="unknown RewardWeights field"):
        as_reward_weights({"lenght": 0.1})
    with pytest.raises(ValueError, match="preset name"):
        as_reward_weights(0.5)  # type: ignore[arg-type]


def test_trajectory_reward() -> None:
    assert trajectory_reward([1, 1, 1], [1, 0, 1], 1.0) == pytest.approx(0.8 + 0.1 + 0.1 * 2 / 3)
    assert trajectory_reward([], [], 0.0) == 0.0
    assert trajectory_reward([], [], 1.0) == pytest.approx(0.8)


def test_l0_step_rewards_worked_example() -> None:
    rewards = l0_step_rewards([1.0, 1.0, 1.0], [1.0, 0.0, 1.0], 1.0, RewardWeights())
    assert [round(r, 4) for r in rewards] == [0.0667, 0.0333, 0.8667]
    assert sum(rewards) == pytest.approx(trajectory_reward([1, 1, 1], [1, 0, 1], 1.0))


def test_l0_step_rewards_edges() -> None:
    assert l0_step_rewards([], [], 1.0) == []
    assert l0_step_rewards([1.0], [1.0], 0.5) == pytest.approx([0.2 + 0.4])
    with pytest.raises(ValueError, match="one reward per step"):
        l0_step_rewards([1.0], [1.0, 0.0], 1.0)


def test_online_step_reward_examples() -> None:
    w = RewardWeights()
    assert online_step_reward(1, [1.0], [1.0], None, w) == pytest.approx(0.2)
    # step 2 had a code error: code mean 1 -> 0.5
    assert online_step_reward(2, [1.0, 1.0], [1.0, 0.0], None, w) == pytest.approx(-0.05)
    assert online_step_reward(2, [1.0, 1.0], [1.0, 0.0], 1.0, w) == pytest.approx(0.75)
    # entries after step t are ignored
    assert online_step_reward(1, [1.0, 0.0], [1.0, 0.0], None, w) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="1-based"):
        online_step_reward(0, [], [], None, w)


@given(
    st.integers(1, 12).flatmap(
        lambda n: st.tuples(st.lists(unit, min_size=n, max_size=n), st.lists(unit, min_size=n, max_size=n))
    ),
    unit,
    st.builds(RewardWeights, qa=unit, format=unit, code=unit, f1=unit),
)
@settings(max_examples=300)
def test_online_rewards_telescope_to_trajectory_reward(
    seqs: tuple[list[float], list[float]], qa: float, weights: RewardWeights
) -> None:
    fmt, code = seqs
    n = len(fmt)
    online = [
        online_step_reward(t, fmt[:t], code[:t], qa if t == n else None, weights) for t in range(1, n + 1)
    ]
    expected = trajectory_reward(fmt, code, qa, weights)
    assert math.fsum(online) == pytest.approx(expected, abs=1e-9)
    assert math.fsum(l0_step_rewards(fmt, code, qa, weights)) == pytest.approx(expected, abs=1e-9)
    assert 0.0 <= expected <= weights.qa + weights.format + weights.code + 1e-9


# --------------------------------------------------------------------------- answer extraction


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("submit_final_answer('Paris')", "Paris"),
        ('submit_final_answer(answer="Paris")', "Paris"),
        ("tools.submit_final_answer('x')", "x"),
        ("submit_final_answer('a')\nsubmit_final_answer('b')", "b"),
        ("if ok:\n    submit_final_answer('a')\nelse:\n    submit_final_answer('b')", "b"),
        ("submit_final_answer(1917)", "1917"),
        ("submit_final_answer(ans)", None),
        ("submit_final_answer(f'{x}')", None),
        ("print('no call')", None),
        ("", None),
        (None, None),
        ("x = (\nsubmit_final_answer('Paris')", "Paris"),  # broken code elsewhere
        ("x = (\nsubmit_final_answer('a (b)')", "a (b)"),
        ("def f(:\nsubmit_final_answer(", None),
    ],
)
def test_extract_final_answer(code: str | None, expected: str | None) -> None:
    assert extract_final_answer(code) == expected


def test_completion_text() -> None:
    assert completion_text("abc") == "abc"
    msgs = [{"role": "assistant", "content": "one"}, {"role": "user", "content": "u"}]
    assert completion_text(msgs) == "one"
    msgs.append({"role": "assistant", "content": "two"})
    assert completion_text(msgs) == "two"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "p"}, "q"]}]) == "pq"
    assert completion_text({"role": "assistant", "content": "d"}) == "d"
    assert completion_text([{"role": "user", "content": "u"}]) == ""
    assert completion_text(None) == ""
    assert completion_text([]) == ""


# --------------------------------------------------------------------------- TRL callables


def test_qa_reward_callable() -> None:
    f = QAReward()
    completions = [
        GOOD,
        [{"role": "assistant", "content": GOOD.replace("Paris", "Lyon")}],
        "<think>no answer yet, search more</think><code>web_search('x')</code>",
    ]
    scores = f(["p"] * 3, completions, answers=[["paris"], ["Paris"], ["Paris"]])
    assert scores == [pytest.approx(1.0), pytest.approx(0.1), None]
    assert f.__name__ == "qa_em"


def test_qa_reward_callable_f1_and_string_golds() -> None:
    f = QAReward(metric="f1")
    code = "<think>It must be Obama himself.</think><code>submit_final_answer('Barack Obama')</code>"
    assert f([None], [code], answers=["Obama"]) == [pytest.approx(0.7)]
    paper = QAReward(em_weight=0.5, f1_weight=0.4)
    assert paper([None], [code], answers=["Obama"]) == [pytest.approx(0.4 * 2 / 3 + 0.1)]


def test_qa_reward_callable_errors() -> None:
    with pytest.raises(ValueError, match="metric"):
        QAReward(metric="x")
    with pytest.raises(KeyError, match="answers"):
        QAReward()(["p"], [GOOD], solution=["x"])
    with pytest.raises(ValueError, match="gold entries"):
        QAReward()(["p"], [GOOD], answers=[])
    assert QAReward(answers_key="solution")(["p"], [GOOD], solution=[["paris"]]) == [pytest.approx(1.0)]


def test_format_reward_callable() -> None:
    f = FormatReward()
    assert f(["p", "p"], [GOOD, "bad"]) == [1.0, 0.0]
    assert f([], [[{"role": "assistant", "content": GOOD}]]) == [1.0]
    assert f.__name__ == "format"


@pytest.mark.parametrize("reward", [QAReward(metric="f1", em_weight=0.7), FormatReward()])
def test_reward_callables_pickle_and_run_in_threads(reward: QAReward | FormatReward) -> None:
    clone = pickle.loads(pickle.dumps(reward))
    assert repr(clone) == repr(reward)
    args = (["p"], [GOOD])
    kwargs = {"answers": [["paris"]]}
    expected = reward(*args, **kwargs)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: clone(*args, **kwargs), range(16)))
    assert all(r == expected for r in results)
