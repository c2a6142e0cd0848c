"""The kernel's entry point without debugpy (``kernel_main.py``) and the bytecode check (``bytecode.py``).

The kernel tests start real sandboxed kernels (they skip without bubblewrap); the bytecode tests
compile real ``.pyc`` files and ask the real import system, in a subprocess, whether it uses them.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import py_compile
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import l0_env
from l0_env.builtin_tools import builtin_stubs
from l0_env.kernel import bytecode, kernel_main
from l0_env.kernel.bytecode import ModuleFile, check_module, fix, header_problem
from l0_env.kernel.kernel_main import LAUNCHER_ENV, kernel_command
from l0_env.kernel.sandbox import check_bwrap, host_is_root
from l0_env.kernel.session import KernelConfig, SandboxedKernel

needs_bwrap = pytest.mark.skipif(check_bwrap() is not None, reason="bubblewrap unavailable")
# The spawned launcher is what this file tests (kernel_main.py; forked kernels: tests/test_zygote.py).
CONFIG = KernelConfig(
    sandbox="bwrap", cell_timeout=60.0, max_output_chars=200_000, tools=builtin_stubs(), kernel_start="spawn"
)
# Top-level names of debugpy and the pydevd it vendors (put on sys.path by debugpy's import).
DEBUGGER_MODULES = {
    "debugpy",
    "pydevd",
    "_pydevd_bundle",
    "_pydev_bundle",
    "_pydevd_frame_eval",
    "pydev_ipython",
}
CLEAN_LOG = "(no output)"  # SandboxedKernel.log_tail() when the kernel wrote nothing
PROJECT_ROOT = str(Path(l0_env.__file__).resolve().parent.parent)

# -- choosing the entry point (pure) -------------------------------------------------------------


def test_default_command_passes_the_launcher_source(monkeypatch):
    monkeypatch.delenv(LAUNCHER_ENV, raising=False)
    command = kernel_command("/venv/bin/python")
    assert command[:2] == ["/venv/bin/python", "-c"]
    assert command[2] == Path(kernel_main.__file__).read_text(encoding="utf-8")
    assert command[3:] == ["ipykernel_launcher"]  # the process marker; main() drops it from sys.argv


def test_launcher_source_needs_nothing_of_the_project():
    """The sandbox does not show the project: the source may import only the standard library and
    ipykernel (the sandboxed tests below run it where ``l0_env`` cannot be imported)."""
    tree = ast.parse(Path(kernel_main.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import cannot work inside the sandbox"
            imported.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
    assert imported <= set(sys.stdlib_module_names) | {"ipykernel"}, imported


def test_environment_selects_the_stock_launcher_and_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv(LAUNCHER_ENV, "ipykernel")
    assert kernel_command("/py") == ["/py", "-m", "ipykernel_launcher"]
    assert kernel_command("/py", "l0")[:2] == ["/py", "-c"]  # an explicit choice wins
    monkeypatch.setenv(LAUNCHER_ENV, "debugpy")
    with pytest.raises(ValueError, match=r"\$L0_KERNEL_LAUNCHER must be 'l0' .* got 'debugpy'"):
        kernel_command("/py")
    with pytest.raises(ValueError, match="launcher must be"):
        kernel_command("/py", "pdb")


# -- the kernel it starts --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel() -> Iterator[SandboxedKernel]:
    if check_bwrap() is not None:
        pytest.skip("bubblewrap unavailable")
    previous = os.environ.pop(LAUNCHER_ENV, None)  # the production default
    try:
        k = SandboxedKernel(CONFIG)
    finally:
        if previous is not None:
            os.environ[LAUNCHER_ENV] = previous
    yield k
    k.close()


def _debugger_modules(kernel: SandboxedKernel) -> list[str]:
    code = f"import sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in {DEBUGGER_MODULES!r}))"
    return json.loads(kernel.execute(code).text.replace("'", '"'))


@needs_bwrap
def test_sandboxed_kernel_runs_cells_without_debugpy(kernel):
    assert kernel.execute("x = 6 * 7").status == "ok"
    assert kernel.execute("print(x)").text == "42"
    assert _debugger_modules(kernel) == []
    assert kernel.execute("notepad.add_fact('k', 'v')").status == "ok"  # the tools are installed
    assert kernel.notepad_state["facts"] == {"k": "v"}
    # The kernel does not announce a debugger it does not have, and its log stays empty.
    assert (
        kernel.execute("get_ipython().kernel.kernel_info['supported_features']").text
        == "['kernel subshells']"
    )
    assert kernel.log_tail() == CLEAN_LOG


@needs_bwrap
def test_kernel_process_is_still_found_by_its_command_line(kernel):
    """``ps`` users, tests/test_faults.py and the benchmarks find kernels by ``ipykernel_launcher``
    in the argv; the agent's ``sys.argv`` does not show it (as stock, where it is argv[0])."""
    assert kernel.pid is not None
    root = psutil.Process(kernel.pid)
    pythons = [p for p in [root, *root.children(recursive=True)] if p.name().startswith("python")]
    assert len(pythons) == 1 and "ipykernel_launcher" in pythons[0].cmdline()
    assert kernel.execute("import sys\nprint(sys.argv[:2])").text == "['-c', '-f']"


@needs_bwrap
def test_import_debugpy_in_a_cell_is_a_clear_module_not_found(kernel):
    result = kernel.execute("import debugpy")
    assert result.status == "error" and result.n_errors == 1 and not result.restarted
    assert (
        "ModuleNotFoundError: No module named 'debugpy' (the sandboxed kernel runs without Jupyter's debugger)"
        in result.text
    )
    caught = (
        "try:\n    from debugpy import server\nexcept ImportError as e:\n    print(type(e).__name__, e.name)"
    )
    assert kernel.execute(caught).text == "ModuleNotFoundError debugpy"
    assert _debugger_modules(kernel) == []
    assert kernel.log_tail() == CLEAN_LOG


@needs_bwrap
def test_a_restarted_kernel_starts_without_debugpy_too(kernel):
    result = kernel.execute("import os\nos._exit(3)")
    assert result.status == "died" and result.restarted
    assert kernel.execute("import sys\nprint(sys.argv[0])").text == "-c"
    assert _debugger_modules(kernel) == []


@needs_bwrap
def test_both_launchers_give_the_agent_the_same_kernel(monkeypatch):
    """Same sys.path (the cwd back in it, as stock), argv, tools; the stock launcher loads debugpy
    (so the tests above fail with it) and ours loads nothing it does not."""
    seen = {}
    for name in ("ipykernel", "l0"):
        monkeypatch.setenv(LAUNCHER_ENV, name)
        with SandboxedKernel(CONFIG) as k:
            result = k.execute(
                "import json, sys\nprint(json.dumps([sys.path, sys.argv[1:], sorted(sys.modules)]))"
            )
            path, argv, modules = json.loads(result.text)
            seen[name] = path, [arg.replace(k.runtime_dir, "RUNTIME") for arg in argv], modules
            assert k.execute("notepad.write_draft('d')").status == "ok"
            assert k.log_tail() == CLEAN_LOG
    (old_path, old_argv, old_modules), (new_path, new_argv, new_modules) = seen["ipykernel"], seen["l0"]
    assert new_path == old_path and "" in new_path
    assert new_argv == old_argv
    assert "debugpy" in old_modules and "debugpy" not in new_modules
    assert set(new_modules) <= set(old_modules), set(new_modules) - set(old_modules)


# -- the bytecode check: one module against the real import system ---------------------------------


def _uses_bytecode(directory: Path, module: str) -> bool:
    """Whether Python's import system, in a fresh interpreter, loads ``module`` from its ``.pyc``
    (it calls ``source_to_code`` exactly when it compiles the source instead)."""
    code = (
        "import sys, importlib.machinery as m\n"
        "compiled = []\n"
        "original = m.SourceFileLoader.source_to_code\n"
        "def spy(self, data, path, *a, **k):\n"
        "    compiled.append(path)\n"
        "    return original(self, data, path, *a, **k)\n"
        "m.SourceFileLoader.source_to_code = spy\n"
        f"sys.path.insert(0, {str(directory)!r})\n"
        f"import {module}\n"
        "print(not compiled)\n"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip() == "True"


def _module(tmp_path: Path, name: str = "l0_bc_probe", text: str = "VALUE = 1\n") -> ModuleFile:
    source = tmp_path / f"{name}.py"
    source.write_text(text, encoding="utf-8")
    return ModuleFile(name, str(source), importlib.util.cache_from_source(str(source)))


def _compile(module: ModuleFile, mode: py_compile.PycInvalidationMode) -> None:
    py_compile.compile(module.source, cfile=module.cached, doraise=True, invalidation_mode=mode)


def _edit_keeping_size_and_mtime(module: ModuleFile) -> None:
    st = os.stat(module.source)
    Path(module.source).write_text("VALUE = 2\n", encoding="utf-8")
    os.utime(module.source, ns=(st.st_atime_ns, st.st_mtime_ns))


TIMESTAMP = py_compile.PycInvalidationMode.TIMESTAMP
CHECKED = py_compile.PycInvalidationMode.CHECKED_HASH
UNCHECKED = py_compile.PycInvalidationMode.UNCHECKED_HASH


def _no_pyc(m: ModuleFile) -> None:
    pass


def _fresh(mode: py_compile.PycInvalidationMode):
    return lambda m: _compile(m, mode)


def _then(mode: py_compile.PycInvalidationMode, change):
    def prepare(m: ModuleFile) -> None:
        _compile(m, mode)
        change(m)

    return prepare


def _grow(m: ModuleFile) -> None:
    st = os.stat(m.source)
    Path(m.source).write_text("VALUE = 1000\n", encoding="utf-8")
    os.utime(m.source, ns=(st.st_atime_ns, st.st_mtime_ns))  # only the size tells


def _touch(m: ModuleFile) -> None:
    st = os.stat(m.source)
    os.utime(m.source, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))  # only the mtime tells


def _other_magic(m: ModuleFile) -> None:
    assert m.cached is not None
    data = bytearray(Path(m.cached).read_bytes())
    data[0] ^= 0xFF
    Path(m.cached).write_bytes(bytes(data))


def _truncate(m: ModuleFile) -> None:
    assert m.cached is not None
    Path(m.cached).write_bytes(Path(m.cached).read_bytes()[:10])


CASES = {
    "no pyc": (_no_pyc, "no bytecode"),
    "timestamp, fresh": (_fresh(TIMESTAMP), None),
    "timestamp, source grew": (_then(TIMESTAMP, _grow), "size changed"),
    "timestamp, source touched": (_then(TIMESTAMP, _touch), "modification time changed"),
    "checked hash, fresh": (_fresh(CHECKED), None),
    "checked hash, source edited": (_then(CHECKED, _edit_keeping_size_and_mtime), "hash changed"),
    "unchecked hash, source edited": (_then(UNCHECKED, _edit_keeping_size_and_mtime), None),
    "another Python's magic": (_then(TIMESTAMP, _other_magic), "another Python version"),
    "truncated": (_then(TIMESTAMP, _truncate), "truncated"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_agrees_with_the_import_system(tmp_path, case):
    prepare, expected = CASES[case]
    module = _module(tmp_path)
    prepare(module)
    problem = check_module(module)
    if expected is None:
        assert problem is None, problem
    else:
        assert problem is not None and expected in problem.reason and "l0_bc_probe" in str(problem)
    assert _uses_bytecode(tmp_path, module.name) == (problem is None)


@pytest.mark.parametrize("case", [c for c, (_, expected) in CASES.items() if expected is not None])
def test_fix_makes_the_import_system_use_the_bytecode(tmp_path, case):
    prepare, _ = CASES[case]
    module = _module(tmp_path)
    prepare(module)
    problem = check_module(module)
    assert problem is not None
    assert fix(problem) is None
    assert check_module(module) is None
    assert _uses_bytecode(tmp_path, module.name)


@pytest.mark.skipif(not host_is_root(), reason="the sandbox runs as another uid only on a root host")
def test_bytecode_the_sandbox_uid_cannot_read_is_found_and_fixed(tmp_path):
    module = _module(tmp_path)
    _compile(module, TIMESTAMP)
    assert module.cached is not None
    os.chmod(module.cached, 0o600)
    problem = check_module(module)
    assert problem is not None and "not readable by the sandbox's uid" in problem.reason
    assert fix(problem) is None
    assert os.stat(module.cached).st_mode & 0o004 and check_module(module) is None


def test_header_problem_rejects_unknown_flags():
    header = importlib.util.MAGIC_NUMBER + (4).to_bytes(4, "little") + bytes(8)
    why = header_problem(header, source_mtime=0, source_size=0, source_hash=lambda: bytes(8))
    assert why == "invalid flags 0x4"


def test_top_level_path_is_what_compileall_needs():
    assert bytecode.top_level_path(ModuleFile("a.b.c", "/s/a/b/c.py", None)) == "/s/a"
    assert bytecode.top_level_path(ModuleFile("a.b", "/s/a/b/__init__.py", None)) == "/s/a"
    assert bytecode.top_level_path(ModuleFile("solo", "/s/solo.py", None)) == "/s/solo.py"


# -- the command line, on a real kernel ------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": PROJECT_ROOT}  # this checkout's l0_env, whatever is installed
    env.pop(LAUNCHER_ENV, None)
    return subprocess.run(
        [sys.executable, "-m", "l0_env.kernel.bytecode", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_cli_passes_on_this_environment():
    proc = _cli()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    count = int(proc.stdout.split("all ")[1].split()[0])
    assert count > 100, proc.stdout  # ipykernel, IPython, zmq, tornado, ... all listed


def test_cli_names_modules_without_valid_bytecode_and_fixes_them(tmp_path):
    package = tmp_path / "l0_bc_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from . import stale\n", encoding="utf-8")
    stale = _module(package, "stale")
    _compile(stale, TIMESTAMP)
    _grow(stale)
    (tmp_path / "l0_bc_top.py").write_text("import l0_bc_pkg\n", encoding="utf-8")

    proc = _cli("--path", str(tmp_path), "--import", "l0_bc_top")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("bytecode: 3 of the ")
    named = {line.split()[0] for line in lines[1:4]}
    assert named == {"l0_bc_pkg", "l0_bc_pkg.stale", "l0_bc_top"}
    assert "size changed" in proc.stdout and "no bytecode" in proc.stdout
    assert (
        f"-m compileall -q {package}" in proc.stdout
        and f"-m compileall -q {tmp_path}/l0_bc_top.py" in proc.stdout
    )
    assert not _uses_bytecode(tmp_path, "l0_bc_top")

    fixed = _cli("--path", str(tmp_path), "--import", "l0_bc_top", "--fix")
    assert fixed.returncode == 0 and "fixed 3 of 3" in fixed.stdout, fixed.stdout + fixed.stderr
    again = _cli("--path", str(tmp_path), "--import", "l0_bc_top")
    assert again.returncode == 0, again.stdout + again.stderr
    assert _uses_bytecode(tmp_path, "l0_bc_top") and _uses_bytecode(tmp_path, "l0_bc_pkg.stale")


def test_cli_reports_a_failed_import_as_exit_2(tmp_path):
    proc = _cli("--import", "l0_no_such_module_here")
    assert proc.returncode == 2
    assert "No module named 'l0_no_such_module_here'" in proc.stderr
