"""A real OpenAI-compatible HTTP server on 127.0.0.1 that plays a script, for tests.

``ScriptedOpenAIServer`` serves ``POST /v1/chat/completions`` from a stdlib
:class:`~http.server.ThreadingHTTPServer` in a daemon thread. Each request takes the next
behaviour of the script (a reply, an error status, a hang, a malformed body, …); when the script
runs out it uses ``default`` (an error 500 unless given). A behaviour may also be a callable
``(RecordedRequest) -> behaviour``, to answer from the prompt. Every request is recorded.

Usage::

    with ScriptedOpenAIServer([Error(500), Reply("A")]) as srv:
        client = ChatClient(srv.base_url, "m", backoff_base=0.01)
        assert client.complete([{"role": "user", "content": "hi"}]) == "A"
        assert len(srv.requests) == 2

or as a fixture::

    @pytest.fixture
    def srv():
        with ScriptedOpenAIServer() as server:
            yield server

Hanging handlers wake up when the server stops, so leaving the ``with`` block is quick.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "Behaviour",
    "Drop",
    "Error",
    "Hang",
    "Raw",
    "RecordedRequest",
    "Reply",
    "ScriptedOpenAIServer",
    "Trickle",
    "chat_body",
    "last_user_content",
]

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    received_at: float  # time.monotonic()

    @property
    def json(self) -> Any:
        """The body parsed as JSON (``None`` if it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def last_user_content(request: RecordedRequest) -> str:
    """The content of the last user message of a recorded chat request ("" if none)."""
    body = request.json or {}
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def chat_body(text: str | None, *, model: str = "scripted", finish_reason: str = "stop") -> dict[str, Any]:
    """A chat-completions response body carrying ``text`` (``None``: content null)."""
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


@dataclass(frozen=True)
class Reply:
    """A 200 chat completion with ``text`` (``None`` sends ``"content": null``), after ``delay`` s."""

    text: str | None
    delay: float = 0.0
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Error:
    """An error status with an OpenAI-style ``{"error": {"message": ...}}`` body (or ``body``)."""

    status: int
    message: str = "scripted error"
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. {"Retry-After": "1"}
    body: bytes | None = None


@dataclass(frozen=True)
class Raw:
    """Any body with any status; ``content_length=False`` sends it delimited by closing the socket."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"
    content_length: bool = True
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Hang:
    """Read the request, then answer nothing for ``seconds`` (or until the server stops); then close."""

    seconds: float = 3600.0


@dataclass(frozen=True)
class Trickle:
    """A 200 response whose body arrives ``chunk`` bytes every ``interval`` seconds (no length)."""

    body: bytes
    chunk: int = 1
    interval: float = 0.5


@dataclass(frozen=True)
class Drop:
    """Close the connection without sending anything."""


Behaviour = Reply | Error | Raw | Hang | Trickle | Drop | Callable[[RecordedRequest], Any]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes, headers: Mapping[str, str], *, length: bool = True) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = RecordedRequest(
            method="POST",
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            received_at=time.monotonic(),
        )
        srv = self.server.owner
        srv._record(request)
        if self.path != CHAT_PATH:
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        behaviour = srv._next()
        while callable(behaviour) and not isinstance(behaviour, (Reply, Error, Raw, Hang, Trickle, Drop)):
            behaviour = behaviour(request)
        self._play(behaviour)

    def _play(self, b: Any) -> None:
        stop = self.server.owner._stop
        if isinstance(b, Reply):
            if b.delay:
                stop.wait(b.delay)
            self._json(200, chat_body(b.text, finish_reason=b.finish_reason))
        elif isinstance(b, Error):
            body = b.body if b.body is not None else json.dumps({"error": {"message": b.message}}).encode()
            self._send(b.status, body, {"Content-Type": "application/json", **b.headers})
        elif isinstance(b, Raw):
            self._send(
                b.status, b.body, {"Content-Type": b.content_type, **b.headers}, length=b.content_length
            )
        elif isinstance(b, Hang):
            stop.wait(b.seconds)
            self.close_connection = True
        elif isinstance(b, Trickle):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            for i in range(0, len(b.body), max(1, b.chunk)):
                if stop.is_set():
                    return
                try:
                    self.wfile.write(b.body[i : i + b.chunk])
                    self.wfile.flush()
                except OSError:  # the client gave up: that is what the test wants
                    return
                stop.wait(b.interval)
        elif isinstance(b, Drop):
            self.close_connection = True
        else:
            raise TypeError(f"not a scripted behaviour: {b!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hanging handler must not block server_close
    owner: ScriptedOpenAIServer


class ScriptedOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 that plays ``script`` one request at a time.

    Args:
        script: Behaviours, consumed in order, one per ``/v1/chat/completions`` request.
        default: What to do once the script is exhausted (default: ``Error(500, "script exhausted")``).
    """

    def __init__(self, script: Iterable[Behaviour] = (), *, default: Behaviour | None = None) -> None:
        self._script: list[Behaviour] = list(script)
        self.default: Behaviour = default if default is not None else Error(500, "script exhausted")
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._stop = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def push(self, *behaviours: Behaviour) -> None:
        """Append behaviours to the script."""
        with self._lock:
            self._script.extend(behaviours)

    def _next(self) -> Behaviour:
        with self._lock:
            return self._script.pop(0) if self._script else self.default

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far (a copy), in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The ``/v1/chat/completions`` requests received so far."""
        return [r for r in self.requests if r.path == CHAT_PATH]

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedOpenAIServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="scripted-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; wakes hanging handlers. Idempotent."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
