"""``python -m l0_learner.run``: train an LLM agent on the notebook env with the agentic policy gradient.

The main job (``--preset cpu-demo``, the README's command) runs the whole story on a CPU:

1. evaluate the base model on held-out dev questions (never trained on);
2. record oracle demonstrations on training questions and fine-tune on them (cold start);
3. evaluate again; 4. agentic policy gradient on training questions; 5. evaluate again;
6. print the before/after table (well-formed-step rate, code-error rate, EM) and write it to
   ``<output_dir>/results.md``.

Without ``sft_demos``/``eval_questions`` it is plain RL. ``--resume`` continues from the newest
checkpoint (finished stages are read from ``<output_dir>/stages.json`` and not redone).
SIGTERM/SIGINT stop a run cleanly: exit status 143/130, the envs closed, the newest checkpoint and
the metrics up to it kept, and the ``--resume`` command printed.

Examples::

    python -m l0_learner.run --preset cpu-demo
    python -m l0_learner.run --preset tiny --iterations 3 --output-dir runs/smoke
    python -m l0_learner.run --preset cpu-demo --resume
    python -m l0_learner.run --config my.yaml --lr 3e-6 --seed 1
    CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6 torchrun --nproc-per-node 7 -m l0_learner.run \\
        --preset gpu-7b --tasks train.jsonl          # vLLM on GPU 7

Under ``torchrun`` every rank runs this module: the RL stage is data-parallel (see
:mod:`l0_learner.distributed`), rank 0 writes the run directory; the SFT and evaluation stages run
in one process only (``--sft-demos 0 --eval-questions 0`` under torchrun).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from l0_env.recording import atomic_write_text

from .config import Config, parse_cli, to_dict
from .interrupt import Interrupted, StopOnSignals, critical
from .runs import RunDir, checkpoint_iteration, find_checkpoints


class Stages:
    """Which pipeline stages are finished (``stages.json``), so ``--resume`` skips them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        atomic_write_text(self.path, json.dumps(self.data, indent=2) + "\n")


def plan_data(cfg: Config) -> dict[str, list[dict[str, Any]]]:
    """The questions each stage of this config uses (``rl``, ``sft``, ``eval``), checked disjoint.

    Raises:
        ValueError: If two stages share a question (see :func:`l0_learner.data.check_disjoint`).
    """
    from .data import check_disjoint, load_task_dicts
    from .envs import training_tasks

    if cfg.env != "notebook":
        return {}
    plan = {"rl": training_tasks(cfg)}
    if cfg.sft_demos:
        plan["sft"] = load_task_dicts(cfg.sft_tasks)
    if cfg.eval_questions:
        plan["eval"] = load_task_dicts(cfg.eval_tasks, cfg.eval_questions)
    check_disjoint(plan)
    return plan


def _data_record(cfg: Config, plan: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    specs = {"rl": cfg.tasks or "hotpotqa-train", "sft": cfg.sft_tasks, "eval": cfg.eval_tasks}
    return {
        stage: {"spec": specs[stage], "n": len(tasks), "ids": [t["id"] for t in tasks]}
        for stage, tasks in plan.items()
    }


def _evaluate(
    cfg: Config, model: Any, tokenizer: Any, label: str, tasks: Sequence[dict[str, Any]], out: Path
) -> dict[str, Any]:
    """Score ``model`` on the held-out ``tasks`` (greedy); per-question rows go to ``out/eval/``."""
    import torch

    from .backends.hf import HFBackend
    from .envs import notebook_env_kwargs
    from .eval import evaluate, question_scores, write_predictions
    from .models import pick_dtype

    # The trained policy holds float32 weights (see AgenticPG): evaluate it in the compute dtype.
    param = next(model.parameters())
    compute = pick_dtype(cfg.dtype, param.device)
    autocast = compute if param.dtype == torch.float32 and compute != torch.float32 else None
    backend = HFBackend(
        model,
        tokenizer,
        max_new_tokens=cfg.max_new_tokens,
        temperature=0.0,
        batch_size=cfg.num_envs,
        autocast=autocast,
    )
    started = time.perf_counter()
    summary, episodes = evaluate(
        backend,
        tasks,
        num_envs=cfg.num_envs,
        seed=cfg.seed,
        progress=f"eval {label}" if cfg.progress else None,
        env_kwargs=notebook_env_kwargs(cfg, tokenizer, tasks, max_steps=cfg.eval_max_steps),
    )
    predictions = out / "eval" / f"{label.replace(' ', '-')}.jsonl"
    write_predictions(predictions, question_scores(episodes))
    row = {
        "stage": label,
        **summary,
        "seconds": round(time.perf_counter() - started, 1),
        "predictions": str(predictions),
    }
    print(
        f"[eval] {label}: EM {100 * row['em']:.1f} [{100 * row['em_low']:.1f}, {100 * row['em_high']:.1f}], "
        f"well-formed {row['well_formed_rate']:.2f}, code errors {row['code_error_rate']:.2f} "
        f"({row['seconds']:.0f} s)",
        flush=True,
    )
    return row


def compare_to_previous(
    row: dict[str, Any], evals: Sequence[dict[str, Any]], seed: int = 0
) -> dict[str, Any]:
    """``row`` with ``vs``: the paired comparison with the last earlier stage (McNemar, bootstrap)."""
    from .eval import compare_predictions, read_predictions

    earlier = [
        e for e in evals if e.get("stage") != row["stage"] and Path(e.get("predictions", "")).is_file()
    ]
    if not earlier or not Path(row.get("predictions", "")).is_file():
        return row
    previous = earlier[-1]
    comparison = compare_predictions(
        read_predictions(previous["predictions"]), read_predictions(row["predictions"]), seed=seed
    )
    print(f"[eval] {row['stage']} vs {previous['stage']}: {comparison.summary()}", flush=True)
    return {**row, "vs": {"stage": previous["stage"], **comparison.as_dict()}}


def results_markdown(cfg: Config, evals: Sequence[dict[str, Any]], iterations: int) -> str:
    """The before/after table, the paired tests between consecutive stages, and what was held out."""
    from .eval import markdown_table
    from .stats import PairedComparison

    lines = [markdown_table(evals, label="stage"), ""]
    for row in evals:
        if "vs" in row:
            vs = dict(row["vs"])
            previous = vs.pop("stage")
            lines.append(f"- {row['stage']} vs {previous}: {PairedComparison(**vs).summary()}")
    lines += [
        "",
        f"Held out: the first {cfg.eval_questions} questions of {cfg.eval_tasks} (disjoint from the "
        f"demonstration questions {cfg.sft_tasks} and the RL questions {cfg.tasks or 'hotpotqa-train'}; "
        f"ids in data.json); {cfg.eval_max_steps} steps per episode, greedy decoding; after RL = after "
        f"{iterations} policy updates. Intervals: Wilson (EM) and paired bootstrap (F1, differences), "
        "95%; McNemar's exact test on per-question EM.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the configured pipeline; returns ``{"evals": [...], "iterations": n, "seconds": s}``.

    SIGTERM or SIGINT stops it cleanly (see :mod:`l0_learner.interrupt`): the iteration in progress
    is dropped, the envs are closed, the newest checkpoint and the metrics up to it stay, a message
    says how to resume, and it exits with 143 (SIGTERM) or 130 (SIGINT). A full disk while a
    checkpoint is written exits with status 1 and the same kind of message.
    """
    from .distributed import init_from_env, shutdown

    cfg = parse_cli(argv)
    ranks = init_from_env(cfg.device)
    if ranks.enabled and (cfg.sft_demos or cfg.eval_questions):
        shutdown()
        raise SystemExit(
            "under torchrun only the RL stage runs: run the SFT/evaluation stages in one process "
            "(python -m l0_learner.run ... --iterations 0), then torchrun with --model <its "
            "output_dir>/sft --sft-demos 0 --eval-questions 0"
        )
    ended = False
    with StopOnSignals():
        try:
            result = _run(cfg)
            ended = True
            return result
        except Interrupted as exc:
            print(
                f"\ninterrupted by {exc.signame} {_stopped_at(cfg)}. {_resume_hint(cfg, argv)}",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(exc.exit_code) from None
        except OSError as exc:
            if exc.errno != errno.ENOSPC and "disk full" not in str(exc):
                raise
            raise SystemExit(f"error: {exc}\nstopped {_stopped_at(cfg)}. {_resume_hint(cfg, argv)}") from exc
        finally:
            shutdown(together=ended)


def _stopped_at(cfg: Config) -> str:
    found = find_checkpoints(Path(cfg.output_dir))
    if not found:
        return f"before the first checkpoint (of {cfg.iterations} iterations; finished stages are kept)"
    return (
        f"at iteration {checkpoint_iteration(found[-1])} of {cfg.iterations}: the newest checkpoint, "
        f"{found[-1]}, is complete; what came after it is redone on resume"
    )


def _resume_hint(cfg: Config, argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--resume" not in args:
        args.append("--resume")
    return "Resume with: python -m l0_learner.run " + shlex.join(args)


def _run(cfg: Config) -> dict[str, Any]:
    """The pipeline, stage by stage; each finished stage is marked in ``stages.json`` for --resume."""
    from .algorithms.agentic_pg import seed_everything
    from .distributed import Ranks

    main_rank = Ranks.current().is_main  # under torchrun rank 0 writes the run directory
    started = time.perf_counter()
    out = Path(cfg.output_dir)
    if not cfg.resume and (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
        raise SystemExit(
            f"{out} already holds checkpoints: pass --resume to continue, or another --output-dir"
        )
    plan = plan_data(cfg)  # overlapping stages fail here, before anything runs
    run = RunDir(out, tensorboard=cfg.tensorboard) if main_rank else None
    pipeline = Pipeline(cfg, out, run, Stages(out / "stages.json"), plan)
    if run is not None:
        run.write_config(to_dict(cfg))
        if plan:
            atomic_write_text(out / "data.json", json.dumps(_data_record(cfg, plan), indent=1) + "\n")
        print("config: " + json.dumps(to_dict(cfg), default=str), flush=True)
    seed_everything(cfg.seed)
    rl_model = pipeline.cold_start()
    iterations = pipeline.reinforce(rl_model)
    seconds = time.perf_counter() - started
    if pipeline.evals and main_rank:
        text = results_markdown(cfg, pipeline.evals, iterations)
        atomic_write_text(out / "results.md", text)
        print("\n" + text, flush=True)
    if main_rank and run is not None:
        from .plots import plot_run

        print(f"curves: {plot_run(out)}", flush=True)
        print(f"done: {iterations} iterations, {seconds / 60:.1f} min; run directory {out}", flush=True)
    return {"evals": pipeline.evals, "iterations": iterations, "seconds": seconds}


class Pipeline:
    """The stages of a run: evaluate → demonstrations + SFT → evaluate → RL → evaluate.

    Every evaluation scores the same held-out questions and is compared, paired, with the stage
    before it. What a stage finished is in ``stages.json``: a resumed run skips it.
    """

    def __init__(
        self,
        cfg: Config,
        out: Path,
        run: RunDir | None,
        stages: Stages,
        plan: dict[str, list[dict[str, Any]]],
    ) -> None:
        self.cfg, self.out, self.run, self.stages, self.plan = cfg, out, run, stages, plan
        self.evals: list[dict[str, Any]] = list(stages.data.get("evals", []))

    def commit_eval(self, row: dict[str, Any], stage: str | None = None, mark: Any = True) -> None:
        """Store an evaluation row (with its comparison to the stage before) and the stage mark.

        The row and the mark are one commit: a stop signal waits until both are written. A row of
        the same stage is replaced (after RL, when --resume trains further).
        """
        row = compare_to_previous(
            row, [e for e in self.evals if e.get("stage") != row["stage"]], self.cfg.seed
        )
        with critical():
            self.evals[:] = [e for e in self.evals if e.get("stage") != row["stage"]] + [row]
            self.stages.set("evals", self.evals)
            if stage is not None:
                self.stages.set(stage, mark)

    def evaluate(self, model: Any, tokenizer: Any, label: str) -> dict[str, Any]:
        return _evaluate(self.cfg, model, tokenizer, label, self.plan["eval"], self.out)

    def cold_start(self) -> str:
        """Evaluate the starting model, record demonstrations, fine-tune, evaluate; the RL model."""
        from .models import load_policy

        cfg, stages = self.cfg, self.stages
        evaluating = bool(cfg.eval_questions)
        model: Any = None
        if (evaluating and cfg.eval_before and "eval_before" not in stages) or (
            cfg.sft_demos and "sft" not in stages
        ):
            model, tok = load_policy(cfg.model, device=cfg.device, dtype=cfg.dtype)
            if evaluating and cfg.eval_before and "eval_before" not in stages:
                label = "before SFT" if cfg.sft_demos else "before RL"
                self.commit_eval(self.evaluate(model, tok, label), "eval_before")
            if cfg.sft_demos and "sft" not in stages:
                self.fine_tune(model, tok)
        if cfg.sft_demos and evaluating and not any(e.get("stage") == "after SFT" for e in self.evals):
            if model is None:  # stopped between SFT and its evaluation: evaluate the saved SFT model
                model, tok = load_policy(stages["sft"], device=cfg.device, dtype=cfg.dtype)
            self.commit_eval(self.evaluate(model, tok, "after SFT"))
        del model
        return stages["sft"] if cfg.sft_demos else cfg.model

    def fine_tune(self, model: Any, tok: Any) -> None:
        """Oracle demonstrations on the SFT questions, then supervised fine-tuning (one commit)."""
        from .envs import notebook_env_kwargs
        from .sft import record_demonstrations, sft

        cfg, out = self.cfg, self.out
        t0 = time.perf_counter()
        demo_path = out / "demonstrations.jsonl"
        demo_path.unlink(missing_ok=True)
        demo_stats: dict[str, int] = {}
        samples = record_demonstrations(
            cfg.sft_demos,
            env_kwargs=notebook_env_kwargs(cfg, tok, self.plan["sft"]),
            seed=cfg.seed,
            out_path=demo_path,
            stats=demo_stats,
            progress=cfg.progress,
        )
        print(
            f"[sft] {len(samples)} demonstration steps from {demo_stats['kept']} of "
            f"{demo_stats['episodes']} oracle episodes (the others' answers were not in the hits)",
            flush=True,
        )
        losses = sft(
            model,
            tok,
            samples,
            epochs=cfg.sft_epochs,
            batch_size=cfg.sft_batch_size,
            lr=cfg.sft_lr,
            seed=cfg.seed,
            prompt_grad=cfg.prompt_grad,
            progress=cfg.progress,
        )
        with critical():  # the SFT model, its metrics line and its stage mark: one commit
            model.save_pretrained(out / "sft")
            tok.save_pretrained(out / "sft")
            assert self.run is not None, "SFT runs in one process (main refuses it under torchrun)"
            self.run.log_metrics(
                0,
                {
                    "sft/loss_first": losses[0],
                    "sft/loss_last": losses[-1],
                    "sft/seconds": time.perf_counter() - t0,
                    "sft/samples": len(samples),
                    "sft/episodes_kept": demo_stats["kept"],
                    "sft/episodes_played": demo_stats["episodes"],
                },
            )
            self.stages.set("sft", str(out / "sft"))

    def reinforce(self, rl_model: str) -> int:
        """The agentic policy gradient from ``rl_model``, then the evaluation after RL; the updates done."""
        import torch

        from .algorithms.agentic_pg import ALGORITHMS

        cfg, out, stages = self.cfg, self.out, self.stages
        main_rank = self.run is not None
        algo = ALGORITHMS[cfg.algorithm](dataclasses.replace(cfg, model=rl_model), run=self.run)
        found = find_checkpoints(out)
        if cfg.resume and found:
            algo.load(found[-1])
            if main_rank:
                print(f"resumed from {found[-1]} (iteration {algo.iteration})", flush=True)
        try:
            algo.learn(cfg.iterations, progress=cfg.progress)
            if "final" not in stages or stages["final"] != algo.iteration:
                with critical():
                    algo.save_pretrained(out / "final")
                    if main_rank:
                        stages.set("final", algo.iteration)
            # Marked with the iteration it evaluated: `--resume --iterations N` that trains further
            # evaluates again.
            if cfg.eval_questions and stages.data.get("eval_after_rl") != algo.iteration:
                with torch.no_grad():
                    row = self.evaluate(algo.model, algo.tokenizer, "after RL")
                self.commit_eval({**row, "iterations": algo.iteration}, "eval_after_rl", algo.iteration)
        finally:
            algo.close()
            if self.run is not None:
                self.run.close()
        return algo.iteration


if __name__ == "__main__":
    main()
    from l0_learner.distributed import exit_after_distributed_run

    exit_after_distributed_run()
