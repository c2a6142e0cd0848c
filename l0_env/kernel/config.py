"""How kernels are started and cells are run: one frozen, validated configuration."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from typing import Literal

from .policy import SandboxMode
from .sandbox import SandboxLimits
from .tool_stubs import ToolStub, check_stubs


@dataclass(frozen=True)
class KernelConfig:
    """How kernels are started and how cells are run.

    Attributes:
        sandbox: "bwrap" (refuse to run without bubblewrap), "auto" (bubblewrap when it works,
            else a loud warning and no sandbox), or "none".
        limits: resource limits inside the sandbox.
        cell_timeout: wall-clock seconds a cell may run before it is interrupted.
        interrupt_grace: seconds to wait for an interrupted cell to stop (and for the kernel to
            confirm the interrupt) before killing the kernel.
        max_output_chars: characters of a cell's output shown to the agent (head + tail kept).
        flood_chars: a cell that prints more than this is interrupted (protects host memory).
        startup_timeout: seconds a kernel may take to start.
        python: the interpreter that runs ipykernel (must have ipykernel installed).
        tools: the tools defined in the kernel (stubs that call the host through the bridge;
            :class:`l0_env.tool.Tool` makes them). Kernels from one pool share them.
        kernel_start: "auto" (default: "zygote" where it is supported, a sandboxed root host,
            else "spawn"), "spawn" (bubblewrap runs a fresh interpreter per kernel) or "zygote"
            (the same sandbox, with the kernel forked from a warm, pre-imported interpreter: about
            a fifth of the CPU per start; root hosts only, else it warns once and spawns; a failed
            fork also warns and spawns; see ``zygote.py`` for what it guarantees and its trade-offs).
    """

    sandbox: SandboxMode = "auto"
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    cell_timeout: float = 30.0
    interrupt_grace: float = 3.0
    max_output_chars: int = 4_000
    flood_chars: int = 5_000_000
    startup_timeout: float = 60.0
    # Normalised: "/x/scripts/../.venv/bin/python" would pass through a dir the sandbox lacks.
    python: str = os.path.normpath(sys.executable)
    tools: tuple[ToolStub, ...] = ()
    kernel_start: Literal["auto", "spawn", "zygote"] = "auto"

    def __post_init__(self) -> None:
        if self.sandbox not in ("auto", "bwrap", "none"):
            raise ValueError(f"sandbox must be 'auto', 'bwrap' or 'none', got {self.sandbox!r}")
        for name in ("cell_timeout", "interrupt_grace", "startup_timeout"):
            value = getattr(self, name)
            # nan would disable the timeout (every comparison is False) and inf is no limit.
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
        for name in ("max_output_chars", "flood_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 100:
                raise ValueError(f"{name} must be an int >= 100, got {value!r}")
        if self.kernel_start not in ("auto", "spawn", "zygote"):
            raise ValueError(f"kernel_start must be 'auto', 'spawn' or 'zygote', got {self.kernel_start!r}")
        object.__setattr__(self, "tools", check_stubs(self.tools))
        if not isinstance(self.limits, SandboxLimits):
            raise ValueError(f"limits must be a SandboxLimits, got {type(self.limits).__name__}")
