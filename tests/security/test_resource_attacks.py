"""Resource attacks the first suite does not cover, and hostile action text.

Each test asserts that the attack was contained AND that the env still works afterwards.
"""

from __future__ import annotations

import json
import time

import psutil
import pytest

from l0_env.checker import spawned_pids

from .conftest import CELL_TIMEOUT, assert_env_works, cell_text, kernel_of, make_env, step, wait_until

# -- resources ------------------------------------------------------------------------------------


def test_many_tiny_files_are_bounded_by_time_and_freed_with_the_episode(env):
    """Empty files cost no tmpfs blocks, only inodes (host kernel memory): what bounds them is the
    tmpfs inode count and the cell timeout, and they vanish with the sandbox at the next reset."""
    kernel = kernel_of(env)
    runtime_dir = kernel.runtime_dir
    _, _, info = step(
        env,
        "import os, time\n"
        "t, n, err = time.time(), 0, None\n"
        "try:\n"
        "    while time.time() - t < 2.0:\n"
        "        for _ in range(500):\n            os.mknod(f'/tmp/f{n}'); n += 1\n"
        "except OSError as e:\n    err = e\n"
        "st = os.statvfs('/tmp')\n"
        "print('made', n, 'inodes', st.f_files, 'free', st.f_ffree, 'err', err)\n",
    )
    text = cell_text(info)
    made, inodes = int(text.split("made ")[1].split()[0]), int(text.split("inodes ")[1].split()[0])
    assert 0 < made <= inodes < 50_000_000, text  # a finite inode table (tmpfs default: RAM pages / 2)
    started = time.monotonic()
    _, _, info = step(env, "import os; print('listed', len(os.listdir('/tmp')))")
    assert int(cell_text(info).split("listed ")[1].split()[0]) >= made, cell_text(info)
    assert time.monotonic() - started < CELL_TIMEOUT + 5
    assert psutil.virtual_memory().available > 1 << 30
    env.reset(seed=0)  # the tmpfs and every inode in it go with the old sandbox
    assert wait_until(lambda: not any(runtime_dir in " ".join(p.cmdline()) for p in _children()))
    _, _, info = step(env, "import os; print('fresh', len(os.listdir('/tmp')))")
    assert int(cell_text(info).split("fresh ")[1].split()[0]) < 10, cell_text(info)
    assert_env_works(env)


def _children() -> list[psutil.Process]:
    """Every live process this test started, forked kernels (outside its process tree) included."""
    alive = []
    for pid in spawned_pids():
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                proc.cmdline()
                alive.append(proc)
        except psutil.Error:
            pass
    return alive


def test_huge_single_line_without_newline_is_bounded(env):
    started = time.monotonic()
    obs_text, _, info = step(
        env,
        "import sys, os\nsys.stdout.write('z' * 20_000_000)\nos.write(1, b'w' * 5_000_000)\nsys.stderr.write('e' * 3_000_000)\n",
    )
    assert time.monotonic() - started < 30
    assert len(obs_text) < 6_000, len(obs_text)
    assert sum(len(o["text"]) for o in info["cell_outputs"]) < 100_000
    assert_env_works(env)


def test_binary_and_invalid_utf8_output_becomes_valid_text(env, tmp_path):
    obs_text, _, info = step(
        env,
        "import os, sys\n"
        "os.write(1, bytes(range(256)) * 2)\n"
        "sys.__stdout__.buffer.write(b'\\xff\\xfe\\x00\\x80\\xc3(\\xed\\xa0\\x80 invalid ' * 20); sys.__stdout__.flush()\n"
        "sys.__stderr__.buffer.write(b'\\x1b[31m\\x1b]0;title\\x07\\x9b2J' * 10); sys.__stderr__.flush()\n"
        "print('\\x1b[2J\\x1b[H\\x00\\x07 after')\n"
        "b'\\x00\\xff' * 10\n",
    )
    for text in [obs_text, *(o["text"] for o in info["cell_outputs"])]:
        text.encode("utf-8")  # strict: no lone surrogates reach the agent
        assert "\x1b" not in text and "\x00" not in text, repr(text[:200])
    assert "after" in obs_text and "invalid" in obs_text, obs_text[:500]
    json.dumps(info, ensure_ascii=False).encode("utf-8")
    assert_env_works(env)
    env.unwrapped.save_notebook(str(tmp_path / "binary.ipynb"))
    json.loads((tmp_path / "binary.ipynb").read_text(encoding="utf-8"))


def test_deep_recursion_is_a_recursion_error(env):
    _, _, info = step(env, "def f(n):\n    return f(n + 1)\nf(0)")
    assert info["cell_status"] == "error" and "RecursionError" in cell_text(info), cell_text(info)
    _, _, info = step(env, "x = []\nfor _ in range(200_000):\n    x = [x]\nx")  # repr of deep data
    assert info["cell_status"] == "error" and "RecursionError" in cell_text(info), cell_text(info)
    assert not info["kernel_restarted"]
    assert_env_works(env)


@pytest.mark.slow
def test_recursion_past_the_c_stack_is_a_contained_crash(env):
    """With the limit raised, recursion either overflows the C stack (the kernel dies) or, where
    Python keeps its frames on the heap (3.11+), runs until the timeout: killed and restarted."""
    step(env, "notepad.add_fact('kept', 'yes')")
    obs_text, _, info = step(
        env, "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)"
    )
    assert info["cell_status"] in ("died", "timeout", "error"), obs_text
    if info["cell_status"] != "error":
        assert info["kernel_restarted"] and "restarted" in obs_text
    _, _, info = step(env, "print(notepad.facts)")
    assert "'kept': 'yes'" in cell_text(info)
    assert_env_works(env)


# -- the action text itself -------------------------------------------------------------------------

HOSTILE_ACTIONS = {
    "nested-think": "<think><think>a</think>b</think><code>print('ran nested')</code>",
    "code-in-think": "<think>x<code>print('ran inner')</code>y</think><code>print('ran outer')</code>",
    "unclosed-both": "<think>no end <code>print('ran unclosed')",
    "closing-only": "</code></think></code>print('ran closing')",
    "tags-in-string": "<think>tags in a string literal</think><code>print('</code><think>')</code>",
    "many-tags": "<think>t</think>" + "<code>print(1)</code>" * 5_000,
    "nul-bytes": "<think>nul\x00here</think><code>print('a\x00b', len('\x00'))</code>",
    "bidi-and-controls": "<think>\u202e\u2066\ufeff\u200b</think><code>print('\u202edone\x1b[2J')</code>",
}


def test_hostile_action_text_never_raises(env):
    for name, action in HOSTILE_ACTIONS.items():
        obs, reward, terminated, _, info = env.step(action)
        assert isinstance(obs[-1]["content"], str) and obs[-1]["role"] == "user", name
        assert -1.0 <= reward <= 1.0 and not terminated, name
        obs[-1]["content"].encode("utf-8")
        json.dumps(info, ensure_ascii=False).encode("utf-8")
    assert_env_works(env)


def test_megabyte_actions_are_cut_and_fast(env):
    limit = env.unwrapped.max_action_chars
    for action in (
        "<think>" + "t" * 1_000_000 + "</think><code>print('never')</code>",
        "<think>big code</think><code>x = 1\n" + "# pad\n" * 200_000 + "print('end')</code>",
        "\U0001f600" * 1_000_000,
    ):
        started = time.monotonic()
        obs, _, terminated, _, _ = env.step(action)
        assert time.monotonic() - started < CELL_TIMEOUT + 10
        assert f"only the first {limit}" in obs[-1]["content"], obs[-1]["content"][:300]
        assert not terminated
        assert len(env.unwrapped.episode.steps[-1].action) <= limit
    assert_env_works(env)


def test_every_unicode_plane_round_trips_through_the_kernel(env):
    # One code point from each of the 17 planes (assigned, private-use or noncharacter), plus
    # surrogate-adjacent and BOM characters.
    chars = [chr(plane << 16 | 0x41) for plane in range(17)] + ["\ud7ff", "\ue000", "\ufffe", "\U0010ffff"]
    text = "".join(chars)
    _, _, info = step(
        env, f"s = {text!r}\nprint(len(s), [hex(ord(c)) for c in s] == {[hex(ord(c)) for c in chars]!r})"
    )
    assert f"{len(chars)} True" in cell_text(info), cell_text(info)
    _, _, _, _, info = env.step(f"<think>{text}</think><code>print({text!r})</code>")
    assert info["cell_status"] == "ok"
    assert_env_works(env)


def test_lone_surrogates_in_actions_never_raise(env):
    """Surrogates cannot be encoded as UTF-8: as bytes they are replaced, as str they must not
    break the step, the kernel or the info."""
    obs, *_ = env.step(b"<think>\xed\xa0\x80 cesu</think><code>print('bytes ok')</code>")
    assert "bytes ok" in obs[-1]["content"]
    obs, *_, info = env.step("<think>lone \ud800 surrogate</think><code>s = '\udcff'; print(len(s))</code>")
    assert info["cell_status"] == "ok" and "1" in cell_text(info), cell_text(info)
    json.dumps(info)
    assert_env_works(env)
    _, _, terminated, _, info = env.step("<think>done</think><code>submit_final_answer('Ada \udfff')</code>")
    assert terminated
    json.dumps(info)


def test_lone_surrogates_in_recorded_episodes(tmp_path, secret_env):
    env = make_env(record_dir=tmp_path)
    try:
        env.reset(seed=0)
        env.step("<think>lone \ud800 surrogate</think><code>print(1)</code>")
        _, _, terminated, _, _ = env.step("<think>done</think><code>submit_final_answer('Ada')</code>")
        assert terminated
        lines = (tmp_path / "episodes.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["final_answer"] == "Ada"
    finally:
        env.close()
