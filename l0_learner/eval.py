"""Evaluation: the QA suite. EM / F1 / LJ / has-answer per dataset with 95% intervals, per-question
predictions, paired comparisons.

Each question is one episode in the notebook env (the agent searches, reads, submits); EM and F1
are the env's own (SQuAD/HotpotQA normalisation, best over gold aliases), or L0's training
normalisation with ``--normalization l0`` (:mod:`l0_env.answers`). With ``--samples k`` every
question is played ``k`` times (sampling) and its scores are the means over the samples, as L0
reports them (``--protocol l0``: top-p 0.9, 3 samples, 10 steps). Command line::

    python -m l0_learner.eval --model smollm2 --data hotpotqa-dev[:300]
    python -m l0_learner.eval --model runs/x/final --qa-dir /data/qa --corpus pooled \\
        --data hotpotqa[:100] musique-train[:100]
    python -m l0_learner.eval --model runs/x/final --qa-dir /data/qa --search http://127.0.0.1:8000 \\
        --data bamboogle simpleqa[:500] nq triviaqa popqa 2wiki musique \\
        --judge-url http://127.0.0.1:8001/v1 --judge-model Qwen/Qwen2.5-7B-Instruct
    python -m l0_learner.eval --model runs/x/final --data hotpotqa-dev[:300] \\
        --compare-to eval_results/predictions-hotpotqa-dev_0-300.jsonl

``--data`` takes data specs (:mod:`l0_learner.data`): the bundled ``hotpotqa-dev`` /
``hotpotqa-train``; the named QA sets ``hotpotqa``, ``musique``, ``musique-train``, ``bamboogle``,
``simpleqa``, ``nq``, ``triviaqa``, ``popqa``, ``2wiki``, found in the QA data directory
(``--qa-dir``, default ``$L0_QA_DIR``; ``hotpotqa`` falls back to the bundled sample); or any task
file in a layout :mod:`l0_env.tasks.layouts` reads; each with an optional ``[start:stop]`` slice.

**Search.** Datasets without their own passages need a retrieval backend. ``--corpus pooled``
pools the context paragraphs of the QA directory's HotpotQA and MuSiQue files into one passage
file (built once under ``--cache-dir``, default ``<output-dir>/corpus``) that the embedded BM25
indexes: the offline suite for ``hotpotqa``/``hotpotqa-dev``/``musique-train``, whose gold
paragraphs it holds (the table's ``gold in corpus`` column says so per dataset). ``--corpus FILE``
indexes any ``{"id","title","text"}`` / ``{"id","contents"}`` file; ``--search URL`` sends every
query to a Search-R1 retrieval server (``/retrieve``, e.g. e5 + faiss over a Wikipedia dump) or
to ``python -m l0_env.tools.search_server``; that is how the other datasets are meant to run.

**LJ.** With ``--judge-url`` and ``--judge-model`` every submitted answer is graded by
:class:`l0_env.judge.LLMJudge` (SimpleQA's grader template through an OpenAI-compatible server;
bearer token from ``$L0_JUDGE_API_KEY`` if set; verdicts cached in ``<output-dir>/judge-cache.jsonl``).
LJ is L0's: correct / graded, failed gradings left out (their count is reported).

**Output** (``--output-dir``): ``results.json`` (the arguments, the resolved configuration: files,
corpus, judge, load, and one row per dataset with every metric and its 95% interval),
``results.md`` (the table) and ``predictions-<dataset>.jsonl`` (the slice written
``_start-stop``; one row per question: id, question, answers, the submitted answer of every sample,
EM, F1, has-answer, LJ and verdicts, steps, tool calls). Intervals: Wilson for per-question rates
(EM, has-answer, LJ; a mean over samples counts as a fractional success), a bootstrap over
questions for means and per-step rates (F1, well-formed steps, steps and tool calls per episode).
With ``--compare-to`` an earlier predictions file is paired with this run by question id and the
difference is tested (McNemar on EM, bootstrap intervals on EM and F1; :mod:`l0_learner.stats`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from l0_env.answers import Normalization, exact_match, f1_score, has_answer
from l0_env.recording import atomic_write_text

from .data import DataSpec, load_task_dicts, parse_data_spec, pooled_corpus_files, write_pooled_corpus
from .rollout import Episode, Job, run_episodes
from .stats import PairedComparison, bootstrap_ratio_interval, compare_paired, wilson_interval

JUDGE_API_KEY_ENV = "L0_JUDGE_API_KEY"
"""Environment variable holding the judge server's bearer token (never a flag: flags are logged)."""
_RESAMPLES = 2000  # bootstrap resamples per interval: ±0.5-point stable on a few hundred questions


def load_eval_tasks(
    data: str | DataSpec, n: int | None = None, *, qa_dir: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """The first ``n`` questions of a data spec as task dicts (see :mod:`l0_learner.data`)."""
    spec = data if isinstance(data, DataSpec) else parse_data_spec(data, qa_dir=qa_dir)
    return load_task_dicts(spec, n)


def question_scores(
    episodes: Sequence[Episode], *, normalization: Normalization = "squad"
) -> list[dict[str, Any]]:
    """One row per question (episodes grouped by ``job.group``), scores averaged over samples.

    Args:
        episodes: Finished episodes.
        normalization: ``"squad"`` keeps the env's scores (SQuAD/HotpotQA rules; numeric tasks
            by number); ``"l0"`` rescores every submitted answer with L0's training normalisation
            (:mod:`l0_env.answers`), numeric tasks included, as L0's reward would.

    Returns:
        Rows in first-seen order with ``id``, ``question``, ``answers``, ``predictions`` (the
        submitted answer of each sample, None where none was submitted), ``em``, ``f1``,
        ``has_answer``, ``steps`` and ``tool_calls`` (means over the samples), ``well_formed``
        (the fraction of the question's steps with format reward 1), ``code_errors`` (the
        fraction whose cell failed), ``step_count`` (steps over all samples) and ``samples``.
    """
    groups: dict[int, list[Episode]] = {}
    for ep in episodes:
        groups.setdefault(ep.job.group, []).append(ep)
    rows = []
    for eps in groups.values():
        task = eps[0].task
        golds = list(task.get("answers", []))
        if normalization == "l0":
            em = [exact_match(ep.answer, golds, normalization="l0") for ep in eps]
            f1 = [f1_score(ep.answer, golds, normalization="l0") for ep in eps]
            has = [has_answer(ep.answer, normalization="l0") for ep in eps]
        else:
            em = [ep.em for ep in eps]
            f1 = [float(ep.final.get("f1") or 0.0) for ep in eps]
            has = [float(ep.final.get("has_answer") or 0.0) for ep in eps]
        steps = [s for ep in eps for s in ep.steps]
        rows.append(
            {
                "id": str(task.get("id", eps[0].job.group)),
                "question": task.get("question"),
                "answers": golds,
                "predictions": [ep.answer for ep in eps],
                "em": float(np.mean(em)),
                "f1": float(np.mean(f1)),
                "has_answer": float(np.mean(has)),
                "steps": float(np.mean([len(ep.steps) for ep in eps])),
                "tool_calls": float(np.mean([_tool_calls(ep) for ep in eps])),
                "well_formed": float(np.mean([float(s.components.get("format") or 0.0) for s in steps]))
                if steps
                else 0.0,
                "code_errors": float(np.mean([s.cell_status not in (None, "ok") for s in steps]))
                if steps
                else 0.0,
                "step_count": len(steps),
                "samples": len(eps),
            }
        )
    return rows


def _tool_calls(ep: Episode) -> int:
    """Tool calls the env counted in an episode (every tool, submit_final_answer included)."""
    counts = ep.metrics.get("tool_calls") or {}
    return int(sum(counts.values())) if isinstance(counts, Mapping) else 0


def judge_questions(rows: Sequence[dict[str, Any]], judge: Any) -> dict[str, int]:
    """Grade every sample's submitted answer with an LLM judge; adds ``lj`` and ``verdicts`` to rows.

    Args:
        rows: :func:`question_scores` rows (changed in place).
        judge: An object with ``grade_many(items) -> list[Verdict]`` taking ``(question, gold
            answers, prediction)`` tuples (:class:`l0_env.judge.LLMJudge`); a verdict has
            ``grade`` (``"correct"``, ``"incorrect"``, ``"not_attempted"`` or None when the judge
            gave no usable answer) and ``score``.

    Returns:
        Counts per grade over all samples (``failed`` for None). A row's ``lj`` is the mean
        score over its graded samples (L0's LJ: failed gradings leave the denominator), or None
        when none was graded.
    """
    items = [(r["question"], list(r["answers"]), p) for r in rows for p in r["predictions"]]
    verdicts = list(judge.grade_many(items)) if items else []
    if len(verdicts) != len(items):
        raise RuntimeError(f"the judge returned {len(verdicts)} verdicts for {len(items)} answers")
    counts = {"correct": 0, "incorrect": 0, "not_attempted": 0, "failed": 0}
    at = 0
    for row in rows:
        mine = verdicts[at : at + len(row["predictions"])]
        at += len(row["predictions"])
        graded = [float(v.score) for v in mine if v.grade is not None]
        row["lj"] = float(np.mean(graded)) if graded else None
        row["verdicts"] = [v.grade for v in mine]
        for v in mine:
            counts["failed" if v.grade is None else str(v.grade)] += 1
    return counts


def summarize(
    episodes: Sequence[Episode],
    *,
    rows: Sequence[Mapping[str, Any]] | None = None,
    normalization: Normalization = "squad",
) -> dict[str, Any]:
    """Per-dataset scores: means over questions with 95% intervals.

    Keys: ``n`` (questions), ``samples``; ``em``, ``has_answer`` and (when the rows carry LJ)
    ``lj`` with Wilson intervals (exact for one sample per question; with several, the
    per-question means count as fractional successes); ``f1``, ``well_formed_rate`` (of all
    steps), ``code_error_rate``, ``steps_per_episode`` and ``tool_calls`` (per episode) with
    bootstrap intervals over questions (each question resampled with all its steps). Every
    interval is ``<key>_low`` / ``<key>_high``. ``lj_n``: questions with a graded answer.

    Args:
        episodes: The finished episodes.
        rows: Their :func:`question_scores` rows, when already computed (e.g. with LJ added).
        normalization: For computing the rows when not given.
    """
    if not episodes:
        return {"n": 0}
    rows = list(rows) if rows is not None else question_scores(episodes, normalization=normalization)
    n = len(rows)
    samples = np.array([r["samples"] for r in rows], dtype=float)
    out: dict[str, Any] = {"n": n, "samples": len(episodes) // n if n else 0}

    def rate(key: str, values: Sequence[float]) -> None:
        arr = np.asarray(values, dtype=float)
        lo, hi = wilson_interval(float(arr.sum()), len(arr))
        out.update({key: float(arr.mean()), f"{key}_low": lo, f"{key}_high": hi})

    def ratio(key: str, num: np.ndarray, den: np.ndarray) -> None:
        keep = den > 0
        if not keep.any():
            out.update({key: 0.0, f"{key}_low": 0.0, f"{key}_high": 0.0})
            return
        lo, hi = bootstrap_ratio_interval(num[keep], den[keep], resamples=_RESAMPLES)
        out.update({key: float(num[keep].sum() / den[keep].sum()), f"{key}_low": lo, f"{key}_high": hi})

    rate("em", [r["em"] for r in rows])
    ratio("f1", np.array([r["f1"] for r in rows]), np.ones(n))
    rate("has_answer", [r["has_answer"] for r in rows])
    step_count = np.array([r["step_count"] for r in rows], dtype=float)
    ratio("well_formed_rate", np.array([r["well_formed"] for r in rows]) * step_count, step_count)
    ratio("code_error_rate", np.array([r["code_errors"] for r in rows]) * step_count, step_count)
    ratio("steps_per_episode", np.array([r["steps"] for r in rows]) * samples, samples)
    ratio("tool_calls", np.array([r["tool_calls"] for r in rows]) * samples, samples)
    judged = [float(r["lj"]) for r in rows if r.get("lj") is not None]
    if any("lj" in r for r in rows):
        out["lj_n"] = len(judged)
        if judged:
            rate("lj", judged)
        else:
            out["lj"] = None
    return out


def evaluate(
    backend: Any,
    tasks: Sequence[dict[str, Any]],
    *,
    max_steps: int = 3,
    samples: int = 1,
    sandbox: str = "auto",
    num_envs: int = 8,
    cell_timeout: float = 10.0,
    max_context_tokens: int = 3072,
    count_tokens: Any = None,
    seed: int = 0,
    progress: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[Episode]]:
    """Play every task ``samples`` times with ``backend``; returns the summary and the episodes.

    Args:
        backend: A generation backend (``generate(conversations) -> list[Generation]``).
        tasks: Task dicts (``question``, ``answers``, optional ``id``).
        max_steps: Steps per episode.
        samples: Episodes per question (their scores are averaged); > 1 needs a sampling backend.
        env_kwargs: ``L0Notebook-v0`` settings (``corpus``, ``search``, ``reward_weights``, …;
            e.g. :func:`l0_learner.envs.notebook_env_kwargs`); they take precedence over the
            keyword arguments above, the tasks excepted.
    """
    from .envs import make_vector_env

    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not tasks:
        raise ValueError("no tasks to evaluate")
    slots = min(num_envs, len(tasks) * samples)
    settings: dict[str, Any] = {
        "sandbox": sandbox,
        "max_steps": max_steps,
        "cell_timeout": cell_timeout,
        "max_context_tokens": max_context_tokens,
        "count_tokens": count_tokens,
        **dict(env_kwargs or {}),
        "tasks": list(tasks),
    }
    venv = make_vector_env(slots, env="notebook", **settings)
    try:
        jobs = [
            Job(task_index=i, seed=seed + s * len(tasks) + i, group=i)
            for i in range(len(tasks))
            for s in range(samples)
        ]
        episodes, _ = run_episodes(backend, venv, jobs, num_envs=slots, progress=progress)
    finally:
        venv.close()
    return summarize(episodes), episodes


def markdown_table(rows: Sequence[dict[str, Any]], label: str = "dataset") -> str:
    """Rows of summaries as a Markdown table (rates in %, 95% intervals in brackets)."""
    head = f"| {label} | n | well-formed steps | code errors | EM [95% CI] | F1 [95% CI] | has answer | steps/ep |"
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def interval(r: dict[str, Any], key: str) -> str:
        if f"{key}_low" not in r:
            return f"{100 * r[key]:.1f}"
        return f"{100 * r[key]:.1f} [{100 * r[f'{key}_low']:.1f}, {100 * r[f'{key}_high']:.1f}]"

    for r in rows:
        lines.append(
            f"| {r[label]} | {r['n']} | {100 * r['well_formed_rate']:.0f}% | {100 * r['code_error_rate']:.0f}% | "
            f"{interval(r, 'em')} | {interval(r, 'f1')} | {100 * r['has_answer']:.0f}% | {r['steps_per_episode']:.2f} |"
        )
    return "\n".join(lines)


def suite_table(rows: Sequence[dict[str, Any]], label: str = "dataset") -> str:
    """The suite's per-dataset table in Markdown: every metric with its 95% interval (rates in %)."""

    def cell(r: Mapping[str, Any], key: str, scale: float = 100.0, digits: int = 1) -> str:
        if r.get(key) is None:
            return "–"
        text = f"{scale * r[key]:.{digits}f}"
        if f"{key}_low" in r:
            text += f" [{scale * r[f'{key}_low']:.{digits}f}, {scale * r[f'{key}_high']:.{digits}f}]"
        return text

    head = (
        f"| {label} | n | EM | F1 | LJ | has answer | well-formed steps | steps/episode | tool calls/episode "
        "| gold in corpus |"
    )
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        gold = r.get("gold_in_corpus")
        lines.append(
            f"| {r[label]} | {r['n']} | {cell(r, 'em')} | {cell(r, 'f1')} | {cell(r, 'lj')} | "
            f"{cell(r, 'has_answer')} | {cell(r, 'well_formed_rate')} | {cell(r, 'steps_per_episode', 1, 2)} | "
            f"{cell(r, 'tool_calls', 1, 2)} | {'–' if gold is None else f'{100 * gold:.0f}%'} |"
        )
    return "\n".join(lines)


def write_predictions(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Per-question rows as JSONL, written atomically."""
    atomic_write_text(Path(path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """Rows written by :func:`write_predictions`.

    Raises:
        ValueError: Naming the file and line of a row that is not JSON or lacks id/em/f1.
    """
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not {"id", "em", "f1"} <= set(row):
            raise ValueError(f"{path}:{number}: a predictions row needs 'id', 'em' and 'f1'")
        rows.append(row)
    return rows


def compare_predictions(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]], *, seed: int = 0
) -> PairedComparison:
    """Pair two runs' per-question rows by id and test the difference.

    Raises:
        ValueError: If the runs share no question id.
    """
    by_id = {str(r["id"]): r for r in before}
    pairs = [(by_id[str(r["id"])], r) for r in after if str(r["id"]) in by_id]
    if not pairs:
        raise ValueError("the two runs share no question id: nothing to pair")
    return compare_paired(
        [float(b["em"]) for b, _ in pairs],
        [float(a["em"]) for _, a in pairs],
        [float(b["f1"]) for b, _ in pairs],
        [float(a["f1"]) for _, a in pairs],
        seed=seed,
    )


@dataclass
class EvalArgs:
    """Evaluate a model as an NB-Agent on QA datasets: EM / F1 / has-answer per dataset."""

    model: str = "smollm2"
    """'smollm2', 'tiny', a local directory or hub id (hf backend); the served model name (openai)."""
    data: list[str] = field(default_factory=lambda: ["hotpotqa-dev[:300]"])
    """Data specs: 'hotpotqa-dev', 'hotpotqa-train', a named QA set (hotpotqa, musique,
    musique-train, bamboogle, simpleqa, nq, triviaqa, popqa, 2wiki; found in --qa-dir) or a task
    file in any supported layout, each with an optional '[start:stop]' slice (e.g. 'musique[:100]')."""
    qa_dir: str | None = None
    """QA data directory the named sets and '--corpus pooled' read (default: $L0_QA_DIR)."""
    corpus: str | None = None
    """Passage file for the embedded BM25, or 'pooled': the context paragraphs of the QA
    directory's HotpotQA and MuSiQue files (default: the bundled HotpotQA passages)."""
    search: str | None = None
    """Search spec instead of the embedded BM25 (e.g. 'http://127.0.0.1:8000' for a Search-R1 server)."""
    cache_dir: str | None = None
    """Where '--corpus pooled' writes its passage file and BM25 index (default: <output-dir>/corpus)."""
    normalization: Literal["squad", "l0"] = "squad"
    """Answer normalisation for EM/F1/has-answer: 'squad' (the official SQuAD/HotpotQA rules, as
    published numbers use) or 'l0' (L0's training reward: keeps articles, drops non-ASCII, counts
    any submitted string, even empty, as an answer)."""
    judge_url: str | None = None
    """OpenAI-compatible server of an LLM judge (e.g. 'http://127.0.0.1:8001/v1'): adds LJ.
    Its bearer token, if any, comes from $L0_JUDGE_API_KEY."""
    judge_model: str | None = None
    """The judge's served model name (needed with --judge-url)."""
    n: int | None = None
    """Questions per dataset (the first n after slicing; None for all)."""
    protocol: Literal["greedy", "l0"] = "greedy"
    """'greedy': one greedy episode per question. 'l0': L0's protocol, top-p 0.9 at temperature 1,
    3 samples per question averaged, 10 steps (explicit flags below still win)."""
    samples: int | None = None
    """Episodes per question, scores averaged (default: 1, or 3 with --protocol l0)."""
    temperature: float | None = None
    """Sampling temperature; 0 is greedy decoding (default: 1 with --protocol l0, --samples > 1 or
    --top-p < 1; else 0)."""
    top_p: float | None = None
    """Nucleus sampling threshold (default: 1, or 0.9 with --protocol l0)."""
    max_steps: int | None = None
    """Steps per episode (default: 3, or 10 with --protocol l0)."""
    backend: Literal["hf", "openai"] = "hf"
    """'hf' (transformers, CPU or GPU) or 'openai' (an OpenAI-compatible server)."""
    base_url: str = "http://127.0.0.1:8000/v1"
    """Server URL for the openai backend."""
    max_new_tokens: int = 192
    """Tokens per action."""
    num_envs: int = 8
    """Notebooks at once (one generation batch)."""
    sandbox: Literal["auto", "bwrap", "none"] = "auto"
    """Kernel sandbox (see l0_env)."""
    max_context_tokens: int = 3072
    """Context budget in policy tokens."""
    output_dir: str = "eval_results"
    """Gets results.json, results.md and predictions-<dataset>.jsonl."""
    compare_to: str | None = None
    """An earlier predictions-*.jsonl to pair with this run by question id (McNemar + bootstrap)."""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda' (hf backend)."""
    threads: int | None = None
    """CPU threads for torch (torch.set_num_threads; default: torch's choice, all cores)."""
    seed: int = 0
    """Seed of the sampler and of the env."""

    def resolved(self) -> EvalArgs:
        """The arguments with the protocol's defaults filled in where no flag was given."""
        l0 = self.protocol == "l0"
        samples = self.samples if self.samples is not None else (3 if l0 else 1)
        top_p = self.top_p if self.top_p is not None else (0.9 if l0 else 1.0)
        sampling = l0 or samples > 1 or top_p < 1  # asking for samples or nucleus means sampling
        temperature = self.temperature if self.temperature is not None else (1.0 if sampling else 0.0)
        values = {
            "samples": samples,
            "top_p": top_p,
            "temperature": temperature,
            "max_steps": self.max_steps if self.max_steps is not None else (10 if l0 else 3),
        }
        out = EvalArgs(**{**asdict(self), **values})
        if samples < 1:
            raise ValueError(f"--samples must be >= 1, got {samples}")
        if samples > 1 and temperature == 0:
            raise ValueError("--samples > 1 with greedy decoding repeats one answer: set --temperature > 0")
        if not 0 < top_p <= 1:
            raise ValueError(f"--top-p must be in (0, 1], got {top_p}")
        if (self.judge_url is None) != (self.judge_model is None):
            raise ValueError("an LLM judge needs both --judge-url and --judge-model")
        if self.corpus == "pooled" and self.search is not None:
            raise ValueError("--corpus pooled is for the embedded BM25; drop it or --search")
        return out


def make_backend(args: EvalArgs) -> tuple[Any, Any]:
    """(backend, token counter) for resolved arguments."""
    assert args.temperature is not None and args.top_p is not None, "pass EvalArgs.resolved()"
    if args.backend == "openai":
        from .backends.openai import OpenAIBackend

        return OpenAIBackend(
            args.base_url,
            args.model,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            concurrency=args.num_envs,
        ), None
    from .backends.hf import HFBackend
    from .envs import TokenCounter
    from .models import load_policy

    model, tok = load_policy(args.model, device=args.device)
    model.eval()
    backend = HFBackend(
        model,
        tok,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        batch_size=args.num_envs,
    )
    return backend, TokenCounter(tok)


def make_judge(args: EvalArgs) -> Any:
    """The LLM judge the flags ask for (:class:`l0_env.judge.LLMJudge`), or None without them."""
    if args.judge_url is None or args.judge_model is None:
        return None
    from l0_env.judge import LLMJudge  # lazily: only a judged run needs its HTTP client

    return LLMJudge(
        args.judge_url,
        args.judge_model,
        api_key=os.environ.get(JUDGE_API_KEY_ENV) or None,
        cache_path=Path(args.output_dir) / "judge-cache.jsonl",
    )


def search_settings(args: EvalArgs) -> tuple[dict[str, Any], dict[str, Any]]:
    """The env's search arguments for the flags, and what to record about them.

    ``--corpus pooled`` builds (or reuses) the pooled passage file and indexes it with the
    embedded BM25 under the cache directory.

    Returns:
        ``(env_kwargs, record)``: the record holds the pooled corpus's files and counts.
    """
    if args.corpus == "pooled":
        cache = Path(args.cache_dir) if args.cache_dir else Path(args.output_dir) / "corpus"
        pooled = write_pooled_corpus(pooled_corpus_files(args.qa_dir), cache)
        spec = {"backend": "bm25", "cache_dir": str(cache / "bm25")}
        return {"corpus": pooled.path, "search": spec}, {"kind": "pooled", **pooled.as_dict()}
    kwargs = {k: v for k, v in (("corpus", args.corpus), ("search", args.search)) if v is not None}
    kind = "http" if args.search else ("file" if args.corpus else "bundled")
    return kwargs, {"kind": kind, "corpus": args.corpus, "search": args.search}


def _corpus_titles(path: str) -> set[str]:
    from l0_env.tools.search import iter_passages

    return {p.title for p in iter_passages(path)}


def gold_in_corpus(tasks: Sequence[Mapping[str, Any]], titles: set[str]) -> float | None:
    """The fraction of questions whose supporting titles are all passage titles of the corpus;
    None when the questions name no supporting titles (the corpus may or may not hold the answer)."""
    marked = [t for t in tasks if t.get("supporting_titles")]
    if not marked:
        return None
    return sum(set(t["supporting_titles"]) <= titles for t in marked) / len(tasks)


def run_suite(
    args: EvalArgs,
    specs: Sequence[DataSpec],
    backend: Any,
    counter: Any = None,
    *,
    judge: Any = None,
    env_kwargs: Mapping[str, Any] | None = None,
    search_record: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate every data spec and write the results (see the module docstring for the files).

    Args:
        args: Resolved arguments (:meth:`EvalArgs.resolved`).
        specs: Parsed data specs.
        backend: A generation backend.
        counter: The policy's token counter (None: the env's default).
        judge: An LLM judge (see :func:`judge_questions`) or None for no LJ.
        env_kwargs: The env's search arguments (default: from :func:`search_settings`).
        search_record: What to record about the search (with ``env_kwargs``).

    Returns:
        One row per dataset: its summary, name, file, timing and load.
    """
    assert args.max_steps is not None and args.samples is not None, "pass EvalArgs.resolved()"
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if env_kwargs is None:
        env_kwargs, search_record = search_settings(args)
    pooled = dict(search_record or {}).get("kind") == "pooled"
    titles = _corpus_titles(str(env_kwargs["corpus"])) if pooled else None
    notes: list[str] = []
    rows = []
    for spec in specs:
        if spec.note:
            notes.append(f"{spec.name}: {spec.note}")
            print(f"[eval] note: {spec.name}: {spec.note}", flush=True)
        tasks = load_eval_tasks(spec, args.n)
        started, load_before = time.perf_counter(), os.getloadavg()[0]
        summary_rows, episodes = _play(args, backend, counter, tasks, spec, env_kwargs)
        verdict_counts = judge_questions(summary_rows, judge) if judge is not None else None
        write_predictions(out / f"predictions-{spec.slug}.jsonl", summary_rows)
        row: dict[str, Any] = {
            "dataset": spec.name,
            "file": spec.source,
            "model": args.model,
            "backend": args.backend,
            "normalization": args.normalization,
            **summarize(episodes, rows=summary_rows),
            "seconds": round(time.perf_counter() - started, 1),
            "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
        if verdict_counts is not None:
            row["judge_verdicts"] = verdict_counts
        if titles is not None:
            row["gold_in_corpus"] = gold_in_corpus(tasks, titles)
            if row["gold_in_corpus"] is None:
                notes.append(
                    f"{spec.name}: ships no passages; the pooled HotpotQA/MuSiQue corpus rarely holds its "
                    "answers (use --search with a retrieval server over Wikipedia)"
                )
        if args.compare_to:
            comparison = compare_predictions(read_predictions(args.compare_to), summary_rows, seed=args.seed)
            row["comparison"] = comparison.as_dict()
            print(f"[compare] {spec.name} vs {args.compare_to}: {comparison.summary()}", flush=True)
        rows.append(row)
    config = {
        "search": dict(search_record or {}),
        "judge": None if judge is None else {"url": args.judge_url, "model": args.judge_model},
        "datasets": {spec.name: {"file": spec.source, "note": spec.note} for spec in specs},
        "notes": notes,
    }
    atomic_write_text(
        out / "results.json",
        json.dumps({"args": asdict(args), "config": config, "results": rows}, indent=2) + "\n",
    )
    table = suite_table(rows)
    footer = [
        "",
        f"Model {args.model} ({args.backend}); {args.samples} sample(s)/question, {args.max_steps} steps, "
        f"temperature {args.temperature}, top-p {args.top_p}; normalisation {args.normalization}; "
        f"search: {(search_record or {}).get('kind', 'bundled')}; LJ: "
        f"{'none' if judge is None else args.judge_model}. 95% intervals: Wilson (EM, LJ, has answer), "
        "bootstrap over questions (the rest).",
        *(f"- {note}" for note in notes),
    ]
    atomic_write_text(out / "results.md", "\n".join([table, *footer]) + "\n")
    print(table)
    return rows


def _play(
    args: EvalArgs,
    backend: Any,
    counter: Any,
    tasks: Sequence[dict[str, Any]],
    spec: DataSpec,
    env_kwargs: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], list[Episode]]:
    assert args.max_steps is not None and args.samples is not None
    _, episodes = evaluate(
        backend,
        tasks,
        max_steps=args.max_steps,
        samples=args.samples,
        sandbox=args.sandbox,
        num_envs=args.num_envs,
        max_context_tokens=args.max_context_tokens,
        count_tokens=counter,
        seed=args.seed,
        progress=f"eval {spec.name}",
        env_kwargs=env_kwargs,
    )
    return question_scores(episodes, normalization=args.normalization), episodes


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    import torch
    import tyro

    args = tyro.cli(EvalArgs, args=argv, prog="python -m l0_learner.eval").resolved()
    # Everything that can fail on bad input fails before the model loads.
    specs = [parse_data_spec(d, qa_dir=args.qa_dir) for d in args.data]
    env_kwargs, search_record = search_settings(args)
    judge = make_judge(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # on a shared CPU, fewer threads than cores spin less
    torch.manual_seed(args.seed)
    backend, counter = make_backend(args)
    try:
        return run_suite(
            args, specs, backend, counter, judge=judge, env_kwargs=env_kwargs, search_record=search_record
        )
    finally:
        if judge is not None:
            judge.close()


if __name__ == "__main__":
    main()
