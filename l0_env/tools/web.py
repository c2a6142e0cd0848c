"""`SerperSearch`: Google results through the Serper API, pages through a reader or plain HTTP.

L0 trained against Google (Serper) with pages read by Jina Reader; this backend does the same and
is used only when an API key is configured (``api_key=`` or ``$SERPER_API_KEY``). Hits are
Serper's organic results: ``id`` = the result URL, ``title``, ``snippet``, ``score`` = 1/position.

`get(url)` opens only URLs that a recent search returned (``allow_any_url=False``): the agent
cannot make the host fetch arbitrary addresses (its own metadata service, localhost ports).
With ``reader_url`` (e.g. ``https://r.jina.ai``; key from ``$JINA_API_KEY``) the page comes back
as clean text from the reader; otherwise the page's HTML is fetched and reduced to text here.
Pages are cut at ``max_page_chars``; the env paginates what is left.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from typing import Any

import httpx

from l0_env.tools.remote import request_with_retries
from l0_env.tools.search import Hit, Page, PageNotFound, SearchBackend, SearchError, check_search_args

SERPER_URL = "https://google.serper.dev"


class SerperSearch(SearchBackend):
    """Web search through a Serper-compatible API.

    Args:
        api_key: Serper API key; default ``$SERPER_API_KEY``. Required.
        base_url: API root (tests point it at a fake server on 127.0.0.1).
        reader_url: Optional reader service root; ``{reader_url}/{url}`` returns page text.
        reader_key: Bearer token for the reader; default ``$JINA_API_KEY`` when ``reader_url`` is set.
        timeout: Seconds per request.
        retries: Extra attempts after a retryable failure.
        backoff: First retry delay in seconds (doubled each retry).
        max_page_chars: Longest page text kept.
        allow_any_url: Let `get` open URLs that no search returned.
        gl: Serper's country code (e.g. "us"); None = Serper's default.

    Raises:
        ValueError: No API key is configured.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str = SERPER_URL,
        reader_url: str | None = None,
        reader_key: str | None = None,
        timeout: float = 15.0,
        retries: int = 2,
        backoff: float = 0.5,
        max_page_chars: int = 100_000,
        allow_any_url: bool = False,
        gl: str | None = None,
        max_workers: int = 8,
    ) -> None:
        api_key = api_key or os.environ.get("SERPER_API_KEY")
        if not api_key:
            raise ValueError(
                "the 'serper' search backend needs an API key: set SERPER_API_KEY or pass api_key=...; "
                "without one use the embedded 'bm25' backend or a retrieval server URL"
            )
        self.base_url = base_url.rstrip("/")
        self.reader_url = reader_url.rstrip("/") if reader_url else None
        reader_key = reader_key or (os.environ.get("JINA_API_KEY") if reader_url else None)
        self.retries = retries
        self.backoff = backoff
        self.max_page_chars = max_page_chars
        self.allow_any_url = allow_any_url
        self.gl = gl
        self._api = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            headers={"X-API-KEY": api_key, "Content-Type": "application/json"},
            trust_env=False,
        )
        reader_headers = {"Authorization": f"Bearer {reader_key}"} if reader_key else {}
        self._web = httpx.Client(
            timeout=timeout, follow_redirects=True, headers=reader_headers, trust_env=False
        )
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="serper")
        self._seen: OrderedDict[str, str] = OrderedDict()  # url -> title, from recent results
        self._lock = threading.Lock()

    def search(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        k = check_search_args(queries, k)
        return list(self._pool.map(lambda q: self._search_one(q, k) if q.strip() else [], queries))

    def _search_one(self, query: str, k: int) -> list[Hit]:
        body: dict[str, Any] = {"q": query, "num": k}
        if self.gl:
            body["gl"] = self.gl
        resp = request_with_retries(
            self._api,
            "POST",
            "/search",
            json=body,
            retries=self.retries,
            backoff=self.backoff,
            what="web search (Serper)",
        )
        if resp.status_code in (401, 403):
            raise SearchError("web search (Serper) rejected the API key; check SERPER_API_KEY")
        if resp.status_code != 200:
            raise SearchError(f"web search (Serper) answered HTTP {resp.status_code}")
        try:
            organic = resp.json().get("organic") or []
        except (ValueError, AttributeError):
            raise SearchError("web search (Serper) sent a reply that is not a JSON object") from None
        hits = []
        for i, item in enumerate(organic[:k], start=1):
            if not isinstance(item, dict) or not isinstance(item.get("link"), str):
                continue
            pos = item.get("position") if isinstance(item.get("position"), int) else i
            title = str(item.get("title") or "")
            hits.append(Hit(item["link"], title, str(item.get("snippet") or ""), 1.0 / max(1, pos)))
            with self._lock:
                self._seen[item["link"]] = title
                self._seen.move_to_end(item["link"])
                while len(self._seen) > 10_000:
                    self._seen.popitem(last=False)
        return hits

    def get(self, doc_id: str) -> Page:
        with self._lock:
            title = self._seen.get(doc_id) if isinstance(doc_id, str) else None
        if title is None and not (self.allow_any_url and isinstance(doc_id, str)):
            raise PageNotFound(f"{doc_id!r} is not a URL from a recent web_search result; open one of those")
        if not doc_id.startswith(("http://", "https://")):
            raise PageNotFound(f"{doc_id!r} is not an http(s) URL")
        target = f"{self.reader_url}/{doc_id}" if self.reader_url else doc_id
        resp = request_with_retries(
            self._web, "GET", target, retries=self.retries, backoff=self.backoff, what=f"fetching {doc_id}"
        )
        if resp.status_code == 404:
            raise PageNotFound(f"{doc_id} answered 404 Not Found")
        if resp.status_code != 200:
            raise SearchError(f"fetching {doc_id} failed: HTTP {resp.status_code}")
        body = resp.text
        is_html = "html" in resp.headers.get("content-type", "") and not self.reader_url
        text, page_title = html_to_text(body) if is_html else (body, "")
        return Page(doc_id, title or page_title or doc_id, text[: self.max_page_chars])

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._api.close()
        self._web.close()


class _TextExtractor(HTMLParser):
    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    _BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self._SKIP:
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skip:
            self._skip -= 1
        if tag == "title":
            self._in_title = False
        if tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """Visible text of an HTML page (scripts, styles and head dropped) and its ``<title>``."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = re.sub(r"[ \t\r\f\v]+", " ", "".join(parser.parts))
    text = re.sub(r"\s*\n\s*", "\n", text).strip()
    return text, parser.title.strip()
