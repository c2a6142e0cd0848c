"""Runs inside a loopback-only network namespace (see test_ray_cluster.py): a real 3-node Ray
cluster (a head without CPUs, two env nodes), the cluster vector env on it, and the same episodes
run locally. Writes what it saw as JSON to argv[1]; the test asserts on it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import ray

import l0_env
from l0_env.cluster.local import LocalCluster
from l0_env.vector import NotebookVectorEnv

OUT = Path(sys.argv[1])
report: dict = {}


def save() -> None:
    OUT.write_text(json.dumps(report, indent=1, default=str))


def scripted(i: int, step: int) -> str:
    """Deterministic actions: a search, a computation, then an answer."""
    if step == 0:
        return (
            f"<think>look it up</think><code>hits = web_search('Paris {i}')\nprint(hits[0]['title'])</code>"
        )
    if step == 1:
        return f"<think>compute</think><code>x = sum(range({i + 10}))\nprint(x)</code>"
    return "<think>answer</think><code>notepad.answer = 'Paris'</code>"


def run_episodes(venv, n: int) -> list[list]:
    """Each env: reset with a fixed seed and task, three scripted steps; the comparable parts."""
    resets = venv.reset_some({i: {"seed": 100 + i, "options": {"task_index": i}} for i in range(n)})
    out = [[resets[i][0], resets[i][1].get("task")] for i in range(n)]
    for step in range(3):
        results = venv.step_some({i: scripted(i, step) for i in range(n)})
        for i in range(n):
            obs, reward, terminated, truncated, info = results[i]
            out[i].append(
                [obs, reward, terminated, truncated, info.get("reward_components"), info.get("cell_status")]
            )
    return out


def kernel_processes() -> list[str]:
    """Command lines of every kernel sandbox or kernel process in this PID namespace."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if (
                "bwrap" in cmd.split(" ")[0]
                or "l0_env.kernel" in cmd
                or "ray::EnvShard" in cmd
                or "ray::NodeSearch" in cmd
            ):
                found.append(cmd[:200])
    return found


env_node = {"num_cpus": 2, "resources": {"l0_env": 2}}
started = time.monotonic()
with LocalCluster(workers=[env_node, env_node]) as cluster:
    report["cluster_start_s"] = time.monotonic() - started
    os.environ["RAY_ADDRESS"] = cluster.address  # what "auto" finds on a real cluster's nodes
    settings = {"max_steps": 3, "cell_timeout": 30.0}
    n = 4

    # 1. The same episodes on the cluster and locally; the README's example, verbatim but for n.
    venv = gym.make_vec(
        "L0Notebook-v0",
        num_envs=n,
        executor="ray",
        ray_address="auto",
        shard_resources={"l0_env": 1},
        **settings,
    )
    report["where"] = venv.where()
    report["nodes"] = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    report["ray_episodes"] = run_episodes(venv, n)
    report["ray_episode_log_steps"] = len(venv.episode(0).steps)
    report["search_servers"] = sum("ray::NodeSearchServer" in cmd for cmd in kernel_processes())
    # gymnasium's batched API and the asyncio one, over the cluster.
    obs, infos = venv.reset(seed=5)
    batched = venv.step([scripted(i, 1) for i in range(n)])
    single = asyncio.run(venv.astep(2, "<think>a</think><code>submit_final_answer('Paris')</code>"))
    report["batched"] = {
        "reset_obs": [len(o) for o in obs],
        "step_obs": [o[-1]["content"].split("\n")[0] for o in batched[0]],
        "done": [bool(t or u) for t, u in zip(batched[2], batched[3], strict=True)],
        "astep_terminated": single[2],
    }
    venv.close()
    report["ray_left_initialized"] = ray.is_initialized()  # the venv started the connection: it ends it
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    local = NotebookVectorEnv(n, **settings)
    report["local_episodes"] = run_episodes(local, n)
    local.close()
    save()

    # 2. A worker node killed mid-episode.
    record_dir = tempfile.mkdtemp(prefix="l0-ray-records-")
    venv = l0_env.vector.make_notebook_vector_env(
        n, executor="ray", shard_resources={"l0_env": 1}, record_dir=record_dir, **settings
    )
    where = venv.where()
    node_of_worker = {}
    for k in (1, 2):  # which worker node holds which shard: by the nodes' PIDs
        pids = set(cluster.node_pids(k))
        for shard in where:
            if shard["pid"] in pids:
                node_of_worker[k] = shard["envs"]
    report["kill_layout"] = node_of_worker
    doomed, safe = node_of_worker[2], node_of_worker[1]
    venv.reset(seed=0)
    slow = "<think>wait</think><code>import time\ntime.sleep(25)\nprint('done')</code>"
    quick = "<think>w</think><code>print(1 + 1)</code>"
    futures = {doomed[0]: venv.submit_step(doomed[0], slow), safe[0]: venv.submit_step(safe[0], slow)}
    time.sleep(3)  # both cells are running
    t_kill = time.monotonic()
    report["killed_pids"] = len(cluster.kill_worker(2))
    lost = futures[doomed[0]].result(timeout=120)
    report["lost_after_s"] = time.monotonic() - t_kill
    report["lost_result"] = [lost[1], lost[2], lost[3], lost[4]]
    survived = futures[safe[0]].result(timeout=120)
    report["survivor_result"] = [survived[1], survived[2], survived[3], survived[0][-1]["content"][-200:]]
    # The doomed node's other env was idle: its episode died too; its next step says so at once.
    t0 = time.monotonic()
    idle = venv.step_some({doomed[1]: quick})[doomed[1]]
    report["idle_lost"] = [idle[3], idle[4], time.monotonic() - t0]
    # Everything keeps stepping: reset the lost envs (now on the surviving node), finish all.
    results = venv.reset_some({i: {"seed": i} for i in doomed})
    report["reset_after_loss"] = {i: len(r[0]) for i, r in results.items()}
    report["where_after"] = venv.where()
    seen = []
    live = list(range(n))
    for step in range(3):
        done = {}
        for i, result in venv.iter_step_some({i: scripted(i, step) for i in live}):
            seen.append((step, i))
            done[i] = result[2] or result[3]
        live = [i for i in live if not done[i]]
    report["iter_results"] = seen
    report["lost_episodes"] = venv.lost_episodes
    report["records"] = sorted(p.name for p in Path(record_dir).iterdir())
    venv.close()
    time.sleep(2)
    deadline = time.monotonic() + 30
    while kernel_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    report["processes_after_close"] = kernel_processes()
    save()
    ray.shutdown()
print("scenario done", flush=True)
