"""`HTTPSearch`: the client for a retrieval server speaking Search-R1's ``/retrieve`` API.

Works against our server (``python -m l0_env.tools.search_server``) and any Search-R1 / FlashRAG
style server (e5 + faiss over Wikipedia, as used by Search-R1, ZeroSearch-style baselines, GEM):

    POST /retrieve {"queries": [...], "topk": k, "return_scores": true}
    -> {"result": [[{"document": {"id": ..., "contents": "\\"Title\\"\\ntext"}, "score": s}, ...], ...]}

Pages: our server answers ``GET /page?id=...``; for servers without it, `get` serves passages
seen in recent search results (a bounded cache), which is what an agent opens anyway.

One pooled ``httpx.Client`` per backend (thread-safe; keep-alive connections), a timeout per
request, and retries with exponential backoff and jitter on connection errors, timeouts, 429 and
5xx (waiting at least what a ``Retry-After`` header asks, up to 10 s). A 4xx reply (a request the
server will never accept: too big, bad values) and our server's ``deadline_exceeded`` 504 (the same
request would run out of time again) are not retried: they raise `SearchError` at once, with the
server's reason. When the server stays unreachable, `SearchUnavailable` says so in words the agent
can act on. Neither is fatal to an episode: the env reports it to the agent as a tool error.
"""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any

import httpx

from l0_env.tools.recent import RecentItems
from l0_env.tools.search import (
    Hit,
    Page,
    PageNotFound,
    SearchBackend,
    SearchError,
    SearchUnavailable,
    check_search_args,
    passage_from_row,
)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
FINAL_ERRORS = frozenset({"deadline_exceeded"})  # error codes of our server that a retry cannot fix
MAX_RETRY_AFTER = 10.0


class HTTPSearch(SearchBackend):
    """Search through a Search-R1-compatible retrieval server.

    Args:
        url: Server base URL, e.g. ``http://127.0.0.1:8000`` (a trailing ``/retrieve`` is accepted).
        timeout: Seconds for each request to complete (connect, write, read, pool wait).
        connect_timeout: Seconds to establish a connection.
        retries: Extra attempts after a retryable failure (0 = try once).
        backoff: First retry delay in seconds; doubled each retry, with up to 50% jitter.
        max_connections: Size of the connection pool shared by all threads using this backend.
        max_batch: Queries per ``/retrieve`` request; bigger batches are split.
        snippet_chars: Most characters of passage text in a hit's snippet.
        page_cache: How many passages from search results to keep for `get`.
        headers: Extra HTTP headers (e.g. an auth token for a shared server).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        retries: int = 3,
        backoff: float = 0.25,
        max_connections: int = 64,
        max_batch: int = 256,
        snippet_chars: int = 300,
        page_cache: int = 20_000,
        headers: dict[str, str] | None = None,
    ) -> None:
        url = url.rstrip("/")
        if url.endswith("/retrieve"):
            url = url[: -len("/retrieve")]
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if retries < 0 or backoff < 0 or timeout <= 0 or max_batch < 1:
            raise ValueError("retries and backoff must be >= 0, timeout > 0, max_batch >= 1")
        self.url = url
        self.retries = retries
        self.backoff = backoff
        self.max_batch = max_batch
        self._snippet_chars = snippet_chars
        self._client = httpx.Client(
            base_url=url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers=headers,
            trust_env=False,  # no proxies from the environment: the server is named explicitly
        )
        self._pages: RecentItems[str, Page] = RecentItems(page_cache)
        self._closed = False

    # -- transport ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self._closed:
            raise SearchUnavailable("the search backend was closed")
        return request_with_retries(
            self._client,
            method,
            path,
            retries=self.retries,
            backoff=self.backoff,
            what=f"the search server at {self.url}",
            **kwargs,
        )

    def _json(self, resp: httpx.Response, what: str) -> Any:
        if resp.status_code != 200:
            code = _error_code(resp)
            status = f"HTTP {resp.status_code}, {code}" if code else f"HTTP {resp.status_code}"
            raise SearchError(f"the search server rejected the {what} request ({status}): {_detail(resp)}")
        try:
            return resp.json()
        except ValueError:
            raise SearchError(f"the search server sent a {what} reply that is not JSON") from None

    # -- SearchBackend ------------------------------------------------------------------------

    def search(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        k = check_search_args(queries, k)
        results: list[list[Hit]] = [[] for _ in queries]
        todo = [i for i, q in enumerate(queries) if q.strip()]
        for start in range(0, len(todo), self.max_batch):
            part = todo[start : start + self.max_batch]
            body = {"queries": [queries[i] for i in part], "topk": k, "return_scores": True}
            data = self._json(self._request("POST", "/retrieve", json=body), "search")
            rows = data.get("result") if isinstance(data, dict) else None
            if not isinstance(rows, list) or len(rows) != len(part):
                raise SearchError(
                    f"the search server's reply has no 'result' list of {len(part)} entries (one per query)"
                )
            for i, items in zip(part, rows, strict=True):
                results[i] = self._hits(items, k)
        return results

    def _hits(self, items: Any, k: int) -> list[Hit]:
        if not isinstance(items, list):
            raise SearchError("the search server's reply has a result that is not a list")
        hits = []
        for item in items[:k]:
            doc, score = (item.get("document"), item.get("score")) if _wrapped(item) else (item, None)
            if isinstance(doc, dict) and doc.get("id") in (None, "") and isinstance(doc.get("contents"), str):
                # Some servers send no ids; name the passage by its contents so `get` can find it.
                doc = {**doc, "id": "sha1-" + hashlib.sha1(doc["contents"].encode()).hexdigest()[:16]}
            try:
                p = passage_from_row(doc)
            except ValueError as exc:
                raise SearchError(
                    f"the search server returned a document this client cannot read: {exc}"
                ) from None
            page = Page(p.id, p.title, p.text)
            self._pages.put(page.doc_id, page)
            score = float(score) if isinstance(score, (int, float)) else 0.0
            hits.append(Hit(p.id, p.title, _snippet(p.text, self._snippet_chars), score))
        return hits

    def get(self, doc_id: str) -> Page:
        if not isinstance(doc_id, str):
            raise PageNotFound(f"no passage with id {doc_id!r}")
        cached = self._pages.get(doc_id)
        if cached is not None:
            return cached
        resp = self._request("GET", "/page", params={"id": doc_id})
        if resp.status_code == 404:
            body = _safe_json(resp)
            if isinstance(body, dict) and body.get("error") == "page_not_found":
                raise PageNotFound(str(body.get("detail") or f"no passage with id {doc_id!r}"))
            raise PageNotFound(
                f"no passage with id {doc_id!r} in recent results, and the server at {self.url} "
                "has no page endpoint; open an id from a recent search"
            )
        data = self._json(resp, "page")
        try:
            p = passage_from_row(data)
        except ValueError as exc:
            raise SearchError(f"the search server returned a page this client cannot read: {exc}") from None
        return Page(p.id, p.title, p.text)

    def health(self) -> dict[str, Any]:
        """The server's ``GET /health`` answer; raises `SearchUnavailable` if it does not answer."""
        data = self._json(self._request("GET", "/health"), "health")
        if not isinstance(data, dict):
            raise SearchError("the search server's health reply is not a JSON object")
        return data

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()


def request_with_retries(
    client: httpx.Client, method: str, url: str, *, retries: int, backoff: float, what: str, **kwargs: Any
) -> httpx.Response:
    """Send a request, retrying connection errors, timeouts, 429 and 5xx with exponential backoff.

    Returns the first response that is not retryable (any status; a 4xx or a reply whose JSON
    ``error`` is in `FINAL_ERRORS` is returned at once). Raises `SearchUnavailable`, naming
    ``what`` and the last failure, when every attempt failed.
    """
    last = ""
    retry_after: float | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_delay(backoff, attempt, retry_after))
        retry_after = None
        try:
            resp = client.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            last = f"timed out ({type(exc).__name__})"
            continue
        except httpx.TransportError as exc:
            last = f"could not be reached ({type(exc).__name__}: {exc})"
            continue
        if resp.status_code in RETRY_STATUS and _error_code(resp) not in FINAL_ERRORS:
            last = f"answered HTTP {resp.status_code}: {_detail(resp)}"
            retry_after = _retry_after(resp)
            continue
        return resp
    tries = retries + 1
    raise SearchUnavailable(
        f"{what} {last} after {tries} attempt{'s' * (tries > 1)}; "
        "search is unavailable right now: try again later or answer with what you have"
    )


def backoff_delay(backoff: float, attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): doubling, up to 50% jitter.

    At least ``retry_after`` (a server's ``Retry-After``), capped at `MAX_RETRY_AFTER`.
    """
    delay = backoff * 2 ** (attempt - 1) * (1 + 0.5 * random.random())
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        seconds = float(resp.headers.get("retry-after", ""))
    except ValueError:
        return None  # absent, or an HTTP date: the backoff alone decides
    return seconds if 0 <= seconds < float("inf") else None


def _error_code(resp: httpx.Response) -> str | None:
    body = _safe_json(resp)
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _wrapped(item: Any) -> bool:
    return isinstance(item, dict) and "document" in item and isinstance(item["document"], dict)


def _snippet(text: str, n: int) -> str:
    if len(text) <= n:
        return text
    cut = text.rfind(" ", n // 2, n)
    return text[: cut if cut > 0 else n].rstrip() + "…"


def _safe_json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _detail(resp: httpx.Response) -> str:
    body = _safe_json(resp)
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:300]
    return resp.text[:300] or resp.reason_phrase
