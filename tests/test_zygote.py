"""Kernels forked from the warm zygote (``l0_env/kernel/zygote.py``), for real: bubblewrap, the fork
server, ipykernel, the tool bridge.

Each confinement property is read inside a forked kernel and compared with a spawned kernel's
(the reference), so "exactly the sandbox guarantees of a spawned one" is what is checked. The whole
attack suite runs in both modes (tests/security/conftest.py).
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from l0_env.builtin_tools import builtin_stubs
from l0_env.kernel import zygote, zygote_child
from l0_env.kernel.sandbox import SandboxLimits, check_bwrap, kernel_environment
from l0_env.kernel.session import KernelConfig, SandboxedKernel

pytestmark = pytest.mark.skipif(
    check_bwrap() is not None or os.geteuid() != 0, reason="needs bubblewrap and a root host"
)
LIMITS = SandboxLimits(memory_bytes=1 << 30, max_processes=48, max_file_bytes=8 << 20, max_open_files=200)
CONFIG = KernelConfig(
    sandbox="bwrap",
    cell_timeout=60.0,
    interrupt_grace=1.5,
    max_output_chars=20_000,
    tools=builtin_stubs(),
    limits=LIMITS,
    kernel_start="zygote",
)
SPAWN_CONFIG = KernelConfig(**{**CONFIG.__dict__, "kernel_start": "spawn"})
SECRET = "L0_ZYGOTE_TEST_SECRET"

# What a kernel sees of itself: the properties a forked kernel must share with a spawned one.
INSPECT = textwrap.dedent(
    """
    import json, os, resource, socket
    status = dict(l.rstrip('\\n').split(':\\t', 1) for l in open('/proc/self/status') if ':\\t' in l)
    def writable(path):
        try:
            open(os.path.join(path, '.probe'), 'w').close()
            return True
        except OSError as exc:
            return exc.strerror
    mounts = {l.split()[4]: l.split(' - ')[1].split()[0] for l in open('/proc/self/mountinfo')}
    print(json.dumps({
        'uid': [status['Uid'], status['Gid'], status['Groups'].strip()],
        'caps': {k: status[k] for k in ('CapPrm', 'CapEff', 'CapAmb')},
        'nnp': status['NoNewPrivs'], 'seccomp': status['Seccomp'],
        'rlimits': [resource.getrlimit(getattr(resource, r)) for r in
                    ('RLIMIT_AS', 'RLIMIT_NPROC', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE', 'RLIMIT_CORE')],
        'interfaces': sorted(n for _, n in socket.if_nameindex()),
        'hostname': socket.gethostname(), 'cwd': os.getcwd(),
        'home': mounts.get('/home/agent'), 'tmp': mounts.get('/tmp'),
        'task_files': writable('/task_files'), 'usr': writable('/usr'),
        'env': sorted(os.environ), 'pid1': open('/proc/1/cmdline').read().split('\\0')[0].rsplit('/', 1)[-1],
        'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit()),
        'mypid': os.getpid(), 'ppid': os.getppid(), 'root': sorted(os.listdir('/')),
    }))
    """
)


@pytest.fixture(scope="module")
def kernel() -> Iterator[SandboxedKernel]:
    k = SandboxedKernel(CONFIG)
    k.tool_handler = lambda op, args: [{"id": "p1", "title": f"{op}:{args.get('query')}"}]
    yield k
    k.close()


def inspect(kernel: SandboxedKernel) -> dict:
    result = kernel.execute(INSPECT)
    assert result.status == "ok", result.text
    return json.loads(result.text)


def ids_of(report: dict) -> dict:
    """A report without what differs between any two kernels (pids, the leased uid's number)."""
    return {k: v for k, v in report.items() if k not in ("pids", "mypid", "ppid", "uid")}


# -- configuration and pure parts ---------------------------------------------------------------------


def test_kernel_start_is_validated():
    with pytest.raises(ValueError, match="kernel_start must be 'auto', 'spawn' or 'zygote'"):
        KernelConfig(kernel_start="fork")  # type: ignore[arg-type]
    assert KernelConfig().kernel_start == "auto"


def test_auto_forks_where_supported_and_a_leaked_forked_kernel_is_seen():
    """The default ("auto") forks on this root host; a forked kernel lives outside the host's
    process tree, yet ``kernel.process_pids()`` and ``l0_env.checker.spawned_pids()`` (what
    ``check_l0_env``'s leak check uses) see all of it, and see it gone after close."""
    from l0_env.checker import spawned_pids

    fallbacks = zygote.fallbacks
    k = SandboxedKernel(KernelConfig(**{**CONFIG.__dict__, "kernel_start": "auto"}))
    try:
        assert k.start_mode == "zygote" and zygote.fallbacks == fallbacks
        pids = set(k.process_pids())
        me = psutil.Process()
        outside = pids - {p.pid for p in me.children(recursive=True)}
        pythons = [p for p in pids if "ipykernel_launcher" in psutil.Process(p).cmdline()]
        assert len(pythons) == 1 and pythons[0] in outside, "the kernel is not under the host"
        assert pids <= spawned_pids(), "the leak check must see every process of a forked kernel"
        assert not (zygote.server_pids() & spawned_pids()), "the fork server is a service, not a leftover"
    finally:
        k.close()
    deadline = time.monotonic() + 10
    while pids & spawned_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (pids & spawned_pids()), "close() left processes of the forked kernel"


def test_check_l0_env_catches_a_forked_kernel_that_outlives_close():
    import gymnasium as gym

    import l0_env

    class LeakyClose(gym.Wrapper):
        def close(self):  # forgets the kernel
            pass

    env = gym.make(l0_env.ENV_ID, sandbox="bwrap", kernel_start="auto", max_steps=3, pool_size=0)
    leaked = env.unwrapped
    try:
        with pytest.raises(AssertionError, match="processes left running after close"):
            l0_env.check_l0_env(LeakyClose(env), run_gymnasium_checks=False)
    finally:
        leaked.close()


def test_recycle_setting(monkeypatch):
    monkeypatch.delenv(zygote.RECYCLE_ENV, raising=False)
    assert zygote.recycle_after() == zygote.DEFAULT_RECYCLE_AFTER
    monkeypatch.setenv(zygote.RECYCLE_ENV, "3")
    assert zygote.recycle_after() == 3
    for bad in ("0", "-1", "x"):
        monkeypatch.setenv(zygote.RECYCLE_ENV, bad)
        with pytest.raises(ValueError, match=zygote.RECYCLE_ENV):
            zygote.recycle_after()


def test_wait_status_is_reported_as_a_shell_would():
    assert zygote_child._wait_status_code(7 << 8) == 7  # exit(7)
    assert zygote_child._wait_status_code(signal.SIGKILL) == 128 + 9  # killed


def test_close_fds_except_keeps_exactly_the_set():
    """os.closerange(n, n) closes *every* descriptor (close_range(n, UINT_MAX)); the child must
    keep exactly what it is told to keep, even when two kept descriptors are adjacent."""
    code = textwrap.dedent(
        """
        import os, sys
        from l0_env.kernel import zygote_child as z
        fds = [os.open('/dev/null', os.O_RDONLY) for _ in range(6)]
        keep = {0, 1, 2, fds[1], fds[2], fds[4]}
        z._close_fds_except(keep)
        print(sorted(z._open_fds()) == sorted(keep), flush=True)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr


def test_non_root_host_is_refused_with_a_reason(monkeypatch):
    monkeypatch.setattr(zygote, "host_is_root", lambda: False)
    assert "root hosts only" in (zygote.unsupported_reason(True) or "")
    assert "sandbox" in (zygote.unsupported_reason(False) or "")
    monkeypatch.undo()
    assert zygote.unsupported_reason(True) is None


# -- a forked kernel works like a spawned one --------------------------------------------------------


def test_forked_kernel_runs_cells_tools_and_notepad(kernel):
    assert kernel.start_mode == "zygote"
    assert kernel.execute("x = 20 + 1").status == "ok"
    assert kernel.execute("print(x * 2)").text == "42"
    result = kernel.execute("hits = web_search('ada', k=1)\nprint(hits[0]['title'])")
    assert result.status == "ok" and result.text == "web_search:ada", result.text
    assert kernel.execute("notepad.add_fact('k', 'v')").status == "ok"
    assert kernel.notepad_state["facts"] == {"k": "v"}
    assert "ModuleNotFoundError" in kernel.execute("import debugpy").text  # the launcher's semantics


def test_forked_kernel_is_confined_exactly_like_a_spawned_one(kernel):
    forked = inspect(kernel)
    with SandboxedKernel(SPAWN_CONFIG) as spawned_kernel:
        assert spawned_kernel.start_mode == "spawn"
        spawned = inspect(spawned_kernel)
    assert ids_of(forked) == ids_of(spawned)
    uid = str(kernel._uid_lease.uid)  # the leased uid, to compare with
    assert forked["uid"] == [f"{uid}\t{uid}\t{uid}\t{uid}"] * 2 + [""]
    assert spawned["uid"][2] == ""  # no supplementary groups in either
    assert forked["caps"] == {
        "CapPrm": "0000000000000000",
        "CapEff": "0000000000000000",
        "CapAmb": "0000000000000000",
    }
    assert (forked["nnp"], forked["seccomp"]) == ("1", "2")
    assert forked["rlimits"][0] == [LIMITS.memory_bytes] * 2
    assert forked["rlimits"][1] == [LIMITS.max_processes] * 2
    assert forked["interfaces"] == ["lo"]
    assert forked["home"] == forked["tmp"] == "tmpfs"
    assert forked["task_files"] == forked["usr"] == "Read-only file system"
    assert set(kernel_environment()) < set(forked["env"])  # and what ipykernel adds, as spawned
    assert forked["pid1"] == "bwrap"
    # Its own PID namespace: bubblewrap (1), the holder (2), the reaper (the kernel's parent) and
    # the kernel, nothing of the host. A spawned kernel's parent is bubblewrap's pid 1.
    assert forked["pids"] == [1, 2, forked["ppid"], forked["mypid"]], forked
    assert spawned["ppid"] == 1 and spawned["pids"] == [1, spawned["mypid"]], spawned


def test_forked_kernel_has_no_capability_at_all(kernel):
    status = kernel.execute("print(open('/proc/self/status').read())").text
    for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert f"{key}:\t0000000000000000" in status, status


def test_forked_kernel_holds_only_its_own_descriptors(kernel):
    """ipykernel's own (zmq sockets, pipes, epoll/eventfd), stdin /dev/null, stdout/stderr the log
    pipe: nothing of the zygote (its control socket) or of the host."""
    code = textwrap.dedent(
        """
        import os
        kinds = set()
        for fd in os.listdir('/proc/self/fd'):
            try:
                kinds.add(os.readlink(f'/proc/self/fd/{fd}').split(':')[0])
            except OSError:
                pass  # listdir's own descriptor, closed by now
        print(sorted(kinds), os.readlink('/proc/self/fd/0'))
        """
    )
    text = kernel.execute(code).text
    kinds, stdin = text.rsplit(" ", 1)
    assert set(json.loads(kinds.replace("'", '"'))) <= {"/dev/null", "pipe", "socket", "anon_inode"}, text
    assert stdin == "/dev/null"


def test_zygote_is_out_of_reach_from_a_kernel(kernel):
    z = zygote.shared_zygote(CONFIG.python, 60)
    sock_inode = os.readlink(f"/proc/{z.pid}/fd/{_zygote_control_fd(z.pid)}").strip("socket:[]")
    code = textwrap.dedent(
        f"""
        import ctypes, errno, os, signal
        out = {{}}
        out['visible'] = os.path.exists('/proc/{z.pid}')
        try:
            os.kill({z.pid}, signal.SIGKILL)
            out['kill'] = 'sent'
        except OSError as exc:
            out['kill'] = errno.errorcode[exc.errno]
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.ptrace(16, {z.pid}, None, None)  # PTRACE_ATTACH
        out['ptrace'] = errno.errorcode[ctypes.get_errno()] if rc == -1 else 'attached'
        out['socket_listed'] = '{sock_inode}' in open('/proc/net/unix').read()
        print(out)
        """
    )
    result = kernel.execute(code)
    assert result.status == "ok", result.text
    assert result.text == "{'visible': False, 'kill': 'ESRCH', 'ptrace': 'EPERM', 'socket_listed': False}"
    assert z.is_alive()


def _zygote_control_fd(pid: int) -> int:
    fds = [
        int(fd)
        for fd in os.listdir(f"/proc/{pid}/fd")
        if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    ]
    assert len(fds) == 1, fds  # the control socket is the zygote's only socket
    return fds[0]


def test_kernels_parent_is_in_its_namespace_and_out_of_reach(kernel):
    """The reaper (the kernel's parent, see zygote_child) is a pid of the sandbox's namespace that
    the kernel cannot signal, trace or look into, as bubblewrap's pid 1 is for a spawned kernel."""
    code = textwrap.dedent(
        """
        import ctypes, errno, os, signal
        out, ppid = {}, os.getppid()
        out['ppid'] = ppid
        for name, pid in (('parent', ppid), ('init', 1)):
            for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP, 0):
                try:
                    os.kill(pid, sig)
                    out[f'{name} {int(sig)}'] = 'sent'
                except OSError as exc:
                    out[f'{name} {int(sig)}'] = errno.errorcode[exc.errno]
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.ptrace(16, ppid, None, None)  # PTRACE_ATTACH
        out['ptrace'] = errno.errorcode[ctypes.get_errno()] if rc == -1 else 'attached'
        for what in ('environ', 'mem', 'maps', 'fd', 'root', 'cwd'):
            try:
                path = f'/proc/{ppid}/{what}'
                (os.listdir if what == 'fd' else os.readlink if what in ('root', 'cwd') else
                 lambda p: open(p, 'rb').read(1))(path)
                out[what] = 'read'
            except OSError as exc:
                out[what] = errno.errorcode[exc.errno]
        status = dict(l.rstrip('\\n').split(':\\t', 1) for l in open(f'/proc/{ppid}/status') if ':\\t' in l)
        out['status'] = {k: status[k] for k in ('Uid', 'CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb',
                                                 'NoNewPrivs', 'Seccomp')}
        out['cmdline'] = open(f'/proc/{ppid}/cmdline').read().strip('\\0 ')
        print(out)
        """
    )
    result = kernel.execute(code)
    assert result.status == "ok", result.text
    out = ast.literal_eval(result.text)
    assert out["ppid"] not in (0, 1, 2), out  # 0: a parent outside the namespace
    refused = {f"{name} {sig}": "EPERM" for name in ("parent", "init") for sig in (9, 15, 19, 0)}
    assert {k: out[k] for k in refused} == refused
    assert out["ptrace"] == "EPERM"
    assert all(out[w] == "EACCES" for w in ("environ", "mem", "maps", "fd", "root", "cwd")), out
    zero = "0000000000000000"
    assert out["status"] == {
        "Uid": "0\t0\t0\t0",
        **{k: zero for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
        "NoNewPrivs": "1",
        "Seccomp": "2",
    }, out["status"]
    assert out["cmdline"] == "l0-kernel-reaper"
    # From the host: the reaper holds no descriptor, shares every namespace of the kernel's
    # sandbox, and is in none of the sandbox's cgroups (it costs the kernel no pid).
    kernel_pid = _kernel_host_pid(kernel)
    reaper = psutil.Process(kernel_pid).parent()
    assert reaper is not None and reaper.cmdline() == ["l0-kernel-reaper"]
    assert os.listdir(f"/proc/{reaper.pid}/fd") == []
    for name in ("pid", "mnt", "net", "ipc", "uts", "cgroup"):
        assert os.readlink(f"/proc/{reaper.pid}/ns/{name}") == os.readlink(f"/proc/{kernel_pid}/ns/{name}")
    assert _pid_namespace_children_of(reaper.pid) == [kernel_pid]
    sandbox_cgroups = set(kernel._cgroup.dirs.values()) if kernel._cgroup is not None else set()
    for directory in sandbox_cgroups:
        procs = Path(directory, "cgroup.procs").read_text().split()
        assert str(kernel_pid) in procs and str(reaper.pid) not in procs


def _pid_namespace_children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
        return [int(p) for p in f.read().split()]


FORK_UNTIL_REFUSED = textwrap.dedent(
    """
    import os
    r, w = os.pipe()
    kids, err = [], None
    while len(kids) < 500:
        try:
            pid = os.fork()
        except OSError as exc:
            err = exc.errno
            break
        if pid == 0:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        kids.append(pid)
    threads = len(os.listdir('/proc/self/task'))
    os.close(w)
    for pid in kids:
        os.waitpid(pid, 0)
    print(len(kids) + threads, err)
    """
)


def test_process_limit_costs_a_forked_kernel_only_the_holder(kernel):
    """Under the same RLIMIT_NPROC and pids.max, a forked kernel's processes and threads number
    exactly one fewer than a spawned kernel's (the holder, of the kernel's uid and in the sandbox's
    cgroup); the reaper (uid 0, outside the cgroup) costs nothing."""
    forked = kernel.execute(FORK_UNTIL_REFUSED)
    with SandboxedKernel(SPAWN_CONFIG) as spawned_kernel:
        spawned = spawned_kernel.execute(FORK_UNTIL_REFUSED)
    assert forked.status == spawned.status == "ok", (forked.text, spawned.text)
    forked_tasks, forked_err = forked.text.split()
    spawned_tasks, spawned_err = spawned.text.split()
    assert forked_err == spawned_err == "11", (forked.text, spawned.text)  # EAGAIN
    assert int(spawned_tasks) <= LIMITS.max_processes
    assert int(forked_tasks) == int(spawned_tasks) - 1, (forked.text, spawned.text)


def test_unconfined_reaper_means_no_kernel(monkeypatch):
    """If the reaper cannot confine itself, the forked kernel refuses to start (no agent code runs
    beside it) and the start falls back to spawning, loudly."""
    confine = "    clear_capability_sets()  # uid 0 stays"
    assert zygote._ZYGOTE_SOURCE.count(confine) == 1
    monkeypatch.setattr(zygote, "_ZYGOTE_SOURCE", zygote._ZYGOTE_SOURCE.replace(confine, "    pass  #"))
    monkeypatch.setattr(zygote, "_warned", False)
    zygote.shutdown()
    before = zygote.fallbacks
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            k = SandboxedKernel(CONFIG)
        with k:
            assert k.start_mode == "spawn"
            assert k.execute("print(6 * 7)").text == "42"
        assert zygote.fallbacks == before + 1
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 1 and "error in the kernel's reaper" in messages[0], messages
        assert "CapPrm" in messages[0], messages
    finally:
        zygote.shutdown()


def test_two_episodes_cannot_see_each_other(kernel):
    with SandboxedKernel(CONFIG) as other:
        assert other.start_mode == "zygote"
        mine, theirs = _kernel_host_pid(kernel), _kernel_host_pid(other)
        for name in ("pid", "mnt", "net", "ipc", "uts"):
            assert os.stat(f"/proc/{mine}/ns/{name}").st_ino != os.stat(f"/proc/{theirs}/ns/{name}").st_ino
        code = (
            f"import os\nprint(os.path.exists('/proc/{theirs}'), os.path.exists({other.runtime_dir!r}), "
            f"os.path.exists({other.bridge.path!r}))"
        )
        assert kernel.execute(code).text == "False False False"


def _kernel_host_pid(kernel: SandboxedKernel) -> int:
    """The forked kernel's host pid: the process whose command line names its connection file."""
    conn = os.path.join(kernel.runtime_dir, "kernel.json")
    found = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if conn in (p.info["cmdline"] or []) and p.info["cmdline"][0] != "bwrap"
    ]
    assert len(found) == 1, found
    return found[0]


def test_zygote_memory_holds_no_host_secret(monkeypatch):
    """The zygote starts with the kernel's environment only: a host secret set before it starts is
    nowhere in a forked kernel's memory."""
    zygote.shutdown()
    monkeypatch.setenv(SECRET, "zyg0te-s3cret-value")
    with SandboxedKernel(CONFIG) as k:
        assert k.start_mode == "zygote"
        code = textwrap.dedent(
            """
            import re
            # The needle in two halves: the whole string must not exist in this cell's own memory.
            head, tail, found, scanned = b'zyg0te-s3', b'cret-value', False, 0
            with open('/proc/self/maps') as maps, open('/proc/self/mem', 'rb', 0) as mem:
                for line in maps:
                    start, end = (int(x, 16) for x in line.split()[0].split('-'))
                    if 'r' not in line.split()[1] or end - start > 1 << 28:
                        continue
                    try:
                        mem.seek(start); chunk = mem.read(end - start)
                    except (OSError, ValueError, OverflowError):
                        continue
                    scanned += len(chunk)
                    i = chunk.find(head)
                    while i >= 0 and not found:
                        found = chunk[i + len(head):i + len(head) + len(tail)] == tail
                        i = chunk.find(head, i + 1)
            print(found, scanned > 10 << 20)
            """
        )
        assert k.execute(code).text == "False True"


# -- life cycle ---------------------------------------------------------------------------------------


def test_restart_after_death_mid_cell_stays_forked(kernel):
    kernel.execute("notepad.add_todo('t', 'doing')")
    result = kernel.execute("import os\nos._exit(7)")
    assert result.status == "died" and result.restarted
    assert "exit code 7" in result.text  # the holder passes the kernel's status on
    assert kernel.start_mode == "zygote"
    assert kernel.execute("print(notepad.plan)").text == "[{'text': 't', 'status': 'doing'}]"
    result = kernel.execute("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert result.restarted and "exit code 137" in result.text, result.text
    assert kernel.execute("print('back')").text == "back"


def test_killed_zygote_is_replaced_and_running_kernels_live_on(kernel):
    old = zygote.shared_zygote(CONFIG.python, 60)
    replaced, fallbacks = zygote.replacements, zygote.fallbacks
    os.kill(old.pid, signal.SIGKILL)
    assert _wait(lambda: not old.is_alive())
    assert kernel.execute("print('alive')").text == "alive"  # forked kernels do not need it
    with SandboxedKernel(CONFIG) as k:
        assert k.start_mode == "zygote"
        assert k.execute("print(1)").text == "1"
    new = zygote.shared_zygote(CONFIG.python, 60)
    assert new.pid != old.pid and new.is_alive()
    assert zygote.replacements == replaced + 1 and zygote.fallbacks == fallbacks


def test_zygote_is_recycled_every_n_kernels(monkeypatch):
    monkeypatch.setenv(zygote.RECYCLE_ENV, "2")
    zygote.shutdown()
    pids = []
    for _ in range(3):
        with SandboxedKernel(CONFIG) as k:
            assert k.start_mode == "zygote"
            reaper = psutil.Process(_kernel_host_pid(k)).parent()
            waiter = reaper.parent() if reaper is not None else None
            assert waiter is not None
            pids.append(waiter.ppid())  # the zygote that forked it
    assert pids[0] == pids[1] != pids[2]


def test_failed_fork_falls_back_to_spawn_loudly(monkeypatch):
    """A start that fails in zygote mode spawns instead: one warning, a counter, a fresh zygote."""
    monkeypatch.setattr(zygote, "_warned", False)
    monkeypatch.setattr(zygote, "HOLDER_SCRIPT", "exit 3")  # the holder dies: no sandbox to fork into
    before = zygote.fallbacks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        k1 = SandboxedKernel(CONFIG)
        k2 = SandboxedKernel(CONFIG)
    try:
        assert k1.start_mode == k2.start_mode == "spawn"
        assert k1.execute("print(6 * 7)").text == "42"
        assert zygote.fallbacks == before + 2
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 1 and "bubblewrap exited with 3" in messages[0], messages
    finally:
        k1.close()
        k2.close()


def test_descriptors_past_select_limit(monkeypatch):
    """A host with many kernels holds descriptors past select()'s FD_SETSIZE (1024): at N=64 a
    vector env does. The zygote's control socket, pidfd and pipes are waited on with poll."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 1400")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400), hard))
    filler: list[int] = []
    zygote.shutdown()  # the next start makes a zygote whose descriptors are all past 1024
    before = zygote.fallbacks
    try:
        while not filler or filler[-1] < 1100:
            filler.append(os.open("/dev/null", os.O_RDONLY))
        with SandboxedKernel(CONFIG) as k:
            assert k.start_mode == "zygote" and zygote.fallbacks == before
            assert k.execute("print(6 * 7)").text == "42"
            assert zygote.shared_zygote(CONFIG.python, 60)._sock.fileno() > 1024
    finally:
        for fd in filler:
            os.close(fd)
        zygote.shutdown()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_close_leaves_no_process():
    k = SandboxedKernel(CONFIG)
    assert k.start_mode == "zygote"
    k.execute("import subprocess\np = subprocess.Popen(['sleep', '600'], start_new_session=True)")
    z = zygote.shared_zygote(CONFIG.python, 60)
    bwrap = psutil.Process(k.pid)
    tree = [bwrap, *bwrap.children(recursive=True)]
    kernel_proc = psutil.Process(_kernel_host_pid(k))
    reaper = kernel_proc.parent()
    assert reaper is not None and reaper.cmdline() == ["l0-kernel-reaper"]
    waiter = reaper.parent()
    mine = [*tree, reaper, kernel_proc, *kernel_proc.children(recursive=True)]
    assert waiter is not None and waiter.ppid() == z.pid  # the waiter: the zygote's child, outside
    assert any(p.name() == "sleep" for p in mine)
    k.close()
    assert _wait(lambda: not any(_alive(p) for p in [*mine, waiter])), [p for p in mine if _alive(p)]
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if k.runtime_dir in " ".join(p.info["cmdline"] or [])
    ]
    assert _wait(lambda: not psutil.Process(z.pid).children())  # every waiter reaped
    assert z.is_alive()


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
