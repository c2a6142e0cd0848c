"""What each stage of a build kept and dropped, per source, with examples; Markdown and JSON.

Every stage sees the rows the previous one kept, so for each stage and source
``in == kept + sum(dropped.values())`` and a stage's ``in`` equals the previous stage's ``kept``
(:meth:`Report.check` asserts both; the tests rely on it). Examples of dropped rows are bounded:
the first ``max_examples`` per stage and reason, each with the row's location, question and
canonical answer, and what it was dropped for (the evaluation question it repeats, the LLM's
ratings, the error).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STAGE_TITLES", "Report", "StageCounts"]

STAGE_TITLES = {
    "read": "read and normalise the schema",
    "filter": "answer length and kind filters",
    "dedupe": "de-duplicate by normalised question",
    "decontaminate": "drop questions that overlap the evaluation sets",
    "quality": "LLM quality filter",
    "select": "--limit / --sample",
}

_TEXT_LIMIT = 300  # characters of a question or answer quoted in an example


def _clip(text: Any) -> Any:
    if isinstance(text, str) and len(text) > _TEXT_LIMIT:
        return text[:_TEXT_LIMIT] + "…"
    return text


@dataclass
class StageCounts:
    """One stage's tallies: rows kept per source, rows dropped per (source, reason), examples."""

    name: str
    kept: Counter[str] = field(default_factory=Counter)
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def sources(self) -> list[str]:
        return sorted(set(self.kept) | {s for s, _ in self.dropped})

    def per_source(self, source: str) -> dict[str, Any]:
        dropped = {r: n for (s, r), n in sorted(self.dropped.items()) if s == source}
        kept = self.kept[source]
        return {"in": kept + sum(dropped.values()), "kept": kept, "dropped": dropped}

    def totals(self) -> dict[str, Any]:
        dropped: Counter[str] = Counter()
        for (_, reason), n in self.dropped.items():
            dropped[reason] += n
        kept = sum(self.kept.values())
        return {"in": kept + sum(dropped.values()), "kept": kept, "dropped": dict(sorted(dropped.items()))}


class Report:
    """Tallies of a build, filled in as rows stream through the stages.

    Args:
        stages: The stage names in the order rows pass them (keys of :data:`STAGE_TITLES`).
        max_examples: Examples kept per stage and reason.
    """

    def __init__(self, stages: list[str], *, max_examples: int = 5) -> None:
        unknown = [s for s in stages if s not in STAGE_TITLES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}")
        self.stages = {name: StageCounts(name) for name in stages}
        self.max_examples = max_examples
        self.info: dict[str, Any] = {}

    def keep(self, stage: str, source: str, n: int = 1) -> None:
        """Count ``n`` rows of ``source`` kept by ``stage``."""
        self.stages[stage].kept[source] += n

    def drop(
        self, stage: str, source: str, reason: str, example: Mapping[str, Any] | None = None, n: int = 1
    ) -> None:
        """Count ``n`` rows dropped by ``stage`` for ``reason``; keep ``example`` if there is room."""
        counts = self.stages[stage]
        counts.dropped[(source, reason)] += n
        if example is not None:
            bucket = counts.examples.setdefault(reason, [])
            if len(bucket) < self.max_examples:
                bucket.append({k: _clip(v) for k, v in example.items()})

    def check(self) -> None:
        """Check the bookkeeping (RuntimeError if wrong): each stage's ``in`` per source equals the previous stage's kept."""
        previous: StageCounts | None = None
        for counts in self.stages.values():
            if previous is not None:
                for source in set(counts.sources()) | set(previous.sources()):
                    got, want = counts.per_source(source)["in"], previous.kept[source]
                    if got != want:
                        raise RuntimeError(
                            f"report: stage {counts.name!r} saw {got} rows of {source!r} but "
                            f"{previous.name!r} kept {want}"
                        )
            previous = counts

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        stages = []
        for counts in self.stages.values():
            stages.append(
                {
                    "stage": counts.name,
                    "title": STAGE_TITLES[counts.name],
                    **counts.totals(),
                    "per_source": {s: counts.per_source(s) for s in counts.sources()},
                    "examples": counts.examples,
                }
            )
        return {**self.info, "stages": stages}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n"

    def to_markdown(self) -> str:
        """A human-readable report: the summary table, one table per stage, examples of drops."""
        data = self.to_dict()
        lines = ["# Data build report", ""]
        for key in ("command", "output", "inputs", "excludes", "config", "quality", "timing"):
            if key in data:
                value = data[key]
                text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
                lines.append(f"- **{key}**: `{text}`")
        lines += [
            "",
            "## Summary",
            "",
            "| stage | in | kept | dropped | reasons |",
            "| --- | ---: | ---: | ---: | --- |",
        ]
        for stage in data["stages"]:
            reasons = ", ".join(f"{r}: {n:,}" for r, n in stage["dropped"].items()) or "-"
            dropped = sum(stage["dropped"].values())
            lines.append(
                f"| {stage['stage']} ({stage['title']}) | {stage['in']:,} | {stage['kept']:,} | {dropped:,} | {reasons} |"
            )
        for stage in data["stages"]:
            lines += ["", f"## {stage['stage']}: {stage['title']}", ""]
            lines += ["| source | in | kept | dropped | reasons |", "| --- | ---: | ---: | ---: | --- |"]
            for source, c in stage["per_source"].items():
                reasons = ", ".join(f"{r}: {n:,}" for r, n in c["dropped"].items()) or "-"
                lines.append(
                    f"| {source} | {c['in']:,} | {c['kept']:,} | {sum(c['dropped'].values()):,} | {reasons} |"
                )
            for reason, examples in stage["examples"].items():
                lines += ["", f"Examples dropped as `{reason}`:", ""]
                for ex in examples:
                    parts = [f"{k}: {json.dumps(v, ensure_ascii=False, default=str)}" for k, v in ex.items()]
                    lines.append("- " + "; ".join(parts))
        return "\n".join(lines) + "\n"
