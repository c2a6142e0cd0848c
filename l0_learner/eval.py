"""Evaluation: EM / F1 / has-answer with 95% intervals, per-question predictions, paired comparisons.

Each question is one episode in the notebook env (the agent searches, reads, submits); scores are
the env's own (SQuAD/HotpotQA normalisation, best over gold aliases). With ``--samples k`` every
question is played ``k`` times (sampling) and its scores are the means over the samples, as L0
reports them (``--protocol l0``: top-p 0.9, 3 samples, 10 steps). Command line::

    python -m l0_learner.eval --model smollm2 --data hotpotqa-dev[:300]
    python -m l0_learner.eval --model runs/x/final --data my_tasks.jsonl --corpus my_corpus.jsonl \\
        --n 4 --samples 3 --top-p 0.9
    python -m l0_learner.eval --model runs/x/final --data hotpotqa-dev[:300] \\
        --compare-to eval_results/predictions-hotpotqa-dev_0-300.jsonl
    python -m l0_learner.eval --backend openai --base-url http://127.0.0.1:8000/v1 \\
        --model Qwen/Qwen2.5-7B-Instruct --data /path/to/bamboogle/test.jsonl

``--data`` takes data specs (:mod:`l0_learner.data`: ``hotpotqa-dev``, ``hotpotqa-train``, JSONL or
Parquet task files, each with an optional ``[start:stop]`` slice); ``--corpus`` a passage file
(``{"id","title","text"}`` or Search-R1's ``{"id","contents"}`` rows) that the embedded BM25 indexes,
``--search`` any search spec the env takes (e.g. a Search-R1 server's URL). The output directory
gets ``results.json`` and ``results.md`` (one row per dataset) and ``predictions-<dataset>.jsonl``
(the slice written ``_start-stop``)
(one row per question: id, question, answers, the submitted answer of every sample, EM, F1). With
``--compare-to`` an earlier predictions file is paired with this run by question id and the
difference is tested (McNemar on EM, bootstrap intervals on EM and F1; :mod:`l0_learner.stats`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from l0_env.recording import atomic_write_text

from .data import DataSpec, load_task_dicts, parse_data_spec
from .rollout import Episode, Job, run_episodes
from .stats import PairedComparison, bootstrap_diff_interval, compare_paired, wilson_interval


def load_eval_tasks(data: str | DataSpec, n: int | None = None) -> list[dict[str, Any]]:
    """The first ``n`` questions of a data spec as task dicts (see :mod:`l0_learner.data`)."""
    return load_task_dicts(data, n)


def question_scores(episodes: Sequence[Episode]) -> list[dict[str, Any]]:
    """One row per question (episodes grouped by ``job.group``), scores averaged over samples.

    Returns rows in first-seen order with ``id``, ``question``, ``answers``, ``predictions`` (the
    submitted answer of each sample, None where none was submitted), ``em``, ``f1``,
    ``has_answer`` and ``steps`` (means over the samples) and ``samples``.
    """
    groups: dict[int, list[Episode]] = {}
    for ep in episodes:
        groups.setdefault(ep.job.group, []).append(ep)
    rows = []
    for eps in groups.values():
        task = eps[0].task
        rows.append(
            {
                "id": str(task.get("id", eps[0].job.group)),
                "question": task.get("question"),
                "answers": list(task.get("answers", [])),
                "predictions": [ep.answer for ep in eps],
                "em": float(np.mean([ep.em for ep in eps])),
                "f1": float(np.mean([float(ep.final.get("f1") or 0.0) for ep in eps])),
                "has_answer": float(np.mean([float(ep.final.get("has_answer") or 0.0) for ep in eps])),
                "steps": float(np.mean([len(ep.steps) for ep in eps])),
                "samples": len(eps),
            }
        )
    return rows


def summarize(episodes: Sequence[Episode]) -> dict[str, Any]:
    """Per-dataset scores: means over questions with 95% intervals, and per-step rates.

    EM's interval is Wilson's (exact for one sample per question; with several samples the
    per-question means are treated as fractional successes); F1's is a bootstrap over questions.
    """
    if not episodes:
        return {"n": 0}
    rows = question_scores(episodes)
    steps = [s for ep in episodes for s in ep.steps]
    n = len(rows)
    em = np.array([r["em"] for r in rows])
    f1 = np.array([r["f1"] for r in rows])
    em_lo, em_hi = wilson_interval(float(em.sum()), n)
    f1_lo, f1_hi = bootstrap_diff_interval(np.zeros(n), f1, resamples=2000)
    return {
        "n": n,
        "samples": len(episodes) // n if n else 0,
        "em": float(em.mean()),
        "em_low": em_lo,
        "em_high": em_hi,
        "f1": float(f1.mean()),
        "f1_low": f1_lo,
        "f1_high": f1_hi,
        "has_answer": float(np.mean([r["has_answer"] for r in rows])),
        "well_formed_rate": float(np.mean([float(s.components.get("format") or 0.0) for s in steps])),
        "code_error_rate": float(np.mean([s.cell_status not in (None, "ok") for s in steps])),
        "steps_per_episode": float(np.mean([len(ep.steps) for ep in episodes])),
    }


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
    """Data specs: 'hotpotqa-dev', 'hotpotqa-train' or JSONL/Parquet task files, each with an
    optional '[start:stop]' slice (e.g. 'hotpotqa-dev[:300]')."""
    corpus: str | None = None
    """Passage file for the embedded BM25 (default: the bundled HotpotQA passages)."""
    search: str | None = None
    """Search spec instead of the embedded BM25 (e.g. 'http://127.0.0.1:8000' for a Search-R1 server)."""
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


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    import torch
    import tyro

    args = tyro.cli(EvalArgs, args=argv, prog="python -m l0_learner.eval").resolved()
    assert args.max_steps is not None and args.samples is not None  # resolved() filled them in
    specs = [parse_data_spec(d) for d in args.data]  # a bad spec fails before the model loads
    torch.manual_seed(args.seed)
    backend, counter = make_backend(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_kwargs = {k: v for k, v in (("corpus", args.corpus), ("search", args.search)) if v is not None}
    rows = []
    for spec in specs:
        started = time.perf_counter()
        summary, episodes = evaluate(
            backend,
            load_eval_tasks(spec, args.n),
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
        predictions = question_scores(episodes)
        write_predictions(out / f"predictions-{spec.slug}.jsonl", predictions)
        row = {
            "dataset": spec.name,
            "model": args.model,
            "backend": args.backend,
            **summary,
            "seconds": round(time.perf_counter() - started, 1),
        }
        if args.compare_to:
            comparison = compare_predictions(read_predictions(args.compare_to), predictions, seed=args.seed)
            row["comparison"] = comparison.as_dict()
            print(f"[compare] {spec.name} vs {args.compare_to}: {comparison.summary()}", flush=True)
        rows.append(row)
    atomic_write_text(
        out / "results.json", json.dumps({"args": asdict(args), "results": rows}, indent=2) + "\n"
    )
    table = markdown_table(rows)
    atomic_write_text(out / "results.md", table + "\n")
    print(table)
    return rows


if __name__ == "__main__":
    main()
