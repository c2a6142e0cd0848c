"""The host's accounting of tool requests (pure): limits, bounded records, the fork-safe pool.

The flood through the real kernel is in ``tests/security/test_untrusted_kernel_data.py``.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from l0_env.kernel.bridge import ToolCallError
from l0_env.recording import bounded_preview
from l0_env.tool_requests import RECORD_ARGS_CHARS, RequestLedger, backend_calls


def test_every_request_counts_and_past_the_step_limit_each_is_refused() -> None:
    ledger = RequestLedger(max_per_step=3, max_per_episode=100, max_records=2)
    ledger.start_step()
    for _ in range(3):
        ledger.close(ledger.admit("no_such_tool", {"x": 1}), error=ToolCallError("ToolError", "unknown tool"))
    with pytest.raises(ToolCallError) as refused:
        ledger.admit("web_search", {"query": "q"})
    assert refused.value.kind == "BudgetExhausted" and "in this step" in refused.value.message
    records, dropped = ledger.take_step()
    assert len(records) == 2 and dropped == 2, "the record cap holds and the rest are counted"
    assert records[0] == {
        "tool": "no_such_tool",
        "args": {"x": 1},
        "ok": False,
        "error": "ToolError: unknown tool",
        "elapsed_s": records[0]["elapsed_s"],
    }
    ledger.start_step()  # a new step: its own count, the episode's goes on
    ledger.close(ledger.admit("web_search", {"query": "q"}))
    assert ledger.take_step()[0][0]["ok"] is True and ledger.requests == 5


def test_the_episode_limit_holds_across_steps() -> None:
    ledger = RequestLedger(max_per_step=10, max_per_episode=4)
    for _ in range(2):
        ledger.start_step()
        for _ in range(2):
            ledger.close(ledger.admit("open_page", {"doc_id": "p1"}))
    ledger.start_step()
    with pytest.raises(ToolCallError, match="in this episode"):
        ledger.admit("open_page", {"doc_id": "p1"})


def test_records_keep_a_bounded_preview_of_any_argument() -> None:
    ledger = RequestLedger()
    ledger.start_step()
    huge = {"a": ["xxxx"] * 200_000, "q": "y" * 1_000_000, "nan": math.nan, "deep": [[[[[[1]]]]]]}
    ledger.close(ledger.admit("t" * 1_000_000, huge), error=ToolCallError("LookupError", "e" * 10**6))
    (record,), _ = ledger.take_step()
    size = len(json.dumps(record, allow_nan=False))
    assert size < 3 * RECORD_ARGS_CHARS, size
    assert len(record["tool"]) == 64
    assert "more items]" in json.dumps(record["args"]) and "chars cut]" in json.dumps(record["args"])


@pytest.mark.parametrize(
    "value",
    [
        {"query": "who wrote it", "k": 5},
        {"doc_id": "p1", "page": 2},
        {"answer": "Ada Lovelace"},
        {"nested": {"list": [1, 2.5, None, True]}},
    ],
)
def test_small_arguments_are_recorded_unchanged(value: dict) -> None:
    assert bounded_preview(value) == value


def test_the_backend_pool_is_made_anew_in_a_forked_child() -> None:
    """A pool inherited through fork has no threads: work submitted there would never run."""
    assert backend_calls().submit(lambda: 6 * 7).result(timeout=60) == 42  # the parent's has threads
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer through the pipe, then leave without running any cleanup
        try:
            os.write(write, str(backend_calls().submit(lambda: 6 * 7).result(timeout=20)).encode())
        finally:
            os._exit(0)
    os.close(write)
    got = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert got == b"42"
