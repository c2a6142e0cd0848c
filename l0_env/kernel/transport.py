"""The host's end of the Jupyter protocol to one kernel: signed messages over ipc sockets.

Transport is ``ipc`` (Unix sockets in the kernel's private runtime directory): no TCP port races
and nothing the sandbox's empty network namespace would need. Messages are signed (HMAC-SHA256)
with a fresh random key per kernel start (:func:`write_connection_file`). The kernel holds the key,
so signing does not protect the host from the kernel (nothing can: it runs the agent's code); it
stops anyone who can reach the kernel's sockets but cannot read the 0600 connection file (another
local user, under a loose umask) from running code in the kernel, and a corrupted frame fails its
signature instead of being parsed.

Everything that comes out of the kernel is untrusted: a message that does not decode is counted
and dropped (:class:`MalformedLog`), never raised; one over ``MAX_MESSAGE_BYTES`` drops the
connection at the zmq level; reads are bounded per call (``DRAIN_MAX_MESSAGES``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import zmq
from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file as _jupyter_write_connection_file

log = logging.getLogger(__name__)

Channel = Literal["shell", "control", "iopub"]
DRAIN_MAX_MESSAGES = 1_000  # per channel and call: a thread printing forever cannot stall a drain
# A kernel can send one huge message (up to its memory limit) that jupyter_client would decode in
# full, several times over, in host memory: zmq drops the connection for anything larger.
MAX_MESSAGE_BYTES = 64 << 20

# The client connects before a fresh kernel has bound its sockets; zmq then retries every
# RECONNECT_IVL (default 100 ms), which a kernel start waited out for its shell reply and again for
# its iopub subscription. 10 ms costs nothing on local ipc sockets.
RECONNECT_IVL_MS = 10
_context_lock = threading.Lock()
_zmq_context: zmq.Context | None = None
_zmq_context_pid = -1


def client_context() -> zmq.Context:
    """The process's zmq context for kernel clients (a new one after ``fork``: they do not survive it)."""
    global _zmq_context, _zmq_context_pid
    with _context_lock:
        if _zmq_context is None or _zmq_context_pid != os.getpid():
            _zmq_context, _zmq_context_pid = zmq.Context(), os.getpid()
            _zmq_context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)  # default for new sockets
            _zmq_context.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
        return _zmq_context


def reset_client_context() -> None:
    """Forget the process's client context: the next one takes the current settings (benchmarks).
    Kernels connected through the old one keep it."""
    global _zmq_context
    with _context_lock:
        _zmq_context = None


def write_connection_file(path: str, ipc_base: str) -> None:
    """A connection file for ipc sockets named ``ipc_base-N``, with a fresh 256-bit signing key."""
    _jupyter_write_connection_file(
        path, ip=ipc_base, transport="ipc", key=secrets.token_hex(32).encode(), signature_scheme="hmac-sha256"
    )


def sent_at(msg: dict[str, Any]) -> float | None:
    """When the kernel sent ``msg`` (its header's date; same clock as the host's), if known."""
    date = msg.get("header", {}).get("date")
    return date.timestamp() if isinstance(date, datetime) else None


class MalformedLog:
    """Counts the kernel's malformed messages; logs the first, then one summary line per cell.

    The kernel decides how many it sends (35,000 in one 12 s cell were seen): a line each would
    flood the host's log and slow the host down past the cell's timeout.
    """

    def __init__(self) -> None:
        self.count = 0
        self._logged = 0  # how many of them the log has accounted for

    def add(self, channel: str, error: Exception) -> None:
        self.count += 1
        if not self._logged:
            self._logged = 1
            log.warning(
                "dropped a malformed %s message from the kernel: %s (further ones are counted, "
                "and summed up once per cell)",
                channel,
                str(error)[:200],
            )

    def summarize(self) -> None:
        """One line for those dropped since the last line (called at the end of each cell)."""
        new = self.count - self._logged
        if new > 0:
            self._logged = self.count
            log.warning(
                "dropped %d more malformed messages from the kernel (%d since it started)", new, self.count
            )


class KernelChannels:
    """A connected client for one kernel process: read, send, drain, interrupt.

    Args:
        connection_file: the kernel's connection file (sockets and signing key).
        malformed: where dropped messages are counted (shared across restarts of one kernel).
    """

    def __init__(self, connection_file: str, malformed: MalformedLog) -> None:
        self._malformed = malformed
        self._client = BlockingKernelClient(context=client_context())
        self._client.load_connection_file(connection_file)
        self._client.start_channels()

    def recv(self, channel: Channel, timeout: float) -> dict[str, Any]:
        """The next message on ``channel`` within ``timeout`` seconds, else ``queue.Empty``.

        A message that does not decode (not JSON, a bad signature, missing frames) is dropped and
        reported as ``queue.Empty``, never raised: the kernel runs untrusted code, and a SIGINT
        that lands while it sends a reply leaves that reply's frames glued to the next message
        (seen under load after an output flood), so a malformed message must not crash the host.
        """
        try:
            return getattr(self._client, f"get_{channel}_msg")(timeout=timeout)
        except queue.Empty:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            self._malformed.add(channel, exc)
            raise queue.Empty from None

    def drain(self, on_iopub: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        """Take what is queued from earlier requests, without waiting and at most a bounded number.

        iopub messages go to ``on_iopub(msg_type, content)`` (dropped without one); stale shell
        replies (one that came after the host stopped waiting for it) and control replies are
        dropped, so their queues do not grow.
        """
        for channel in ("shell", "control"):
            with contextlib.suppress(queue.Empty):
                for _ in range(DRAIN_MAX_MESSAGES):
                    self.recv(channel, 0)
        with contextlib.suppress(queue.Empty):
            for _ in range(DRAIN_MAX_MESSAGES):
                msg = self.recv("iopub", 0)
                if on_iopub is not None:
                    on_iopub(msg["msg_type"], msg["content"])

    def execute(self, code: str, *, silent: bool = False) -> str:
        """Send an ``execute_request``; returns its msg_id."""
        return self._client.execute(code, silent=silent, store_history=not silent, allow_stdin=False)

    def kernel_info(self) -> str:
        """Send a ``kernel_info_request``; returns its msg_id."""
        return self._client.kernel_info()

    def interrupt(self) -> str:
        """Ask the kernel to interrupt the running cell (a control message: a signal sent to the
        launcher would hit bubblewrap and kill the sandbox); returns the request's msg_id."""
        msg = self._client.session.msg("interrupt_request", content={})
        self._client.control_channel.send(msg)
        return msg["header"]["msg_id"]

    def interrupt_acknowledged(self, interrupt_id: str, timeout: float) -> bool:
        """Whether the kernel's reply to ``interrupt_id`` is in: it is sent after the SIGINT."""
        with contextlib.suppress(queue.Empty):
            for _ in range(DRAIN_MAX_MESSAGES):
                reply = self.recv("control", timeout)
                if reply["parent_header"].get("msg_id") == interrupt_id:
                    return True
                timeout = 0  # a stale reply of an earlier request: look at what else is queued
        return False

    def execute_reply(self, msg_id: str, wait: float) -> dict[str, Any] | None:
        """The content of the kernel's ``execute_reply`` to ``msg_id``, or None if it did not come.

        ipykernel sends it just before its ``idle`` status, so it is normally queued already;
        under load it may trail by a moment: wait up to ``wait`` seconds.
        """
        deadline = time.monotonic() + wait
        for _ in range(DRAIN_MAX_MESSAGES):
            try:
                msg = self.recv("shell", max(deadline - time.monotonic(), 0))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return None
                continue  # a malformed message: keep looking until the deadline
            if (
                msg.get("parent_header", {}).get("msg_id") == msg_id
                and msg.get("msg_type") == "execute_reply"
            ):
                content = msg.get("content")
                return content if isinstance(content, dict) else None
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.stop_channels()
