"""Attacks past the rlimits through the Linux kernel itself: memfd and System V shared memory that
``RLIMIT_AS`` does not count, nested user namespaces that mount a tmpfs of any size, the keyring
that outlives the sandbox, the rest of the seccomp policy, and the per-sandbox cgroup.

Each runs as agent code through ``env.step`` and checks that the attack failed, that the agent saw
an ordinary exception (an errno, never a killed kernel), and that the env still works afterwards.
System-call numbers come from libseccomp for this machine's architecture.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import psutil
import pytest

from l0_env.kernel import cgroups, seccomp
from l0_env.kernel.report import format_report, sandbox_report
from l0_env.kernel.sandbox import SandboxLimits

from .conftest import (
    LIMITS,
    assert_env_works,
    cell_text,
    fresh_env,
    kernel_of,
    make_env,
    step,
    uid_processes,
    wait_until,
)

MiB = 1 << 20
NEEDS_CGROUPS = pytest.mark.skipif(
    not cgroups.detect().available, reason=f"no writable cgroups here: {cgroups.detect().reason}"
)


def nr(name: str) -> int:
    return seccomp.syscall_number(name)


# Kernel-side helper: ``call(name, *args)`` -> 0 or the errno name, through syscall(2).
SYSCALL = (
    "import ctypes, errno, os\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.syscall.restype = ctypes.c_long\n"
    "def call(number, *args):\n"
    "    ctypes.set_errno(0)\n"
    "    r = libc.syscall(number, *args)\n"
    "    return 'ok' if r >= 0 else errno.errorcode[ctypes.get_errno()]\n"
)


# -- memory that RLIMIT_AS does not count ----------------------------------------------------------


def test_memfd_and_shared_memory_cannot_hold_memory_past_the_limit(secret_env):
    """The issue's attack: 600 MiB held in memfds written with write() (never mapped, so not in the
    address space) under a 256 MiB limit; System V segments the same way (a segment outlives its
    mapping). Both are refused with EPERM; the kernel lives on."""
    limits = SandboxLimits(memory_bytes=256 * MiB, max_file_bytes=16 * MiB, disk_bytes=32 * MiB)
    for env in fresh_env(limits=limits):
        _, _, info = step(
            env,
            "import os\n"
            "chunk = b'm' * (1 << 20)\n"
            "fds, held, err = [], 0, None\n"
            "try:\n"
            "    while held < 600:\n"
            "        fd = os.memfd_create(f'hold{len(fds)}'); fds.append(fd)\n"
            "        for _ in range(16):\n"
            "            os.write(fd, chunk); held += 1\n"
            "except OSError as e:\n"
            "    err = e.errno\n"
            "print('memfd held MiB', held, 'errno', err)\n" + SYSCALL + "import ctypes\n"
            "segments, err = 0, None\n"
            "for _ in range(40):\n"
            f"    shmid = libc.syscall({nr('shmget')}, 0, 16 << 20, 0o1600)\n"  # IPC_PRIVATE, IPC_CREAT|0600
            "    if shmid < 0:\n"
            "        err = errno.errorcode[ctypes.get_errno()]; break\n"
            "    segments += 1\n"
            "print('shm segments', segments, 'error', err)\n",
        )
        text = cell_text(info)
        assert "memfd held MiB 0 errno 1" in text, text  # EPERM at the first memfd_create
        assert "shm segments 0 error EPERM" in text, text
        assert info["cell_status"] == "ok" and not info["kernel_restarted"], text
        assert_env_works(env)


@NEEDS_CGROUPS
def test_tmpfs_writes_past_the_sandbox_memory_limit_are_stopped(secret_env):
    """tmpfs files live in host RAM: with disks larger than the sandbox's memory limit, writing them
    full is stopped at the cgroup limit (the kernel is killed by the OOM killer of *its* cgroup,
    restarted, and told why); the host's view of the cgroup shows it never held more."""
    total = 192 * MiB
    limits = SandboxLimits(
        memory_bytes=512 * MiB, disk_bytes=512 * MiB, max_file_bytes=32 * MiB, total_memory_bytes=total
    )
    for env in fresh_env(limits=limits):
        kernel = kernel_of(env)
        step(env, "notepad.add_fact('kept', 'yes')")
        obs_text, _, info = step(
            env,
            "chunk = b't' * (1 << 20)\nwritten = 0\n"
            "for d in ('/home/agent', '/tmp'):\n"
            "    for j in range(12):\n"
            "        with open(f'{d}/fill{j}', 'wb') as f:\n"
            "            for _ in range(32):\n"
            "                f.write(chunk); f.flush(); written += 1\n"
            "print('WROTE', written, 'MiB')\n",
        )
        assert "WROTE" not in cell_text(info), cell_text(info)  # 768 MiB of files never fit
        assert kernel.cgroup is not None
        peak = kernel.cgroup.memory_peak()
        assert peak is not None and peak <= total, (peak, total)
        assert info["cell_status"] in ("died", "error"), obs_text
        if info["cell_status"] == "died":
            assert "memory limit of 192 MiB" in obs_text and info["kernel_restarted"], obs_text
        _, _, info = step(env, "import os; print(notepad.facts, sum(1 for _ in os.scandir('/tmp')))")
        assert "{'kept': 'yes'}" in cell_text(info), cell_text(info)
        assert_env_works(env)
    assert psutil.virtual_memory().available > 1 << 30


# -- namespaces and mounts ---------------------------------------------------------------------------


def test_nested_user_namespace_cannot_mount_a_big_tmpfs(env):
    """The issue's attack: ``unshare -Urm`` then a tmpfs of any size: 100 MB of files (each under the
    file-size limit) past the 32 MiB disk limit. The filter refuses every namespace flag."""
    _, _, info = step(
        env,
        "import subprocess\n"
        "r = subprocess.run(['unshare', '-Urm', 'sh', '-c', 'mount -t tmpfs -o size=4g none /tmp && "
        "for i in 1 2 3 4 5 6 7 8 9 10; do head -c 10000000 /dev/zero > /tmp/big$i || exit 1; done && "
        "echo MOUNTED_AND_WROTE'], capture_output=True, text=True)\n"
        "print('unshare rc', r.returncode, r.stdout.strip(), r.stderr.strip()[-120:])\n"
        + SYSCALL
        + f"print('unshare NEWUSER', call({nr('unshare')}, 0x10000000))\n"
        f"print('unshare NEWNS', call({nr('unshare')}, 0x20000))\n"
        f"print('unshare NEWNET', call({nr('unshare')}, 0x40000000))\n"
        f"print('clone NEWUSER', call({nr('clone')}, 0x10000000 | 17, 0, 0, 0, 0))\n"
        f"print('clone3', call({nr('clone3')}, None, 0))\n"
        f"print('setns', call({nr('setns')}, 0, 0))\n"
        f"print('mount', call({nr('mount')}, b'none', b'/tmp', b'tmpfs', 0, None))\n",
    )
    text = cell_text(info)
    assert "MOUNTED_AND_WROTE" not in text, text
    assert "unshare rc 1" in text and "Operation not permitted" in text, text
    for line in (
        "unshare NEWUSER EPERM",
        "unshare NEWNS EPERM",
        "unshare NEWNET EPERM",
        "clone NEWUSER EPERM",
    ):
        assert line in text, text
    assert "clone3 ENOSYS" in text, text  # glibc falls back to clone(), whose flags the filter reads
    assert "setns EPERM" in text and "mount EPERM" in text, text
    assert info["cell_status"] == "ok" and not info["kernel_restarted"]
    assert_env_works(env)


# -- the keyring ---------------------------------------------------------------------------------------


def test_the_keyring_cannot_carry_data_between_episodes(env):
    """Keys outlive the sandbox and are shared by uid (uids are reused): a key stored in one episode
    was read in the next. add_key/keyctl/request_key are refused."""
    key_spec_user_keyring = -4
    _, _, info = step(
        env,
        SYSCALL + f"print('add_key', call({nr('add_key')}, b'user', b'l0-carry', b'episode-1-secret', 16, "
        f"{key_spec_user_keyring}))\n"
        f"print('keyctl', call({nr('keyctl')}, 0, {key_spec_user_keyring}, 0))\n",  # KEYCTL_GET_KEYRING_ID
    )
    assert "add_key EPERM" in cell_text(info) and "keyctl EPERM" in cell_text(info), cell_text(info)
    env.reset(seed=0)  # the next episode: a new sandbox, maybe the same uid
    _, _, info = step(
        env,
        SYSCALL + f"print('request_key', call({nr('request_key')}, b'user', b'l0-carry', None, 0))\n"
        "print('proc keys', open('/proc/keys').read().count('l0-carry') if os.path.exists('/proc/keys') else 0)\n",
    )
    text = cell_text(info)
    assert "request_key EPERM" in text and "proc keys 0" in text, text
    assert "episode-1-secret" not in text
    assert_env_works(env)


# -- the rest of the policy ----------------------------------------------------------------------------


def test_tracing_bpf_io_uring_vsock_and_tty_injection_are_refused(env):
    refused = {
        "ptrace_traceme": f"call({nr('ptrace')}, 0, 0, 0, 0)",
        "process_vm_readv": f"call({nr('process_vm_readv')}, os.getpid(), 0, 0, 0, 0, 0)",
        "bpf": f"call({nr('bpf')}, 0, 0, 0)",
        "perf_event_open": f"call({nr('perf_event_open')}, 0, 0, -1, -1, 0)",
        "userfaultfd": f"call({nr('userfaultfd')}, 0)",
        "io_uring_setup": f"call({nr('io_uring_setup')}, 1, 0)",
        "init_module": f"call({nr('init_module')}, 0, 0, b'')",
        "kexec_load": f"call({nr('kexec_load')}, 0, 0, 0, 0)",
        "tiocsti": f"call({nr('ioctl')}, 0, 0x5412, ctypes.byref(ctypes.c_char(b'x')))",
    }
    code = SYSCALL + "".join(f"print('{name}', {expr})\n" for name, expr in refused.items())
    code += (
        "import socket\n"
        "try:\n    socket.socket(40, socket.SOCK_STREAM); print('vsock OPENED')\n"
        "except OSError as e:\n    print('vsock', errno.errorcode[e.errno])\n"
    )
    _, _, info = step(env, code)
    text = cell_text(info)
    for name in refused:
        assert f"{name} EPERM" in text, (name, text)
    assert "vsock EAFNOSUPPORT" in text, text
    assert info["cell_status"] == "ok" and not info["kernel_restarted"]
    assert_env_works(env)


def test_everyday_code_still_works_under_the_filter(env):
    """Threads (glibc's clone3 falls back to clone), subprocesses, fork, numpy, pyarrow, sqlite,
    ctypes callbacks (libffi closures), the tools and the notepad: all as without the filter."""
    _, _, info = step(
        env,
        "import threading, subprocess, os, sqlite3, ctypes, json\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "import numpy as np, pyarrow as pa\n"
        "out = []\n"
        "t = threading.Thread(target=lambda: out.append('thread')); t.start(); t.join()\n"
        "with ThreadPoolExecutor(4) as pool:\n    squares = list(pool.map(lambda x: x * x, range(8)))\n"
        "print('threads', out, sum(squares))\n"
        "print('true', subprocess.run(['/bin/true']).returncode, subprocess.run(['sh', '-c', 'echo sh']).returncode)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n    os._exit(7)\n"
        "print('fork', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
        "a = np.random.default_rng(0).normal(size=(300, 300)); print('numpy', round(float((a @ a.T).trace()) > 0))\n"
        "table = pa.table({'x': [1, 2, 3], 'y': ['a', 'b', 'c']}); print('arrow', table.num_rows, table.column('x').to_pylist())\n"
        "db = sqlite3.connect(':memory:'); db.execute('create table t(x)'); db.execute('insert into t values (5)')\n"
        "print('sqlite', db.execute('select sum(x) from t').fetchone()[0])\n"
        "CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))\n"
        "arr = (ctypes.c_int * 4)(3, 1, 4, 2)\n"
        "ctypes.CDLL(None).qsort(arr, 4, ctypes.sizeof(ctypes.c_int), CMP(lambda a, b: a[0] - b[0]))\n"
        "print('callback', list(arr))\n"
        "notepad.add_fact('filter', 'fine'); print('notepad', notepad.facts)\n",
    )
    text = cell_text(info)
    assert info["cell_status"] == "ok", text
    for expected in (
        "threads ['thread'] 140",
        "true 0 0",
        "fork 7",
        "numpy 1",
        "arrow 3 [1, 2, 3]",
        "sqlite 5",
        "callback [1, 2, 3, 4]",
        "notepad {'filter': 'fine'}",
    ):
        assert expected in text, (expected, text)
    assert_env_works(env)


# -- the sandbox cgroup ----------------------------------------------------------------------------------


@NEEDS_CGROUPS
def test_every_sandbox_process_is_in_its_cgroup_and_gone_with_it(secret_env):
    """A daemon that left the process group (setsid, double fork) is still in the sandbox's cgroup;
    close() kills what is in it and removes the cgroup."""
    env = make_env()
    try:
        env.reset(seed=0)
        kernel = kernel_of(env)
        cgroup, uid = kernel.cgroup, kernel._uid_lease.uid
        assert cgroup is not None
        dirs = list(cgroup.dirs.values())
        limit = Path(cgroup.dirs["pids"], "pids.max").read_text().strip()
        assert limit == str(LIMITS.max_processes + 2)  # the kernel's processes + bubblewrap's two
        _, _, info = step(
            env,
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n        time.sleep(1000)\n"
            "    os._exit(0)\n"
            "time.sleep(0.3)\nprint('daemon started')\n",
        )
        assert "daemon started" in cell_text(info)
        assert wait_until(lambda: {p.pid for p in uid_processes(uid)} <= set(cgroup.pids()))
        pids = cgroup.pids()
        assert len(pids) >= 4  # bwrap outside, bwrap inside, the kernel, the daemon
    finally:
        env.close()
    assert not any(os.path.exists(d) for d in dirs), dirs
    assert wait_until(lambda: not any(psutil.pid_exists(p) and _alive(p) for p in pids)), pids


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_cgroup_false_runs_without_one(secret_env):
    for env in fresh_env(limits=SandboxLimits(cgroup=False)):
        assert kernel_of(env).cgroup is None
        assert kernel_of(env).seccomp  # the filter does not depend on cgroups
        assert_env_works(env)


# -- what is active ---------------------------------------------------------------------------------------


def test_the_report_says_what_is_active_here():
    report = {p.name: p for p in sandbox_report()}
    assert report["bubblewrap"].active and report["seccomp filter"].active, format_report(
        list(report.values())
    )
    for call in ("unshare(CLONE_NEWUSER) EPERM", "memfd_create EPERM", "add_key EPERM", "clone3 ENOSYS"):
        assert call in report["seccomp filter"].detail, report["seccomp filter"].detail
    cgroup_line = report["memory+pids cgroup"]
    assert cgroup_line.active == cgroups.detect().available, cgroup_line
    if cgroup_line.active:
        assert "the probe charged" in cgroup_line.detail and "charged 0.0 MiB" not in cgroup_line.detail
    lines = format_report(list(report.values())).splitlines()
    assert len(lines) == len(report) and all(("active" in ln) or ("INACTIVE" in ln) for ln in lines)


def test_policy_covers_every_attack_route_by_rule():
    """The policy as data: a rule for each call the attacks above used, with the right errno."""
    rules = seccomp.rules()
    names = {r.syscall for r in rules}
    for name in (
        "memfd_create",
        "shmget",
        "add_key",
        "keyctl",
        "request_key",
        "mount",
        "setns",
        "ptrace",
        "bpf",
    ):
        assert name in names, name
    assert {r.errno_value for r in rules if r.syscall == "clone3"} == {errno.ENOSYS}
    user_ns = [
        r
        for r in rules
        if r.syscall in ("unshare", "clone") and r.conditions == ((0, 0x10000000, 0x10000000),)
    ]
    assert len(user_ns) == 2
    program = seccomp.filter_program()
    assert program and len(program) % 8 == 0
