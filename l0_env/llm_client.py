"""A small, careful client for OpenAI-compatible ``/chat/completions`` servers (judges, filters).

One client serves the LLM judge (:mod:`l0_env.judge`) and the data pipeline's quality filter: any
OpenAI-compatible root (vLLM, SGLang, llama.cpp, OpenAI itself) given as ``base_url``, e.g.
``http://127.0.0.1:8000/v1``; requests go to ``{base_url}/chat/completions``.

What it does about failures:

* **Retries** with exponential backoff and full jitter on connection errors, timeouts, ``429`` and
  ``5xx``; a ``Retry-After`` header (seconds or an HTTP date) is respected up to
  ``max_retry_after`` seconds. Other ``4xx`` are not retried: the error says what the server said.
* **Bounded time**: each attempt has ``timeout`` seconds (connect, write, and for the whole body:
  a server that trickles bytes is cut off at the deadline, checked as each chunk arrives, so one
  attempt ends within ``timeout`` plus one read of at most ``timeout``).
* **Bounded size**: a body over ``max_response_bytes`` (8 MiB) is refused, whether announced by
  ``Content-Length`` or discovered while reading.
* **Malformed bodies** (not JSON, no ``choices``, ``content`` null) are an :class:`LLMError`, not
  retried: a server that answers 200 with garbage usually does so every time.
* **The API key** is sent only as ``Authorization: Bearer …``. It never appears in an error
  message, ``repr`` or log line; a server that echoes it back in an error body has it redacted.
  (It is kept in the pickled state, so that a pickled client works in another process.)

Nothing here imports torch; the client is thread-safe and picklable (the HTTP connection pool is
created lazily, per process).
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "ChatClient", "LLMError"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""Bodies larger than this are refused: a chat reply is kilobytes, not megabytes."""

_MAX_ERROR_CHARS = 300  # of the server's own message, quoted in an LLMError
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})  # plus every 5xx
_ROLES = frozenset({"system", "user", "assistant", "developer", "tool"})


class LLMError(RuntimeError):
    """The server could not give an answer (after retries); the message says why.

    Attributes:
        status_code: The last HTTP status seen, or ``None`` (connection error, timeout, bad body).
        attempts: How many requests were sent.
    """

    def __init__(self, message: str, *, status_code: int | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.attempts = attempts

    def __reduce__(self) -> tuple[Any, ...]:  # keep the attributes across pickling (worker pools)
        return (_rebuild_llm_error, (str(self), self.status_code, self.attempts))


def _rebuild_llm_error(message: str, status_code: int | None, attempts: int) -> LLMError:
    return LLMError(message, status_code=status_code, attempts=attempts)


class _Retryable(Exception):
    """One attempt failed in a way worth retrying (internal)."""

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


def _check_number(name: str, value: Any, *, minimum: float, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{name} must be {'an int' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _display_url(url: httpx.URL) -> str:
    """The URL without credentials or query (safe to put in a message)."""
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _server_message(body: bytes) -> str:
    """The error text a server sent: OpenAI's ``{"error": {"message"}}``, FastAPI's ``detail``, or raw."""
    text = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        for key in ("detail", "message"):
            if isinstance(data.get(key), str):
                return data[key]
    return text.strip()


def _bounded(text: str, limit: int = _MAX_ERROR_CHARS) -> str:
    text = " ".join(text.split())  # one line: server text may carry newlines or control characters
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more chars]"


def _content_text(content: Any) -> str | None:
    """A message's content: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        if parts and all(isinstance(p, str) for p in parts):
            return "".join(parts)  # type: ignore[arg-type]
    return None


def extract_reply(data: Any) -> str:
    """The assistant text of a chat-completions response body.

    Raises:
        ValueError: If the body is not a chat completion with a text reply; the message says how.
    """
    if not isinstance(data, dict):
        raise ValueError(f"the body is a JSON {type(data).__name__}, not an object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        hint = f" (server error: {_bounded(str(data['error']), 200)})" if "error" in data else ""
        raise ValueError(f"the body has no 'choices'{hint}")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise ValueError("choices[0] has no 'message' object")
    text = _content_text(message.get("content"))
    if text is None:
        refusal = message.get("refusal")
        why = f"; refusal: {_bounded(str(refusal), 200)}" if refusal else ""
        raise ValueError(
            f"choices[0].message.content is {type(message.get('content')).__name__}, not text{why}"
        )
    return text


def _validate_messages(messages: Any) -> None:
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValueError(f"messages[{i}] must be a dict, got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in _ROLES:
            raise ValueError(f"messages[{i}]['role'] must be one of {sorted(_ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}]['content'] must be a str, got {type(content).__name__}")


def _validate_sampling(max_tokens: Any, temperature: Any) -> None:
    _check_number("max_tokens", max_tokens, minimum=1, integer=True)
    _check_number("temperature", temperature, minimum=0.0)
    if temperature > 2.0:
        raise ValueError(f"temperature must be in [0, 2], got {temperature!r}")


class ChatClient:
    """Chat completions from an OpenAI-compatible server, with retries, timeouts and size limits.

    Args:
        base_url: The API root, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is added).
        model: The served model name sent in each request.
        api_key: Bearer token; ``None`` or empty sends no ``Authorization`` header (local servers).
        timeout: Seconds one attempt may take (see the module docstring for the exact bound).
        retries: Extra attempts after the first on a retryable failure (0: try once).
        max_concurrency: Requests in flight at once, across :meth:`complete_many` and threads.
        backoff_base: First backoff in seconds; doubled after each failed attempt, with full jitter.
        backoff_max: Cap on one backoff.
        max_retry_after: Cap on the wait a ``Retry-After`` header may ask for.
        max_response_bytes: Largest body accepted.
        extra_body: Extra fields merged into every request body (e.g. ``{"seed": 0}``).

    Raises:
        ValueError: On a bad argument (the message never contains the key).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        max_concurrency: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 60.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.strip():
            raise ValueError(
                f"base_url must be a non-empty string like http://127.0.0.1:8000/v1, got {base_url!r}"
            )
        try:
            url = httpx.URL(base_url.strip().rstrip("/") + "/chat/completions")
        except (httpx.InvalidURL, ValueError, TypeError):
            raise ValueError("base_url is not a valid URL (expected e.g. http://127.0.0.1:8000/v1)") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                f"base_url must be an http(s) URL with a host, e.g. http://127.0.0.1:8000/v1, "
                f"got {_display_url(url)!r}"
            )
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a non-empty string (the served model name), got {model!r}")
        if api_key is not None:
            if not isinstance(api_key, str):
                raise ValueError(f"api_key must be a str or None, got {type(api_key).__name__}")
            # A header cannot carry control characters or non-ASCII; say so without echoing the key.
            if any(not (32 <= ord(c) < 127) for c in api_key):
                raise ValueError("api_key contains a control or non-ASCII character (a stray newline?)")
        _check_number("timeout", timeout, minimum=0.0)
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        _check_number("retries", retries, minimum=0, integer=True)
        _check_number("max_concurrency", max_concurrency, minimum=1, integer=True)
        _check_number("backoff_base", backoff_base, minimum=0.0)
        _check_number("backoff_max", backoff_max, minimum=0.0)
        _check_number("max_retry_after", max_retry_after, minimum=0.0)
        _check_number("max_response_bytes", max_response_bytes, minimum=1, integer=True)
        if extra_body is not None and not isinstance(extra_body, Mapping):
            raise ValueError(f"extra_body must be a dict or None, got {type(extra_body).__name__}")

        self.base_url = base_url.strip().rstrip("/")
        self.model = model
        self.timeout = float(timeout)
        self.retries = retries
        self.max_concurrency = max_concurrency
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.max_retry_after = float(max_retry_after)
        self.max_response_bytes = max_response_bytes
        self.extra_body = dict(extra_body or {})
        self._url = url
        self._api_key = api_key or None
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        self._http: httpx.Client | None = None
        self._closed = False

    # --- pickling: settings travel, the connection pool does not -------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_lock", "_slots", "_http", "_closed"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return (
            f"ChatClient(base_url={_display_url(httpx.URL(self.base_url))!r}, model={self.model!r}, "
            f"api_key={key}, timeout={self.timeout}, retries={self.retries})"
        )

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool. Idempotent; the client cannot be used afterwards."""
        with self._lock:
            self._closed = True
            http, self._http = self._http, None
        if http is not None:
            http.close()

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._closed:
                raise RuntimeError("ChatClient is closed")
            if self._http is None:
                headers = {"Accept": "application/json"}
                if self._api_key:
                    headers["Authorization"] = f"Bearer {self._api_key}"
                self._http = httpx.Client(
                    headers=headers,
                    timeout=httpx.Timeout(self.timeout),
                    limits=httpx.Limits(
                        max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
                    ),
                    follow_redirects=False,  # a redirect would resend the key to wherever it points
                )
            return self._http

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text

    # --- one request ------------------------------------------------------------------------------
    def _attempt(self, body: dict[str, Any]) -> str:
        """Send once; return the reply, raise :class:`_Retryable` or :class:`LLMError`."""
        deadline = time.monotonic() + self.timeout
        try:
            with self._client().stream("POST", self._url, json=body) as resp:
                declared = resp.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > self.max_response_bytes:
                    raise LLMError(
                        f"response body of {int(declared)} bytes exceeds the {self.max_response_bytes}-byte limit",
                        status_code=resp.status_code,
                    )
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > self.max_response_bytes:
                        raise LLMError(
                            f"response body exceeds the {self.max_response_bytes}-byte limit",
                            status_code=resp.status_code,
                        )
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise _Retryable(f"the response took longer than the {self.timeout:g} s timeout")
                status, headers = resp.status_code, resp.headers
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out after {self.timeout:g} s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__}: {_bounded(self._redact(str(exc)), 200)}") from None
        data = b"".join(chunks)
        if status == 429 or status >= 500 or status in _RETRYABLE_STATUS:
            raise _Retryable(
                f"HTTP {status}: {_bounded(self._redact(_server_message(data)))}",
                status_code=status,
                retry_after=parse_retry_after(headers.get("Retry-After")),
            )
        if status != 200:
            raise LLMError(
                f"HTTP {status} from {_display_url(self._url)}: {_bounded(self._redact(_server_message(data)))}",
                status_code=status,
            )
        try:
            parsed = json.loads(data)
        except ValueError:
            raise LLMError(
                f"the server's 200 response is not JSON: {_bounded(self._redact(data.decode('utf-8', 'replace')), 120)!r}",
                status_code=status,
            ) from None
        try:
            return extract_reply(parsed)
        except ValueError as exc:
            raise LLMError(
                f"malformed chat completion: {self._redact(str(exc))}", status_code=status
            ) from None

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = random.uniform(0.0, min(self.backoff_max, self.backoff_base * 2**attempt))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay

    def complete(
        self, messages: list[dict[str, str]], *, max_tokens: int = 256, temperature: float = 0.0
    ) -> str:
        """The assistant's reply to ``messages``.

        Args:
            messages: Chat messages, ``[{"role": "user", "content": "..."}]``.
            max_tokens: Largest reply, in tokens.
            temperature: Sampling temperature in [0, 2] (0: greedy, what a judge wants).

        Raises:
            ValueError: On bad arguments.
            LLMError: When no answer came: a non-retryable status, a malformed body, or retries
                exhausted (the message names the last failure and the number of attempts).
            RuntimeError: If the client is closed.
        """
        _validate_messages(messages)
        _validate_sampling(max_tokens, temperature)
        return self._complete(messages, max_tokens, temperature)

    def _complete(self, messages: Sequence[Mapping[str, str]], max_tokens: int, temperature: float) -> str:
        body = {
            **self.extra_body,
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        last: _Retryable | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                assert last is not None
                delay = self._backoff(attempt - 1, last.retry_after)
                logger.info(
                    "chat completion attempt %d/%d failed (%s); retrying in %.2f s",
                    attempt,
                    self.retries + 1,
                    last,
                    delay,
                )
                time.sleep(delay)
            try:
                with self._slots:
                    return self._attempt(body)
            except _Retryable as exc:
                last = exc
            except LLMError as exc:
                exc.attempts = attempt + 1
                raise
        assert last is not None
        raise LLMError(
            f"no answer from {_display_url(self._url)} after {self.retries + 1} attempt(s): {last}",
            status_code=last.status_code,
            attempts=self.retries + 1,
        )

    def complete_many(self, batch: list[list[dict[str, str]]], **kw: Any) -> list[str | LLMError]:
        """:meth:`complete` for each conversation, ``max_concurrency`` at a time, in order.

        Args:
            batch: Conversations.
            **kw: ``max_tokens`` and ``temperature``, as for :meth:`complete`.

        Returns:
            One entry per conversation: the reply, or the :class:`LLMError` that ended it (a
            failure of one item does not fail the batch).

        Raises:
            ValueError: On bad arguments (all checked before anything is sent).
            RuntimeError: If the client is closed.
        """
        unknown = sorted(set(kw) - {"max_tokens", "temperature"})
        if unknown:
            raise ValueError(
                f"unknown keyword argument(s) {unknown}; complete_many takes max_tokens, temperature"
            )
        max_tokens, temperature = kw.get("max_tokens", 256), kw.get("temperature", 0.0)
        _validate_sampling(max_tokens, temperature)
        if not isinstance(batch, Sequence) or isinstance(batch, (str, bytes)):
            raise ValueError(f"batch must be a list of conversations, got {type(batch).__name__}")
        for i, messages in enumerate(batch):
            try:
                _validate_messages(messages)
            except ValueError as exc:
                raise ValueError(f"batch[{i}]: {exc}") from None
        if not batch:
            return []
        self._client()  # fail fast if closed

        def one(messages: Sequence[Mapping[str, str]]) -> str | LLMError:
            try:
                return self._complete(messages, max_tokens, temperature)
            except LLMError as exc:
                return exc

        workers = min(self.max_concurrency, len(batch))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chat-client") as pool:
            return list(pool.map(one, batch))
