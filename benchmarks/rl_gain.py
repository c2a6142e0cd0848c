"""Does RL raise held-out accuracy? The L0 effect measured on 2 CPU cores, paired and tested.

Runs the learner's ``cpu-rl`` preset (or any preset, with overrides) end to end and prints one
table: the held-out EM/F1 after SFT and after RL on the same questions, the paired test of the RL
step (McNemar's exact test on per-question EM, bootstrap intervals of the EM and F1 differences),
what RL saw during training, and the machine, versions, load and time. The stages (see
``python -m l0_learner.run --help``):

1. oracle demonstrations on the bundled train questions (``hotpotqa-train``), SFT (cold start);
2. greedy evaluation on ``hotpotqa-dev[:400]`` (held out from everything else);
3. agentic policy gradient on ``hotpotqa-dev[400:]`` (questions neither SFT nor the evaluation
   sees), 24 updates of 16 episodes (4 questions × 4 rollouts), the paper's reward;
4. greedy evaluation on the same 400 questions.

    python benchmarks/rl_gain.py                                   # ~2.5 h on 2 idle cores
    python benchmarks/rl_gain.py --output-dir runs/rl-gain2 --lr 2e-5 --iterations 32
    python benchmarks/rl_gain.py --output-dir runs/cpu-rl --resume # after a stop: goes on

Everything after ``--`` or any unknown flag goes to ``l0_learner.run`` unchanged. The run
directory keeps everything (``results.md``, ``curves.png``, ``metrics.jsonl``, per-question
predictions under ``eval/``, ``data.json`` with the question ids of each stage).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import LoadSampler, cpu_name, versions, versions_line

ROOT = Path(__file__).resolve().parent.parent


def report(out: Path, seconds: float, load: str) -> str:
    """The table a person reads: inputs, the before/after rows, the paired test, training."""
    stages = json.loads((out / "stages.json").read_text())
    config = json.loads((out / "config.json").read_text())
    evals = {e["stage"]: e for e in stages.get("evals", [])}
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    updates = [m for m in metrics if "charts/em_sampled" in m]
    lines = [
        f"machine: {cpu_name()}, {os.cpu_count()} CPUs; {versions_line(versions('torch', 'transformers'))}",
        f"load during the run: {load}; wall time {seconds / 60:.1f} min",
        f"model {config['model']}; SFT on {config['sft_tasks']} ({config['sft_demos']} demonstration steps); "
        f"RL on {config['tasks']}: {config['iterations']} updates x {config['questions_per_batch']} questions x "
        f"{config['group_size']} rollouts, lr {config['lr']}, reward '{config['reward_preset']}', kl {config['kl_coef']}",
        f"held out: first {config['eval_questions']} of {config['eval_tasks']}, greedy, {config['eval_max_steps']} steps",
        "",
        "| stage | n | EM [95% CI] | F1 [95% CI] | well-formed steps | has answer |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, e in evals.items():
        lines.append(
            f"| {name} | {e['n']} | {100 * e['em']:.1f} [{100 * e['em_low']:.1f}, {100 * e['em_high']:.1f}] | "
            f"{100 * e['f1']:.1f} [{100 * e['f1_low']:.1f}, {100 * e['f1_high']:.1f}] | "
            f"{100 * e['well_formed_rate']:.0f}% | {100 * e['has_answer']:.0f}% |"
        )
    rl = evals.get("after RL", {}).get("vs")
    if rl:
        lines += [
            "",
            f"RL step ({rl['stage']} → after RL, paired): EM {100 * rl['em_diff']:+.1f} points "
            f"[{100 * rl['em_diff_low']:+.1f}, {100 * rl['em_diff_high']:+.1f}], F1 {100 * rl['f1_diff']:+.1f} "
            f"[{100 * rl['f1_diff_low']:+.1f}, {100 * rl['f1_diff_high']:+.1f}]; "
            f"{rl['wrong_to_right']} questions gained, {rl['right_to_wrong']} lost; McNemar exact p = {rl['mcnemar_p']:.3g}",
        ]
    if updates:
        first, last = updates[: max(1, len(updates) // 4)], updates[-max(1, len(updates) // 4) :]

        def mean(rows: list[dict], key: str) -> float:
            return sum(r[key] for r in rows) / len(rows)

        lines += [
            "",
            f"training (first vs last quarter of updates): rollout EM {100 * mean(first, 'charts/em_sampled'):.1f} → "
            f"{100 * mean(last, 'charts/em_sampled'):.1f}, F1 {100 * mean(first, 'charts/f1_sampled'):.1f} → "
            f"{100 * mean(last, 'charts/f1_sampled'):.1f}, reward {mean(first, 'charts/reward'):.3f} → "
            f"{mean(last, 'charts/reward'):.3f}; {sum(r['sampling/episodes'] for r in updates):.0f} episodes sampled",
        ]
    lines.append(f"\ncurves: {out / 'curves.png'}; per-question predictions: {out / 'eval'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu-rl")
    parser.add_argument("--output-dir", default="runs/cpu-rl")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the learner")
    args, rest = parser.parse_known_args(argv)
    rest = [a for a in rest if a != "--"]
    out = ROOT / args.output_dir if not Path(args.output_dir).is_absolute() else Path(args.output_dir)
    cmd = [sys.executable, "-m", "l0_learner.run", "--preset", args.preset, "--output-dir", str(out), *rest]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    print("$ " + " ".join(cmd), flush=True)
    started = time.perf_counter()
    with LoadSampler() as load:
        code = subprocess.call(cmd, cwd=ROOT, env=env)
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"the run exited with status {code}; resume it with the same command and --resume")
    print("\n" + report(out, seconds, load.summary()))


if __name__ == "__main__":
    main()
