"""How a kernel process is confined: the bubblewrap command line, the limits, and what is active.

Construction of argv plus small OS helpers (uid leases, rlimits); launching lives in
``session.py``, the seccomp policy in ``seccomp.py``, the per-sandbox cgroup in ``cgroups.py``.

What the sandbox does:

* bubblewrap with every namespace unshared (no network at all, own PID/IPC/UTS/cgroup
  namespaces), ``--die-with-parent``, ``--new-session`` (no TIOCSTI into the host terminal);
* a read-only view of the system (``/usr``, the Python installation and its site-packages)
  and nothing else of the host: not ``/root``, ``/home``, the project or the host's
  ``/tmp``;
* a private writable home (``/home/agent``, the cwd) and ``/tmp``, both size-limited tmpfs that
  vanish with the kernel;
* the episode's task files, read-only at ``/task_files`` (a host directory the env fills at reset);
* a cleared environment: host variables (API keys included) never reach the kernel;
* a seccomp filter (``seccomp.py``): no nested namespaces, mounts, keyring, ``memfd``/SysV shared
  memory, ptrace, bpf, io_uring...; refused calls fail with ``EPERM``/``ENOSYS``;
* rlimits: address space (memory), processes, file size, open files, no core dumps;
* where the host lets us write cgroups, one memory + pids cgroup per sandbox (``cgroups.py``) that
  bounds everything the sandbox holds together (tmpfs and shared memory included).

Why the root case differs: a user namespace created by root maps the sandbox to host uid 0, and
the kernel exempts uid 0 from ``RLIMIT_NPROC`` -- a fork bomb would not be stopped. So when the
host runs as root we unshare every namespace *except* the user namespace (root needs none to
mount) and drop to a dedicated unprivileged uid with ``setpriv`` before Python starts. Each kernel
leases its own uid (so per-uid process limits are per kernel) through lock files that work across
processes. A non-root host uses ``--unshare-all`` and its own uid, and bubblewrap's
``--disable-userns`` on top of the filter.

What it does NOT protect against: see the README ("What the sandbox does not protect against");
``python -m l0_env.kernel --report`` (``report.py``) prints which of them are active here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import shutil
import site
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cgroups, seccomp
from .cgroups import SandboxCgroup

HOME_IN_SANDBOX = "/home/agent"
TASK_FILES_IN_SANDBOX = "/task_files"
UID_RANGE = range(2_100_000, 2_100_000 + 4096)  # far above any real account's uid
BWRAP_PROCESSES = 2  # bubblewrap's monitor outside and its pid 1 inside the sandbox


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot run here (missing binary, or namespaces not permitted)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-kernel resource limits.

    Attributes:
        memory_bytes: address-space limit of every process in the sandbox (RLIMIT_AS).
        max_processes: processes and threads the kernel's uid may have (RLIMIT_NPROC; also the
            sandbox cgroup's ``pids.max``, plus bubblewrap's own two processes).
        max_file_bytes: largest file the kernel may write (RLIMIT_FSIZE).
        max_open_files: open file descriptors per process (RLIMIT_NOFILE).
        disk_bytes: size of each private tmpfs (home and /tmp).
        total_memory_bytes: the sandbox cgroup's memory limit: everything the sandbox holds at once
            (all its processes, tmpfs files, shared and kernel memory). None: ``memory_bytes +
            2 * disk_bytes`` (one process at its limit and both disks full).
        cgroup: put each sandbox in its own memory + pids cgroup where this host lets us create
            one (``cgroups.detect``); False never touches cgroups.
    """

    memory_bytes: int = 2 << 30
    max_processes: int = 64
    max_file_bytes: int = 64 << 20
    max_open_files: int = 256
    disk_bytes: int = 128 << 20
    total_memory_bytes: int | None = None
    cgroup: bool = True

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "max_processes", "max_file_bytes", "max_open_files", "disk_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"SandboxLimits.{name} must be a positive int, got {value!r}")
        total = self.total_memory_bytes
        if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 16 << 20):
            raise ValueError(
                f"SandboxLimits.total_memory_bytes must be None or an int >= 16 MiB, got {total!r}"
            )
        if not isinstance(self.cgroup, bool):
            raise ValueError(f"SandboxLimits.cgroup must be a bool, got {self.cgroup!r}")

    @property
    def sandbox_memory_bytes(self) -> int:
        """The cgroup memory limit in force (``total_memory_bytes`` or its default)."""
        if self.total_memory_bytes is not None:
            return self.total_memory_bytes
        return self.memory_bytes + 2 * self.disk_bytes

    @property
    def sandbox_pids(self) -> int:
        """The cgroup's ``pids.max``: the kernel's processes plus bubblewrap's two."""
        return self.max_processes + BWRAP_PROCESSES

    def apply(self) -> None:
        """Set the rlimits on the calling process (used as ``preexec_fn`` before bwrap)."""
        resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (self.max_processes, self.max_processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.max_file_bytes, self.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.max_open_files, self.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class UidLease:
    """An exclusive claim on one sandbox uid, valid across processes (flock on a file).

    The lock directory is trusted only when it is a real directory (not a symlink) owned by us with
    no access for anyone else: on a shared host another user could otherwise create it first and
    plant symlinks (root would create its lock files where they point) or hold every uid. Lock files
    are opened relative to the checked directory with ``O_NOFOLLOW``.

    Raises:
        SandboxUnavailable: the directory is unsafe (the message says what to do), or every uid
            is leased.
    """

    def __init__(self, lock_dir: str | os.PathLike | None = None) -> None:
        # Uids are machine-wide, so the locks are too: not under L0_RUNTIME_DIR, where two processes
        # with different runtime dirs would lease the same uid and share its RLIMIT_NPROC (one
        # kernel's fork bomb would stop the other's kernels from starting).
        lock_dir = Path(lock_dir or os.environ.get("L0_UID_LOCK_DIR") or "/tmp/l0_env-uids")
        self.uid = -1
        self._fd: int | None = None
        dir_fd = _open_private_dir(lock_dir)
        try:
            start = os.getpid() % len(UID_RANGE)  # spread processes over the range: fewer collisions
            for i in range(len(UID_RANGE)):
                uid = UID_RANGE[(start + i) % len(UID_RANGE)]
                fd = _open_lock_file(dir_fd, lock_dir, str(uid))
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                self.uid, self._fd = uid, fd
                return
        finally:
            os.close(dir_fd)
        raise SandboxUnavailable(f"all {len(UID_RANGE)} sandbox uids are in use")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _unsafe(path: Path, why: str) -> SandboxUnavailable:
    return SandboxUnavailable(
        f"refusing the uid lock directory {path}: {why}. Another user may have planted it: remove it "
        "(it holds only lock files) or set L0_UID_LOCK_DIR to a directory of your own"
    )


def _open_private_dir(path: Path) -> int:
    """Create ``path`` (mode 0700) or open the existing one; refuse anything we do not own alone."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:  # ELOOP: a symlink; ENOTDIR: a file
        raise _unsafe(
            path,
            "it is a symlink or not a directory"
            if exc.errno in (errno.ELOOP, errno.ENOTDIR)
            else exc.strerror or str(exc),
        ) from None
    st = os.fstat(fd)
    problem = None
    if st.st_uid != os.geteuid():
        problem = f"it is owned by uid {st.st_uid}, not by this process's uid {os.geteuid()}"
    elif st.st_mode & 0o077:
        problem = f"its mode is {stat.S_IMODE(st.st_mode):04o}; it must be 0700"
    if problem:
        os.close(fd)
        raise _unsafe(path, problem)
    return fd


def _open_lock_file(dir_fd: int, lock_dir: Path, name: str) -> int:
    flags = os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        raise _unsafe(lock_dir, f"lock file {name}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise _unsafe(lock_dir, f"lock file {name} is not a regular file of ours")
    return fd


def _python_roots() -> list[str]:
    """Directories the kernel's Python needs to see, read-only: installation, venv, site-packages.

    Not the rest of ``sys.path``: it holds the host script's directory (pytest puts the project
    root there), which would expose the project and anything next to it (``.env`` files).
    """
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    candidates += [sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    candidates += site.getsitepackages()
    roots: list[str] = []
    for path in sorted({os.path.realpath(p) for p in candidates} | set(candidates), key=len):
        if not os.path.exists(path) or path.startswith("/usr/"):
            continue
        if path.endswith(".zip") or os.path.isfile(path):
            path = os.path.dirname(path)
        if any(path == r or path.startswith(r + "/") for r in roots):
            continue
        roots.append(path)
    return roots


def _parent_dirs(paths: Sequence[str]) -> list[str]:
    """Create the mount points' parents world-traversable: bwrap copies the host's modes, and a
    0700 ``/root`` would hide a Python installed under it from the unprivileged kernel uid."""
    parents: list[str] = []
    for path in paths:
        parts = Path(path).parts[1:-1]
        for i in range(1, len(parts) + 1):
            parent = "/" + "/".join(parts[:i])
            if parent not in parents:
                parents.append(parent)
    args: list[str] = []
    for parent in parents:
        args += ["--perms", "0755", "--dir", parent]
    return args


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr", "--perms", "0755", "--dir", "/etc"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = f"/{name}"
        if os.path.islink(host):
            args += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            args += ["--ro-bind", host, host]
    # Only what dynamic linking, locale and time need from /etc; not passwd, shadow, hosts, ssl keys.
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "nsswitch.conf"):
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def host_is_root() -> bool:
    return os.geteuid() == 0


def build_bwrap_argv(
    command: Sequence[str],
    *,
    runtime_dir: str,
    limits: SandboxLimits,
    uid: int | None,
    env: dict[str, str],
    bwrap: str = "bwrap",
    seccomp_fd: int | None = None,
    files_dir: str | None = None,
) -> list[str]:
    """The full argv that runs ``command`` inside the sandbox.

    Args:
        command: the program to run inside (e.g. ``[python, "-m", "ipykernel_launcher", ...]``).
        runtime_dir: host directory shared read-write with the kernel at the same path (the
            connection file, the kernel's ipc sockets and the tool-bridge socket live there).
        limits: the sandbox limits (tmpfs sizes are applied here, rlimits by the launcher).
        uid: when the host is root, the unprivileged uid to run as (from a ``UidLease``).
        env: the complete environment inside the sandbox (the host's is cleared).
        bwrap: the bubblewrap binary.
        seccomp_fd: a file descriptor holding the seccomp program (``seccomp.program_fd``), which
            the child must inherit; None runs without the filter.
        files_dir: a host directory shown read-only at ``TASK_FILES_IN_SANDBOX`` (the task's
            files; the host may add files to it while the kernel runs).
    """
    argv = [bwrap]
    if uid is not None:
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        # bwrap drops every capability for the child; setpriv needs these two to change uid.
        argv += ["--cap-add", "CAP_SETUID,CAP_SETGID"]
    else:
        # --disable-userns (on top of the filter): the sandbox's own user namespace may hold no more.
        argv += ["--unshare-all", "--unshare-user", "--disable-userns"]
    argv += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    argv += _system_binds()
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "1777", "--size", str(limits.disk_bytes), "--tmpfs", "/tmp"]
    # Every bind comes after the fresh /tmp: a venv or runtime dir under /tmp (a clone in /tmp, or
    # L0_RUNTIME_DIR) would otherwise be masked by it, and its parents recreated 0700 (unreachable).
    roots = _python_roots()
    argv += _parent_dirs([*roots, HOME_IN_SANDBOX, runtime_dir])
    for root in roots:
        argv += ["--ro-bind", root, root]
    argv += ["--perms", "0777", "--size", str(limits.disk_bytes), "--tmpfs", HOME_IN_SANDBOX]
    argv += ["--bind", runtime_dir, runtime_dir]
    if files_dir is not None:
        argv += ["--ro-bind", files_dir, TASK_FILES_IN_SANDBOX]
    argv += ["--chdir", HOME_IN_SANDBOX, "--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]  # loaded last, just before the command runs
    argv += ["--"]
    if uid is not None:
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        argv += [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    return argv + list(command)


def kernel_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment inside the sandbox: minimal, deterministic, no host secrets."""
    env = {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
        "HOME": HOME_IN_SANDBOX,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        # ipykernel polls JPY_PARENT_PID and exits when its parent "died"; in a PID namespace the
        # host pid is meaningless, so 1 disables the poller (--die-with-parent covers host death).
        "JPY_PARENT_PID": "1",
        "MPLBACKEND": "Agg",
        "MALLOC_ARENA_MAX": "2",  # glibc reserves 64 MiB of address space per arena otherwise
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TERM": "dumb",
    }
    if extra:
        env.update(extra)
    return env


def sandbox_cgroup(limits: SandboxLimits, *, tag: str) -> SandboxCgroup | None:
    """The memory + pids cgroup of one sandbox under ``limits``; None where ``limits.cgroup`` is
    off or the host has no writable cgroups (pass it to :func:`launch_spec`; ``remove()`` it after).

    Raises:
        SandboxUnavailable: The host has cgroups but this one cannot be made.
    """
    if not limits.cgroup:
        return None
    support = cgroups.detect()
    if not support.available:
        return None
    try:
        return SandboxCgroup(
            support, memory_bytes=limits.sandbox_memory_bytes, max_pids=limits.sandbox_pids, tag=tag
        )
    except cgroups.CgroupError as exc:
        raise SandboxUnavailable(f"{exc}; pass SandboxLimits(cgroup=False) to run without it") from None


@contextlib.contextmanager
def launch_spec(
    command: Sequence[str],
    *,
    runtime_dir: str,
    limits: SandboxLimits,
    uid: int | None,
    env: dict[str, str],
    cgroup: SandboxCgroup | None = None,
    use_seccomp: bool = True,
    bwrap: str = "bwrap",
    files_dir: str | None = None,
) -> Iterator[tuple[list[str], dict[str, Any]]]:
    """``(argv, popen_kwargs)`` that start ``command`` in the sandbox; valid inside the ``with``.

    ``popen_kwargs`` carries what must happen in the child: the seccomp program's descriptor to
    inherit, and a ``preexec_fn`` that joins ``cgroup`` (before bubblewrap runs, so nothing of the
    sandbox ever runs outside it) and sets the rlimits.

    Raises:
        seccomp.SeccompUnavailable: ``use_seccomp`` and no filter can be built here.
    """
    fd = seccomp.program_fd() if use_seccomp else None
    try:
        argv = build_bwrap_argv(
            command,
            runtime_dir=runtime_dir,
            limits=limits,
            uid=uid,
            env=env,
            bwrap=bwrap,
            seccomp_fd=fd,
            files_dir=files_dir,
        )

        def preexec() -> None:
            if cgroup is not None:
                cgroup.join()
            limits.apply()

        yield argv, {"pass_fds": () if fd is None else (fd,), "preexec_fn": preexec}
    finally:
        if fd is not None:
            os.close(fd)


def probe(
    code: str, *, use_seccomp: bool, cgroup: SandboxCgroup | None = None, bwrap: str = "bwrap"
) -> subprocess.CompletedProcess:
    """Run ``python -I -c code`` in a sandbox like a kernel's (its runtime dir: the host's temp dir),
    for checks of what the sandbox allows; returns the finished process."""
    with launch_spec(
        [os.path.normpath(sys.executable), "-I", "-c", code],
        runtime_dir=tempfile.gettempdir(),
        limits=SandboxLimits(),
        uid=UID_RANGE[-1] if host_is_root() else None,
        env=kernel_environment(),
        cgroup=cgroup,
        use_seccomp=use_seccomp,
        bwrap=bwrap,
    ) as (argv, kwargs):
        return subprocess.run(argv, capture_output=True, timeout=60, check=False, **kwargs)


def check_bwrap(bwrap: str = "bwrap", *, use_seccomp: bool = False) -> str | None:
    """None if bubblewrap can start a sandbox like ours here (with the seccomp filter when
    ``use_seccomp``), else the reason it cannot."""
    path = shutil.which(bwrap)
    if path is None:
        return f"{bwrap!r} not found on PATH (install it: apt-get install -y bubblewrap)"
    try:
        proc = probe("pass", use_seccomp=use_seccomp, bwrap=path)
    except seccomp.SeccompUnavailable as exc:
        return str(exc)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap failed to start: {exc}"
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip()
        what = "the seccomp filter" if use_seccomp else "the sandbox"
        return f"bubblewrap cannot create {what} here: {detail or 'exit ' + str(proc.returncode)}"
    return None
