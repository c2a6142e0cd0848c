"""A thread pool that serves many jobs' work units round-robin, so no job waits behind all of another.

A plain executor runs requests first come, first served: two batches of 4,096 queries hold every
thread, and a one-query request behind them waits for both. Here a job is a list of small units
(a few queries each); the threads take one unit from the job at the front of a ring and put the
job back at the end, so a job of one unit waits for at most one unit of each job ahead of it.

A job can be cancelled (its client went away, its deadline passed): units not yet started are
dropped, the ones running finish. The pool also drops a job's remaining units itself once its
deadline has passed. The number of jobs admitted at once is bounded; `PoolBusy` says when full.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)


class PoolBusy(Exception):
    """The pool already holds its maximum number of jobs."""


class DeadlineExceeded(Exception):
    """The job's deadline passed before all its units ran."""


class Cancelled(Exception):
    """The job was cancelled before all its units ran."""


class Job:
    """Units of work submitted together; see `FairPool.submit`.

    Attributes:
        results: One result per unit, in order (valid once `done` is set without `error`).
        error: None, or why the job did not complete: the first exception a unit raised,
            `DeadlineExceeded` or `Cancelled`.
        done: Set when the job is finished (completed, failed or cancelled) and none of its
            units is running.
    """

    def __init__(
        self, units: Sequence[Callable[[], Any]], deadline: float, on_done: Callable[[Job], None] | None
    ):
        self.units = list(units)
        self.deadline = deadline
        self.results: list[Any] = [None] * len(self.units)
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._on_done = on_done
        self._next = 0  # the next unit to start
        self._running = 0
        self._finished_units = 0


class FairPool:
    """Threads serving jobs' units round-robin (module docstring).

    Args:
        threads: Worker threads.
        max_jobs: Jobs admitted at once (queued or running); `submit` raises `PoolBusy` beyond.
        name: Thread name prefix.
    """

    def __init__(self, threads: int, max_jobs: int, name: str = "fair-pool") -> None:
        if threads < 1 or max_jobs < 1:
            raise ValueError("threads and max_jobs must be >= 1")
        self.max_jobs = max_jobs
        self._ring: deque[Job] = deque()
        self._jobs = 0
        self._units_run = 0
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    def submit(
        self,
        units: Sequence[Callable[[], Any]],
        *,
        deadline: float,
        on_done: Callable[[Job], None] | None = None,
    ) -> Job:
        """Queue a job of ``units`` (called on the pool's threads, each once, maybe concurrently).

        Args:
            units: Callables; their return values become ``job.results``.
            deadline: ``time.monotonic()`` after which no further unit of the job starts.
            on_done: Called once, on a pool thread (or here, for an empty job), when the job is done.

        Raises:
            PoolBusy: ``max_jobs`` jobs are already admitted.
            RuntimeError: The pool is closed.
        """
        job = Job(units, deadline, on_done)
        with self._cond:
            if self._closed:
                raise RuntimeError("the pool is closed")
            if self._jobs >= self.max_jobs:
                raise PoolBusy(f"{self._jobs} requests are already queued or running")
            if not job.units:
                self._finish(job)
                return job
            self._jobs += 1
            self._ring.append(job)
            self._cond.notify()
        return job

    def cancel(self, job: Job, error: BaseException | None = None) -> None:
        """Drop the units of ``job`` not yet started (a no-op for a finished job)."""
        with self._cond:
            if job.done.is_set() or job.error is not None:
                return
            job.error = error or Cancelled()
            self._drop(job)

    def stats(self) -> dict[str, int]:
        """``{"jobs": admitted jobs, "units_run": units started since the pool was made}``."""
        with self._cond:
            return {"jobs": self._jobs, "units_run": self._units_run}

    def close(self) -> None:
        """Stop the threads once their current units end; queued jobs are cancelled."""
        with self._cond:
            self._closed = True
            for job in list(self._ring):
                job.error = job.error or Cancelled()
                self._drop(job)
            self._cond.notify_all()

    # -- internals (callers hold self._cond) --------------------------------------------------

    def _drop(self, job: Job) -> None:
        with contextlib.suppress(ValueError):  # not in the ring: popped for its last units
            self._ring.remove(job)
        if job._running == 0:
            self._jobs -= 1
            self._finish(job)

    def _finish(self, job: Job) -> None:
        job.done.set()
        if job._on_done is not None:
            try:
                job._on_done(job)
            except Exception:  # a callback's failure must not kill a pool thread
                log.exception("a job's on_done callback raised")

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._ring and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._ring.popleft()
                if time.monotonic() >= job.deadline:
                    job.error = DeadlineExceeded()
                    self._drop(job)
                    continue
                index = job._next
                job._next += 1
                job._running += 1
                self._units_run += 1
                if job._next < len(job.units):
                    self._ring.append(job)  # the back of the ring: every other job gets a turn first
            try:
                result, error = job.units[index](), None
            except Exception as exc:  # reported through job.error
                result, error = None, exc
            with self._cond:
                job._running -= 1
                job._finished_units += 1
                if error is not None and job.error is None:
                    job.error = error
                    self._drop(job)
                elif job.error is None:
                    job.results[index] = result
                    if job._finished_units == len(job.units):
                        self._jobs -= 1
                        self._finish(job)
                elif job._running == 0 and not job.done.is_set():
                    self._jobs -= 1
                    self._finish(job)
