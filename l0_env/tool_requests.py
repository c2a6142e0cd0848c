"""The host's accounting of the kernel's tool requests: request limits, bounded records, the pool.

Every request the kernel sends over the tool bridge costs the host work (decode, check, record),
whatever it asks for, so every one counts against a per-step and a per-episode limit, unknown
tools and invalid arguments included; past a limit each request is refused at once. What a step
records of a call is bounded in size and number. Before this, requests naming an unknown tool or
with invalid arguments cost nothing and were recorded verbatim: 100 requests of 1 MB per cell
grew host memory by 258 MiB per step and wrote 198 MB to ``episodes.jsonl`` in 2 steps.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
import time
from typing import Any

from .kernel.bridge import ToolCallError
from .recording import bounded_preview

__all__ = [
    "MAX_RECORDED_CALLS_PER_STEP",
    "MAX_TOOL_REQUESTS_PER_EPISODE",
    "MAX_TOOL_REQUESTS_PER_STEP",
    "RECORD_ARGS_CHARS",
    "RECORD_ERROR_CHARS",
    "RequestLedger",
    "backend_calls",
]

MAX_TOOL_REQUESTS_PER_STEP = 100
MAX_TOOL_REQUESTS_PER_EPISODE = 1_000
MAX_RECORDED_CALLS_PER_STEP = 32
"""Calls a step records in ``tool_calls``; the rest are counted in ``tool_calls_dropped``."""
RECORD_ARGS_CHARS = 1_000
"""About how much of a call's arguments its record keeps (see ``bounded_preview``)."""
RECORD_ERROR_CHARS = 500


class RequestLedger:
    """One episode's tool requests: counts them against the limits and keeps bounded records.

    A new ledger per episode: a call still in flight when the episode ends lands in the old
    ledger, never in the next episode's. Used from the bridge thread (calls) and the step thread
    (``start_step``/``take_step``); the lock keeps the records and counts consistent.
    """

    def __init__(
        self,
        *,
        max_per_step: int = MAX_TOOL_REQUESTS_PER_STEP,
        max_per_episode: int = MAX_TOOL_REQUESTS_PER_EPISODE,
        max_records: int = MAX_RECORDED_CALLS_PER_STEP,
    ) -> None:
        self.max_per_step = max_per_step
        self.max_per_episode = max_per_episode
        self.max_records = max_records
        self.requests = 0  # this episode's, all kinds
        self._step_requests = 0
        self._records: list[dict[str, Any]] = []
        self._dropped = 0
        self._lock = threading.Lock()

    def start_step(self) -> None:
        """A new step: its request count and records start empty."""
        with self._lock:
            self._step_requests, self._records, self._dropped = 0, [], 0

    def take_step(self) -> tuple[list[dict[str, Any]], int]:
        """This step's records (a copy) and how many calls were left out of them."""
        with self._lock:
            return list(self._records), self._dropped

    def admit(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Count one request and open its record.

        Returns:
            The record to complete with :meth:`close`.

        Raises:
            ToolCallError: ``BudgetExhausted`` past a limit; the record is kept (as refused) all the same.
        """
        record: dict[str, Any] = {
            "tool": op[:64],
            "args": bounded_preview(args, RECORD_ARGS_CHARS),
            "_started": time.monotonic(),
        }
        with self._lock:
            self.requests += 1
            self._step_requests += 1
            over_step = self._step_requests > self.max_per_step
            over_episode = self.requests > self.max_per_episode
        if over_step or over_episode:
            why = (
                f"more than {self.max_per_step} tool requests in this step; the rest of this step's "
                "requests are refused"
                if over_step
                else f"more than {self.max_per_episode} tool requests in this episode; no more are "
                "served: answer with what you have"
            )
            error = ToolCallError("BudgetExhausted", why)
            self.close(record, error=error)
            raise error
        return record

    def close(self, record: dict[str, Any], *, error: BaseException | None = None) -> None:
        """Complete a record (ok, or the error the agent got) and keep it if there is room."""
        record["ok"] = error is None
        if isinstance(error, ToolCallError):
            record["error"] = f"{error.kind}: {error.message}"[:RECORD_ERROR_CHARS]
        elif error is not None:
            record["error"] = f"ToolError: {type(error).__name__}"
        record["elapsed_s"] = round(time.monotonic() - record.pop("_started"), 6)
        with self._lock:
            if len(self._records) < self.max_records:
                self._records.append(record)
            else:
                self._dropped += 1


# Backend calls run on a thread pool so the bridge thread can give up on one that hangs (it cannot
# be killed; it finishes in the background). One pool per process, made anew in a forked child: a
# pool's threads do not survive fork (gymnasium's AsyncVectorEnv forks its workers), and an
# inherited pool queues the child's calls for threads that do not exist: every search timed out.
_pool: cf.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def backend_calls() -> cf.ThreadPoolExecutor:
    """The process's thread pool for search-backend calls (created on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = cf.ThreadPoolExecutor(max_workers=32, thread_name_prefix="l0-search")
        return _pool


def _forget_pool_after_fork() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()  # the parent's lock may have been held at fork


os.register_at_fork(after_in_child=_forget_pool_after_fork)
