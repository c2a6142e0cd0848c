"""A retrieval server speaking Search-R1's API, so it and Search-R1/GEM/SkyRL servers are interchangeable.

    python -m l0_env.tools.search_server --corpus FILE --port 8000 [--host 127.0.0.1] \\
        [--backend bm25|dense|hybrid] [--workers N]

Endpoints (FastAPI + uvicorn; needs the ``server`` extra, and ``dense`` for dense/hybrid):

- ``POST /retrieve`` with ``{"queries": [...], "topk": k, "return_scores": bool}`` answers
  ``{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}`` (one list per query, best
  first; ``contents`` is ``'"Title"\\ntext'``, the whole passage). With ``"return_scores": false``
  each entry is the bare document, as Search-R1 does. ``topk`` defaults to ``--topk`` (3, as in
  Search-R1) and is capped at 50.
- ``GET /page?id=ID`` answers ``{"id", "title", "text", "contents", "truncated"}`` (404 with
  ``{"error": "page_not_found", "detail"}`` for an unknown id).
- ``GET /health`` answers ``{"status": "ok", "backend", "num_docs", "corpus"}``.

The index is built (or loaded from the cache) before the server listens. Each worker process
memory-maps the same cached index, so ``--workers N`` costs little memory beyond the first.
Requests run in uvicorn's thread pool; every backend is thread-safe.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint annotations at runtime,
# and the request model is defined inside `create_app` (so importing this module needs no fastapi).
import argparse
import asyncio
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from l0_env.tools.search import (
    PageNotFound,
    SearchBackend,
    SearchError,
    bundled_corpus_path,
    passage_contents,
)

log = logging.getLogger(__name__)
MAX_QUERIES = 4096
MAX_PAGE_CHARS = 200_000
_ENV_CONFIG = "L0_SEARCH_SERVER_CONFIG"


def create_app(
    backend: SearchBackend,
    *,
    name: str = "custom",
    corpus: str | None = None,
    default_topk: int = 3,
    max_queries: int = MAX_QUERIES,
    max_page_chars: int = MAX_PAGE_CHARS,
    max_concurrent: int | None = None,
) -> Any:
    """A FastAPI app serving ``backend`` (see the module docstring for the API).

    Requests run on a pool of ``max_concurrent`` threads (default: the number of CPUs). Search is
    CPU-bound, so more threads would not finish sooner; and each search allocates a score array
    per passage (8 MB at 1M passages) that glibc keeps cached per thread, so a few long-lived
    threads also keep the memory down (uvicorn's default pool of 40 held ~4x more at 1M passages).
    """
    try:
        from fastapi import FastAPI, Query, Request
        from fastapi.responses import JSONResponse, Response
        from pydantic import BaseModel
    except ImportError as exc:
        raise ImportError(
            f"the search server needs the 'server' extra: pip install 'l0-gym[server]' ({exc})"
        ) from exc

    class RetrieveRequest(BaseModel):
        queries: list[str]
        topk: int | None = None
        return_scores: bool = False

    app = FastAPI(title="L0 Gym retrieval server", version="1")
    num_docs = getattr(backend, "num_docs", None)
    pool = ThreadPoolExecutor(max_workers=max_concurrent or os.cpu_count() or 2, thread_name_prefix="search")

    async def in_pool(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def json_response(data: Any, status: int = 200) -> Response:
        # json.dumps directly: FastAPI's jsonable_encoder walk costs more than the search itself
        body = json.dumps(data, ensure_ascii=False).encode("utf-8")
        return Response(content=body, status_code=status, media_type="application/json")

    @app.exception_handler(SearchError)
    def _search_error(request: Request, exc: SearchError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"error": "search_unavailable", "detail": str(exc)})

    def do_retrieve(request: RetrieveRequest) -> Response:
        if len(request.queries) > max_queries:
            return json_response(
                {"detail": f"{len(request.queries)} queries in one request; at most {max_queries}"}, 413
            )
        topk = request.topk or default_topk
        results = backend.search(list(request.queries), k=max(1, topk))
        out = []
        for hits in results:
            docs = []
            for h in hits:
                page = backend.get(h.doc_id)
                doc = {"id": page.doc_id, "contents": passage_contents(page.title, page.text)}
                docs.append({"document": doc, "score": h.score} if request.return_scores else doc)
            out.append(docs)
        return json_response({"result": out})

    def do_page(doc_id: str) -> Response:
        try:
            p = backend.get(doc_id)
        except PageNotFound as exc:
            return json_response({"error": "page_not_found", "detail": str(exc)}, 404)
        text = p.text[:max_page_chars]
        return json_response(
            {
                "id": p.doc_id,
                "title": p.title,
                "text": text,
                "contents": passage_contents(p.title, text),
                "truncated": len(text) < len(p.text),
            }
        )

    @app.post("/retrieve")
    async def retrieve(request: RetrieveRequest) -> Response:
        return await in_pool(do_retrieve, request)

    @app.get("/page")
    async def page(id: str = Query(..., description="passage id from /retrieve")) -> Response:
        return await in_pool(do_page, id)

    @app.get("/health")
    def health() -> Response:
        return json_response({"status": "ok", "backend": name, "num_docs": num_docs, "corpus": corpus})

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
    return create_app(backend, name=cfg["backend"], corpus=cfg["corpus"], default_topk=cfg["topk"])


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
    args = parser.parse_args(argv)

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
            {"backend": args.backend, "corpus": corpus, "cache_dir": cache_dir, "topk": args.topk}
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
        app = create_app(backend, name=args.backend, corpus=corpus, default_topk=args.topk)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
