"""Which questions each stage uses: data specs with slices, and the check that stages are disjoint.

A *data spec* names a question set and, optionally, a slice of it, in one string::

    hotpotqa-dev            the bundled HotpotQA dev sample (1,245 questions, passages indexed)
    hotpotqa-dev[:300]      its first 300 questions
    hotpotqa-dev[300:]      the rest
    hotpotqa-train          the bundled train sample (100 questions)
    data/my_tasks.jsonl[100:200]   rows 100–199 of a JSONL/Parquet task file

Held-out evaluation is only meaningful when the questions a model was fitted on (demonstrations,
SFT) and the ones RL sampled are not the ones it is scored on, so the learner resolves every
stage's spec to question ids, writes them to the run directory and refuses overlapping stages
(:func:`check_disjoint`). Overlap is checked on ids *and* on normalised question text, since two
files can give the same question different ids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUNDLED = {"hotpotqa-dev": "dev", "hotpotqa-train": "train"}
_SLICE_RE = re.compile(r"^(?P<source>.+?)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: a bundled name or a file, and a Python-style slice of its rows."""

    source: str
    start: int | None = None
    stop: int | None = None

    @property
    def name(self) -> str:
        """A short label for tables: the bundled name or the file's stem, with the slice."""
        base = self.source if self.source in BUNDLED else Path(self.source).stem
        if self.start is None and self.stop is None:
            return base
        return f"{base}[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"

    @property
    def slug(self) -> str:
        """:attr:`name` as a file-name part without brackets or colons: ``hotpotqa-dev_0-300``,
        ``hotpotqa-dev_300-end``."""
        if self.start is None and self.stop is None:
            return self.name
        base = self.name.split("[", 1)[0]
        return f"{base}_{self.start or 0}-{'end' if self.stop is None else self.stop}"


def parse_data_spec(spec: str) -> DataSpec:
    """Parse ``name[start:stop]`` (the slice is optional).

    Raises:
        ValueError: On an empty spec, or a source that is neither a bundled name nor an existing
            file (the message lists the bundled names).
    """
    text = str(spec).strip()
    if not text:
        raise ValueError("empty data spec; use e.g. 'hotpotqa-dev[:300]' or a JSONL/Parquet path")
    start = stop = None
    m = _SLICE_RE.match(text)
    if m and (m["source"] in BUNDLED or not Path(text).exists()):
        text = m["source"]
        start = int(m["start"]) if m["start"] else None
        stop = int(m["stop"]) if m["stop"] else None
    if text not in BUNDLED and not Path(text).exists():
        raise ValueError(
            f"data spec {spec!r}: {text!r} is neither a bundled set ({', '.join(sorted(BUNDLED))}) "
            "nor an existing file"
        )
    return DataSpec(text, start, stop)


def load_task_dicts(spec: str | DataSpec, n: int | None = None) -> list[dict[str, Any]]:
    """The questions of a spec as task dicts (``id``, ``question``, ``answers``, ``supporting_titles``).

    Args:
        spec: A data spec string or a parsed :class:`DataSpec`.
        n: Keep only the first ``n`` after slicing (None or 0: all).
    """
    from l0_env.tasks import load_tasks

    parsed = spec if isinstance(spec, DataSpec) else parse_data_spec(spec)
    if parsed.source in BUNDLED:
        tasks = load_tasks(None, split=BUNDLED[parsed.source])
    else:
        tasks = load_tasks(parsed.source)
    rows = [
        {
            "id": str(t.id),
            "question": t.question,
            "answers": list(t.answers),
            "supporting_titles": list(t.supporting_titles),
        }
        for t in tasks
    ][parsed.start : parsed.stop]
    return rows[:n] if n else rows


def _question_key(question: str) -> str:
    return " ".join(question.lower().split())


def check_disjoint(stages: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Raise if two stages share a question (by id or by normalised question text).

    Args:
        stages: Stage name → its task dicts (each with ``id`` and ``question``).

    Raises:
        ValueError: Naming both stages, how many questions they share and a few examples.
    """
    names = list(stages)
    for i, a in enumerate(names):
        ids_a = {str(t["id"]) for t in stages[a]}
        text_a = {_question_key(t["question"]) for t in stages[a]}
        for b in names[i + 1 :]:
            shared = sorted(
                {
                    str(t["id"])
                    for t in stages[b]
                    if str(t["id"]) in ids_a or _question_key(t["question"]) in text_a
                }
            )
            if shared:
                raise ValueError(
                    f"the {a!r} and {b!r} questions overlap in {len(shared)} question(s) "
                    f"(e.g. {', '.join(shared[:3])}): a held-out score needs disjoint sets; "
                    "change the stages' data specs (e.g. hotpotqa-dev[:300] vs hotpotqa-dev[300:])"
                )


__all__ = ["BUNDLED", "DataSpec", "check_disjoint", "load_task_dicts", "parse_data_spec"]
