"""Files attached to tasks: which host files a task may name, and copying them for a sandbox.

A task's ``files`` are host paths. The env copies them (:func:`stage_files`) into a directory the
kernel's sandbox sees read-only; the agent sees each under its file name in its working directory
and reads it with ``view_file`` or plain Python. Nothing here parses a file: untrusted content is
parsed only inside the sandbox (``kernel/in_kernel_files.py``).

Checks at load time (:func:`resolve_task_files`), so a bad task fails before any episode:

* each file exists, is a regular file (not under ``/proc``, ``/sys`` or ``/dev``) and is at most :data:`MAX_FILE_BYTES`; a task's files
  together at most :data:`MAX_TASK_FILES_BYTES`, and at most :data:`MAX_FILES_PER_TASK` of them;
* each file name (what the agent sees) is a plain name: no ``/``, not hidden (``.``, ``..``), no
  control characters, at most 255 bytes; names are unique within a task;
* a task read from a file (JSONL, Parquet, GAIA's ``metadata.jsonl``) attaches only files inside
  that file's directory (``root``), after following symlinks: a downloaded dataset cannot make the
  env copy ``~/.ssh/id_rsa`` or ``/etc/shadow`` into a sandbox. Tasks built in code (a list of
  dicts) may name any file their caller can read.

:func:`stage_files` checks again while copying (a file may have changed since it was loaded): it
copies at most the cap and refuses what is not a regular file.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_FILES_PER_TASK",
    "MAX_FILE_BYTES",
    "MAX_TASK_FILES_BYTES",
    "StagedFile",
    "check_file_name",
    "resolve_task_files",
    "stage_files",
]

MAX_FILE_BYTES = 32 << 20
MAX_TASK_FILES_BYTES = 64 << 20
MAX_FILES_PER_TASK = 32
_COPY_CHUNK = 1 << 20
# Kernel pseudo-files look like small regular files but hold live host state (/proc/self/environ
# is the host's environment, API keys included): never attach them, whoever names them.
_PSEUDO_ROOTS = ("/proc", "/sys", "/dev")


@dataclass(frozen=True)
class StagedFile:
    """A file copied for a sandbox: the name the agent sees and its size in bytes."""

    name: str
    size: int


def check_file_name(name: str) -> str:
    """Return ``name`` if it is a plain file name an agent may see, else raise ValueError saying why."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"file name must be a non-empty string, got {name!r}")
    if "/" in name or "\\" in name:
        raise ValueError(f"file name {name!r} holds a path separator; attach a plain file name")
    if name.startswith("."):
        raise ValueError(f"file name {name!r} starts with '.': hidden names ('.', '..') are refused")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        raise ValueError(f"file name {name!r} holds control or format characters")
    if len(name.encode("utf-8", errors="surrogatepass")) > 255:
        raise ValueError(f"file name {name[:40]!r}... is longer than 255 bytes")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"file name {name!r} is not valid UTF-8 text") from None
    return name


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _is_pseudo(real_path: str) -> bool:
    return any(_within(real_path, root) for root in _PSEUDO_ROOTS)


def resolve_task_files(
    files: Any, *, base_dir: str | os.PathLike[str] | None = None, root: str | os.PathLike[str] | None = None
) -> tuple[str, ...]:
    """Check a task's ``files`` and return them as absolute host paths.

    Args:
        files: A path or a list of paths (str or PathLike).
        base_dir: What relative paths are relative to (default: the current directory).
        root: When set, every file must lie inside it after following symlinks (tasks read from a
            file: its directory).

    Raises:
        ValueError: Not a list of paths, a missing or non-regular file, a bad or duplicate file
            name, a file outside ``root``, or over the size and count caps. The message names the
            file.
    """
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    elif hasattr(files, "tolist"):  # numpy arrays from Parquet/pandas
        files = files.tolist()
    if not isinstance(files, (list, tuple)):
        raise ValueError(f"'files' must be a path or a list of paths, got {type(files).__name__}")
    if len(files) > MAX_FILES_PER_TASK:
        raise ValueError(f"'files' lists {len(files)} files; at most {MAX_FILES_PER_TASK} per task")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    real_root = os.path.realpath(root) if root is not None else None
    out: list[str] = []
    names: set[str] = set()
    total = 0
    for item in files:
        if not isinstance(item, (str, os.PathLike)) or not str(item).strip():
            raise ValueError(f"'files' holds {item!r}; expected non-empty paths")
        raw = os.fspath(item)
        if "\x00" in raw:
            raise ValueError(f"file path {raw!r} holds a NUL character")
        path = Path(raw) if os.path.isabs(raw) else base / raw
        path = Path(os.path.abspath(path))
        real = os.path.realpath(path)
        if _is_pseudo(real):
            raise ValueError(
                f"attached file {raw!r} is a kernel pseudo-file ({real}); attach real files only"
            )
        if real_root is not None and not _within(real, real_root):
            raise ValueError(
                f"attached file {raw!r} lies outside the task file's directory {root}: a task file "
                "may attach only files beside it (build the task in code to attach other files)"
            )
        name = check_file_name(path.name)
        if name in names:
            raise ValueError(f"two attached files are named {name!r}; file names must be unique per task")
        names.add(name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ValueError(f"attached file not found: {path}") from None
        except OSError as exc:
            raise ValueError(f"attached file {path} cannot be read: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"attached file {path} is not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise ValueError(
                f"attached file {path} is {st.st_size / 2**20:.1f} MiB; at most {MAX_FILE_BYTES >> 20} MiB"
            )
        total += st.st_size
        out.append(str(path))
    if total > MAX_TASK_FILES_BYTES:
        raise ValueError(
            f"the task's files total {total / 2**20:.1f} MiB; at most {MAX_TASK_FILES_BYTES >> 20} MiB per task"
        )
    return tuple(out)


def stage_files(paths: Sequence[str], dest_dir: str | os.PathLike[str]) -> list[StagedFile]:
    """Copy ``paths`` into ``dest_dir`` (read-only copies named by the files' names).

    Refuses, with a ValueError naming the file, what changed since it was checked: a file that is
    gone, no longer a regular file, or now over the caps. Files already copied stay (the caller
    discards the directory with the kernel).
    """
    staged: list[StagedFile] = []
    total = 0
    for path in paths:
        name = check_file_name(os.path.basename(path))
        real = os.path.realpath(path)
        if _is_pseudo(real):
            raise ValueError(f"attached file {path} now points at a kernel pseudo-file ({real})")
        try:
            src = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block us
        except OSError as exc:
            raise ValueError(f"attached file {path} cannot be opened: {exc.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(src).st_mode):
                raise ValueError(f"attached file {path} is not a regular file")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            dst = os.open(os.path.join(dest_dir, name), flags, 0o444)
            size = 0
            try:
                while chunk := os.read(src, _COPY_CHUNK):
                    size += len(chunk)
                    if size > MAX_FILE_BYTES or total + size > MAX_TASK_FILES_BYTES:
                        raise ValueError(
                            f"attached file {path} grew past the cap ({MAX_FILE_BYTES >> 20} MiB per "
                            f"file, {MAX_TASK_FILES_BYTES >> 20} MiB per task) since the task was loaded"
                        )
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(dst, view) :]
            finally:
                os.close(dst)
        finally:
            os.close(src)
        total += size
        staged.append(StagedFile(name, size))
    return staged
