"""BM25 search over the real bundled corpus and small corpora in both layouts; pages."""

from __future__ import annotations

import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from l0_env.tasks import load_tasks
from l0_env.tools.bm25 import BM25Search, default_cache_dir
from l0_env.tools.pages import format_page, split_pages
from l0_env.tools.search import (
    Hit,
    Page,
    PageNotFound,
    Passage,
    SearchBackend,
    bundled_corpus_path,
    iter_passages,
)

SMALL = [
    {"id": "p1", "title": "Ada Lovelace", "text": "Ada Lovelace was an English mathematician and writer."},
    {"id": "p2", "title": "Charles Babbage", "text": "Babbage designed the Analytical Engine, a computer."},
    {"id": "p3", "title": "Alan Turing", "text": "Turing was a pioneer of theoretical computer science."},
    {"id": "p4", "title": "Grace Hopper", "text": "Hopper invented one of the first compiler tools."},
]


def write_jsonl(path: Path, rows: list) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_flashrag_parquet(path: Path, rows: list) -> Path:
    contents = [f'"{r["title"]}"\n{r["text"]}' for r in rows]
    pq.write_table(pa.table({"id": [r["id"] for r in rows], "contents": contents}), path)
    return path


@pytest.fixture(scope="session")
def real_index(tmp_path_factory: pytest.TempPathFactory) -> BM25Search:
    return BM25Search.from_corpus(cache_dir=tmp_path_factory.mktemp("bm25-cache"))


@pytest.fixture(params=["jsonl", "jsonl.gz", "parquet"])
def small_corpus(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "parquet":
        return write_flashrag_parquet(tmp_path / "corpus.parquet", SMALL)
    return write_jsonl(tmp_path / f"corpus.{request.param}", SMALL)


def test_real_index_finds_gold_passages(real_index: BM25Search) -> None:
    assert real_index.num_docs == sum(1 for _ in iter_passages(bundled_corpus_path()))
    hits = real_index.search(["Who wrote the English language opera Maria Golovin?"], k=5)[0]
    assert "Maria Golovin" in [h.title for h in hits[:5]]
    tasks = load_tasks(split="dev")
    results = real_index.search([t.question for t in tasks], k=5)
    found = sum(
        bool(set(t.supporting_titles) & {h.title for h in hits})
        for t, hits in zip(tasks, results, strict=True)
    )
    # Measured 0.979 (benchmarks/search_quality.py --corpus bundled); a drop means tokenisation or weighting broke.
    assert found / len(tasks) >= 0.95


def test_hits_are_ranked_and_bounded(real_index: BM25Search) -> None:
    hits = real_index.search(["American comic book artist Harvey Pekar"], k=7)[0]
    assert len(hits) == 7
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for h in hits:
        assert len(h.snippet) <= 301
        page = real_index.get(h.doc_id)
        assert page.title == h.title
        assert page.text.startswith(h.snippet.rstrip("…"))
        assert h.to_dict() == {"id": h.doc_id, "title": h.title, "snippet": h.snippet, "score": h.score}


def test_small_corpus_both_layouts(small_corpus: Path, tmp_path: Path) -> None:
    backend = BM25Search.from_corpus(small_corpus, cache_dir=tmp_path / "cache")
    assert isinstance(backend, SearchBackend)
    assert backend.num_docs == 4
    [hits] = backend.search(["who designed the analytical engine"], k=2)
    assert hits[0] == Hit("p2", "Charles Babbage", SMALL[1]["text"], hits[0].score)
    assert backend.get("p3") == Page("p3", "Alan Turing", SMALL[2]["text"])
    # Stemming: "compilers" matches "compiler"; a title word alone finds its passage.
    assert backend.search(["compilers"], k=1)[0][0].doc_id == "p4"
    assert backend.search(["Lovelace"], k=1)[0][0].doc_id == "p1"


def test_k_clamped_and_validated(real_index: BM25Search) -> None:
    assert len(real_index.search(["opera"], k=0)[0]) == 1
    assert len(real_index.search(["opera"], k=10_000)[0]) == 50
    for bad_k in ("5", 2.0, None, True):
        with pytest.raises(ValueError, match="k must be an int"):
            real_index.search(["opera"], k=bad_k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="list of strings"):
        real_index.search("opera")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"queries\[1\]"):
        real_index.search(["opera", 3])  # type: ignore[list-item]


def test_empty_and_unmatched_queries(real_index: BM25Search) -> None:
    assert real_index.search([]) == []
    results = real_index.search(["", "   \n", "the of and", "zzqxvj", "opera"], k=3)
    assert results[:4] == [[], [], [], []]
    assert len(results[4]) == 3


def test_get_unknown_id(real_index: BM25Search) -> None:
    with pytest.raises(PageNotFound, match="no passage with id 'nope'"):
        real_index.get("nope")
    with pytest.raises(KeyError):  # PageNotFound is a KeyError
        real_index.get(123)  # type: ignore[arg-type]


def test_cache_reused_not_rebuilt(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", SMALL)
    cache = tmp_path / "cache"
    first = BM25Search.from_corpus(corpus, cache_dir=cache)
    assert first.built
    stamps = {p.name: p.stat().st_mtime_ns for p in first.cache_path.iterdir()}
    second = BM25Search.from_corpus(corpus, cache_dir=cache)
    assert not second.built
    assert second.cache_path == first.cache_path
    assert {p.name: p.stat().st_mtime_ns for p in second.cache_path.iterdir()} == stamps
    assert second.search(["Turing"]) == first.search(["Turing"])
    # Atomic build: only the finished folder is left, no temp folders.
    assert sorted(p.name for p in cache.iterdir()) == [first.cache_path.name, "corpus-digests.json"]


def test_cache_keyed_on_content_and_settings(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", SMALL)
    cache = tmp_path / "cache"
    first = BM25Search.from_corpus(corpus, cache_dir=cache)
    write_jsonl(corpus, [*SMALL, {"id": "p5", "title": "Edsger Dijkstra", "text": "Shortest paths."}])
    changed = BM25Search.from_corpus(corpus, cache_dir=cache)
    assert changed.built and changed.cache_path != first.cache_path
    assert changed.search(["Dijkstra"])[0][0].doc_id == "p5"
    other = BM25Search.from_corpus(corpus, cache_dir=cache, stemmer=None, title_weight=1)
    assert other.built and other.cache_path not in (first.cache_path, changed.cache_path)


def test_default_cache_dir_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("L0_CACHE_DIR", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    corpus = write_jsonl(tmp_path / "c.jsonl", SMALL)
    backend = BM25Search.from_corpus(corpus)
    assert backend.cache_path.parent == tmp_path / "env-cache"
    monkeypatch.delenv("L0_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "l0_env"


def test_thread_safety_matches_serial(real_index: BM25Search) -> None:
    questions = [t.question for t in load_tasks(split="train")]
    serial = [real_index.search([q], k=5)[0] for q in questions]
    with ThreadPoolExecutor(max_workers=16) as pool:
        threaded = list(pool.map(lambda q: real_index.search([q], k=5)[0], questions * 4))
    assert threaded == serial * 4
    # Batched equals one-by-one.
    assert real_index.search(questions, k=5) == serial


def test_iter_passages_layouts(tmp_path: Path) -> None:
    parquet = write_flashrag_parquet(tmp_path / "c.parquet", SMALL[:1])
    assert list(iter_passages(parquet)) == [Passage("p1", "Ada Lovelace", SMALL[0]["text"])]
    rows = [
        {"id": 7, "contents": '"Quoted "Title""\nline one\nline two'},
        {"id": 8, "contents": '""Q" Is for Quarry"\ntext'},
        {"id": "x", "contents": "no title"},
    ]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    assert list(iter_passages(path)) == [
        Passage("7", 'Quoted "Title"', "line one\nline two"),  # one pair of quotes removed
        Passage("8", '"Q" Is for Quarry', "text"),
        Passage("x", "", "no title"),
    ]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": "a", "title": "A", "text": "x"}', '{"id": "b", "title": "B"'], r"c\.jsonl:2: invalid JSON"),
        (['{"title": "A", "text": "x"}'], r"c\.jsonl:1: missing or empty 'id'"),
        (['{"id": "a", "title": "A"}'], r"c\.jsonl:1: row has neither 'text' nor 'contents'"),
        (['{"id": "a", "contents": 5}'], r"'contents' must be a string"),
        (['["a", "b"]'], r"c\.jsonl:1: expected a JSON object"),
    ],
)
def test_bad_corpus_rows(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        BM25Search.from_corpus(path, cache_dir=tmp_path / "cache")
    left = [p.name for p in (tmp_path / "cache").iterdir() if p.name != "corpus-digests.json"]
    assert not left, "a failed build must leave no cache folder"


def test_bad_corpus_files(tmp_path: Path) -> None:
    dup = write_jsonl(tmp_path / "dup.jsonl", [SMALL[0], SMALL[0]])
    with pytest.raises(ValueError, match="duplicate passage id 'p1'"):
        BM25Search.from_corpus(dup, cache_dir=tmp_path / "cache")
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(ValueError, match="no passages"):
        BM25Search.from_corpus(empty, cache_dir=tmp_path / "cache")
    tsv = tmp_path / "c.tsv"
    tsv.write_text("id\ttext\n")
    with pytest.raises(ValueError, match="unknown corpus extension"):
        BM25Search.from_corpus(tsv, cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError):
        BM25Search.from_corpus(tmp_path / "missing.jsonl", cache_dir=tmp_path / "cache")


def test_format_page_paginates() -> None:
    words = " ".join(f"w{i:03d}" for i in range(100))  # 499 characters
    page = Page("doc-1", "Title", words)
    chunks = split_pages(words, 120)
    assert " ".join(chunks) == words
    assert all(len(c) <= 120 for c in chunks)
    first = format_page(page, page_chars=120)
    assert first.startswith("# Title (id: doc-1)\nw000 w001")
    assert first.endswith(f"[page 1 of {len(chunks)} — call open_page('doc-1', page=2) for more]")
    last = format_page(page, page_no=len(chunks), page_chars=120)
    assert last.endswith(f"[page {len(chunks)} of {len(chunks)}]")
    assert "call open_page" not in last
    assert format_page(page) == f"# Title (id: doc-1)\n{words}"  # one page: no footer
    for bad in (0, len(chunks) + 1, "2", 1.0):
        with pytest.raises(ValueError, match="out of range"):
            format_page(page, page_no=bad, page_chars=120)  # type: ignore[arg-type]
    assert split_pages("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]  # no spaces: hard cuts
    assert format_page(Page("e", "Empty", "")) == "# Empty (id: e)\n"
    huge = format_page(Page("u", "T" * 5000, "x " * 100_000), page_chars=2000)
    assert len(huge) < 2000 + 200 + 120  # text + title + header/footer: bounded for any page


# -- the streaming build, bm25s compatibility, title matches, the id lookup ------------------------


def test_scores_equal_bm25s_reference(real_index: BM25Search) -> None:
    """Our streaming build + bincount scoring gives bm25s's own scores, and bm25s loads our files."""
    import bm25s
    import numpy as np
    import Stemmer

    passages = list(iter_passages(bundled_corpus_path()))
    stemmer = Stemmer.Stemmer("english")
    ref = bm25s.BM25(k1=1.2, b=0.75)
    docs = [(p.title + "\n") * 3 + p.text for p in passages]
    ref.index(bm25s.tokenize(docs, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    loaded = bm25s.BM25.load(str(real_index.cache_path), mmap=True, load_vocab=True)
    for task in load_tasks(split="train")[:40]:
        tokens = bm25s.tokenize([task.question], stopwords="en", stemmer=stemmer, return_ids=False)[0]
        expected = ref.get_scores(tokens)
        ours = real_index.scores(task.question)
        assert ours is not None
        np.testing.assert_allclose(ours, expected, atol=1e-4)
        ids = [loaded.vocab_dict[t] for t in tokens if t in loaded.vocab_dict]
        np.testing.assert_allclose(loaded.get_scores_from_ids(ids), expected, atol=1e-4)


def test_build_streams_without_holding_the_corpus(tmp_path: Path) -> None:
    """Peak Python memory while indexing depends on the chunk size, not on the corpus size."""
    import tracemalloc

    from l0_env.tools.bm25 import build_index, index_settings

    words = [f"w{i}" for i in range(5000)]

    def passages(n: int):
        for i in range(n):  # ~1 KB of text each
            text = " ".join(words[(i * 7 + j * 13) % len(words)] for j in range(200))
            yield Passage(f"d{i}", f"Title {i}", text)

    settings = index_settings("test", stemmer=None, stopwords="en", title_weight=1, k1=1.2, b=0.75)
    peaks = {}
    for n in (500, 2000):
        tracemalloc.start()
        try:
            build_index(passages(n), tmp_path / f"idx{n}", settings, chunk_docs=50)
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # 4x the corpus, about the same peak: what is held is one chunk plus the vocabulary.
    assert peaks[2000] < 1.25 * peaks[500] + 200_000, f"peak memory grew with the corpus: {peaks}"
    backend = BM25Search(
        tmp_path / "idx2000", built=True, stemmer=None, stopwords="en", title_boost=0.0, snippet_chars=50
    )
    assert backend.num_docs == 2000
    assert backend.get("d1999").title == "Title 1999"
    assert backend.search(["Title 1234"], k=1)[0][0].doc_id == "d1234"


def test_title_match_boost(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "title": "Maria Golovin", "text": "An opera in three acts."},
        {
            "id": "b",
            "title": "Music",
            "text": "Maria wrote about the opera Golovin; opera opera Maria Golovin.",
        },
        {"id": "c", "title": "It", "text": "A novel."},
        {"id": "d", "title": "Splendor (film)", "text": "A film."},
    ]
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    plain = BM25Search.from_corpus(corpus, cache_dir=tmp_path / "cache", title_weight=1, title_boost=0)
    boosted = BM25Search.from_corpus(corpus, cache_dir=tmp_path / "cache", title_weight=1)
    assert not boosted.built  # the boost is a query-time setting: same index
    query = "Who composed the opera Maria Golovin?"
    assert plain.search([query], k=1)[0][0].doc_id == "b"
    assert boosted.search([query], k=1)[0][0].doc_id == "a"
    # A trailing "(film)" qualifier: the bare name matches too; stop-word titles never match.
    assert boosted.search(["what was splendor about"], k=1)[0][0].doc_id == "d"
    assert boosted._titles.matches("is it a novel") == []
    assert boosted._titles.matches("Maria Golovin and Splendor") == [0, 3]


def test_title_keys_normalise() -> None:
    from l0_env.tools.titles import normalize_words, title_keys

    assert normalize_words("&quot;Q&quot; Is for Quarry") == ["q", "is", "for", "quarry"]
    assert normalize_words("Beyoncé's Café") == ["beyonce", "s", "cafe"]
    assert title_keys("American Splendor (film)") == {"american splendor film", "american splendor"}
    assert title_keys("The The", frozenset({"the"})) == set()
    assert title_keys("US") == set()  # too short to trust


def test_corpus_hash_is_remembered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import l0_env.tools.bm25 as bm25_mod

    corpus = write_jsonl(tmp_path / "c.jsonl", SMALL)
    first = BM25Search.from_corpus(corpus, cache_dir=tmp_path / "cache")

    def no_rehash(path: Path) -> str:
        raise AssertionError("an unchanged corpus must not be re-hashed")

    monkeypatch.setattr(bm25_mod, "file_sha256", no_rehash)
    again = BM25Search.from_corpus(corpus, cache_dir=tmp_path / "cache")
    assert not again.built and again.cache_path == first.cache_path
    monkeypatch.undo()
    write_jsonl(corpus, SMALL[:3])  # a changed file (size and mtime) is hashed again
    assert BM25Search.from_corpus(corpus, cache_dir=tmp_path / "cache").built


def test_id_lookup_on_every_row(small_corpus: Path, tmp_path: Path) -> None:
    backend = BM25Search.from_corpus(small_corpus, cache_dir=tmp_path / "cache")
    for row in SMALL:
        assert backend.get(row["id"]) == Page(row["id"], row["title"], row["text"])
    for bad in ("p5", "", "P1"):
        with pytest.raises(PageNotFound):
            backend.get(bad)


def test_top_rows_is_exact() -> None:
    import numpy as np

    from l0_env.tools.bm25 import top_rows

    rng = np.random.default_rng(0)
    for n, k in [(10, 3), (5000, 10), (200_000, 10), (200_000, 50), (200_000, 100)]:
        for zeros in (0.0, 0.5, 0.999):
            scores = rng.gamma(2.0, size=n).round(1)  # rounding makes ties
            scores[rng.random(n) < zeros] = 0.0
            got = top_rows(scores, k)
            positive = np.flatnonzero(scores > 0)
            assert len(got) == min(k, len(positive))
            if len(got):
                kth = np.sort(scores[positive])[::-1][len(got) - 1]
                assert scores[got].min() == kth  # the k best values, whatever rows tie at the edge
                assert (scores[got] > 0).all()
    assert top_rows(np.zeros(100_000), 10).tolist() == []
