"""QA data in the usual public layouts, read as rows of our task schema.

The stable entry points (the data pipeline, ``python -m l0_env.data build``, and the evaluation
suite build on them)::

    detect_layout(path) -> str                          # which layout a file holds
    iter_rows(path, layout=None) -> Iterator[dict]      # its rows, normalised, streamed
    normalize_rows(rows, layout=None, source=...)       # any iterable of mappings (e.g. HF rows)
    iter_hf_rows(name, config=None, split=...)          # a Hugging Face dataset (needs `datasets`)

**The schema of a normalised row** (plain JSON types; what ``l0_env.tasks.load_tasks`` reads):

- ``id`` (str): the source's id; where the source has none, ``<layout>_<row>`` (``simpleqa_0``,
  ``bamboogle_12``: 0-based record index). Unique within one file, not across files.
- ``question`` (str, non-empty).
- ``answers`` (list of non-empty str, never empty): ``answers[0]`` the canonical gold answer,
  then the source's aliases, duplicates removed in order.
- ``supporting_titles`` (list of str): only where the source marks gold paragraphs.
- ``context`` (list of ``{"title", "text"}``): only where the source ships paragraphs, in its order.
- ``source`` (str: the file path, or ``hf:<name>[/<config>]:<split>``), ``source_row`` (int, the
  record's 0-based index there) and ``layout`` (str): provenance.
- Kept where present: ``type`` and ``level`` (HotpotQA, 2Wiki), ``supporting_facts``,
  ``answerable`` and ``question_decomposition`` (MuSiQue), ``metadata`` (FlashRAG, PopQA, SimpleQA).

**Layouts** (:data:`LAYOUTS`; detected from the first record of a file, every later record must
fit the same layout):

- ``ours``: ``{"id", "question", "answers": [...], "supporting_titles"?, "context"?, ...}`` (our
  task files and ``/shared/data/qa``); paragraphs may be ``{"title", "text"}``,
  ``{"title", "sentences"}`` or ``{"title", "paragraph_text"}``.
- ``flashrag``: FlashRAG's JSONL ``{"id", "question", "golden_answers": [...], "metadata"?}``.
- ``hotpotqa``: the original release (a JSON list of ``{"_id", "question", "answer", "type",
  "level", "supporting_facts": [[title, sent_id]], "context": [[title, [sentences]]]}``) or the
  Hugging Face ``hotpot_qa`` rows (``context``/``supporting_facts`` as parallel lists). Paragraph
  text is the sentences joined with nothing between them (HotpotQA's sentences keep their
  leading spaces). The fullwiki test split has no answers: refused.
- ``2wikimultihopqa``: as HotpotQA (it shares the layout) plus ``evidences``; sentences are
  joined with one space.
- ``musique``: the original JSONL ``{"id", "question", "answer", "answer_aliases",
  "answerable", "paragraphs": [{"idx", "title", "paragraph_text", "is_supporting"}],
  "question_decomposition"}``. ``answerable`` is kept (MuSiQue-Full has unanswerable questions).
- ``triviaqa``: the original JSON ``{"Data": [{"Question", "QuestionId", "Answer": {"Value",
  "Aliases", "NormalizedAliases", ...}}], ...}`` or Hugging Face ``trivia_qa`` rows
  (``answer: {"value", "aliases", ...}``); answers are the value then the aliases (the
  normalised aliases only where there are no aliases). The test split has no answers: refused.
- ``nq_open``: NQ-open's JSONL ``{"question", "answer": [...]}``.
- ``popqa``: PopQA's TSV/CSV/JSON with ``possible_answers`` as a JSON string; its other columns
  (``subj``, ``prop``, ``obj``, popularity, …) go into ``metadata``.
- ``simpleqa``: SimpleQA's CSV ``metadata,problem,answer``; ``metadata`` is a Python-literal
  dict (parsed with ``ast.literal_eval``, never ``eval``).
- ``bamboogle``: Bamboogle's CSV or JSON ``Question,Answer``.
- ``gaia``: GAIA's ``metadata.jsonl`` (``task_id``, ``Question``, ``Final answer``,
  ``file_name``); only the text is read here: attached files are resolved by
  ``l0_env.tasks.load_tasks``, which reads GAIA's layout natively.

**Files**: ``.jsonl``/``.ndjson`` and ``.csv``/``.tsv`` stream (also gzipped, ``.gz``);
``.parquet`` streams by record batch; ``.json`` is JSON Lines when its first line is one JSON
object, else one JSON document loaded whole (a HotpotQA/2Wiki/Bamboogle list, TriviaQA's object).

Every error is a :class:`LayoutError` (a ``ValueError``) naming the file, the row (line) and
what was expected. This module is pure parsing plus file reading; it imports no heavy library
(``pyarrow`` for Parquet and ``datasets`` for the Hub load only when asked for).
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = [
    "LAYOUTS",
    "LayoutError",
    "detect_format",
    "detect_layout",
    "detect_row_layout",
    "iter_hf_rows",
    "iter_rows",
    "normalize_row",
    "normalize_rows",
]

LAYOUTS: dict[str, str] = {
    "ours": "{id, question, answers: [...], supporting_titles?, context?}",
    "flashrag": "FlashRAG JSONL {id, question, golden_answers: [...]}",
    "hotpotqa": "HotpotQA {_id, question, answer, supporting_facts, context: [[title, [sentences]]]}",
    "2wikimultihopqa": "2WikiMultihopQA {_id, question, answer, context, supporting_facts, evidences}",
    "musique": "MuSiQue {id, question, answer, answer_aliases, paragraphs: [{title, paragraph_text, is_supporting}]}",
    "triviaqa": "TriviaQA {Data: [{Question, QuestionId, Answer: {Value, Aliases}}]}",
    "nq_open": "NQ-open {question, answer: [...]}",
    "popqa": "PopQA {id, question, possible_answers: '<JSON list>', subj, prop, obj, ...}",
    "simpleqa": "SimpleQA CSV {metadata, problem, answer}",
    "bamboogle": "Bamboogle {Question, Answer}",
    "gaia": "GAIA metadata.jsonl {task_id, Question, Final answer, file_name}",
}
"""Layout name → what its records look like (the keys that identify it)."""

_JSONL = (".jsonl", ".ndjson")
_CSV = (".csv", ".tsv")
_SUFFIXES = (*_JSONL, ".json", *_CSV, ".parquet")
# Question types only 2WikiMultihopQA has (both datasets have "comparison"; HotpotQA has "bridge").
_2WIKI_TYPES = frozenset({"compositional", "inference", "bridge_comparison"})


class LayoutError(ValueError):
    """A QA file or row that does not fit the expected layout; the message says where and why."""


# -- detection ------------------------------------------------------------------------------------


def detect_row_layout(row: Any) -> str | None:
    """The layout one record belongs to, or None if it fits none (see :data:`LAYOUTS`)."""
    if not isinstance(row, Mapping):
        return None
    keys = set(row)
    if "Data" in keys and isinstance(row["Data"], list):
        return "triviaqa"  # the whole TriviaQA file as one object
    if "question" in keys and "golden_answers" in keys:
        return "flashrag"
    if "question" in keys and "answers" in keys:
        return "ours"
    if "paragraphs" in keys or "answer_aliases" in keys:
        return "musique"
    if "context" in keys and ("supporting_facts" in keys or "_id" in keys):
        if "evidences" in keys or row.get("type") in _2WIKI_TYPES:
            return "2wikimultihopqa"
        return "hotpotqa"
    if "Question" in keys and "Final answer" in keys:
        return "gaia"
    if "Question" in keys and isinstance(row.get("Answer"), Mapping):
        return "triviaqa"
    if "question" in keys and isinstance(row.get("answer"), Mapping):
        return "triviaqa"  # Hugging Face trivia_qa
    if "possible_answers" in keys:
        return "popqa"
    if "problem" in keys and "answer" in keys:
        return "simpleqa"
    if "Question" in keys and "Answer" in keys:
        return "bamboogle"
    if "question" in keys and "answer" in keys:
        return "nq_open"
    return None


def detect_layout(path: str | os.PathLike[str]) -> str:
    """The layout of a QA file, from its first record (a JSON list is loaded whole).

    Raises:
        FileNotFoundError: The file does not exist.
        LayoutError: An unknown extension, an empty or unreadable file, or a first record that
            fits no layout (the message lists the layouts and their keys).
    """
    path = Path(path)
    for _, where, record in _records(path):
        layout = detect_row_layout(record)
        if layout is None:
            raise LayoutError(f"{where}: {_not_recognised(record)}")
        return layout
    raise LayoutError(f"{path}: no records: an empty file has no layout")


def _not_recognised(record: Any) -> str:
    if not isinstance(record, Mapping):
        return f"expected a JSON object / table row, got {type(record).__name__}"
    keys = ", ".join(sorted(map(str, record))[:12]) or "none"
    known = "; ".join(f"{name}: {keys_}" for name, keys_ in LAYOUTS.items())
    return f"cannot tell the layout from this record (its keys: {keys}); expected one of: {known}"


# -- reading files --------------------------------------------------------------------------------


def iter_rows(path: str | os.PathLike[str], layout: str | None = None) -> Iterator[dict[str, Any]]:
    """Normalised rows of a QA file (see the module docstring for the schema), streamed.

    Args:
        path: A ``.jsonl``/``.ndjson``/``.json``/``.csv``/``.tsv`` file (optionally ``.gz``)
            or ``.parquet``.
        layout: One of :data:`LAYOUTS`; None detects it from the first record.

    Raises:
        FileNotFoundError: The file does not exist.
        LayoutError: The layout cannot be detected, or a record does not fit it (the message
            names the file and line or row and what was expected).
    """
    path = Path(path)
    _check_layout_name(layout)
    chosen = layout
    for index, where, record in _records(path):
        if chosen is None:
            chosen = detect_row_layout(record)
            if chosen is None:
                raise LayoutError(f"{where}: {_not_recognised(record)}")
        if chosen == "triviaqa" and isinstance(record, Mapping) and isinstance(record.get("Data"), list):
            # TriviaQA's file is one object: its rows are the entries of "Data".
            for sub, item in enumerate(record["Data"]):
                yield _normalize_at(item, chosen, sub, f"{path}: Data[{sub}]", str(path))
            continue
        yield _normalize_at(record, chosen, index, where, str(path))


def normalize_rows(
    rows: Iterable[Mapping[str, Any]], layout: str | None = None, *, source: str = "rows"
) -> Iterator[dict[str, Any]]:
    """Normalise records that are already in memory or streamed (e.g. a Hugging Face dataset).

    Args:
        rows: Mappings in one layout.
        layout: One of :data:`LAYOUTS`; None detects it from the first row.
        source: Recorded as each row's ``source`` and used in error messages.

    Raises:
        LayoutError: As :func:`iter_rows`, naming ``source`` and the row index.
    """
    _check_layout_name(layout)
    chosen = layout
    for index, record in enumerate(rows):
        where = f"{source}: row {index}"
        if chosen is None:
            chosen = detect_row_layout(record)
            if chosen is None:
                raise LayoutError(f"{where}: {_not_recognised(record)}")
        yield _normalize_at(record, chosen, index, where, source)


def iter_hf_rows(
    name: str,
    config: str | None = None,
    split: str = "validation",
    layout: str | None = None,
    *,
    streaming: bool = True,
    **load_kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Normalised rows of a Hugging Face dataset (``datasets.load_dataset``; needs the network
    the first time and the ``datasets`` package). E.g. ``iter_hf_rows("hotpot_qa", "distractor")``,
    ``iter_hf_rows("trivia_qa", "rc.nocontext")``, ``iter_hf_rows("nq_open")``.

    Raises:
        ImportError: ``datasets`` is not installed (``pip install datasets``).
        LayoutError: As :func:`normalize_rows`; ``source`` is ``hf:<name>[/<config>]:<split>``.
    """
    try:
        import datasets  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise ImportError(
            "reading a Hugging Face dataset needs the 'datasets' package: pip install datasets "
            "(or download the files and pass their paths)"
        ) from exc
    data = datasets.load_dataset(name, config, split=split, streaming=streaming, **load_kwargs)
    label = f"hf:{name}{'/' + config if config else ''}:{split}"
    yield from normalize_rows(data, layout, source=label)


def _check_layout_name(layout: str | None) -> None:
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known layouts: {', '.join(LAYOUTS)}")


def _base_name(path: Path) -> str:
    name = path.name.lower()
    return name[:-3] if name.endswith(".gz") else name


def _open_text(path: Path) -> IO[str]:
    # utf-8-sig: spreadsheet exports (Bamboogle, SimpleQA) may start with a byte-order mark.
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def detect_format(path: str | os.PathLike[str]) -> str:
    """How a QA file stores its records: ``"jsonl"``, ``"json"`` (one document, loaded whole),
    ``"csv"``, ``"tsv"`` or ``"parquet"``. A ``.json`` file is ``"jsonl"`` when its first line is
    one complete JSON object (FlashRAG's and our files are named ``.json`` at times).

    Raises:
        FileNotFoundError: The file does not exist.
        LayoutError: A directory or an unknown extension.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"QA file not found: {path}")
    if path.is_dir():
        raise LayoutError(f"{path}: is a directory; pass a QA file ({', '.join(_SUFFIXES)})")
    base = _base_name(path)
    if base.endswith(".parquet"):
        return "parquet"
    if base.endswith(".tsv"):
        return "tsv"
    if base.endswith(".csv"):
        return "csv"
    if base.endswith(_JSONL):
        return "jsonl"
    if not base.endswith(".json"):
        raise LayoutError(f"{path}: unknown QA file extension; use one of {', '.join(_SUFFIXES)} (or .gz)")
    with _open_text(path) as f:
        first_line = next((line for line in f if line.strip()), "")
    try:
        first = json.loads(first_line)
    except json.JSONDecodeError:
        return "json"
    return "jsonl" if isinstance(first, Mapping) and not isinstance(first.get("Data"), list) else "json"


def _records(path: Path) -> Iterator[tuple[int, str, Any]]:
    """``(record index, where, record)`` for every record of a file, streamed where the format allows."""
    try:
        kind = detect_format(path)
        if kind == "parquet":
            yield from _parquet_records(path)
        elif kind in ("csv", "tsv"):
            yield from _csv_records(path, delimiter="\t" if kind == "tsv" else ",")
        elif kind == "jsonl":
            yield from _jsonl_records(path)
        else:
            yield from _json_records(path)
    # A truncated or corrupt .gz raises a bare EOFError / BadGzipFile (an OSError), bad bytes a
    # UnicodeDecodeError, none naming the file: say which file.
    except (EOFError, UnicodeDecodeError, zlib.error) as exc:
        what = "ends early (truncated?)" if isinstance(exc, EOFError) else f"cannot be read ({exc})"
        raise LayoutError(f"{path}: the file {what}") from exc
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise LayoutError(f"{path}: the file cannot be read ({exc})") from exc


def _jsonl_records(path: Path) -> Iterator[tuple[int, str, Any]]:
    index = 0
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LayoutError(
                    f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
                ) from None
            yield index, f"{path}:{lineno}", record
            index += 1


def _json_records(path: Path) -> Iterator[tuple[int, str, Any]]:
    with _open_text(path) as f:
        try:
            document = json.load(f)
        except json.JSONDecodeError as exc:
            raise LayoutError(
                f"{path}: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); a .json QA "
                "file is JSON Lines or one JSON list/object"
            ) from None
    if isinstance(document, list):
        for index, record in enumerate(document):
            yield index, f"{path}: record {index}", record
    elif isinstance(document, Mapping) and isinstance(document.get("Data"), list):
        yield 0, str(path), document  # TriviaQA: iter_rows expands "Data"
    else:
        raise LayoutError(
            f"{path}: a JSON document must be a list of records or TriviaQA's {{'Data': [...]}} object, "
            f"got {type(document).__name__}"
        )


def _csv_records(path: Path, delimiter: str) -> Iterator[tuple[int, str, Any]]:
    with _open_text(path) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if not reader.fieldnames:
            return
        header = [str(h) for h in reader.fieldnames]
        for index, record in enumerate(reader):
            where = f"{path}:{reader.line_num}"
            if None in record or any(v is None for v in record.values()):
                raise LayoutError(
                    f"{where}: the row has {'more' if None in record else 'fewer'} fields than the "
                    f"header ({', '.join(header)})"
                )
            yield index, where, record


def _parquet_records(path: Path) -> Iterator[tuple[int, str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise LayoutError(f"{path}: not a readable Parquet file ({exc})") from exc
    index = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            yield index, f"{path}: row {index}", record
            index += 1


# -- normalising one record -----------------------------------------------------------------------


def normalize_row(
    row: Mapping[str, Any], layout: str, *, index: int = 0, source: str = "rows"
) -> dict[str, Any]:
    """One record of ``layout`` as a row of our schema (see the module docstring).

    Raises:
        LayoutError: The record does not fit ``layout`` (the message says what is missing).
    """
    _check_layout_name(layout)
    return _normalize_at(row, layout, index, f"{source}: row {index}", source)


def _normalize_at(row: Any, layout: str, index: int, where: str, source: str) -> dict[str, Any]:
    if not isinstance(row, Mapping):
        raise LayoutError(f"{where}: expected a JSON object / table row, got {type(row).__name__}")
    try:
        out = _NORMALISERS[layout](row, index)
    except LayoutError as exc:
        raise LayoutError(f"{where}: not a {layout} record ({LAYOUTS[layout]}): {exc}") from None
    out.update(source=source, source_row=index, layout=layout)
    return out


def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise LayoutError(f"missing or empty {key!r} (a non-empty string)")
    return value


def _answers(*groups: Any) -> list[str]:
    """Gold answers from one or more values (a string, a number or a list of them), de-duplicated."""
    out: list[str] = []
    for group in groups:
        if group is None:
            continue
        items = group if isinstance(group, (list, tuple)) else [group]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise LayoutError(f"an answer is a {type(item).__name__}; expected strings")
            text = str(item)
            if text.strip() and text not in out:
                out.append(text)
    if not out:
        raise LayoutError("no non-empty gold answer")
    return out


def _row_id(row: Mapping[str, Any], keys: tuple[str, ...], layout: str, index: int) -> str:
    for key in keys:
        value = row.get(key)
        if value is not None and not isinstance(value, bool) and str(value) != "":
            return str(value)
    return f"{layout}_{index}"


def _unique(items: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _paragraph(item: Any, joiner: str) -> dict[str, str]:
    """One context paragraph from any of the shapes in use, as ``{"title", "text"}``."""
    if isinstance(item, Mapping):
        title = item.get("title", "")
        if isinstance(item.get("text"), str):
            text = item["text"]
        elif isinstance(item.get("paragraph_text"), str):
            text = item["paragraph_text"]
        elif isinstance(item.get("sentences"), list):
            text = _join(item["sentences"], joiner)
        else:
            raise LayoutError("a context paragraph has no 'text', 'paragraph_text' or 'sentences'")
    elif isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], (list, str)):
        title, body = item
        text = body if isinstance(body, str) else _join(body, joiner)
    else:
        raise LayoutError(
            f"a context paragraph is a {type(item).__name__}; expected [title, [sentences]] or an object"
        )
    if not isinstance(title, str):
        raise LayoutError("a context paragraph's title is not a string")
    return {"title": title, "text": text}


def _join(sentences: list[Any], joiner: str) -> str:
    if not all(isinstance(s, str) for s in sentences):
        raise LayoutError("a paragraph's sentences must be strings")
    return joiner.join(sentences)


def _context(value: Any, joiner: str) -> list[dict[str, str]]:
    if isinstance(value, Mapping) and "title" in value:  # Hugging Face: parallel columns
        titles, bodies = value.get("title") or [], value.get("sentences") or value.get("content") or []
        if len(titles) != len(bodies):
            raise LayoutError("'context' has different numbers of titles and sentence lists")
        return [_paragraph([t, b], joiner) for t, b in zip(titles, bodies, strict=True)]
    if not isinstance(value, list):
        raise LayoutError(f"'context' must be a list of paragraphs, got {type(value).__name__}")
    return [_paragraph(item, joiner) for item in value]


def _fact_titles(value: Any) -> list[str]:
    """Supporting titles from ``supporting_facts`` ([[title, sent_id]] or HF's parallel lists)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        titles = value.get("title") or []
    elif isinstance(value, list):
        titles = [f[0] for f in value if isinstance(f, (list, tuple)) and f]
        if len(titles) != len(value):
            raise LayoutError("'supporting_facts' must be [title, sentence index] pairs")
    else:
        raise LayoutError(f"'supporting_facts' must be a list, got {type(value).__name__}")
    return _unique(str(t) for t in titles)


def _facts(value: Any) -> list[list[Any]] | None:
    if isinstance(value, Mapping):
        return [[t, s] for t, s in zip(value.get("title") or [], value.get("sent_id") or [], strict=False)]
    if isinstance(value, list):
        return [list(f) for f in value]
    return None


def _ours(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("answers", "context", "sentences")}
    out["id"] = _row_id(row, ("id",), "ours", index)
    out["question"] = _text(row, "question")
    answers: Any = row.get("answers")
    if hasattr(answers, "tolist"):  # numpy arrays from Parquet through pandas
        answers = answers.tolist()
    out["answers"] = _answers(answers)
    if row.get("supporting_titles") is not None:
        titles = row["supporting_titles"]
        out["supporting_titles"] = [titles] if isinstance(titles, str) else [str(t) for t in titles]
    if row.get("context") is not None:
        out["context"] = _context(row["context"], joiner="")
        if "supporting_titles" not in out and any(
            isinstance(p, Mapping) and "is_supporting" in p for p in row["context"]
        ):
            out["supporting_titles"] = _unique(
                str(p.get("title", ""))
                for p in row["context"]
                if isinstance(p, Mapping) and p.get("is_supporting")
            )
    return out


def _flashrag(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": _row_id(row, ("id",), "flashrag", index),
        "question": _text(row, "question"),
        "answers": _answers(row.get("golden_answers")),
    }
    if row.get("metadata") is not None:
        out["metadata"] = row["metadata"]
    return out


def _multihop(layout: str, joiner: str) -> Callable[[Mapping[str, Any], int], dict[str, Any]]:
    def normalise(row: Mapping[str, Any], index: int) -> dict[str, Any]:
        if row.get("answer") is None:
            raise LayoutError("no 'answer' (the test split hides its answers; use dev or train)")
        out: dict[str, Any] = {
            "id": _row_id(row, ("_id", "id"), layout, index),
            "question": _text(row, "question"),
            "answers": _answers(row.get("answer")),
        }
        if row.get("supporting_facts") is not None:
            out["supporting_titles"] = _fact_titles(row["supporting_facts"])
            out["supporting_facts"] = _facts(row["supporting_facts"])
        out["context"] = _context(row.get("context"), joiner)
        for key in ("type", "level"):
            if row.get(key) is not None:
                out[key] = row[key]
        return out

    return normalise


def _musique(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": _row_id(row, ("id",), "musique", index),
        "question": _text(row, "question"),
        "answers": _answers(row.get("answer"), row.get("answer_aliases")),
    }
    paragraphs = row.get("paragraphs")
    if paragraphs is not None:
        if not isinstance(paragraphs, list):
            raise LayoutError(f"'paragraphs' must be a list, got {type(paragraphs).__name__}")
        out["context"] = [_paragraph(p, joiner=" ") for p in paragraphs]
        out["supporting_titles"] = _unique(
            str(p.get("title", "")) for p in paragraphs if isinstance(p, Mapping) and p.get("is_supporting")
        )
    for key in ("answerable", "question_decomposition"):
        if row.get(key) is not None:
            out[key] = row[key]
    return out


def _triviaqa(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    original = "Question" in row
    answer = row.get("Answer" if original else "answer")
    if not isinstance(answer, Mapping):
        raise LayoutError("no 'Answer' object (TriviaQA's test split hides its answers; use dev)")
    value = answer.get("Value" if original else "value")
    aliases = answer.get("Aliases" if original else "aliases") or []
    if not aliases:
        aliases = answer.get("NormalizedAliases" if original else "normalized_aliases") or []
    return {
        "id": _row_id(row, ("QuestionId", "question_id"), "triviaqa", index),
        "question": _text(row, "Question" if original else "question"),
        "answers": _answers(value, list(aliases)),
    }


def _nq_open(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    return {
        "id": _row_id(row, ("id",), "nq_open", index),
        "question": _text(row, "question"),
        "answers": _answers(row.get("answer")),
    }


def _popqa(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    raw = row.get("possible_answers")
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            try:  # some copies write the list with Python quotes
                parsed = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                raise LayoutError(f"'possible_answers' is not a JSON list: {raw[:80]!r}") from None
    else:
        parsed = raw
    if not isinstance(parsed, list):
        raise LayoutError("'possible_answers' must be a list of strings (or one as a JSON string)")
    core = {"id", "question", "possible_answers"}
    return {
        "id": _row_id(row, ("id",), "popqa", index),
        "question": _text(row, "question"),
        "answers": _answers(parsed),
        "metadata": {k: v for k, v in row.items() if k not in core},
    }


def _simpleqa(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": _row_id(row, ("id",), "simpleqa", index),
        "question": _text(row, "problem"),
        "answers": _answers(row.get("answer")),
    }
    meta = row.get("metadata")
    if isinstance(meta, str) and meta.strip():
        try:
            meta = ast.literal_eval(meta)  # SimpleQA writes a Python dict literal, not JSON
        except (ValueError, SyntaxError):
            raise LayoutError(f"'metadata' is not a Python-literal dict: {meta[:80]!r}") from None
    if meta is not None and meta != "":
        if not isinstance(meta, Mapping):
            raise LayoutError(f"'metadata' must be a dict, got {type(meta).__name__}")
        out["metadata"] = dict(meta)
    return out


def _bamboogle(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    return {
        "id": _row_id(row, ("id",), "bamboogle", index),
        "question": _text(row, "Question"),
        "answers": _answers(row.get("Answer")),
    }


def _gaia(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    answer = row.get("Final answer")
    if isinstance(answer, str) and answer.strip() == "?":
        raise LayoutError("the gold answer is '?': GAIA's test split hides its answers; use validation")
    out: dict[str, Any] = {
        "id": _row_id(row, ("task_id",), "gaia", index),
        "question": _text(row, "Question"),
        "answers": _answers(answer),
    }
    for key in ("Level", "file_name"):
        if row.get(key) not in (None, ""):
            out[key.lower()] = row[key]
    return out


_NORMALISERS: dict[str, Callable[[Mapping[str, Any], int], dict[str, Any]]] = {
    "ours": _ours,
    "flashrag": _flashrag,
    "hotpotqa": _multihop("hotpotqa", joiner=""),
    "2wikimultihopqa": _multihop("2wikimultihopqa", joiner=" "),
    "musique": _musique,
    "triviaqa": _triviaqa,
    "nq_open": _nq_open,
    "popqa": _popqa,
    "simpleqa": _simpleqa,
    "bamboogle": _bamboogle,
    "gaia": _gaia,
}
assert set(_NORMALISERS) == set(LAYOUTS), "every layout has a normaliser"
