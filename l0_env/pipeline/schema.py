"""The training file's row schema, and the mapping from an input row to it (pure).

One output row (JSONL object or Parquet row; :data:`ARROW_SCHEMA` is the Parquet schema):

==================  ===========================================================================
``id``              unique in the file: ``<source>:<source_id>`` (``#1``, ``#2``... appended if
                    a source repeats an id)
``question``        the question, as the source wrote it (surrounding whitespace stripped)
``answers``         gold answers, non-empty strings, exact repeats removed; ``answers[0]`` is the
                    canonical one
``supporting_titles``  titles of the gold passages (empty when the source has none)
``context``         the source's paragraphs ``{title, text}`` in its order, or null
``source``          the dataset name given on the command line (``FILE:name``)
``source_file``     the input it came from (a path, or ``hf:<name>:<config>:<split>``)
``source_id``       the row's id in its source, as :mod:`l0_env.tasks.layouts` reads it (where the
                    source has none: ``<layout>_<record index>``, e.g. ``simpleqa_12``)
``source_row``      the row's 0-based position among the records of its input
``answer_kind``     ``yes_no``/``number``/``date``/``entity``/``other`` (:mod:`.filters`)
``extra``           every other field of the source row, as a JSON object string, or null
``llm_*``           the quality filter's ratings (-1/0/1), null when it did not run (:mod:`.quality`)
==================  ===========================================================================

``l0_env.tasks.load_tasks`` reads the file as it is: the core fields become the task, the others
land in ``Task.metadata``. The answer-type column is ``answer_kind``, not ``answer_type``: the env
reads ``answer_type: "number"`` as "score this task numerically", a choice this pipeline does not
make for the user.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

__all__ = [
    "ARROW_SCHEMA",
    "FIELDS",
    "LLM_FIELDS",
    "MalformedRow",
    "UnanswerableRow",
    "normalise_row",
]

LLM_FIELDS = ("llm_temporal_stability", "llm_objectivity", "llm_well_formed")

_CONTEXT_TYPE = pa.struct([("title", pa.string()), ("text", pa.string())])

ARROW_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("answers", pa.list_(pa.string()), nullable=False),
        pa.field("supporting_titles", pa.list_(pa.string())),
        pa.field("context", pa.list_(_CONTEXT_TYPE)),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_id", pa.string()),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("answer_kind", pa.string()),
        pa.field("extra", pa.string()),
        *(pa.field(name, pa.int8()) for name in LLM_FIELDS),
    ]
)
"""The Parquet schema of the output (JSONL rows have the same keys; null fields are left out)."""

FIELDS = tuple(ARROW_SCHEMA.names)

ANSWER_KEYS = ("answers", "golden_answers", "answer")
ID_KEYS = ("id", "_id", "question_id")
# ``source``, ``source_row`` and ``layout`` are what l0_env.tasks.layouts records; the build's own
# provenance (the dataset name, the input as given) replaces them.
_CONSUMED = frozenset(
    {"question", "supporting_titles", "context", "answerable", "source", "source_row", "layout"}
    | {*ANSWER_KEYS, *ID_KEYS}
)


class MalformedRow(ValueError):
    """An input row that cannot become a task (no question, no answer, wrong types)."""


class UnanswerableRow(ValueError):
    """An input row its source marks as having no answer (MuSiQue-Full's ``answerable: false``)."""


def _plain(value: Any) -> Any:
    """Numpy/Arrow values (from Parquet or Hugging Face rows) as plain Python."""
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, (str, bytes)) else value


def _strings(value: Any, key: str) -> list[str]:
    value = _plain(value)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise MalformedRow(f"'{key}' must be a string or a list of strings, got {type(value).__name__}")
    out: list[str] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise MalformedRow(f"'{key}' holds a {type(item).__name__}; expected strings")
        if isinstance(item, float) and not math.isfinite(item):
            raise MalformedRow(f"'{key}' holds {item!r}; expected strings")
        text = str(item).strip()
        if text:
            out.append(text)
    return out


def _answers(row: Mapping[str, Any]) -> list[str]:
    key = next((k for k in ANSWER_KEYS if _plain(row.get(k)) not in (None, [], "")), None)
    if key is None:
        raise MalformedRow("no gold answer: expected 'answers' (list), 'golden_answers' (list) or 'answer'")
    value = _plain(row[key])
    # Empty aliases are dropped rather than fatal (some releases carry "" among the aliases); a
    # row left with no answer at all is malformed.
    answers = list(dict.fromkeys(_strings(value, key)))
    if not answers:
        raise MalformedRow(f"'{key}' holds no non-empty answer")
    return answers


def _context(value: Any) -> list[dict[str, str]] | None:
    """Paragraphs as ``{title, text}`` (what :mod:`l0_env.tasks.layouts` makes of every layout's)."""
    value = _plain(value)
    if value is None or value == []:
        return None
    if not isinstance(value, (list, tuple)):
        raise MalformedRow(f"'context' must be a list of paragraphs, got {type(value).__name__}")
    out: list[dict[str, str]] = []
    for i, para in enumerate(value):
        title = para.get("title") if isinstance(para, Mapping) else None
        text = para.get("text") if isinstance(para, Mapping) else None
        if not isinstance(title, str) or not isinstance(text, str):
            raise MalformedRow(f"context[{i}] must be an object with string 'title' and 'text'")
        out.append({"title": title, "text": text})
    return out or None


def _json_default(value: Any) -> Any:
    plain = _plain(value)
    if plain is not value:
        return plain
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def normalise_row(row: Any, *, source: str, source_file: str, source_row: int) -> dict[str, Any]:
    """Map one input row to the output schema (without ``id`` and ``answer_kind``: later stages set them).

    Args:
        row: A mapping in our schema or a layout :func:`l0_env.tasks.layouts.iter_rows` produces.
        source: The dataset name.
        source_file: Where the row came from.
        source_row: Its 0-based position in that input.

    Raises:
        MalformedRow: The row cannot become a task; the message says which field is wrong.
        UnanswerableRow: The source marks the row unanswerable.
    """
    if not isinstance(row, Mapping):
        raise MalformedRow(f"expected a JSON object, got {type(row).__name__}")
    if row.get("answerable") is False:
        raise UnanswerableRow("marked answerable: false by its source")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise MalformedRow("missing or empty 'question' (a non-empty string is required)")
    answers = _answers(row)
    titles = list(dict.fromkeys(_strings(row.get("supporting_titles"), "supporting_titles")))
    context = _context(row.get("context"))
    raw_id = next((_plain(row[k]) for k in ID_KEYS if _plain(row.get(k)) not in (None, "")), None)
    if raw_id is not None and not isinstance(raw_id, (str, int)):
        raise MalformedRow(f"'id' must be a string or an integer, got {type(raw_id).__name__}")
    rest = {k: v for k, v in row.items() if k not in _CONSUMED and v is not None}
    extra = json.dumps(rest, ensure_ascii=False, sort_keys=True, default=_json_default) if rest else None
    return {
        "question": question.strip(),
        "answers": answers,
        "supporting_titles": titles,
        "context": context,
        "source": source,
        "source_file": source_file,
        "source_id": None if raw_id is None else str(raw_id),
        "source_row": source_row,
        "extra": extra,
    }
