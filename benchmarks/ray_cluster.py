"""The notebook vector env on a local Ray cluster of 1, 2 and 3 env nodes vs the local vector env.

    python benchmarks/ray_cluster.py [--envs 8] [--steps 10] [--rounds 3]

Re-runs itself inside a network namespace with only loopback up (``unshare``; root or user
namespaces), where each configuration gets a fresh :class:`l0_env.cluster.local.LocalCluster`: a
head without CPUs and 1-3 env nodes, each a separate ``ray start`` on this machine. Measured, side
by side in one run:

* **reset latency**: ``reset()`` of all envs (median of ``--rounds``), warm pools;
* **steps/s**: ``step_some`` over all envs with a trivial cell (``print(1)``), ``--steps`` batches,
  after ``--settle`` seconds for the warm pools to refill (kernel starts would otherwise compete);
* **per-step cost of the Ray hop**: one env stepped alone, sequentially, ``--steps`` times, over
  Ray and locally (ms per step, median); the difference is what the hop adds to a cell.

All nodes share this machine's cores, so more nodes cannot show more throughput here: the
figures show the overhead and that the work spreads, not a cluster's scaling.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import load_line, machine_line, markdown_table, versions, versions_line

INSIDE = "L0_BENCH_IN_NAMESPACE"
CELL = "<think>t</think><code>print(1)</code>"


def timed_resets(venv, rounds: int) -> float:
    times = []
    for r in range(rounds):
        t0 = time.perf_counter()
        venv.reset(seed=r)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def steps_per_s(venv, n: int, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        venv.step_some({i: CELL for i in range(n)})
    return n * steps / (time.perf_counter() - t0)


def one_env_ms(venv, steps: int) -> float:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        venv.step_some({0: CELL})
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def measure(venv, args) -> tuple[float, float, float]:
    reset_s = timed_resets(venv, args.rounds)
    time.sleep(args.settle)  # the warm pools refill after resets (~0.5 s CPU a kernel): not timed
    rate = steps_per_s(venv, args.envs, args.steps)
    venv.reset(seed=99)
    time.sleep(args.settle)
    return reset_s, rate, one_env_ms(venv, args.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30, help="batched steps, and single-env steps")
    parser.add_argument(
        "--settle", type=float, default=8.0, help="seconds to let the warm pools refill before timing steps"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed resets of all envs")
    parser.add_argument("--nodes", default="1,2,3", help="env-node counts to run")
    args = parser.parse_args()
    if os.environ.get(INSIDE) != "1":
        from l0_env.cluster.local import loopback_namespace_argv

        os.environ[INSIDE] = "1"
        os.execvp("unshare", loopback_namespace_argv([sys.executable, *sys.argv]))

    import ray

    from l0_env.cluster.local import LocalCluster
    from l0_env.vector import NotebookVectorEnv, make_notebook_vector_env

    settings = {"max_steps": 10_000, "cell_timeout": 30.0}
    load0 = os.getloadavg()[0]
    rows = []
    local = NotebookVectorEnv(args.envs, **settings)
    reset_s, rate, ms = measure(local, args)
    local.close()
    rows.append(["local (NotebookVectorEnv)", "-", reset_s, rate, ms, "-"])
    local_ms = ms
    for nodes in [int(x) for x in args.nodes.split(",")]:
        worker = {"num_cpus": 2, "resources": {"l0_env": 1}}
        with LocalCluster(workers=[worker] * nodes) as cluster:
            ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
            t0 = time.perf_counter()
            venv = make_notebook_vector_env(
                args.envs, executor="ray", shard_resources={"l0_env": 1}, **settings
            )
            build_s = time.perf_counter() - t0
            reset_s, rate, ms = measure(venv, args)
            shards = len({s["node_id"] for s in venv.where()})
            venv.close()
            ray.shutdown()
        rows.append([f"ray, {nodes} env node(s) ({shards} used)", build_s, reset_s, rate, ms, ms - local_ms])
        print(f"  done: {nodes} node(s)", file=sys.stderr, flush=True)
    load1 = os.getloadavg()[0]
    print(machine_line())
    print(versions_line(versions("ray", "gymnasium", bwrap=True)))
    print(load_line(load0, load1))
    print(
        f"inputs:   {args.envs} envs, cell {CELL!r}, {args.steps} steps, {args.rounds} timed resets; "
        "each env node: ray start --num-cpus 2, all nodes on this machine"
    )
    print()
    print(
        markdown_table(
            ["executor", "start s", "reset all s (median)", "steps/s", "one env ms/step", "Ray hop ms"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
