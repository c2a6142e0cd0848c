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


def _evaluate(cfg: Config, model: Any, tokenizer: Any, label: str) -> dict[str, Any]:
    import torch

    from .algorithms.agentic_pg import TokenCounter
    from .backends.hf import HFBackend
    from .eval import evaluate, load_eval_tasks
    from .policy import pick_dtype

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
    summary, _ = evaluate(
        backend,
        load_eval_tasks("hotpotqa-dev", cfg.eval_questions),
        max_steps=cfg.eval_max_steps,
        sandbox=cfg.sandbox,
        num_envs=cfg.num_envs,
        cell_timeout=cfg.cell_timeout,
        max_context_tokens=cfg.max_context_tokens,
        count_tokens=TokenCounter(tokenizer),
        seed=cfg.seed,
        progress=f"eval {label}" if cfg.progress else None,
    )
    row = {"stage": label, **summary, "seconds": round(time.perf_counter() - started, 1)}
    print(
        f"[eval] {label}: EM {row['em']:.3f}, well-formed {row['well_formed_rate']:.2f}, "
        f"code errors {row['code_error_rate']:.2f} ({row['seconds']:.0f} s)",
        flush=True,
    )
    return row


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
    with StopOnSignals():
        try:
            return _run(cfg)
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
            shutdown()


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
    import torch

    from .algorithms.agentic_pg import ALGORITHMS, seed_everything
    from .distributed import Ranks
    from .eval import markdown_table
    from .policy import load_policy

    main_rank = Ranks.current().is_main  # under torchrun rank 0 writes the run directory
    started = time.perf_counter()
    out = Path(cfg.output_dir)
    if not cfg.resume and (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
        raise SystemExit(
            f"{out} already holds checkpoints: pass --resume to continue, or another --output-dir"
        )
    run = RunDir(out, tensorboard=cfg.tensorboard) if main_rank else None
    stages = Stages(out / "stages.json")
    if run is not None:
        run.write_config(to_dict(cfg))
        print("config: " + json.dumps(to_dict(cfg), default=str), flush=True)
    seed_everything(cfg.seed)
    evals: list[dict[str, Any]] = list(stages.data.get("evals", []))

    def commit_eval(row: dict[str, Any], stage: str | None = None, mark: Any = True) -> None:
        # The row and the stage mark are one commit: a stop signal waits until both are written.
        # A row of the same stage is replaced (after RL, when --resume trains further).
        with critical():
            evals[:] = [e for e in evals if e.get("stage") != row["stage"]] + [row]
            stages.set("evals", evals)
            if stage is not None:
                stages.set(stage, mark)

    rl_model = cfg.model
    model: Any = None
    needs_pre = (cfg.eval_questions and "eval_before" not in stages) or (
        cfg.sft_demos and "sft" not in stages
    )
    if needs_pre:
        model, tok = load_policy(cfg.model, device=cfg.device, dtype=cfg.dtype)
        if cfg.eval_questions and "eval_before" not in stages:
            label = "before SFT" if cfg.sft_demos else "before RL"
            commit_eval(_evaluate(cfg, model, tok, label), "eval_before")
        if cfg.sft_demos and "sft" not in stages:
            from .algorithms.agentic_pg import TokenCounter
            from .sft import record_demonstrations, sft

            t0 = time.perf_counter()
            demo_path = out / "demonstrations.jsonl"
            demo_path.unlink(missing_ok=True)
            demo_stats: dict[str, int] = {}
            samples = record_demonstrations(
                cfg.sft_demos,
                split=cfg.split,
                max_steps=cfg.max_steps,
                sandbox=cfg.sandbox,
                seed=cfg.seed,
                out_path=demo_path,
                count_tokens=TokenCounter(tok),
                max_context_tokens=cfg.max_context_tokens,
                stats=demo_stats,
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
                run.log_metrics(
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
                stages.set("sft", str(out / "sft"))
    if cfg.sft_demos and cfg.eval_questions and not any(e.get("stage") == "after SFT" for e in evals):
        if model is None:  # stopped between SFT and its evaluation: evaluate the saved SFT model
            model, tok = load_policy(stages["sft"], device=cfg.device, dtype=cfg.dtype)
        commit_eval(_evaluate(cfg, model, tok, "after SFT"))
    del model
    if cfg.sft_demos:
        rl_model = stages["sft"]

    algo_cls = ALGORITHMS[cfg.algorithm]
    algo = algo_cls(dataclasses.replace(cfg, model=rl_model), run=run)
    found = find_checkpoints(out)
    latest = found[-1] if found else None
    if cfg.resume and latest is not None:
        algo.load(latest)
        if main_rank:
            print(f"resumed from {latest} (iteration {algo.iteration})", flush=True)
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
                row = _evaluate(cfg, algo.model, algo.tokenizer, "after RL")
            commit_eval({**row, "iterations": algo.iteration}, "eval_after_rl", algo.iteration)
    finally:
        algo.close()
        if run is not None:
            run.close()
    seconds = time.perf_counter() - started
    if evals:
        table = markdown_table(evals, label="stage")
        note = (
            f"\n\nHeld-out: the first {cfg.eval_questions} bundled HotpotQA dev questions (training used the "
            f"'{cfg.split}' split); {cfg.eval_max_steps} steps per episode, greedy decoding; "
            f"after RL = after {algo.iteration} policy updates.\n"
        )
        atomic_write_text(out / "results.md", table + note)
        print("\n" + table, flush=True)
    if main_rank:
        print(f"done: {algo.iteration} iterations, {seconds / 60:.1f} min; run directory {out}", flush=True)
    return {"evals": evals, "iterations": algo.iteration, "seconds": seconds}


if __name__ == "__main__":
    main()
