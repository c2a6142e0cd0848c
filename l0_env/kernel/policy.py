"""Sandbox policy: whether kernels run under bubblewrap and its seccomp filter, decided once.

``sandbox="bwrap"`` refuses to run without bubblewrap or without the filter; ``"auto"`` warns
loudly and runs unsandboxed (no bubblewrap) or sandboxed without the filter; ``"none"`` runs
unsandboxed without a word. Each check starts a probe sandbox, so it runs once per process.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Literal

from .sandbox import SandboxUnavailable, check_bwrap

log = logging.getLogger(__name__)

SandboxMode = Literal["auto", "bwrap", "none"]

_check_lock = threading.Lock()  # guards the two cached answers below
_bwrap_problem: str | bool | None = False  # False: not checked yet; None: fine; str: why not
_seccomp_problem: str | bool | None = False


def resolve_sandbox(mode: SandboxMode) -> bool:
    """Whether to use bubblewrap for ``mode``; raises or warns when it cannot run."""
    global _bwrap_problem
    if mode == "none":
        return False
    with _check_lock:
        if _bwrap_problem is False:
            _bwrap_problem = check_bwrap()
        problem = _bwrap_problem
    if problem is None:
        return True
    if mode == "bwrap":
        raise SandboxUnavailable(f"sandbox='bwrap' but {problem}")
    message = (
        f"L0 Gym: RUNNING MODEL-WRITTEN CODE WITHOUT A SANDBOX, because {problem}. "
        "The code can read your files, use the network and kill your processes. "
        "Install bubblewrap, or pass sandbox='bwrap' to refuse to run unsandboxed."
    )
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    log.warning(message)
    return False


def resolve_seccomp(mode: SandboxMode) -> bool:
    """Whether a bubblewrap sandbox for ``mode`` gets the seccomp filter; raises or warns when no
    filter can be loaded here (``"bwrap"`` refuses, ``"auto"`` runs the sandbox without it)."""
    global _seccomp_problem
    if mode == "none":
        return False
    with _check_lock:
        if _seccomp_problem is False:
            _seccomp_problem = check_bwrap(use_seccomp=True)
        problem = _seccomp_problem
    if problem is None:
        return True
    if mode == "bwrap":
        raise SandboxUnavailable(f"sandbox='bwrap' but no seccomp filter: {problem}")
    message = (
        f"L0 Gym: the sandbox runs WITHOUT ITS SECCOMP FILTER, because {problem}. Nested "
        "user namespaces, the kernel keyring and memfd are then open to the agent's code. "
        "Pass sandbox='bwrap' to refuse to run without it."
    )
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    log.warning(message)
    return False
