"""Kernels forked from a warm interpreter (a "zygote") into a sandbox that bubblewrap built.

Why: ~90% of a kernel start's CPU is Python imports (ipykernel, jupyter_client, IPython, zmq,
tornado). A zygote imports them once; each kernel is a fork of it, so an episode still gets a
fresh process in a fresh sandbox, but skips the imports. ``KernelConfig(kernel_start="zygote")``
(``gym.make(..., kernel_start="zygote")``) turns it on; the default is ``"spawn"``.

How one kernel starts (``start_kernel``), root host:

1. bubblewrap builds the episode's sandbox with exactly the argv of a spawned kernel
   (``sandbox.launch_spec``: namespaces, read-only binds, tmpfs home and /tmp, /task_files, the
   runtime dir, seccomp, rlimits, the cgroup, ``setpriv`` to the leased uid), but runs a *holder*
   in it instead of the kernel: ``sh`` waiting on a FIFO in the runtime dir;
2. once the holder has opened the FIFO, the host opens the holder's namespace files
   (``/proc/<holder>/ns/*``; it checks that pid, mount, network, IPC and UTS namespaces are not
   the host's), the sandbox cgroup's ``cgroup.procs`` files, a log pipe and a status pipe, and
   sends them to the zygote over its private socket;
3. the zygote forks a *waiter*, which joins the sandbox's PID namespace and forks a *reaper*
   (PID namespaces apply to children), which forks the kernel. The reaper is the kernel's parent
   inside the sandbox (``os.getppid()`` is its pid there, as bubblewrap's pid 1 is a spawned
   kernel's): it joins the sandbox's other namespaces, closes every descriptor and confines
   itself like the kernel but stays uid 0 (every capability set empty, not dumpable,
   ``no_new_privs``, the seccomp program, all verified), so the kernel cannot signal, trace or
   inspect it; then it only waits for the kernel and exits with its status. The waiter stays
   outside the sandbox, reaps the reaper and writes that status into the FIFO, so the holder, and
   with it bubblewrap, exits with the kernel's status exactly when the kernel dies (as a spawned
   kernel's bubblewrap does);
4. the kernel (``zygote_child._become_kernel``), before anything of the agent runs: new session,
   joins the cgroup and the IPC, UTS, network, cgroup and mount namespaces; chdir to the home;
   stdin ``/dev/null``, stdout and stderr the log pipe; closes every other descriptor; the same
   rlimits; drops the whole capability bounding set and ambient set, no supplementary groups,
   ``setresgid``/``setresuid`` to the leased uid, every capability set emptied (``capset``);
   ``no_new_privs``; the same seccomp program as ``bwrap --seccomp`` loads; then reads back
   ``/proc/self/status`` and refuses to go on unless CapInh/Prm/Eff/Bnd/Amb are 0, NoNewPrivs 1,
   Seccomp 2 and the uid/gid are the leased one; the environment becomes ``kernel_environment()``;
   ``random`` is reseeded; it waits for the reaper's word that it is confined (a failed reaper
   makes the kernel refuse to start); then ipykernel starts with the launcher's argv semantics
   (``kernel_main.main``: ``-f <conn> --quiet --HistoryManager.enabled=False``, no debugpy).

The zygote is reachable only through a ``socketpair`` made by the host and inherited by the zygote
alone (no path, no abstract name; its children close it first thing). It runs outside every
sandbox namespace as root; a kernel is an unprivileged uid in another PID namespace under the
seccomp filter (no ``ptrace``, no ``setns``), so it can neither see, signal, trace nor connect to
it (``tests/test_zygote.py`` tries). The zygote starts with ``kernel_environment()`` as its whole
environment and never reads a connection file, so its memory, which every kernel inherits, holds
no host secret and no other kernel's key.

Differences from a spawned kernel (the trade-offs):

* shared address layout and hash seed: kernels forked from one zygote share its ASLR layout (a
  leak of one kernel's addresses tells about its siblings') and its ``str`` hash secret
  (``PYTHONHASHSEED`` is fixed when an interpreter starts and cannot change after). ``random``
  is reseeded in each kernel; ``secrets``/``os.urandom`` are unaffected. The zygote is replaced
  every ``recycle_after`` kernels (``$L0_ZYGOTE_RECYCLE``, default 64) and after any error, which
  bounds how many kernels share a layout;
* the holder ``sh`` is one more process of the kernel's uid inside the sandbox: under the same
  ``RLIMIT_NPROC``/``pids.max`` the kernel can make one process fewer; the agent can kill it,
  which ends its own sandbox (as ``os._exit`` does);
* bubblewrap's kernel keeps an inheritable and bounding capability set (empty effective and
  permitted sets, ``no_new_privs``); a forked kernel has all five empty;
* the session id is the kernel's own (``setsid``) instead of bubblewrap's pid 1's;
* the kernel's parent is the reaper, a pid of its namespace other than 1 (pid 1 is bubblewrap's,
  2 the holder's, 3 the reaper's): ``os.kill(os.getppid(), 9)`` and ``os.kill(1, 9)`` fail with
  ``EPERM`` as for a spawned kernel, whose parent is pid 1. The reaper is one more process in the
  sandbox's PID namespace, of uid 0, in no sandbox cgroup: it costs the kernel's uid no process
  (root is exempt from ``RLIMIT_NPROC``, and it is not the kernel's uid) and the sandbox's
  ``pids.max`` no pid; it is visible in the kernel's ``/proc`` (its status and its command line
  ``l0-kernel-reaper``; not its memory, descriptors or environment);
* the zygote is detached from the host's process tree (it is no child of the host process; the
  host holds a pidfd and the socket), so code that lists the host's children sees sandboxes only.

Where it cannot run it refuses and ``SandboxedKernel`` spawns instead, warning once
(``fallbacks`` counts it): a non-root host (the sandbox is in a user namespace of its own; joining
it needs the zygote to ``setns`` into that user namespace first and map the host uid, not
implemented), no sandbox, or any failure in a start (the zygote is then replaced).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import select
import signal
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from . import launcher, seccomp
from .cgroups import SandboxCgroup
from .kernel_main import PROCESS_MARKER
from .sandbox import HOME_IN_SANDBOX, SandboxLimits, host_is_root, kernel_environment, launch_spec

log = logging.getLogger(__name__)

RECYCLE_ENV = "L0_ZYGOTE_RECYCLE"
DEFAULT_RECYCLE_AFTER = 64
HOLDER_FIFO = "holder.fifo"
HOLDER_SCRIPT = 'read -r code < "$0"; exit "${code:-1}"'
# What a kernel imports on its way to "ready" (its dependencies come along).
PRELOAD = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.iostream",
    "ipykernel.heartbeat",
    "ipykernel.control",
    "ipykernel.comm",
    "ipykernel.displayhook",
    "ipykernel.eventloops",
    "ipykernel.parentpoller",
    "ipykernel.debugger",
    "IPython.core.interactiveshell",
    "IPython.core.completer",
    "IPython.core.magics",
    "IPython.core.history",
    "IPython.display",
    "jupyter_client.session",
    "jupyter_client.connect",
    "zmq",
    "zmq.eventloop.zmqstream",
    "tornado.ioloop",
    "tornado.queues",
    "asyncio",
    "comm",
    "json",
    "socket",
    "sqlite3",
    "inspect",
    "traceback",
    "uuid",
)
NAMESPACES = ("ipc", "uts", "net", "cgroup", "pid", "mnt")
MUST_DIFFER = ("ipc", "uts", "net", "pid", "mnt")  # cgroup: bubblewrap's --unshare-cgroup-try
_ZYGOTE_SOURCE = (Path(__file__).parent / "zygote_child.py").read_text(encoding="utf-8")
# The launcher's source, which the zygote runs as a module (each kernel then calls its main()).
_KERNEL_MAIN_SOURCE = (Path(__file__).parent / "kernel_main.py").read_text(encoding="utf-8")


class ZygoteError(RuntimeError):
    """A kernel could not be started from the zygote (the caller spawns one instead)."""


def unsupported_reason(sandboxed: bool) -> str | None:
    """Why zygote starts cannot be used here, or None."""
    if not sandboxed:
        return "kernel_start='zygote' needs the bubblewrap sandbox (sandbox is off)"
    if not host_is_root():
        return (
            "kernel_start='zygote' is implemented for root hosts only: a non-root host's sandbox has "
            "its own user namespace, which the forked kernel would have to join first"
        )
    return None


def recycle_after() -> int:
    """Kernels per zygote before it is replaced (``$L0_ZYGOTE_RECYCLE``, default 64).

    Raises:
        ValueError: the variable is not a positive int.
    """
    raw = os.environ.get(RECYCLE_ENV)
    if raw is None:
        return DEFAULT_RECYCLE_AFTER
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"${RECYCLE_ENV} must be a positive int, got {raw!r}")
    return value


class Zygote:
    """One warm interpreter on the host, forking kernels on request. Thread-safe.

    Args:
        python: the interpreter (the kernel's).
        timeout: seconds to wait for it to start and for each answer.

    Raises:
        ZygoteError: it did not start (its stderr tail is in the message).
    """

    def __init__(self, python: str, *, timeout: float = 60.0) -> None:
        self.python = python
        self.timeout = timeout
        self.forks = 0
        self._lock = threading.Lock()
        self._close_lock = threading.Lock()  # two closers must not both close the pidfd
        self._closed = False
        host, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = host
        self._stderr_tail = bytearray()
        try:
            self._proc = launcher.spawn(
                [python, "-c", _ZYGOTE_SOURCE, "l0-zygote", str(child.fileno())],
                pass_fds=(child.fileno(),),
                env=kernel_environment(),
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        finally:
            child.close()
        threading.Thread(target=self._read_stderr, name="l0-zygote-log", daemon=True).start()
        self._pidfd: int | None = None
        try:
            self._proc.wait(timeout=timeout)  # it forks and leaves the zygote detached
            reply = self._request(
                {"op": "hello", "kernel_main": _KERNEL_MAIN_SOURCE, "preload": list(PRELOAD)}
            )
            self.pid: int = reply["pid"]
            self._pidfd = os.pidfd_open(self.pid)
        except BaseException:
            self.close()
            raise
        self.modules: int = reply["modules"]

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        with contextlib.suppress(OSError, ValueError), self._proc.stderr as pipe:
            while chunk := pipe.read1(65536):  # type: ignore[attr-defined]  # a BufferedReader (bufsize -1)
                self._stderr_tail += chunk
                del self._stderr_tail[:-4096]

    def stderr_tail(self) -> str:
        return bytes(self._stderr_tail).decode(errors="replace").strip()

    def is_alive(self) -> bool:
        return not self._closed and self._pidfd is not None and not _readable(self._pidfd)

    def _request(self, message: dict[str, Any], fds: Sequence[int] = ()) -> dict[str, Any]:
        with self._lock:
            if self._closed:
                raise ZygoteError("the zygote is closed")
            try:
                data = json.dumps(message).encode()
                ancillary = (
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(memoryview(_int_array(fds))))]
                    if fds
                    else []
                )
                self._sock.sendmsg([data], ancillary)
                answered = _wait_readable(self._sock.fileno(), self.timeout)
                reply = self._sock.recv(1 << 20) if answered else b""
            except OSError as exc:
                raise ZygoteError(f"zygote unreachable: {exc}; {self._why()}") from None
            if not reply:
                # Two different failures: a slow zygote (a loaded host) or a dead one (its stderr
                # says why; the reader thread may need a moment to catch up with it).
                if not answered:
                    raise ZygoteError(
                        f"the zygote did not answer {message.get('op')!r} in {self.timeout:g} s: {self._why()}"
                    )
                time.sleep(0.2)
                raise ZygoteError(f"the zygote closed its socket during {message.get('op')!r}: {self._why()}")
        answer = json.loads(reply)
        if not answer.get("ok"):
            raise ZygoteError(f"the zygote refused: {answer.get('error')}")
        return answer

    def _why(self) -> str:
        if self._pidfd is None:
            state = "starting" if self._proc.poll() is None else f"exited with {self._proc.returncode}"
        else:
            state = "exited" if _readable(self._pidfd) else "running"
        return f"zygote {state}; stderr: {self.stderr_tail() or '(none)'}"

    def fork(self, request: dict[str, Any], fds: dict[str, int]) -> int:
        """Send one fork request with its descriptors; the waiter's pid."""
        message = {**request, "op": "fork", "fds": list(fds)}
        reply = self._request(message, list(fds.values()))
        self.forks += 1
        return int(reply["pid"])

    def close(self) -> None:
        """Stop the zygote (kernels it forked live on). Idempotent; safe while another thread is
        in a request (that request fails with ZygoteError)."""
        with self._close_lock:
            self._close()

    def _close(self) -> None:
        self._closed = True
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                self._proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                _wait_readable(pidfd, 10)
            os.close(pidfd)
        # Only now, under the lock: a request in flight has seen the zygote's end close and
        # returned. Closing the socket under it would free its descriptor number for reuse by
        # another thread's open, and a fork request (with its descriptors) could go there.
        with self._lock, contextlib.suppress(OSError):
            self._sock.close()


def _wait_readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` is readable (or at its end) within ``timeout`` seconds. poll, not select:
    a host with many kernels has descriptors past select's FD_SETSIZE (1024)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def _readable(fd: int) -> bool:
    return _wait_readable(fd, 0)


def _int_array(values: Sequence[int]) -> Any:
    import array

    return array.array("i", values)


# -- one zygote per interpreter, shared by every kernel of this process -------------------------------

_shared_lock = threading.Lock()
_shared: dict[str, Zygote] = {}
_stats_lock = threading.Lock()
fallbacks = 0  # zygote starts that fell back to a spawned kernel in this process
replacements = 0  # zygotes replaced (recycled, crashed, or after an error)
_warned = False
_waiters: set[tuple[int, float]] = set()  # (pid, start time) of the waiters of forked kernels


def shared_zygote(python: str, timeout: float) -> Zygote:
    """The live zygote for ``python``: started on first use, replaced when it died or forked
    ``recycle_after()`` kernels."""
    global replacements
    limit = recycle_after()
    with _shared_lock:
        zygote = _shared.get(python)
        if zygote is not None and (not zygote.is_alive() or zygote.forks >= limit):
            zygote.close()
            del _shared[python]
            zygote = None
            replacements += 1
        if zygote is None:
            zygote = Zygote(python, timeout=timeout)
            _shared[python] = zygote
        return zygote


def forked_pids() -> set[int]:
    """Every live process of every kernel forked for this process: the zygote's waiters, their
    reapers and kernels, and whatever the kernels started (the zygotes themselves excepted).

    The zygote is detached from the host's process tree (and a recycled zygote's kernels live on
    without it), so a check for processes an env left behind must add these to the host's
    descendants (``l0_env.checker.spawned_pids`` does).
    """
    import psutil

    with _stats_lock:
        waiters = list(_waiters)
    out: set[int] = set()
    running = []
    for pid, created in waiters:
        try:
            waiter = psutil.Process(pid)
            if waiter.create_time() != created or waiter.status() == psutil.STATUS_ZOMBIE:
                continue  # gone (its pid may belong to another process now)
            out.add(pid)
            out.update(c.pid for c in waiter.children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE)
            running.append((pid, created))
        except psutil.Error:
            continue
    with _stats_lock:  # forget the waiters found gone (ones added meanwhile stay)
        _waiters.difference_update(set(waiters) - set(running))
    return out


def server_pids() -> set[int]:
    """The live zygotes of this process (a shared service, like a warm pool: not an env's leftover)."""
    with _shared_lock:
        return {z.pid for z in _shared.values() if z.is_alive()}


def _remember_waiter(pid: int) -> None:
    import psutil

    with contextlib.suppress(psutil.Error), _stats_lock:
        _waiters.add((pid, psutil.Process(pid).create_time()))


def discard(zygote: Zygote) -> None:
    """Replace ``zygote`` at the next start (after an error: its state is not trusted)."""
    global replacements
    with _shared_lock:
        if _shared.get(zygote.python) is zygote:
            del _shared[zygote.python]
            replacements += 1
    zygote.close()


def shutdown() -> None:
    """Stop every zygote of this process (tests; the host's exit stops them anyway)."""
    with _shared_lock:
        zygotes = list(_shared.values())
        _shared.clear()
    for zygote in zygotes:
        zygote.close()


def report_fallback(exc: BaseException) -> None:
    """Count a start that fell back to spawning; warn (once per process) and log every time."""
    global fallbacks, _warned
    with _stats_lock:
        fallbacks += 1
        first = not _warned
        _warned = True
    log.warning("kernel_start='zygote' failed, spawning the kernel instead: %s", exc)
    if first:
        warnings.warn(
            f"kernel_start='zygote' could not start a kernel, so kernels are spawned instead "
            f"(slower, same sandbox); l0_env.kernel.zygote.fallbacks counts these: {exc}",
            RuntimeWarning,
            stacklevel=3,
        )


# -- one kernel -------------------------------------------------------------------------------------


@dataclass
class ForkedKernel:
    """A started kernel: ``process`` is bubblewrap (it exits with the kernel, with its status),
    ``log`` the read end of the kernel's stdout/stderr, ``waiter_pid`` the zygote's child whose
    tree holds the kernel (outside the host's process tree: the zygote is detached)."""

    process: subprocess.Popen
    log: IO[bytes]
    waiter_pid: int
    waiter_pidfd: int | None = None

    def wait_gone(self, timeout: float = 10.0) -> bool:
        """After the sandbox was killed: wait until the waiter, and so the whole forked tree, has
        exited (the kernel dies with its PID namespace, the reaper with it, then the waiter); kill
        the waiter if it has not by ``timeout``. True when it is gone. Idempotent.

        ``close()`` of a spawned kernel returns after its bubblewrap was reaped; a forked kernel's
        processes are not the host's children, so without this wait a leak check right after
        ``close()`` would still see them dying."""
        fd, self.waiter_pidfd = self.waiter_pidfd, None
        if fd is None:
            return True
        try:
            if not _wait_readable(fd, timeout):
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                return _wait_readable(fd, 2.0)
            return True
        finally:
            os.close(fd)


def _rlimits(limits: SandboxLimits) -> dict[str, int]:
    return {
        "RLIMIT_AS": limits.memory_bytes,
        "RLIMIT_NPROC": limits.max_processes,
        "RLIMIT_FSIZE": limits.max_file_bytes,
        "RLIMIT_NOFILE": limits.max_open_files,
        "RLIMIT_CORE": 0,
    }


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
        return [int(p) for p in f.read().split()]


def _open_holder_namespaces(bwrap_pid: int) -> dict[str, int]:
    """``ns_<name>`` -> an open namespace file of the holder (bubblewrap's grandchild)."""
    inits = _children(bwrap_pid)
    holders = _children(inits[0]) if len(inits) == 1 else []
    if len(holders) != 1:
        raise ZygoteError(f"no single holder in the sandbox (bwrap {bwrap_pid}: {inits}, {holders})")
    holder = holders[0]
    pidfd = os.pidfd_open(holder)
    fds: dict[str, int] = {}
    try:
        for name in NAMESPACES:
            fds["ns_" + name] = os.open(f"/proc/{holder}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        # The holder still lives, so the files are its namespaces, not a recycled pid's.
        if _readable(pidfd):
            raise ZygoteError("the holder exited while its namespaces were opened")
        for name in MUST_DIFFER:
            if os.fstat(fds["ns_" + name]).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                raise ZygoteError(f"the holder shares the host's {name} namespace; refusing to fork into it")
    except BaseException:
        _close_all(fds.values())
        raise
    finally:
        os.close(pidfd)
    return fds


def _wait_for_holder(fifo: str, proc: subprocess.Popen, deadline: float) -> int:
    """Open the FIFO for writing once the holder reads it (proof it runs in the finished sandbox)."""
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        else:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            return fd
        if proc.poll() is not None:
            raise ZygoteError(f"bubblewrap exited with {proc.returncode} before the holder ran")
        if time.monotonic() > deadline:
            raise ZygoteError("the sandbox's holder did not start in time")
        time.sleep(0.002)


def _read_status(fd: int, deadline: float) -> str:
    data = b""
    while not data.endswith(b"\n"):
        if not _wait_readable(fd, deadline - time.monotonic()):
            raise ZygoteError("the forked kernel did not report its confinement in time")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _drain(fd: int) -> str:
    """What is in a pipe now, without blocking (the last 2,000 characters)."""
    data = b""
    with contextlib.suppress(OSError):
        while _readable(fd) and (chunk := os.read(fd, 65536)):
            data = (data + chunk)[-2000:]
    return data.decode(errors="replace").strip() or "(empty)"


def _close_all(fds: Any) -> None:
    for fd in list(fds):
        with contextlib.suppress(OSError):
            os.close(fd)


def start_kernel(
    *,
    python: str,
    conn_file: str,
    runtime_dir: str,
    limits: SandboxLimits,
    uid: int | None,
    cgroup: SandboxCgroup | None,
    use_seccomp: bool,
    files_dir: str | None,
    timeout: float,
) -> ForkedKernel:
    """Build the sandbox around a holder and fork a confined kernel into it (see the module doc).

    On failure everything of the attempt is killed and closed, and the zygote is replaced.

    Raises:
        ZygoteError: zygote starts are unsupported here, or this start failed (the message says
            where); the caller spawns the kernel instead.
    """
    reason = unsupported_reason(True)
    if reason is not None:
        raise ZygoteError(reason)
    deadline = time.monotonic() + timeout
    zygote = shared_zygote(python, timeout)
    fifo = os.path.join(runtime_dir, HOLDER_FIFO)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(fifo)
    os.mkfifo(fifo, 0o600)
    if uid is not None:
        os.chown(fifo, uid, uid)  # the holder runs as the kernel's uid
    log_r, log_w = os.pipe()
    sent: dict[str, int] = {"log": log_w}
    proc: subprocess.Popen | None = None
    status_r = -1
    waiter_pidfd: int | None = None
    try:
        holder = ["/bin/sh", "-c", HOLDER_SCRIPT, fifo]
        with launch_spec(
            holder,
            runtime_dir=runtime_dir,
            limits=limits,
            uid=uid,
            env=kernel_environment(),
            cgroup=cgroup,
            use_seccomp=use_seccomp,
            files_dir=files_dir,
        ) as (argv, sandbox_kwargs):
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            proc = launcher.spawn(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_w,
                stderr=log_w,
                start_new_session=True,
                **sandbox_kwargs,
            )
        sent["fifo"] = _wait_for_holder(fifo, proc, deadline)
        sent.update(_open_holder_namespaces(proc.pid))
        if cgroup is not None:
            for i, directory in enumerate(sorted(set(cgroup.dirs.values()))):
                sent[f"cgroup{i}"] = os.open(
                    os.path.join(directory, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC
                )
        status_r, sent["status"] = os.pipe()

        argv_kernel = ["-f", conn_file, "--quiet", "--HistoryManager.enabled=False"]
        request = {
            "uid": uid,
            "rlimits": _rlimits(limits),
            "env": kernel_environment(),
            "home": HOME_IN_SANDBOX,
            "argv": argv_kernel,
            "title": [python, "-c", "<l0 zygote fork>", PROCESS_MARKER, *argv_kernel],
            "seccomp": seccomp.filter_program().hex() if use_seccomp else None,
        }
        waiter_pid = zygote.fork(request, sent)
        _remember_waiter(waiter_pid)
        with contextlib.suppress(OSError):  # it waits for the kernel, which has not reported yet
            waiter_pidfd = os.pidfd_open(waiter_pid)
        _close_all(sent.values())
        sent = {}
        status = _read_status(status_r, deadline)
        if status != "ok":
            if not status:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=2)  # the holder exits with the kernel's status
                status = f"no report (it died; sandbox exit status {proc.poll()}; log: {_drain(log_r)})"
            raise ZygoteError(f"the forked kernel refused to start: {status}")
        return ForkedKernel(proc, os.fdopen(log_r, "rb"), waiter_pid, waiter_pidfd)
    except BaseException as exc:
        _close_all(sent.values())
        with contextlib.suppress(OSError):
            os.close(log_r)
        if waiter_pidfd is not None:
            os.close(waiter_pidfd)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if cgroup is not None:
                cgroup.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        discard(zygote)  # after any error: its state is not trusted
        if isinstance(exc, Exception) and not isinstance(exc, ZygoteError):
            # Any failure falls back to a spawned kernel (loudly), never fails the start.
            raise ZygoteError(f"zygote start failed: {type(exc).__name__}: {exc}") from exc
        raise
    finally:
        if status_r >= 0:
            os.close(status_r)
