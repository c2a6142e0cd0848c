"""Property-based fuzzing of the pure parts (parser, renderer, rewards) and of ``env.step``.

Complements the properties in test_actions/test_context/test_rewards with what they leave out:
lone surrogates and every Unicode plane, very large inputs, garbage notepads and completions,
tokenizers other than the default, and arbitrary text through a real (sandboxed) env.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import l0_env  # noqa: F401  (registers L0Notebook-v0)
from l0_env.actions import parse_action
from l0_env.context import MESSAGE_OVERHEAD_TOKENS, StepRecord, render_context, render_notepad
from l0_env.kernel.sandbox import SandboxLimits, check_bwrap
from l0_env.rewards import (
    RewardWeights,
    exact_match,
    f1_score,
    format_reward,
    has_answer,
    l0_step_rewards,
    normalize_answer,
    qa_reward,
)
from l0_env.trl_rewards import FormatReward, QAReward, completion_text, extract_final_answer
from tests.security.conftest import TinySearch

# Any code point, lone surrogates included (hypothesis leaves them out by default).
any_char = st.characters(exclude_categories=())
any_text = st.text(any_char)
plane_chars = st.integers(0, 16).flatmap(lambda p: st.integers(p << 16, (p << 16) | 0xFFFF)).map(chr)
tags = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<code>",
        "</code>",
        "<Think >",
        "</CODE>",
        "```python\n",
        "```",
        "<",
        ">",
        "\x00",
    ]
)
tag_soup = st.lists(st.one_of(tags, st.text(any_char, max_size=6), plane_chars), max_size=40).map("".join)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), any_text)
json_like = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)),
    max_leaves=20,
)


def _roles_alternate(messages: list[dict[str, str]]) -> None:
    roles = [m["role"] for m in messages]
    assert roles[:2] == ["system", "user"], roles
    assert roles[2:] == ["assistant", "user"] * ((len(roles) - 2) // 2), roles


# -- action parser ---------------------------------------------------------------------------------


@given(st.one_of(any_text, tag_soup))
@settings(max_examples=400, deadline=None)
def test_parse_action_never_raises_on_any_code_point(text: str) -> None:
    p = parse_action(text)
    again = parse_action(text)
    assert (p.think, p.code, p.problems) == (again.think, again.code, again.problems)  # deterministic
    assert format_reward(p) in (0.0, 1.0)
    assert format_reward(p) == 0.0 or p.well_formed


@given(st.integers(1, 4), tag_soup)
@settings(max_examples=20, deadline=None)
def test_parse_action_on_megabyte_inputs(mib: int, soup: str) -> None:
    text = (soup or "<think>") * ((mib << 20) // max(1, len(soup) or 7))
    p = parse_action(text[: mib << 20])
    assert isinstance(p.raw, str)


# -- context renderer --------------------------------------------------------------------------------


@given(json_like)
@settings(max_examples=300, deadline=None)
def test_render_notepad_never_raises_on_garbage(snapshot: object) -> None:
    rendered = render_notepad(snapshot)
    assert rendered.startswith("[Notepad]")


@given(
    st.lists(st.tuples(any_text, any_text), max_size=8),
    json_like,
    st.integers(0, 3000),
    st.sampled_from(["len", "words", "approx"]),
    st.integers(-2, 12),
)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_render_context_alternates_and_fits_with_any_tokenizer(
    raw_steps: list[tuple[str, str]], notepad: object, budget: int, counter: str, steps_left: int
) -> None:
    count = {"len": len, "words": lambda s: len(s.split()), "approx": lambda s: (len(s) + 3) // 4}[counter]
    steps = [StepRecord(a, o) for a, o in raw_steps]
    notepad_map = notepad if isinstance(notepad, dict) else {}
    ctx = render_context(
        system="SYSTEM",
        task="TASK",
        history=steps,
        notepad=notepad_map,
        steps_left=steps_left,
        max_context_tokens=budget,
        count_tokens=count,
    )
    _roles_alternate(ctx.messages)
    assert ctx.n_tokens == sum(count(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in ctx.messages)
    if steps:
        assert ctx.messages[-1]["role"] == "user"
        assert len(ctx.messages) == 2 + 2 * (len(steps) - ctx.n_dropped_steps)
    # Fits whenever system, task, notepad and an emptied newest step fit with room for the notices.
    floor = render_context(
        system="SYSTEM",
        task="TASK",
        history=[StepRecord("", "")] if steps else [],
        notepad=notepad_map,
        steps_left=steps_left,
        count_tokens=count,
    )
    if floor.n_tokens + count(" " * 400) + 100 <= budget:
        assert ctx.n_tokens <= budget, (ctx.n_tokens, budget)


# -- rewards -------------------------------------------------------------------------------------------


@given(any_text)
@settings(max_examples=400)
def test_normalize_answer_idempotent_on_any_code_point(s: str) -> None:
    once = normalize_answer(s)
    assert normalize_answer(once) == once


@given(st.one_of(st.none(), any_text, plane_chars), st.lists(st.one_of(any_text, plane_chars), max_size=4))
@settings(max_examples=300)
def test_answer_rewards_in_range_on_any_code_point(pred: str | None, golds: list[str]) -> None:
    assert exact_match(pred, golds) in (0.0, 1.0)
    assert 0.0 <= f1_score(pred, golds) <= 1.0
    assert has_answer(pred) in (0.0, 1.0)
    for metric in ("em", "f1"):
        assert 0.0 <= qa_reward(pred, golds, metric=metric) <= 1.0 + 1e-12


@given(st.one_of(any_text, tag_soup, st.text(st.sampled_from("()[]{}-+'\"\\ \nsubmit_final_answer"))))
@settings(max_examples=300, deadline=None)
def test_extract_final_answer_never_raises(code: str) -> None:
    answer = extract_final_answer(code)
    assert answer is None or isinstance(answer, str)


@pytest.mark.parametrize(
    "code",
    ["-" * 100_000 + "1", "(" * 5_000 + ")" * 5_000, "[" * 100_000, "submit_final_answer(" + "(" * 10_000],
)
def test_extract_final_answer_on_pathological_nesting(code: str) -> None:
    assert extract_final_answer(code) is None


completions = st.one_of(
    any_text,
    tag_soup,
    json_like,
    st.lists(
        st.fixed_dictionaries({"role": st.sampled_from(["assistant", "user", "tool"]), "content": json_like})
    ),
)


@given(st.lists(completions, min_size=1, max_size=4), st.data())
@settings(max_examples=200, deadline=None)
def test_trl_reward_callables_never_raise_and_stay_in_range(items: list[object], data: st.DataObject) -> None:
    golds = data.draw(
        st.lists(st.lists(any_text, min_size=1, max_size=3), min_size=len(items), max_size=len(items))
    )
    assert isinstance(completion_text(items[0]), str)
    for reward in (QAReward(), QAReward(metric="f1"), FormatReward()):
        scores = reward(["p"] * len(items), items, answers=golds)
        assert len(scores) == len(items)
        assert all(s is None or 0.0 <= s <= 1.0 + 1e-12 for s in scores), scores


unit = st.floats(0, 1)


@given(
    st.integers(1, 15).flatmap(
        lambda n: st.tuples(st.lists(unit, min_size=n, max_size=n), st.lists(unit, min_size=n, max_size=n))
    ),
    unit,
)
@settings(max_examples=200)
def test_l0_step_rewards_are_finite_and_bounded(seqs: tuple[list[float], list[float]], qa: float) -> None:
    fmt, code = seqs
    weights = RewardWeights()
    rewards = l0_step_rewards(fmt, code, qa, weights)
    assert len(rewards) == len(fmt)
    assert all(math.isfinite(r) and r >= -1e-12 for r in rewards)
    assert math.fsum(rewards) <= weights.qa + weights.format + weights.code + 1e-9


# -- env.step on random text ---------------------------------------------------------------------------

CODE_BITS = st.sampled_from(
    [
        "print(1)",
        "x = [i for i in range(10)]",
        "notepad.add_fact('k', 'v')",
        "web_search('Ada', k=2)",
        "1/0",
        "def f(:",
        "import os; print(os.getcwd())",
        "print('\\x00\\udcff')",
        "open_page('p1')",
        "submit_final_answer('Ada Lovelace')",
    ]
)
actions = st.one_of(
    any_text,
    tag_soup,
    st.tuples(st.text(any_char, max_size=40), st.one_of(CODE_BITS, st.text(any_char, max_size=40))).map(
        lambda tc: f"<think>{tc[0]}</think><code>{tc[1]}</code>"
    ),
    st.binary(max_size=200),
)


@pytest.fixture(scope="module")
def fuzz_env() -> Iterator[gym.Env]:
    env = gym.make(
        "L0Notebook-v0",
        tasks=[{"id": "t0", "question": "Who wrote the notes?", "answers": ["Ada Lovelace"]}],
        search=TinySearch(),
        sandbox="bwrap" if check_bwrap() is None else "none",
        cell_timeout=3.0,
        limits=SandboxLimits(disk_bytes=16 << 20),
        pool_size=1,
        max_steps=8,
    )
    env.reset(seed=0)
    yield env
    env.close()


@given(actions)
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_env_step_on_random_text(fuzz_env: gym.Env, action: str | bytes) -> None:
    obs, reward, terminated, truncated, info = fuzz_env.step(action)
    assert type(terminated) is bool and type(truncated) is bool
    assert math.isfinite(reward) and -1.0 <= reward <= 1.0
    _roles_alternate(obs)
    assert all(isinstance(m["content"], str) for m in obs)
    obs[-1]["content"].encode("utf-8")  # nothing unencodable reaches the policy
    json.dumps(info, default=str)
    if terminated or truncated:
        fuzz_env.reset()
