"""SandboxedKernel and KernelPool for real: bubblewrap, ipykernel, the tool bridge."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from l0_env.builtin_tools import builtin_stubs
from l0_env.kernel import policy, sandbox, seccomp
from l0_env.kernel.pool import KernelPool
from l0_env.kernel.sandbox import SandboxUnavailable, check_bwrap
from l0_env.kernel.session import KernelConfig, SandboxedKernel

needs_bwrap = pytest.mark.skipif(check_bwrap() is not None, reason="bubblewrap unavailable")
# A generous cell timeout: on a loaded machine an ordinary cell can take seconds. The timeout tests
# pass their own short one (TIMEOUT) to execute().
CONFIG = KernelConfig(
    sandbox="bwrap", cell_timeout=60.0, interrupt_grace=1.5, max_output_chars=1_000, tools=builtin_stubs()
)
TIMEOUT = 2.0


@pytest.fixture(scope="module")
def kernel() -> Iterator[SandboxedKernel]:
    if check_bwrap() is not None:
        pytest.skip("bubblewrap unavailable")
    k = SandboxedKernel(CONFIG)
    yield k
    k.close()


@needs_bwrap
def test_state_persists_across_cells(kernel):
    assert kernel.execute("value = 20 + 1").status == "ok"
    result = kernel.execute("print(value * 2)")
    assert result.status == "ok" and result.text == "42"


@needs_bwrap
def test_output_kinds(kernel):
    result = kernel.execute(
        "import sys\nfrom IPython.display import display\n"
        "print('out'); print('err', file=sys.stderr)\ndisplay('shown')\n'result'"
    )
    kinds = [(o.kind, o.name) for o in result.outputs]
    assert kinds == [("stream", "stdout"), ("stream", "stderr"), ("display", "display"), ("result", "result")]
    assert result.text == "out\n[stderr]\nerr\n'shown'\n'result'"
    assert result.n_outputs == 4 and result.n_errors == 0


@needs_bwrap
def test_error_is_clean(kernel):
    result = kernel.execute("def f():\n    return 1 / 0\nf()")
    assert result.status == "error" and result.n_errors == 1
    assert "\x1b" not in result.text
    assert "ZeroDivisionError: division by zero" in result.text
    assert "site-packages/IPython" not in result.text
    assert "return 1 / 0" in result.text


@needs_bwrap
def test_output_truncated_head_and_tail(kernel):
    result = kernel.execute("for i in range(5000):\n    print(f'line{i}')")
    assert len(result.text) <= CONFIG.max_output_chars + 100
    assert result.text.startswith("line0\n")
    assert result.text.rstrip().endswith("line4999")
    assert "characters" in result.text and "cut" in result.text


@needs_bwrap
def test_timeout_interrupts_and_keeps_state(kernel):
    kernel.execute("kept = 'yes'")
    started = time.monotonic()
    result = kernel.execute("import time\nwhile True:\n    time.sleep(0.05)", timeout=TIMEOUT)
    assert time.monotonic() - started < TIMEOUT + CONFIG.interrupt_grace + 10
    assert result.status == "timeout" and not result.restarted
    assert "TimeoutError" in result.text and "KeyboardInterrupt" not in result.text
    assert kernel.execute("print(kept)").text == "yes"


@needs_bwrap
def test_stuck_c_code_restarts(kernel):
    kernel.execute("lost = 1\nnotepad.write_draft('draft survives')")
    restarts = kernel.restarts
    result = kernel.execute("sum(range(10**12))", timeout=TIMEOUT)
    assert result.status == "timeout" and result.restarted
    assert kernel.restarts == restarts + 1
    assert "restarted" in result.text
    assert "NameError" in kernel.execute("lost").text
    assert kernel.execute("print(notepad.draft)").text == "draft survives"


@needs_bwrap
def test_death_restarts_and_restores_notepad(kernel):
    kernel.execute("notepad.add_fact('k', 'v')\nnotepad.add_todo('t', 'doing')")
    assert kernel.notepad_state["facts"] == {"k": "v"}
    result = kernel.execute("import os\nos._exit(7)")
    assert result.status == "died" and result.restarted
    assert "exit code 7" in result.text
    check = "print(notepad.facts == {'k': 'v'} and notepad.plan == [{'text': 't', 'status': 'doing'}])"
    assert kernel.execute(check).text == "True"
    assert kernel.is_alive()


@needs_bwrap
def test_notepad_pushed_after_a_failing_cell(kernel):
    result = kernel.execute("notepad.add_fact('before_error', 'x')\nraise ValueError('boom')")
    assert result.status == "error"
    assert kernel.notepad_state["facts"]["before_error"] == "x"


@needs_bwrap
def test_tools_without_an_episode_raise_tool_error(kernel):
    kernel.tool_handler = None
    result = kernel.execute("web_search('x')")
    assert result.status == "error" and "ToolError" in result.text and "no episode" in result.text


def test_sandbox_none_runs():
    with SandboxedKernel(KernelConfig(sandbox="none", cell_timeout=60)) as k:
        assert not k.sandboxed
        assert k.execute("x = 3\nprint(x * 3)").text == "9"
        assert k.execute("notepad.add_fact('a', 'b')").status == "ok"
        assert k.notepad_state["facts"] == {"a": "b"}


@pytest.fixture
def fresh_checks():
    """The sandbox checks probe again in the test and again after it (the machine is back)."""
    policy.forget_checks()
    yield
    policy.forget_checks()


def test_missing_bwrap_is_refused(monkeypatch, fresh_checks):
    monkeypatch.setattr(sandbox.shutil, "which", lambda *_a, **_k: None)
    with pytest.raises(SandboxUnavailable, match="not found"):
        SandboxedKernel(KernelConfig(sandbox="bwrap"))
    with pytest.warns(RuntimeWarning, match="WITHOUT A SANDBOX"):
        assert policy.resolve_sandbox("auto") is False


@needs_bwrap
def test_missing_seccomp_is_refused_by_bwrap_mode_and_loud_in_auto(monkeypatch, fresh_checks):
    def unavailable() -> int:
        raise seccomp.SeccompUnavailable("libseccomp not found (test)")

    monkeypatch.setattr(seccomp, "program_fd", unavailable)
    with pytest.raises(SandboxUnavailable, match="no seccomp filter: libseccomp not found"):
        SandboxedKernel(KernelConfig(sandbox="bwrap"))
    with pytest.warns(RuntimeWarning, match="WITHOUT ITS SECCOMP FILTER"):
        assert policy.resolve_seccomp("auto") is False


def test_non_root_sandbox_argv_disables_user_namespaces_and_loads_the_filter():
    argv = sandbox.build_bwrap_argv(
        ["python"], runtime_dir="/tmp/x", limits=sandbox.SandboxLimits(), uid=None, env={}, seccomp_fd=7
    )
    assert argv[1:4] == ["--unshare-all", "--unshare-user", "--disable-userns"]
    assert argv[argv.index("--") - 2 : argv.index("--")] == ["--seccomp", "7"]
    root_argv = sandbox.build_bwrap_argv(
        ["python"], runtime_dir="/tmp/x", limits=sandbox.SandboxLimits(), uid=5, env={}
    )
    assert "--disable-userns" not in root_argv and "--seccomp" not in root_argv  # root: no user namespace


@needs_bwrap
@pytest.mark.skipif(not sandbox.host_is_root(), reason="needs root to run the probe as another user")
@pytest.mark.parametrize("use_seccomp", [False, True])
def test_non_root_sandbox_cannot_create_a_user_namespace(monkeypatch, use_seccomp):
    """The non-root path for real, as uid 65534: ``unshare -Ur`` fails through --disable-userns
    alone (ENOSPC: the sandbox's namespace may hold no more) and through the filter (EPERM)."""
    # The venv's Python lives under /root here, which another user cannot reach: bind nothing of it
    # (the probe runs /usr/bin/unshare).
    monkeypatch.setattr(sandbox, "_python_roots", lambda: [])
    runtime_dir = tempfile.mkdtemp(prefix="l0-nonroot-", dir="/tmp")  # pytest's tmp_path is root-only
    os.chown(runtime_dir, 65534, 65534)
    with sandbox.launch_spec(
        ["/usr/bin/unshare", "-Ur", "true"],
        runtime_dir=runtime_dir,
        limits=sandbox.SandboxLimits(),
        uid=None,
        env={"PATH": "/usr/bin:/bin"},
        use_seccomp=use_seccomp,
    ) as (argv, kwargs):
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
        proc = subprocess.run(
            as_nobody, capture_output=True, text=True, timeout=60, pass_fds=kwargs["pass_fds"]
        )
    os.rmdir(runtime_dir)
    assert proc.returncode != 0, proc.stdout
    expected = "Operation not permitted" if use_seccomp else "No space left on device"
    assert expected in proc.stderr, proc.stderr


@needs_bwrap
def test_pool_hands_out_distinct_ready_kernels():
    pool = KernelPool(CONFIG, size=2)
    kernels = []
    try:
        pool.refill()
        assert pool.wait_ready(timeout=60)
        kernels = [pool.acquire(), pool.acquire()]
        assert kernels[0] is not kernels[1] and kernels[0].pid != kernels[1].pid
        assert kernels[0].runtime_dir != kernels[1].runtime_dir
        for i, k in enumerate(kernels):
            assert k.is_alive()
            assert k.execute(f"print({i})").text == str(i)
    finally:
        pool.close()
        for k in kernels:
            k.close()
    assert pool.n_ready == 0
    with pytest.raises(RuntimeError, match="closed"):
        pool.acquire()
    for k in kernels:
        assert not k.is_alive()
        assert not shutil.os.path.exists(k.runtime_dir)
