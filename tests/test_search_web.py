"""The Serper web backend against a fake Serper + web server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from l0_env.tools import make_search_backend
from l0_env.tools.search import PageNotFound, SearchError, SearchUnavailable
from l0_env.tools.web import SerperSearch, html_to_text

KEY = "test-key"
PAGE_HTML = """<html><head><title>Fake page</title><style>p {color: red}</style></head>
<body><script>var secret = 1;</script><h1>Ada Lovelace</h1><p>Ada was a mathematician.</p>
<p>She wrote the first program &amp; notes.</p></body></html>"""


class FakeWeb(BaseHTTPRequestHandler):
    """POST /search answers like Serper; GET /pages/N serves HTML; GET /reader/URL acts as a reader."""

    requests: ClassVar[list[dict]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: str, ctype: str = "application/json") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeWeb.requests.append({"path": self.path, "key": self.headers.get("X-API-KEY"), "body": body})
        if self.headers.get("X-API-KEY") != KEY:
            self._send(403, json.dumps({"message": "Unauthorized."}))
            return
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        organic = [
            {
                "title": f"Result {i} for {body['q']}",
                "link": f"{base}/pages/{i}",
                "snippet": f"snippet {i}",
                "position": i,
            }
            for i in range(1, 11)
        ]
        self._send(200, json.dumps({"searchParameters": body, "organic": organic[: body["num"]]}))

    def do_GET(self) -> None:
        if self.path.startswith("/pages/"):
            self._send(200, PAGE_HTML, "text/html; charset=utf-8")
        elif self.path.startswith("/reader/"):
            self._send(
                200, f"Title: reader view\n\nclean text of {self.path[len('/reader/') :]}", "text/plain"
            )
        else:
            self._send(404, "not found", "text/plain")


@pytest.fixture(scope="module")
def fake_web() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeWeb)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERPER_API_KEY", raising=False)
    with pytest.raises(ValueError, match="SERPER_API_KEY"):
        SerperSearch()
    with pytest.raises(ValueError, match="SERPER_API_KEY"):
        make_search_backend("serper", shared=False)


def test_search_and_open_page(fake_web: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERPER_API_KEY", KEY)
    backend = make_search_backend({"backend": "serper", "base_url": fake_web, "retries": 0}, shared=False)
    assert isinstance(backend, SerperSearch)
    first, empty, second = backend.search(["ada lovelace", "  ", "babbage"], k=3)
    assert empty == []
    assert [h.doc_id for h in first] == [f"{fake_web}/pages/{i}" for i in (1, 2, 3)]
    assert first[0].title == "Result 1 for ada lovelace" and first[0].snippet == "snippet 1"
    assert [h.score for h in first] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert second[0].title == "Result 1 for babbage"
    sent = [r for r in FakeWeb.requests if r["body"]["q"] == "ada lovelace"][-1]
    assert sent == {"path": "/search", "key": KEY, "body": {"q": "ada lovelace", "num": 3}}

    page = backend.get(first[0].doc_id)
    # Both queries returned this URL (searched concurrently): the title is the latest one seen.
    assert page.title in {"Result 1 for ada lovelace", "Result 1 for babbage"}
    assert page.text == "Ada Lovelace\nAda was a mathematician.\nShe wrote the first program & notes."
    assert "secret" not in page.text and "color" not in page.text
    backend.close()


def test_get_only_opens_urls_from_results(fake_web: str) -> None:
    backend = SerperSearch(KEY, base_url=fake_web, retries=0)
    with pytest.raises(PageNotFound, match="not a URL from a recent web_search result"):
        backend.get(f"{fake_web}/pages/1")  # never returned by a search
    with pytest.raises(PageNotFound):
        backend.get("http://169.254.169.254/latest/meta-data/")
    backend.close()
    open_backend = SerperSearch(KEY, base_url=fake_web, retries=0, allow_any_url=True, max_page_chars=12)
    assert open_backend.get(f"{fake_web}/pages/7").text == "Ada Lovelace"
    with pytest.raises(PageNotFound, match="not an http"):
        open_backend.get("file:///etc/passwd")
    with pytest.raises(PageNotFound, match="404"):
        open_backend.get(f"{fake_web}/missing")
    open_backend.close()


def test_reader_service(fake_web: str) -> None:
    backend = SerperSearch(KEY, base_url=fake_web, reader_url=f"{fake_web}/reader", retries=0)
    [hits] = backend.search(["x"], k=1)
    page = backend.get(hits[0].doc_id)
    assert page.text == f"Title: reader view\n\nclean text of {hits[0].doc_id}"
    backend.close()


def test_errors_are_agent_readable(fake_web: str) -> None:
    backend = SerperSearch("wrong-key", base_url=fake_web, retries=0)
    with pytest.raises(SearchError, match="rejected the API key"):
        backend.search(["x"])
    backend.close()
    down = SerperSearch(KEY, base_url="http://127.0.0.1:9", retries=1, backoff=0.01)
    with pytest.raises(SearchUnavailable, match="web search"):
        down.search(["x"])
    down.close()


def test_html_to_text() -> None:
    text, title = html_to_text(PAGE_HTML)
    assert title == "Fake page"
    assert text.splitlines() == [
        "Ada Lovelace",
        "Ada was a mathematician.",
        "She wrote the first program & notes.",
    ]
    assert html_to_text("plain <b>bold</b> words") == ("plain bold words", "")
