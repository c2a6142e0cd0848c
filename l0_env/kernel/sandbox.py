"""How a kernel process is confined: the bubblewrap command line and the resource limits.

Pure construction of argv plus two small OS helpers (uid leases, rlimits); launching lives in
``session.py``.

What the sandbox does:

* bubblewrap with every namespace unshared (no network at all, own PID/IPC/UTS/cgroup
  namespaces), ``--die-with-parent``, ``--new-session`` (no TIOCSTI into the host terminal);
* a read-only view of the system (``/usr``, the Python installation and its site-packages)
  and nothing else of the host: not ``/root``, ``/home``, the project or the host's
  ``/tmp``;
* a private writable home (``/home/agent``, the cwd) and ``/tmp``, both size-limited tmpfs that
  vanish with the kernel;
* a cleared environment: host variables (API keys included) never reach the kernel;
* rlimits: address space (memory), processes, file size, open files, no core dumps.

Why the root case differs: a user namespace created by root maps the sandbox to host uid 0, and
the kernel exempts uid 0 from ``RLIMIT_NPROC`` -- a fork bomb would not be stopped. So when the
host runs as root we unshare every namespace *except* the user namespace (root needs none to
mount) and drop to a dedicated unprivileged uid with ``setpriv`` before Python starts. Each kernel
leases its own uid (so per-uid process limits are per kernel) through lock files that work across
processes. A non-root host uses ``--unshare-all`` and its own uid.

What it does NOT protect against: kernel (Linux) exploits, CPU starvation of the host by busy
loops (bounded only by the per-cell wall time), side channels, and abuse of the tools the host
deliberately offers through the bridge.
"""

from __future__ import annotations

import fcntl
import os
import resource
import shutil
import site
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HOME_IN_SANDBOX = "/home/agent"
UID_RANGE = range(2_100_000, 2_100_000 + 4096)  # far above any real account's uid


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot run here (missing binary, or namespaces not permitted)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-kernel resource limits.

    Attributes:
        memory_bytes: address-space limit of every process in the sandbox (RLIMIT_AS).
        max_processes: processes and threads the kernel's uid may have (RLIMIT_NPROC).
        max_file_bytes: largest file the kernel may write (RLIMIT_FSIZE).
        max_open_files: open file descriptors per process (RLIMIT_NOFILE).
        disk_bytes: size of each private tmpfs (home and /tmp).
    """

    memory_bytes: int = 2 << 30
    max_processes: int = 64
    max_file_bytes: int = 64 << 20
    max_open_files: int = 256
    disk_bytes: int = 128 << 20

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "max_processes", "max_file_bytes", "max_open_files", "disk_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"SandboxLimits.{name} must be a positive int, got {value!r}")

    def apply(self) -> None:
        """Set the rlimits on the calling process (used as ``preexec_fn`` before bwrap)."""
        resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (self.max_processes, self.max_processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.max_file_bytes, self.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.max_open_files, self.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class UidLease:
    """An exclusive claim on one sandbox uid, valid across processes (flock on a file)."""

    def __init__(self, lock_dir: str | os.PathLike | None = None) -> None:
        # Uids are machine-wide, so the locks are too: not under L0_RUNTIME_DIR, where two processes
        # with different runtime dirs would lease the same uid and share its RLIMIT_NPROC (one
        # kernel's fork bomb would stop the other's kernels from starting).
        lock_dir = Path(lock_dir or os.environ.get("L0_UID_LOCK_DIR") or "/tmp/l0_env-uids")
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.uid = -1
        self._fd: int | None = None
        start = os.getpid() % len(UID_RANGE)  # spread processes over the range: fewer collisions
        for i in range(len(UID_RANGE)):
            uid = UID_RANGE[(start + i) % len(UID_RANGE)]
            fd = os.open(lock_dir / str(uid), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            return
        raise SandboxUnavailable(f"all {len(UID_RANGE)} sandbox uids are in use")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


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
    """
    argv = [bwrap]
    if uid is not None:
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        # bwrap drops every capability for the child; setpriv needs these two to change uid.
        argv += ["--cap-add", "CAP_SETUID,CAP_SETGID"]
    else:
        argv += ["--unshare-all"]
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
    argv += ["--chdir", HOME_IN_SANDBOX, "--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
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


def check_bwrap(bwrap: str = "bwrap") -> str | None:
    """None if bubblewrap can start a sandbox like ours here, else the reason it cannot."""
    import subprocess

    path = shutil.which(bwrap)
    if path is None:
        return f"{bwrap!r} not found on PATH (install it: apt-get install -y bubblewrap)"
    probe = build_bwrap_argv(
        ["/bin/true"],
        runtime_dir="/tmp",
        limits=SandboxLimits(),
        uid=UID_RANGE[-1] if host_is_root() else None,
        env={"PATH": "/usr/bin:/bin"},
        bwrap=path,
    )
    try:
        proc = subprocess.run(probe, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap failed to start: {exc}"
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip()
        return f"bubblewrap cannot create the sandbox here: {detail or 'exit ' + str(proc.returncode)}"
    return None
