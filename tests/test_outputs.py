"""Output capture, cleaning and bounding (pure)."""

from __future__ import annotations

import pytest

from l0_env.kernel.outputs import (
    BACKGROUND,
    BACKGROUND_LABEL,
    TRACEBACK_MAX_LINES,
    CellOutput,
    OutputCollector,
    format_error,
    format_outputs,
    strip_ansi,
    truncate_middle,
)


def test_strip_ansi_keeps_text_newlines_and_tabs():
    assert strip_ansi("\x1b[31mred\x1b[0m\tx\nY\x1b]0;t\x07") == "red\tx\nY0;t"
    assert strip_ansi("a\x00b\x08c\x7fd\r\n") == "abcd\r\n"
    assert strip_ansi("\x1b[?25lhidden cursor\x1b[2K") == "hidden cursor"


def test_strip_ansi_on_binary_ish_text():
    text = b"\x00\xff\xfe\x1b[1mbold\x80abc".decode("utf-8", errors="replace")
    cleaned = strip_ansi(text)
    assert "bold" in cleaned and "\x00" not in cleaned and "\x1b" not in cleaned
    assert "\ufffd" in cleaned
    surrogates = b"\xed\xa0\x80x".decode("utf-8", errors="surrogateescape")
    assert strip_ansi(surrogates).endswith("x")


@pytest.mark.parametrize("limit", [0, 10, 64, 100, 1000])
def test_truncate_middle_bounds(limit):
    text = "".join(f"{i:05d}" for i in range(2000))
    out = truncate_middle(text, limit)
    assert len(out) <= max(limit, 0) + 64
    assert "characters cut" in out
    if limit >= 100:
        assert out.startswith(text[:10]) and out.endswith(text[-5:])


def test_truncate_middle_short_text_unchanged():
    assert truncate_middle("short", 100) == "short"
    assert truncate_middle("", 0) == ""


def test_format_error_trims_and_strips():
    tb = ["\x1b[0;31m---------\x1b[0m", "File site-packages/IPython/core/x.py, line 1"]
    tb += [f"  frame {i}" for i in range(40)] + ["\x1b[31mValueError\x1b[0m: bad"]
    text = format_error("ValueError", "bad", tb)
    lines = text.splitlines()
    assert len(lines) <= TRACEBACK_MAX_LINES + 1
    assert lines[0].startswith("Traceback") and "trimmed" in lines[0]
    assert lines[-1] == "ValueError: bad"
    assert "IPython" not in text and "\x1b" not in text


def test_format_error_without_traceback():
    assert format_error("KeyError", "'x'", []) == "KeyError: 'x'"
    assert format_error("StopIteration", "", []) == "StopIteration"


def test_collector_kinds_and_counts():
    c = OutputCollector()
    c.add("stream", {"name": "stdout", "text": "a"})
    c.add("stream", {"name": "stdout", "text": "b\n"})
    c.add("stream", {"name": "stderr", "text": "warn\n"})
    c.add("execute_result", {"data": {"text/plain": "42"}})
    c.add("display_data", {"data": {"image/png": "..."}})
    c.add("error", {"ename": "E", "evalue": "v", "traceback": []})
    c.add("status", {"execution_state": "idle"})
    c.add_note("error", "TimeoutError", "TimeoutError: late", is_error=True)
    outs = c.finish()
    assert [o.kind for o in outs] == ["stream", "stream", "result", "display", "error", "error"]
    assert outs[0].text == "ab\n"
    assert "image/png" in outs[3].text
    assert c.n_outputs == 6 and c.n_errors == 2
    text = format_outputs(outs, limit=10_000)
    assert text == "ab\n[stderr]\nwarn\n42\n" + outs[3].text + "\n[error]\nE: v\n[error]\nTimeoutError: late"


def test_collector_bounds_one_huge_chunk():
    c = OutputCollector(keep_chars=100, tail_chars=50)
    c.add("stream", {"name": "stdout", "text": "H" * 100 + "x" * 10_000_000 + "T" * 50})
    outs = c.finish()
    assert sum(len(o.text) for o in outs) < 400
    assert outs[0].text == "H" * 100 and outs[-1].text == "T" * 50
    assert c.total_chars == 10_000_150 and c.dropped_chars == 10_000_000
    assert "10000000 characters of output cut" in outs[1].text


def test_collector_bounds_many_small_chunks():
    c = OutputCollector(keep_chars=1_000, tail_chars=200)
    for i in range(100_000):
        c.add("stream", {"name": "stdout" if i % 2 else "stderr", "text": f"{i}\n"})
    outs = c.finish()
    kept = sum(len(o.text) for o in outs)
    assert kept < 1_000 + 200 + 100
    assert outs[-1].text.endswith("99999\n")
    assert c.total_chars == kept - len(outs[len(c.outputs)].text) + c.dropped_chars


def test_collector_notes_always_kept_last():
    c = OutputCollector(keep_chars=10, tail_chars=10)
    c.add("stream", {"name": "stdout", "text": "z" * 1000})
    c.add_note("error", "KernelRestarted", "restarted", is_error=True)
    assert c.finish()[-1] == CellOutput("error", "KernelRestarted", "restarted")


def test_collector_tolerates_odd_content():
    c = OutputCollector()
    c.add("stream", {})
    c.add("execute_result", {"data": None})
    c.add("error", {"traceback": None})
    c.add("stream", {"name": "stdout", "text": "bad \udcff surrogate \x1b[1m"})
    outs = c.finish()
    assert outs[-1].text == "bad \udcff surrogate "
    format_outputs(outs, limit=100)


def test_format_outputs_empty_and_limit():
    assert format_outputs([], limit=100) == "(no output)"
    big = [CellOutput("stream", "stdout", "x" * 10_000)]
    assert len(format_outputs(big, limit=500)) <= 500 + 64


def test_background_output_is_labelled_bounded_and_not_counted():
    c = OutputCollector(background_keep=100)
    c.add("stream", {"name": "stdout", "text": "own\n"})
    c.add_background("stream", {"name": "stdout", "text": "H" * 50 + "x" * 1_000_000 + "T" * 50})
    c.add_background("display_data", {"data": {"text/plain": "'shown'"}})
    c.add_background("stream", {"name": "stderr", "text": "late\n"})
    c.add_background("status", {"execution_state": "idle"})
    c.add_note("error", "TimeoutError", "TimeoutError: late", is_error=True)
    outs = c.finish()
    assert (c.n_outputs, c.n_errors, c.total_chars) == (2, 1, 4)  # background: not the cell's
    assert c.background_chars == 1_000_100 + len("'shown'") + len("late\n")
    assert [(o.kind, o.name) for o in outs] == [
        ("stream", "stdout"),
        ("stream", BACKGROUND),
        ("error", "TimeoutError"),
    ]
    assert outs[1].text.startswith("H" * 50 + "\n…[") and outs[1].text.endswith("'shown'\nlate\n")
    assert len(outs[1].text) < 200
    text = format_outputs(outs, limit=10_000)
    assert text.startswith(f"own\n{BACKGROUND_LABEL}\nHHH") and text.endswith(
        "late\n[error]\nTimeoutError: late"
    )


def test_a_cells_own_stream_cannot_claim_the_background_label():
    c = OutputCollector()
    c.add("stream", {"name": BACKGROUND, "text": "spoof"})
    assert c.finish() == [CellOutput("stream", "stdout", "spoof")] and c.background_chars == 0
    assert BACKGROUND_LABEL not in format_outputs(c.finish(), limit=100)
    c.add_background("display_data", {"data": {"text/plain": "'a'"}})
    c.add_background("stream", {"name": "stdout", "text": "b"})
    assert c.finish()[-1] == CellOutput("stream", BACKGROUND, "'a'\nb")  # nothing cut, own lines
