"""Attacks on the tool bridge (the one Unix socket the sandbox shares with the host), from inside.

The kernel talks to the bridge with raw bytes, bypassing the tool proxies' own checks: the host must
answer every request with an error reply (never die, never run anything but the tools), enforce
the budgets itself, and offer no way from the socket to anything else on the host.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time

import pytest

from l0_env.kernel.bridge import MAX_ARGS_DEPTH, MAX_REQUEST_BYTES

from .conftest import TinySearch, assert_env_works, bridge_client, cell_text, fresh_env, kernel_of, step


def replies(text: str) -> list[dict]:
    """The JSON replies a cell printed, one per line starting with ``REPLY ``."""
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("REPLY ")]


def test_unix_sockets_reachable_from_the_sandbox_are_only_its_own(env):
    """No host socket is visible by path; the host's abstract sockets are in another namespace."""
    kernel = kernel_of(env)
    host_dir = tempfile.mkdtemp(prefix="l0s-")
    path_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path_listener.bind(os.path.join(host_dir, "host.sock"))
    path_listener.listen(1)
    os.chmod(host_dir, 0o755)
    os.chmod(os.path.join(host_dir, "host.sock"), 0o777)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract_name = f"\0l0-attack-{os.getpid()}"
    abstract.bind(abstract_name)
    abstract.listen(1)
    abstract.settimeout(0.5)
    try:
        _, _, info = step(
            env,
            "import os, socket, stat\n"
            "found = []\n"
            "for top in ('/tmp', '/home', '/run', '/var', '/dev', '/etc', os.path.dirname(BRIDGE_DIR)):\n"
            "    for d, _, files in os.walk(top):\n"
            "        for f in files:\n"
            "            try:\n"
            "                if stat.S_ISSOCK(os.lstat(os.path.join(d, f)).st_mode): found.append(os.path.join(d, f))\n"
            "            except OSError:\n                pass\n"
            "print('SOCKETS', sorted(found))\n"
            "for target in (HOST_SOCK, ABSTRACT, '/run/systemd/private', '/var/run/docker.sock', '/tmp/.X11-unix/X0'):\n"
            "    s = socket.socket(socket.AF_UNIX)\n"
            "    try:\n        s.connect(target); print('CONNECTED', repr(target))\n"
            "    except OSError as e:\n        print('refused', type(e).__name__)\n"
            "    s.close()\n"
            "print('unix table', sum(1 for _ in open('/proc/net/unix')) - 1)\n".replace(
                "BRIDGE_DIR", repr(kernel.runtime_dir)
            )
            .replace("HOST_SOCK", repr(os.path.join(host_dir, "host.sock")))
            .replace("ABSTRACT", repr(abstract_name)),
        )
        text = cell_text(info)
        assert "CONNECTED" not in text, text
        assert text.count("refused") == 5, text
        # The runtime dir (bridge and kernel sockets) is 0711: usable by path, not listable.
        assert "SOCKETS []" in text, text
        with pytest.raises(TimeoutError):
            abstract.accept()
    finally:
        path_listener.close()
        abstract.close()
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(host_dir, "host.sock"))
        os.rmdir(host_dir)
    assert_env_works(env)


def test_bridge_offers_only_the_tools(env):
    """Unknown ops, dunder names and file paths through the tools get errors, not host access."""
    probes = [
        {"op": "open", "args": {"path": "/etc/passwd"}},
        {"op": "__class__", "args": {}},
        {"op": "_dispatch_tool", "args": {"op": "exec", "args": {}}},
        {"op": "exec", "args": {"code": "import os; os.system('id')"}},
        {"op": "../../bin/sh", "args": {}},
        {"op": "open_page", "args": {"doc_id": "/etc/passwd"}},
        {"op": "open_page", "args": {"doc_id": "../../README.md"}},
        {"op": "open_page", "args": {"doc_id": "file:///etc/hostname"}},
        {"op": "web_search", "args": {"query": "x", "k": 10**9}},
        {"op": "web_search", "args": {"query": "x", "k": -1}},
        {"op": "web_search", "args": {"query": "x" * 5000}},
    ]
    code = bridge_client(env) + (
        f"import json\nfor p in {probes!r}:\n"
        "    print('REPLY', raw(json.dumps(p).encode() + b'\\n').decode().strip())\n"
    )
    _, _, info = step(env, code)
    got = replies(cell_text(info))
    assert len(got) == len(probes), cell_text(info)
    for probe, reply in zip(probes, got, strict=True):
        assert reply["ok"] is False, (probe, reply)
    assert "root:" not in cell_text(info)
    assert env.unwrapped.tool_counts.get("web_search", 0) == 0  # refused before spending budget
    assert_env_works(env)


# Python expressions evaluated in the kernel (so the big ones are built there, not sent as code).
MALFORMED_REQUESTS = {
    "not-json": repr(b"{not json\n"),
    "invalid-utf8": repr(b"\xff\xfe\xfd\n"),
    "nul-bytes": repr(b'{"op": "web_search", "args": {"query": "a\x00b"}}\x00\n'),
    "op-not-str": repr(b'{"op": 7, "args": {}}\n'),
    "args-not-object": repr(b'{"op": "web_search", "args": [1, 2]}\n'),
    "wrong-arg-types": repr(b'{"op": "web_search", "args": {"query": ["a"], "k": "5"}}\n'),
    "float-page": repr(b'{"op": "open_page", "args": {"doc_id": "p1", "page": 1e308}}\n'),
    "answer-not-str": repr(b'{"op": "submit_final_answer", "args": {"answer": {"x": 1}}}\n'),
    "deep-json": "b'[' * 200_000 + b']' * 200_000 + b'\\n'",
    "deep-args": f"""b'{{"op": "web_search", "args": {{"query": "x", "deep": ' + b'[' * {MAX_ARGS_DEPTH + 5}"""
    f""" + b']' * {MAX_ARGS_DEPTH + 5} + b'}}}}\\n'""",
    "notepad-not-object": repr(b'{"op": "notepad", "args": {"state": "not a dict"}}\n'),
}


def test_malformed_bridge_requests_get_error_replies(env):
    code = bridge_client(env) + "".join(
        f"print('REPLY', raw({expression}).decode().strip())\n" for expression in MALFORMED_REQUESTS.values()
    )
    _, terminated, info = step(env, code)
    got = replies(cell_text(info))
    assert len(got) == len(MALFORMED_REQUESTS), cell_text(info)
    for name, reply in zip(MALFORMED_REQUESTS, got, strict=True):
        assert reply["ok"] is False and reply["error"]["type"] in ("ValueError", "TypeError"), (name, reply)
    assert not terminated and env.unwrapped.final_answer is None
    assert env.unwrapped.tool_counts == {}
    assert kernel_of(env).bridge._thread.is_alive(), "a request killed the bridge thread"
    assert_env_works(env)


def test_half_open_and_oversized_requests_do_not_stall_the_bridge(env):
    big = MAX_REQUEST_BYTES + 4096
    code = bridge_client(env) + (
        "import socket, threading\n"
        # connections that send a partial request and hang up, or nothing at all
        "for _ in range(20):\n"
        '    s = socket.socket(socket.AF_UNIX); s.connect(BRIDGE); s.sendall(b\'{"op": "web_\'); s.close()\n'
        f'reply = raw(b\'{{"op": "web_search", "args": {{"query": "\' + b\'a\' * {big} + b\'"}}}}\\n\')\n'
        "print('REPLY', reply.decode().strip())\n"
    )
    _, _, info = step(env, code)
    got = replies(cell_text(info))
    assert got and got[0]["ok"] is False and "larger than" in got[0]["error"]["message"], cell_text(info)
    started = time.monotonic()
    assert_env_works(env)
    assert time.monotonic() - started < 10, "half-open connections held the bridge up"


def test_budget_holds_against_raw_calls_and_threads(secret_env):
    """16 kernel threads race 80 raw and proxied calls at a budget of 5: exactly 5 are served."""
    for env in fresh_env(tool_budgets={"web_search": 5, "open_page": 40}):
        code = bridge_client(env) + (
            "import json, threading\n"
            "results = []\n"
            "def worker(i):\n"
            "    for j in range(5):\n"
            "        if (i + j) % 2:\n"
            "            r = json.loads(raw(json.dumps({'op': 'web_search', 'args': {'query': 'x'}}).encode() + b'\\n'))\n"
            "            results.append('ok' if r['ok'] else r['error']['type'])\n"
            "        else:\n"
            "            try:\n                web_search('x', k=1); results.append('ok')\n"
            "            except BudgetExhausted:\n                results.append('BudgetExhausted')\n"
            "threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]\n"
            "[t.start() for t in threads]; [t.join() for t in threads]\n"
            "print('served', results.count('ok'), 'refused', results.count('BudgetExhausted'), len(results))\n"
        )
        _, _, info = step(env, code)
        assert "served 5 refused 75 80" in cell_text(info), cell_text(info)
        assert env.unwrapped.tool_counts["web_search"] == 5
        _, _, info = step(env, "web_search('more')")
        assert info["cell_status"] == "error" and "BudgetExhausted" in cell_text(info)
        _, _, info = step(env, "print(open_page('p1')[:20])")
        assert info["cell_status"] == "ok" and "Ada Lovelace" in cell_text(info), cell_text(info)
        _, terminated, _ = step(env, "submit_final_answer('Ada Lovelace')")
        assert terminated


def test_calls_after_the_episode_ended_are_refused(env):
    """A kernel thread that keeps calling tools after the answer changes nothing on the host."""
    step(
        env,
        "import threading, time\n"
        "late = []\n"
        "def pester():\n"
        "    while True:\n"
        "        for call in (lambda: web_search('x'), lambda: submit_final_answer('Charles Babbage')):\n"
        "            try:\n                call(); late.append('ok')\n"
        "            except Exception as e:\n                late.append(type(e).__name__)\n"
        "        time.sleep(0.02)\n"
        "t = threading.Thread(target=pester, daemon=True)\n",
    )
    _, terminated, info = step(env, "submit_final_answer('Ada Lovelace'); t.start(); time.sleep(0.3)")
    assert terminated
    unwrapped = env.unwrapped
    counts, n_steps = dict(unwrapped.tool_counts), len(unwrapped.episode.steps)
    time.sleep(1.0)  # the thread keeps calling while the host looks
    assert unwrapped.final_answer == "Ada Lovelace", "a call after the end changed the answer"
    assert unwrapped.tool_counts == counts
    assert len(unwrapped.episode.steps) == n_steps
    assert unwrapped.episode.final_answer == "Ada Lovelace"
    env.reset(seed=0)  # the next episode: a new kernel, the pestering thread is gone
    _, _, info = step(env, "print('late' in dir())")
    assert "False" in cell_text(info)
    assert info["tool_calls"] == []
    assert_env_works(env)


def test_notepad_pushes_with_odd_shapes_do_not_break_step(env, tmp_path):
    """Raw notepad states of the wrong shape: ``step`` never raises, the record still saves."""
    states = [
        {"plan": "not a list", "facts": ["x"], "draft": {"a": 1}},
        {"plan": [1, None, {"text": ["deep"], "status": "bogus"}], "facts": {"k": [1, {"v": None}]}},
        {"draft": "d" * 20_000, "extra": {"unknown": True}},
    ]
    for state in states:
        code = bridge_client(env) + (
            "import json\n"
            f"print('REPLY', raw(json.dumps({{'op': 'notepad', 'args': {{'state': {state!r}}}}}).encode() + b'\\n').decode().strip())\n"
        )
        obs_text, _, info = step(env, code)
        assert replies(cell_text(info)), cell_text(info)
        json.dumps(info, default=str)
        assert "[Notepad]" in obs_text
    assert_env_works(env)
    env.unwrapped.save_notebook(str(tmp_path / "odd.ipynb"))
    assert (tmp_path / "odd.ipynb").stat().st_size > 0


class SlowSearch(TinySearch):
    """Answers after 50 ms, like a search server across a network: calls queue at the bridge."""

    def search(self, queries: list[str], k: int = 5):
        time.sleep(0.05)
        return super().search(queries, k)


def test_many_threads_calling_tools_at_once_all_get_through(secret_env):
    """The bridge answers one connection at a time; 48 threads calling a slow search at once used to
    overflow its accept backlog of 16, and a connect with a timeout fails at once on a full backlog
    (EAGAIN): honest calls came back as "the tool service is unreachable"."""
    for env in fresh_env(search=SlowSearch(), tool_budgets={"web_search": 48, "open_page": 40}):
        code = (
            "from concurrent.futures import ThreadPoolExecutor\n"
            "def one(i):\n"
            "    try:\n"
            "        return 'ok' if web_search(f'q{i}', k=1) else 'empty'\n"
            "    except Exception as exc:\n"
            "        return f'{type(exc).__name__}: {exc}'\n"
            "with ThreadPoolExecutor(48) as pool:\n"
            "    results = list(pool.map(one, range(48)))\n"
            "print('ok', results.count('ok'), sorted(set(r for r in results if r != 'ok'))[:3])\n"
        )
        _, _, info = step(env, code)
        assert "ok 48 []" in cell_text(info), cell_text(info)
        assert env.unwrapped.tool_counts["web_search"] == 48
