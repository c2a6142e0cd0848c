"""Attacks on the sandbox, one property per test, through the real env and real bubblewrap.

Each test asserts that the attack failed AND that the env still works afterwards. Outgoing
network attempts only target 127.0.0.1 (a host listener that must see nothing) and DNS lookups.
"""

from __future__ import annotations

import os
import socket
import time

import psutil
import pytest

from .conftest import (
    LIMITS,
    PROJECT,
    SECRET_NAME,
    SECRET_VALUE,
    SHORT_CELL_TIMEOUT,
    assert_env_works,
    cell_text,
    fresh_env,
    kernel_of,
    make_env,
    processes_mentioning,
    step,
    uid_processes,
    wait_until,
)

# -- network ------------------------------------------------------------------------------------


def test_tcp_connect_to_host_loopback_fails(env):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        _, _, info = step(
            env,
            "import socket\n"
            "s = socket.socket(); s.settimeout(2)\n"
            f"try:\n    s.connect(('127.0.0.1', {port})); print('CONNECTED')\n"
            "except OSError as e:\n    print('refused', type(e).__name__)\n",
        )
        assert "CONNECTED" not in cell_text(info)
        assert "refused" in cell_text(info)
        with pytest.raises(TimeoutError):
            listener.accept()  # the sandbox's loopback is its own: the host never hears of it
    finally:
        listener.close()
    assert_env_works(env)


def test_udp_to_host_loopback_never_arrives(env):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.5)
    port = receiver.getsockname()[1]
    try:
        step(
            env,
            "import socket\n"
            "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"try:\n    u.sendto(b'leak', ('127.0.0.1', {port}))\nexcept OSError as e:\n    print(e)\n",
        )
        with pytest.raises(TimeoutError):
            receiver.recvfrom(100)
    finally:
        receiver.close()
    assert_env_works(env)


def test_dns_lookup_and_interfaces(env):
    _, _, info = step(
        env,
        "import socket\n"
        "for name in ('example.com', 'localhost.localdomain.invalid', 'pypi.org'):\n"
        "    try:\n        print('RESOLVED', name, socket.getaddrinfo(name, 443)[0][4])\n"
        "    except OSError as e:\n        print('no dns', name, type(e).__name__)\n"
        "print('ifaces', sorted(n for _, n in socket.if_nameindex()))\n",
    )
    text = cell_text(info)
    assert "RESOLVED" not in text, text
    assert text.count("no dns") == 3
    assert "ifaces ['lo']" in text, "the sandbox must have no network interface but its own loopback"
    assert_env_works(env)


# -- filesystem -----------------------------------------------------------------------------------


def test_writes_outside_the_work_dir_fail(env):
    kernel = kernel_of(env)
    venv = os.path.realpath(os.path.join(os.path.dirname(os.__file__), "..", ".."))
    targets = [
        "/usr/l0_probe",
        "/etc/l0_probe",
        "/etc/ld.so.cache",
        "/l0_probe",
        os.path.join(os.path.dirname(os.path.dirname(os.__file__)), "l0_probe"),
        os.path.join(venv, "l0_probe"),
        os.path.join(PROJECT, ".venv", "l0_probe"),
        os.path.join(kernel.runtime_dir, "l0_probe"),
        os.path.join(kernel.runtime_dir, "kernel.json"),
        os.path.join(kernel.runtime_dir, "bridge.sock"),
    ]
    code = (
        "import os\n"
        f"for p in {targets!r}:\n"
        "    try:\n        open(p, 'a').write('x'); print('WROTE', p)\n"
        "    except OSError as e:\n        print('denied', p, e.errno)\n"
        f"for p in [{kernel.runtime_dir + '/bridge.sock'!r}, {kernel.runtime_dir + '/kernel.json'!r}]:\n"
        "    try:\n        os.unlink(p); print('WROTE', p)\n"
        "    except OSError as e:\n        print('denied', p, e.errno)\n"
        "open('/home/agent/mine.txt', 'w').write('ok'); print('home ok')\n"
    )
    _, _, info = step(env, code)
    text = cell_text(info)
    assert "WROTE" not in text, text
    assert text.count("denied") == len(targets) + 2
    assert "home ok" in text
    for path in targets:
        if path.endswith("l0_probe"):
            assert not os.path.exists(path), f"the sandbox created {path} on the host"
    assert os.stat(os.path.join(kernel.runtime_dir, "kernel.json")).st_uid == 0
    assert_env_works(env)


def test_host_secrets_and_files_are_invisible(env):
    assert os.environ[SECRET_NAME] == SECRET_VALUE  # the host has it...
    _, _, info = step(
        env,
        "import os, glob\n"
        f"print('env', {SECRET_NAME!r} in os.environ, any({SECRET_VALUE!r} in v for v in os.environ.values()))\n"
        "leaks = []\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n"
        f"        if {SECRET_VALUE!r}.encode() in open(path, 'rb').read(): leaks.append(path)\n"
        "    except OSError:\n        pass\n"
        "print('proc leaks', leaks)\n"
        f"for p in [{PROJECT + '/l0_env'!r}, {PROJECT + '/pyproject.toml'!r}, '/root/.bashrc', '/root/.gitconfig', "
        "'/etc/passwd', '/etc/shadow', '/home/agent/../..']:\n"
        "    try:\n"
        "        print('READ', p, os.listdir(p) if os.path.isdir(p) else open(p).read(20))\n"
        "    except OSError as e:\n        print('hidden', p, type(e).__name__)\n"
        "print('root has', sorted(os.listdir('/root')) if os.path.isdir('/root') else None)\n",
    )
    text = cell_text(info)
    assert "env False False" in text  # ...the kernel does not
    assert "proc leaks []" in text
    assert SECRET_VALUE not in text
    assert f"READ {PROJECT}/l0_env" not in text, "the project source must not be mounted in the sandbox"
    assert f"READ {PROJECT}/pyproject.toml" not in text
    assert "READ /root/" not in text
    assert "READ /etc/passwd" not in text and "READ /etc/shadow" not in text
    assert "'.bashrc'" not in text
    assert_env_works(env)


def test_disk_fill_is_bounded(env):
    kernel = kernel_of(env)
    host_before = sum(e.stat().st_size for e in os.scandir(kernel.runtime_dir) if e.is_file())
    _, _, info = step(
        env,
        "import os, errno\n"
        "chunk = b'x' * (1 << 20)\n"
        "for d in ('/home/agent', '/tmp'):\n"
        "    total, codes = 0, set()\n"
        "    for i in range(100):\n"
        "        try:\n"
        "            with open(f'{d}/fill{i}', 'wb') as f:\n"
        "                while True:\n                    f.write(chunk); f.flush(); total += len(chunk)\n"
        "        except OSError as e:\n"
        "            codes.add(errno.errorcode[e.errno])\n"
        "            if e.errno == errno.ENOSPC:\n                break\n"
        "    sizes = [os.path.getsize(f'{d}/{n}') for n in os.listdir(d) if n.startswith('fill')]\n"
        "    print(d, 'max_file', max(sizes), 'total', sum(sizes), sorted(codes))\n"
        "    for n in os.listdir(d):\n        os.unlink(f'{d}/{n}')\n",
    )
    text = cell_text(info)
    for d in ("/home/agent", "/tmp"):
        line = next((ln for ln in text.splitlines() if ln.startswith(d + " ")), text)
        parts = line.split()
        max_file, total = int(parts[2]), int(parts[4])
        assert max_file <= LIMITS.max_file_bytes, line
        assert total <= LIMITS.disk_bytes, line
        assert "'EFBIG'" in line and "'ENOSPC'" in line, line
    host_after = sum(e.stat().st_size for e in os.scandir(kernel.runtime_dir) if e.is_file())
    assert host_after - host_before < 1 << 20, "the sandbox wrote to the host's disk"
    assert_env_works(env)


def test_stdout_fd_does_not_write_host_disk(env):
    kernel = kernel_of(env)
    step(
        env,
        "import os\nfor _ in range(8):\n    os.write(1, b'z' * (1 << 20)); os.write(2, b'z' * (1 << 20))\n",
    )
    written = sum(e.stat().st_size for e in os.scandir(kernel.runtime_dir) if e.is_file())
    assert written < 1 << 20, f"the kernel's raw fd 1/2 reached the host's disk ({written} bytes)"
    assert_env_works(env)


# -- resources ------------------------------------------------------------------------------------


def test_fork_bomb_hits_the_process_limit(env):
    uid = kernel_of(env)._uid_lease.uid
    baseline = len(uid_processes(uid))
    _, _, info = step(
        env,
        "import os, signal, time\n"
        "pids, err = [], None\n"
        "for _ in range(1000):\n"
        "    try:\n        pid = os.fork()\n"
        "    except OSError as e:\n        err = e; break\n"
        "    if pid == 0:\n        time.sleep(60); os._exit(0)\n"
        "    pids.append(pid)\n"
        "print('forked', len(pids), 'then', type(err).__name__, getattr(err, 'errno', None))\n"
        "for p in pids:\n    os.kill(p, signal.SIGKILL)\n"
        "for p in pids:\n    os.waitpid(p, 0)\n",
    )
    text = cell_text(info)
    forked = int(text.split("forked ")[1].split()[0])
    assert "then BlockingIOError 11" in text, text  # EAGAIN from RLIMIT_NPROC
    assert forked < LIMITS.max_processes
    assert wait_until(lambda: len(uid_processes(uid)) <= baseline), "forked processes outlived the cell"
    assert_env_works(env)


def test_memory_bomb(env):
    _, _, info = step(
        env,
        "try:\n    x = bytearray(10 * 2**30)\n    print('ALLOCATED')\n"
        "except MemoryError:\n    print('MemoryError')\n"
        "chunks = []\n"  # untouched pages: RLIMIT_AS counts them, and the test stays fast
        "import mmap\n"
        "try:\n    while True:\n        chunks.append(mmap.mmap(-1, 64 << 20))\n"
        "except (MemoryError, OSError):\n    print('capped at', len(chunks) * 64, 'MiB')\n"
        "del chunks\n",
    )
    text = cell_text(info)
    assert "ALLOCATED" not in text
    if not info["kernel_restarted"]:
        assert "MemoryError" in text
        capped = int(text.split("capped at ")[1].split()[0])
        assert capped << 20 <= LIMITS.memory_bytes
    assert psutil.virtual_memory().available > 1 << 30
    assert_env_works(env)


def test_huge_output_is_bounded(env):
    started = time.monotonic()
    obs_text, _, info = step(env, "print('y' * 50_000_000)\nprint('unreached?')")
    assert time.monotonic() - started < 30
    assert len(obs_text) < 6_000, "the observation must stay within max_output_chars"
    assert "OutputLimit" in obs_text or ("characters" in obs_text and "cut" in obs_text)
    assert sum(len(o["text"]) for o in info["cell_outputs"]) < 100_000
    assert_env_works(env)


def test_c_level_infinite_loop_is_killed(secret_env):
    for env in fresh_env(cell_timeout=SHORT_CELL_TIMEOUT):  # a test of the timeout: a short one
        step(env, "notepad.add_fact('city', 'Paris')")
        started = time.monotonic()
        obs_text, _, info = step(env, "sum(range(10**12))")
        elapsed = time.monotonic() - started
        assert elapsed < SHORT_CELL_TIMEOUT + 3.0 + 30.0, elapsed  # timeout + interrupt grace + restart
        assert info["cell_status"] == "timeout"
        assert info["kernel_restarted"]
        assert "restarted" in obs_text
        _, _, info = step(env, "print(notepad.facts)")
        assert "'city': 'Paris'" in cell_text(info)
        assert_env_works(env)


@pytest.mark.parametrize(
    "code", ["import os; os.kill(os.getpid(), 9)", "import os; os._exit(1)", "import os; os.kill(1, 9)"]
)
def test_killing_the_kernel_from_inside(env, code):
    step(env, "notepad.add_fact('answer', '42')\nnotepad.add_todo('check')\nx_before = 1")
    obs_text, _, info = step(env, code)
    if code.endswith("os.kill(1, 9)"):
        # pid 1 is bubblewrap (root): the kernel's uid may not signal it.
        assert info["cell_status"] == "error" and "PermissionError" in cell_text(info)
    else:
        assert info["cell_status"] == "died"
        assert info["kernel_restarted"]
        assert "restarted" in obs_text
    _, _, info = step(env, "print(notepad.facts, [i['text'] for i in notepad.plan])")
    assert "{'answer': '42'} ['check']" in cell_text(info)
    assert_env_works(env)
    _, terminated, _ = step(env, "submit_final_answer('Ada Lovelace')")
    assert terminated


# -- processes and cleanup ------------------------------------------------------------------------


def test_spawned_processes_do_not_outlive_close(secret_env):
    env = make_env()
    try:
        env.reset(seed=0)
        kernel = kernel_of(env)
        uid, runtime_dir = kernel._uid_lease.uid, kernel.runtime_dir
        _, _, info = step(
            env,
            "import os, subprocess, time\n"
            "p = subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n        time.sleep(1000)\n"
            "    os._exit(0)\n"
            "time.sleep(0.3)\nprint('spawned', p.pid)\n",
        )
        assert "spawned" in cell_text(info)
        alive = uid_processes(uid)
        assert len(alive) >= 3, "the kernel, sleep and the daemon run as the sandbox uid"
        assert processes_mentioning(runtime_dir)
        assert_env_works(env)
    finally:
        env.close()
    assert wait_until(lambda: not uid_processes(uid)), [p.cmdline() for p in uid_processes(uid)]
    assert wait_until(lambda: not processes_mentioning(runtime_dir)), "bwrap/ipykernel outlived close()"
    assert not os.path.exists(runtime_dir), "close() must delete the runtime dir"


def test_close_after_restarts_leaves_nothing(secret_env):
    env = make_env()
    env.reset(seed=0)
    kernel = kernel_of(env)
    uid, runtime_dir = kernel._uid_lease.uid, kernel.runtime_dir
    step(env, "import os; os._exit(3)")
    step(env, "import subprocess; subprocess.Popen(['sleep', '1000'])")
    env.reset(seed=1)  # a new episode takes a new kernel; the old one must be gone
    new_kernel = kernel_of(env)
    assert wait_until(lambda: not processes_mentioning(runtime_dir))
    assert not os.path.exists(runtime_dir)
    env.close()
    assert wait_until(lambda: not uid_processes(uid))
    assert wait_until(lambda: not processes_mentioning(new_kernel.runtime_dir))
    assert not os.path.exists(new_kernel.runtime_dir)
