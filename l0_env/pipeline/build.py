"""One build: inputs → read → filter → dedupe → decontaminate → [LLM quality] → [limit/sample] → file.

The stages, in the order rows pass them (each is its own module; this one only wires them):

1. **read** (:mod:`.readers`, :mod:`.schema`): every record of every input, in the order given,
   mapped to the output schema with its provenance. A malformed row stops the build with its
   file and line (``on_bad_row="skip"`` drops and counts it instead); rows their source marks
   unanswerable are dropped.
2. **filter** (:mod:`.filters`): canonical-answer length and kind.
3. **dedupe** (:mod:`.dedupe`): first occurrence of each normalised question wins.
4. **decontaminate** (:mod:`.decontaminate`): drop questions that repeat an evaluation question,
   exactly or nearly.
5. **quality** (:mod:`.quality`, optional): the LLM filter.
6. **select** (optional): ``limit`` keeps the first N rows, ``sample`` a uniform random N
   (``seed``); with the LLM filter, rows are rated in that order until N pass, so a 20K sample
   does not pay for rating 1M rows.

Stages 1-4 stream: only hashes (dedupe) and the evaluation index are held, and the rows that
pass go straight to the output writer (``limit`` alone just stops writing after N). With
``sample`` or the LLM filter they go to a temporary spill file instead (plus 12 bytes of
bookkeeping per row in memory, 15 with the LLM filter) and are read back from it. The output
keeps source order (inputs as given, rows in file order), sampled or not.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..env_args import check_int
from ..tasks.layouts import LayoutError
from .decontaminate import DEFAULT_NEAR_THRESHOLD, EvalIndex
from .dedupe import Deduper
from .filters import AnswerFilter, classify_answer
from .quality import CRITERIA, QualityFilter
from .questions import DEFAULT_NGRAM, key_hash, question_key
from .readers import InputSpec, RecordReader
from .report import Report
from .schema import LLM_FIELDS, MalformedRow, UnanswerableRow, normalise_row
from .writers import Spill, TaskWriter, atomic_write_text, output_format

__all__ = ["BuildConfig", "BuildResult", "build", "default_report_paths"]


@dataclass(frozen=True)
class BuildConfig:
    """Everything a build decides, besides its inputs and outputs.

    Attributes:
        answer_filter: Canonical-answer length and kind rules (default: keep all).
        near_threshold: Jaccard at or above which a training question is a near-duplicate of an
            evaluation question; None: exact matches only.
        ngram: Words per shingle for the near-duplicate check.
        limit: Keep the first N rows that pass every other stage.
        sample: Keep a uniform random N of them (with ``seed``); exclusive with ``limit``.
        seed: Seed for ``sample``.
        on_bad_row: ``"error"`` (stop, naming file and line) or ``"skip"`` (drop and count).
        max_examples: Examples of dropped rows kept per stage and reason in the report.
        progress: Show tqdm progress bars (on stderr).
        batch_rows: Rows per Parquet row group.
    """

    answer_filter: AnswerFilter = field(default_factory=AnswerFilter)
    near_threshold: float | None = DEFAULT_NEAR_THRESHOLD
    ngram: int = DEFAULT_NGRAM
    limit: int | None = None
    sample: int | None = None
    seed: int = 0
    on_bad_row: str = "error"
    max_examples: int = 5
    progress: bool = False
    batch_rows: int = 8192

    def __post_init__(self) -> None:
        if self.limit is not None and self.sample is not None:
            raise ValueError("give limit or sample, not both")
        for name in ("limit", "sample"):
            value = getattr(self, name)
            if value is not None:
                check_int(name, value, 1)
        if self.on_bad_row not in ("error", "skip"):
            raise ValueError(f"on_bad_row must be 'error' or 'skip', got {self.on_bad_row!r}")
        if (
            isinstance(self.max_examples, bool)
            or not isinstance(self.max_examples, int)
            or self.max_examples < 0
        ):
            raise ValueError(f"max_examples must be a non-negative integer, got {self.max_examples!r}")
        EvalIndex(threshold=self.near_threshold, ngram=self.ngram)  # validates both

    @property
    def target(self) -> int | None:
        return self.limit if self.limit is not None else self.sample


@dataclass(frozen=True)
class BuildResult:
    """What a build produced.

    Attributes:
        out: The task file.
        rows: Rows written.
        report: The stage-by-stage report (also written as Markdown and JSON).
        report_paths: Where the report was written.
    """

    out: Path
    rows: int
    report: Report
    report_paths: tuple[Path, Path]


def default_report_paths(out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``train.parquet`` → ``train.report.md``, ``train.report.json`` (beside the output)."""
    path = Path(out)
    stem = path.name[: -len(output_format(path)) - 1]
    return path.with_name(f"{stem}.report.md"), path.with_name(f"{stem}.report.json")


def _progress(items: Any, *, enabled: bool, desc: str, total: int | None = None) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, unit=" rows", mininterval=1.0, file=sys.stderr)


def _example(record: dict[str, Any], where: str, **more: Any) -> dict[str, Any]:
    return {"at": where, "question": record["question"], "answer": record["answers"][0], **more}


def _eval_questions(reader: RecordReader, on_bad_row: str, skipped: list[str]) -> Iterator[str]:
    for _, _, row in reader:
        if isinstance(row, LayoutError):
            if on_bad_row == "error":
                raise row
            skipped.append(str(row))
            continue
        yield row["question"]


class _Ids:
    """Unique output ids, remembered as 64-bit hashes."""

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def assign(self, record: dict[str, Any]) -> str:
        base = f"{record['source']}:" + (
            record["source_id"] if record["source_id"] is not None else f"row{record['source_row']}"
        )
        candidate, n = base, 0
        while key_hash(candidate) in self._seen:  # a source that repeats an id (another question)
            n += 1
            candidate = f"{base}#{n}"
        self._seen.add(key_hash(candidate))
        return candidate


def _check_outputs(paths: Sequence[Path], overwrite: bool) -> None:
    for path in paths:
        if not path.parent.is_dir():
            raise FileNotFoundError(f"{path}: the directory {path.parent} does not exist")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")


def build(
    inputs: Sequence[InputSpec],
    out: str | os.PathLike[str],
    *,
    excludes: Sequence[InputSpec] = (),
    config: BuildConfig | None = None,
    quality: QualityFilter | None = None,
    overwrite: bool = False,
    report_paths: tuple[Path, Path] | None = None,
    command: str | None = None,
) -> BuildResult:
    """Merge ``inputs`` into one task file at ``out`` (see the module docstring for the stages).

    Args:
        inputs: The training inputs (:func:`.readers.parse_input`, :func:`.readers.rows_input`).
        out: The task file: ``.parquet``, ``.jsonl`` or ``.jsonl.gz``.
        excludes: Evaluation sets whose questions must not appear in the output.
        config: The stages' settings.
        quality: The LLM filter, or None to skip it.
        overwrite: Replace ``out`` and the report files if they exist.
        report_paths: Markdown and JSON report paths (default: beside ``out``).
        command: The command line, recorded in the report.

    Returns:
        The output path, its row count and the report.

    Raises:
        ValueError: Bad input (the message names the file and line) or settings.
        FileExistsError: An output exists and ``overwrite`` is False.
        FileNotFoundError: An input, or the output's directory, does not exist.
    """
    config = config or BuildConfig()
    out = Path(out)
    output_format(out)
    md_path, json_path = report_paths or default_report_paths(out)
    _check_outputs([out, md_path, json_path], overwrite)
    if not inputs:
        raise ValueError("no inputs: give at least one --input")
    names = [spec.name for spec in inputs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"two inputs share the source name(s) {repeated}; name them FILE:name")

    started = time.perf_counter()
    stages = ["read", "filter", "dedupe", "decontaminate"]
    if quality is not None:
        stages.append("quality")
    if config.target is not None:
        stages.append("select")
    report = Report(stages, max_examples=config.max_examples)
    report.info.update(
        {
            "command": command,
            "output": str(out),
            "inputs": [{"name": s.name, "origin": s.origin} for s in inputs],
            "config": {
                **{k: v for k, v in asdict(config).items() if k not in ("answer_filter", "progress")},
                "answer_filter": {
                    k: (sorted(v) if isinstance(v, frozenset) else v)
                    for k, v in asdict(config.answer_filter).items()
                },
            },
        }
    )

    index = EvalIndex(threshold=config.near_threshold, ngram=config.ngram)
    excluded = []
    for spec in excludes:
        before = len(index)
        skipped: list[str] = []
        reader = RecordReader(spec, questions_only=True)
        index.add_all((q, spec.name) for q in _eval_questions(reader, config.on_bad_row, skipped))
        entry: dict[str, Any] = {
            "name": spec.name,
            "origin": spec.origin,
            "layout": reader.layout,
            "questions": len(index) - before,
        }
        if skipped:
            entry["skipped_rows"] = len(skipped)
            entry["skipped_examples"] = skipped[: config.max_examples]
        excluded.append(entry)
    report.info["excludes"] = excluded

    deferred = quality is not None or config.sample is not None
    with contextlib.ExitStack() as stack:
        if quality is not None and quality.cache is not None:
            stack.callback(quality.cache.close)  # flushed ratings survive a failed build
        writer = stack.enter_context(TaskWriter(out, batch_rows=config.batch_rows))
        spill = stack.enter_context(Spill(out.parent)) if deferred else None
        written: Counter[str] = Counter()
        contamination: Counter[str] = Counter()
        source_ids = {spec.name: i for i, spec in enumerate(inputs)}
        source_of_spill = array("i")  # the input each spilled row came from (4 bytes a row)

        def emit(record: dict[str, Any]) -> None:
            if spill is not None:
                spill.append(record)
                source_of_spill.append(source_ids[record["source"]])
            elif config.limit is not None and writer.rows_written >= config.limit:
                report.drop("select", record["source"], "over_limit")
            else:
                if config.limit is not None:
                    report.keep("select", record["source"])
                writer.write(record)
                written[record["source"]] += 1

        layouts_seen = _stream(inputs, config, report, index, contamination, emit)
        for entry in report.info["inputs"]:
            entry["layout"] = layouts_seen.get(entry["name"])
        report.info["decontamination_matches"] = dict(sorted(contamination.items()))

        if spill is not None:
            sources = np.frombuffer(source_of_spill, dtype=np.int32)
            chosen, ratings = _select(spill, sources, inputs, config, quality, report)
            for i in _progress(chosen, enabled=config.progress, desc="write", total=len(chosen)):
                row = spill.get(int(i))
                if ratings is not None and ratings[i, 0] != _UNRATED:
                    row.update({f: int(ratings[i, j]) for j, f in enumerate(LLM_FIELDS)})
                writer.write(row)
                written[row["source"]] += 1
        rows = writer.rows_written
        writer.commit()

    if quality is not None:
        report.info["quality"] = {
            "model": getattr(quality.client, "model", None),
            "thresholds": asdict(quality.thresholds),
            "on_error": quality.on_error,
            **asdict(quality.stats),
        }
        if quality.cache is not None:
            report.info["quality"]["cache"] = str(quality.cache.path)
    seconds = time.perf_counter() - started
    report_rows_in = report.stages["read"].totals()["in"]
    report.info["output"] = {"path": str(out), "rows": rows, "per_source": dict(sorted(written.items()))}
    report.info["timing"] = {
        "seconds": round(seconds, 2),
        "input_rows_per_s": round(report_rows_in / seconds) if seconds > 0 else None,
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    report.check()
    atomic_write_text(md_path, report.to_markdown())
    atomic_write_text(json_path, report.to_json())
    return BuildResult(out, rows, report, (md_path, json_path))


def _stream(
    inputs: Sequence[InputSpec],
    config: BuildConfig,
    report: Report,
    index: EvalIndex,
    contamination: Counter[str],
    emit: Any,
) -> dict[str, str | None]:
    """Stages 1-4 over every input, row by row; ``emit`` receives the rows that pass.

    Returns the layout detected for each input.
    """
    answer_filter = config.answer_filter
    filtering = answer_filter.active
    checking = len(index) > 0
    deduper = Deduper()
    ids = _Ids()
    detected: dict[str, str | None] = {}
    for spec in inputs:
        source = spec.name
        reader = RecordReader(spec)
        records = _progress(reader, enabled=config.progress, desc=f"read {source}")
        for position, where, raw in records:
            if isinstance(raw, LayoutError):
                if config.on_bad_row == "error":
                    raise raw
                report.drop("read", source, "malformed", {"at": where, "error": str(raw)})
                continue
            try:
                record = normalise_row(raw, source=source, source_file=spec.origin, source_row=position)
            except UnanswerableRow:
                report.drop("read", source, "unanswerable", {"at": where})
                continue
            except MalformedRow as e:
                if config.on_bad_row == "error":
                    raise ValueError(f"{where}: {e}") from None
                report.drop("read", source, "malformed", {"at": where, "error": str(e)})
                continue
            report.keep("read", source)
            answer = record["answers"][0]
            kind = classify_answer(answer)
            record["answer_kind"] = kind
            if filtering:
                reason = answer_filter.reason(answer, kind)
                if reason is not None:
                    report.drop("filter", source, reason, _example(record, where, kind=kind))
                    continue
            report.keep("filter", source)
            key = question_key(record["question"])
            digest = key_hash(key)
            reason = deduper.check(digest, record["answers"])
            if reason is not None:
                report.drop("dedupe", source, reason, _example(record, where))
                continue
            report.keep("dedupe", source)
            if checking:
                match = index.match(record["question"], key=key, digest=digest)
                if match is not None:
                    contamination[match.source] += 1
                    report.drop(
                        "decontaminate",
                        source,
                        f"eval_{match.kind}",
                        _example(
                            record,
                            where,
                            eval_source=match.source,
                            eval_question=match.question,
                            similarity=match.similarity,
                        ),
                    )
                    continue
            report.keep("decontaminate", source)
            record["id"] = ids.assign(record)
            emit(record)
        detected[source] = reader.layout
    return detected


_UNRATED = -128


def _select(
    spill: Spill,
    sources: np.ndarray,
    inputs: Sequence[InputSpec],
    config: BuildConfig,
    quality: QualityFilter | None,
    report: Report,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Stages 5-6 over the spilled rows; return the row numbers to write (sorted) and the ratings."""
    total = len(spill)
    names = [spec.name for spec in inputs]
    target = config.target

    def count(stage: str, idx: np.ndarray, reason: str | None) -> None:
        for src, n in enumerate(np.bincount(sources[idx], minlength=len(names))):
            if n:
                if reason is None:
                    report.keep(stage, names[src], int(n))
                else:
                    report.drop(stage, names[src], reason, n=int(n))

    if config.sample is not None:
        order = np.random.default_rng(config.seed).permutation(total)
    else:
        order = np.arange(total)

    if quality is None:  # sample alone (limit alone never spills)
        assert target is not None
        chosen = np.sort(order[:target])
        count("select", chosen, None)
        count("select", order[target:], "not_sampled")
        return chosen, None

    ratings = np.full((total, len(CRITERIA)), _UNRATED, dtype=np.int8)
    passed: list[int] = []
    chunk = max(16, 8 * int(getattr(quality.client, "max_concurrency", 4)))
    bar = (
        _progress(None, enabled=config.progress, desc="LLM quality", total=total) if config.progress else None
    )
    start = 0
    while start < total and (target is None or len(passed) < target):
        idx = order[start : start + chunk]
        start += len(idx)
        rows = [spill.get(int(i)) for i in idx]
        for i, row, verdict in zip(idx, rows, quality.assess(rows), strict=True):
            if verdict.ratings is not None:
                ratings[i] = [verdict.ratings[c] for c in CRITERIA]
            source = row["source"]
            if quality.keeps(verdict):
                report.keep("quality", source)
                passed.append(int(i))
            else:
                reason = "llm_error" if verdict.ratings is None else "llm_rejected"
                more = {"error": verdict.error} if verdict.error else dict(verdict.ratings or {})
                report.drop(
                    "quality",
                    source,
                    reason,
                    _example(row, f"{row['source_file']} row {row['source_row']}", **more),
                )
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    if start < total:
        # The target was reached: the rest were never rated (and cost nothing).
        count("quality", order[start:], "not_assessed")
    if target is None:
        return np.sort(np.asarray(passed, dtype=np.int64)), ratings
    kept = np.asarray(passed[:target], dtype=np.int64)
    extra = np.asarray(passed[target:], dtype=np.int64)
    count("select", kept, None)
    count("select", extra, "not_selected")
    return np.sort(kept), ratings
