"""Where input rows come from: files, Hugging Face datasets, or any Python iterable (IO).

An input is named on the command line as

* ``FILE[:name]``: a QA file in any layout :mod:`l0_env.tasks.layouts` reads (ours, FlashRAG,
  the HotpotQA/2Wiki/MuSiQue/TriviaQA/NQ-open/PopQA/SimpleQA/Bamboogle releases; JSONL, JSON,
  CSV/TSV, optionally gzipped, or Parquet). ``name`` is the dataset name recorded as each row's
  ``source`` (default: the file name without its extensions).
* ``hf:<dataset>[:config][:split]``: a Hugging Face dataset, streamed (``datasets`` is imported
  only then; it needs the network or a warm cache). Source name: the dataset's last path part,
  plus ``-<split>`` when a split is given. Default split: ``train``.

Records are yielded lazily, each already normalised to our schema by :mod:`l0_env.tasks.layouts`
(the layout is detected from the first record), with its 0-based position and a location for
messages (``path:line`` for JSON Lines). A record that does not fit its layout is yielded as a
:class:`~l0_env.tasks.layouts.LayoutError` in its place, so the build can stop on it or skip it
and go on. Exception: CSV/TSV files and whole-document JSON files are read by
:func:`l0_env.tasks.layouts.iter_rows`, which stops at the first bad record (it cannot be
skipped); a file that cannot be parsed at all always stops the build.
"""

from __future__ import annotations

import gzip
import importlib
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tasks import layouts
from ..tasks.layouts import LayoutError

__all__ = ["InputSpec", "RecordReader", "parse_input", "rows_input"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_PARQUET_BATCH = 4096


@dataclass(frozen=True)
class InputSpec:
    """One input of a build.

    Attributes:
        name: The dataset name recorded as ``source`` (used in ids: letters, digits, ``_.-``).
        origin: What ``source_file`` records: the path as given, ``hf:...``, or a label.
        path: The file, for file inputs.
        hf: ``(dataset, config, split)`` for Hugging Face inputs.
        rows: A zero-argument callable returning the rows, for in-memory inputs (the Python API).
    """

    name: str
    origin: str
    path: Path | None = None
    hf: tuple[str, str | None, str] | None = None
    rows: Callable[[], Iterable[Mapping[str, Any]]] | None = None


def _check_name(name: str, spec: str) -> str:
    if not _NAME_RE.match(name):
        raise ValueError(
            f"{spec!r}: source name {name!r} must start with a letter or digit and hold only "
            "letters, digits, '_', '.', '-'"
        )
    return name


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".tsv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name).lstrip("_.-") or "input"


def parse_input(spec: str) -> InputSpec:
    """Parse ``FILE[:name]`` or ``hf:<dataset>[:config][:split]``.

    A file must exist (checked here, so a typo fails before any work). A path that itself
    contains ``:`` is taken whole when it exists.

    Raises:
        ValueError: A malformed spec or a bad name.
        FileNotFoundError: The file does not exist.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("an input must be a non-empty FILE[:name] or hf:<dataset>[:config][:split]")
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        if not parts[0] or len(parts) > 3 or any(not p for p in parts):
            raise ValueError(
                f"{spec!r}: expected hf:<dataset>[:config][:split], e.g. hf:hotpot_qa:distractor:train"
            )
        dataset = parts[0]
        config = parts[1] if len(parts) >= 2 else None
        split = parts[2] if len(parts) == 3 else None
        hf_name = dataset.rsplit("/", 1)[-1] + (f"-{split}" if split else "")
        origin = f"hf:{dataset}:{config or ''}:{split or 'train'}"
        return InputSpec(_check_name(hf_name, spec), origin, hf=(dataset, config, split or "train"))
    whole = Path(spec)
    name: str | None = None
    if whole.exists() or ":" not in spec:
        path = whole
    else:
        head, name = spec.rsplit(":", 1)
        path = Path(head)
    if not path.exists():
        raise FileNotFoundError(f"input file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; name a QA file (JSONL, JSON, CSV or Parquet)")
    return InputSpec(_check_name(name if name is not None else _stem(path), spec), str(path), path=path)


def rows_input(
    name: str, rows: Iterable[Mapping[str, Any]] | Callable[[], Iterable[Mapping[str, Any]]]
) -> InputSpec:
    """An input from Python rows (the API's way to pass a generator).

    Args:
        name: The source name.
        rows: The rows (any layout :mod:`l0_env.tasks.layouts` knows), or a callable returning
            them. A plain iterator can be read once only: pass a callable when the same input is
            read twice (as an evaluation set and as training data, say).
    """
    factory: Callable[[], Iterable[Mapping[str, Any]]] = rows if callable(rows) else (lambda: rows)
    return InputSpec(_check_name(name, name), f"<{name}>", rows=factory)


class RecordReader:
    """The records of one input, normalised; iterate once.

    Yields ``(position, location, row)``, where ``row`` is a normalised dict or the
    :class:`~l0_env.tasks.layouts.LayoutError` that record raised.

    Args:
        spec: The input.
        questions_only: For evaluation sets, where only the question matters: a JSON Lines,
            Parquet or in-memory record that fits no layout, or fails its layout's checks (a test
            split without answers, say), still yields ``{"question": ...}`` when it has a
            non-empty ``question`` (or ``Question``, ``problem``, ``question_text``) string.

    Attributes:
        layout: The layout detected from the first record (None before it is read, and for
            question-only records).

    Raises:
        ValueError: The input cannot be read at all (missing ``datasets``, a corrupt file); the
            message names the file.
    """

    def __init__(self, spec: InputSpec, *, questions_only: bool = False) -> None:
        self.spec = spec
        self.questions_only = questions_only
        self.layout: str | None = None

    def __iter__(self) -> Iterator[tuple[int, str, Any]]:
        spec = self.spec
        if spec.rows is not None:
            raw: Iterator[tuple[int, str, Any]] = (
                (i, f"{spec.origin}: row {i}", row) for i, row in enumerate(spec.rows())
            )
        elif spec.hf is not None:
            raw = _iter_hf(spec)
        else:
            assert spec.path is not None
            fmt = layouts.detect_format(spec.path)
            if fmt == "jsonl":
                raw = _iter_jsonl(spec.path)
            elif fmt == "parquet":
                raw = _iter_parquet(spec.path)
            else:
                yield from self._whole_file(spec.path)
                return
        yield from self._normalised(raw)

    def _normalised(self, raw: Iterator[tuple[int, str, Any]]) -> Iterator[tuple[int, str, Any]]:
        source = self.spec.origin
        for position, where, record in raw:
            if isinstance(record, LayoutError):  # a line that is not JSON
                yield position, where, record
                continue
            layout = self.layout or layouts.detect_row_layout(record)
            if layout is None:
                question = self._question(record)
                if question is not None:
                    yield position, where, {"question": question}
                    continue
                # Without a layout no later record can be read either: stop here.
                keys = ", ".join(sorted(map(str, record))[:12]) if isinstance(record, Mapping) else ""
                raise LayoutError(
                    f"{where}: cannot tell the layout from this record (keys: {keys or 'none'}); "
                    f"known layouts: {', '.join(layouts.LAYOUTS)}"
                )
            self.layout = layout
            try:
                row: Any = layouts.normalize_row(record, layout, index=position, source=source)
            except LayoutError as e:
                question = self._question(record)
                if question is not None:
                    row = {"question": question}
                else:
                    # normalize_row says "<source>: row N: ..."; the location we have is more precise.
                    message, prefix = str(e), f"{source}: row {position}: "
                    row = LayoutError(f"{where}: {message.removeprefix(prefix)}")
            yield position, where, row

    def _question(self, record: Any) -> str | None:
        """The question of a record that fits no layout, when only questions are wanted."""
        if not self.questions_only or not isinstance(record, Mapping):
            return None
        for key in ("question", "Question", "problem", "question_text"):
            value = record.get(key)
            if isinstance(value, str) and value.strip():
                return value
        return None

    def _whole_file(self, path: Path) -> Iterator[tuple[int, str, Any]]:
        self.layout = layouts.detect_layout(path)
        for i, row in enumerate(layouts.iter_rows(path, self.layout)):
            yield i, f"{path}: record {i}", row


def _iter_jsonl(path: Path) -> Iterator[tuple[int, str, Any]]:
    """Raw JSON Lines records with their line numbers (a bad line is yielded as its error)."""
    opener: Any = gzip.open if path.name.lower().endswith(".gz") else open
    lineno = 0
    position = 0
    try:
        with opener(path, "rt", encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row: Any = json.loads(line)
                except json.JSONDecodeError as e:
                    row = LayoutError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})")
                yield position, f"{path}:{lineno}", row
                position += 1
    # A truncated .gz raises a bare EOFError / BadGzipFile, bad bytes a UnicodeDecodeError; none
    # names the file.
    except (EOFError, OSError, UnicodeDecodeError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise
        what = "ends early (truncated?)" if isinstance(e, EOFError) else f"cannot be read ({e})"
        raise ValueError(f"{path}: the file {what}, near line {lineno + 1}") from None


def _iter_parquet(path: Path) -> Iterator[tuple[int, str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        position = 0
        # Batch by batch: a large file never sits in memory whole.
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH):
            for row in batch.to_pylist():
                yield position, f"{path}: row {position}", row
                position += 1
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet file ({e})") from None


def _iter_hf(spec: InputSpec) -> Iterator[tuple[int, str, Any]]:
    assert spec.hf is not None
    dataset, config, split = spec.hf
    try:
        datasets = importlib.import_module("datasets")
    except ModuleNotFoundError:
        raise ValueError(
            f"{spec.origin}: Hugging Face inputs need the 'datasets' package (pip install datasets)"
        ) from None
    try:
        ds = datasets.load_dataset(dataset, config, split=split, streaming=True)
    except Exception as e:  # the library raises many types (network, missing config, auth)
        raise ValueError(f"{spec.origin}: cannot load the dataset ({type(e).__name__}: {e})") from None
    for i, row in enumerate(ds):
        yield i, f"{spec.origin}: row {i}", row
