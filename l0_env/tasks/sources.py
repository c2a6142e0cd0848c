"""Read QA tasks from the bundled HotpotQA sample, JSONL/Parquet files, or in-memory rows.

Accepted row layouts (one mapping per task):

- ours / HotpotQA-like: ``{"id", "question", "answers": [str, ...], "supporting_titles"?, ...}``
- single answer: ``{"question", "answer": str}``
- FlashRAG: ``{"id", "question", "golden_answers": [str, ...]}``
- GAIA: ``{"task_id", "Question", "Final answer", "file_name", "Level", ...}`` (its
  ``metadata.jsonl``; pass the file or its directory). A gold that is a number makes the task
  numeric (``answer_type: "number"``), as GAIA's own scorer compares numbers.

Any row may attach files: ``"files": [path, ...]`` (GAIA: ``file_name``). See ``files.py`` for the
checks; paths in a task file are relative to its directory and must stay inside it.

Every other key with a non-null value goes into ``Task.metadata`` unchanged.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..answers import DEFAULT_TOLERANCE, parse_number
from .files import resolve_task_files

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
SPLITS = {"dev": "hotpotqa_dev.jsonl.gz", "train": "hotpotqa_train.jsonl.gz"}
FILE_TASKS_DIR = DATA_DIR / "file_tasks"
"""The bundled tasks with attached files (GAIA's layout; see its ``NOTICE.md``)."""
ANSWER_KEYS = ("answers", "golden_answers", "answer")
_CORE_KEYS = frozenset({"id", "question", "supporting_titles", "files", *ANSWER_KEYS})
GAIA_METADATA = "metadata.jsonl"
_GAIA_KEYS = frozenset({"task_id", "Question", "Final answer", "file_name", "file_path"})


@dataclass(frozen=True)
class Task:
    """One question with its gold answers.

    Attributes:
        id: Unique id within its source.
        question: The question text shown to the agent.
        answers: Gold answers, never empty; ``answers[0]`` is the canonical one, the rest aliases.
        supporting_titles: Titles of the gold passages, where the source has them.
        metadata: Every other field of the source row (e.g. ``type``, ``level``).
        files: Host paths of the files attached to the task (absolute, checked by
            :func:`l0_env.tasks.files.resolve_task_files` when loaded); the agent sees each under
            its file name.
    """

    id: str
    question: str
    answers: tuple[str, ...]
    supporting_titles: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)
    files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        answers = (self.answers,) if isinstance(self.answers, str) else tuple(self.answers)
        titles = (
            (self.supporting_titles,)
            if isinstance(self.supporting_titles, str)
            else tuple(self.supporting_titles)
        )
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"task {self.id!r}: question must be a non-empty string")
        if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            raise ValueError(f"task {self.id!r}: answers must be a non-empty list of non-empty strings")
        object.__setattr__(self, "answers", answers)
        object.__setattr__(self, "supporting_titles", titles)
        object.__setattr__(self, "metadata", dict(self.metadata))
        files = (self.files,) if isinstance(self.files, str) else tuple(self.files)
        if not all(isinstance(f, str) and os.path.isabs(f) for f in files):
            raise ValueError(
                f"task {self.id!r}: files must be absolute paths (resolve_task_files makes them)"
            )
        object.__setattr__(self, "files", files)
        kind = self.metadata.get("answer_type", "text")
        if kind not in ("text", "number"):
            raise ValueError(f"task {self.id!r}: answer_type must be 'text' or 'number', got {kind!r}")
        if kind == "number":
            bad = [a for a in answers if parse_number(a) is None]
            if bad:
                raise ValueError(
                    f"task {self.id!r}: answer_type 'number' but the answer {bad[0]!r} is no number"
                )
            tol = self.metadata.get("tolerance", DEFAULT_TOLERANCE)
            if (
                isinstance(tol, bool)
                or not isinstance(tol, (int, float))
                or not math.isfinite(tol)
                or tol < 0
            ):
                raise ValueError(f"task {self.id!r}: tolerance must be a finite number >= 0, got {tol!r}")

    def to_dict(self) -> dict[str, Any]:
        """The task as fresh JSON-like data (lists for the tuples, a deep copy of the metadata):
        what ``info["task"]`` carries and :func:`task_from_mapping` reads back."""
        data = asdict(self)
        data.update(
            answers=list(self.answers), supporting_titles=list(self.supporting_titles), files=list(self.files)
        )
        return data

    @property
    def numeric_tolerance(self) -> float | None:
        """The tolerance of a task whose answer is a number (``answer_type: "number"`` in its
        metadata, optionally ``tolerance``), else None (text answers: EM/F1)."""
        if self.metadata.get("answer_type") != "number":
            return None
        return float(self.metadata.get("tolerance", DEFAULT_TOLERANCE))


def task_from_mapping(
    row: Mapping[str, Any],
    *,
    default_id: str,
    base_dir: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> Task:
    """Build a `Task` from one row; raise ValueError saying what is wrong with it.

    Args:
        row: A mapping with ``question`` and one of ``answers`` (list), ``golden_answers`` (list)
            or ``answer`` (str or list). ``id``, ``supporting_titles`` and ``files`` are optional.
            A GAIA row (``Question``, ``Final answer``, ``file_name``) is read as GAIA means it.
        default_id: The id to use when the row has none.
        base_dir: What relative ``files`` are relative to (default: the current directory).
        root: When set, attached files must lie inside it (rows read from a file: its directory).
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"expected a mapping (JSON object), got {type(row).__name__}")
    if "Question" in row and "Final answer" in row and "question" not in row:
        row = _from_gaia(row)
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("missing or empty 'question' (a non-empty string is required)")
    key = next((k for k in ANSWER_KEYS if row.get(k) is not None), None)
    if key is None:
        raise ValueError("no gold answer: expected 'answers' (list), 'golden_answers' (list) or 'answer'")
    answers = _as_str_list(row[key], key)
    if not answers:
        raise ValueError(f"'{key}' is empty: every task needs at least one non-empty gold answer")
    titles = _as_str_list(row.get("supporting_titles") or [], "supporting_titles")
    raw_id = row.get("id")
    task_id = default_id if raw_id is None or str(raw_id) == "" else str(raw_id)
    # None values are dropped: Parquet fills a column that a row lacks with nulls.
    metadata = {k: v for k, v in row.items() if k not in _CORE_KEYS and v is not None}
    files = resolve_task_files(row.get("files") or [], base_dir=base_dir, root=root)
    return Task(task_id, question, tuple(answers), tuple(titles), metadata, files)


def _from_gaia(row: Mapping[str, Any]) -> dict[str, Any]:
    """A GAIA row in our layout: its file (``file_path`` from Hugging Face's copy, else
    ``file_name``) attached, a numeric gold scored as a number."""
    answer = row.get("Final answer")
    if isinstance(answer, str) and answer.strip() == "?":
        raise ValueError(
            "the gold answer is '?': GAIA's test split hides its answers; use the validation split"
        )
    out: dict[str, Any] = {k: v for k, v in row.items() if k not in _GAIA_KEYS}
    out.update(id=row.get("task_id"), question=row.get("Question"))
    out["answers"] = answer if isinstance(answer, (list, tuple)) or answer is None else [answer]
    file = row.get("file_path") or row.get("file_name")
    if file:
        out["files"] = [file]
    if "answer_type" not in out and answer is not None and parse_number(answer) is not None:
        out["answer_type"] = "number"
    return out


def _as_str_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    elif hasattr(value, "tolist"):  # numpy arrays from Parquet/pandas
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"'{key}' must be a string or a list of strings, got {type(value).__name__}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ValueError(f"'{key}' holds a {type(item).__name__}; expected strings")
        text = str(item)
        if not text.strip():
            raise ValueError(f"'{key}' holds an empty string")
        out.append(text)
    return out


def load_tasks(
    source: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None = None, *, split: str = "dev"
) -> list[Task]:
    """Load QA tasks.

    Args:
        source: ``None`` for the bundled HotpotQA sample (see ``l0_env/data/NOTICE.md``); a path to
            a ``.jsonl``/``.jsonl.gz``/``.json`` (JSON Lines) or ``.parquet`` file, or to a
            directory holding GAIA's ``metadata.jsonl`` (e.g. :data:`FILE_TASKS_DIR`); or a
            sequence of row mappings. Rows without an ``id`` get ``task-<row index>``.
        split: Which bundled split when ``source`` is None: ``"dev"`` (1,245 questions) or
            ``"train"`` (100).

    Returns:
        The tasks in source order.

    Raises:
        ValueError: Bad input; the message names the file and line (or row) at fault.
        FileNotFoundError: The path does not exist.
    """
    if source is None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; bundled splits are {sorted(SPLITS)}")
        return _load_file(DATA_DIR / SPLITS[split])
    if isinstance(source, (str, os.PathLike)):
        return _load_file(Path(source))
    if isinstance(source, Mapping):
        raise ValueError("source is a single mapping; pass a list of rows (e.g. [row])")
    return _build(((i, row) for i, row in enumerate(source)), where=lambda i: f"row {i}")


def _load_file(path: Path) -> list[Task]:
    if not path.exists():
        raise FileNotFoundError(f"task file not found: {path}")
    if path.is_dir():
        if not (path / GAIA_METADATA).is_file():
            raise ValueError(f"{path}: a directory of tasks must hold GAIA's {GAIA_METADATA}")
        path = path / GAIA_METADATA
    name = path.name.lower()
    here = path.resolve().parent  # attached files: relative to the task file and inside its directory
    if name.endswith(".parquet"):
        rows = _iter_parquet(path)
        return _build(rows, where=lambda i: f"{path}: row {i}", base_dir=here)
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")):
        return _build(_iter_jsonl(path), where=lambda i: f"{path}:{i + 1}", base_dir=here)
    raise ValueError(f"{path}: unknown task file extension; use .jsonl, .jsonl.gz (JSON Lines) or .parquet")


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    lineno = 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(
                        f"{path}:{lineno + 1}: invalid JSON ({e.msg} at column {e.colno})"
                    ) from e
                yield lineno, row
    # A truncated or corrupt .gz raises a bare EOFError / BadGzipFile (an OSError), bad bytes a
    # UnicodeDecodeError, none naming the file: say which file and where.
    except (EOFError, OSError, UnicodeDecodeError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise
        what = "ends early (truncated?)" if isinstance(e, EOFError) else f"cannot be read ({e})"
        raise ValueError(f"{path}: the file {what}, near line {lineno + 1}") from e


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: not a readable Parquet file ({e})") from e
    yield from enumerate(table.to_pylist())


def _build(rows: Iterator[tuple[int, Any]], where: Any, base_dir: Path | None = None) -> list[Task]:
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for n, (pos, row) in enumerate(rows):
        try:
            task = task_from_mapping(row, default_id=f"task-{n}", base_dir=base_dir, root=base_dir)
        except ValueError as e:
            raise ValueError(f"{where(pos)}: {e}") from None
        if task.id in seen:
            raise ValueError(f"{where(pos)}: duplicate task id {task.id!r} (first at {where(seen[task.id])})")
        seen[task.id] = pos
        tasks.append(task)
    return tasks
