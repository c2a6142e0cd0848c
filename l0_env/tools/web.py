"""`SerperSearch`: Google results through the Serper API, pages through a reader or plain HTTP.

L0 trained against Google (Serper) with pages read by Jina Reader; this backend does the same and
is used only when an API key is configured (``api_key=`` or ``$SERPER_API_KEY``). Hits are
Serper's organic results: ``id`` = the result URL, ``title``, ``snippet``, ``score`` = 1/position.

`get(url)` opens only URLs that a recent search returned (``allow_any_url=False``), and every
fetch goes through `l0_env.tools.page_fetch.fetch_page`: each redirect hop is resolved and
checked against an address policy (by default only public internet addresses: never loopback,
private, link-local such as the cloud metadata service, multicast, reserved or unspecified,
IPv4 or IPv6, v4-mapped forms and DNS names that resolve to them included), the connection goes
to the address that was checked, and the body is streamed under ``max_page_bytes``. A page the
agent found cannot make the host fetch its own services or fill its memory.

With ``reader_url`` (e.g. ``https://r.jina.ai``; key from ``$JINA_API_KEY``) the page comes back
as clean text from the reader (the reader is trusted; the page's own address is still checked
first, and the reader's token never follows a redirect); otherwise the page's HTML is fetched and
reduced to text here. Pages are cut at ``max_page_chars``; the env paginates what is left.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from typing import Any

import httpx

from l0_env.tools.addresses import AddressPolicy, deny_reason
from l0_env.tools.page_fetch import (
    FetchedPage,
    FetchRefused,
    Resolver,
    check_url,
    fetch_page,
    system_resolver,
)
from l0_env.tools.recent import RecentItems
from l0_env.tools.remote import RETRY_STATUS, backoff_delay, request_with_retries
from l0_env.tools.search import (
    Hit,
    Page,
    PageNotFound,
    SearchBackend,
    SearchError,
    SearchUnavailable,
    check_search_args,
)

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
        max_page_bytes: Most bytes of a page read from the network (after decompression); the
            rest is never read.
        max_redirects: Redirects a page may send before `get` gives up.
        allow_any_url: Let `get` open URLs that no search returned.
        gl: Serper's country code (e.g. "us"); None = Serper's default.
        max_workers: Threads that send one batch's queries concurrently.
        address_policy: Which addresses a page (and every redirect) may be fetched from; default
            `l0_env.tools.addresses.deny_reason`, public internet addresses only. The reader
            service itself (``reader_url``) is trusted: its address is not checked.
        resolver: Host name to addresses for those checks; default ``getaddrinfo``.

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
        max_page_bytes: int = 5 * 2**20,
        max_redirects: int = 5,
        allow_any_url: bool = False,
        gl: str | None = None,
        max_workers: int = 8,
        address_policy: AddressPolicy = deny_reason,
        resolver: Resolver = system_resolver,
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
        if max_page_bytes < 1 or max_page_chars < 1 or max_redirects < 0:
            raise ValueError("max_page_bytes and max_page_chars must be >= 1, max_redirects >= 0")
        self.max_page_chars = max_page_chars
        self.max_page_bytes = max_page_bytes
        self.max_redirects = max_redirects
        self.address_policy = address_policy
        self.resolver = resolver
        self.allow_any_url = allow_any_url
        self.gl = gl
        self._api = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            headers={"X-API-KEY": api_key, "Content-Type": "application/json"},
            trust_env=False,
        )
        self._reader_headers = {"Authorization": f"Bearer {reader_key}"} if reader_key else {}
        # Redirects are followed by fetch_page, hop by hop; no keep-alive, because a connection
        # pinned to one address must not be reused for another host name that shares it.
        self._web = httpx.Client(
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="serper")
        self._seen: RecentItems[str, str] = RecentItems(10_000)  # url -> title, from recent results

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
            position = item.get("position")
            pos = position if isinstance(position, int) else i
            title = str(item.get("title") or "")
            hits.append(Hit(item["link"], title, str(item.get("snippet") or ""), 1.0 / max(1, pos)))
            self._seen.put(item["link"], title)
        return hits

    def get(self, doc_id: str) -> Page:
        title = self._seen.get(doc_id) if isinstance(doc_id, str) else None
        if title is None and not (self.allow_any_url and isinstance(doc_id, str)):
            raise PageNotFound(f"{doc_id!r} is not a URL from a recent web_search result; open one of those")
        if not doc_id.startswith(("http://", "https://")):
            raise PageNotFound(f"{doc_id!r} is not an http(s) URL")
        try:
            fetched = self._fetch(doc_id)
        except FetchRefused as exc:
            raise SearchError(f"refused to open {doc_id}: {exc}") from None
        if fetched.status == 404:
            raise PageNotFound(f"{doc_id} answered 404 Not Found")
        if fetched.status != 200:
            raise SearchError(f"fetching {doc_id} failed: HTTP {fetched.status}")
        body = fetched.text()
        is_html = "html" in fetched.content_type and not self.reader_url
        text, page_title = html_to_text(body) if is_html else (body, "")
        return Page(doc_id, title or page_title or doc_id, text[: self.max_page_chars])

    def _fetch(self, url: str) -> FetchedPage:
        """One page through the reader or directly, retrying connection failures, 429 and 5xx."""
        if self.reader_url:
            # The reader fetches the page; a self-hosted reader must not become a way in either.
            check_url(url, resolver=self.resolver, policy=self.address_policy)
            target, headers, trusted = f"{self.reader_url}/{url}", self._reader_headers, True
        else:
            target, headers, trusted = url, {}, False
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(backoff_delay(self.backoff, attempt))
            try:
                fetched = fetch_page(
                    self._web,
                    target,
                    max_bytes=self.max_page_bytes,
                    max_redirects=self.max_redirects,
                    resolver=self.resolver,
                    policy=self.address_policy,
                    headers=headers,
                    trust_first_hop=trusted,
                )
            except httpx.TimeoutException as exc:
                last = f"timed out ({type(exc).__name__})"
                continue
            except httpx.TransportError as exc:
                last = f"could not be reached ({type(exc).__name__})"
                continue
            if fetched.status in RETRY_STATUS:
                last = f"answered HTTP {fetched.status}"
                continue
            return fetched
        tries = self.retries + 1
        raise SearchUnavailable(f"fetching {url} {last} after {tries} attempt{'s' * (tries > 1)}")

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
