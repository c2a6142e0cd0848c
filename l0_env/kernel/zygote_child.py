"""The fork server's own program: a warm interpreter that forks sandboxed kernels on request.

This file runs as ``python -c <this source>`` on the host, started by ``zygote.py`` with a cleared
environment (``kernel_environment()``: the same variables a kernel gets, so the interpreter-start
settings match a spawned kernel's and the zygote's memory, which every kernel inherits, holds no
host secret). It imports nothing of ``l0_env``: its children become kernels and must hold nothing
of the host but the modules a kernel imports anyway.

Protocol (``SOCK_SEQPACKET``, the socket the host passes as fd ``argv[2]``; nobody else holds it):

1. the host sends ``{"op": "hello", "kernel_main": <source>, "preload": [modules]}``; the zygote
   runs the launcher's source (``kernel_main.py``) as a module, refuses ``debugpy`` exactly as it
   does, imports the modules, checks it is still single-threaded, and answers
   ``{"ok": true, "pid": ..., "modules": n}``;
2. then per kernel ``{"op": "fork", ...}`` with descriptors (``SCM_RIGHTS``): the holder's
   namespace files, the sandbox cgroup's ``cgroup.procs`` files, the kernel's log pipe, a status
   pipe and the holder's FIFO. The zygote forks and answers ``{"ok": true, "pid": <waiter>}`` at
   once; the kernel itself reports on the status pipe.

Per kernel, three processes (see :func:`_waiter`, :func:`_reaper`, :func:`_become_kernel`):

* a *waiter* child of the zygote joins the sandbox's PID namespace (which applies to its children
  only) and forks the reaper; it stays outside the sandbox, reaps the reaper and writes the exit
  status it got into the holder's FIFO, so the holder (and with it the sandbox, as when a spawned
  kernel exits) ends with the kernel's exit status;
* the *reaper*, the first process of the sandbox's PID namespace from the zygote, forks the kernel
  and is its parent, so the kernel's ``os.getppid()`` is a pid of its own namespace (as under
  bubblewrap, whose pid 1 is a spawned kernel's parent) and not 0. It joins the other namespaces
  too, closes every descriptor, and confines itself like the kernel but *stays uid 0*: every
  capability set empty, not dumpable, ``no_new_privs``, the seccomp program, verified in
  ``/proc/self/status``. A different uid without ``CAP_KILL`` cannot signal it, so the kernel's
  ``os.kill(os.getppid(), 9)`` fails with ``EPERM`` exactly as against bubblewrap's pid 1; without
  ``CAP_SYS_PTRACE`` and with another uid the kernel cannot trace it or read its memory, fds or
  environment in ``/proc``. It does nothing but wait for the kernel and exit with the kernel's
  status (the code, or 128 + the signal), which the waiter passes on. Root is exempt from
  ``RLIMIT_NPROC`` and the reaper stays in the zygote's cgroup, so it costs the kernel's uid no
  process and the sandbox's ``pids.max`` no pid (nor its memory: an OOM in the sandbox cannot
  kill it, so the kernel's status is still reported); it dies with the sandbox's PID namespace;
* the kernel joins the cgroup and the other namespaces, then drops everything a spawned kernel
  does not have; before it reports "ok" it waits until the reaper says it is confined (a pipe:
  one byte, or end of file if the reaper failed, and then the kernel refuses to start), so no
  agent code runs beside an unconfined reaper.
"""

from __future__ import annotations

import array
import ctypes
import json
import os
import random
import resource
import socket
import sys
import threading
import types

PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
LINUX_CAPABILITY_VERSION_3 = 0x20080522
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
# Joined by the kernel, in this order (the mount namespace last: after it the host's /proc is gone).
KERNEL_NAMESPACES = (
    ("ipc", CLONE_NEWIPC),
    ("uts", CLONE_NEWUTS),
    ("net", CLONE_NEWNET),
    ("cgroup", CLONE_NEWCGROUP),
    ("mnt", CLONE_NEWNS),
)
MAX_MESSAGE = 1 << 20
MAX_FDS = 32
PROCESS_MARKER = "ipykernel_launcher"

_libc = ctypes.CDLL(None, use_errno=True)
_kernel_main: types.ModuleType | None = None


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _check(rc: int, what: str) -> int:
    if rc == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def _prctl(option: int, arg2: int = 0, arg3: int = 0, what: str = "prctl") -> None:
    _check(
        _libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0)),
        what,
    )


def setns(fd: int, nstype: int, what: str) -> None:
    """setns(2) (Python 3.11 has no ``os.setns``); raises OSError naming the namespace."""
    _check(_libc.setns(fd, nstype), f"setns({what})")


def drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets (needs root; call
    before the uid drop, which then cannot be undone)."""
    cap = 0
    while cap < 64:  # every capability this kernel knows; EINVAL past the last one
        if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) == -1:
            if ctypes.get_errno() == 22:
                break
            _check(-1, f"PR_CAPBSET_DROP({cap})")
        cap += 1
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, what="PR_CAP_AMBIENT_CLEAR_ALL")


def clear_capability_sets() -> None:
    """capset(2) with every set empty."""
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def load_seccomp(program: bytes) -> None:
    """Install a classic-BPF seccomp filter (the bytes ``bwrap --seccomp`` would read)."""
    if not program or len(program) % 8:
        raise ValueError(f"malformed seccomp program ({len(program)} bytes)")
    n = len(program) // 8
    filters = (_SockFilter * n).from_buffer_copy(program)
    prog = _SockFprog(n, ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), what="PR_SET_SECCOMP")


def proc_status() -> dict[str, str]:
    with open("/proc/self/status", encoding="ascii") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def verify_confined(uid: int | None, seccomp: bool) -> None:
    """Read back what the kernel must be before agent code runs; raise if anything is off."""
    status = proc_status()
    problems = []
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        if int(status.get(key, "1"), 16) != 0:
            problems.append(f"{key} {status.get(key)}")
    if status.get("NoNewPrivs") != "1":
        problems.append(f"NoNewPrivs {status.get('NoNewPrivs')}")
    if seccomp and status.get("Seccomp") != "2":
        problems.append(f"Seccomp {status.get('Seccomp')}")
    if uid is not None:
        ids = [int(v) for k in ("Uid", "Gid") for v in status[k].split()]
        if any(v != uid for v in ids) or status.get("Groups", "").strip():
            problems.append(f"Uid {status['Uid']} Gid {status['Gid']} Groups {status.get('Groups')!r}")
    if problems:
        raise RuntimeError("the forked kernel is not confined: " + ", ".join(problems))


def set_title(words: list[str]) -> None:
    """Rewrite ``/proc/self/cmdline`` in place (setproctitle's way: the zygote's own argv area,
    which its ``-c`` source makes long), so ``ps`` and whatever finds kernels by their command line
    see a kernel's. Cosmetic: skipped when the area is too small."""
    with open("/proc/self/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    arg_start, arg_end = int(fields[45]), int(fields[46])  # fields 48 and 49 of proc(5)
    title = " ".join(words).encode() + b"\0"
    size = arg_end - arg_start
    if size < len(title) + 1:
        return
    # Non-NUL padding up to the last byte tells Linux the title ends at its first NUL.
    ctypes.memmove(arg_start, title + b" " * (size - len(title)), size)


def _close_fds_except(keep: set[int]) -> None:
    # Never an empty range: os.closerange(n, n) becomes close_range(n, UINT_MAX) and closes all.
    low = 0
    for fd in sorted(keep):
        if low < fd:
            os.closerange(low, fd)
        low = fd + 1
    high = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if low < high:
        os.closerange(low, high)


def _open_fds() -> set[int]:
    listed = {int(name) for name in os.listdir("/proc/self/fd")}
    return {fd for fd in listed if _is_open(fd)}  # not listdir's own, closed by now


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _become_kernel(req: dict, fds: dict[str, int], go_fd: int) -> None:
    """In the kernel process (pid namespace already the sandbox's): confine, wait for the reaper's
    word on ``go_fd`` that it is confined too, then run ipykernel. Never returns."""
    status_fd = fds["status"]
    try:
        os.setsid()  # bubblewrap's --new-session: no controlling terminal to inject into
        for fd in (fds[k] for k in fds if k.startswith("cgroup")):
            os.write(fd, b"0")  # "0": the writing process, in v1 and v2
        for name, nstype in KERNEL_NAMESPACES:
            setns(fds["ns_" + name], nstype, name)
        os.chdir(req["home"])
        null = os.open("/dev/null", os.O_RDWR)  # the sandbox's own /dev
        os.dup2(null, 0)
        os.dup2(fds["log"], 1)
        os.dup2(fds["log"], 2)
        keep = {0, 1, 2, status_fd, go_fd}
        _close_fds_except(keep)
        for name, value in req["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (value, value))
        set_title(req["title"])
        uid = req["uid"]
        if uid is not None:
            drop_capabilities()
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            clear_capability_sets()
            # A uid change makes the process non-dumpable (its /proc/self owned by root: no
            # /proc/self/fd, mem...); a spawned kernel is dumpable again after its exec.
            _prctl(PR_SET_DUMPABLE, 1, what="PR_SET_DUMPABLE")
        _prctl(PR_SET_NO_NEW_PRIVS, 1, what="PR_SET_NO_NEW_PRIVS")
        program = bytes.fromhex(req["seccomp"]) if req["seccomp"] else b""
        if program:
            load_seccomp(program)
        verify_confined(uid, bool(program))
        if os.read(go_fd, 1) != b"1":  # end of file: the reaper failed (it said why on the status pipe)
            raise RuntimeError("the kernel's parent (the reaper) did not confine itself")
        os.close(go_fd)
        keep.discard(go_fd)
        left = _open_fds() - keep
        if left:  # listdir's own descriptor is closed by now
            raise RuntimeError(f"descriptors left open: {sorted(left)}")
        os.environ.clear()
        os.environ.update(req["env"])
        os.environ["PWD"] = req["home"]  # bubblewrap's --chdir sets it
        random.seed()  # also done by os.fork's at-fork hook; the hash seed cannot change (see zygote.py)
        sys.argv = ["-c", PROCESS_MARKER, *req["argv"]]
        sys.path.insert(0, "")  # as ``python -c`` has it; kernel_main.main takes it off again
        os.write(status_fd, b"ok\n")
        os.close(status_fd)
    except BaseException as exc:
        with _suppress():
            os.write(status_fd, f"error {type(exc).__name__}: {exc}\n".encode(errors="replace")[:4000])
        with _suppress():
            import traceback

            traceback.print_exc()
        os._exit(71)
    code = 0
    try:
        assert _kernel_main is not None
        _kernel_main.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with _suppress():
            sys.stdout.flush()
            sys.stderr.flush()
    os._exit(code)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _wait_status_code(status: int) -> int:
    """The exit status a shell (and bubblewrap) reports: the code, or 128 + the signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _waitpid(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue


def _confine_reaper(req: dict, fds: dict[str, int], keep: set[int]) -> None:
    """Make the reaper what the kernel cannot reach: the sandbox's namespaces, no descriptor but
    ``keep``, uid 0 with no capability, not dumpable, ``no_new_privs``, the seccomp program."""
    for name, nstype in KERNEL_NAMESPACES:  # no host mount, network, ... even if it were subverted
        setns(fds["ns_" + name], nstype, name)
    os.chdir("/")
    _close_fds_except(keep)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    set_title(["l0-kernel-reaper"])  # not the zygote's command line (its source), in the kernel's ps
    drop_capabilities()
    os.setgroups([])
    os.setresgid(0, 0, 0)
    clear_capability_sets()  # uid 0 stays: a uid the kernel's cannot signal; capabilities go
    _prctl(PR_SET_DUMPABLE, 0, what="PR_SET_DUMPABLE")  # /proc/<reaper>/{mem,fd,environ}: root only
    _prctl(PR_SET_NO_NEW_PRIVS, 1, what="PR_SET_NO_NEW_PRIVS")
    program = bytes.fromhex(req["seccomp"]) if req["seccomp"] else b""
    if program:
        load_seccomp(program)
    verify_confined(0, bool(program))


def _reaper(req: dict, fds: dict[str, int]) -> None:
    """The kernel's parent, inside the sandbox's PID namespace (see the module doc): fork the
    kernel, confine itself, tell the kernel so, wait for it and exit with its status. Never
    returns."""
    code = 70
    try:
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            _become_kernel(req, fds, go_r)
        os.close(go_r)
        status_fd = fds["status"]
        confined = False
        try:
            _confine_reaper(req, fds, keep={go_w, status_fd})
            os.close(status_fd)
            left = _open_fds() - {go_w}
            if left:
                raise RuntimeError(f"descriptors left open: {sorted(left)}")
            confined = True
        except BaseException as exc:
            with _suppress():
                message = f"error in the kernel's reaper: {type(exc).__name__}: {exc}\n"
                os.write(status_fd, message.encode(errors="replace")[:4000])
        if confined:
            with _suppress():  # EPIPE: the kernel already failed (and said why)
                os.write(go_w, b"1")
        os.close(go_w)  # unconfined: the kernel reads end of file and refuses to start
        status = _waitpid(pid)
        code = _wait_status_code(status) if confined else 70
    finally:
        os._exit(code)


def _waiter(req: dict, fds: dict[str, int]) -> None:
    """The forked child outside the sandbox: fork the reaper into the sandbox's PID namespace,
    then wait for it and pass its exit status (the kernel's) to the holder. Never returns."""
    code = 70
    try:
        try:
            setns(fds["ns_pid"], CLONE_NEWPID, "pid")
        except BaseException as exc:
            with _suppress():
                os.write(fds["status"], f"error {exc}\n".encode(errors="replace")[:4000])
            raise
        pid = os.fork()
        if pid == 0:
            _reaper(req, fds)
        keep = {fds["fifo"]}
        _close_fds_except(keep)
        status = _waitpid(pid)
        with _suppress():
            os.write(fds["fifo"], f"{_wait_status_code(status)}\n".encode())
        code = 0
    finally:
        os._exit(code)


def _recv(sock: socket.socket) -> tuple[dict | None, list[int]]:
    msg, ancdata, _flags, _addr = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * 4))
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    if not msg:
        return None, list(fds)
    return json.loads(msg), list(fds)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _hello(req: dict) -> dict:
    global _kernel_main
    module = types.ModuleType("l0_kernel_main")
    exec(compile(req["kernel_main"], "l0_kernel_main", "exec"), module.__dict__)
    _kernel_main = module
    finder = module.NoDebuggerFinder()
    sys.meta_path.insert(0, finder)  # as the launcher does: no debugpy in the zygote either
    failed = []
    for name in req["preload"]:
        try:
            __import__(name)
        except Exception as exc:  # a module this Python lacks: the kernel imports it itself, or not
            failed.append(f"{name}: {type(exc).__name__}")
    sys.meta_path.remove(finder)  # kernel_main.main() inserts its own in each kernel
    if threading.active_count() != 1:
        raise RuntimeError(f"the preloaded modules started threads: {threading.enumerate()}")
    return {"ok": True, "pid": os.getpid(), "modules": len(sys.modules), "failed": failed}


def _fork(req: dict, received: list[int]) -> dict:
    names = req["fds"]
    if len(names) != len(received):
        raise ValueError(f"{len(received)} descriptors for {len(names)} names")
    fds = dict(zip(names, received, strict=True))
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(CONTROL_FD[0])
            _waiter(req, fds)
        finally:
            os._exit(70)
    return {"ok": True, "pid": pid}


CONTROL_FD = [-1]


def serve(fd: int) -> None:
    """Answer the host's requests on ``fd`` until it closes its end (then exit)."""
    CONTROL_FD[0] = fd
    sock = socket.socket(fileno=fd)
    sock.settimeout(1.0)
    while True:
        _reap()
        try:
            req, received = _recv(sock)
        except TimeoutError:
            continue
        if req is None:
            return  # the host closed its end (or died)
        try:
            if req.get("op") == "hello":
                reply = _hello(req)
            elif req.get("op") == "fork":
                reply = _fork(req, received)
            else:
                reply = {"ok": False, "error": f"unknown op {req.get('op')!r}"}
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            for received_fd in received:
                with _suppress():
                    os.close(received_fd)
        sock.sendall(json.dumps(reply).encode())


def main() -> None:
    # Detach from the host's process tree (the host holds a pidfd instead): code there that waits
    # for or counts its children sees its kernels' sandboxes, not a fork server. The host's death
    # closes the control socket, which ends the zygote.
    if os.fork() != 0:
        os._exit(0)
    # "-c" put the working directory first: nothing there may shadow a preloaded module.
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    serve(int(sys.argv[2]))


if __name__ == "__main__":
    main()
