"""The retrieval server (Search-R1's /retrieve API) and the `http` backend, over loopback only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

fastapi = pytest.importorskip("fastapi", reason="the 'server' extra is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the 'server' extra is not installed")
pydantic = pytest.importorskip("pydantic")

from l0_env.tools import make_search_backend  # noqa: E402
from l0_env.tools.bm25 import BM25Search  # noqa: E402
from l0_env.tools.remote import HTTPSearch  # noqa: E402
from l0_env.tools.retrieve_request import ServerLimits  # noqa: E402
from l0_env.tools.search import Page, PageNotFound, SearchError, SearchUnavailable  # noqa: E402
from l0_env.tools.search_server import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class QueryRequest(pydantic.BaseModel):
    """Search-R1's request model (module level: FastAPI resolves annotations from module globals)."""

    queries: list[str]
    topk: int | None = None
    return_scores: bool = False


SMALL = [
    {"id": "p1", "title": "Ada Lovelace", "text": "Ada Lovelace was an English mathematician and writer."},
    {"id": "p2", "title": "Charles Babbage", "text": "Babbage designed the Analytical Engine, a computer."},
    {"id": "p3", "title": "Alan Turing", "text": "Turing was a pioneer of theoretical computer science."},
    {
        "id": "p4",
        "title": 'The "Hopper" Compiler',
        "text": "Hopper invented one of the first compiler tools.",
    },
]


class ServerThread:
    """Serve an ASGI app with uvicorn on 127.0.0.1 and a free port, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server_cli(
    args: list[str], *, env: dict[str, str] | None = None, timeout: float = 180
) -> tuple[subprocess.Popen, int]:
    """``python -m l0_env.tools.search_server ARGS --port P`` once ``/health`` answers: (process, port).

    A port found free can be taken by another process before the server binds it: then the server
    exits with "address already in use" and another port is tried (3 attempts). The timeout covers
    the imports and the index build on a busy machine.
    """
    for _attempt in range(3):
        port = free_port()
        cmd = [sys.executable, "-m", "l0_env.tools.search_server", *args, "--port", str(port)]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        client = HTTPSearch(f"http://127.0.0.1:{port}", retries=0)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                try:
                    client.health()
                    return proc, port
                except SearchUnavailable:
                    if time.monotonic() > deadline:
                        proc.kill()
                        raise AssertionError(
                            f"the search server did not answer /health in {timeout:.0f} s"
                        ) from None
                    time.sleep(0.2)
        finally:
            client.close()
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "address already in use" in output.lower(), output
    raise AssertionError("no free port for the search server in 3 attempts")


@pytest.fixture(scope="module")
def small_backend(tmp_path_factory: pytest.TempPathFactory) -> BM25Search:
    d = tmp_path_factory.mktemp("srv")
    corpus = d / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in SMALL))
    return BM25Search.from_corpus(corpus, cache_dir=d / "cache")


@pytest.fixture(scope="module")
def server(small_backend: BM25Search) -> Iterator[ServerThread]:
    with ServerThread(create_app(small_backend, name="bm25", corpus="c.jsonl")) as srv:
        yield srv


@pytest.fixture()
def client(server: ServerThread) -> Iterator[HTTPSearch]:
    backend = HTTPSearch(server.url, retries=0)
    yield backend
    backend.close()


def test_search_r1_request_gets_the_documented_shape(server: ServerThread) -> None:
    """A request exactly as Search-R1's trainer sends it; the reply as Search-R1's server writes it."""
    body = {
        "queries": ["who designed the analytical engine", "computer science pioneer"],
        "topk": 3,
        "return_scores": True,
    }
    resp = httpx.post(f"{server.url}/retrieve", json=body, timeout=10)
    assert resp.status_code == 200
    data = resp.json()
    assert list(data) == ["result"]
    assert len(data["result"]) == 2
    for per_query in data["result"]:
        assert 1 <= len(per_query) <= 3
        for item in per_query:
            assert set(item) == {"document", "score"}
            assert set(item["document"]) == {"id", "contents"}
            assert isinstance(item["score"], float)
        scores = [item["score"] for item in per_query]
        assert scores == sorted(scores, reverse=True)
    first = data["result"][0][0]["document"]
    assert first == {"id": "p2", "contents": '"Charles Babbage"\n' + SMALL[1]["text"]}
    # Search-R1's client parses contents like this:
    content = first["contents"]
    assert content.split("\n")[0].strip('"') == "Charles Babbage"
    assert "\n".join(content.split("\n")[1:]) == SMALL[1]["text"]


def test_retrieve_without_scores_and_default_topk(server: ServerThread) -> None:
    resp = httpx.post(f"{server.url}/retrieve", json={"queries": ["computer"]}, timeout=10)
    [docs] = resp.json()["result"]
    assert 1 <= len(docs) <= 3  # topk defaults to 3, as in Search-R1
    assert all(set(d) == {"id", "contents"} for d in docs)
    resp = httpx.post(f"{server.url}/retrieve", json={"queries": ["", "computer"], "topk": 1}, timeout=10)
    assert [len(r) for r in resp.json()["result"]] == [0, 1]
    bad = httpx.post(f"{server.url}/retrieve", json={"queries": "not a list"}, timeout=10)
    assert bad.status_code == 422


def test_page_and_health_endpoints(server: ServerThread) -> None:
    page = httpx.get(f"{server.url}/page", params={"id": "p4"}, timeout=10).json()
    assert page == {
        "id": "p4",
        "title": SMALL[3]["title"],
        "text": SMALL[3]["text"],
        "contents": f'"{SMALL[3]["title"]}"\n{SMALL[3]["text"]}',
        "truncated": False,
    }
    missing = httpx.get(f"{server.url}/page", params={"id": "nope"}, timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"] == "page_not_found"
    health = httpx.get(f"{server.url}/health", timeout=10).json()
    limits, load = health.pop("limits"), health.pop("load")
    assert health == {"status": "ok", "backend": "bm25", "num_docs": 4, "corpus": "c.jsonl"}
    assert limits == ServerLimits().as_dict()  # published, so a client can size its batches
    assert load == {"jobs": 0, "units_run": load["units_run"], "buffered_bytes": 0}


def test_http_backend_matches_embedded(small_backend: BM25Search, client: HTTPSearch) -> None:
    queries = ["who designed the analytical engine", "compilers", "", "English writer", "zzqx"]
    remote = client.search(queries, k=3)
    local = small_backend.search(queries, k=3)
    assert [[h.doc_id for h in hits] for hits in remote] == [[h.doc_id for h in hits] for hits in local]
    for r_hits, l_hits in zip(remote, local, strict=True):
        for r, h in zip(r_hits, l_hits, strict=True):
            assert (r.title, r.snippet) == (h.title, h.snippet)
            assert r.score == pytest.approx(h.score)
    # Titles with quotes survive the "Title"\ntext round trip.
    assert client.search(["compilers"], k=1)[0][0].title == 'The "Hopper" Compiler'
    assert client.get("p3") == Page("p3", "Alan Turing", SMALL[2]["text"])
    fresh = HTTPSearch(client.url, retries=0)  # not in its cache: served by GET /page
    assert fresh.get("p1") == Page("p1", "Ada Lovelace", SMALL[0]["text"])
    with pytest.raises(PageNotFound, match="no passage with id 'nope'"):
        fresh.get("nope")
    assert fresh.health()["num_docs"] == 4
    fresh.close()
    fresh.close()  # idempotent
    with pytest.raises(SearchUnavailable, match="closed"):
        fresh.search(["x"])


def test_http_backend_is_thread_safe(client: HTTPSearch) -> None:
    queries = [r["title"] for r in SMALL] * 8
    serial = [client.search([q], k=2)[0] for q in queries]
    with ThreadPoolExecutor(max_workers=16) as pool:
        threaded = list(pool.map(lambda q: client.search([q], k=2)[0], queries))
    assert threaded == serial
    assert client.search(queries, k=2) == serial  # one batched request


def test_big_batches_are_split(small_backend: BM25Search, server: ServerThread) -> None:
    backend = HTTPSearch(server.url, max_batch=3)
    queries = [r["title"] for r in SMALL] * 2
    assert backend.search(queries, k=1) == small_backend.search(queries, k=1)
    backend.close()


def test_server_down_gives_a_clear_error_fast() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    backend = HTTPSearch(url, retries=2, backoff=0.01, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(SearchUnavailable) as info:
        backend.search(["anything"])
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert url in message and "3 attempts" in message and "try again later" in message
    assert isinstance(info.value, SearchError)
    with pytest.raises(SearchUnavailable):
        backend.get("p1")


def _search_r1_style_app(fail_first: int = 0, delay: float = 0.0) -> tuple[Any, dict[str, int]]:
    """A stand-in for Search-R1's own retrieval_server.py: /retrieve only, no /page, no /health."""
    app = fastapi.FastAPI()
    calls = {"n": 0}
    corpus = [{"id": str(i), "contents": f'"{r["title"]}"\n{r["text"]}'} for i, r in enumerate(SMALL)]

    @app.post("/retrieve")
    def retrieve(request: QueryRequest) -> Any:
        calls["n"] += 1
        if calls["n"] <= fail_first:
            raise fastapi.HTTPException(status_code=503, detail="warming up")
        time.sleep(delay)
        results = [corpus[: request.topk or 3] for _ in request.queries]
        if request.return_scores:
            return {
                "result": [
                    [{"document": d, "score": 1.0 / (i + 1)} for i, d in enumerate(r)] for r in results
                ]
            }
        return {"result": results}

    return app, calls


def test_http_backend_against_a_search_r1_server() -> None:
    app, _ = _search_r1_style_app()
    with ServerThread(app) as srv:
        backend = HTTPSearch(srv.url + "/retrieve", retries=0)  # a full /retrieve URL is accepted too
        [hits] = backend.search(["anything"], k=2)
        assert [(h.doc_id, h.title) for h in hits] == [("0", "Ada Lovelace"), ("1", "Charles Babbage")]
        assert hits[0].score == 1.0
        # No page endpoint: ids from recent results are served from the client's cache.
        assert backend.get("1") == Page("1", "Charles Babbage", SMALL[1]["text"])
        with pytest.raises(PageNotFound, match="no page endpoint"):
            backend.get("3")
        backend.close()


def test_http_backend_retries_then_succeeds() -> None:
    app, calls = _search_r1_style_app(fail_first=2)
    with ServerThread(app) as srv:
        backend = HTTPSearch(srv.url, retries=3, backoff=0.01)
        assert len(backend.search(["q"], k=1)[0]) == 1
        assert calls["n"] == 3
        backend.close()
    app, calls = _search_r1_style_app(fail_first=10)
    with ServerThread(app) as srv:
        backend = HTTPSearch(srv.url, retries=1, backoff=0.01)
        with pytest.raises(SearchUnavailable, match="HTTP 503: warming up after 2 attempts"):
            backend.search(["q"])
        backend.close()


def test_http_backend_timeout() -> None:
    app, _ = _search_r1_style_app(delay=5.0)
    with ServerThread(app) as srv:
        backend = HTTPSearch(srv.url, timeout=0.2, retries=1, backoff=0.01)
        started = time.monotonic()
        with pytest.raises(SearchUnavailable, match="timed out"):
            backend.search(["q"])
        assert time.monotonic() - started < 4.5  # two 0.2 s timeouts, not two 5 s answers
        backend.close()


def test_http_backend_rejects_malformed_replies() -> None:
    app = fastapi.FastAPI()

    @app.post("/retrieve")
    def retrieve() -> Any:
        return {"result": [[{"document": {"contents": 5}, "score": 1}]]}

    @app.get("/health")
    def health() -> Any:
        return ["not", "an", "object"]

    with ServerThread(app) as srv:
        backend = HTTPSearch(srv.url, retries=0)
        with pytest.raises(SearchError, match="cannot read"):
            backend.search(["q"])
        with pytest.raises(SearchError, match="one per query"):
            backend.search(["q", "r"])
        with pytest.raises(SearchError, match="not a JSON object"):
            backend.health()
        with pytest.raises(SearchError, match="HTTP 405"):  # not retried: a client error
            backend._json(backend._request("GET", "/retrieve"), "search")
        backend.close()


def test_make_search_backend_http(server: ServerThread) -> None:
    backend = make_search_backend(server.url, shared=False)
    assert isinstance(backend, HTTPSearch)
    assert backend.search(["Turing"], k=1)[0][0].doc_id == "p3"
    backend.close()
    tuned = make_search_backend(
        {"backend": "http", "url": server.url, "timeout": 2.0, "retries": 0}, shared=False
    )
    assert isinstance(tuned, HTTPSearch) and tuned.retries == 0
    tuned.close()


def test_server_cli_serves_a_corpus(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in SMALL))
    env = {**os.environ, "L0_CACHE_DIR": str(tmp_path / "cache")}
    proc, port = start_server_cli(["--corpus", str(corpus)], env=env)
    try:
        backend = HTTPSearch(f"http://127.0.0.1:{port}", retries=0)
        health = backend.health()
        assert health["status"] == "ok" and health["num_docs"] == 4 and health["backend"] == "bm25"
        assert backend.search(["Babbage"], k=1)[0][0].doc_id == "p2"
        backend.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_env_searches_through_the_server_with_one_setting(server: ServerThread) -> None:
    """``search="http://…"`` is the one setting: the sandboxed agent's web_search goes to our server."""
    import gymnasium as gym

    import l0_env

    first = SMALL[0]
    query = first.get("title") or first["contents"].split("\n")[0].strip('"')
    env = gym.make(l0_env.ENV_ID, search=server.url, sandbox="bwrap", pool_size=0, max_steps=3)
    try:
        env.reset(seed=0)
        code = f"hits = web_search({query!r}, k=2)\nprint(hits[0]['id'], open_page(hits[0]['id'])[:80])"
        _, _, _, _, info = env.step(f"<think>Search through the server.</think><code>{code}</code>")
        assert info["cell_status"] == "ok", info["cell_outputs"]
        assert info["cell_outputs"][0]["text"].startswith(first["id"])
    finally:
        env.close()


def test_a_dead_server_is_an_error_the_agent_sees_and_the_episode_goes_on() -> None:
    import gymnasium as gym

    import l0_env

    url = f"http://127.0.0.1:{free_port()}"
    spec = {"backend": "http", "url": url, "retries": 0, "connect_timeout": 1}
    env = gym.make(l0_env.ENV_ID, search=spec, sandbox="bwrap", pool_size=0, max_steps=3)
    try:
        env.reset(seed=0)
        code = "try:\n    web_search('anything')\nexcept ToolError as e:\n    print('caught', e)"
        _, _, terminated, _, info = env.step(f"<think>The server may be down.</think><code>{code}</code>")
        text = info["cell_outputs"][0]["text"]
        assert text.startswith("caught web_search failed:") and url in text, text
        _, _, terminated, _, _ = env.step(
            "<think>Answer anyway now.</think><code>submit_final_answer('x')</code>"
        )
        assert terminated
    finally:
        env.close()
