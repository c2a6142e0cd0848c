"""Tests for l0_env.actions: parsing must be total, linear-time and faithful to the rules."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l0_env.actions import MAX_TAGS, OUTSIDE_TEXT_PROBLEM, ParsedAction, format_help, parse_action

GOOD = "<think>I should print one.</think><code>print(1)</code>"


def _has(parsed: ParsedAction, fragment: str) -> bool:
    return any(fragment in p for p in parsed.problems)


# --------------------------------------------------------------------------- well-formed


def test_clean_action() -> None:
    p = parse_action(GOOD)
    assert p.think == "I should print one."
    assert p.code == "print(1)"
    assert (p.n_think, p.n_code) == (1, 1)
    assert p.problems == ()
    assert p.well_formed
    assert p.raw == GOOD


def test_whitespace_between_and_inside_blocks_is_stripped() -> None:
    p = parse_action("\n  <think>\n  plan  \n</think>\n\n<code>\n  x = 1\n</code>\n")
    assert p.think == "plan"
    assert p.code == "x = 1"
    assert p.problems == ()
    assert p.well_formed


@pytest.mark.parametrize(
    "text",
    [
        "<THINK>plan</THINK><CODE>x=1</CODE>",
        "<Think>plan</tHiNk><Code>x=1</cOdE>",
        "<think >plan</ think><code >x=1</code >",
    ],
)
def test_tags_are_case_insensitive_and_tolerate_inner_whitespace(text: str) -> None:
    p = parse_action(text)
    assert (p.think, p.code) == ("plan", "x=1")
    assert p.well_formed


def test_multiline_code_keeps_indentation_inside() -> None:
    code = "for i in range(3):\n    print(i)"
    p = parse_action(f"<think>loop</think><code>\n{code}\n</code>")
    assert p.code == code


# --------------------------------------------------------------------------- unclosed tags


def test_unclosed_code_runs_to_end_without_problem() -> None:
    p = parse_action("<think>plan it</think><code>print(1)\nprint(2)")
    assert p.code == "print(1)\nprint(2)"
    assert p.problems == ()
    assert p.well_formed


def test_unclosed_think_ends_at_code_with_problem() -> None:
    p = parse_action("<think>plan it <code>print(1)</code>")
    assert p.think == "plan it"
    assert p.code == "print(1)"
    assert _has(p, "missing </think>")
    assert not p.well_formed


def test_unclosed_think_without_code() -> None:
    p = parse_action("<think>just thinking forever")
    assert p.think == "just thinking forever"
    assert p.code is None
    assert _has(p, "missing </think>")
    assert _has(p, "missing <code>")
    assert (p.n_think, p.n_code) == (1, 0)


def test_code_tag_inside_closed_think_is_text() -> None:
    """Mentioning the tags while thinking is fine: the code block is the first <code> after </think>."""
    for think in ("I will use <code> next", "end it with </code>", "<code>x</code> then"):
        p = parse_action(f"<think>{think}</think><code>x=1</code>")
        assert p.think == think
        assert p.code == "x=1"
        assert (p.n_think, p.n_code) == (1, 1)
        assert p.problems == () and p.well_formed, p.problems


def test_think_tag_inside_code_is_code_text() -> None:
    for code in ("s = '<think>'\nprint(s)", "print('</think>')", "x = 1  # <think> is not a tag here"):
        p = parse_action(f"<think>plan</think><code>{code}</code>")
        assert p.code == code
        assert p.n_think == 1
        assert p.problems == () and p.well_formed, p.problems


@pytest.mark.parametrize(
    "code",
    [
        'print("</code>")',
        "print('<code>')",
        "s = '</code>' + \"<code>\"",
        'html = """\n<code>x</code>\n</code>\n"""',
        "s = '''</code>'''",
        "s = 'it\\'s </code>'",
        'x = 1  # don\'t\nprint("</code>")',
        "print(f\"{d['</code>']}\")",
    ],
)
def test_code_tags_inside_python_string_literals_are_code_text(code: str) -> None:
    p = parse_action(f"<think>t</think><code>{code}</code>")
    assert p.code == code
    assert p.problems == () and p.well_formed, p.problems


def test_a_comment_does_not_hide_the_closing_tag() -> None:
    p = parse_action("<think>t</think><code>print(1)  # done</code>")
    assert p.code == "print(1)  # done"
    assert p.well_formed
    p = parse_action("<think>t</think><code>x = 1 # it's done</code>\n<code>y</code>")
    assert p.code == "x = 1 # it's done" and p.n_code == 2


def test_a_string_that_never_closes_hides_no_tag() -> None:
    """A lone quote is no string literal: its </code> still closes the block (the next tags count)."""
    p = parse_action("<think>t</think><code>print('oops)</code>\ntrailing")
    assert p.code == "print('oops)"
    assert p.problems == (OUTSIDE_TEXT_PROBLEM,)
    p = parse_action("<think>t</think><code>'</code><code>second</code>")
    assert (p.code, p.n_code) == ("'", 2)


# --------------------------------------------------------------------------- missing / extra


def test_missing_think() -> None:
    p = parse_action("<code>x=1</code>")
    assert p.think is None
    assert p.code == "x=1"
    assert _has(p, "missing <think>")
    assert not p.well_formed


def test_missing_code() -> None:
    p = parse_action("<think>hmm</think>")
    assert p.code is None
    assert _has(p, "missing <code>")
    assert not p.well_formed


def test_plain_text_has_no_blocks() -> None:
    p = parse_action("The answer is 42.")
    assert (p.think, p.code, p.n_think, p.n_code) == (None, None, 0, 0)
    assert _has(p, "missing <think>") and _has(p, "missing <code>")
    assert OUTSIDE_TEXT_PROBLEM not in p.problems  # the missing blocks say it already


def test_two_code_blocks_only_first_runs() -> None:
    p = parse_action("<think>a</think><code>first()</code><code>second()</code>")
    assert p.code == "first()"
    assert p.n_code == 2
    assert "2 <code> blocks: only the first runs" in p.problems
    assert not p.well_formed


def test_two_think_blocks() -> None:
    p = parse_action("<think>one</think><think>two</think><code>x</code>")
    assert p.think == "one"
    assert p.n_think == 2
    assert _has(p, "2 <think> blocks")


def test_code_before_think_is_reported() -> None:
    p = parse_action("<code>x=1</code><think>after</think>")
    assert (p.think, p.code) == ("after", "x=1")
    assert _has(p, "before <think>")
    assert not p.well_formed


def test_text_outside_tags_is_a_minor_problem() -> None:
    p = parse_action("Sure! <think>plan</think> then <code>x=1</code>")
    assert p.problems == (OUTSIDE_TEXT_PROBLEM,)
    assert p.well_formed


def test_stray_closing_tags_are_counted_once() -> None:
    p = parse_action("</code></code></code>" + GOOD)
    stray = [q for q in p.problems if "stray </code>" in q]
    assert stray == ["stray </code> without an opening tag (x3)"]


@pytest.mark.parametrize("text", ["<think></think><code>x</code>", "<think>a</think><code>  </code>"])
def test_empty_blocks_are_problems(text: str) -> None:
    p = parse_action(text)
    assert _has(p, "empty <")
    assert not p.well_formed


# --------------------------------------------------------------------------- nesting


def test_nested_think_takes_outermost() -> None:
    p = parse_action("<think>a<think>b</think>c</think><code>x=1</code>")
    assert p.think == "a<think>b</think>c"
    assert p.code == "x=1"
    assert p.n_think == 1
    assert _has(p, "nested <think>")
    assert not p.well_formed


def test_nested_code_takes_outermost() -> None:
    p = parse_action("<think>t</think><code>a<code>b</code>c</code>")
    assert p.code == "a<code>b</code>c"
    assert p.n_code == 1
    assert _has(p, "nested <code>")


def test_nested_code_never_closed_runs_to_end() -> None:
    p = parse_action("<think>t</think><code>a<code>b</code>c")
    assert p.code == "a<code>b</code>c"
    assert _has(p, "nested <code>")


# --------------------------------------------------------------------------- fences


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("```python\nx = 1\n```", "x = 1"),
        ("```py\nx = 1\n```", "x = 1"),
        ("```\nx = 1\n```", "x = 1"),
        ("```python\nx = 1\n", "x = 1"),  # unclosed fence (e.g. stop string hit)
        ("```python\nx = 1\n```  ", "x = 1"),
        ("```print(1)```", "print(1)"),
        ("```python", ""),
        ("x = '```'", "x = '```'"),  # a fence inside the code is kept
        ("```not a lang header!\nx=1\n```", "```not a lang header!\nx=1\n```"),
    ],
)
def test_markdown_fence_is_removed(body: str, expected: str) -> None:
    assert parse_action(f"<think>t</think><code>{body}</code>").code == expected


# --------------------------------------------------------------------------- totality


@pytest.mark.parametrize(
    "value", [None, b"<think>a</think><code>x</code>", b"\xff\xfe<think>", 42, 3.5, ["x"]]
)
def test_non_str_inputs_do_not_raise(value: object) -> None:
    p = parse_action(value)
    assert isinstance(p.raw, str)


def test_bytes_are_decoded_with_replacement() -> None:
    p = parse_action(b"<think>caf\xc3\xa9 \xff</think><code>x=1</code>")
    assert p.think == "café \ufffd"
    assert p.code == "x=1"


def test_none_is_empty() -> None:
    p = parse_action(None)
    assert p.raw == ""
    assert (p.think, p.code) == (None, None)


def test_hostile_str_does_not_raise() -> None:
    class Bad:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    assert parse_action(Bad()).raw == ""


def test_empty_string() -> None:
    p = parse_action("")
    assert (p.think, p.code, p.n_think, p.n_code) == (None, None, 0, 0)
    assert not p.well_formed


def test_nul_bytes_are_kept() -> None:
    p = parse_action("<think>a\x00b</think><code>x='\x00'</code>")
    assert p.think == "a\x00b"
    assert p.code == "x='\x00'"


@pytest.mark.parametrize(
    "char",
    [
        "é",
        "中",
        "\u200b",
        "\U0001f600",
        "\U00020000",
        "\U00030000",
        "\U000e0001",
        "\U000f0000",
        "\U00100000",
        "\ud800",
    ],
)
def test_every_unicode_plane(char: str) -> None:
    p = parse_action(f"<think>{char}</think><code>s = '{char}'</code>")
    assert p.think == char
    assert p.code == f"s = '{char}'"


@pytest.mark.parametrize(
    "text",
    [
        "<think>" + "a" * 1_000_000 + "</think><code>x=1</code>",
        "<" * 1_000_000,
        "<think>" * 200_000,
        "</code>" * 150_000,
        "< " * 500_000,
        "<think>t</think><code>" + "```" * 300_000,
        "<" + " " * 1_000_000,
        "<code><code>" * 100_000,
    ],
)
def test_one_megabyte_parses_fast(text: str) -> None:
    # CPU time, best of three: a busy machine must not fail a linear parser, while a quadratic
    # one takes minutes on 1 MB.
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        parse_action(text)
        best = min(best, time.process_time() - start)
    assert best < 0.5, f"parse_action took {best:.3f}s of CPU on 1 MB: it must stay linear-time"


def test_too_many_tags_are_capped_and_reported() -> None:
    p = parse_action("<think>t</think><code>x=1</code>" + "</think>" * (MAX_TAGS + 5))
    assert (p.think, p.code) == ("t", "x=1")
    assert _has(p, f"more than {MAX_TAGS} tags")


def test_format_help_mentions_the_format() -> None:
    help_text = format_help()
    for token in ("<think>", "</think>", "<code>", "</code>", "submit_final_answer"):
        assert token in help_text
    assert "\n\n" not in help_text  # one paragraph


# --------------------------------------------------------------------------- properties

_pieces = st.sampled_from(
    ["<think>", "</think>", "<code>", "</code>", "<THINK>", "</Code>", "```", "\n", " "]
)
_texty = st.lists(st.one_of(_pieces, st.text(max_size=8)), max_size=20).map("".join)


@given(st.one_of(st.text(), st.binary(), _texty))
@settings(max_examples=400, deadline=None)
def test_never_raises_and_is_consistent(text: str | bytes) -> None:
    p = parse_action(text)
    assert isinstance(p.raw, str)
    assert (p.think is None) == (p.n_think == 0)
    assert (p.code is None) == (p.n_code == 0)
    assert p.think is None or p.think == p.think.strip()
    assert p.code is None or p.code == p.code.strip()
    assert not p.well_formed or (p.n_think == 1 and p.n_code == 1)
    assert all(isinstance(q, str) and q for q in p.problems)


@given(
    st.text(min_size=1).filter(lambda s: "<" not in s and s.strip()),
    st.text(min_size=1).filter(lambda s: "<" not in s and s.strip() and not s.strip().startswith("```")),
)
@settings(max_examples=200, deadline=None)
def test_roundtrip_of_clean_actions(think: str, code: str) -> None:
    p = parse_action(f"<think>{think}</think>\n<code>{code}</code>")
    assert p.think == think.strip()
    assert p.code == code.strip()
    assert p.well_formed
