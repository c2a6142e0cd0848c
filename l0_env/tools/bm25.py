"""Embedded BM25 search (bm25s) over a passage corpus, built once and cached on disk.

Each passage is indexed as its title repeated ``title_weight`` times (default 3, so title words
count more; chosen in benchmarks/search_quality.py) followed by its text: lower-cased, English
stop words removed, Snowball-stemmed (PyStemmer). The cache folder is keyed by the SHA-256 of the
corpus file's bytes, the settings and the bm25s version, so a changed corpus or setting rebuilds
and an unchanged one loads in milliseconds (memory-mapped). Passages are cached next to the index
as an Arrow IPC file, also memory-mapped, so `get` and snippets never re-read the corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pyarrow as pa
import pyarrow.ipc

from l0_env.tools.search import (
    Hit,
    Page,
    PageNotFound,
    SearchBackend,
    bundled_corpus_path,
    check_search_args,
    iter_passages,
)

CACHE_FORMAT = 1  # bump when the cache layout changes
_META = "l0_meta.json"
_PASSAGES = "passages.arrow"


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


def _make_stemmer(name: str | None) -> Any:
    if name is None:
        return None
    import Stemmer

    return Stemmer.Stemmer(name)


class BM25Search(SearchBackend):
    """BM25 over a passage corpus; see the module docstring. Build with `from_corpus`.

    Attributes:
        cache_path: The cache folder this index lives in.
        built: True if this instance built the index, False if it loaded it from the cache.
        num_docs: Number of passages.
    """

    def __init__(
        self,
        retriever: bm25s.BM25,
        passages: pa.Table,
        *,
        cache_path: Path,
        built: bool,
        stemmer: str | None,
        stopwords: str | Sequence[str] | None,
        snippet_chars: int,
    ) -> None:
        self._retriever = retriever
        self._ids = passages.column("id")
        self._titles = passages.column("title")
        self._texts = passages.column("text")
        self._row_of = {doc_id: i for i, doc_id in enumerate(self._ids.to_pylist())}
        self._vocab: dict[str, int] = retriever.vocab_dict
        self._stemmer = _make_stemmer(stemmer)
        self._stopwords = list(stopwords) if isinstance(stopwords, (list, tuple)) else stopwords
        self._snippet_chars = snippet_chars
        self._lock = threading.Lock()  # PyStemmer and bm25s keep per-object state
        self.cache_path = cache_path
        self.built = built
        self.num_docs = len(self._row_of)

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
            snippet_chars: Most characters of passage text in a hit's snippet.
            show_progress: Show tqdm bars while building.
        """
        corpus = Path(path) if path is not None else bundled_corpus_path()
        if not corpus.is_file():
            raise FileNotFoundError(f"corpus file not found: {corpus}")
        if isinstance(title_weight, bool) or not isinstance(title_weight, int) or title_weight < 0:
            raise ValueError(f"title_weight must be an int >= 0, got {title_weight!r}")
        if snippet_chars < 1:
            raise ValueError(f"snippet_chars must be >= 1, got {snippet_chars}")
        stop_key: Any = sorted(stopwords) if isinstance(stopwords, (list, tuple)) else stopwords
        settings = {
            "corpus_sha256": file_sha256(corpus),
            "stemmer": stemmer,
            "stopwords": stop_key,
            "title_weight": title_weight,
            "k1": k1,
            "b": b,
            "bm25s": bm25s.__version__,
            "format": CACHE_FORMAT,
        }
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        folder = root / f"bm25-{key}"
        built = False
        if not (folder / _META).is_file():
            root.mkdir(parents=True, exist_ok=True)
            _build(corpus, folder, settings, show_progress=show_progress)
            built = True
        retriever = bm25s.BM25.load(str(folder), mmap=True, load_vocab=True, show_progress=False)
        with pa.memory_map(str(folder / _PASSAGES)) as source:
            passages = pa.ipc.open_file(source).read_all()
        return cls(
            retriever,
            passages,
            cache_path=folder,
            built=built,
            stemmer=stemmer,
            stopwords=stopwords,
            snippet_chars=snippet_chars,
        )

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        tokens = bm25s.tokenize(
            texts,
            stopwords=self._stopwords,
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )
        return [[self._vocab[t] for t in doc if t and t in self._vocab] for doc in tokens]

    def search(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        k = min(check_search_args(queries, k), self.num_docs)
        results: list[list[Hit]] = [[] for _ in queries]
        if not queries:
            return results
        with self._lock:
            token_ids = self._tokenize(list(queries))
            todo = [i for i, ids in enumerate(token_ids) if ids]
            if not todo:
                return results
            docs, scores = self._retriever.retrieve(
                [token_ids[i] for i in todo], k=k, show_progress=False, n_threads=0
            )
        for i, row_docs, row_scores in zip(todo, np.asarray(docs), np.asarray(scores), strict=True):
            results[i] = [
                self._hit(int(d), float(s)) for d, s in zip(row_docs, row_scores, strict=True) if s > 0
            ]
        return results

    def _hit(self, row: int, score: float) -> Hit:
        text = self._texts[row].as_py()
        return Hit(self._ids[row].as_py(), self._titles[row].as_py(), self._snippet(text), score)

    def _snippet(self, text: str) -> str:
        n = self._snippet_chars
        if len(text) <= n:
            return text
        cut = text.rfind(" ", n // 2, n)
        return text[: cut if cut > 0 else n].rstrip() + "…"

    def get(self, doc_id: str) -> Page:
        row = self._row_of.get(doc_id) if isinstance(doc_id, str) else None
        if row is None:
            raise PageNotFound(f"no passage with id {doc_id!r} (ids look like {self._ids[0].as_py()!r})")
        return Page(doc_id, self._titles[row].as_py(), self._texts[row].as_py())

    def close(self) -> None:
        pass


def _build(corpus: Path, folder: Path, settings: dict[str, Any], *, show_progress: bool) -> None:
    """Index ``corpus`` into a temp folder beside ``folder``, then rename it into place."""
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for p in iter_passages(corpus):
        if p.id in seen:
            raise ValueError(f"{corpus}: duplicate passage id {p.id!r}")
        seen.add(p.id)
        ids.append(p.id)
        titles.append(p.title)
        texts.append(p.text)
    if not ids:
        raise ValueError(f"{corpus}: the corpus has no passages")
    w = settings["title_weight"]
    docs = [(f"{t}\n" * w) + x for t, x in zip(titles, texts, strict=True)]
    stop = settings["stopwords"]
    tokens = bm25s.tokenize(
        docs, stopwords=stop, stemmer=_make_stemmer(settings["stemmer"]), show_progress=show_progress
    )
    retriever = bm25s.BM25(k1=settings["k1"], b=settings["b"])
    retriever.index(tokens, show_progress=show_progress)

    tmp = Path(tempfile.mkdtemp(prefix=".tmp-bm25-", dir=folder.parent))
    try:
        retriever.save(str(tmp), show_progress=False)
        table = pa.table({"id": ids, "title": titles, "text": texts})
        with pa.OSFile(str(tmp / _PASSAGES), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        meta = {**settings, "corpus": str(corpus), "num_docs": len(ids)}
        (tmp / _META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        try:
            os.replace(tmp, folder)
        except OSError:
            # Another process finished the same build first: its folder is as good as ours.
            if not (folder / _META).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
