"""The data pipeline: merge QA sets into one de-duplicated, decontaminated training file.

``python -m l0_env.data build --input FILE[:name] ... --exclude EVALFILE ... --out train.parquet``
(see :mod:`.cli`), or from Python::

    from l0_env.pipeline import BuildConfig, build, parse_input

    result = build(
        [parse_input("nq/train.jsonl:nq"), parse_input("triviaqa/train.jsonl:triviaqa")],
        "train.parquet",
        excludes=[parse_input("hotpotqa/dev.jsonl")],
        config=BuildConfig(sample=20_000, seed=0),
    )
    print(result.report.to_markdown())

One concept per module: :mod:`.readers` (inputs), :mod:`.schema` (the row schema),
:mod:`.questions` (question keys, shingles), :mod:`.filters`, :mod:`.dedupe`,
:mod:`.decontaminate`, :mod:`.quality` (LLM filter), :mod:`.report`, :mod:`.writers`,
:mod:`.build` (the stages wired together), :mod:`.cli`.
"""

from .build import BuildConfig, BuildResult, build, default_report_paths
from .decontaminate import DEFAULT_NEAR_THRESHOLD, EvalIndex, EvalMatch
from .dedupe import Deduper
from .filters import ANSWER_KINDS, AnswerFilter, classify_answer
from .quality import QualityCache, QualityFilter, QualityThresholds, parse_ratings
from .questions import question_key, shingles
from .readers import InputSpec, parse_input, rows_input
from .report import Report
from .schema import ARROW_SCHEMA, normalise_row

__all__ = [
    "ANSWER_KINDS",
    "ARROW_SCHEMA",
    "DEFAULT_NEAR_THRESHOLD",
    "AnswerFilter",
    "BuildConfig",
    "BuildResult",
    "Deduper",
    "EvalIndex",
    "EvalMatch",
    "InputSpec",
    "QualityCache",
    "QualityFilter",
    "QualityThresholds",
    "Report",
    "build",
    "classify_answer",
    "default_report_paths",
    "normalise_row",
    "parse_input",
    "parse_ratings",
    "question_key",
    "rows_input",
    "shingles",
]
