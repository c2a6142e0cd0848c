"""``python -m l0_learner.run --ray-address``: RL with its notebooks on a real 3-node Ray cluster
(in a loopback-only network namespace), the learner unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the 'ray' extra is not installed")
pytest.importorskip("uvicorn", reason="the 'server' extra (the nodes' search servers) is not installed")

from l0_env.cluster.local import loopback_namespace_argv, loopback_namespace_available

SCENARIO = Path(__file__).parents[1] / "cluster" / "scenario_learner.py"


@pytest.mark.timeout(900)
def test_the_learner_trains_with_its_notebooks_on_a_ray_cluster(tiny_path, tmp_path) -> None:
    why = loopback_namespace_available()
    if why is not None:
        pytest.skip(f"no loopback-only network namespace here: {why}")
    out, run_dir = tmp_path / "report.json", tmp_path / "run"
    proc = subprocess.run(
        loopback_namespace_argv([sys.executable, str(SCENARIO), str(out), tiny_path, str(run_dir)]),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0 and out.exists(), (
        f"scenario failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    report = json.loads(out.read_text())
    assert report["iterations"] == 2
    assert not report["ray_initialized_after"], "the run shuts down the Ray connection it opened"
    lines = [m for m in report["metrics"] if "iteration" in m]
    assert [m["iteration"] for m in lines] == [1, 2]
    for m in lines:
        assert m["sampling/episodes"] == 4 and m["sampling/lost_episodes"] == 0
        assert m["perf/train_tokens"] > 0, "the policy was updated on the cluster's episodes"
    assert (run_dir / "checkpoints").is_dir()
