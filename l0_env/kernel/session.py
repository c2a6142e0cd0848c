"""A sandboxed IPython kernel's lifecycle: start it, run cells, restart it, close it.

One :class:`SandboxedKernel` owns one kernel process in its own sandbox (``sandbox.py``: bubblewrap,
seccomp, rlimits, a cgroup), its tool bridge and the host's copy of the notepad. The other jobs
live beside it: the Jupyter transport (``transport.py``), the cell state machine (``cell.py``), the
sandbox policy (``policy.py``) and the code sent into the kernel (``in_kernel.py``,
``in_kernel_threads.py``).

A cell past its time limit is interrupted; if the kernel does not go idle within a grace period
(C code such as ``sum(range(10**12))`` ignores SIGINT) the whole sandbox is killed and a fresh
kernel started, the tools reinstalled and the notepad restored from the host's last snapshot.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..tasks.files import StagedFile, stage_files
from . import launcher, zygote
from .bridge import Handler, ToolBridge, ToolCallError
from .cell import CellEnd, CellResult, CellRun
from .cgroups import SandboxCgroup
from .config import KernelConfig
from .kernel_main import kernel_command
from .notepad import validate_notepad
from .outputs import OutputCollector, format_outputs
from .policy import SandboxMode, resolve_sandbox, resolve_seccomp
from .sandbox import (
    HOME_IN_SANDBOX,
    TASK_FILES_IN_SANDBOX,
    UidLease,
    host_is_root,
    kernel_environment,
    launch_spec,
    sandbox_cgroup,
)
from .transport import KernelChannels, MalformedLog, write_connection_file

_HERE = Path(__file__).parent
_IN_KERNEL_SOURCE = (_HERE / "in_kernel.py").read_text(encoding="utf-8")
_IN_KERNEL_THREADS_SOURCE = (_HERE / "in_kernel_threads.py").read_text(encoding="utf-8")
_IN_KERNEL_FILES_SOURCE = (_HERE / "in_kernel_files.py").read_text(encoding="utf-8")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
KERNEL_LOG_TAIL_BYTES = 8192
IOPUB_PROBE_FIRST_S = 0.02


class _OutputTail:
    """Reads the kernel's stdout+stderr from a pipe and keeps only the last bytes (for errors).

    A file on the host would let the sandbox write ``max_file_bytes`` of host disk through fd 1.
    """

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe
        self._buf = bytearray()
        self._thread = threading.Thread(target=self._read, name="l0-kernel-log", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError), self._pipe:
            while chunk := self._pipe.read1(65536):
                self._buf += chunk
                del self._buf[:-KERNEL_LOG_TAIL_BYTES]

    def text(self, wait: float = 0.0) -> str:
        self._thread.join(timeout=wait)  # on a failed start: let the reader reach EOF first
        return bytes(self._buf).decode(errors="replace").strip() or "(no output)"


class KernelStartError(RuntimeError):
    """The kernel process did not come up."""


class SandboxedKernel:
    """One IPython kernel in its own sandbox with its own tool bridge.

    Not thread-safe: one caller at a time. ``close()`` is idempotent and kills every process.
    """

    def __init__(self, config: KernelConfig | None = None) -> None:
        self.config = config or KernelConfig()
        self.sandboxed = resolve_sandbox(self.config.sandbox)
        self._seccomp = self.sandboxed and resolve_seccomp(self.config.sandbox)
        base = os.environ.get("L0_RUNTIME_DIR") or None
        self.runtime_dir = tempfile.mkdtemp(prefix="l0k-", dir=base)
        os.chmod(self.runtime_dir, 0o711)
        # The task's files: filled by the host at reset, shown read-only in the sandbox. Not under
        # runtime_dir, which the sandbox can write.
        self.files_dir = tempfile.mkdtemp(prefix="l0f-", dir=base)
        os.chmod(self.files_dir, 0o755)
        self.attached_files: list[StagedFile] = []
        self._uid_lease: UidLease | None = None
        self._cgroup: SandboxCgroup | None = None
        self._proc: subprocess.Popen | None = None
        self._channels: KernelChannels | None = None
        self._workdir: str | None = None
        self._closed = False
        try:
            self._uid_lease = UidLease() if self.sandboxed and host_is_root() else None
            self._cgroup = self._make_cgroup()
        except BaseException:
            self.close()
            raise
        uid = self._uid_lease.uid if self._uid_lease else None
        self.bridge = ToolBridge(os.path.join(self.runtime_dir, "bridge.sock"), owner_uid=uid)
        self.bridge.handler = self._handle_tool_call
        self.tool_handler: Handler | None = None  # the episode's tools; set by the env
        self._notepad_state: dict[str, Any] = {}
        self._log: _OutputTail | None = None
        self.restarts = 0
        self._malformed = MalformedLog()
        self._oom_kills_seen = 0  # the sandbox cgroup's OOM kills already reported to the agent
        # How the running kernel was started: "spawn", or "zygote" (config.kernel_start="zygote" and
        # the fork worked; else it was spawned after a warning, see zygote.report_fallback).
        self.start_mode = "spawn"
        self._forked: zygote.ForkedKernel | None = None  # the running kernel, when it was forked
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The launcher's pid (bubblewrap's, sandboxed; for a forked kernel, its holder sandbox's)."""
        return self._proc.pid if self._proc else None

    def process_pids(self) -> list[int]:
        """Every live process of this kernel: the launcher and its descendants and, for a kernel
        forked from the zygote (``start_mode == "zygote"``), the zygote's waiter for it and that
        waiter's descendants (the kernel itself and whatever it started)."""
        import psutil

        roots = [self._proc.pid] if self._proc is not None else []
        if self._forked is not None:
            roots.append(self._forked.waiter_pid)
        out: list[int] = []
        for root in roots:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(root)
                for p in [proc, *proc.children(recursive=True)]:
                    if p.status() != psutil.STATUS_ZOMBIE:
                        out.append(p.pid)
        return out

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def malformed_messages(self) -> int:
        """Messages from the kernel that did not decode and were dropped (never raised)."""
        return self._malformed.count

    def log_tail(self) -> str:
        """The last few KiB the kernel process wrote to its stdout/stderr (ipykernel's own log)."""
        return self._log.text() if self._log is not None else ""

    @property
    def cgroup(self) -> SandboxCgroup | None:
        """The sandbox's memory + pids cgroup, when one is in use (see ``cgroups.py``)."""
        return self._cgroup

    @property
    def seccomp(self) -> bool:
        """Whether the kernel runs under the seccomp filter (see ``seccomp.py``)."""
        return self._seccomp

    def _make_cgroup(self) -> SandboxCgroup | None:
        if not self.sandboxed:
            return None
        return sandbox_cgroup(self.config.limits, tag=os.path.basename(self.runtime_dir))

    def _start(self) -> None:
        if self._wants_fork() and self._start_forked():
            return
        self.start_mode = "spawn"
        uid, conn_file = self._prepare_runtime_dir()
        # No history database: it lives in the tmpfs home, and when the agent fills the disk its
        # writer thread prints "database or disk is full" into the agent's cell output.
        command = [*kernel_command(self.config.python), "-f", conn_file, "--quiet"]
        command += ["--HistoryManager.enabled=False"]
        common: dict[str, Any] = dict(
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        if self.sandboxed:
            with launch_spec(
                command,
                runtime_dir=self.runtime_dir,
                limits=self.config.limits,
                uid=uid,
                env=kernel_environment(),
                cgroup=self._cgroup,
                use_seccomp=self._seccomp,
                files_dir=self.files_dir,
            ) as (argv, sandbox_kwargs):
                env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
                self._proc = launcher.spawn(argv, env=env, **sandbox_kwargs, **common)
        else:
            self._workdir = self._workdir or tempfile.mkdtemp(prefix="l0-work-")
            self._proc = launcher.spawn(
                command,
                cwd=self._workdir,
                env=kernel_environment({"HOME": self._workdir}),
                preexec_fn=self.config.limits.apply,
                **common,
            )
        self._log = _OutputTail(self._proc.stdout)
        self._channels = KernelChannels(conn_file, self._malformed)
        self._finish_start(uid, conn_file)

    def _prepare_runtime_dir(self) -> tuple[int | None, str]:
        """Clear a previous kernel's sockets, write a fresh connection file; returns the sandbox
        uid (None: not root-sandboxed) and the connection file."""
        uid = self._uid_lease.uid if self._uid_lease else None
        for name in os.listdir(self.runtime_dir):  # sockets of a previous kernel
            if name != "bridge.sock":
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.runtime_dir, name))
        if uid is not None:
            os.chown(self.runtime_dir, uid, uid)  # the kernel creates its ipc sockets here
        conn_file = os.path.join(self.runtime_dir, "kernel.json")
        write_connection_file(conn_file, os.path.join(self.runtime_dir, "k"))
        if uid is not None:
            os.chown(conn_file, uid, uid)
        return uid, conn_file

    def _finish_start(self, uid: int | None, conn_file: str) -> None:
        """Wait for the started kernel, take the runtime dir back, install the tools."""
        self._wait_ready()
        if uid is not None:
            # Sockets exist now: take the directory and the connection file (read once, at start)
            # back, so the sandbox cannot write host disk.
            os.chown(conn_file, 0, 0)
            os.chown(self.runtime_dir, 0, 0)
            os.chmod(self.runtime_dir, 0o711)
        self._install_tools()

    def _wants_fork(self) -> bool:
        """ "zygote" always tries (and falls back loudly); "auto" only where it is supported."""
        if not self.sandboxed or self.config.kernel_start == "spawn":
            return False
        return self.config.kernel_start == "zygote" or zygote.unsupported_reason(True) is None

    def _start_forked(self) -> bool:
        """Start the kernel forked from the warm zygote into a sandbox like a spawned one's
        (``zygote.py``). False when that fails: everything of the attempt is gone, a warning has
        been given, and the caller spawns the kernel instead."""
        uid, conn_file = self._prepare_runtime_dir()
        try:
            forked = zygote.start_kernel(
                python=self.config.python,
                conn_file=conn_file,
                runtime_dir=self.runtime_dir,
                limits=self.config.limits,
                uid=uid,
                cgroup=self._cgroup,
                use_seccomp=self._seccomp,
                files_dir=self.files_dir,
                timeout=self.config.startup_timeout,
            )
            self._proc = forked.process
            self._forked = forked
            self._log = _OutputTail(forked.log)
            self._channels = KernelChannels(conn_file, self._malformed)
            self._finish_start(uid, conn_file)
        except (zygote.ZygoteError, KernelStartError, OSError) as exc:
            self._kill()
            zygote.report_fallback(exc)
            return False
        self.start_mode = "zygote"
        return True

    def _wait_ready(self) -> None:
        assert self._channels is not None and self._proc is not None and self._log is not None
        channels = self._channels
        deadline = time.monotonic() + self.config.startup_timeout
        msg_id = channels.kernel_info()
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                detail = self._log.text(wait=2.0)
                raise KernelStartError(f"kernel exited with code {self._proc.returncode}: {detail}")
            try:
                reply = channels.recv("shell", 0.2)
            except queue.Empty:
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        else:
            raise KernelStartError(
                f"kernel not ready after {self.config.startup_timeout}s: {self._log.text()}"
            )
        # The shell reply does not prove the iopub subscription is live (zmq's slow joiner): a
        # cell's messages published before it would be lost and the cell would hang to its
        # timeout. Ask again until a status message arrives on iopub: soon at first (the subscription
        # is usually live within a few ms), then less often.
        wait = IOPUB_PROBE_FIRST_S
        while time.monotonic() < deadline:
            try:
                msg = channels.recv("iopub", wait)
            except queue.Empty:
                if self._proc.poll() is not None:
                    break
                channels.kernel_info()
                wait = min(wait * 2, 0.2)
                continue
            if msg["msg_type"] == "status":
                channels.drain()
                with contextlib.suppress(queue.Empty):
                    while True:
                        channels.recv("shell", 0.05)
                return
        raise KernelStartError(
            f"kernel iopub not connected after {self.config.startup_timeout}s: {self._log.text()}"
        )

    def _install_tools(self) -> None:
        notepad = json.dumps(self._notepad_state)
        tools = json.dumps([stub.to_json() for stub in self.config.tools])
        code = (
            "import types as _t, sys as _s\n"
            "_m = _t.ModuleType('l0_threads')\n"
            f"exec(compile({_IN_KERNEL_THREADS_SOURCE!r}, 'l0_threads', 'exec'), _m.__dict__)\n"
            "_m.patch_threads()\n"
            "_m = _t.ModuleType('l0_tools')\n"
            f"exec(compile({_IN_KERNEL_SOURCE!r}, 'l0_tools', 'exec'), _m.__dict__)\n"
            "_s.modules['l0_tools'] = _m\n"
            "_f = _t.ModuleType('l0_files')\n"
            f"exec(compile({_IN_KERNEL_FILES_SOURCE!r}, 'l0_files', 'exec'), _f.__dict__)\n"
            "_s.modules['l0_files'] = _f\n"
            f"_m._l0_install({self.bridge.path!r}, __import__('json').loads({notepad!r}), "
            f"__import__('json').loads({tools!r}), {self._files_dir_inside!r})\n"
            "del _t, _s, _m, _f\n"
        )
        result = self._run(code, timeout=self.config.startup_timeout, silent=True)
        if result.status != "ok":
            raise KernelStartError(f"installing the tools in the kernel failed: {result.text}")

    @property
    def _files_dir_inside(self) -> str:
        return TASK_FILES_IN_SANDBOX if self.sandboxed else self.files_dir

    def attach_files(self, paths: list[str] | tuple[str, ...]) -> list[StagedFile]:
        """Copy a task's files (host paths, checked by ``resolve_task_files``) into the sandbox,
        read-only, and link them into the kernel's working directory. Once per kernel, before the
        episode's first cell.

        Raises:
            ValueError: A file changed since it was checked (gone, not regular, over the caps).
            RuntimeError: Files are already attached, or linking them failed in the kernel.
        """
        if self.attached_files or os.listdir(self.files_dir):
            raise RuntimeError("this kernel already has task files: use a fresh kernel per task")
        staged = stage_files(paths, self.files_dir)
        self.attached_files = staged
        if staged:
            result = self._run(
                "__import__('sys').modules['l0_tools']._l0_link_files()",
                timeout=self.config.startup_timeout,
                silent=True,
            )
            if result.status != "ok":
                raise RuntimeError(f"linking the task files in the kernel failed: {result.text}")
        return staged

    def restart(self) -> None:
        """Kill the kernel and its sandbox, start a fresh one, reinstall tools and notepad."""
        self._kill()
        self.restarts += 1
        self._start()

    def _kill(self) -> None:
        if self._channels is not None:
            self._channels.close()
            self._channels = None
        if self._proc is not None:
            if self._proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
            if self._cgroup is not None:
                self._cgroup.kill()  # also what left the process group (setsid) and its pid namespace
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
            self._proc = None
        if self._forked is not None:
            self._forked.wait_gone()  # its processes are not our children: wait for them too
            self._forked = None

    def close(self) -> None:
        """Kill the kernel, stop the bridge, delete the runtime directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._kill()
        if getattr(self, "bridge", None) is not None:
            self.bridge.close()
        if self._cgroup is not None:
            self._cgroup.remove()
        if self._uid_lease is not None:
            self._uid_lease.release()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        if getattr(self, "files_dir", None):
            shutil.rmtree(self.files_dir, ignore_errors=True)
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> SandboxedKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- notepad -----------------------------------------------------------------------------

    @property
    def notepad_state(self) -> dict[str, Any]:
        """The last notepad snapshot the kernel pushed (restored into a restarted kernel)."""
        return self._notepad_state

    def set_notepad_state(self, state: dict[str, Any]) -> None:
        self._notepad_state = state

    def _handle_tool_call(self, op: str, args: dict[str, Any]) -> Any:
        if op == "notepad":
            self._notepad_state = validate_notepad(args.get("state"))  # schema and size: untrusted
            return None
        if self.tool_handler is None:
            raise ToolCallError("ToolError", "no episode is running; tools are unavailable")
        return self.tool_handler(op, args)

    # -- running cells -----------------------------------------------------------------------

    def execute(self, code: str, *, timeout: float | None = None) -> CellResult:
        """Run one cell; never raises for anything the code does."""
        if self._closed:
            raise RuntimeError("the kernel is closed")
        # The kernel protocol is UTF-8 JSON: a lone surrogate (valid in a str, not in UTF-8) would
        # make jupyter_client raise UnicodeEncodeError. Each becomes U+FFFD.
        code = _LONE_SURROGATE.sub("\ufffd", code)
        notice = None
        if not self.is_alive():  # died between cells (killed from outside, a thread's os._exit...)
            exit_code = self._proc.returncode if self._proc else None
            self.restart()
            notice = (
                f"KernelRestarted: the kernel process had died since the last cell (exit code {exit_code}), "
                "so it was restarted before this cell ran. All variables and imports were lost; the "
                "tools and the notepad are restored."
            )
        result = self._run(code, timeout=timeout or self.config.cell_timeout, notice=notice)
        result.restarted = result.restarted or notice is not None
        return result

    def _run(
        self, code: str, *, timeout: float, silent: bool = False, notice: str | None = None
    ) -> CellResult:
        assert self._channels is not None and self._proc is not None
        proc = self._proc
        started = time.monotonic()
        cfg = self.config
        collector = OutputCollector(keep_chars=cfg.max_output_chars * 4, tail_chars=cfg.max_output_chars)
        if notice:
            collector.add_note("stream", "stderr", notice)
        self._channels.drain(collector.add_background)
        run = CellRun(
            self._channels,
            cfg,
            code,
            timeout=timeout,
            collector=collector,
            process_exited=lambda: proc.poll() is not None,
            silent=silent,
        )
        end = run.run()
        if end.restart_reason is not None:
            why = end.restart_reason or self._death_reason()
            why += " All variables and imports are lost; the tools and the notepad are restored."
            collector.add_note("error", "KernelRestarted", why, is_error=True)
            self.restart()
        return self._result(end, collector, started)

    def _death_reason(self) -> str:
        code = self._proc.returncode if self._proc else None
        if self._cgroup is not None and self._cgroup.oom_kills() > self._oom_kills_seen:
            self._oom_kills_seen = self._cgroup.oom_kills()
            limit = self.config.limits.sandbox_memory_bytes
            return (
                f"KernelDied: the sandbox reached its memory limit of {limit / 2**20:.0f} MiB (files in "
                "/home/agent and /tmp count too), so the kernel was killed and restarted."
            )
        return f"KernelDied: the kernel process died (exit code {code}; out of memory or killed), so it was restarted."

    def _result(self, end: CellEnd, collector: OutputCollector, started: float) -> CellResult:
        self._malformed.summarize()
        outputs = collector.finish()
        return CellResult(
            status=end.status,
            outputs=outputs,
            text=format_outputs(outputs, limit=self.config.max_output_chars),
            n_outputs=collector.n_outputs,
            n_errors=collector.n_errors,
            restarted=end.restart_reason is not None,
            duration_s=time.monotonic() - started,
            reply_status=end.reply_status,
        )


__all__ = [
    "HOME_IN_SANDBOX",
    "CellResult",
    "KernelConfig",
    "KernelStartError",
    "SandboxMode",
    "SandboxedKernel",
    "resolve_sandbox",
]
