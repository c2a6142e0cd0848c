"""The command line that learner tests give ``l0_learner.run.main``: the tiny preset, offline, on CPU."""

from __future__ import annotations

from pathlib import Path


def cli_args(model: str, out: Path, *extra: str, env: str = "toy") -> list[str]:
    """``--preset tiny`` with ``model`` on ``env``, writing to ``out``, no progress bar; then ``extra``."""
    base = ["--preset", "tiny", "--env", env, "--model", model, "--output-dir", str(out)]
    return [*base, "--device", "cpu", "--no-progress", *extra]
