"""Runs inside a loopback-only network namespace (see tests/learner/test_ray_learner.py): a real
3-node Ray cluster, and ``python -m l0_learner.run ... --ray-address`` training with its notebooks
on the two env nodes. argv: the report path, the tiny model, the run directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray

from l0_env.cluster.local import LocalCluster
from l0_learner.run import main

out, model, run_dir = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
env_node = {"num_cpus": 2, "resources": {"l0_env": 2}}
with LocalCluster(workers=[env_node, env_node]) as cluster:
    argv = [
        "--preset", "tiny", "--env", "notebook", "--model", model, "--output-dir", run_dir,
        "--device", "cpu", "--no-progress", "--no-tensorboard", "--iterations", "2",
        "--num-envs", "4", "--questions-per-batch", "2", "--group-size", "2", "--max-steps", "2",
        "--ray-address", cluster.address, "--ray-env-resource", "l0_env",
    ]  # fmt: skip
    result = main(argv)
    report = {
        "iterations": result["iterations"],
        "ray_initialized_after": ray.is_initialized(),
        "metrics": [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines()],
    }
out.write_text(json.dumps(report, default=str))
print("scenario done", flush=True)
