"""Stop a training run cleanly on SIGTERM or SIGINT (Ctrl-C), so ``--resume`` picks it up exactly.

``python -m l0_learner.run`` runs under :class:`StopOnSignals`: the first SIGTERM/SIGINT raises
:class:`Interrupted` in the main thread at once (the iteration in progress is abandoned, never
half-saved), the run's ``finally`` blocks close the envs (every kernel and sandbox process ends),
and the command exits with ``128 + signal`` (143 for SIGTERM, 130 for SIGINT). A commit, i.e. an
iteration's metrics line and its checkpoint, runs inside :func:`critical`: a signal that arrives
there waits until the commit is complete, so the run directory always holds whole iterations.
On resume, whatever was logged after the newest checkpoint is dropped and redone
(:meth:`l0_learner.runs.RunDir.rollback_to`), so ``metrics.jsonl`` matches the checkpoint.

A second signal while the run is stopping is reported and otherwise ignored, so the envs still
close; SIGKILL forces the exit (the sandboxes die with their parent either way).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """A stop signal arrived (a BaseException, like KeyboardInterrupt: ``except Exception`` passes it on)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signame = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signame}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a death by signal: 128 + the signal number."""
        return 128 + self.signum


_active: StopOnSignals | None = None


class StopOnSignals:
    """Turn SIGTERM/SIGINT into :class:`Interrupted` while the ``with`` block runs.

    A no-op outside the main thread (Python delivers signals there only). A signal that the process
    ignores at entry (``SIG_IGN``, e.g. SIGINT in a background job) stays ignored.
    """

    def __init__(self, signals: Sequence[int] = SIGNALS) -> None:
        self.signals = tuple(signals)
        self.received: int | None = None
        self._raised = False
        self._depth = 0
        self._previous: dict[int, Any] = {}
        self._installed = False
        self._outer: StopOnSignals | None = None

    def __enter__(self) -> StopOnSignals:
        global _active
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in self.signals:
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN:
                continue
            self._previous[sig] = old
            signal.signal(sig, self._handle)
        self._outer, _active = _active, self
        self._installed = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        global _active
        if not self._installed:
            return
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        _active, self._outer = self._outer, None
        self._previous, self._installed = {}, False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            print(
                f"{name} received while stopping: still closing the environments (SIGKILL forces the exit)",
                file=sys.stderr,
                flush=True,
            )
            return
        self.received = signum
        if self._depth > 0:
            print(
                f"{name} received: finishing the write in progress, then stopping",
                file=sys.stderr,
                flush=True,
            )
            return
        self._raised = True
        raise Interrupted(signum)

    def check(self) -> None:
        """Raise :class:`Interrupted` now if a signal arrived inside a :func:`critical` block, or
        arrived earlier and its exception was swallowed: the handler raises in whatever frame the
        main thread is in, and an asyncio callback there (an HTTP client's connection teardown)
        logs the exception and goes on, so without this the run never stopped."""
        if self.received is not None and self._depth == 0:
            self._raised = True
            raise Interrupted(self.received)


@contextmanager
def critical() -> Iterator[None]:
    """Hold a stop signal until the block has finished (it is raised right after it).

    Used around a commit (an iteration's metrics line and checkpoint, a stage's output and its
    mark in ``stages.json``) so a signal never splits one. Without an active
    :class:`StopOnSignals` it does nothing.
    """
    guard = _active
    if guard is None:
        yield
        return
    guard._depth += 1
    try:
        yield
    finally:
        guard._depth -= 1
    guard.check()
