"""The search server attacked as a hostile client would, for real: uvicorn on 127.0.0.1, real BM25.

Each attack from the hardening review: a huge batch that starved other clients (and went on after
its client gave up), a 5 MB query, a 300 MB body (announced, and streamed without a length),
``"topk": NaN`` and other bad values, and a client that must not retry what the server refuses.
The backend is the real BM25 index behind a wrapper that only counts the queries searched (the
count is how a test sees that abandoned work stopped).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi", reason="the 'server' extra is not installed")
pytest.importorskip("uvicorn", reason="the 'server' extra is not installed")

from l0_env.tools.bm25 import BM25Search
from l0_env.tools.remote import HTTPSearch
from l0_env.tools.retrieve_request import ServerLimits
from l0_env.tools.search import (
    Hit,
    Page,
    SearchBackend,
    SearchError,
    SearchUnavailable,
    bundled_corpus_path,
    iter_passages,
)
from l0_env.tools.search_server import create_app
from tests.test_search_server import SMALL, ServerThread, start_server_cli

ROOT = Path(__file__).resolve().parents[1]


class Counting(SearchBackend):
    """The real backend, counting the queries it was asked (nothing else changes)."""

    def __init__(self, inner: SearchBackend) -> None:
        self.inner = inner
        self.num_docs = getattr(inner, "num_docs", None)
        self.queries = 0
        self._lock = threading.Lock()

    def search(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        with self._lock:
            self.queries += len(queries)
        return self.inner.search(queries, k)

    def get(self, doc_id: str) -> Page:
        return self.inner.get(doc_id)


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> BM25Search:
    """BM25 over the bundled 13k HotpotQA passages: a batch of 1,000s of queries takes seconds."""
    return BM25Search.from_corpus(cache_dir=tmp_path_factory.mktemp("bundled-cache"))


@pytest.fixture(scope="module")
def titles() -> list[str]:
    """4,096 real titles: the queries of a huge batch."""
    return [p.title for p, _ in zip(iter_passages(bundled_corpus_path()), range(4096), strict=False)]


def wait_until(cond: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def settled(read: Any, quiet: float = 0.5, timeout: float = 60) -> int:
    """``read()`` once it has stopped changing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last = read()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError(f"the count kept changing for {timeout}s (last {last})")


# -- bad values, sizes -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The four-passage corpus file and its index cache folder."""
    d = tmp_path_factory.mktemp("attack-small")
    corpus = d / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in SMALL))
    return corpus, d / "cache"


def small_backend(files: tuple[Path, Path]) -> BM25Search:
    return BM25Search.from_corpus(files[0], cache_dir=files[1])


@pytest.fixture(scope="module")
def small_server(small_files: tuple[Path, Path]) -> Iterator[ServerThread]:
    with ServerThread(create_app(small_backend(small_files), name="bm25")) as srv:
        yield srv


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ('{"queries": ["Babbage"], "topk": NaN}', 400, "invalid_json"),  # was a 500
        ('{"queries": ["Babbage"], "topk": Infinity}', 400, "invalid_json"),
        ('{"queries": ["Babbage"], "topk": -1}', 422, "invalid_request"),
        ('{"queries": ["Babbage"], "topk": "3"}', 422, "invalid_request"),
        ('{"queries": ["Babbage"], "topk": 1.5}', 422, "invalid_request"),
        ('{"queries": ["Babbage"], "return_scores": "yes"}', 422, "invalid_request"),
        ('{"queries": [1]}', 422, "invalid_request"),
        ('{"queries": ["a"]' + "}" * 3, 400, "invalid_json"),
        ("[" * 100_000 + "]" * 100_000, 400, "invalid_json"),  # a parser recursion bomb
        ('{"queries": ["q"], "topk": 50}', 200, None),
        ('{"queries": ["q"], "topk": 51}', 422, "invalid_request"),
        (json.dumps({"queries": ["q"] * 4097}), 413, "too_many_queries"),
        (json.dumps({"queries": ["q"] * 4096, "topk": 5}), 413, "too_many_results"),
    ],
)
def test_bad_values_get_a_clear_4xx(
    small_server: ServerThread, body: str, status: int, error: str | None
) -> None:
    resp = httpx.post(
        f"{small_server.url}/retrieve", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    assert resp.status_code == status, resp.text
    if error is not None:
        data = resp.json()
        assert data["error"] == error and isinstance(data["detail"], str) and data["detail"]
    # The server is fine afterwards.
    ok = httpx.post(f"{small_server.url}/retrieve", json={"queries": ["Babbage"], "topk": 1}, timeout=30)
    assert ok.json()["result"][0][0]["id"] == "p2"


def test_a_5_mb_query_is_refused_at_once(small_server: ServerThread, small_files: tuple[Path, Path]) -> None:
    """It took 118 s before; now the body limit (2 MiB) refuses it, and with a larger body limit
    the query-length limit does, before any search runs."""
    huge = {"queries": ["Babbage " * 650_000], "topk": 3}
    resp = httpx.post(f"{small_server.url}/retrieve", json=huge, timeout=60)
    assert resp.status_code == 413 and resp.json()["error"] == "body_too_large", resp.text
    assert "at most 2097152" in resp.json()["detail"]
    backend = Counting(small_backend(small_files))
    limits = ServerLimits(max_body_bytes=8 * 2**20, max_buffered_bytes=16 * 2**20)
    with ServerThread(create_app(backend, limits=limits)) as srv:
        resp = httpx.post(f"{srv.url}/retrieve", json=huge, timeout=60)
        assert resp.status_code == 413, resp.text
        assert resp.json() == {
            "error": "query_too_long",
            "detail": "queries[0] has 5200000 characters; at most 4096",
        }
        assert backend.queries == 0


def test_an_announced_300_mb_body_is_refused_before_it_is_sent(small_server: ServerThread) -> None:
    """Headers claiming 300 MB get 413 at once: the server does not wait for (or read) the body."""
    port = int(small_server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 314572800\r\n\r\n"
        )
        reply = _read_reply(s)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b"connection: close" in head.lower()  # the unread body cannot be taken for a next request
    assert json.loads(body)["error"] == "body_too_large"


def test_a_body_sent_slowly_gets_408_at_the_deadline(small_files: tuple[Path, Path]) -> None:
    """A client that announces 100 bytes and sends 10 holds its connection only until the deadline."""
    app = create_app(small_backend(small_files), limits=ServerLimits(request_timeout=1.0))
    with ServerThread(app) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b'{"queries"')
            reply = _read_reply(s)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), reply[:300]
        assert json.loads(body) == {
            "error": "body_timeout",
            "detail": "the request body did not arrive within 1 s",
        }
        assert _health(srv.url)["load"]["buffered_bytes"] == 0  # the 10 bytes were given back


def _read_reply(s: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data


def test_a_streamed_300_mb_body_is_cut_off_and_its_memory_not_kept(small_files: tuple[Path, Path]) -> None:
    """A chunked body with no length is read only up to the limit; the server process's memory
    does not grow by the body (it grew by ~300 MB and kept it before)."""
    args = [
        "--corpus",
        str(small_files[0]),
        "--cache-dir",
        str(small_files[1]),
        "--max-body-bytes",
        "1000000",
    ]
    proc, port = start_server_cli(args)
    try:
        url = f"http://127.0.0.1:{port}"
        assert _health(url)["limits"]["max_body_bytes"] == 1_000_000  # the CLI flag took effect
        before = _rss_mib(proc.pid)
        sent = 0
        piece = b"x" * (1 << 20)
        reply = b""
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            s.sendall(b'e\r\n{"queries": ["\r\n')  # one chunk of 14 bytes
            try:
                while sent < 300 * 2**20:
                    s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    sent += len(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass
            reply = _read_reply(s)
        after = _rss_mib(proc.pid)
        assert sent < 100 * 2**20, f"the server kept reading: {sent} bytes were accepted"
        if reply:  # the reply can be lost to the reset that the unread bytes cause
            assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert after - before < 64, f"server RSS grew {before:.0f} -> {after:.0f} MiB"
        assert _health(url)["load"] == {"jobs": 0, "units_run": 0, "buffered_bytes": 0}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _health(url: str) -> dict[str, Any] | None:
    try:
        return httpx.get(f"{url}/health", timeout=5, trust_env=False).json()
    except httpx.TransportError:
        return None


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# -- fairness, abandoned work, deadlines ----------------------------------------------------------


@pytest.mark.slow  # ~20 s of a huge batch; round-robin serving itself: tests/test_search_limits.py (FairPool)
def test_a_small_query_is_answered_while_a_huge_batch_runs(bundled: BM25Search, titles: list[str]) -> None:
    """Client A sends two batches of 2,048 queries × topk 50; client B's one query is answered
    while both are still running (before, B waited for a whole batch: past 45 s at 4,096)."""
    backend = Counting(bundled)
    limits = ServerLimits(max_results=4096 * 50, threads=2, request_timeout=600)
    big = {"queries": titles[:2048], "topk": 50, "return_scores": True}
    finished: dict[str, float] = {}
    statuses: dict[str, int] = {}
    with ServerThread(create_app(backend, limits=limits)) as srv:

        def client_a(name: str) -> None:
            resp = httpx.post(f"{srv.url}/retrieve", json=big, timeout=600)
            finished[name] = time.monotonic()
            statuses[name] = resp.status_code

        a_started = time.monotonic()
        threads = [threading.Thread(target=client_a, args=(n,)) for n in ("A1", "A2")]
        for t in threads:
            t.start()
        wait_until(lambda: backend.queries >= 32, "A's batches are being searched")
        b_sent = time.monotonic()
        resp = httpx.post(f"{srv.url}/retrieve", json={"queries": ["Ada Lovelace"], "topk": 3}, timeout=600)
        b_done = time.monotonic()
        a_running_when_b_done = not finished
        for t in threads:
            t.join(600)
    assert resp.status_code == 200 and len(resp.json()["result"][0]) == 3
    assert statuses == {"A1": 200, "A2": 200}, statuses
    b_wait, a_total = b_done - b_sent, max(finished.values()) - a_started
    assert a_running_when_b_done, f"B waited {b_wait:.2f}s, until A's batches were done ({a_total:.2f}s)"
    assert b_wait < a_total / 3, f"B waited {b_wait:.2f}s; A's batches took {a_total:.2f}s"


def test_work_stops_when_the_client_gives_up(bundled: BM25Search, titles: list[str]) -> None:
    backend = Counting(bundled)
    limits = ServerLimits(max_results=4096 * 50, threads=2, request_timeout=600)
    with ServerThread(create_app(backend, limits=limits)) as srv:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{srv.url}/retrieve", json={"queries": titles, "topk": 50}, timeout=1.5)
        done = settled(lambda: backend.queries)
        assert done < len(titles) / 2, f"{done} of {len(titles)} queries searched after the client left"
        wait_until(lambda: _health(srv.url)["load"]["jobs"] == 0, "the job is dropped", timeout=30)


def test_a_request_past_its_deadline_gets_504_and_its_work_stops(
    bundled: BM25Search, titles: list[str]
) -> None:
    backend = Counting(bundled)
    limits = ServerLimits(max_results=4096 * 50, threads=1, request_timeout=1.0)
    calls = {"retrieve": 0}
    app = create_app(backend, limits=limits)

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/retrieve":
            calls["retrieve"] += 1
        await app(scope, receive, send)

    with ServerThread(counted) as srv:
        resp = httpx.post(f"{srv.url}/retrieve", json={"queries": titles, "topk": 50}, timeout=120)
        assert resp.status_code == 504, resp.text
        assert resp.json()["error"] == "deadline_exceeded"
        assert "1 s" in resp.json()["detail"] and "fewer queries" in resp.json()["detail"]
        done = settled(lambda: backend.queries)
        assert done < len(titles) / 2, f"{done} of {len(titles)} queries searched after the deadline"
        # Our client does not retry a deadline (the same batch would run out again): one request.
        client = HTTPSearch(srv.url, retries=3, backoff=0.01, timeout=120, max_batch=4096)
        calls["retrieve"] = 0
        with pytest.raises(SearchError, match="deadline_exceeded") as info:
            client.search(titles, k=50)
        assert not isinstance(info.value, SearchUnavailable)
        assert calls["retrieve"] == 1
        client.close()


def test_a_full_server_says_busy_and_the_client_honours_retry_after(
    bundled: BM25Search, titles: list[str]
) -> None:
    backend = Counting(bundled)
    limits = ServerLimits(max_results=4096 * 50, threads=1, max_pending=1)
    with ServerThread(create_app(backend, limits=limits)) as srv:
        port = int(srv.url.rsplit(":", 1)[1])
        body = json.dumps({"queries": titles, "topk": 50}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as hog:  # holds the one slot
            hog.sendall(
                b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )
            wait_until(lambda: backend.queries > 0, "the first request runs")
            resp = httpx.post(f"{srv.url}/retrieve", json={"queries": ["Ada"]}, timeout=30)
            assert resp.status_code == 503 and resp.json()["error"] == "busy"
            assert resp.headers["retry-after"] == "1"
            client = HTTPSearch(srv.url, retries=1, backoff=0.01, timeout=30)
            started = time.monotonic()
            with pytest.raises(SearchUnavailable, match="busy"):
                client.search(["Ada"])
            assert time.monotonic() - started >= 1.0  # waited the second that Retry-After asked for
        # The hog hung up: its work is dropped and the slot is free again.
        wait_until(lambda: _health(srv.url)["load"]["jobs"] == 0, "the hog's job is dropped")
        assert client.search([titles[5]], k=1)[0][0].title == titles[5]
        client.close()


def test_the_client_does_not_retry_a_4xx_and_says_why(small_files: tuple[Path, Path]) -> None:
    app = create_app(small_backend(small_files), limits=ServerLimits(max_query_chars=10))
    calls = {"n": 0}

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/retrieve":
            calls["n"] += 1
        await app(scope, receive, send)

    with ServerThread(counted) as srv:
        client = HTTPSearch(srv.url, retries=5, backoff=0.01)
        with pytest.raises(SearchError) as info:
            client.search(["who designed the analytical engine"])
        assert str(info.value) == (
            "the search server rejected the search request (HTTP 413, query_too_long): "
            "queries[0] has 34 characters; at most 10"
        )
        assert calls["n"] == 1  # no retry storm
        assert client.search(["Babbage"], k=1)[0][0].doc_id == "p2"
        client.close()


def test_the_agent_reads_the_servers_refusal(small_files: tuple[Path, Path]) -> None:
    """Through the sandboxed env: an over-long query is a ToolError naming the limit; the episode goes on."""
    import gymnasium as gym

    import l0_env

    with ServerThread(create_app(small_backend(small_files), limits=ServerLimits(max_query_chars=40))) as srv:
        env = gym.make(l0_env.ENV_ID, search=srv.url, sandbox="bwrap", pool_size=0, max_steps=3)
        try:
            env.reset(seed=0)
            code = (
                "try:\n    web_search('who designed the analytical engine and when was it built')\n"
                "except ToolError as e:\n    print('caught', e)\nprint(web_search('Babbage', k=1)[0]['id'])"
            )
            _, _, _, _, info = env.step(f"<think>Search.</think><code>{code}</code>")
            text = info["cell_outputs"][0]["text"]
            assert "caught web_search failed:" in text and "at most 40" in text, text
            assert text.rstrip().endswith("p2"), text
        finally:
            env.close()


def test_cli_rejects_bad_limits() -> None:
    for flag, value in (("--request-timeout", "nan"), ("--max-topk", "51"), ("--max-queries", "0")):
        proc = subprocess.run(
            [sys.executable, "-m", "l0_env.tools.search_server", flag, value],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ},
        )
        assert proc.returncode == 2, proc.stderr
        assert flag.lstrip("-").replace("-", "_") in proc.stderr, proc.stderr
