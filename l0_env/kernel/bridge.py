"""The tool bridge, host side: a Unix socket bound into the sandbox, one JSON line each way.

Tools run on the host (the search index, budgets and API keys never enter the kernel). The kernel
side is ``in_kernel._Bridge``. A request is ``{"op": str, "args": {...}}``; the reply is
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"type": ..., "message": ...}}``.
Anything malformed gets an error reply, never an exception on the host.

Everything the kernel sends is untrusted text. JSON's ``\\ud800`` escapes decode to lone
surrogates: valid in a Python ``str``, not in UTF-8, so one would make every later encode of it
raise (the records, the policy's tokenizer). :func:`clean_text` replaces each with U+FFFD here,
where the text enters the host, so every handler and everything downstream sees encodable text.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1 << 20
REQUEST_READ_TIMEOUT_S = 10.0
# Honest requests nest 4 levels (the notepad); deep nesting would make the host's json.loads,
# deepcopy, repr and json.dumps of the args (in info, records) raise RecursionError.
MAX_ARGS_DEPTH = 32
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# In the raw request a lone surrogate can only come from a \\uD800-\\uDFFF escape (the strict UTF-8
# decode refuses encoded ones): only such requests need the walk over every string.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so it encodes to UTF-8."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def _clean_strings(value: Any) -> Any:
    """JSON data with :func:`clean_text` applied to every string, keys included.

    Recursive: callers bound the depth first (``MAX_ARGS_DEPTH``).
    """
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [_clean_strings(item) for item in value]
    if isinstance(value, dict):
        return {clean_text(key): _clean_strings(item) for key, item in value.items()}
    return value


class ToolCallError(Exception):
    """Raised by a handler to send the agent a Python exception of ``kind`` with ``message``.

    ``kind`` is one of the names the kernel maps to exceptions: TypeError, ValueError,
    LookupError, KeyError, BudgetExhausted, ToolError.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


Handler = Callable[[str, dict[str, Any]], Any]


def _no_handler(op: str, args: dict[str, Any]) -> Any:
    raise ToolCallError("ToolError", "no episode is running; tools are unavailable")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON data nests more than ``limit`` containers deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


class ToolBridge:
    """Listens on ``path``; each request is answered by ``handler(op, args)`` (set per episode).

    One thread per bridge accepts and serves connections one at a time, so a handler never runs
    concurrently with itself for the same kernel (calls from threads inside the kernel queue up).
    """

    def __init__(self, path: str, *, owner_uid: int | None = None) -> None:
        self.path = path
        self.handler: Handler = _no_handler
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        if owner_uid is not None:
            os.chown(path, owner_uid, owner_uid)
        os.chmod(path, 0o600)
        # Room for every thread of a kernel to connect at once (its process limit is 64) while a
        # loaded host is slow to accept: a full backlog makes a connect with a timeout fail at once
        # (EAGAIN), which the agent would see as an unreachable tool service.
        self._sock.listen(128)
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, name=f"l0-bridge-{os.path.basename(path)}", daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            with conn, contextlib.suppress(OSError):
                try:
                    self._answer(conn)
                except OSError:
                    pass  # the client went away; there is nobody to tell
                except Exception as exc:  # one bad request must never stop the bridge
                    log.warning("tool bridge request failed: %r", exc, exc_info=True)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(REQUEST_READ_TIMEOUT_S)
        buf = bytearray()
        try:
            while b"\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > MAX_REQUEST_BYTES:
                    self._send(
                        conn, self._error("ValueError", f"request larger than {MAX_REQUEST_BYTES} bytes")
                    )
                    return
        except TimeoutError:
            return
        self._send(conn, self.dispatch(bytes(buf)))

    def dispatch(self, raw: bytes) -> dict[str, Any]:
        """Decode one request and run the handler; always returns a reply dict."""
        try:
            request = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return self._error("ValueError", "malformed request (not JSON)")
        except RecursionError:
            return self._error("ValueError", f"malformed request: nested deeper than {MAX_ARGS_DEPTH} levels")
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return self._error("ValueError", "malformed request: expected {'op': str, 'args': dict}")
        args = request.get("args", {})
        if not isinstance(args, dict):
            return self._error("ValueError", "malformed request: 'args' must be an object")
        if _deeper_than(args, MAX_ARGS_DEPTH):
            return self._error("ValueError", f"malformed request: nested deeper than {MAX_ARGS_DEPTH} levels")
        op = request["op"]
        if _SURROGATE_ESCAPE.search(raw):
            op, args = clean_text(op), _clean_strings(args)
        try:
            return {"ok": True, "result": self.handler(op, args)}
        except ToolCallError as exc:
            return self._error(exc.kind, exc.message)
        except Exception as exc:  # a bug or backend failure must not kill the host: tell the agent
            name = op[:64]  # the op is the kernel's text: a 1 MB name must not reach the log or reply
            log.warning("tool %r failed: %r", name, exc, exc_info=True)
            # Only the type: an exception's text may carry what the kernel must not see (an API
            # key in a URL, a host path). The host log has the details.
            return self._error("ToolError", f"{name} failed on the host ({type(exc).__name__}); try again")

    @staticmethod
    def _error(kind: str, message: str) -> dict[str, Any]:
        return {"ok": False, "error": {"type": kind, "message": message}}

    @staticmethod
    def _send(conn: socket.socket, reply: dict[str, Any]) -> None:
        try:
            data = json.dumps(reply, ensure_ascii=False).encode("utf-8", errors="replace")
        except (TypeError, ValueError) as exc:
            data = json.dumps({"ok": False, "error": {"type": "ToolError", "message": str(exc)}}).encode()
        conn.sendall(data + b"\n")

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
