"""The kernel's entry point: ipykernel started without Jupyter's debugger (debugpy).

This file runs *inside* the sandbox, which shows only ``/usr`` and the Python installation, not the
project, so it cannot be imported there: :func:`kernel_command` passes its source with ``python -c``.
ipykernel's own arguments follow (``-f <connection file> --quiet ...``) and are parsed exactly as
``python -m ipykernel_launcher`` parses them. It imports nothing of ``l0_env``.

Why: ``python -m ipykernel_launcher`` imports ``ipykernel.debugger``, which imports debugpy and its
vendored pydevd (140 modules; 60-120 ms of CPU per kernel start, a fifth of it), for the visual
debugger of JupyterLab that no client of ours ever asks for. ipykernel guards that import (``except
ImportError``: the kernel then does not announce the "debugger" feature and answers debug requests
with nothing), so refusing ``debugpy`` before ipykernel is imported turns the debugger off cleanly,
with nothing in the kernel's log. ``ipykernel.debugger`` itself (small) is still imported: it holds
the guard.

What the agent sees: ``import debugpy`` in a cell raises ``ModuleNotFoundError: No module named
'debugpy' (the sandboxed kernel runs without Jupyter's debugger)``. This is not a security
measure (the agent's code can remove the finder and import debugpy, which it could anyway); it only
keeps the start cheap.

The command line still names ``ipykernel_launcher`` (an argument this launcher takes off
``sys.argv`` before ipykernel parses it), so whatever finds kernel processes by their command line
(``ps``, ``tests/test_faults.py``, the benchmarks) finds them with either launcher.

Choosing the launcher: the default is this one; ``L0_KERNEL_LAUNCHER=ipykernel`` in the host's
environment starts kernels with the stock ``-m ipykernel_launcher`` instead (for comparisons, as in
``benchmarks/kernel_start.py``, or should an ipykernel release stop guarding the import).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Literal

Launcher = Literal["l0", "ipykernel"]
LAUNCHER_ENV = "L0_KERNEL_LAUNCHER"
PROCESS_MARKER = "ipykernel_launcher"  # in the kernel's argv either way (see above)
BLOCKED_MODULE = "debugpy"
BLOCKED_MESSAGE = f"No module named {BLOCKED_MODULE!r} (the sandboxed kernel runs without Jupyter's debugger)"


class NoDebuggerFinder:
    """The first entry of ``sys.meta_path`` in the kernel: refuses ``debugpy`` and its submodules.

    A meta path finder rather than ``sys.modules["debugpy"] = None`` for the message: None there
    makes Python say "import of debugpy halted; None in sys.modules", which tells the agent nothing.
    """

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: object = None
    ) -> ModuleSpec | None:
        if fullname == BLOCKED_MODULE or fullname.startswith(BLOCKED_MODULE + "."):
            raise ModuleNotFoundError(BLOCKED_MESSAGE, name=fullname)
        return None


def main() -> None:
    """Start the IPython kernel app with ``sys.argv`` (run in the kernel's interpreter, as ``-c``)."""
    # -c puts the working directory ("": the agent's writable home) first on sys.path. As
    # ipykernel_launcher does, take it off while ipykernel loads (a file there must not shadow a
    # module ipykernel imports); IPython puts "" back for the agent's own imports (init_path).
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    if sys.argv[1:2] == [PROCESS_MARKER]:
        del sys.argv[1]
    sys.meta_path.insert(0, NoDebuggerFinder())
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


def resolve_launcher(launcher: str | None = None) -> Launcher:
    """``launcher``, else ``$L0_KERNEL_LAUNCHER``, else "l0"; checked.

    Raises:
        ValueError: not "l0" or "ipykernel" (the message names where the value came from).
    """
    source = "launcher"
    if launcher is None:
        launcher, source = os.environ.get(LAUNCHER_ENV) or "l0", f"${LAUNCHER_ENV}"
    if launcher == "l0":
        return "l0"
    if launcher == "ipykernel":
        return "ipykernel"
    raise ValueError(
        f"{source} must be 'l0' (ipykernel without its debugger) or 'ipykernel', got {launcher!r}"
    )


def kernel_command(python: str, launcher: str | None = None) -> list[str]:
    """The start of the kernel's command line: the interpreter and its entry point.

    ipykernel's arguments (``-f <connection file>`` and options) go after it.

    Args:
        python: the kernel's interpreter.
        launcher: "l0" (this file's :func:`main`: no debugger) or "ipykernel" (stock
            ``-m ipykernel_launcher``); None reads ``$L0_KERNEL_LAUNCHER``, default "l0".
    """
    if resolve_launcher(launcher) == "ipykernel":
        return [python, "-m", "ipykernel_launcher"]
    return [python, "-c", _source(), PROCESS_MARKER]


@functools.cache
def _source() -> str:
    return Path(__file__).read_text(encoding="utf-8")  # on the host; inside, -c has no __file__


if __name__ == "__main__":
    main()
