"""``python -m l0_env.demo``: run scripted episodes through the sandboxed env and save them.

The env's main job until a policy is trained: oracle episodes (gold titles, gold answer), a
wrong-answer and a random episode, each saved as an ``.ipynb`` notebook and a JSONL trajectory,
with a summary table of EM and L0 reward. ``--file-tasks``: the bundled tasks with attached files
instead (CSV, XLSX, PDF, DOCX, ...), each solved by :class:`FileTaskOracle` from its file, and a
random episode.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
from tqdm import tqdm

from . import ENV_ID
from .notebook import NotebookEnv
from .policies import FileTaskOracle, OraclePolicy, RandomPolicy
from .recording import append_jsonl
from .tasks import FILE_TASKS_DIR, load_tasks


def run_episode(env: gym.Env, policy, *, seed: int | None = None, task_index: int | None = None) -> dict:
    options = {"task_index": task_index} if task_index is not None else None
    obs, info = env.reset(seed=seed, options=options)
    terminated = truncated = False
    while not (terminated or truncated):
        obs, _, terminated, truncated, info = env.step(policy(obs, info))
    return info["episode_metrics"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4, help="oracle episodes (bundled dev questions)")
    parser.add_argument("--out", default="runs/demo", help="output directory for notebooks and trajectories")
    parser.add_argument("--sandbox", default="auto", choices=["auto", "bwrap", "none"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--file-tasks",
        action="store_true",
        help="the bundled tasks with attached files (l0_env/data/file_tasks)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trajectories = out / "trajectories.jsonl"
    Policy = OraclePolicy | RandomPolicy | FileTaskOracle
    runs: list[tuple[str, Policy, int | None]]
    if args.file_tasks:
        env = gym.make(ENV_ID, tasks=str(FILE_TASKS_DIR), sandbox=args.sandbox, max_steps=6)
        n_tasks = len(load_tasks(FILE_TASKS_DIR))
        runs = [("oracle", FileTaskOracle(), i) for i in range(n_tasks)]
        runs.append(("random", RandomPolicy(args.seed), 0))
    else:
        env = gym.make(ENV_ID, sandbox=args.sandbox, max_steps=6)
        runs = [("oracle", OraclePolicy("gold"), None)] * args.episodes
        runs += [("wrong-answer", OraclePolicy("wrong"), None), ("random", RandomPolicy(args.seed), None)]
    n_oracle = sum(1 for run in runs if run[0] == "oracle")
    notebook = env.unwrapped
    assert isinstance(notebook, NotebookEnv)  # what gym.make(ENV_ID) builds
    rows = []
    started = time.perf_counter()
    try:
        for i, (name, policy, task_index) in enumerate(tqdm(runs, desc="episodes", unit="ep")):
            metrics = run_episode(env, policy, seed=args.seed + i, task_index=task_index)
            episode = notebook.episode
            assert episode is not None  # the episode just run
            path = notebook.save_notebook(str(out / f"episode-{i:02d}-{name}.ipynb"))
            append_jsonl(trajectories, {"policy": name, **episode.to_dict()})
            rows.append((name, episode.task["question"][:48], episode.final_answer, metrics, path))
    finally:
        env.close()
    print(f"\n{'policy':<13} {'question':<50} {'answer':<22} {'EM':>4} {'steps':>5} {'reward':>7}")
    for name, question, answer, m, _ in rows:
        print(
            f"{name:<13} {question:<50} {str(answer)[:22]:<22} {m['em']:>4.0f} {m['length']:>5} {m['return']:>7.3f}"
        )
    print(
        f"\n{len(rows)} episodes in {time.perf_counter() - started:.1f}s; notebooks and {trajectories.name} in {out}/"
    )
    print(
        json.dumps({"mean_em_oracle": sum(r[3]["em"] for r in rows if r[0] == "oracle") / max(n_oracle, 1)})
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
