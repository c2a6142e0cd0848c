"""The training-curves PNG (l0_learner.plots)."""

from __future__ import annotations

import json

from l0_learner.plots import plot_run, read_metrics


def test_plot_run_draws_every_panel_from_the_run_files(tmp_path):
    lines = [
        {
            "iteration": i,
            "charts/reward": 0.1 * i,
            "charts/em": 0.2,
            "charts/em_sampled": 0.1 * i,
            "charts/well_formed_rate": 1.0,
            "charts/code_error_rate": 0.1,
        }
        for i in range(1, 6)
    ]
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps(m) + "\n" for m in lines) + '{"iteration": 6, "cha'
    )
    evals = [
        {"stage": "after SFT", "em": 0.12, "em_low": 0.08, "em_high": 0.17},
        {"stage": "after RL", "em": 0.15, "em_low": 0.11, "em_high": 0.2, "iterations": 5},
    ]
    (tmp_path / "stages.json").write_text(json.dumps({"evals": evals}))
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 5, "the torn last line is skipped"
    png = plot_run(tmp_path)
    assert png == tmp_path / "curves.png"
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[0] > 600 and image.shape[1] > 1000
    assert image[..., :3].std() > 0.05, "something was drawn"
    assert not list(tmp_path.glob("*.tmp.png"))


def test_plot_run_without_metrics_still_writes_a_figure(tmp_path):
    assert plot_run(tmp_path).exists()
