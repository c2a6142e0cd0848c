"""``python -m l0_env.data build``: the command line of the data pipeline.

Example (the shared QA files: train-like sources in, the evaluation sets excluded)::

    python -m l0_env.data build \\
        --input nq/test_1000.jsonl:nq --input triviaqa/test_1000.jsonl:triviaqa \\
        --input popqa/test_1000.jsonl:popqa --input hotpotqa/train_distractor_100.jsonl:hotpotqa_train \\
        --exclude hotpotqa/dev_distractor_500.jsonl --exclude musique/dev_answers_1000.jsonl \\
        --exclude bamboogle/test.jsonl --exclude simpleqa/test.jsonl \\
        --out train.parquet

Exit status: 0 on success, 2 for a bad option (argparse), 1 for bad input or an output in the
way (the message names the file and line, or the option to pass).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from .build import BuildConfig, build
from .decontaminate import DEFAULT_NEAR_THRESHOLD
from .filters import ANSWER_KINDS, AnswerFilter, parse_kinds
from .quality import QualityCache, QualityFilter, QualityThresholds
from .questions import DEFAULT_NGRAM
from .readers import parse_input
from .writers import output_format

__all__ = ["main", "make_parser"]


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds (a number > 0), got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds (a number > 0), got {text!r}")
    return value


def _output(text: str) -> Path:
    try:
        output_format(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return Path(text)


def _kinds(text: str) -> frozenset[str]:
    try:
        return parse_kinds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _rating(text: str) -> int:
    if text not in ("-1", "0", "1"):
        raise argparse.ArgumentTypeError(f"expected -1, 0 or 1, got {text!r}")
    return int(text)


def make_parser() -> argparse.ArgumentParser:
    """The argument parser (``build`` is the only command)."""
    return _parsers()[0]


def _parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The top-level parser and the ``build`` subparser (whose ``error`` names the command)."""
    parser = argparse.ArgumentParser(
        prog="python -m l0_env.data",
        description="Build training task files from QA datasets (see l0_env.pipeline).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    b = commands.add_parser(
        "build",
        help="merge QA sets into one de-duplicated, decontaminated task file (Parquet or JSONL)",
        description=(
            "Stages: read -> answer filters -> de-duplicate -> decontaminate -> [LLM quality] -> "
            "[--limit/--sample] -> write. A report (Markdown + JSON) says what each stage kept and "
            "dropped, per source."
        ),
    )
    io = b.add_argument_group("inputs and outputs")
    io.add_argument(
        "--input",
        "-i",
        action="append",
        required=True,
        metavar="SPEC",
        help="training data: FILE[:name] (JSONL, JSONL.gz or Parquet; name = the source recorded "
        "per row, default the file name) or hf:<dataset>[:config][:split]; repeat for several",
    )
    io.add_argument(
        "--exclude",
        "-x",
        action="append",
        default=[],
        metavar="SPEC",
        help="an evaluation set (same forms as --input): its questions, exact or near, are dropped",
    )
    io.add_argument(
        "--out", "-o", required=True, type=_output, help="the task file: .parquet, .jsonl or .jsonl.gz"
    )
    io.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="STEM",
        help="write the report to STEM.md and STEM.json (default: beside --out, <out>.report.*)",
    )
    io.add_argument(
        "--overwrite", action="store_true", help="replace the output and report files if they exist"
    )
    io.add_argument(
        "--on-bad-row",
        choices=("error", "skip"),
        default="error",
        help="a malformed input row stops the build (default) or is dropped and counted",
    )

    f = b.add_argument_group("answer filters (on the canonical answer, answers[0])")
    f.add_argument("--min-answer-chars", type=_non_negative, metavar="N")
    f.add_argument("--max-answer-chars", type=_non_negative, metavar="N")
    f.add_argument("--min-answer-words", type=_non_negative, metavar="N")
    f.add_argument("--max-answer-words", type=_non_negative, metavar="N")
    kinds = f.add_mutually_exclusive_group()
    kinds.add_argument(
        "--keep-kinds",
        type=_kinds,
        metavar="K,K",
        help=f"keep only these answer kinds ({', '.join(ANSWER_KINDS)})",
    )
    kinds.add_argument("--drop-kinds", type=_kinds, metavar="K,K", help="drop these answer kinds")

    d = b.add_argument_group("decontamination")
    d.add_argument(
        "--near-threshold",
        type=_threshold,
        default=DEFAULT_NEAR_THRESHOLD,
        metavar="J",
        help=f"word-n-gram Jaccard at which a question counts as a reworded evaluation question "
        f"(default {DEFAULT_NEAR_THRESHOLD})",
    )
    d.add_argument("--no-near", action="store_true", help="exact matches only")
    d.add_argument(
        "--ngram",
        type=_positive,
        default=DEFAULT_NGRAM,
        metavar="N",
        help=f"words per shingle (default {DEFAULT_NGRAM})",
    )

    s = b.add_argument_group("selection")
    pick = s.add_mutually_exclusive_group()
    pick.add_argument("--limit", type=_positive, metavar="N", help="keep the first N rows that pass")
    pick.add_argument("--sample", type=_positive, metavar="N", help="keep a uniform random N rows that pass")
    s.add_argument("--seed", type=int, default=0, help="seed for --sample (default 0)")

    q = b.add_argument_group("LLM quality filter (optional; any OpenAI-compatible server)")
    q.add_argument(
        "--llm-url", metavar="URL", help="API root, e.g. http://127.0.0.1:8000/v1 (turns the filter on)"
    )
    q.add_argument("--llm-model", metavar="NAME", help="the served model name")
    q.add_argument(
        "--llm-api-key-env",
        metavar="VAR",
        help="name of the environment variable holding the API key (never pass a key itself)",
    )
    q.add_argument(
        "--llm-concurrency", type=_positive, default=4, metavar="N", help="requests in flight (default 4)"
    )
    q.add_argument(
        "--llm-timeout", type=_seconds, default=60.0, metavar="S", help="seconds per attempt (default 60)"
    )
    q.add_argument(
        "--llm-retries", type=_non_negative, default=3, metavar="N", help="retries per request (default 3)"
    )
    q.add_argument(
        "--llm-cache",
        type=Path,
        metavar="FILE",
        help="ratings cache (JSONL; default <out>.llm-cache.jsonl beside the output)",
    )
    q.add_argument(
        "--llm-min-temporal-stability",
        type=_rating,
        default=1,
        metavar="R",
        help="lowest temporal-stability rating kept, -1/0/1 (default 1, as L0)",
    )
    q.add_argument(
        "--llm-min-objectivity",
        type=_rating,
        default=1,
        metavar="R",
        help="lowest objectivity rating kept (default 1, as L0)",
    )
    q.add_argument(
        "--llm-min-well-formed",
        type=_rating,
        default=1,
        metavar="R",
        help="lowest well-formedness rating kept (default 1)",
    )
    q.add_argument(
        "--llm-on-error",
        choices=("drop", "keep"),
        default="drop",
        help="rows the model could not rate: drop (default, as L0) or keep unrated",
    )

    o = b.add_argument_group("report and display")
    o.add_argument(
        "--max-examples",
        type=_non_negative,
        default=5,
        metavar="N",
        help="examples of dropped rows per stage and reason (default 5)",
    )
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser, b


def _quality_filter(args: argparse.Namespace, parser: argparse.ArgumentParser) -> QualityFilter:
    from ..llm_client import ChatClient

    api_key = None
    if args.llm_api_key_env:
        api_key = os.environ.get(args.llm_api_key_env)
        if not api_key:
            parser.error(f"--llm-api-key-env: the environment variable {args.llm_api_key_env} is not set")
    try:
        client = ChatClient(
            args.llm_url,
            args.llm_model,
            api_key=api_key,
            timeout=args.llm_timeout,
            retries=args.llm_retries,
            max_concurrency=args.llm_concurrency,
        )
    except ValueError as e:
        parser.error(f"--llm-url/--llm-model: {e}")
    name = args.out.name
    cache_path = args.llm_cache or args.out.with_name(name.split(".", 1)[0] + ".llm-cache.jsonl")
    return QualityFilter(
        client,
        thresholds=QualityThresholds(
            temporal_stability=args.llm_min_temporal_stability,
            objectivity=args.llm_min_objectivity,
            well_formed=args.llm_min_well_formed,
        ),
        cache=QualityCache(cache_path),
        on_error=args.llm_on_error,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser, build_parser = _parsers()
    args = parser.parse_args(argv)
    if (args.llm_url is None) != (args.llm_model is None):
        build_parser.error("--llm-url and --llm-model go together")
    for lo, hi in (("min_answer_chars", "max_answer_chars"), ("min_answer_words", "max_answer_words")):
        a, b = getattr(args, lo), getattr(args, hi)
        if a is not None and b is not None and a > b:
            build_parser.error(
                f"--{lo.replace('_', '-')} ({a}) is greater than --{hi.replace('_', '-')} ({b})"
            )
    try:
        inputs = [parse_input(s) for s in args.input]
        excludes = [parse_input(s) for s in args.exclude]
    except (ValueError, FileNotFoundError) as e:
        build_parser.error(str(e))
    config = BuildConfig(
        answer_filter=AnswerFilter(
            min_chars=args.min_answer_chars,
            max_chars=args.max_answer_chars,
            min_words=args.min_answer_words,
            max_words=args.max_answer_words,
            keep_kinds=args.keep_kinds,
            drop_kinds=args.drop_kinds or frozenset(),
        ),
        near_threshold=None if args.no_near else args.near_threshold,
        ngram=args.ngram,
        limit=args.limit,
        sample=args.sample,
        seed=args.seed,
        on_bad_row=args.on_bad_row,
        max_examples=args.max_examples,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    quality = _quality_filter(args, build_parser) if args.llm_url else None
    report_paths = None
    if args.report is not None:
        report_paths = (
            args.report.with_name(args.report.name + ".md"),
            args.report.with_name(args.report.name + ".json"),
        )
    command = "python -m l0_env.data " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    try:
        result = build(
            inputs,
            args.out,
            excludes=excludes,
            config=config,
            quality=quality,
            overwrite=args.overwrite,
            report_paths=report_paths,
            command=command,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"{build_parser.prog}: error: {e}", file=sys.stderr)
        return 1
    finally:
        if quality is not None:
            quality.client.close()
    for stage in result.report.to_dict()["stages"]:
        dropped = ", ".join(f"{r} {n:,}" for r, n in stage["dropped"].items()) or "nothing dropped"
        print(f"{stage['stage']:>13}: {stage['in']:>9,} in, {stage['kept']:>9,} kept ({dropped})")
    print(f"wrote {result.rows:,} rows to {result.out}")
    print(f"report: {result.report_paths[0]} and {result.report_paths[1]}")
    return 0
