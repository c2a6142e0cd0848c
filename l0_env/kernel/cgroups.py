"""One memory + pids cgroup per sandbox: a single bound on everything the sandbox holds.

Why rlimits are not enough: ``RLIMIT_AS`` is per process and counts only mapped memory, so 64
processes may each map 2 GiB, and tmpfs files, shared memory and kernel memory (inodes, page
tables, socket buffers) are not counted at all. A memory cgroup charges every page the sandbox's
processes cause, whoever maps it, and stops them at ``memory_bytes`` (the kernel's OOM killer picks
a process *inside* the cgroup). ``pids.max`` bounds processes and threads of the sandbox alone
(``RLIMIT_NPROC`` counts every process of the uid). And a cgroup lists every process of the
sandbox, so the host kills them all at close, also those that left the process group (``setsid``).

Where: cgroup v2 when the host process's cgroup already has ``memory`` and ``pids`` in its
``cgroup.subtree_control`` (the root cgroup, or a delegated one); else the cgroup v1 ``memory``
and ``pids`` hierarchies when they are mounted read-write and writable. The sandbox's cgroup is a
child of the host process's own cgroup, so it nests inside whatever limits the host has. It is
created before the sandbox starts; the launcher's child joins it before it executes bubblewrap
(:meth:`SandboxCgroup.join`), so every process of the sandbox starts inside; it is removed at
close. Cgroups left by a host process that was SIGKILLed are removed by the next one.

Nothing here is required: without a writable cgroup the sandbox runs with its rlimits and tmpfs
sizes only, and :func:`detect` says why (``python -m l0_env.kernel --report``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import re
import signal
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

CONTROLLERS = ("memory", "pids")
NAME_PREFIX = "l0-"
_STALE_NAME = re.compile(r"^l0-(\d+)-")
_counter = itertools.count()


class CgroupError(RuntimeError):
    """A sandbox cgroup could not be created (the message says which file refused what)."""


@dataclass(frozen=True)
class CgroupSupport:
    """Where sandbox cgroups can be created on this host.

    Attributes:
        version: 2 (unified), 1 (the v1 memory and pids hierarchies), or 0 (none usable).
        parents: controller name -> the directory new cgroups are created in (with v2 both
            controllers share one directory).
        reason: why cgroups are not usable (empty when they are).
    """

    version: int
    parents: dict[str, str]
    reason: str = ""

    @property
    def available(self) -> bool:
        return self.version in (1, 2)

    def describe(self) -> str:
        if not self.available:
            return f"inactive: {self.reason}"
        where = ", ".join(f"{c} under {p}" for c, p in self.parents.items())
        return f"cgroup v{self.version}: {where}"


def parse_mountinfo(text: str) -> list[tuple[str, str, str, set[str]]]:
    """``(mount_point, root, fstype, options)`` of each line of ``/proc/self/mountinfo`` (pure).

    ``options`` joins the per-mount and the per-superblock options (``ro``, ``memory``, ...): a
    mount is read-only when either says ``ro``.
    """
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6 or len(tail) < 3:
            continue
        options = set(fields[5].split(",")) | set(tail[2].split(","))
        mount_point = fields[4].replace("\\040", " ")
        mounts.append((mount_point, fields[3], tail[0], options))
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Controller -> cgroup path of ``/proc/self/cgroup`` (pure); v2's line is under ``""``."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            paths[controller] = parts[2]
    return paths


def _join(mount_point: str, mount_root: str, path: str) -> str | None:
    """The directory of cgroup ``path`` under a mount of the hierarchy's ``mount_root``."""
    root = mount_root.rstrip("/")
    if root and path != root and not path.startswith(root + "/"):
        return None  # our cgroup is outside what this mount shows
    return os.path.join(mount_point, path[len(root) :].lstrip("/"))


def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def _detect_v2(mounts: list[tuple[str, str, str, set[str]]], paths: dict[str, str]) -> CgroupSupport:
    v2 = [m for m in mounts if m[2] == "cgroup2"]
    if not v2 or "" not in paths:
        return CgroupSupport(0, {}, "no cgroup v2 mount")
    mount_point, root, _, options = v2[0]
    if "ro" in options:
        return CgroupSupport(0, {}, f"{mount_point} is mounted read-only")
    directory = _join(mount_point, root, paths[""])
    if directory is None:
        return CgroupSupport(0, {}, f"this process's cgroup {paths['']} is not visible under {mount_point}")
    try:
        available = set(_read(os.path.join(directory, "cgroup.controllers")).split())
        enabled = set(_read(os.path.join(directory, "cgroup.subtree_control")).split())
    except OSError as exc:
        return CgroupSupport(0, {}, f"cannot read {directory}: {exc.strerror}")
    missing = [c for c in CONTROLLERS if c not in available]
    if missing:
        return CgroupSupport(0, {}, f"cgroup v2 at {directory} lacks the {'/'.join(missing)} controller")
    if not all(c in enabled for c in CONTROLLERS):
        # v2 forbids controllers in a child of a cgroup that holds processes (ours holds us), and
        # moving the host process elsewhere is not a library's business.
        return CgroupSupport(
            0,
            {},
            f"cgroup v2: memory and pids are not enabled in {directory}/cgroup.subtree_control "
            "(run the host process in a delegated cgroup whose children get them)",
        )
    if not os.access(directory, os.W_OK):
        return CgroupSupport(0, {}, f"cgroup v2 at {directory} is not writable by this process")
    return CgroupSupport(2, {c: directory for c in CONTROLLERS})


def _detect_v1(mounts: list[tuple[str, str, str, set[str]]], paths: dict[str, str]) -> CgroupSupport:
    parents: dict[str, str] = {}
    problems: list[str] = []
    for controller in CONTROLLERS:
        found = [m for m in mounts if m[2] == "cgroup" and controller in m[3]]
        if not found or controller not in paths:
            problems.append(f"no cgroup v1 {controller} hierarchy")
            continue
        mount_point, root, _, options = found[0]
        directory = _join(mount_point, root, paths[controller])
        if "ro" in options:
            problems.append(f"{mount_point} is mounted read-only")
        elif directory is None or not os.path.isdir(directory):
            problems.append(f"this process's {controller} cgroup is not visible under {mount_point}")
        elif not os.access(directory, os.W_OK):
            problems.append(f"{directory} is not writable by this process")
        else:
            parents[controller] = directory
    if problems:
        return CgroupSupport(0, {}, "; ".join(problems))
    return CgroupSupport(1, parents)


@functools.lru_cache(maxsize=1)
def detect() -> CgroupSupport:
    """Which cgroups this process can create sandbox cgroups in (cached for the process)."""
    try:
        mounts = parse_mountinfo(_read("/proc/self/mountinfo"))
        paths = parse_proc_cgroup(_read("/proc/self/cgroup"))
    except OSError as exc:
        return CgroupSupport(0, {}, f"cannot read /proc/self: {exc.strerror}")
    v2 = _detect_v2(mounts, paths)
    if v2.available:
        return v2
    v1 = _detect_v1(mounts, paths)
    if v1.available:
        return v1
    return CgroupSupport(0, {}, f"{v2.reason}; {v1.reason}")


class SandboxCgroup:
    """The cgroup(s) of one sandbox: created with limits, joined by the sandbox, removed at close.

    Args:
        support: where to create it (from :func:`detect`).
        memory_bytes: ``memory.max`` (v2) / ``memory.limit_in_bytes`` (v1): all memory the sandbox's
            processes charge, tmpfs and shared memory included.
        max_pids: ``pids.max``: processes and threads in the sandbox.
        tag: part of the name, for people reading ``/sys/fs/cgroup``.

    Raises:
        CgroupError: a directory or a limit could not be written.
    """

    def __init__(self, support: CgroupSupport, *, memory_bytes: int, max_pids: int, tag: str = "") -> None:
        if not support.available:
            raise CgroupError(f"cgroups are not usable here: {support.reason}")
        self.version = support.version
        name = f"{NAME_PREFIX}{os.getpid()}-{next(_counter)}" + (f"-{tag}" if tag else "")
        self.dirs: dict[str, str] = {}  # controller -> this sandbox's cgroup directory
        self._created: list[str] = []
        try:
            for controller, parent in support.parents.items():
                _remove_stale(parent)
                path = os.path.join(parent, name)
                if path not in self._created:
                    os.mkdir(path, 0o755)
                    self._created.append(path)
                self.dirs[controller] = path
            if self.version == 2:
                self._write("memory", "memory.max", memory_bytes)
                self._write("memory", "memory.swap.max", 0, optional=True)
                self._write("memory", "memory.oom.group", 1, optional=True)  # one OOM kills the sandbox
            else:
                self._write("memory", "memory.limit_in_bytes", memory_bytes)
                self._write("memory", "memory.memsw.limit_in_bytes", memory_bytes, optional=True)
            self._write("pids", "pids.max", max_pids)
        except OSError as exc:
            self.remove()
            raise CgroupError(f"could not set up the sandbox cgroup: {exc}") from None
        # Opened now, written by the child between fork and exec (no allocation-heavy work there).
        self._procs_files = sorted({os.path.join(d, "cgroup.procs") for d in self.dirs.values()})

    def _write(self, controller: str, filename: str, value: int, *, optional: bool = False) -> None:
        path = os.path.join(self.dirs[controller], filename)
        if optional and not os.path.exists(path):
            return
        with open(path, "w", encoding="ascii") as f:
            f.write(str(value))

    def join(self) -> None:
        """Move the calling process into the cgroup (the launcher's ``preexec_fn``: between fork and
        exec, so bubblewrap and everything it starts are inside from their first instruction)."""
        pid = str(os.getpid()).encode()
        for path in self._procs_files:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def pids(self) -> list[int]:
        """The host pids of every process in the sandbox's cgroup."""
        found: set[int] = set()
        for path in self._procs_files:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in _read(path).split())
        return sorted(found)

    def memory_peak(self) -> int | None:
        """The most memory the sandbox held at once since the cgroup was made, in bytes."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        with contextlib.suppress(OSError, ValueError, KeyError):
            return int(_read(os.path.join(self.dirs["memory"], name)))
        return None

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer killed in this cgroup (the limit was hit)."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        with contextlib.suppress(OSError, ValueError, KeyError):
            fields = dict(
                line.split()[:2] for line in _read(os.path.join(self.dirs["memory"], name)).splitlines()
            )
            return int(fields.get("oom_kill", 0))
        return 0

    def kill(self, timeout: float = 10.0) -> bool:
        """SIGKILL every process in the cgroup; True once it is empty (within ``timeout``)."""
        kill_file = os.path.join(self.dirs.get("pids", ""), "cgroup.kill")
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                return True
            if self.version == 2 and os.path.exists(kill_file):
                with contextlib.suppress(OSError), open(kill_file, "w", encoding="ascii") as f:
                    f.write("1")
            else:
                # A process may fork between the read and the kill: go round until none is left
                # (pids.max bounds how many there can be).
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left inside and delete the cgroup. Idempotent; never raises."""
        if self._created and not self.kill():
            log.warning("processes survived SIGKILL in the sandbox cgroup %s", self._created)
        for path in reversed(self._created):
            if _rmdir(path):
                self._created.remove(path)
            else:
                log.warning("could not remove the sandbox cgroup %s", path)


def _rmdir(path: str, timeout: float = 5.0) -> bool:
    """rmdir a cgroup; EBUSY while the kernel finishes tearing down its last processes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def _remove_stale(parent: str) -> None:
    """Delete empty cgroups that a dead host process of ours left behind (it was SIGKILLed)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            match = _STALE_NAME.match(entry.name)
            if not match or not entry.is_dir(follow_symlinks=False):
                continue
            pid = int(match.group(1))
            if pid == os.getpid() or _pid_alive(pid):
                continue
            with contextlib.suppress(OSError):
                if not _read(os.path.join(entry.path, "cgroup.procs")).split():
                    os.rmdir(entry.path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
