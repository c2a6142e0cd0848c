"""Warm kernels: a pool starts sandboxed kernels in the background so ``reset`` does not wait.

Kernels are single-use: an episode takes a fresh one and the old one is closed, so no state
leaks between episodes. Closing the pool kills the warm kernels it holds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque

from jupyter_core.utils import ensure_event_loop

from .config import KernelConfig
from .policy import resolve_sandbox
from .session import SandboxedKernel

log = logging.getLogger(__name__)


class KernelPool:
    """Keeps up to ``size`` started kernels ready to hand out.

    Args:
        config: how the kernels are started.
        size: how many warm kernels to keep ready (0 = start on demand).
    """

    def __init__(self, config: KernelConfig | None = None, *, size: int = 1) -> None:
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"pool size must be an int >= 0, got {size!r}")
        self.config = config or KernelConfig()
        resolve_sandbox(self.config.sandbox)  # refuse (or warn) now, not in a background thread
        self.size = size
        self._ready: deque[SandboxedKernel] = deque()
        self._starting = 0
        self._waiting = 0  # acquirers waiting for a kernel that is already starting
        self._lock = threading.Condition()
        self._closed = False
        self.start_failures = 0
        self._threads: list[threading.Thread] = []

    def acquire(self) -> SandboxedKernel:
        """A started kernel: a warm one if available, else one already starting, else a new one.

        Waiting for a start already in flight (instead of starting yet another kernel) keeps a
        wave of resets from starting ``N + size`` kernels at once on a small machine.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the kernel pool is closed")
            if not self._ready and self._starting > self._waiting:
                self._waiting += 1
                try:
                    self._lock.wait_for(
                        lambda: self._closed or self._ready or self._starting == 0,
                        timeout=self.config.startup_timeout,
                    )
                finally:
                    self._waiting -= 1
            kernel = self._ready.popleft() if self._ready else None
        if kernel is not None and not kernel.is_alive():
            kernel.close()
            kernel = None
        if kernel is None:
            kernel = SandboxedKernel(self.config)
        self.refill()
        return kernel

    def refill(self) -> None:
        """Start kernels in the background until ``size`` are ready or starting."""
        with self._lock:
            missing = self.size - len(self._ready) - self._starting
            if self._closed or missing <= 0:
                return
            self._starting += missing
            self._threads = [t for t in self._threads if t.is_alive()]
            for _ in range(missing):
                thread = threading.Thread(target=self._start_one, name="l0-kernel-pool", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _start_one(self) -> None:
        kernel = None
        try:
            kernel = SandboxedKernel(self.config)
        except Exception as exc:  # acquire() will start one itself and raise the error there
            log.warning("warm kernel failed to start: %s", exc)
            with self._lock:
                self.start_failures += 1
        with self._lock:
            self._starting -= 1
            if kernel is not None and not self._closed:
                self._ready.append(kernel)
                kernel = None
            self._lock.notify_all()
        if kernel is not None:
            kernel.close()  # the pool closed while it was starting
        # jupyter_client's blocking calls made an event loop for this thread; it ends now.
        with contextlib.suppress(Exception):
            ensure_event_loop().close()

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Block until the pool is full (for benchmarks and tests)."""
        with self._lock:
            return self._lock.wait_for(lambda: self._closed or len(self._ready) >= self.size, timeout=timeout)

    @property
    def n_ready(self) -> int:
        return len(self._ready)

    def close(self) -> None:
        """Kill the warm kernels; kernels already handed out belong to their caller. Idempotent."""
        with self._lock:
            self._closed = True
            ready, self._ready = list(self._ready), deque()
            threads = list(self._threads)
        for kernel in ready:
            kernel.close()
        for thread in threads:
            thread.join(timeout=self.config.startup_timeout + 5)
        # A kernel whose start finished after we took the list was closed by _start_one.
        with contextlib.suppress(Exception):
            for kernel in list(self._ready):
                kernel.close()
