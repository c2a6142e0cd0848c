"""A retrieval server speaking Search-R1's API, so it and Search-R1/GEM/SkyRL servers are interchangeable.

    python -m l0_env.tools.search_server --corpus FILE --port 8000 [--host 127.0.0.1] \\
        [--backend bm25|dense|hybrid] [--workers N] [limits: see --help]

Endpoints (FastAPI + uvicorn; needs the ``server`` extra, and ``dense`` for dense/hybrid):

- ``POST /retrieve`` with ``{"queries": [...], "topk": k, "return_scores": bool}`` answers
  ``{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}`` (one list per query, best
  first; ``contents`` is ``'"Title"\\ntext'``, the whole passage). With ``"return_scores": false``
  each entry is the bare document, as Search-R1 does. ``topk`` defaults to ``--topk`` (3, as in
  Search-R1); at most ``--max-topk`` (50).
- ``GET /page?id=ID`` answers ``{"id", "title", "text", "contents", "truncated"}`` (404 with
  ``{"error": "page_not_found", "detail"}`` for an unknown id).
- ``GET /health`` answers ``{"status": "ok", "backend", "num_docs", "corpus", "limits", "load"}``.

**Limits** (`l0_env.tools.retrieve_request.ServerLimits`, each a CLI flag): the body's size
(refused from its ``Content-Length`` before it is read), the number of queries, each query's
length, queries × topk, and each request's time. A request outside them gets a 4xx reply
``{"error", "detail"}`` (NaN, negative or mistyped values too); a full server answers 503
``busy`` with ``Retry-After``; a request out of time gets 504 ``deadline_exceeded`` (408
``body_timeout`` while its body is still arriving).

**Fair sharing.** Each request is cut into units of a few queries, and the search threads serve
the units of all requests round-robin (`l0_env.tools.fair_pool.FairPool`): a one-query request
waits for at most one unit of each request ahead of it, not for whole batches. A request's
remaining units are dropped when its client disconnects or its deadline passes, so abandoned
work stops.

The index is built (or loaded from the cache) before the server listens. Each worker process
memory-maps the same cached index, so ``--workers N`` costs little memory beyond the first; the
limits apply per worker process.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint annotations at runtime
# (and importing this module needs no fastapi: it is imported inside `create_app`).
import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from l0_env.tools.fair_pool import Cancelled, DeadlineExceeded, FairPool, Job, PoolBusy
from l0_env.tools.retrieve_request import (
    RequestRejected,
    RetrieveRequest,
    ServerLimits,
    parse_retrieve_body,
    plan_chunks,
)
from l0_env.tools.search import (
    PageNotFound,
    SearchBackend,
    SearchError,
    bundled_corpus_path,
    passage_contents,
)

log = logging.getLogger(__name__)
_ENV_CONFIG = "L0_SEARCH_SERVER_CONFIG"


class _ByteBudget:
    """Bytes of request bodies held at once, across requests (``max_buffered_bytes``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if self.held + n > self.limit:
                return False
            self.held += n
            return True

    def give_back(self, n: int) -> None:
        with self._lock:
            self.held -= n


def create_app(
    backend: SearchBackend,
    *,
    name: str = "custom",
    corpus: str | None = None,
    default_topk: int = 3,
    limits: ServerLimits | None = None,
) -> Any:
    """A FastAPI app serving ``backend`` (see the module docstring for the API and the limits).

    Searches run on ``limits.threads`` threads (default: the number of CPUs). Search is
    CPU-bound, so more threads would not finish sooner; and each search allocates a score array
    per passage (8 MB at 1M passages) that glibc keeps cached per thread, so a few long-lived
    threads also keep the memory down (uvicorn's default pool of 40 held ~4x more at 1M passages).

    Raises:
        ValueError: ``default_topk`` is outside [1, ``limits.max_topk``].
    """
    try:
        from fastapi import FastAPI, Query, Request
        from fastapi.responses import Response
        from starlette.requests import ClientDisconnect
    except ImportError as exc:
        raise ImportError(
            f"the search server needs the 'server' extra: pip install 'l0-gym[server]' ({exc})"
        ) from exc

    limits = limits or ServerLimits()
    if isinstance(default_topk, bool) or not isinstance(default_topk, int):
        raise ValueError(f"default_topk must be an int, got {default_topk!r}")
    if not 1 <= default_topk <= limits.max_topk:
        raise ValueError(f"default_topk must be from 1 to max_topk ({limits.max_topk}), got {default_topk}")
    app = FastAPI(title="L0 Gym retrieval server", version="1")
    num_docs = getattr(backend, "num_docs", None)
    pool = FairPool(limits.search_threads, limits.max_pending, name="search")
    budget = _ByteBudget(limits.max_buffered_bytes)
    app.router.on_shutdown.append(pool.close)

    def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        # json.dumps directly: FastAPI's jsonable_encoder walk costs more than the search itself
        body = json.dumps(data, ensure_ascii=False).encode("utf-8")
        return Response(content=body, status_code=status, media_type="application/json", headers=headers)

    def rejected(exc: RequestRejected, *, close: bool = False) -> Response:
        headers = {"Retry-After": f"{exc.retry_after:g}"} if exc.retry_after is not None else {}
        if close:  # the body was not read to its end: the connection cannot carry another request
            headers["Connection"] = "close"
        return json_response(exc.body(), exc.status, headers)

    def busy(what: str) -> RequestRejected:
        return RequestRejected(
            503, "busy", f"the search server is busy ({what}); try again shortly", retry_after=1
        )

    async def read_body(request: Request, held: list[int]) -> bytes:
        """The body, refused early when too big; ``held[0]`` counts the budget bytes taken.

        The budget is taken as bytes arrive (not from ``Content-Length``), so a client that
        announces a body and sends it slowly holds only what it sent, and only until the deadline.
        """
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise RequestRejected(400, "invalid_request", f"bad Content-Length {length[:40]!r}")
            if int(length) > limits.max_body_bytes:
                raise RequestRejected(
                    413,
                    "body_too_large",
                    f"the request body has {int(length)} bytes; at most {limits.max_body_bytes}",
                )
        body = bytearray()
        async for chunk in request.stream():
            if len(body) + len(chunk) > limits.max_body_bytes:
                raise RequestRejected(
                    413, "body_too_large", f"the request body is over {limits.max_body_bytes} bytes"
                )
            if not budget.take(len(chunk)):
                raise busy("too many request bodies held")
            held[0] += len(chunk)
            body += chunk
        return bytes(body)

    async def wait_disconnect(request: Request) -> None:
        # Once the body is read, receive() returns only when the client disconnects.
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def run_job(request: Request, units: list[Any], deadline: float) -> Job | None:
        """Run ``units`` on the pool; None when the client went away (its work is dropped)."""
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def finish() -> None:
            if not finished.done():
                finished.set_result(None)

        def on_done(_: Job) -> None:
            # RuntimeError: the event loop is closed, the server is shutting down
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(finish)

        try:
            job = pool.submit(units, deadline=deadline, on_done=on_done)
        except PoolBusy as exc:
            raise busy(str(exc)) from None
        gone = asyncio.ensure_future(wait_disconnect(request))
        try:
            await asyncio.wait(
                {finished, gone},
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            gone.cancel()
        if not finished.done():
            client_left = gone.done() and not gone.cancelled()
            pool.cancel(job, Cancelled() if client_left else DeadlineExceeded())
            if client_left:
                return None
        if isinstance(job.error, DeadlineExceeded) or (job.error is None and not job.done.is_set()):
            raise RequestRejected(
                504,
                "deadline_exceeded",
                f"the request did not finish within {limits.request_timeout:g} s (the server's "
                "--request-timeout); send fewer queries per request",
            )
        if isinstance(job.error, Cancelled):
            return None
        return job

    def failed(exc: BaseException) -> Response:
        if isinstance(exc, PageNotFound):
            return json_response({"error": "page_not_found", "detail": str(exc)}, 404)
        if isinstance(exc, SearchError):
            return json_response({"error": "search_unavailable", "detail": str(exc)}, 503)
        log.error("a search failed", exc_info=exc)
        return json_response({"error": "internal_error", "detail": type(exc).__name__}, 500)

    def search_unit(queries: list[str], request: RetrieveRequest) -> bytes:
        """JSON of one unit's result lists, comma-separated (joined into the reply as they are)."""
        parts = []
        for hits in backend.search(queries, k=request.topk):
            docs = []
            for h in hits:
                page = backend.get(h.doc_id)
                doc = {"id": page.doc_id, "contents": passage_contents(page.title, page.text)}
                docs.append({"document": doc, "score": h.score} if request.return_scores else doc)
            parts.append(json.dumps(docs, ensure_ascii=False))
        return ",".join(parts).encode("utf-8")

    def page_payload(doc_id: str) -> dict[str, Any]:
        p = backend.get(doc_id)
        text = p.text[: limits.max_page_chars]
        return {
            "id": p.doc_id,
            "title": p.title,
            "text": text,
            "contents": passage_contents(p.title, text),
            "truncated": len(text) < len(p.text),
        }

    @app.post("/retrieve")
    async def retrieve(request: Request) -> Response:
        deadline = time.monotonic() + limits.request_timeout
        held = [0]
        body_read = False
        try:
            try:
                body = await asyncio.wait_for(read_body(request, held), timeout=limits.request_timeout)
            except asyncio.TimeoutError:
                raise RequestRejected(
                    408,
                    "body_timeout",
                    f"the request body did not arrive within {limits.request_timeout:g} s",
                ) from None
            body_read = True
            parsed = await asyncio.to_thread(parse_retrieve_body, body, limits, default_topk)
            del body
            chunks = plan_chunks(parsed.queries, limits.chunk_queries, limits.chunk_chars)
            units = [(lambda qs=parsed.queries[s:e]: search_unit(qs, parsed)) for s, e in chunks]
            job = await run_job(request, units, deadline)
        except RequestRejected as exc:
            return rejected(exc, close=not body_read)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening
        finally:
            budget.give_back(held[0])
        if job is None:
            return Response(status_code=400)  # the client went away; nobody reads this
        if job.error is not None:
            return failed(job.error)
        content = b'{"result":[' + b",".join(r for r in job.results if r) + b"]}"
        return Response(content=content, media_type="application/json")

    @app.get("/page")
    async def page(
        request: Request, id: str = Query(..., description="passage id from /retrieve")
    ) -> Response:
        try:
            job = await run_job(
                request, [lambda: page_payload(id)], time.monotonic() + limits.request_timeout
            )
        except RequestRejected as exc:
            return rejected(exc)
        if job is None:
            return Response(status_code=400)
        if job.error is not None:
            return failed(job.error)
        return json_response(job.results[0])

    @app.get("/health")
    def health() -> Response:
        return json_response(
            {
                "status": "ok",
                "backend": name,
                "num_docs": num_docs,
                "corpus": corpus,
                "limits": limits.as_dict(),
                "load": {**pool.stats(), "buffered_bytes": budget.held},
            }
        )

    return app


def load_backend(
    backend: str, corpus: str | None, cache_dir: str | None, show_progress: bool = False
) -> SearchBackend:
    """Build or load the named embedded backend over ``corpus`` (None: the bundled passages)."""
    from l0_env.tools import make_search_backend

    return make_search_backend(
        {"backend": backend, "cache_dir": cache_dir, "show_progress": show_progress},
        corpus=corpus,
        shared=False,
    )


def app_from_env() -> Any:
    """App factory for ``uvicorn --factory`` and worker processes: config from ``$L0_SEARCH_SERVER_CONFIG``."""
    cfg = json.loads(os.environ[_ENV_CONFIG])
    backend = load_backend(cfg["backend"], cfg["corpus"], cfg["cache_dir"])
    return create_app(
        backend,
        name=cfg["backend"],
        corpus=cfg["corpus"],
        default_topk=cfg["topk"],
        limits=ServerLimits(**cfg["limits"]),
    )


_LIMIT_HELP = {
    "max_body_bytes": "largest request body in bytes; a bigger Content-Length is refused (413) before it is read",
    "max_queries": "most queries in one /retrieve request (413)",
    "max_query_chars": "longest query in characters (413)",
    "max_topk": "largest topk a request may ask for, at most 50 (422)",
    "max_results": "most results per request, queries x topk (413)",
    "request_timeout": "seconds a request may take, body included; then its remaining work is dropped (504; 408 for a body still arriving)",
    "max_pending": "requests admitted at once, queued or running; more get 503 busy",
    "max_buffered_bytes": "bytes of request bodies held at once; more get 503 busy",
    "chunk_queries": "queries per unit of work; units of all requests are served round-robin",
    "chunk_chars": "query characters per unit of work (a unit holds at least one query)",
    "threads": "search threads per worker process (0: the number of CPUs)",
    "max_page_chars": "longest passage text /page returns",
}


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--max-...`` flag per `ServerLimits` field, defaulting to the field's default."""
    group = parser.add_argument_group("limits (per worker process)")
    for f in dataclasses.fields(ServerLimits):
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            type=float if f.type in (float, "float") else int,
            default=f.default,
            help=f"{_LIMIT_HELP[f.name]} (default {f.default})",
        )


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    """The `ServerLimits` the flags of `add_limit_flags` give."""
    return ServerLimits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServerLimits)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m l0_env.tools.search_server",
        description="Serve a passage corpus over Search-R1's /retrieve API (plus /page and /health).",
    )
    parser.add_argument(
        "--corpus", help="JSONL(.gz) or Parquet passages; default: the bundled HotpotQA passages"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 for every interface)")
    parser.add_argument("--backend", choices=["bm25", "dense", "hybrid"], default="bm25")
    parser.add_argument("--cache-dir", help="index cache folder (default $L0_CACHE_DIR or ~/.cache/l0_env)")
    parser.add_argument("--topk", type=int, default=3, help="results per query when a request gives no topk")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--log-level", default="warning")
    add_limit_flags(parser)
    args = parser.parse_args(argv)
    try:
        limits = limits_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if not 1 <= args.topk <= limits.max_topk:
        parser.error(f"--topk must be from 1 to --max-topk ({limits.max_topk}), got {args.topk}")

    import uvicorn

    corpus = str(Path(args.corpus).resolve()) if args.corpus else str(bundled_corpus_path())
    cache_dir = str(Path(args.cache_dir).resolve()) if args.cache_dir else None
    backend = load_backend(args.backend, corpus, cache_dir, show_progress=True)  # build once, up front
    print(
        f"serving {args.backend} over {corpus} ({getattr(backend, 'num_docs', '?')} passages) "
        f"on http://{args.host}:{args.port}",
        flush=True,
    )
    if args.workers > 1:
        backend.close()
        os.environ[_ENV_CONFIG] = json.dumps(
            {
                "backend": args.backend,
                "corpus": corpus,
                "cache_dir": cache_dir,
                "topk": args.topk,
                "limits": limits.as_dict(),
            }
        )
        uvicorn.run(
            "l0_env.tools.search_server:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
        )
    else:
        app = create_app(backend, name=args.backend, corpus=corpus, default_topk=args.topk, limits=limits)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
