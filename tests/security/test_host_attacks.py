"""Attacks on the host from inside the sandbox: /proc and /sys, symlinks, other episodes, the host's
files and secrets, processes that try to outlive the episode, signals and ptrace.

Each test asserts that the attack failed AND that the env still works afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import psutil

from l0_env.tools.search import Hit

from .conftest import (
    PROJECT,
    SECRET_VALUE,
    TinySearch,
    assert_env_works,
    cell_text,
    fresh_env,
    kernel_of,
    make_env,
    step,
    uid_processes,
    wait_until,
)

# -- /proc and /sys -------------------------------------------------------------------------------


def test_proc_shows_only_the_sandbox(env):
    host_pid = os.getpid()
    _, _, info = step(
        env,
        "import os\n"
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "cmds = {}\n"
        "for p in pids:\n"
        "    try:\n        cmds[p] = open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\\0', b' ').decode()[:60]\n"
        "    except OSError:\n        cmds[p] = '?'\n"
        "print('PIDS', len(pids), max(pids))\n"
        "print('CMDS', sorted(set(c.split(' ')[0].rsplit('/', 1)[-1] for c in cmds.values())))\n"
        f"print('host pid visible', os.path.exists('/proc/{host_pid}/cmdline') and 'pytest' in open('/proc/{host_pid}/cmdline').read())\n"
        "print('pid1', cmds.get(1, '?').split(' ')[0])\n",
    )
    text = cell_text(info)
    n, highest = (int(x) for x in text.split("PIDS ")[1].split()[:2])
    assert n <= 4 and highest < 100, text  # bwrap (pid 1), the kernel, maybe a helper; no host pids
    assert "pytest" not in text and "host pid visible False" in text, text
    assert "pid1 bwrap" in text, text
    assert_env_works(env)


def test_proc_and_sys_cannot_be_written(env):
    targets = [
        "/proc/sysrq-trigger",
        "/proc/sys/kernel/hostname",
        "/proc/sys/vm/drop_caches",
        "/proc/sys/kernel/core_pattern",
        "/proc/1/oom_score_adj",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/fs/cgroup/cgroup.procs",
    ]
    _, _, info = step(
        env,
        "import os\n"
        f"for p in {targets!r}:\n"
        "    try:\n        open(p, 'w').write('1\\n'); print('WROTE', p)\n"
        "    except OSError as e:\n        print('denied', p, type(e).__name__)\n"
        "print('sys', sorted(os.listdir('/sys')) if os.path.isdir('/sys') else 'absent')\n"
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "r = libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)\n"
        "print('mount', r, ctypes.get_errno())\n",
    )
    text = cell_text(info)
    assert "WROTE" not in text, text
    assert text.count("denied") == len(targets), text
    assert "sys absent" in text or "sys []" in text, text  # /sys is not mounted at all
    assert "mount -1 1" in text, text  # EPERM
    assert_env_works(env)


def test_proc_root_links_do_not_escape(env):
    _, _, info = step(
        env,
        "import os\n"
        "print('self root', sorted(os.listdir('/proc/self/root')) == sorted(os.listdir('/')))\n"
        f"p = '/proc/self/root' + {PROJECT!r}\n"
        "print('project', sorted(os.listdir(p)) if os.path.isdir(p) else None)\n"
        "for p in ('/proc/1/root', '/proc/1/cwd', '/proc/1/environ', '/proc/1/mem', '/proc/1/fd', "
        "'/proc/1/map_files'):\n"
        "    try:\n"
        "        got = os.listdir(p) if os.path.isdir(p) else open(p, 'rb').read(64)\n"
        "        print('OPENED', p, got if not isinstance(got, list) else sorted(got)[:5])\n"
        "    except OSError as e:\n        print('denied', p, type(e).__name__)\n",
    )
    text = cell_text(info)
    assert "self root True" in text, text
    # only the venv inside the checkout (the Python install), never the project's files
    assert "project ['.venv']" in text or "project None" in text, text
    assert "OPENED" not in text, text  # pid 1 is bwrap, run by root: nothing of it is readable
    assert_env_works(env)


# -- files ------------------------------------------------------------------------------------------


def test_symlinks_from_home_reach_nothing_of_the_host(env):
    kernel = kernel_of(env)
    links = {
        "readme": os.path.join(PROJECT, "README.md"),
        "bashrc": "/root/.bashrc",
        "shadow": "/etc/shadow",
        "hostroot": "/proc/1/root" + PROJECT,
        "conn": os.path.join(kernel.runtime_dir, "kernel.json"),
        "selfroot": "/proc/self/root" + os.path.join(PROJECT, "l0_env"),
    }
    _, _, info = step(
        env,
        "import os\n"
        f"for name, target in {links!r}.items():\n"
        "    os.symlink(target, name)\n"
        "    try:\n"
        "        print('READ', name, os.listdir(name) if os.path.isdir(name) else open(name).read(40))\n"
        "    except OSError as e:\n        print('denied', name, type(e).__name__)\n"
        f"try:\n    os.symlink('/root', {kernel.runtime_dir + '/evil'!r}); print('PLANTED')\n"
        "except OSError as e:\n    print('denied plant', type(e).__name__)\n",
    )
    text = cell_text(info)
    assert "READ" not in text and "PLANTED" not in text, text
    assert text.count("denied") == len(links) + 1, text
    assert not os.path.lexists(os.path.join(kernel.runtime_dir, "evil"))
    assert_env_works(env)
    env.reset(seed=0)  # the host tears the sandbox down; the links' targets are untouched
    assert os.path.exists(os.path.join(PROJECT, "README.md"))


def test_host_home_and_project_are_not_mounted(env):
    _, _, info = step(
        env,
        "import os, importlib.util\n"
        f"print('project', sorted(os.listdir({PROJECT!r})) if os.path.isdir({PROJECT!r}) else None)\n"
        "print('home', sorted(os.listdir('/home')))\n"
        "print('root', sorted(os.listdir('/root')) if os.path.isdir('/root') else None)\n"
        "print('l0_env importable', importlib.util.find_spec('l0_env') is not None and "
        "os.path.exists(importlib.util.find_spec('l0_env').origin or ''))\n"
        "for p in ('/work/shared', '/root/.cache', '/root/.ssh', '/var/log', '/etc/hostname', '/etc/hosts'):\n"
        "    print('exists' if os.path.exists(p) else 'missing', p)\n",
    )
    text = cell_text(info)
    assert "project ['.venv']" in text or "project None" in text, text
    assert "home ['agent']" in text, text
    assert "root ['.pyenv']" in text or "root None" in text, text  # only the Python installation's path
    assert "l0_env importable False" in text, text
    assert "exists" not in text.replace("exists'", ""), text
    assert_env_works(env)


def test_another_episode_is_invisible(env, secret_env):
    """Two envs at once: neither sees nor touches the other's home, /tmp, runtime dir or processes."""
    other = make_env()
    try:
        other.reset(seed=0)
        step(
            other, "open('/home/agent/mine.txt', 'w').write('OTHER'); open('/tmp/t.txt', 'w').write('OTHER')"
        )
        theirs = kernel_of(other)
        their_host_pids = [p.pid for p in uid_processes(theirs._uid_lease.uid)]
        _, _, info = step(
            env,
            "import os, socket, glob\n"
            "print('home', sorted(os.listdir('/home/agent')), 'tmp', sorted(os.listdir('/tmp')))\n"
            f"for p in ({theirs.runtime_dir!r}, {theirs.runtime_dir + '/kernel.json'!r}):\n"
            "    print('exists' if os.path.exists(p) else 'missing', p)\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            f"try:\n    s.connect({theirs.bridge.path!r}); print('CONNECTED')\n"
            "except OSError as e:\n    print('refused', type(e).__name__)\n"
            f"print('their pids seen', [p for p in {their_host_pids!r} if os.path.exists(f'/proc/{{p}}/cmdline') "
            "and 'OTHER' in str(open(f'/proc/{p}/environ', 'rb').read(0))])\n"
            "print('OTHER' in ''.join(open(f, errors='replace').read() for f in glob.glob('/tmp/**', recursive=True) "
            "if os.path.isfile(f)))\n",
        )
        text = cell_text(info)
        assert "'mine.txt'" not in text and "'t.txt'" not in text, text
        assert "exists" not in text and "CONNECTED" not in text, text
        assert "refused" in text and "their pids seen []" in text and "\nFalse" in text, text
        _, _, info = step(other, "print(open('/home/agent/mine.txt').read(), open('/tmp/t.txt').read())")
        assert "OTHER OTHER" in cell_text(info)
        assert_env_works(other)
    finally:
        other.close()
    assert_env_works(env)


# -- secrets ------------------------------------------------------------------------------------------


class KeyedSearch(TinySearch):
    """A backend holding an API key, as a web search backend would."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.headers = {"Authorization": f"Bearer {api_key}"}

    def search(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        return super().search(queries, k)


def test_search_backend_api_key_never_enters_the_kernel(secret_env):
    """The key is nowhere the kernel can look: its memory, /proc, the runtime dir, tool replies."""
    key = "sk-l0-" + SECRET_VALUE
    for env in fresh_env(search=KeyedSearch(key)):
        _, _, info = step(
            env,
            "import os, re, glob\n"
            f"needle = {key.encode()[::-1]!r}[::-1]\n"  # the literal itself would be found in memory
            "hits = []\n"
            "for p in glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):\n"
            "    try:\n        hits += [p] if needle in open(p, 'rb').read() else []\n"
            "    except OSError:\n        pass\n"
            "for line in open('/proc/self/maps'):\n"
            "    addr, perms = line.split()[:2]\n"
            "    if not perms.startswith('r') or '[v' in line:\n        continue\n"
            "    start, end = (int(x, 16) for x in addr.split('-'))\n"
            "    try:\n"
            "        with open('/proc/self/mem', 'rb') as mem:\n"
            "            mem.seek(start); data = mem.read(end - start)\n"
            "    except (OSError, OverflowError, ValueError):\n        continue\n"
            "    if data.count(needle) > 1:\n        hits.append(line.strip())\n"  # the needle object itself
            "res = web_search('Ada', k=2); page = open_page('p1')\n"
            "print('LEAKS', hits, needle in repr(res).encode() + page.encode())\n",
        )
        text = cell_text(info)
        assert "LEAKS [] False" in text, text
        assert key not in text
        assert_env_works(env)


class FailingKeyedSearch(KeyedSearch):
    def search(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        # e.g. httpx.HTTPStatusError's message carries the request URL, where some APIs put the key
        raise RuntimeError(
            f"Client error '403 Forbidden' for url 'https://api.example/search?key={self.api_key}'"
        )


def test_backend_error_messages_do_not_leak_the_key(secret_env):
    key = "sk-l0-" + SECRET_VALUE
    for env in fresh_env(search=FailingKeyedSearch(key)):
        _, _, info = step(
            env, "try:\n    web_search('x')\nexcept Exception as e:\n    print(type(e).__name__, e)"
        )
        assert "ToolError" in cell_text(info)
        assert key not in cell_text(info)


# -- processes ---------------------------------------------------------------------------------------


def test_daemons_do_not_survive_reset(env):
    """setsid + double fork + SIGTERM/SIGHUP ignored + a detached exec: all gone at the next reset."""
    kernel = kernel_of(env)
    uid, runtime_dir = kernel._uid_lease.uid, kernel.runtime_dir
    _, _, info = step(
        env,
        "import os, signal, subprocess, time\n"
        "subprocess.Popen(['sleep', '4321'], start_new_session=True, stdin=subprocess.DEVNULL,\n"
        "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "        os.execv('/bin/sleep', ['sleep', '4322'])\n"
        "    os._exit(0)\n"
        "time.sleep(0.5)\nprint('spawned')\n",
    )
    assert "spawned" in cell_text(info)

    def daemons() -> list[psutil.Process]:
        return [p for p in uid_processes(uid) if p.info.get("uids") and _is_marked_sleep(p)]

    assert wait_until(lambda: len(daemons()) == 2), [p.cmdline() for p in uid_processes(uid)]
    pids = [p.pid for p in daemons()]
    env.reset(seed=0)
    assert wait_until(lambda: not any(psutil.pid_exists(p) and _alive(p) for p in pids)), pids
    assert not os.path.exists(runtime_dir)
    assert_env_works(env)


def _is_marked_sleep(proc: psutil.Process) -> bool:
    try:
        return proc.cmdline()[:1] == ["sleep"] and proc.cmdline()[1:] in (["4321"], ["4322"])
    except psutil.Error:
        return False


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_kill_parent_and_kill_everything(env):
    """``kill -9`` of the parent and of pid 1 is refused; ``kill(-1, 9)`` and ``kill(0, 9)`` only
    reach the sandbox."""
    canary = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        step(env, "notepad.add_fact('kept', 'yes')")
        # The parent is a process of the sandbox's PID namespace (getppid() is 0 for one outside):
        # bubblewrap's pid 1 for a spawned kernel, the zygote's reaper for a forked one.
        _, _, info = step(
            env,
            "import os\nfor name, pid in (('parent', os.getppid()), ('init', 1)):\n"
            "    try:\n        os.kill(pid, 9); print('KILLED', name)\n"
            "    except OSError as e:\n        print(name, pid, type(e).__name__)\n",
        )
        text = cell_text(info)
        assert re.search(r"^parent [1-9]\d* PermissionError$", text, re.M), text
        assert "init 1 PermissionError" in text, text
        # kill(-1) signals every process the caller may signal but itself and pid 1: here, only
        # the sandbox's own child.
        _, _, info = step(
            env,
            "import os, subprocess\np = subprocess.Popen(['sleep', '100'])\nos.kill(-1, 9)\nprint('child', p.wait())",
        )
        if kernel_of(env).start_mode == "zygote":
            # A forked kernel's sandbox holder runs as the kernel's uid, so kill(-1) ends it and with
            # it the sandbox: the kernel is restarted (contained: the canary below lives).
            assert "child -9" in cell_text(info) or info["kernel_restarted"], cell_text(info)
        else:
            assert "child -9" in cell_text(info), cell_text(info)
        obs_text, _, info = step(env, "import os; os.kill(0, 9)")  # the process group: the kernel itself
        assert info["cell_status"] == "died" and info["kernel_restarted"], obs_text
        assert canary.poll() is None, "kill(-1) inside the sandbox reached a host process"
        assert psutil.Process().is_running()
        _, _, info = step(env, "print(notepad.facts)")
        assert "'kept': 'yes'" in cell_text(info)
    finally:
        canary.kill()
        canary.wait()
    assert_env_works(env)


def test_ptrace_and_process_memory_of_others_are_refused(env):
    _, _, info = step(
        env,
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]\n"
        "PTRACE_ATTACH, PTRACE_SEIZE = 16, 0x4206\n"
        "for req in (PTRACE_ATTACH, PTRACE_SEIZE):\n"
        "    r = libc.ptrace(req, 1, None, None); print('ptrace', req, r, ctypes.get_errno())\n"
        "class iovec(ctypes.Structure):\n"
        "    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]\n"
        "buf = ctypes.create_string_buffer(64)\n"
        "local = iovec(ctypes.cast(buf, ctypes.c_void_p), 64); remote = iovec(0x400000, 64)\n"
        "r = libc.process_vm_readv(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)\n"
        "print('vm_readv', r, ctypes.get_errno())\n",
    )
    text = cell_text(info)
    assert "ptrace 16 -1 1" in text and "ptrace 16902 -1 1" in text, text  # EPERM
    assert "vm_readv -1 1" in text, text
    assert_env_works(env)


def test_processes_with_different_runtime_dirs_never_share_a_sandbox_uid(monkeypatch, tmp_path):
    """Uid leases are machine-wide: a shared uid would share RLIMIT_NPROC (one episode's fork bomb
    would stop another process's kernels from starting)."""
    from l0_env.kernel.sandbox import UidLease

    leases = []
    try:
        for name in ("a", "b"):
            monkeypatch.setenv("L0_RUNTIME_DIR", str(tmp_path / name))
            leases.append(UidLease())
        assert leases[0].uid != leases[1].uid
    finally:
        for lease in leases:
            lease.release()
