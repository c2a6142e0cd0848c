"""Writing the task file (Parquet or JSONL) atomically, and the spill file that later stages re-read (IO).

:class:`TaskWriter` writes to a temporary file beside the target and renames it into place only
on :meth:`~TaskWriter.commit`; on an error (or :meth:`~TaskWriter.abort`) the temporary file is
removed, so a failed build leaves nothing half-written. Parquet is written in row groups of
``batch_rows`` (``pyarrow.parquet.ParquetWriter``), JSONL line by line: memory stays bounded
whatever the size of the output.

:class:`Spill` holds the rows that survived the streaming stages when a later stage needs them
in another order (``--sample``) or must stop early (the LLM filter with ``--limit``): JSON lines
in a temporary file plus one 8-byte offset per row, so any row can be read back by its number.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import tempfile
from array import array
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from .schema import ARROW_SCHEMA

__all__ = ["OUTPUT_SUFFIXES", "Spill", "TaskWriter", "atomic_write_text", "output_format"]

OUTPUT_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")


def output_format(path: str | os.PathLike[str]) -> str:
    """``"parquet"``, ``"jsonl"`` or ``"jsonl.gz"`` from the file name; ValueError otherwise."""
    name = Path(path).name.lower()
    for suffix in sorted(OUTPUT_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix[1:]
    raise ValueError(f"{path}: the output must end in .parquet, .jsonl or .jsonl.gz")


def _temp_beside(path: Path) -> Path:
    """A new empty file beside ``path`` (same file system, so the final rename is atomic).

    Created with ``open(..., "x")`` rather than ``mkstemp``: the file gets the umask's usual
    permissions (mkstemp's are 0600, and the rename would carry them to the output).
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            with open(tmp, "xb"):
                return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: could not create a temporary file beside it")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = _temp_beside(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in row.items() if v is not None}, ensure_ascii=False) + "\n"


class TaskWriter:
    """Rows of :data:`.schema.ARROW_SCHEMA` to a Parquet or JSONL file, committed atomically.

    Use as a context manager: leaving the block normally commits, an exception aborts.

    Args:
        path: The final path (its suffix picks the format).
        batch_rows: Rows per Parquet row group.
    """

    def __init__(self, path: str | os.PathLike[str], *, batch_rows: int = 8192) -> None:
        self.path = Path(path)
        self.format = output_format(self.path)
        self.batch_rows = batch_rows
        self.rows_written = 0
        self._tmp = _temp_beside(self.path)
        self._buffer: list[dict[str, Any]] = []
        self._parquet: pq.ParquetWriter | None = None
        self._text: IO[str] | None = None
        self._done = False
        try:
            if self.format == "parquet":
                self._parquet = pq.ParquetWriter(self._tmp, ARROW_SCHEMA, compression="zstd")
            elif self.format == "jsonl.gz":
                self._text = gzip.open(self._tmp, "wt", encoding="utf-8")  # noqa: SIM115 (closed in commit/abort)
            else:
                self._text = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115 (closed in commit/abort)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def write(self, row: dict[str, Any]) -> None:
        """Append one row."""
        if self._done:
            raise RuntimeError("TaskWriter: write after commit/abort")
        if self._text is not None:
            self._text.write(_json_line(row))
        else:
            self._buffer.append(row)
            if len(self._buffer) >= self.batch_rows:
                self._flush()
        self.rows_written += 1

    def _flush(self) -> None:
        if self._buffer and self._parquet is not None:
            self._parquet.write_table(pa.Table.from_pylist(self._buffer, schema=ARROW_SCHEMA))
            self._buffer = []

    def commit(self) -> Path:
        """Finish the file and move it into place; return its path."""
        if self._done:
            raise RuntimeError("TaskWriter: already committed or aborted")
        try:
            self._flush()
            self._close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.path

    def _close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None
        if self._text is not None:
            self._text.close()
            self._text = None

    def abort(self) -> None:
        """Drop the temporary file; the target path is left as it was. Idempotent."""
        if self._done:
            return
        self._done = True
        try:
            self._close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> TaskWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            if not self._done:
                self.commit()
        else:
            self.abort()


class Spill:
    """Rows in a temporary JSONL file, readable back by number. Close (or use ``with``) to delete.

    Args:
        directory: Where the temporary file goes (default: the system's temp directory).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._file = tempfile.TemporaryFile(mode="w+b", dir=directory)  # noqa: SIM115 (closed in close)
        self._offsets = array("q")
        self._end = 0
        self._reading = False

    def __len__(self) -> int:
        return len(self._offsets)

    def append(self, row: dict[str, Any]) -> None:
        """Store a row (JSON-able) at the end."""
        if self._reading:
            self._file.seek(self._end)
            self._reading = False
        data = json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n"
        self._offsets.append(self._end)
        self._file.write(data)
        self._end += len(data)

    def get(self, i: int) -> dict[str, Any]:
        """Row number ``i`` (0-based, in the order appended)."""
        self._reading = True
        self._file.seek(self._offsets[i])
        row: dict[str, Any] = json.loads(self._file.readline())
        return row

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
