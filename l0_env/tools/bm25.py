"""Embedded BM25 search over a passage corpus: built by streaming, cached on disk, memory-mapped.

**Scoring.** Lucene BM25 (``k1``, ``b``) over each passage's title repeated ``title_weight`` times
(default 3, so title words count more) followed by its text, tokenised by ``bm25s.tokenize``
(lower-case, English stop words removed, Snowball-stemmed by PyStemmer). On top, a passage whose
whole title the query names word for word (see `l0_env.tools.titles`) gets ``title_boost`` × the
query's best BM25 score added (default 0.3). Both defaults were chosen in
``benchmarks/search_quality.py``.

**Build.** The corpus streams through once in chunks: each chunk's passages are appended to an
Arrow file, tokenised, and its (passage, term, count) triples spilled to disk. A second pass over
the spills computes the BM25 weights and scatters them into the term-major (CSC) arrays, written
straight into ``.npy`` files. Peak memory is one chunk plus the vocabulary; the corpus is never
held as Python strings. The arrays are bm25s's own on-disk format (``bm25s.BM25.load`` reads
them); we score with ``np.bincount`` over the query terms' postings, which gives the same scores
as bm25s's numpy backend and is several times faster on a million passages.

**Cache.** The index folder is keyed by the SHA-256 of the corpus file's bytes, the settings and
the bm25s version, so a changed corpus or setting rebuilds and an unchanged one loads in
milliseconds (memory-mapped; file hashes are remembered by path, size and mtime so a reload does
not re-read a large corpus). Builds go to a temporary folder renamed into place, so concurrent
builders and crashes never leave a half-written index.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
from tqdm.auto import tqdm

from l0_env.tools.passage_store import PassageStore, PassageStoreWriter, key_hash
from l0_env.tools.search import (
    Hit,
    Page,
    PageNotFound,
    Passage,
    SearchBackend,
    bundled_corpus_path,
    check_search_args,
    iter_passages,
)
from l0_env.tools.titles import TITLE_HASH_FILE, TITLE_ROW_FILE, TitleIndex, title_keys

CACHE_FORMAT = 2  # bump when the cache layout changes
_META = "l0_meta.json"
_DATA, _INDICES, _INDPTR = "data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy"
_VOCAB, _PARAMS = "vocab.index.json", "params.index.json"
_DIGESTS = "corpus-digests.json"


def default_cache_dir() -> Path:
    """``$L0_CACHE_DIR`` if set, else ``~/.cache/l0_env``."""
    env = os.environ.get("L0_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "l0_env"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def corpus_digest(path: Path, cache_root: Path) -> str:
    """``file_sha256(path)``, remembered in ``cache_root`` by (path, size, mtime, inode)."""
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    memo_path = cache_root / _DIGESTS
    key = str(path.resolve())
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    entry = memo.get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = file_sha256(path)
    memo[key] = {"stamp": stamp, "sha256": digest}
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".digests-", dir=cache_root)
        with os.fdopen(fd, "w") as f:
            json.dump(memo, f)
        os.replace(tmp, memo_path)
    except OSError:
        pass  # the memo only saves time
    return digest


def make_stemmer(name: str | None) -> Any:
    if name is None:
        return None
    import Stemmer

    return Stemmer.Stemmer(name)


def stopword_set(stopwords: str | Sequence[str] | None) -> frozenset[str]:
    if stopwords is None:
        return frozenset()
    if isinstance(stopwords, str):
        if stopwords in ("en", "english"):
            return frozenset(bm25s.stopwords.STOPWORDS_EN)
        raise ValueError(f"stopwords must be 'en', a list of words or None, got {stopwords!r}")
    return frozenset(stopwords)


def index_settings(
    corpus_sha256: str,
    *,
    stemmer: str | None,
    stopwords: str | Sequence[str] | None,
    title_weight: int,
    k1: float,
    b: float,
) -> dict[str, Any]:
    stop_key: Any = sorted(stopwords) if isinstance(stopwords, (list, tuple)) else stopwords
    return {
        "corpus_sha256": corpus_sha256,
        "stemmer": stemmer,
        "stopwords": stop_key,
        "title_weight": title_weight,
        "k1": k1,
        "b": b,
        "bm25s": bm25s.__version__,
        "format": CACHE_FORMAT,
    }


class BM25Search(SearchBackend):
    """BM25 over a passage corpus; see the module docstring. Build with `from_corpus`.

    Attributes:
        cache_path: The cache folder this index lives in.
        built: True if this instance built the index, False if it loaded it from the cache.
        num_docs: Number of passages.
        store: The memory-mapped passages (row order = corpus order).
        title_boost: Added to a passage's score, times the query's top score, if the query names
            its title; 0 turns it off. May be changed after loading.
    """

    def __init__(
        self,
        folder: Path,
        *,
        built: bool,
        stemmer: str | None,
        stopwords: str | Sequence[str] | None,
        title_boost: float,
        snippet_chars: int,
    ) -> None:
        self.cache_path = folder
        self.built = built
        self.store = PassageStore(folder)
        self.num_docs = len(self.store)
        self.title_boost = float(title_boost)
        self._data = np.load(folder / _DATA, mmap_mode="r")
        self._indices = np.load(folder / _INDICES, mmap_mode="r")
        self._indptr = np.load(folder / _INDPTR, mmap_mode="r")
        with (folder / _VOCAB).open(encoding="utf-8") as f:
            self._vocab: dict[str, int] = json.load(f)
        self._stemmer_name = stemmer
        self._stopwords = list(stopwords) if isinstance(stopwords, (list, tuple)) else stopwords
        self._titles = TitleIndex(folder)
        self._local = threading.local()  # PyStemmer objects are not thread-safe: one per thread
        self._snippet_chars = snippet_chars

    @classmethod
    def from_corpus(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        stemmer: str | None = "english",
        stopwords: str | Sequence[str] | None = "en",
        title_weight: int = 3,
        k1: float = 1.2,
        b: float = 0.75,
        title_boost: float = 0.3,
        snippet_chars: int = 300,
        show_progress: bool = False,
    ) -> BM25Search:
        """Load the index for ``path`` from the cache, building it first if needed.

        Args:
            path: Corpus file (see `iter_passages`); None for the bundled HotpotQA passages.
            cache_dir: Where cached indexes live; default `default_cache_dir()`.
            stemmer: A PyStemmer algorithm name ("english", "porter", ...) or None for no stemming.
            stopwords: "en" (bm25s's English list), a list of words, or None.
            title_weight: How many times the title is indexed (0 = text only).
            k1: BM25 term-frequency saturation.
            b: BM25 length normalisation.
            title_boost: Exact-title-match boost (query time only; 0 = off).
            snippet_chars: Most characters of passage text in a hit's snippet.
            show_progress: Show a progress bar while building.
        """
        corpus = Path(path) if path is not None else bundled_corpus_path()
        if not corpus.is_file():
            raise FileNotFoundError(f"corpus file not found: {corpus}")
        if isinstance(title_weight, bool) or not isinstance(title_weight, int) or title_weight < 0:
            raise ValueError(f"title_weight must be an int >= 0, got {title_weight!r}")
        if snippet_chars < 1:
            raise ValueError(f"snippet_chars must be >= 1, got {snippet_chars}")
        if not title_boost >= 0:
            raise ValueError(f"title_boost must be >= 0, got {title_boost!r}")
        stopword_set(stopwords)  # validate before a long build
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        settings = index_settings(
            corpus_digest(corpus, root),
            stemmer=stemmer,
            stopwords=stopwords,
            title_weight=title_weight,
            k1=k1,
            b=b,
        )
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
        folder = root / f"bm25-{key}"
        built = False
        if not (folder / _META).is_file():
            root.mkdir(parents=True, exist_ok=True)
            build_index(
                iter_passages(corpus), folder, settings, source=str(corpus), show_progress=show_progress
            )
            built = True
        return cls(
            folder,
            built=built,
            stemmer=stemmer,
            stopwords=stopwords,
            title_boost=title_boost,
            snippet_chars=snippet_chars,
        )

    # -- querying -----------------------------------------------------------------------------

    def _stemmer(self) -> Any:
        st = getattr(self._local, "stemmer", None)
        if st is None and self._stemmer_name is not None:
            st = self._local.stemmer = make_stemmer(self._stemmer_name)
        return st

    def _token_ids(self, query: str) -> list[int]:
        [tokens] = bm25s.tokenize(
            [query], stopwords=self._stopwords, stemmer=self._stemmer(), return_ids=False, show_progress=False
        )
        return [self._vocab[t] for t in tokens if t and t in self._vocab]

    def scores(self, query: str) -> np.ndarray | None:
        """BM25 scores of every passage for ``query`` (no title boost); None if no term matches."""
        ids = self._token_ids(query)
        if not ids:
            return None
        parts = [(int(self._indptr[t]), int(self._indptr[t + 1])) for t in ids]
        idx = np.concatenate([self._indices[s:e] for s, e in parts])
        if idx.size == 0:
            return None
        val = np.concatenate([self._data[s:e] for s, e in parts])
        return np.bincount(idx, weights=val, minlength=self.num_docs)

    def ranked(self, query: str, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and scores of the best ``depth`` passages with a positive score, best first."""
        empty = np.zeros(0, dtype=np.int64), np.zeros(0)
        if not query.strip():
            return empty
        scores = self.scores(query)
        if scores is None:
            return empty
        if self.title_boost > 0:
            rows = self._titles.matches(query)
            if rows:
                scores[rows] += self.title_boost * scores.max()
        top = top_rows(scores, min(depth, self.num_docs))
        order = np.lexsort((top, -scores[top]))  # best first; ties by corpus order
        return top[order], scores[top[order]]

    def search(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        k = check_search_args(queries, k)
        out = []
        for q in queries:
            rows, scores = self.ranked(q, k)
            out.append([self.hit(int(r), float(s)) for r, s in zip(rows, scores, strict=True)])
        return out

    def hit(self, row: int, score: float) -> Hit:
        """The `Hit` for a row of the store."""
        return Hit(self.store.doc_id(row), self.store.title(row), self.snippet(self.store.text(row)), score)

    def snippet(self, text: str) -> str:
        n = self._snippet_chars
        if len(text) <= n:
            return text
        cut = text.rfind(" ", n // 2, n)
        return text[: cut if cut > 0 else n].rstrip() + "…"

    def get(self, doc_id: str) -> Page:
        row = self.store.row_of(doc_id)
        if row is None:
            raise PageNotFound(f"no passage with id {doc_id!r} (ids look like {self.store.doc_id(0)!r})")
        return self.store.page(row)

    def close(self) -> None:
        pass  # memory maps are released with the object; other threads may still be reading


def top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` highest positive scores (unordered; fewer if fewer are positive).

    ``argpartition`` over a million scores costs ~10 ms; instead, the k-th largest score of every
    64th row is a lower bound for the true k-th largest, so only rows at or above it (about 64·k)
    are partitioned: ~1 ms.
    """
    n = len(scores)
    stride = 64
    threshold = 0.0
    if n > 16 * stride * k:
        sample = scores[::stride]
        threshold = float(np.partition(sample, len(sample) - k)[len(sample) - k])
    cand = np.flatnonzero(scores >= threshold) if threshold > 0 else np.flatnonzero(scores > 0)
    if len(cand) <= k:
        return cand
    return cand[np.argpartition(scores[cand], len(cand) - k)[len(cand) - k :]]


# -- building ------------------------------------------------------------------------------------


def _chunks(items: Iterable[Passage], n: int) -> Iterator[list[Passage]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, n)):
        yield chunk


def build_index(
    passages: Iterable[Passage],
    folder: Path,
    settings: dict[str, Any],
    *,
    source: str = "corpus",
    show_progress: bool = False,
    chunk_docs: int = 8192,
) -> None:
    """Index ``passages`` into ``folder`` (built in a temp folder beside it, then renamed)."""
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-bm25-", dir=folder.parent))
    try:
        _build_into(
            tmp, passages, settings, source=source, show_progress=show_progress, chunk_docs=chunk_docs
        )
        try:
            os.replace(tmp, folder)
        except OSError:
            # Another process finished the same build first: its folder is as good as ours.
            if not (folder / _META).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _build_into(
    tmp: Path,
    passages: Iterable[Passage],
    settings: dict[str, Any],
    *,
    source: str,
    show_progress: bool,
    chunk_docs: int,
) -> None:
    w, stop = settings["title_weight"], settings["stopwords"]
    stemmer = make_stemmer(settings["stemmer"])
    stops = stopword_set(stop)
    store = PassageStoreWriter(tmp, source=source)
    spill = tmp / "spill"
    spill.mkdir()
    vocab: dict[str, int] = {}
    df = np.zeros(0, dtype=np.int64)
    doc_lens: list[np.ndarray] = []
    title_hashes, title_rows = array("Q"), array("q")
    n_docs = n_chunks = 0
    bar = tqdm(desc="BM25 index", unit=" passages", disable=not show_progress, mininterval=1.0)
    try:
        # Pass 1: stream the corpus; store passages; tokenise; spill (doc, term, tf) per chunk.
        for chunk in _chunks(passages, chunk_docs):
            store.add(chunk)
            for i, p in enumerate(chunk):
                for key in title_keys(p.title, stops):
                    title_hashes.append(key_hash(key))
                    title_rows.append(n_docs + i)
            texts = [(p.title + "\n") * w + p.text for p in chunk]
            del chunk
            tok = bm25s.tokenize(texts, stopwords=stop, stemmer=stemmer, return_ids=True, show_progress=False)
            del texts
            remap = np.empty(len(tok.vocab), dtype=np.int64)
            for token, local in tok.vocab.items():
                remap[local] = vocab.setdefault(token, len(vocab))
            lens = np.fromiter(map(len, tok.ids), dtype=np.int64, count=len(tok.ids))
            flat = np.fromiter(itertools.chain.from_iterable(tok.ids), dtype=np.int64, count=int(lens.sum()))
            doc = np.repeat(np.arange(len(lens), dtype=np.int64), lens)
            pairs, tf = np.unique((doc << 32) | remap[flat], return_counts=True)
            udoc = (pairs >> 32).astype(np.int32) + n_docs
            uterm = (pairs & 0xFFFFFFFF).astype(np.int32)
            counts = np.bincount(uterm, minlength=len(vocab))
            counts[: len(df)] += df
            df = counts
            np.save(spill / f"{n_chunks:06d}-doc.npy", udoc)
            np.save(spill / f"{n_chunks:06d}-term.npy", uterm)
            np.save(spill / f"{n_chunks:06d}-tf.npy", tf.astype(np.float32))
            doc_lens.append(lens.astype(np.int32))
            n_docs += len(lens)
            n_chunks += 1
            bar.update(len(lens))
        store.finish()
    except BaseException:
        store.abort()
        raise
    finally:
        bar.close()

    # Pass 2: BM25 weights (Lucene variant, as bm25s), scattered into term-major arrays on disk.
    lens = np.concatenate(doc_lens).astype(np.float32)
    avg_len = float(lens.mean())
    k1, b = settings["k1"], settings["b"]
    idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
    indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    nnz = int(indptr[-1])
    data = np.lib.format.open_memmap(tmp / _DATA, mode="w+", dtype=np.float32, shape=(nnz,))
    indices = np.lib.format.open_memmap(tmp / _INDICES, mode="w+", dtype=np.int32, shape=(nnz,))
    cursor = indptr[:-1].copy()
    norm = (k1 * ((1 - b) + b * lens / avg_len)).astype(np.float32)
    for c in range(n_chunks):
        udoc = np.load(spill / f"{c:06d}-doc.npy")
        uterm = np.load(spill / f"{c:06d}-term.npy")
        tf = np.load(spill / f"{c:06d}-tf.npy")
        weight = idf[uterm] * (tf / (norm[udoc] + tf))
        order = np.argsort(uterm, kind="stable")  # docs stay ascending within each term
        sterm = uterm[order]
        terms, first, count = np.unique(sterm, return_index=True, return_counts=True)
        dest = cursor[sterm] + (np.arange(len(sterm)) - np.repeat(first, count))
        data[dest] = weight[order]
        indices[dest] = udoc[order]
        cursor[terms] += count
    data.flush()
    indices.flush()
    del data, indices
    shutil.rmtree(spill)
    np.save(tmp / _INDPTR, indptr)
    with (tmp / _VOCAB).open("w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    params = {
        "k1": k1,
        "b": b,
        "delta": 0.5,
        "method": "lucene",
        "idf_method": "lucene",
        "dtype": "float32",
        "int_dtype": "int32",
        "num_docs": n_docs,
        "version": bm25s.__version__,
        "backend": "numpy",
    }
    (tmp / _PARAMS).write_text(json.dumps(params, indent=2))
    th = np.frombuffer(title_hashes, dtype=np.uint64)
    tr = np.frombuffer(title_rows, dtype=np.int64)
    order = np.lexsort((tr, th))
    np.save(tmp / TITLE_HASH_FILE, th[order])
    np.save(tmp / TITLE_ROW_FILE, tr[order])
    meta = {**settings, "corpus": source, "num_docs": n_docs, "vocab_size": len(vocab), "nnz": nnz}
    (tmp / _META).write_text(json.dumps(meta, indent=2, sort_keys=True))
