"""Learner throughput: rollout tokens/s, train tokens/s, and where the wall time goes.

Runs a few iterations of the agentic policy gradient (``l0_learner.algorithms.AgenticPG``) on the
real sandboxed notebook env (or the pure-Python toy env with ``--env toy``) for each model and
prints one row per model and rollout mode: generated tokens per second of generation time, trained
(action) tokens per second of update time, and the shares of wall time spent generating, waiting for
the env and training. Iteration 1 is a warm-up and is left out of the numbers.

``env_pct`` is the time the rollout *waited* for the env (cells, search, resets) with nothing to
generate; ``env_busy_pct`` is the time during which any env call was running, overlapped with
generation or not. ``--rollout overlap`` (the default) lets finished episodes generate while other
cells still run (``l0_learner.rollout``); ``--rollout sync`` runs the old synchronous rounds
(``run_episodes(overlap=False)``): there env_pct == env_busy_pct. ``--rollout overlap sync`` measures
both in one process, one after the other.

    python benchmarks/learner_throughput.py                       # tiny + smollm2 on CPU
    python benchmarks/learner_throughput.py --models tiny --rollout overlap sync
    python benchmarks/learner_throughput.py --models smollm2 --device cuda --iterations 4
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from common import machine_line, uptime

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bench(model: str, args: argparse.Namespace, rollout: str = "overlap") -> dict:
    import functools

    import l0_learner.algorithms.agentic_pg as apg
    from l0_learner.algorithms import AgenticPG
    from l0_learner.config import make_config

    cfg = make_config(
        model=model,
        env=args.env,
        device=args.device,
        max_steps=args.max_steps,
        max_new_tokens=args.max_new_tokens,
        questions_per_batch=args.questions,
        group_size=args.group_size,
        num_envs=args.questions * args.group_size,
        dynamic_sampling=False,
        prompt_grad=args.prompt_grad,
        lr=1e-6,
        tensorboard=False,
        progress=False,
        seed=0,
    )
    t0 = time.perf_counter()
    algo = AgenticPG(cfg)
    load_s = time.perf_counter() - t0
    busy: list[float] = []  # RolloutTimings.env_busy_s per iteration (not in the iteration's metrics)
    collect = algo.collect

    def collect_and_keep() -> tuple:
        episodes, stats, timings = collect()
        busy.append(timings.env_busy_s)
        return episodes, stats, timings

    algo.collect = collect_and_keep  # type: ignore[method-assign]
    run_episodes = apg.run_episodes
    if rollout == "sync":
        apg.run_episodes = functools.partial(run_episodes, overlap=False)
    rows = []
    try:
        for _ in range(args.iterations + 1):
            rows.append(algo.train_iteration())
    finally:
        apg.run_episodes = run_episodes
        algo.close()
    rows, busy = rows[1:], busy[1:]  # warm-up: first kernel starts, index load, allocator growth

    def total(key: str) -> float:
        return sum(r[key] for r in rows)

    wall = total("perf/iteration_s")
    gen, env, train = total("perf/generate_s"), total("perf/env_s"), total("perf/train_s")
    gen_tokens = sum(r["perf/gen_tokens_per_s"] * r["perf/generate_s"] for r in rows)
    return {
        "model": model,
        "rollout": rollout,
        "params_m": sum(p.numel() for p in algo.model.parameters()) / 1e6,
        "load_s": load_s,
        "episodes": total("charts/episodes"),
        "steps/ep": sum(r["charts/steps_per_episode"] for r in rows) / len(rows),
        "gen_tok": gen_tokens,
        "rollout_tok_s": gen_tokens / gen if gen else 0.0,
        "train_tok_s": total("perf/train_tokens") / train if train else 0.0,
        "gen_pct": 100 * gen / wall,
        "env_pct": 100 * env / wall,
        "env_busy_pct": 100 * sum(busy) / wall,
        "train_pct": 100 * train / wall,
        "other_pct": 100 * (wall - gen - env - train) / wall,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--env", default="notebook", choices=["notebook", "toy"])
    parser.add_argument("--iterations", type=int, default=2, help="measured iterations (after 1 warm-up)")
    parser.add_argument("--questions", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prompt-grad", action="store_true", help="backpropagate through the prompt too")
    parser.add_argument(
        "--rollout",
        nargs="+",
        default=["overlap"],
        choices=["overlap", "sync"],
        help="rollout scheduling: overlap (slow cells do not hold up others) and/or sync rounds",
    )
    args = parser.parse_args()

    import torch
    import transformers

    print(
        f"{machine_line()}; "
        f"{torch.cuda.get_device_name(0) if args.device.startswith('cuda') else 'CPU only'}; python "
        f"{platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"load at start: {uptime()}")
    print(
        f"inputs: env={args.env}, {args.questions} questions x {args.group_size} rollouts per iteration, "
        f"max_steps={args.max_steps}, max_new_tokens={args.max_new_tokens}, prompt_grad={args.prompt_grad}, "
        f"{args.iterations} measured iterations after 1 warm-up; the machine's other load is not controlled"
    )
    cols = [
        ("model", "{}"),
        ("rollout", "{}"),
        ("params_m", "{:.1f}M"),
        ("episodes", "{:.0f}"),
        ("steps/ep", "{:.2f}"),
        ("gen_tok", "{:.0f}"),
        ("rollout_tok_s", "{:.1f}"),
        ("train_tok_s", "{:.1f}"),
        ("gen_pct", "{:.0f}%"),
        ("env_pct", "{:.0f}%"),
        ("env_busy_pct", "{:.0f}%"),
        ("train_pct", "{:.0f}%"),
        ("other_pct", "{:.0f}%"),
        ("wall_s", "{:.1f}"),
    ]
    print("| " + " | ".join(c for c, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for model in args.models:
        for rollout in args.rollout:
            row = bench(model, args, rollout)
            print("| " + " | ".join(fmt.format(row[c]) for c, fmt in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
