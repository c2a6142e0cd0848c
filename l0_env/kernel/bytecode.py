"""Check that every module a kernel imports has valid, up-to-date bytecode (for set-up and CI).

Why: the sandbox mounts the Python installation read-only and sets ``PYTHONDONTWRITEBYTECODE=1``,
so a module whose ``.pyc`` is missing, stale or unreadable is compiled from source at *every*
kernel start, and nothing inside can repair it. One package installed without bytecode costs about
2 s of CPU per start (5x the whole start), silently. This check finds that before it costs.

How: start a real kernel exactly as an episode does (the configured entry point, ``kernel_main.py``
by default, and the tools' installation), unsandboxed because it runs only our code and the
sandbox imports the same files from the same paths, and list the Python source of every module in
its ``sys.modules``. For each, the bytecode file the kernel's interpreter looks for
(``__spec__.cached``) must

* exist and start with this interpreter's magic number;
* match its source as the import system checks it (PEP 552): modification time and size for a
  timestamp ``.pyc``, the source's hash for a checked hash-based one (an unchecked one is always
  used);
* be readable by the sandbox's user: when the host runs as root the kernel runs as a leased
  unprivileged uid, which needs the file world-readable and its ``__pycache__`` world-searchable.

Only the header is checked, not the code object (a corrupt body makes the import fail loudly, not
slowly).

``python -m l0_env.kernel.bytecode`` prints what is missing and how to fix it, and exits 1 if
anything is; ``--fix`` compiles (and opens up) what needs it; ``--import numpy`` also checks a
module the agent's code is likely to import. Exit 2: the kernel did not start.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import py_compile
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

HEADER_BYTES = 16  # magic, flags, then mtime + size or the 8-byte source hash (PEP 552)
_FLAG_HASH_BASED = 0b01
_FLAG_CHECK_SOURCE = 0b10

# Run as a cell in the listing kernel: {name: [source, cached]} of every module with a .py source.
_LIST_MODULES = """
import importlib as _il, json as _js, sys as _sy
_sy.path[:0] = {path!r}
for _n in {imports!r}:
    _il.import_module(_n)
with open({out!r}, "w", encoding="utf-8") as _f:
    _js.dump({{
        _n: [_s.origin, _s.cached]
        for _n, _m in list(_sy.modules.items())
        if (_s := getattr(_m, "__spec__", None)) is not None and _s.has_location
        and isinstance(_s.origin, str) and _s.origin.endswith(".py")
    }}, _f)
"""


class KernelListingError(RuntimeError):
    """The kernel that lists the modules did not start, or an extra import failed in it."""


@dataclass(frozen=True)
class ModuleFile:
    """One imported module's source and the bytecode file its interpreter looks for.

    Attributes:
        name: the module's dotted name.
        source: its ``.py`` file.
        cached: its ``.pyc`` file (``__spec__.cached``); None when the interpreter would use none.
    """

    name: str
    source: str
    cached: str | None


@dataclass(frozen=True)
class Problem:
    """A module that the kernel compiles from source at every start, and why."""

    module: ModuleFile
    reason: str

    def __str__(self) -> str:
        return f"{self.module.name}  ({self.module.source}): {self.reason}"


# -- the pyc header (pure) -----------------------------------------------------------------------


def header_problem(
    header: bytes,
    *,
    source_mtime: float,
    source_size: int,
    source_hash: Callable[[], bytes],
    magic: bytes = importlib.util.MAGIC_NUMBER,
) -> str | None:
    """Why the import system would not use a ``.pyc`` with this header, or None if it would.

    Follows ``importlib._bootstrap_external`` (``_classify_pyc``, ``_validate_timestamp_pyc``,
    ``_validate_hash_pyc``) for ``--check-hash-based-pycs default``, the kernel's setting.

    Args:
        header: the file's first :data:`HEADER_BYTES` bytes (or all of it, if shorter).
        source_mtime: the source's ``st_mtime``.
        source_size: the source's ``st_size``.
        source_hash: returns ``importlib.util.source_hash`` of the source; called only for a
            checked hash-based ``.pyc``.
        magic: the interpreter's magic number.
    """
    if len(header) < HEADER_BYTES:
        return f"truncated ({len(header)} bytes)"
    if header[:4] != magic:
        return f"compiled by another Python version (magic {header[:4].hex()}, this one {magic.hex()})"
    flags = int.from_bytes(header[4:8], "little")
    if flags & ~(_FLAG_HASH_BASED | _FLAG_CHECK_SOURCE):
        return f"invalid flags {flags:#x}"
    if flags & _FLAG_HASH_BASED:
        if flags & _FLAG_CHECK_SOURCE and header[8:16] != source_hash():
            return "stale (the source's hash changed since it was compiled)"
        return None
    if int.from_bytes(header[8:12], "little") != int(source_mtime) & 0xFFFFFFFF:
        return "stale (the source's modification time changed since it was compiled)"
    if int.from_bytes(header[12:16], "little") != source_size & 0xFFFFFFFF:
        return "stale (the source's size changed since it was compiled)"
    return None


# -- checking and fixing files ---------------------------------------------------------------------


def _runs_as_other_uid() -> bool:
    return os.geteuid() == 0  # root hosts drop the kernel to a leased uid (sandbox.py)


def _unreadable(cached: str) -> str | None:
    if not _runs_as_other_uid():
        return None if os.access(cached, os.R_OK) else "not readable by this user"
    if not os.stat(cached).st_mode & stat.S_IROTH:
        return "not readable by the sandbox's uid (the file is not world-readable)"
    if not os.stat(os.path.dirname(cached)).st_mode & stat.S_IXOTH:
        return "not readable by the sandbox's uid (its __pycache__ is not world-searchable)"
    return None


def _header_reason(module: ModuleFile) -> str | None:
    """Why the import system would not use ``module``'s ``.pyc`` (by its header), or None."""
    assert module.cached is not None
    try:
        src = os.stat(module.source)
    except OSError as exc:
        return f"source unreadable: {exc.strerror}"
    try:
        with open(module.cached, "rb") as f:
            header = f.read(HEADER_BYTES)
    except FileNotFoundError:
        return f"no bytecode ({module.cached} is missing)"
    except OSError as exc:
        return f"bytecode unreadable ({module.cached}: {exc.strerror})"
    return header_problem(
        header,
        source_mtime=src.st_mtime,
        source_size=src.st_size,
        source_hash=lambda: importlib.util.source_hash(Path(module.source).read_bytes()),
    )


def check_module(module: ModuleFile) -> Problem | None:
    """Why ``module`` is compiled from source at each kernel start, or None when its bytecode is used."""
    if module.cached is None:
        return Problem(module, "its interpreter has no bytecode cache location for it")
    why = _header_reason(module) or _unreadable(module.cached)
    return None if why is None else Problem(module, why)


def check_modules(modules: Iterable[ModuleFile]) -> list[Problem]:
    """The problems of ``modules`` (see :func:`check_module`), in name order."""
    found = (check_module(m) for m in sorted(modules, key=lambda m: m.name))
    return [p for p in found if p is not None]


def fix(problem: Problem) -> str | None:
    """Compile the module's bytecode where its interpreter looks for it and make it readable by the
    sandbox's uid; None when done, else why not (e.g. the directory is not writable by us)."""
    module = problem.module
    if module.cached is None:
        return problem.reason
    try:
        if _header_reason(module) is not None:
            py_compile.compile(module.source, cfile=module.cached, doraise=True)
        if _runs_as_other_uid():
            pycache = os.path.dirname(module.cached)
            os.chmod(pycache, os.stat(pycache).st_mode | 0o555)
            os.chmod(module.cached, os.stat(module.cached).st_mode | 0o444)
    except (OSError, py_compile.PyCompileError) as exc:
        return str(exc)
    left = check_module(module)
    return None if left is None else left.reason


def top_level_path(module: ModuleFile) -> str:
    """The top-level package directory (or single-module file) ``module`` belongs to, for
    ``python -m compileall``."""
    depth = module.name.count(".") + (1 if os.path.basename(module.source) == "__init__.py" else 0)
    path = Path(module.source)
    for _ in range(depth):
        path = path.parent
    return str(path)


# -- listing what a kernel imports (IO: starts a kernel) --------------------------------------------


def kernel_modules(imports: Sequence[str] = (), path: Sequence[str] = ()) -> list[ModuleFile]:
    """Every module with a Python source in a freshly started kernel's ``sys.modules``, after the
    tools are installed (what each episode's start imports), plus ``imports``.

    The kernel starts as the env starts them (``KernelConfig``'s interpreter and the configured
    entry point) but unsandboxed: it runs only this code.

    Args:
        imports: more modules to import first (what the agent's code is expected to use).
        path: directories put first on the kernel's ``sys.path`` before ``imports``.

    Raises:
        KernelListingError: the kernel did not start, or an import failed (the message says which).
    """
    from .session import KernelConfig, KernelStartError, SandboxedKernel  # heavy: zmq, jupyter_client

    with tempfile.TemporaryDirectory(prefix="l0-bytecode-") as tmp:
        out = os.path.join(tmp, "modules.json")
        code = _LIST_MODULES.format(path=list(path), imports=list(imports), out=out)
        try:
            with SandboxedKernel(KernelConfig(sandbox="none", cell_timeout=120.0)) as kernel:
                result = kernel.execute(code)
                log = kernel.log_tail()
        except (KernelStartError, ValueError) as exc:  # ValueError: a bad $L0_KERNEL_LAUNCHER
            raise KernelListingError(f"the kernel did not start: {exc}") from None
        if result.status != "ok":
            raise KernelListingError(f"listing the kernel's modules failed ({result.status}): {result.text}")
        try:
            listed = json.loads(Path(out).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise KernelListingError(f"the kernel wrote no module list: {exc}; its log: {log}") from None
    return [ModuleFile(name, source, cached) for name, (source, cached) in listed.items()]


# -- the command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m l0_env.kernel.bytecode [--fix] [--import MODULE ...] [--path DIR ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m l0_env.kernel.bytecode",
        description="Check that every module a sandboxed kernel imports has valid, up-to-date bytecode "
        "(the read-only sandbox compiles any other from source at every start).",
    )
    parser.add_argument("--fix", action="store_true", help="compile what is missing or stale")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="also check this module and what it imports (repeatable), e.g. numpy",
    )
    parser.add_argument(
        "--path", action="append", default=[], metavar="DIR", help="put DIR first on the kernel's sys.path"
    )
    args = parser.parse_args(argv)
    try:
        modules = kernel_modules(args.imports, args.path)
    except KernelListingError as exc:
        print(f"bytecode: {exc}", file=sys.stderr)
        return 2
    problems = check_modules(modules)
    if not problems:
        print(f"bytecode: all {len(modules)} modules a kernel imports have valid bytecode")
        return 0
    print(
        f"bytecode: {len(problems)} of the {len(modules)} modules a kernel imports have no usable bytecode; "
        "the read-only sandbox compiles each from source at every kernel start:"
    )
    for problem in problems:
        print(f"  {problem}")
    if not args.fix:
        python = os.path.normpath(sys.executable)
        print("fix: python -m l0_env.kernel.bytecode --fix   (or, as the owner of these files:)")
        for top in sorted({top_level_path(p.module) for p in problems}):
            print(f"     {python} -m compileall -q {top}")
        return 1
    failed = [(p, why) for p in problems if (why := fix(p)) is not None]
    for problem, why in failed:
        print(f"  NOT FIXED {problem.module.name}: {why}")
    print(f"bytecode: fixed {len(problems) - len(failed)} of {len(problems)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
