"""Search backends for the agent's ``web_search`` / ``open_page`` tools, behind one interface.

Pick one with a single setting::

    from l0_env.tools import make_search_backend
    make_search_backend(None)                      # embedded BM25 over the bundled passages (default)
    make_search_backend("bm25", corpus="wiki.jsonl")
    make_search_backend("hybrid")                  # BM25 + MiniLM RRF in-process (``dense`` extra)
    make_search_backend("http://10.0.0.5:8000")    # our search_server or any Search-R1 server
    make_search_backend("serper")                  # Google via Serper; needs $SERPER_API_KEY
    make_search_backend({"backend": "http", "url": "http://...", "timeout": 5, "retries": 5})

Heavy modules (bm25s, torch, httpx clients) load only when a backend of that kind is made.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any

from l0_env.tools.search import (
    Hit,
    Page,
    PageNotFound,
    SearchBackend,
    SearchError,
    SearchUnavailable,
    bundled_corpus_path,
)

__all__ = [
    "BACKENDS",
    "Hit",
    "Page",
    "PageNotFound",
    "SearchBackend",
    "SearchError",
    "SearchUnavailable",
    "bundled_corpus_path",
    "make_search_backend",
]

BACKENDS = ("bm25", "dense", "hybrid", "http", "serper")
_shared: dict[str, SearchBackend] = {}
_shared_lock = threading.Lock()


def make_search_backend(
    spec: str | Mapping[str, Any] | SearchBackend | None = None,
    *,
    corpus: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    shared: bool = True,
) -> SearchBackend:
    """Build (or reuse) the search backend that ``spec`` names.

    Args:
        spec: One of
            - None or ``"bm25"``: embedded BM25 over ``corpus`` (`l0_env.tools.bm25.BM25Search`);
            - ``"dense"`` / ``"hybrid"``: MiniLM + faiss / its RRF with BM25 (needs the ``dense`` extra);
            - ``"http://host:port"`` (or https): a Search-R1-compatible retrieval server
              (`l0_env.tools.remote.HTTPSearch`), e.g. ``python -m l0_env.tools.search_server``;
            - ``"serper"``: web search (`l0_env.tools.web.SerperSearch`), only with ``$SERPER_API_KEY``;
            - a mapping ``{"backend": <one of the above, or "http" with "url">, **options}``; the
              options go to that backend's constructor / ``from_corpus`` (e.g. ``timeout``,
              ``title_weight``, ``rrf_k``, ``api_key``), and may include ``corpus``/``cache_dir``;
            - a `SearchBackend` instance, returned unchanged.
        corpus: Passage file (JSONL/Parquet) for the embedded backends; None = the bundled HotpotQA passages.
        cache_dir: Index cache folder for the embedded backends (default ``$L0_CACHE_DIR`` or ~/.cache/l0_env).
        shared: Return one instance per distinct setting per process (all backends are thread-safe,
            so many envs can share one index or one connection pool). Do not ``close()`` a shared
            backend while other envs may use it; pass ``shared=False`` to own a private instance.

    Raises:
        ValueError: An unknown spec, or "serper" without an API key.
        ImportError: "dense"/"hybrid" without the ``dense`` extra installed.
    """
    if isinstance(spec, SearchBackend):
        return spec
    kind, options = _parse_spec(spec)
    if "corpus" in options:
        corpus = options.pop("corpus")
    if "cache_dir" in options:
        cache_dir = options.pop("cache_dir")
    if not shared:
        return _build(kind, options, corpus, cache_dir)
    key = json.dumps(
        [kind, options, str(corpus) if corpus is not None else None, str(cache_dir) if cache_dir else None],
        sort_keys=True,
        default=repr,
    )
    with _shared_lock:
        backend = _shared.get(key)
        if backend is None:
            backend = _shared[key] = _build(kind, options, corpus, cache_dir)
        return backend


def _parse_spec(spec: str | Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    if spec is None:
        return "bm25", {}
    if isinstance(spec, Mapping):
        options = dict(spec)
        name = options.pop("backend", None)
        if name is None and "url" in options:
            name = "http"
        if not isinstance(name, str):
            raise ValueError(f"a search spec mapping needs a 'backend' name, one of {BACKENDS}; got {spec!r}")
        kind, extra = _parse_spec(name)
        return kind, {**extra, **options}
    if not isinstance(spec, str):
        raise ValueError(
            f"search spec must be a string, a mapping or a SearchBackend, got {type(spec).__name__}"
        )
    name = spec.strip()
    if name.startswith(("http://", "https://")):
        return "http", {"url": name}
    if name.lower() in BACKENDS:
        return name.lower(), {}
    raise ValueError(
        f"unknown search backend {spec!r}: use 'bm25' (default), 'dense', 'hybrid', "
        "an http(s):// retrieval server URL, or 'serper'"
    )


def _build(kind: str, options: dict[str, Any], corpus: Any, cache_dir: Any) -> SearchBackend:
    if kind == "bm25":
        from l0_env.tools.bm25 import BM25Search

        return BM25Search.from_corpus(corpus, cache_dir=cache_dir, **options)
    if kind == "dense":
        from l0_env.tools.dense import DenseSearch

        return DenseSearch.from_corpus(corpus, cache_dir=cache_dir, **options)
    if kind == "hybrid":
        from l0_env.tools.hybrid import HybridSearch

        return HybridSearch.from_corpus(corpus, cache_dir=cache_dir, **options)
    if kind == "http":
        from l0_env.tools.remote import HTTPSearch

        if "url" not in options:
            raise ValueError(
                "the 'http' search backend needs a 'url', e.g. {'backend': 'http', 'url': 'http://127.0.0.1:8000'}"
            )
        return HTTPSearch(**options)
    if kind == "serper":
        from l0_env.tools.web import SerperSearch

        return SerperSearch(**options)
    raise AssertionError(kind)
