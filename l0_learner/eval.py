"""Evaluation: EM / F1 / has-answer, well-formed-step and code-error rates on QA sets.

Each question is one episode in the notebook env (the agent searches, reads, submits); scores are
the env's own (SQuAD/HotpotQA normalisation, best over gold aliases). Command line::

    python -m l0_learner.eval --model smollm2 --data hotpotqa-dev --n 50
    python -m l0_learner.eval --backend openai --base-url http://127.0.0.1:8000/v1 \\
        --model Qwen/Qwen2.5-7B-Instruct --data /path/to/bamboogle/test.jsonl

``--data`` takes JSONL/Parquet files in the shared QA format (``id``, ``question``, ``answers``)
or ``hotpotqa-dev`` / ``hotpotqa-train`` for the bundled sample. One result row per dataset is
appended to ``--output`` (JSONL) and a Markdown table is printed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from l0_env.recording import append_jsonl

from .rollout import Episode, Job, run_episodes

BUNDLED = {"hotpotqa-dev": "dev", "hotpotqa-train": "train"}


def load_eval_tasks(data: str, n: int | None = None) -> list[dict[str, Any]]:
    """The first ``n`` questions of a dataset as task dicts (bundled name or file path)."""
    from l0_env.tasks import load_tasks

    tasks = load_tasks(None, split=BUNDLED[data]) if data in BUNDLED else load_tasks(data)
    rows = [
        {
            "id": t.id,
            "question": t.question,
            "answers": list(t.answers),
            "supporting_titles": list(t.supporting_titles),
        }
        for t in tasks
    ]
    return rows[:n] if n else rows


def summarize(episodes: Sequence[Episode]) -> dict[str, float]:
    """Per-dataset means over episodes (and, for the step rates, over all steps)."""
    steps = [s for ep in episodes for s in ep.steps]
    if not episodes:
        return {"n": 0}
    return {
        "n": len(episodes),
        "em": float(np.mean([ep.em for ep in episodes])),
        "f1": float(np.mean([float(ep.final.get("f1") or 0.0) for ep in episodes])),
        "has_answer": float(np.mean([float(ep.final.get("has_answer") or 0.0) for ep in episodes])),
        "well_formed_rate": float(np.mean([float(s.components.get("format") or 0.0) for s in steps])),
        "code_error_rate": float(np.mean([s.cell_status not in (None, "ok") for s in steps])),
        "steps_per_episode": float(np.mean([len(ep.steps) for ep in episodes])),
    }


def evaluate(
    backend: Any,
    tasks: Sequence[dict[str, Any]],
    *,
    max_steps: int = 3,
    sandbox: str = "auto",
    num_envs: int = 8,
    cell_timeout: float = 10.0,
    max_context_tokens: int = 3072,
    count_tokens: Any = None,
    seed: int = 0,
    progress: str | None = None,
) -> tuple[dict[str, float], list[Episode]]:
    """Run one episode per task with ``backend``; returns the summary and the episodes."""
    from .envs import make_vector_env

    venv = make_vector_env(
        min(num_envs, len(tasks)),
        env="notebook",
        tasks=list(tasks),
        sandbox=sandbox,
        max_steps=max_steps,
        cell_timeout=cell_timeout,
        max_context_tokens=max_context_tokens,
        count_tokens=count_tokens,
    )
    try:
        jobs = [Job(task_index=i, seed=seed + i, group=i) for i in range(len(tasks))]
        episodes, _ = run_episodes(backend, venv, jobs, num_envs=min(num_envs, len(tasks)), progress=progress)
    finally:
        venv.close()
    return summarize(episodes), episodes


def markdown_table(rows: Sequence[dict[str, Any]], label: str = "dataset") -> str:
    """Rows of summaries as a Markdown table (rates in %)."""
    head = f"| {label} | n | well-formed steps | code errors | EM | F1 | has answer | steps/ep |"
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r[label]} | {r['n']} | {100 * r['well_formed_rate']:.0f}% | {100 * r['code_error_rate']:.0f}% | "
            f"{100 * r['em']:.1f} | {100 * r['f1']:.1f} | {100 * r['has_answer']:.0f}% | {r['steps_per_episode']:.2f} |"
        )
    return "\n".join(lines)


@dataclass
class EvalArgs:
    """Evaluate a model as an NB-Agent on QA datasets: EM / F1 / has-answer per dataset."""

    model: str = "smollm2"
    """'smollm2', 'tiny', a local directory or hub id (hf backend); the served model name (openai)."""
    data: list[str] = field(default_factory=lambda: ["hotpotqa-dev"])
    """Datasets: 'hotpotqa-dev', 'hotpotqa-train' or JSONL/Parquet paths in the shared QA format."""
    n: int | None = 50
    """Questions per dataset (the first n; None for all)."""
    backend: Literal["hf", "openai"] = "hf"
    """'hf' (transformers, CPU or GPU) or 'openai' (an OpenAI-compatible server)."""
    base_url: str = "http://127.0.0.1:8000/v1"
    """Server URL for the openai backend."""
    max_steps: int = 3
    """Steps per episode."""
    max_new_tokens: int = 192
    temperature: float = 0.0
    """0 is greedy decoding."""
    num_envs: int = 8
    sandbox: Literal["auto", "bwrap", "none"] = "auto"
    max_context_tokens: int = 3072
    output: str = "eval_results.jsonl"
    """JSONL file that gets one row per dataset."""
    device: str = "auto"
    seed: int = 0


def make_backend(args: EvalArgs) -> tuple[Any, Any]:
    """(backend, token counter) for the arguments."""
    if args.backend == "openai":
        from .backends.openai import OpenAIBackend

        return OpenAIBackend(
            args.base_url,
            args.model,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            concurrency=args.num_envs,
        ), None
    from .algorithms.agentic_pg import TokenCounter
    from .backends.hf import HFBackend
    from .policy import load_policy

    model, tok = load_policy(args.model, device=args.device)
    model.eval()
    backend = HFBackend(
        model, tok, max_new_tokens=args.max_new_tokens, temperature=args.temperature, batch_size=args.num_envs
    )
    return backend, TokenCounter(tok)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    import torch
    import tyro

    args = tyro.cli(EvalArgs, args=argv, prog="python -m l0_learner.eval")
    torch.manual_seed(args.seed)
    backend, counter = make_backend(args)
    rows = []
    for data in args.data:
        started = time.perf_counter()
        summary, _ = evaluate(
            backend,
            load_eval_tasks(data, args.n),
            max_steps=args.max_steps,
            sandbox=args.sandbox,
            num_envs=args.num_envs,
            max_context_tokens=args.max_context_tokens,
            count_tokens=counter,
            seed=args.seed,
            progress=f"eval {data}",
        )
        row = {
            "dataset": Path(data).stem if data not in BUNDLED else data,
            "model": args.model,
            "backend": args.backend,
            **summary,
            "seconds": round(time.perf_counter() - started, 1),
        }
        append_jsonl(args.output, row)
        rows.append(row)
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
