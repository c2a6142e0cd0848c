"""The cluster vector env on a real 3-node Ray cluster (a head and two env nodes, each its own
``ray start``), inside a network namespace with only loopback up, so Ray binds 127.0.0.1 and
everything it starts dies with the namespace. One run of ``scenario_venv.py`` (about a minute)
feeds every test here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the 'ray' extra is not installed")
pytest.importorskip("uvicorn", reason="the 'server' extra (the nodes' search servers) is not installed")

from l0_env.cluster.local import loopback_namespace_argv, loopback_namespace_available

SCENARIO = Path(__file__).with_name("scenario_venv.py")
pytestmark = pytest.mark.timeout(900)  # the fixture (the whole scenario) runs inside the first test


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    why = loopback_namespace_available()
    if why is not None:
        pytest.skip(f"no loopback-only network namespace here: {why}")
    out = tmp_path_factory.mktemp("ray") / "report.json"
    proc = subprocess.run(
        loopback_namespace_argv([sys.executable, str(SCENARIO), str(out)]),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0 and out.exists(), (
        f"scenario failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return json.loads(out.read_text())


def test_envs_spread_over_the_env_nodes_and_episodes_equal_the_local_ones(report) -> None:
    shards = report["where"]
    assert len(report["nodes"]) == 3
    assert len({s["node_id"] for s in shards}) == 2, "one shard on each env node (SPREAD)"
    assert sorted(i for s in shards for i in s["envs"]) == [0, 1, 2, 3]
    assert report["ray_episodes"] == report["local_episodes"], (
        "observations (rebuilt from deltas), rewards, reward components and cell statuses over the "
        "cluster must equal the same episodes run locally"
    )
    first_hit = report["ray_episodes"][0][2][0][-1]["content"]
    assert first_hit.startswith("The Seine Meets Paris"), "the search reached the node's BM25 server"
    assert report["search_servers"] == 2, "one search server per env node, not one per env or shard"
    assert report["ray_episode_log_steps"] == 3
    assert report["ray_left_initialized"] is False
    batched = report["batched"]
    assert batched["reset_obs"] == [2, 2, 2, 2]
    assert batched["step_obs"] == [str(sum(range(i + 10))) for i in range(4)], "batched step over the cluster"
    assert batched["done"] == [False] * 4 and batched["astep_terminated"] is True


def test_a_killed_node_costs_only_its_own_episodes(report) -> None:
    doomed, safe = report["kill_layout"]["2"], report["kill_layout"]["1"]
    assert report["killed_pids"] >= 3, "the whole node (raylet, its workers, the shard) was killed"
    reward, terminated, truncated, info = report["lost_result"]
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert info["env_lost"] is True and "died" in info["lost_reason"]
    assert report["lost_after_s"] < 60, "the cell in flight on the dead node must not hang"
    # The cell on the surviving node ran to its end.
    assert report["survivor_result"][2] is False and "done" in report["survivor_result"][3]
    # The dead node's idle env: its next step says its episode is gone, at once.
    assert report["idle_lost"][0] is True and report["idle_lost"][1]["env_lost"] is True
    # Its envs were re-created on the node that remains and reset there.
    assert set(report["reset_after_loss"]) == {str(i) for i in doomed}
    assert len({s["node_id"] for s in report["where_after"]}) == 1
    assert {s["node_id"] for s in report["where_after"]} == {
        s["node_id"] for s in report["where"] if s["envs"] == safe
    }
    assert report["lost_episodes"] == 2


def test_after_a_loss_every_env_keeps_stepping_and_no_result_comes_twice(report) -> None:
    seen = [tuple(x) for x in report["iter_results"]]
    assert len(seen) == len(set(seen)), "a result returned twice"
    assert {i for step, i in seen if step == 0} == {0, 1, 2, 3}
    # Finished episodes were recorded by the driver (the env nodes' disks are not needed).
    notebooks = [r for r in report["records"] if r.endswith(".ipynb")]
    assert len(notebooks) == 4 and "episodes.jsonl" in report["records"]


def test_close_leaves_no_kernel_sandbox_or_actor_on_any_node(report) -> None:
    assert report["processes_after_close"] == []
