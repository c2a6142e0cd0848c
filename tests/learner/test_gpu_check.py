"""benchmarks/gpu_check.py's CPU dry run: the GPU check's logic runs end to end on a small model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

GPU_CHECK = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_gpu_check_dry_run_on_cpu(tmp_path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "gpu_check.json"
    argv = ["--device", "cpu", "--small", "--no-vllm", "--threads", "1", "--out", str(out)]
    assert module.main(argv) == 0, capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [r["stage"] for r in rows] == ["hf rollout", "hf rollout", "update (bf16 compute, fp32 weights)"]
    assert [r["batch"] for r in rows] == [2, 4, 4] and all(r["tokens"] > 0 for r in rows)
    assert rows[-1]["weights_moved"] > 0.9, "lr 1e-6 in bfloat16 compute moves the float32 weights"
    assert "[update] PASS" in capsys.readouterr().out
