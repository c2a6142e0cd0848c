"""Sandbox policy: whether kernels run under bubblewrap and its seccomp filter, decided once.

``sandbox="bwrap"`` refuses to run without bubblewrap or without the filter; ``"auto"`` warns
loudly and runs unsandboxed (no bubblewrap) or sandboxed without the filter; ``"none"`` runs
unsandboxed without a word. Each check starts a probe sandbox, so it runs once per process.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from typing import Literal

from .sandbox import SandboxUnavailable, check_bwrap

log = logging.getLogger(__name__)

SandboxMode = Literal["auto", "bwrap", "none"]


class CachedCheck:
    """A probe's answer, computed once per process (a probe starts a sandbox): None when the
    feature works, else why not."""

    def __init__(self, probe: Callable[[], str | None]) -> None:
        self._probe = probe
        self._lock = threading.Lock()
        self._checked = False
        self._problem: str | None = None

    def problem(self) -> str | None:
        with self._lock:
            if not self._checked:
                self._problem, self._checked = self._probe(), True
            return self._problem

    def forget(self) -> None:
        """Probe again next time (the machine changed: tests, a freshly installed bubblewrap)."""
        with self._lock:
            self._checked = False


BWRAP = CachedCheck(check_bwrap)
SECCOMP = CachedCheck(lambda: check_bwrap(use_seccomp=True))


def forget_checks() -> None:
    """Forget both cached answers."""
    BWRAP.forget()
    SECCOMP.forget()


def _decide(mode: SandboxMode, check: CachedCheck, refusal: str, warning: str) -> bool:
    """True when ``check`` passes; else ``"bwrap"`` raises ``refusal + problem`` and ``"auto"``
    warns (``warning`` formatted with the problem) and goes on without the feature."""
    if mode == "none":
        return False
    problem = check.problem()
    if problem is None:
        return True
    if mode == "bwrap":
        raise SandboxUnavailable(refusal + problem)
    message = warning.format(problem=problem)
    warnings.warn(message, RuntimeWarning, stacklevel=4)  # the caller of resolve_*'s caller
    log.warning(message)
    return False


def resolve_sandbox(mode: SandboxMode) -> bool:
    """Whether to use bubblewrap for ``mode``; raises or warns when it cannot run."""
    return _decide(
        mode,
        BWRAP,
        "sandbox='bwrap' but ",
        "L0 Gym: RUNNING MODEL-WRITTEN CODE WITHOUT A SANDBOX, because {problem}. "
        "The code can read your files, use the network and kill your processes. "
        "Install bubblewrap, or pass sandbox='bwrap' to refuse to run unsandboxed.",
    )


def resolve_seccomp(mode: SandboxMode) -> bool:
    """Whether a bubblewrap sandbox for ``mode`` gets the seccomp filter; raises or warns when no
    filter can be loaded here (``"bwrap"`` refuses, ``"auto"`` runs the sandbox without it)."""
    return _decide(
        mode,
        SECCOMP,
        "sandbox='bwrap' but no seccomp filter: ",
        "L0 Gym: the sandbox runs WITHOUT ITS SECCOMP FILTER, because {problem}. Nested "
        "user namespaces, the kernel keyring and memfd are then open to the agent's code. "
        "Pass sandbox='bwrap' to refuse to run without it.",
    )
