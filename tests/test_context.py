"""Tests for l0_env.context: system prompt, notepad, budget and the trimmed chat context."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l0_env.context import (
    MESSAGE_OVERHEAD_TOKENS,
    RenderedContext,
    StepRecord,
    ToolDoc,
    approx_token_count,
    budget_notice,
    build_system_prompt,
    render_context,
    render_notepad,
    truncate_middle,
)

TOOLS = [
    ToolDoc("web_search", "web_search(query, k=5)", 'list of {"id", "title", "snippet"}'),
    ToolDoc("open_page", "open_page(doc_id, page=1)", "the page text (str)"),
    ToolDoc("submit_final_answer", "submit_final_answer(answer)", "submit a short answer; ends the episode"),
]
NOTEPAD = {
    "plan": [{"text": "find author", "status": "done"}, {"text": "find birth year", "status": "doing"}],
    "facts": {"author": "Frank Herbert"},
    "draft": "1920",
}


def _steps(n: int, size: int = 40) -> list[StepRecord]:
    return [
        StepRecord(f"<think>step {i}</think><code>x = {i}</code>", f"out {i} " + "y" * size) for i in range(n)
    ]


def _assert_roles(messages: list[dict[str, str]]) -> None:
    roles = [m["role"] for m in messages]
    assert roles[:2] == ["system", "user"]
    assert roles[2:] == ["assistant", "user"] * ((len(roles) - 2) // 2)
    assert roles[-1] == "user"
    assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in messages)


def _count(messages: list[dict[str, str]]) -> int:
    return sum(approx_token_count(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)


# --------------------------------------------------------------------------- system prompt


def test_system_prompt_documents_everything() -> None:
    prompt = build_system_prompt(TOOLS, max_steps=12, extra_rules="Answer in English.")
    for needle in (
        "<think>",
        "</think>",
        "<code>",
        "</code>",
        "persistent",
        "web_search(query, k=5)",
        "open_page(doc_id, page=1)",
        "submit_final_answer(answer)",
        "notepad.add_todo(text)",
        "notepad.set_status(index",
        "notepad.remove_todo(index)",
        "notepad.add_fact(key, value)",
        "notepad.remove_fact(key)",
        "notepad.write_draft(text)",
        "12 steps",
        "short answer",
        "ends the episode",
        "Answer in English.",
    ):
        assert needle in prompt, needle
    assert prompt.index("web_search") < prompt.index("open_page(doc_id")  # tools in the given order


def test_system_prompt_without_tools_or_rules() -> None:
    prompt = build_system_prompt([], max_steps=3)
    assert "(no tools)" in prompt
    assert prompt == prompt.strip()


# --------------------------------------------------------------------------- notepad


def test_render_notepad_full() -> None:
    text = render_notepad(NOTEPAD)
    assert "0. [done] find author" in text
    assert "1. [doing] find birth year" in text
    assert "author: Frank Herbert" in text
    assert "1920" in text
    assert text.index("Plan") < text.index("Facts") < text.index("Draft")


@pytest.mark.parametrize(
    "snapshot", [{}, None, "garbage", 42, {"plan": None, "facts": [], "draft": None}, {"draft": "  "}]
)
def test_render_notepad_empty_or_garbage(snapshot: object) -> None:
    text = render_notepad(snapshot)  # type: ignore[arg-type]
    assert "(empty" in text
    assert len(text) < 200


def test_render_notepad_tolerates_bad_items() -> None:
    text = render_notepad(
        {
            "plan": ["bare string", {"text": "x", "status": "weird"}, {"status": "done"}, 7],
            "facts": {1: None},
            "extra": 1,
        }
    )
    assert "0. [todo] bare string" in text
    assert "1. [todo] x" in text
    assert "2. [done] " in text
    assert "3. [todo] 7" in text
    assert "1: None" in text


# --------------------------------------------------------------------------- budget / tokens


def test_budget_notice() -> None:
    assert budget_notice(steps_left=5, tokens_left=None) == "[Budget] 5 steps left."
    assert "1200 tokens" in budget_notice(steps_left=5, tokens_left=1200)
    for left in (1, 0, -3):
        notice = budget_notice(steps_left=left, tokens_left=10)
        assert "LAST STEP" in notice and "submit_final_answer" in notice
    assert "0 tokens" in budget_notice(steps_left=3, tokens_left=-5)


@pytest.mark.parametrize(("text", "n"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100)])
def test_approx_token_count(text: str, n: int) -> None:
    assert approx_token_count(text) == n


def test_truncate_middle() -> None:
    """One cut rule for the context and for cell output (there were two, with different markers)."""
    from l0_env.kernel import outputs

    assert truncate_middle is outputs.truncate_middle
    assert truncate_middle("short", 10) == "short"
    cut = truncate_middle("a" * 50 + "b" * 50, 40)
    assert len(cut) <= 40
    assert cut.startswith("aaaaa") and cut.endswith("bbbbb")
    assert "[84 characters cut]" in cut
    assert cut == "a" * 10 + "\n…[84 characters cut]…\n" + "b" * 6  # two thirds kept: the head
    assert truncate_middle("abc", 0) == "\n…[3 characters cut]…\n"


# --------------------------------------------------------------------------- layout


def test_render_without_history_puts_notepad_in_task_message() -> None:
    ctx = render_context(system="SYS", task="Who?", history=[], notepad=NOTEPAD, steps_left=5)
    assert [m["role"] for m in ctx.messages] == ["system", "user"]
    assert ctx.messages[0]["content"] == "SYS"
    assert ctx.messages[1]["content"].startswith("Who?")
    assert "[Notepad]" in ctx.messages[1]["content"]
    assert "5 steps left" in ctx.messages[1]["content"]
    assert ctx.n_dropped_steps == 0
    assert ctx.n_tokens == _count(ctx.messages)


def test_render_with_history_layout_and_stable_prefix() -> None:
    steps = _steps(3)
    ctx = render_context(
        system="SYS", task="Who?", history=steps, notepad=NOTEPAD, steps_left=2, tokens_left=99
    )
    _assert_roles(ctx.messages)
    assert len(ctx.messages) == 2 + 2 * 3
    assert ctx.messages[1]["content"] == "Who?"
    assert [m["content"] for m in ctx.messages[2::2]] == [s.action for s in steps]
    for m, s in zip(ctx.messages[3:-1:2], steps[:-1], strict=True):
        assert m["content"] == s.observation  # earlier observations carry nothing extra
    last = ctx.messages[-1]["content"]
    assert last.startswith(steps[-1].observation)
    assert "[Notepad]" in last and "2 steps left" in last and "99 tokens" in last
    # The next step only appends: the previous messages but the last are a prefix.
    nxt = render_context(system="SYS", task="Who?", history=_steps(4), notepad={}, steps_left=1)
    assert nxt.messages[: len(ctx.messages) - 1] == ctx.messages[:-1]


def test_history_may_hold_mappings() -> None:
    ctx = render_context(
        system="S", task="T", history=[{"action": "a", "observation": "o"}], notepad={}, steps_left=3
    )  # type: ignore[list-item]
    assert ctx.messages[2] == {"role": "assistant", "content": "a"}
    assert ctx.messages[3]["content"].startswith("o")


def test_fresh_objects_every_call() -> None:
    kwargs = {"system": "S", "task": "T", "history": _steps(2), "notepad": NOTEPAD, "steps_left": 3}
    a, b = render_context(**kwargs), render_context(**kwargs)
    assert a == b
    assert a.messages is not b.messages
    assert all(x is not y for x, y in zip(a.messages, b.messages, strict=True))
    a.messages[0]["content"] = "changed"
    assert render_context(**kwargs).messages[0]["content"] == "S"


# --------------------------------------------------------------------------- trimming


def test_no_trim_when_it_fits() -> None:
    full = render_context(system="S", task="T", history=_steps(5), notepad=NOTEPAD, steps_left=3)
    ctx = render_context(
        system="S",
        task="T",
        history=_steps(5),
        notepad=NOTEPAD,
        steps_left=3,
        max_context_tokens=full.n_tokens,
    )
    assert ctx == full
    assert "[Context]" not in ctx.messages[-1]["content"]


def test_trim_drops_oldest_first_and_tells_the_agent() -> None:
    steps = _steps(10)
    full = render_context(system="S", task="T", history=steps, notepad=NOTEPAD, steps_left=3)
    budget = full.n_tokens - 30
    ctx = render_context(
        system="S", task="T", history=steps, notepad=NOTEPAD, steps_left=3, max_context_tokens=budget
    )
    _assert_roles(ctx.messages)
    assert ctx.n_dropped_steps >= 1
    assert ctx.n_tokens <= budget
    assert ctx.n_tokens == _count(ctx.messages)
    kept_actions = [m["content"] for m in ctx.messages[2::2]]
    assert kept_actions == [s.action for s in steps[ctx.n_dropped_steps :]]
    last = ctx.messages[-1]["content"]
    assert f"The {ctx.n_dropped_steps} earliest" in last
    assert "notepad" in last and "Frank Herbert" in last
    # Dropping one step fewer would not have fitted: the trim is minimal.
    more = render_context(
        system="S",
        task="T",
        history=steps[ctx.n_dropped_steps - 1 :],
        notepad=NOTEPAD,
        steps_left=3,
    )
    assert more.n_tokens > budget - 40  # the notice costs a few tokens at most


def test_trim_singular_notice() -> None:
    steps = _steps(2)
    full = render_context(system="S", task="T", history=steps, notepad={}, steps_left=3)
    ctx = render_context(
        system="S", task="T", history=steps, notepad={}, steps_left=3, max_context_tokens=full.n_tokens - 1
    )
    assert ctx.n_dropped_steps == 1
    assert "The 1 earliest step was removed" in ctx.messages[-1]["content"]


def test_trim_cuts_newest_observation_when_one_step_does_not_fit() -> None:
    steps = [StepRecord("<think>a</think><code>print(big)</code>", "HEAD" + "z" * 10_000 + "TAIL")]
    ctx = render_context(
        system="S", task="T", history=steps, notepad=NOTEPAD, steps_left=2, max_context_tokens=300
    )
    _assert_roles(ctx.messages)
    assert ctx.n_tokens <= 300
    last = ctx.messages[-1]["content"]
    assert last.startswith("HEAD")
    assert "characters cut]" in last
    assert "TAIL" in last
    assert "Frank Herbert" in last and "2 steps left" in last
    assert ctx.messages[2]["content"] == steps[0].action


def test_trim_cuts_newest_action_as_last_resort() -> None:
    steps = _steps(3)
    steps[-1] = StepRecord("A" * 4000, "B" * 4000)
    ctx = render_context(
        system="S", task="T", history=steps, notepad={}, steps_left=2, max_context_tokens=150
    )
    assert ctx.n_dropped_steps == 2
    assert ctx.n_tokens <= 150
    assert "characters cut]" in ctx.messages[2]["content"]


def test_impossible_budget_does_not_raise() -> None:
    ctx = render_context(
        system="S" * 1000, task="T", history=_steps(3), notepad=NOTEPAD, steps_left=2, max_context_tokens=10
    )
    _assert_roles(ctx.messages)
    assert ctx.n_dropped_steps == 2
    assert ctx.n_tokens > 10  # reported honestly
    assert ctx.messages[0]["content"] == "S" * 1000  # system and task are never cut
    ctx0 = render_context(
        system="S" * 1000, task="T", history=[], notepad={}, steps_left=2, max_context_tokens=10
    )
    assert ctx0.n_dropped_steps == 0 and ctx0.n_tokens > 10


def test_custom_token_counter() -> None:
    def words(text: str) -> int:
        return len(text.split())

    steps = _steps(6)
    ctx = render_context(
        system="S",
        task="T",
        history=steps,
        notepad={},
        steps_left=3,
        max_context_tokens=90,
        count_tokens=words,
    )
    assert ctx.n_tokens == sum(words(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in ctx.messages)
    assert ctx.n_tokens <= 90
    assert ctx.n_dropped_steps > 0


@given(
    st.lists(st.tuples(st.text(max_size=300), st.text(max_size=600)), max_size=12),
    st.integers(min_value=0, max_value=2000),
    st.integers(min_value=-1, max_value=10),
)
@settings(max_examples=200, deadline=None)
def test_trim_properties(raw_steps: list[tuple[str, str]], budget: int, steps_left: int) -> None:
    steps = [StepRecord(a, o) for a, o in raw_steps]
    ctx = render_context(
        system="SYSTEM",
        task="TASK",
        history=steps,
        notepad=NOTEPAD,
        steps_left=steps_left,
        max_context_tokens=budget,
    )
    assert isinstance(ctx, RenderedContext)
    _assert_roles(ctx.messages)
    assert ctx.n_tokens == _count(ctx.messages)
    if not steps:
        assert ctx.n_dropped_steps == 0
        return
    assert 0 <= ctx.n_dropped_steps <= len(steps) - 1
    assert len(ctx.messages) == 2 + 2 * (len(steps) - ctx.n_dropped_steps)  # the newest step is kept
    kept = steps[ctx.n_dropped_steps :]
    for m, s in zip(ctx.messages[3:-1:2], kept[:-1], strict=True):
        assert m["content"] == s.observation  # surviving older steps are never altered
    # Fits whenever the irreducible minimum (system, task, notepad, empty newest step) fits.
    minimum = render_context(
        system="SYSTEM",
        task="TASK",
        history=[StepRecord(truncate_middle(steps[-1].action, 0), truncate_middle(steps[-1].observation, 0))],
        notepad=NOTEPAD,
        steps_left=steps_left,
    )
    notice_allowance = 40
    if minimum.n_tokens + notice_allowance <= budget:
        assert ctx.n_tokens <= budget
    if ctx.n_dropped_steps:
        assert "earliest" in ctx.messages[-1]["content"]
