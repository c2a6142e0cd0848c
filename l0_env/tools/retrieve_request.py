"""The search server's limits and its ``/retrieve`` request validation (pure: no sockets, no threads).

Every request to a shared server is bounded before any search runs: the body's bytes, the number
of queries, each query's length, queries × topk (the results the reply would carry), and the
request's time. A request outside the limits, or with a value of the wrong type (``"topk": NaN``,
``-1``, ``"3"``, ``true``), is rejected with a 4xx status and a JSON body
``{"error": <code>, "detail": <what is wrong and the limit>}``, so the client (and the agent behind
it) can tell what to change.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from l0_env.tools.search import MAX_K


class RequestRejected(Exception):
    """A request the server answers with an error status instead of searching.

    Attributes:
        status: The HTTP status (4xx for the client's fault, 503 busy, 504 deadline).
        error: A short machine-readable code, e.g. ``"too_many_queries"``.
        detail: The message for a person (or an agent): what was wrong and the limit.
        retry_after: Seconds the client should wait before trying again (503 busy only).
    """

    def __init__(self, status: int, error: str, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.retry_after = retry_after

    def body(self) -> dict[str, str]:
        """The JSON reply: ``{"error", "detail"}``."""
        return {"error": self.error, "detail": self.detail}


@dataclass(frozen=True)
class ServerLimits:
    """What one search-server process accepts and how it shares its threads (every field has a CLI flag).

    Attributes:
        max_body_bytes: Largest request body; a bigger ``Content-Length`` is refused (413) before
            the body is read, and a body without one is cut off at this size.
        max_queries: Most queries in one ``/retrieve`` request (413).
        max_query_chars: Longest query, in characters (413).
        max_topk: Largest ``topk`` (at most 50, the backends' own cap; 422 above it).
        max_results: Most results one request may ask for, queries × topk (413).
        request_timeout: Seconds a request may take from arrival to reply; when they run out its
            remaining work is dropped and it gets 504 ``deadline_exceeded`` (408 ``body_timeout``
            if its body is still arriving).
        max_pending: Requests admitted at once (queued or running); more get 503 ``busy``.
        max_buffered_bytes: Bytes of request bodies held at once, read or queued; more get 503.
        chunk_queries: Queries per unit of work. Requests are cut into units that the threads
            serve round-robin across requests, so a small request is never queued behind all
            of a big one.
        chunk_chars: Query characters per unit of work (a unit holds at least one query).
        threads: Search threads (default: the number of CPUs).
        max_page_chars: Longest passage text ``/page`` returns (the reply says ``truncated``).
    """

    max_body_bytes: int = 2 * 2**20
    max_queries: int = 4096
    max_query_chars: int = 4096
    max_topk: int = MAX_K
    max_results: int = 16_384
    request_timeout: float = 60.0
    max_pending: int = 256
    max_buffered_bytes: int = 128 * 2**20
    chunk_queries: int = 8
    chunk_chars: int = 8192
    threads: int = 0
    max_page_chars: int = 200_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "request_timeout":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                    raise ValueError(f"request_timeout must be a finite number of seconds > 0, got {value!r}")
                continue
            least = 0 if f.name == "threads" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{f.name} must be an int >= {least}, got {value!r}")
        if self.max_topk > MAX_K:
            raise ValueError(
                f"max_topk must be <= {MAX_K} (the backends return at most {MAX_K}), got {self.max_topk}"
            )
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError("max_buffered_bytes must be >= max_body_bytes (else no full-size request fits)")

    @property
    def search_threads(self) -> int:
        """``threads``, or the number of CPUs when it is 0."""
        return self.threads or os.cpu_count() or 2

    def as_dict(self) -> dict[str, Any]:
        """The limits as JSON-ready values (``/health`` publishes them)."""
        return asdict(self)


@dataclass(frozen=True)
class RetrieveRequest:
    """A validated ``/retrieve`` request."""

    queries: list[str]
    topk: int
    return_scores: bool


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_retrieve_body(body: bytes, limits: ServerLimits, default_topk: int) -> RetrieveRequest:
    """Validate a ``/retrieve`` body against ``limits``.

    ``{"queries": [str, ...], "topk": int | null, "return_scores": bool | null}``; other keys are
    ignored (Search-R1 clients send none, others may send more). A missing or null ``topk`` means
    ``default_topk``.

    Raises:
        RequestRejected: 413 for a size limit, 400 for a body that is not JSON, 422 for a value of
            the wrong type or out of range.
    """
    if len(body) > limits.max_body_bytes:
        raise RequestRejected(
            413, "body_too_large", f"the request body has {len(body)} bytes; at most {limits.max_body_bytes}"
        )
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise RequestRejected(400, "invalid_json", "the request body is not UTF-8") from None
    except RecursionError:
        raise RequestRejected(400, "invalid_json", "the request body nests too deeply") from None
    except ValueError as exc:
        raise RequestRejected(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestRejected(422, "invalid_request", f"the body must be a JSON object, got {_kind(data)}")
    queries = data.get("queries")
    if not isinstance(queries, list):
        raise RequestRejected(
            422, "invalid_request", f"'queries' must be a list of strings, got {_kind(queries)}"
        )
    if len(queries) > limits.max_queries:
        raise RequestRejected(
            413, "too_many_queries", f"{len(queries)} queries in one request; at most {limits.max_queries}"
        )
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise RequestRejected(422, "invalid_request", f"queries[{i}] must be a string, got {_kind(q)}")
        if len(q) > limits.max_query_chars:
            raise RequestRejected(
                413,
                "query_too_long",
                f"queries[{i}] has {len(q)} characters; at most {limits.max_query_chars}",
            )
    topk = data.get("topk")
    if topk is None:
        topk = default_topk
    elif isinstance(topk, bool) or not isinstance(topk, int):
        raise RequestRejected(422, "invalid_request", f"'topk' must be an integer, got {_kind(topk)}")
    if not 1 <= topk <= limits.max_topk:
        raise RequestRejected(
            422, "invalid_request", f"'topk' must be from 1 to {limits.max_topk}, got {topk}"
        )
    if len(queries) * topk > limits.max_results:
        raise RequestRejected(
            413,
            "too_many_results",
            f"{len(queries)} queries × topk {topk} = {len(queries) * topk} results; at most "
            f"{limits.max_results} per request (send fewer queries per request, or a smaller topk)",
        )
    scores = data.get("return_scores")
    if scores is not None and not isinstance(scores, bool):
        raise RequestRejected(
            422, "invalid_request", f"'return_scores' must be true or false, got {_kind(scores)}"
        )
    return RetrieveRequest(queries=queries, topk=topk, return_scores=bool(scores))


def plan_chunks(queries: list[str], chunk_queries: int, chunk_chars: int) -> list[tuple[int, int]]:
    """Cut ``queries`` into ``[start, end)`` units of at most ``chunk_queries`` queries and about
    ``chunk_chars`` characters each (a unit always holds at least one query)."""
    chunks: list[tuple[int, int]] = []
    start = chars = 0
    for i, q in enumerate(queries):
        if i > start and (i - start >= chunk_queries or chars + len(q) > chunk_chars):
            chunks.append((start, i))
            start, chars = i, 0
        chars += len(q)
    if start < len(queries):
        chunks.append((start, len(queries)))
    return chunks


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"a string ({value[:40]!r}{'…' if len(value) > 40 else ''})"
    return {"list": "a list", "dict": "an object"}.get(type(value).__name__, type(value).__name__)
