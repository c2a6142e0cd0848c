"""The data pipeline streams: 200k rows from a generator go through with memory that does not grow
with the rows (peak RSS of a child process, compared with the same build over 2k rows).

Each row carries a 2 KB paragraph, so 200k rows held in memory would cost over 400 MB; the bound
below (250 MB over the small build) fails any build that holds them, and leaves several times the
headroom the streaming build needs (about 80 MB of hashes and buffers at 200k rows).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = r"""
import json, resource, sys
from l0_env.pipeline import BuildConfig, build, rows_input

n, out, sample, text_bytes = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
paragraph = "x" * text_bytes

def rows():
    for i in range(n):
        # Every 10th question repeats an earlier one: dedupe sees real duplicates.
        q = i - 5 if i % 10 == 9 else i
        yield {"id": f"r{i}", "question": f"Synthetic question {q} about topic {q % 977}?",
               "answers": [f"answer {i}"], "context": [{"title": f"T{i}", "text": paragraph}]}

evals = [{"question": f"Synthetic question {q} about topic {q % 977}?", "answers": ["a"]} for q in range(0, n, 1000)]
config = BuildConfig(sample=int(sample) if sample != "-" else None, seed=0)
result = build([rows_input("syn", rows())], out, excludes=[rows_input("dev", evals)], config=config)
print(json.dumps({"rows": result.rows, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_child(tmp_path: Path, n: int, out: str, sample: str, text_bytes: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), str(tmp_path / out), sample, str(text_bytes)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow  # a scale check (~13 s); the spill-file test below streams the same 200k rows
def test_200k_rows_stream_with_bounded_memory(tmp_path: Path) -> None:
    small = run_child(tmp_path, 2_000, "small.parquet", "-", 2048)
    big = run_child(tmp_path, 200_000, "big.parquet", "-", 2048)
    # 10% repeats dropped, 200 evaluation questions (one of them a repeat's original) dropped.
    assert big["rows"] == 200_000 - 20_000 - 200
    growth = big["maxrss_mib"] - small["maxrss_mib"]
    assert growth < 250, f"peak RSS grew by {growth:.0f} MiB from 2k to 200k rows: rows are being held"


def test_200k_rows_sampled_through_the_spill_file(tmp_path: Path) -> None:
    small = run_child(tmp_path, 2_000, "small.jsonl", "1000", 1024)
    big = run_child(tmp_path, 200_000, "big.jsonl", "1000", 1024)
    assert small["rows"] == big["rows"] == 1000
    growth = big["maxrss_mib"] - small["maxrss_mib"]
    # Held rows would cost over 200 MB here; the spill file keeps them on disk.
    assert growth < 150, f"peak RSS grew by {growth:.0f} MiB from 2k to 200k rows: rows are being held"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
