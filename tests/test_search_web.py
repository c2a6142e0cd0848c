"""The Serper web backend against a fake Serper + web server on 127.0.0.1 (never the internet).

The fake itself is on loopback, which the default address policy refuses; so these tests inject a
policy that admits exactly the fake's address (127.0.0.1) and keeps every other decision of the
default (`l0_env.tools.addresses.deny_reason`), and a resolver that gives test host names their
addresses. A "secret" service on 127.0.0.2 stands for the host's own services.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from l0_env.tools import make_search_backend
from l0_env.tools.addresses import IPAddress, deny_reason
from l0_env.tools.page_fetch import system_resolver
from l0_env.tools.search import PageNotFound, SearchError, SearchUnavailable
from l0_env.tools.web import SerperSearch, html_to_text

KEY = "test-key"
PAGE_HTML = """<html><head><title>Fake page</title><style>p {color: red}</style></head>
<body><script>var secret = 1;</script><h1>Ada Lovelace</h1><p>Ada was a mathematician.</p>
<p>She wrote the first program &amp; notes.</p></body></html>"""


FAKE_IP = "127.0.0.1"
NAMES = {
    "public.test": [FAKE_IP],  # a "public" host name: it is the fake
    "secret.test": ["127.0.0.2"],
    "internal.test": ["10.0.0.7"],
    "mixed.test": [FAKE_IP, "10.0.0.7"],
    "v6-secret.test": ["::ffff:127.0.0.2"],
}


def admit_the_fake(ip: IPAddress) -> str | None:
    """The default policy, except that the fake web server's own address is public here."""
    return None if ip == ipaddress.ip_address(FAKE_IP) else deny_reason(ip)


def test_resolver(host: str, port: int) -> list[str]:
    return NAMES[host] if host in NAMES else system_resolver(host, port)


test_resolver.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test
BIG_MB = 300


class FakeWeb(BaseHTTPRequestHandler):
    """POST /search answers like Serper (a query ``url:X`` returns the one result X); GET /pages/N
    serves HTML; /reader/URL acts as a reader; /redirect?to=URL redirects; /loop redirects to
    itself; /big streams 300 MB; /bomb is a gzip body that inflates to 300 MB; /host echoes Host."""

    requests: ClassVar[list[dict]] = []
    gets: ClassVar[list[str]] = []
    big_bytes_sent: ClassVar[int] = 0
    bomb: ClassVar[bytes] = b""

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
        if body["q"].startswith("url:"):
            organic = [{"title": "Planted", "link": body["q"][4:], "snippet": "", "position": 1}]
        self._send(200, json.dumps({"searchParameters": body, "organic": organic[: body["num"]]}))

    def do_GET(self) -> None:
        FakeWeb.gets.append(self.path)
        path, query = urlsplit(self.path).path, parse_qs(urlsplit(self.path).query)
        if path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/loop":
            self.send_response(301)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/host":
            self._send(200, f"Host was {self.headers.get('Host')}", "text/plain")
        elif path == "/big":
            self._stream(b"a" * 64 * 1024, BIG_MB * 2**20)
        elif path == "/bomb":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(FakeWeb.bomb)))
            self.end_headers()
            self._write(FakeWeb.bomb)
        elif self.path.startswith("/pages/"):
            self._send(200, PAGE_HTML, "text/html; charset=utf-8")
        elif self.path.startswith("/reader/"):
            self._send(
                200, f"Title: reader view\n\nclean text of {self.path[len('/reader/') :]}", "text/plain"
            )
        else:
            self._send(404, "not found", "text/plain")

    def _stream(self, piece: bytes, total: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(total))
        self.end_headers()
        sent = 0
        while sent < total and self._write(piece):
            sent += len(piece)

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        if self.path.startswith("/big"):
            FakeWeb.big_bytes_sent += len(data)
        return True


class Secret(BaseHTTPRequestHandler):
    """The host's own service, on 127.0.0.2: what a redirect must never reach."""

    hits: ClassVar[int] = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        Secret.hits += 1
        data = b"SECRET-TOKEN-42"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _gzip_bomb(total: int) -> bytes:
    """A gzip member that inflates to ``total`` bytes of ``a`` (~1000:1), built in pieces."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    piece = b"a" * 2**20
    out = [z.compress(piece) for _ in range(total // len(piece))]
    out.append(z.flush())
    return b"".join(out)


def _serve(handler: type[BaseHTTPRequestHandler], host: str) -> Iterator[str]:
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{host}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def fake_web() -> Iterator[str]:
    yield from _serve(FakeWeb, FAKE_IP)


@pytest.fixture(scope="module")
def secret() -> Iterator[str]:
    yield from _serve(Secret, "127.0.0.2")


def web(fake_web: str, **kwargs: Any) -> SerperSearch:
    """A backend against the fake, with the policy that admits only the fake's address."""
    options: dict[str, Any] = {"retries": 0, "address_policy": admit_the_fake, "resolver": test_resolver}
    return SerperSearch(KEY, base_url=fake_web, **{**options, **kwargs})


def planted(backend: SerperSearch, url: str) -> str:
    """Make ``url`` a result of a recent search (as a page planted in a search engine would be)."""
    [hits] = backend.search([f"url:{url}"], k=1)
    assert hits[0].doc_id == url
    return url


def test_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERPER_API_KEY", raising=False)
    with pytest.raises(ValueError, match="SERPER_API_KEY"):
        SerperSearch()
    with pytest.raises(ValueError, match="SERPER_API_KEY"):
        make_search_backend("serper", shared=False)


def test_search_and_open_page(fake_web: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERPER_API_KEY", KEY)
    spec = {"backend": "serper", "base_url": fake_web, "retries": 0, "address_policy": admit_the_fake}
    backend = make_search_backend(spec, shared=False)
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
    backend = web(fake_web)
    with pytest.raises(PageNotFound, match="not a URL from a recent web_search result"):
        backend.get(f"{fake_web}/pages/1")  # never returned by a search
    with pytest.raises(PageNotFound):
        backend.get("http://169.254.169.254/latest/meta-data/")
    backend.close()
    open_backend = web(fake_web, allow_any_url=True, max_page_chars=12)
    assert open_backend.get(f"{fake_web}/pages/7").text == "Ada Lovelace"
    with pytest.raises(PageNotFound, match="not an http"):
        open_backend.get("file:///etc/passwd")
    with pytest.raises(PageNotFound, match="404"):
        open_backend.get(f"{fake_web}/missing")
    open_backend.close()


def test_reader_service(fake_web: str) -> None:
    backend = web(fake_web, reader_url=f"{fake_web}/reader")
    [hits] = backend.search(["x"], k=1)
    page = backend.get(hits[0].doc_id)
    assert page.text == f"Title: reader view\n\nclean text of {hits[0].doc_id}"
    # The reader is trusted, the page it is asked for is not: a private target is refused before
    # the reader is called (a self-hosted reader must not become a way in).
    link = planted(backend, "http://internal.test/admin")
    before = list(FakeWeb.gets)
    with pytest.raises(SearchError, match=r"'internal.test' resolves to a private address"):
        backend.get(link)
    assert FakeWeb.gets == before  # the reader was not called
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


# -- every hop checked, bodies capped ------------------------------------------------------------


def redirect(base: str, to: str) -> str:
    return f"{base}/redirect?to={quote(to, safe='')}"


def test_a_redirect_to_the_hosts_own_services_is_refused(fake_web: str, secret: str) -> None:
    fake_port, secret_port = urlsplit(fake_web).port, urlsplit(secret).port
    public = f"http://public.test:{fake_port}"  # an allowed name (it resolves to the fake)
    # Control: with a policy that admits everything, the redirect does reach the secret service,
    # so what stops it below is the check of the hop.
    open_door = web(fake_web, address_policy=lambda ip: None)
    assert open_door.get(planted(open_door, redirect(fake_web, f"{secret}/secret"))).text == "SECRET-TOKEN-42"
    open_door.close()

    backend = web(fake_web)
    hits = Secret.hits
    targets = {
        f"{secret}/secret": "127.0.0.2 is a loopback address",
        f"http://[::ffff:127.0.0.2]:{secret_port}/secret": "v4-mapped IPv6 address of a loopback",
        f"http://2130706434:{secret_port}/secret": "'2130706434' resolves to a loopback address",
        f"http://secret.test:{secret_port}/secret": "'secret.test' resolves to a loopback address",
        f"http://v6-secret.test:{secret_port}/s": "resolves to a v4-mapped IPv6 address of a loopback",
        "http://internal.test/": "'internal.test' resolves to a private address",
        f"http://mixed.test:{fake_port}/pages/1": "'mixed.test' resolves to a private address",
        f"http://[::1]:{secret_port}/": "::1 is a loopback address",
        "http://169.254.169.254/latest/meta-data/": "169.254.169.254 is a link-local address",
        f"http://0.0.0.0:{secret_port}/secret": "0.0.0.0 is an unspecified address",
        "http://[fe80::1%25lo]/": "link-local address",
        "file:///etc/passwd": "not an http(s) URL",
        "gopher://127.0.0.2:70/": "not an http(s) URL",
        # two hops: to an allowed host name that redirects again, to the secret
        redirect(public, f"{secret}/secret"): "127.0.0.2 is a loopback address",
    }
    for to, reason in targets.items():
        link = planted(backend, redirect(fake_web, to))
        with pytest.raises(SearchError) as info:
            backend.get(link)
        message = str(info.value)
        assert type(info.value) is SearchError  # what the env turns into the agent's ToolError
        assert message.startswith(f"refused to open {link}: it redirects to "), message
        assert reason in message, message
        assert "http(s)" in reason or message.endswith("only public internet addresses are opened")
    assert Secret.hits == hits, "a refused hop still reached the secret service"
    # The same addresses as the first URL (not a redirect) are refused too.
    for url in (f"{secret}/secret", f"http://secret.test:{secret_port}/secret"):
        with pytest.raises(SearchError, match="loopback address"):
            backend.get(planted(backend, url))
    assert Secret.hits == hits
    backend.close()


def test_the_connection_goes_to_the_address_that_was_checked(fake_web: str) -> None:
    """``public.test`` does not exist for the system resolver: the page loads only because the
    host connects to the address the policy saw (a second lookup could be answered differently)."""
    backend = web(fake_web)
    port = urlsplit(fake_web).port
    page = backend.get(planted(backend, f"http://public.test:{port}/host"))
    assert page.text == f"Host was public.test:{port}"
    # A relative redirect stays on the (checked) host.
    page = backend.get(planted(backend, redirect(f"http://public.test:{port}", "/pages/3")))
    assert page.text.startswith("Ada Lovelace")
    with pytest.raises(SearchError, match="redirects more than 5 times"):
        backend.get(planted(backend, f"http://public.test:{port}/loop"))
    backend.close()


def _bounded_get(backend: SerperSearch, url: str) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        page = backend.get(url)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return page, peak


def test_a_300_mb_page_is_cut_at_the_cap_with_bounded_memory(fake_web: str) -> None:
    """It used 607 MiB of host memory before; now at most ``max_page_bytes`` is read."""
    backend = web(fake_web, max_page_bytes=2**20)
    link = planted(backend, f"{fake_web}/big")
    FakeWeb.big_bytes_sent = 0
    page, peak = _bounded_get(backend, link)
    assert page.text == "a" * backend.max_page_chars
    assert peak < 24 * 2**20, f"peak Python memory {peak / 2**20:.0f} MiB for a 1 MiB cap"
    # The rest was never read: the server could only fill the socket buffers before the close.
    sent = FakeWeb.big_bytes_sent
    assert sent < 64 * 2**20, f"{sent / 2**20:.0f} MiB of {BIG_MB} MiB were sent"
    backend.close()


def test_a_gzip_bomb_stops_at_the_cap(fake_web: str) -> None:
    FakeWeb.bomb = _gzip_bomb(BIG_MB * 2**20)
    assert len(FakeWeb.bomb) < 2**20  # 300 MiB inflated
    backend = web(fake_web, max_page_bytes=2**20, max_page_chars=3 * 2**20)
    page, peak = _bounded_get(backend, planted(backend, f"{fake_web}/bomb"))
    assert page.text == "a" * 2**20  # exactly the cap of inflated bytes
    assert peak < 24 * 2**20, f"peak Python memory {peak / 2**20:.0f} MiB for a 1 MiB cap"
    backend.close()


def test_the_agent_reads_the_refusal_and_the_episode_goes_on(fake_web: str, secret: str) -> None:
    """Through the sandboxed env: open_page on a result that redirects to the host's own service is a
    ToolError naming the refusal, the secret is not reached, and the next call works."""
    import gymnasium as gym

    import l0_env

    spec = {
        "backend": "serper",
        "api_key": KEY,
        "base_url": fake_web,
        "retries": 0,
        "address_policy": admit_the_fake,
        "resolver": test_resolver,
    }
    env = gym.make(l0_env.ENV_ID, search=spec, sandbox="bwrap", pool_size=0, max_steps=3)
    hits = Secret.hits
    try:
        env.reset(seed=0)
        link = redirect(fake_web, f"{secret}/secret")
        code = (
            f"[hit] = web_search({'url:' + link!r}, k=1)\n"
            "try:\n    print(open_page(hit['id']))\nexcept ToolError as e:\n    print('caught', e)\n"
            "print(open_page(web_search('ada', k=1)[0]['id'])[:40])"
        )
        _, _, _, _, info = env.step(f"<think>Open the planted page.</think><code>{code}</code>")
        text = info["cell_outputs"][0]["text"]
        assert "caught open_page failed: refused to open" in text, text
        assert "127.0.0.2 is a loopback address" in text and "SECRET" not in text, text
        assert text.splitlines()[-1].startswith("# Result 1 for ada"), text
    finally:
        env.close()
    assert Secret.hits == hits
