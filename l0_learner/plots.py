"""Training curves as a PNG a person can look at: reward, success, format/code rates, eval EM.

Reads what a run already writes (``metrics.jsonl``: one line per policy update; ``stages.json``:
the evaluation rows) and draws four panels against the update number. TensorBoard keeps the same
scalars; this file is for the README and for a quick look without a server. matplotlib is imported
here only (the ``Agg`` backend: no display needed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# (metric key, label) per panel; a key a run did not log is skipped.
PANELS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("training reward (L0 trajectory reward, batch mean)", (("charts/reward", "reward"),)),
    (
        "rollout success on training questions",
        (
            ("charts/em_sampled", "EM, all sampled episodes"),
            ("charts/em", "EM, the batch after dynamic sampling"),
            ("charts/f1_sampled", "F1, all sampled episodes"),
        ),
    ),
    (
        "step quality",
        (("charts/well_formed_rate", "well-formed steps"), ("charts/code_error_rate", "cells with errors")),
    ),
)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a ``metrics.jsonl`` (a torn last line, from a hard kill, is skipped)."""
    rows: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def plot_training(
    metrics: Sequence[Mapping[str, Any]],
    evals: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Draw the curves and write them to ``path`` (PNG).

    Args:
        metrics: One mapping per update with ``iteration`` and scalar metrics.
        evals: Evaluation rows (``stage``, ``em``, optional ``em_low``/``em_high`` and
            ``iterations``: the update after which it ran; stages before RL sit at update 0).
        path: Output file.
        title: Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    rows = [m for m in metrics if "iteration" in m]
    xs = [int(m["iteration"]) for m in rows]
    for ax, (panel_title, series) in zip(axes.flat, PANELS, strict=False):
        for key, label in series:
            points = [(x, float(m[key])) for x, m in zip(xs, rows, strict=True) if key in m]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("policy update")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    ax = axes.flat[3]
    for k, row in enumerate(evals):
        x = int(row.get("iterations", 0))
        em = 100 * float(row["em"])
        lo, hi = 100 * float(row.get("em_low", row["em"])), 100 * float(row.get("em_high", row["em"]))
        ax.errorbar(
            [x + 0.05 * k], [em], yerr=[[em - lo], [hi - em]], fmt="o", capsize=4, label=row.get("stage")
        )
    ax.set_title("held-out EM with 95% interval", fontsize=10)
    ax.set_xlabel("policy updates before the evaluation")
    ax.set_ylabel("EM (%)")
    ax.grid(alpha=0.3)
    if evals:
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)  # a reader never sees half a PNG
    return out


def plot_run(run_dir: str | Path, *, title: str = "") -> Path:
    """``<run_dir>/curves.png`` from the run's ``metrics.jsonl`` and ``stages.json``."""
    run_dir = Path(run_dir)
    stages_path = run_dir / "stages.json"
    stages = json.loads(stages_path.read_text()) if stages_path.exists() else {}
    return plot_training(
        read_metrics(run_dir / "metrics.jsonl"),
        stages.get("evals", []),
        run_dir / "curves.png",
        title=title or run_dir.name,
    )


__all__ = ["plot_run", "plot_training", "read_metrics"]
