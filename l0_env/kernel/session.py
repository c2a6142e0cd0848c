"""A sandboxed IPython kernel driven through jupyter_client: launch, run cells, interrupt, restart.

Transport is ``ipc`` (Unix sockets in a private runtime directory): no TCP port races and nothing
the sandbox's empty network namespace would need. Interrupts are Jupyter *messages* on the control
channel: a signal sent to the launcher would hit bubblewrap and kill the sandbox instead.

A cell past its time limit is interrupted; if the kernel does not go idle within a grace period
(C code such as ``sum(range(10**12))`` ignores SIGINT) the whole sandbox is killed and a fresh
kernel started, the tools reinstalled and the notepad restored from the host's last snapshot.

Which output belongs to which cell: every iopub message carries the header of the request that
caused it, and a cell's observation holds only the output of its own request. Two things make
that hold under load:

* An interrupt (cell timeout, output flood) is a control message that the kernel turns into a
  SIGINT; when the cell ends on its own at the same moment, that SIGINT can arrive late and land
  in the *next* cell (a KeyboardInterrupt there). So a cell we interrupted is only over when both
  its ``idle`` status and the kernel's ``interrupt_reply`` (sent after the signal) are in; if the
  reply does not come within ``interrupt_grace`` the kernel is restarted.
* ipykernel stamps output from threads with whatever cell is running when they print. The kernel
  gets a small patch (``_THREAD_PARENT_PATCH``): a thread's stdout/stderr/display carry the
  header of the cell that started it (a ``ThreadPoolExecutor`` work item: that submitted it), so a thread that keeps printing after its cell ended shows
  up in later cells as labelled *background* output (``outputs.OutputCollector.add_background``),
  never as their own; it does not count toward their flood limit, but more than ``flood_chars``
  of it during one cell restarts the kernel (the only way to stop a thread).

After an interrupt the kernel has ``interrupt_grace`` to go idle. A flood leaves tens of MB in
flight that a loaded host needs seconds to decode; while the messages read were sent within the
grace the host waits up to ``BACKLOG_GRACE_FACTOR`` times as long before it calls the kernel stuck.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import zmq
from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

from . import launcher
from .bridge import Handler, ToolBridge, ToolCallError
from .outputs import CellOutput, OutputCollector, format_outputs
from .sandbox import (
    HOME_IN_SANDBOX,
    SandboxLimits,
    SandboxUnavailable,
    UidLease,
    build_bwrap_argv,
    check_bwrap,
    host_is_root,
    kernel_environment,
)

log = logging.getLogger(__name__)

SandboxMode = Literal["auto", "bwrap", "none"]
DRAIN_MAX_MESSAGES = 1_000  # per channel and call: a thread printing forever cannot stall a drain
# After an interrupt the kernel has interrupt_grace to go idle; a host still decoding output the
# kernel sent within that time (tens of MB of flood, on a loaded machine) waits up to this many
# times the grace before it calls the kernel stuck.
BACKLOG_GRACE_FACTOR = 3
_IN_KERNEL_SOURCE = (Path(__file__).with_name("in_kernel.py")).read_text(encoding="utf-8")
# Run in the kernel at start (see the module docstring): a thread writes with the parent header of
# the code that started it (a thread pool's work item: of the code that submitted it), not of
# whatever cell runs when it prints. Needs ``set_thread_parent``/``reset_thread_parent`` on the
# streams and the display publisher (ipykernel 7 has them); without them nothing changes.
_THREAD_PARENT_PATCH = """
def _l0_patch_threads():
    import sys, threading
    from concurrent.futures import ThreadPoolExecutor
    from IPython import get_ipython

    original_start, original_submit = threading.Thread.start, ThreadPoolExecutor.submit
    if getattr(original_start, "_l0_parent_patch", False):
        return

    def parents():
        pubs = [sys.stdout, sys.stderr, getattr(get_ipython(), "display_pub", None)]
        return [(p, p.parent_header) for p in pubs if hasattr(p, "reset_thread_parent")]

    def start(self, *args, **kwargs):
        headers = parents()
        if headers:
            run = self.run

            def run_with_parent():
                for pub, header in headers:
                    pub.set_thread_parent(header)
                return run()

            self.run = run_with_parent
        return original_start(self, *args, **kwargs)

    def submit(self, fn, /, *args, **kwargs):
        headers = parents()  # a pool's work item belongs to the cell that submitted it

        def call_with_parent(*a, **k):
            tokens = [(pub, pub.set_thread_parent(header)) for pub, header in headers]
            try:
                return fn(*a, **k)
            finally:
                for pub, token in reversed(tokens):
                    pub.reset_thread_parent(token)

        return original_submit(self, call_with_parent if headers else fn, *args, **kwargs)

    start._l0_parent_patch = True
    threading.Thread.start, ThreadPoolExecutor.submit = start, submit

_l0_patch_threads()
del _l0_patch_threads
"""
_bwrap_problem: str | bool | None = False  # False: not checked yet
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_bwrap_lock = threading.Lock()
# A kernel can send one huge message (up to its memory limit) that jupyter_client would decode in
# full, several times over, in host memory: zmq drops the connection for anything larger.
MAX_MESSAGE_BYTES = 64 << 20
KERNEL_LOG_TAIL_BYTES = 8192
_zmq_context: zmq.Context | None = None
_zmq_context_pid = -1


def _client_context() -> zmq.Context:
    global _zmq_context, _zmq_context_pid
    with _bwrap_lock:
        if _zmq_context is None or _zmq_context_pid != os.getpid():  # zmq contexts do not survive fork
            _zmq_context, _zmq_context_pid = zmq.Context(), os.getpid()
            _zmq_context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)  # default for new sockets
        return _zmq_context


def _sent_at(msg: dict[str, Any]) -> float | None:
    """When the kernel sent ``msg`` (its header's date; same clock as the host's), if known."""
    date = msg.get("header", {}).get("date")
    return date.timestamp() if isinstance(date, datetime) else None


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


@dataclass(frozen=True)
class KernelConfig:
    """How kernels are started and how cells are run.

    Attributes:
        sandbox: "bwrap" (refuse to run without bubblewrap), "auto" (bubblewrap when it works,
            else a loud warning and no sandbox), or "none".
        limits: resource limits inside the sandbox.
        cell_timeout: wall-clock seconds a cell may run before it is interrupted.
        interrupt_grace: seconds to wait for an interrupted cell to stop (and for the kernel to
            confirm the interrupt) before killing the kernel.
        max_output_chars: characters of a cell's output shown to the agent (head + tail kept).
        flood_chars: a cell that prints more than this is interrupted (protects host memory).
        startup_timeout: seconds a kernel may take to start.
        python: the interpreter that runs ipykernel (must have ipykernel installed).
    """

    sandbox: SandboxMode = "auto"
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    cell_timeout: float = 30.0
    interrupt_grace: float = 3.0
    max_output_chars: int = 4_000
    flood_chars: int = 5_000_000
    startup_timeout: float = 60.0
    # Normalised: "/x/scripts/../.venv/bin/python" would pass through a dir the sandbox lacks.
    python: str = os.path.normpath(sys.executable)

    def __post_init__(self) -> None:
        if self.sandbox not in ("auto", "bwrap", "none"):
            raise ValueError(f"sandbox must be 'auto', 'bwrap' or 'none', got {self.sandbox!r}")
        for name in ("cell_timeout", "interrupt_grace", "startup_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        for name in ("max_output_chars", "flood_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 100:
                raise ValueError(f"{name} must be an int >= 100, got {value!r}")


def resolve_sandbox(mode: SandboxMode) -> bool:
    """Whether to use bubblewrap for ``mode``; raises or warns when it cannot run."""
    global _bwrap_problem
    if mode == "none":
        return False
    with _bwrap_lock:
        if _bwrap_problem is False:
            _bwrap_problem = check_bwrap()
    if _bwrap_problem is None:
        return True
    if mode == "bwrap":
        raise SandboxUnavailable(f"sandbox='bwrap' but {_bwrap_problem}")
    message = (
        f"L0 Gym: RUNNING MODEL-WRITTEN CODE WITHOUT A SANDBOX, because {_bwrap_problem}. "
        "The code can read your files, use the network and kill your processes. "
        "Install bubblewrap, or pass sandbox='bwrap' to refuse to run unsandboxed."
    )
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    log.warning(message)
    return False


@dataclass
class CellResult:
    """What running one cell produced.

    Attributes:
        status: "ok", "error" (the code raised), "timeout" (interrupted or killed after the time
            limit), "died" (the kernel process died) or "output_limit" (stopped for flooding).
        outputs: the cell's outputs, in order (bounded; host notes last).
        text: the observation text for the agent.
        n_outputs / n_errors: counts for the code-execution reward.
        restarted: the kernel was restarted (variables lost, tools and notepad restored).
        duration_s: wall time of the cell.
    """

    status: str
    outputs: list[CellOutput]
    text: str
    n_outputs: int
    n_errors: int
    restarted: bool
    duration_s: float


class SandboxedKernel:
    """One IPython kernel in its own sandbox with its own tool bridge.

    Not thread-safe: one caller at a time. ``close()`` is idempotent and kills every process.
    """

    def __init__(self, config: KernelConfig | None = None) -> None:
        self.config = config or KernelConfig()
        self.sandboxed = resolve_sandbox(self.config.sandbox)
        base = os.environ.get("L0_RUNTIME_DIR") or None
        self.runtime_dir = tempfile.mkdtemp(prefix="l0k-", dir=base)
        os.chmod(self.runtime_dir, 0o711)
        self._uid_lease = UidLease() if self.sandboxed and host_is_root() else None
        uid = self._uid_lease.uid if self._uid_lease else None
        self.bridge = ToolBridge(os.path.join(self.runtime_dir, "bridge.sock"), owner_uid=uid)
        self.bridge.handler = self._handle_tool_call
        self.tool_handler: Handler | None = None  # the episode's tools; set by the env
        self._notepad_state: dict[str, Any] = {}
        self._proc: subprocess.Popen | None = None
        self._client: BlockingKernelClient | None = None
        self._workdir: str | None = None
        self._log: _OutputTail | None = None
        self._closed = False
        self.restarts = 0
        self.malformed_messages = 0  # dropped by _recv: they did not decode
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        uid = self._uid_lease.uid if self._uid_lease else None
        for name in os.listdir(self.runtime_dir):  # sockets of a previous kernel
            if name != "bridge.sock":
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.runtime_dir, name))
        if uid is not None:
            os.chown(self.runtime_dir, uid, uid)  # the kernel creates its ipc sockets here
        conn_file = os.path.join(self.runtime_dir, "kernel.json")
        write_connection_file(conn_file, ip=os.path.join(self.runtime_dir, "k"), transport="ipc")
        if uid is not None:
            os.chown(conn_file, uid, uid)
        # No history database: it lives in the tmpfs home, and when the agent fills the disk its
        # writer thread prints "database or disk is full" into the agent's cell output.
        command = [self.config.python, "-m", "ipykernel_launcher", "-f", conn_file, "--quiet"]
        command += ["--HistoryManager.enabled=False"]
        if self.sandboxed:
            argv = build_bwrap_argv(
                command,
                runtime_dir=self.runtime_dir,
                limits=self.config.limits,
                uid=uid,
                env=kernel_environment(),
            )
            cwd = None
        else:
            self._workdir = tempfile.mkdtemp(prefix="l0-work-")
            argv, cwd = command, self._workdir
        env = kernel_environment({"HOME": self._workdir}) if not self.sandboxed else None
        self._proc = launcher.spawn(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env if env is not None else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            preexec_fn=self.config.limits.apply,
            start_new_session=True,
        )
        self._log = _OutputTail(self._proc.stdout)
        client = BlockingKernelClient(context=_client_context())
        client.load_connection_file(conn_file)
        client.start_channels()
        self._client = client
        self._wait_ready()
        if uid is not None:
            # Sockets exist now: take the directory and the connection file (read once, at start)
            # back, so the sandbox cannot write host disk.
            os.chown(conn_file, 0, 0)
            os.chown(self.runtime_dir, 0, 0)
            os.chmod(self.runtime_dir, 0o711)
        self._install_tools()

    def _wait_ready(self) -> None:
        assert self._client is not None and self._proc is not None and self._log is not None
        deadline = time.monotonic() + self.config.startup_timeout
        msg_id = self._client.kernel_info()
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                detail = self._log.text(wait=2.0)
                raise KernelStartError(f"kernel exited with code {self._proc.returncode}: {detail}")
            try:
                reply = self._recv("shell", 0.2)
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
        # timeout. Ask again until a status message arrives on iopub.
        while time.monotonic() < deadline:
            try:
                msg = self._recv("iopub", 0.2)
            except queue.Empty:
                if self._proc.poll() is not None:
                    break
                self._client.kernel_info()
                continue
            if msg["msg_type"] == "status":
                self._drain_iopub()
                with contextlib.suppress(queue.Empty):
                    while True:
                        self._recv("shell", 0.05)
                return
        raise KernelStartError(
            f"kernel iopub not connected after {self.config.startup_timeout}s: {self._log.text()}"
        )

    def _recv(self, channel: Literal["shell", "control", "iopub"], timeout: float) -> dict[str, Any]:
        """The next message on ``channel`` within ``timeout`` seconds, else ``queue.Empty``.

        A message that does not decode (not JSON, a bad signature, missing frames) is dropped and
        reported as ``queue.Empty``, never raised: the kernel runs untrusted code, and a SIGINT
        that lands while it sends a reply leaves that reply's frames glued to the next message
        (seen under load after an output flood), so a malformed message must not crash the host.
        """
        assert self._client is not None
        try:
            return getattr(self._client, f"get_{channel}_msg")(timeout=timeout)
        except queue.Empty:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            self.malformed_messages += 1
            log.warning("dropped a malformed %s message from the kernel: %s", channel, exc)
            raise queue.Empty from None

    def _drain_iopub(self, collector: OutputCollector | None = None) -> None:
        """Take what is queued from earlier requests, without waiting and at most a bounded number.

        iopub output goes to ``collector`` as background output (dropped without one); stale shell
        replies (``execute_reply`` is never read) and control replies are dropped, so their queues
        do not grow. ``_run`` filters by msg_id too: what arrives later is handled there.
        """
        for channel in ("shell", "control"):
            with contextlib.suppress(queue.Empty):
                for _ in range(DRAIN_MAX_MESSAGES):
                    self._recv(channel, 0)
        with contextlib.suppress(queue.Empty):
            for _ in range(DRAIN_MAX_MESSAGES):
                msg = self._recv("iopub", 0)
                if collector is not None:
                    collector.add_background(msg["msg_type"], msg["content"])

    def _install_tools(self) -> None:
        bridge_path = self.bridge.path
        code = _THREAD_PARENT_PATCH + (
            "import types as _t, sys as _s\n"
            "_m = _t.ModuleType('l0_tools')\n"
            f"exec(compile({_IN_KERNEL_SOURCE!r}, 'l0_tools', 'exec'), _m.__dict__)\n"
            "_s.modules['l0_tools'] = _m\n"
            f"_m._l0_install({bridge_path!r}, __import__('json').loads({json.dumps(self._notepad_state)!r}))\n"
            "del _t, _s, _m\n"
        )
        result = self._run(code, timeout=self.config.startup_timeout, silent=True)
        if result.status != "ok":
            raise KernelStartError(f"installing the tools in the kernel failed: {result.text}")

    def restart(self) -> None:
        """Kill the kernel and its sandbox, start a fresh one, reinstall tools and notepad."""
        self._kill()
        self.restarts += 1
        self._start()

    def _kill(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.stop_channels()
            self._client = None
        if self._proc is not None:
            if self._proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
            self._proc = None

    def close(self) -> None:
        """Kill the kernel, stop the bridge, delete the runtime directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._kill()
        if getattr(self, "bridge", None) is not None:
            self.bridge.close()
        if self._uid_lease is not None:
            self._uid_lease.release()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
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
            state = args.get("state")
            if not isinstance(state, dict):
                raise ToolCallError("ValueError", "notepad state must be an object")
            self._notepad_state = state
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
        assert self._client is not None and self._proc is not None
        cfg = self.config
        started = time.monotonic()
        collector = OutputCollector(keep_chars=cfg.max_output_chars * 4, tail_chars=cfg.max_output_chars)
        if notice:
            collector.add_note("stream", "stderr", notice)
        self._drain_iopub(collector)
        msg_id = self._client.execute(code, silent=silent, store_history=not silent, allow_stdin=False)
        deadline = started + timeout
        status = "ok"
        interrupt_id: str | None = None  # our interrupt_request, once sent
        interrupted_at = interrupted_wall = 0.0
        idle = acknowledged = behind = False
        while True:
            now = time.monotonic()
            # A host slow to decode a flood's backlog is no stuck kernel: while the messages it reads
            # were sent within the grace, it waits longer (bounded).
            grace = cfg.interrupt_grace * (BACKLOG_GRACE_FACTOR if behind else 1)
            if interrupt_id is not None and now > interrupted_at + grace:
                return self._after_kill(collector, started, status, self._stuck_reason(status, timeout, idle))
            if interrupt_id is None and now > deadline:
                interrupt_id, status = self._interrupt(), "timeout"
                interrupted_at, interrupted_wall = now, time.time()
            if interrupt_id is not None and not acknowledged:
                # Not done until the SIGINT is sent: a late one would interrupt the next cell.
                acknowledged = self._interrupt_acknowledged(interrupt_id, timeout=0.1 if idle else 0)
            if idle:
                behind = False
                if acknowledged:
                    break
                if self._proc.poll() is not None:
                    return self._after_kill(collector, started, "died")
                continue
            try:
                msg = self._recv("iopub", 0.1)
            except queue.Empty:
                behind = False
                if self._proc.poll() is not None:
                    return self._after_kill(collector, started, "died")
                continue
            if interrupt_id is not None:
                sent = _sent_at(msg)
                behind = sent is not None and sent < interrupted_wall + cfg.interrupt_grace
            msg_type, content = msg["msg_type"], msg["content"]
            if msg["parent_header"].get("msg_id") != msg_id:
                collector.add_background(msg_type, content)  # a thread of an earlier cell, say
                if collector.background_chars > cfg.flood_chars:
                    why = (
                        f"OutputLimit: code that an earlier cell started (a background thread) printed over "
                        f"{cfg.flood_chars} characters, so the kernel was restarted to stop it."
                    )
                    return self._after_kill(collector, started, "output_limit", why)
                continue
            if msg_type == "status":
                if content.get("execution_state") == "idle":
                    idle = True
                    if interrupt_id is None:
                        break
                continue
            if (
                interrupt_id is not None
                and msg_type == "error"
                and content.get("ename") == "KeyboardInterrupt"
            ):
                continue  # replaced by the clearer note below
            collector.add(msg_type, content)
            if collector.total_chars > cfg.flood_chars and interrupt_id is None:
                interrupt_id, status = self._interrupt(), "output_limit"
                interrupted_at, interrupted_wall = time.monotonic(), time.time()
        if status == "timeout":
            collector.add_note("error", "TimeoutError", self._limit_message(status, timeout), is_error=True)
        elif status == "output_limit":
            collector.add_note("error", "OutputLimit", self._limit_message(status, timeout), is_error=True)
        elif collector.n_errors:
            status = "error"
        return self._result(status, collector, started, restarted=False)

    def _limit_message(self, status: str, timeout: float) -> str:
        if status == "timeout":
            return f"TimeoutError: the cell ran longer than {timeout:g}s and was interrupted."
        return f"OutputLimit: the cell printed over {self.config.flood_chars} characters and was stopped."

    def _stuck_reason(self, status: str, timeout: float, idle: bool) -> str:
        """Why an interrupted cell ends in a restart: it did not stop, or the kernel did not confirm."""
        if idle:
            return (
                f"{self._limit_message(status, timeout)} The kernel did not confirm the interrupt within "
                f"{self.config.interrupt_grace:g}s (it could have hit the next cell), so it was restarted."
            )
        if status == "timeout":
            return (
                f"TimeoutError: the cell ran longer than {timeout:g}s and did not stop when interrupted "
                "(stuck in C code), so the kernel was restarted."
            )
        return (
            f"OutputLimit: the cell printed over {self.config.flood_chars} characters and did not stop "
            "when interrupted, so the kernel was restarted."
        )

    def _interrupt(self) -> str:
        """Ask the kernel to interrupt the running cell; returns the request's msg_id."""
        assert self._client is not None
        msg = self._client.session.msg("interrupt_request", content={})
        self._client.control_channel.send(msg)
        return msg["header"]["msg_id"]

    def _interrupt_acknowledged(self, interrupt_id: str, timeout: float) -> bool:
        """Whether the kernel's reply to ``interrupt_id`` is in: it is sent after the SIGINT."""
        assert self._client is not None
        with contextlib.suppress(queue.Empty):
            for _ in range(DRAIN_MAX_MESSAGES):
                reply = self._recv("control", timeout)
                if reply["parent_header"].get("msg_id") == interrupt_id:
                    return True
                timeout = 0  # a stale reply of an earlier request: look at what else is queued
        return False

    def _after_kill(
        self, collector: OutputCollector, started: float, status: str, why: str = ""
    ) -> CellResult:
        if status == "died":
            code = self._proc.returncode if self._proc else None
            why = f"KernelDied: the kernel process died (exit code {code}; out of memory or killed), so it was restarted."
        why += " All variables and imports are lost; the tools and the notepad are restored."
        collector.add_note("error", "KernelRestarted", why, is_error=True)
        self.restart()
        return self._result(status, collector, started, restarted=True)

    def _result(
        self, status: str, collector: OutputCollector, started: float, *, restarted: bool
    ) -> CellResult:
        outputs = collector.finish()
        return CellResult(
            status=status,
            outputs=outputs,
            text=format_outputs(outputs, limit=self.config.max_output_chars),
            n_outputs=collector.n_outputs,
            n_errors=collector.n_errors,
            restarted=restarted,
            duration_s=time.monotonic() - started,
        )


__all__ = [
    "HOME_IN_SANDBOX",
    "CellResult",
    "KernelConfig",
    "KernelStartError",
    "SandboxedKernel",
    "resolve_sandbox",
]
