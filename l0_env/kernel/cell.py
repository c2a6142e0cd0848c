"""One cell from request to result: the state machine that runs it, watches its output and its
clock, interrupts it, and says how it ended.

Which output belongs to which cell: every iopub message carries the header of the request that
caused it, and a cell's observation holds only the output of its own request. Two things make
that hold under load:

* An interrupt (cell timeout, output flood) is a control message that the kernel turns into a
  SIGINT; when the cell ends on its own at the same moment, that SIGINT can arrive late and land
  in the *next* cell (a KeyboardInterrupt there). So a cell we interrupted is only over when both
  its ``idle`` status and the kernel's ``interrupt_reply`` (sent after the signal) are in; if the
  reply does not come within ``interrupt_grace`` the kernel is restarted.
* ipykernel stamps output from threads with whatever cell is running when they print. The kernel
  is patched at start (``in_kernel_threads.py``): a thread's stdout/stderr/display carry the
  header of the cell that started it (a ``ThreadPoolExecutor`` work item: that submitted it), so
  a thread that keeps printing after its cell ended shows up in later cells as labelled
  *background* output (``outputs.OutputCollector.add_background``), never as their own; it does
  not count toward their flood limit, but more than ``flood_chars`` of it during one cell
  restarts the kernel (the only way to stop a thread).

After an interrupt the kernel has ``interrupt_grace`` to go idle. A flood leaves tens of MB in
flight that a loaded host needs seconds to decode; while the messages read were sent within the
grace the host waits up to ``BACKLOG_GRACE_FACTOR`` times as long before it calls the kernel stuck.

Whether the code raised comes from the kernel's ``execute_reply``, not from the outputs: a cell can
silence its traceback (``get_ipython().showtraceback = ...``) or make a hook print error outputs
into later cells, but not change the reply ipykernel sends (short of rewriting ipykernel itself).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import KernelConfig
from .outputs import CellOutput, OutputCollector
from .transport import KernelChannels, sent_at

# After an interrupt the kernel has interrupt_grace to go idle; a host still decoding output the
# kernel sent within that time (tens of MB of flood, on a loaded machine) waits up to this many
# times the grace before it calls the kernel stuck.
BACKLOG_GRACE_FACTOR = 3
# iopub is a PUB socket: past its high-water mark zmq drops messages, the cell's "idle" status
# among them (a cell that floods iopub with junk did this). The execute_reply comes on the shell
# socket, which the flood does not touch. Once it is in and iopub has been quiet this long, the
# cell is over: long enough for the kernel's I/O thread to publish the cell's last output on a
# loaded machine (it may trail the reply), short against the cell timeout it replaces.
IDLE_AFTER_REPLY_S = 2.0


@dataclass
class CellResult:
    """What running one cell produced.

    Attributes:
        status: "ok", "error" (the code raised), "timeout" (interrupted or killed after the time
            limit), "died" (the kernel process died) or "output_limit" (stopped for flooding).
        outputs: the cell's outputs, in order (bounded; host notes last).
        text: the observation text for the agent.
        n_outputs / n_errors: counts of the outputs and of the error outputs among them.
        restarted: the kernel was restarted (variables lost, tools and notepad restored).
        duration_s: wall time of the cell.
        reply_status: the status of the kernel's ``execute_reply`` ("ok", "error", "aborted"), or
            None when none came (the kernel died or was restarted, or did not answer in time).
            ``status`` is "error" whenever this is "error", whatever the outputs show: a cell
            cannot hide its exception by silencing its traceback.
    """

    status: str
    outputs: list[CellOutput]
    text: str
    n_outputs: int
    n_errors: int
    restarted: bool
    duration_s: float
    reply_status: str | None = None


@dataclass
class CellEnd:
    """How a run ended, for the kernel's owner to turn into a :class:`CellResult`.

    Attributes:
        status: as ``CellResult.status``.
        restart_reason: None when the kernel lives on; else the kernel must be killed and
            restarted, and this says why ("" for a kernel that died: its owner knows the cause).
        reply_status: as ``CellResult.reply_status``.
    """

    status: str
    restart_reason: str | None = None
    reply_status: str | None = None


class CellRun:
    """Runs one request to its end (``run()``), adding what it prints to ``collector``.

    The state: ``status`` ("ok" until the clock or the flood limit interrupts), the interrupt
    request once sent (and when), whether the kernel went ``idle``, whether it ``acknowledged``
    the interrupt, and whether the host is ``behind`` (still reading output sent within the grace).

    Args:
        channels: the kernel's channels.
        config: ``interrupt_grace`` and ``flood_chars`` come from it.
        code: the cell.
        timeout: seconds before it is interrupted.
        collector: where its output goes (background output included).
        process_exited: whether the kernel process has exited (then the run ends as "died").
        silent: run without history or execution count (the host's own setup code).
    """

    def __init__(
        self,
        channels: KernelChannels,
        config: KernelConfig,
        code: str,
        *,
        timeout: float,
        collector: OutputCollector,
        process_exited: Callable[[], bool],
        silent: bool = False,
    ) -> None:
        self._channels, self._config, self._code = channels, config, code
        self._timeout, self._silent = timeout, silent
        self.collector = collector
        self._process_exited = process_exited
        self.status = "ok"
        self._msg_id = ""
        self._deadline = 0.0
        self._interrupt_id: str | None = None
        self._interrupted_at = self._interrupted_wall = 0.0
        self._idle = self._acknowledged = self._behind = False
        self._reply: dict[str, Any] | None = None  # the execute_reply, once read
        self._quiet_since = 0.0  # when iopub last went quiet after the reply was in

    def run(self) -> CellEnd:
        self._msg_id = self._channels.execute(self._code, silent=self._silent)
        self._deadline = time.monotonic() + self._timeout
        while True:
            now = time.monotonic()
            if self._interrupt_id is not None and now > self._interrupted_at + self._grace():
                return CellEnd(self.status, restart_reason=self._stuck_reason())
            if self._interrupt_id is None and now > self._deadline:
                self._interrupt("timeout")
            if self._interrupt_id is not None and not self._acknowledged:
                # Not done until the SIGINT is sent: a late one would interrupt the next cell.
                wait = 0.1 if self._idle else 0
                self._acknowledged = self._channels.interrupt_acknowledged(self._interrupt_id, wait)
            if self._idle:
                self._behind = False
                if self._acknowledged:
                    return self._finish()
                if self._process_exited():
                    return CellEnd("died", restart_reason="")
                continue
            try:
                msg = self._channels.recv("iopub", 0.1)
            except queue.Empty:
                self._behind = False
                if self._process_exited():
                    return CellEnd("died", restart_reason="")
                if self._reply_without_idle():
                    self._idle = True  # its idle status was lost: the reply says the cell is over
                    if self._interrupt_id is None:
                        return self._finish()
                continue
            self._quiet_since = 0.0
            end = self._on_message(msg)
            if end is not None:
                return end

    def _reply_without_idle(self) -> bool:
        """Whether the execute_reply is in and iopub has stayed quiet ``IDLE_AFTER_REPLY_S`` since."""
        now = time.monotonic()
        if self._reply is None:
            self._reply = self._channels.execute_reply(self._msg_id, wait=0)
            if self._reply is None:
                return False
        if not self._quiet_since:
            self._quiet_since = now
        return now - self._quiet_since >= IDLE_AFTER_REPLY_S

    def _grace(self) -> float:
        # A host slow to decode a flood's backlog is no stuck kernel: while the messages it reads
        # were sent within the grace, it waits longer (bounded).
        return self._config.interrupt_grace * (BACKLOG_GRACE_FACTOR if self._behind else 1)

    def _interrupt(self, status: str) -> None:
        self._interrupt_id, self.status = self._channels.interrupt(), status
        self._interrupted_at, self._interrupted_wall = time.monotonic(), time.time()

    def _on_message(self, msg: dict[str, Any]) -> CellEnd | None:
        if self._interrupt_id is not None:
            sent = sent_at(msg)
            self._behind = sent is not None and sent < self._interrupted_wall + self._config.interrupt_grace
        msg_type, content = msg["msg_type"], msg["content"]
        flood = self._config.flood_chars
        if msg["parent_header"].get("msg_id") != self._msg_id:
            self.collector.add_background(msg_type, content)  # a thread of an earlier cell, say
            if self.collector.background_chars > flood:
                why = (
                    f"OutputLimit: code that an earlier cell started (a background thread) printed over "
                    f"{flood} characters, so the kernel was restarted to stop it."
                )
                return CellEnd("output_limit", restart_reason=why)
            return None
        if msg_type == "status":
            if content.get("execution_state") == "idle":
                self._idle = True
                if self._interrupt_id is None:
                    return self._finish()
            return None
        if (
            self._interrupt_id is not None
            and msg_type == "error"
            and content.get("ename") == "KeyboardInterrupt"
        ):
            return None  # replaced by the clearer note _finish adds
        self.collector.add(msg_type, content)
        if self.collector.total_chars > flood and self._interrupt_id is None:
            self._interrupt("output_limit")
        return None

    def _finish(self) -> CellEnd:
        """The cell is over and the kernel lives: read its reply, add the host's notes."""
        reply = self._reply or self._channels.execute_reply(self._msg_id, wait=self._config.interrupt_grace)
        reply_status = reply.get("status") if reply is not None else None
        status, collector = self.status, self.collector
        if status == "timeout":
            collector.add_note("error", "TimeoutError", self._limit_message(), is_error=True)
        elif status == "output_limit":
            collector.add_note("error", "OutputLimit", self._limit_message(), is_error=True)
        elif reply_status in ("error", "aborted") or (reply is None and collector.n_errors):
            # Without a reply (it did not come in time): the outputs are all there is to go by.
            status = "error"
            if not collector.n_errors and reply is not None:
                collector.add_note("error", "error", _reply_error_text(reply), is_error=True)
        return CellEnd(status, reply_status=reply_status if isinstance(reply_status, str) else None)

    def _limit_message(self) -> str:
        if self.status == "timeout":
            return f"TimeoutError: the cell ran longer than {self._timeout:g}s and was interrupted."
        return f"OutputLimit: the cell printed over {self._config.flood_chars} characters and was stopped."

    def _stuck_reason(self) -> str:
        """Why an interrupted cell ends in a restart: it did not stop, or the kernel did not confirm."""
        if self._idle:
            return (
                f"{self._limit_message()} The kernel did not confirm the interrupt within "
                f"{self._config.interrupt_grace:g}s (it could have hit the next cell), so it was restarted."
            )
        if self.status == "timeout":
            return (
                f"TimeoutError: the cell ran longer than {self._timeout:g}s and did not stop when interrupted "
                "(stuck in C code), so the kernel was restarted."
            )
        return (
            f"OutputLimit: the cell printed over {self._config.flood_chars} characters and did not stop "
            "when interrupted, so the kernel was restarted."
        )


def _reply_error_text(reply: dict[str, Any]) -> str:
    """What an ``execute_reply`` with status "error" says went wrong (kernel text: bounded)."""
    ename, evalue = str(reply.get("ename") or "Error")[:200], str(reply.get("evalue") or "")[:800]
    return (
        f"{ename}: {evalue}".rstrip(": ") + "\n(the cell raised, but no traceback was shown: the kernel's "
        "reply says the execution failed)"
    )
