"""Passages on disk for the embedded backends: written by streaming, read by memory-mapping.

A store is three files in an index folder:

- ``passages.arrow``: Arrow IPC file with columns ``id``, ``title``, ``text`` in corpus order,
  written in record batches as the corpus streams by (the corpus is never held in memory);
- ``id_hash.npy`` / ``id_row.npy``: 64-bit BLAKE2b hashes of the ids, sorted, and the row of each,
  so looking up an id is a binary search in memory-mapped arrays (no dict of a million strings).

Opening a store maps the files; RSS grows only with the pages actually read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc

from l0_env.tools.search import Page, Passage

PASSAGES_FILE = "passages.arrow"
ID_HASH_FILE = "id_hash.npy"
ID_ROW_FILE = "id_row.npy"
_SCHEMA = pa.schema([("id", pa.string()), ("title", pa.string()), ("text", pa.string())])


def key_hash(key: str) -> int:
    """A stable 64-bit hash of ``key`` (Python's ``hash`` changes between processes)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")


class PassageStoreWriter:
    """Append passages chunk by chunk; `finish` writes the id lookup and checks ids are unique.

    Args:
        folder: The index folder being built (must exist).
        source: Corpus name for error messages.
        batch_rows: Rows per Arrow record batch.
    """

    def __init__(self, folder: Path, *, source: str = "corpus", batch_rows: int = 4096) -> None:
        self.folder = folder
        self.source = source
        self.batch_rows = batch_rows
        self.num_rows = 0
        self._sink = pa.OSFile(str(folder / PASSAGES_FILE), "wb")
        self._writer = pa.ipc.new_file(self._sink, _SCHEMA)
        self._hashes: list[np.ndarray] = []
        self._closed = False

    def add(self, passages: Sequence[Passage]) -> None:
        """Write ``passages`` now (in record batches of at most ``batch_rows``); nothing is kept."""
        for start in range(0, len(passages), self.batch_rows):
            rows = passages[start : start + self.batch_rows]
            batch = pa.record_batch(
                [[p.id for p in rows], [p.title for p in rows], [p.text for p in rows]], schema=_SCHEMA
            )
            self._writer.write_batch(batch)
            self._hashes.append(np.fromiter((key_hash(p.id) for p in rows), dtype=np.uint64, count=len(rows)))
            self.num_rows += len(rows)

    def finish(self) -> None:
        """Close the Arrow file and write the sorted id hashes.

        Raises:
            ValueError: The corpus is empty or has a duplicate id.
        """
        self._close()
        if self.num_rows == 0:
            raise ValueError(f"{self.source}: the corpus has no passages")
        hashes = np.concatenate(self._hashes)
        order = np.argsort(hashes, kind="stable").astype(np.int64)
        sorted_hashes = hashes[order]
        same = np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1])
        if same.size:
            with pa.memory_map(str(self.folder / PASSAGES_FILE)) as src:
                ids = pa.ipc.open_file(src).read_all().column("id")
                for i in same:  # a 64-bit collision of two different ids is possible, only far rarer
                    a, b = ids[int(order[i])].as_py(), ids[int(order[i + 1])].as_py()
                    if a == b:
                        raise ValueError(f"{self.source}: duplicate passage id {a!r}")
        np.save(self.folder / ID_HASH_FILE, sorted_hashes)
        np.save(self.folder / ID_ROW_FILE, order)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close()
        finally:
            self._sink.close()

    def abort(self) -> None:
        """Close the files after a failed build (the caller removes the folder)."""
        self._close()


class PassageStore:
    """Read-only, memory-mapped passages with lookup by row and by id. Thread-safe."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._source = pa.memory_map(str(folder / PASSAGES_FILE))
        reader = pa.ipc.open_file(self._source)
        self._batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        sizes = np.array([b.num_rows for b in self._batches], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self._id_hash = np.load(folder / ID_HASH_FILE, mmap_mode="r")
        self._id_row = np.load(folder / ID_ROW_FILE, mmap_mode="r")
        self.num_rows = int(sizes.sum())

    def __len__(self) -> int:
        return self.num_rows

    def _cell(self, row: int, column: int) -> str:
        b = int(np.searchsorted(self._starts, row, side="right")) - 1
        return self._batches[b].column(column)[row - int(self._starts[b])].as_py()

    def doc_id(self, row: int) -> str:
        return self._cell(row, 0)

    def title(self, row: int) -> str:
        return self._cell(row, 1)

    def text(self, row: int) -> str:
        return self._cell(row, 2)

    def page(self, row: int) -> Page:
        return Page(self.doc_id(row), self.title(row), self.text(row))

    def row_of(self, doc_id: str) -> int | None:
        """The row of ``doc_id``, or None."""
        if not isinstance(doc_id, str):
            return None
        h = np.uint64(key_hash(doc_id))
        i = int(np.searchsorted(self._id_hash, h, side="left"))
        while i < len(self._id_hash) and self._id_hash[i] == h:
            row = int(self._id_row[i])
            if self.doc_id(row) == doc_id:
                return row
            i += 1
        return None

    def iter_rows(self, columns: tuple[str, ...] = ("id", "title", "text")) -> Iterator[tuple[str, ...]]:
        """All rows in order, batch by batch (for re-indexing without re-reading the corpus)."""
        idx = [_SCHEMA.get_field_index(c) for c in columns]
        for batch in self._batches:
            cols = [batch.column(i).to_pylist() for i in idx]
            yield from zip(*cols, strict=True)

    def close(self) -> None:
        self._batches = []
        self._source.close()
