"""Run directory, atomic checkpoints, bit-for-bit resume, and the CLI end to end (toy env)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from l0_learner.algorithms import AgenticPG
from l0_learner.runs import RunDir

from .cli import cli_args
from .test_algorithm import toy_config


def _train(tiny_path: str, out: Path, iterations: int, resume: bool = False) -> AgenticPG:
    cfg = toy_config(
        tiny_path,
        output_dir=str(out),
        tensorboard=True,
        questions_per_batch=2,
        group_size=2,
        num_envs=4,
        dynamic_sampling=True,
        drop_prob=0.5,
    )
    run = RunDir(out, tensorboard=True)
    algo = AgenticPG(cfg, run=run)
    if resume:
        algo.load(run.latest_checkpoint())
    algo.learn(iterations)
    algo.close()
    run.close()
    return algo


def test_resume_continues_bit_for_bit(tiny_path, tmp_path) -> None:
    straight = _train(tiny_path, tmp_path / "a", 4)
    _train(tiny_path, tmp_path / "b", 2)
    resumed = _train(tiny_path, tmp_path / "b", 4, resume=True)
    assert resumed.iteration == 4
    for (name, p), q in zip(straight.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q), f"{name} differs after resume"
    lines_a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lines_b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines_b] == [1, 2, 3, 4]
    for a, b in zip(lines_a, lines_b, strict=True):
        assert a["charts/reward"] == b["charts/reward"] and a["losses/pg"] == b["losses/pg"]


def test_run_dir_layout_and_atomic_checkpoints(tiny_path, tmp_path) -> None:
    out = tmp_path / "run"
    _train(tiny_path, out, 3)
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["iter_000002", "iter_000003"], "keeps the newest two, no temp folders left"
    files = sorted(p.name for p in (out / "checkpoints" / "iter_000003").iterdir())
    assert files == ["model.safetensors", "optimizer.pt", "rng.pt", "trainer_state.json"]
    state = json.loads((out / "checkpoints" / "iter_000003" / "trainer_state.json").read_text())
    assert state["iteration"] == 3 and "numpy_rng" in state and "pos" in state
    assert list((out / "tb").glob("events.out.tfevents.*"))
    # A leftover temp folder from a crash is never picked up.
    (out / "checkpoints" / "iter_000009.tmp").mkdir()
    assert RunDir(out, tensorboard=False).latest_checkpoint().name == "iter_000003"


def test_cli_runs_resumes_and_refuses_to_overwrite(tiny_path, tmp_path, capsys) -> None:
    from l0_learner.run import main

    out = tmp_path / "cli"
    args = cli_args(tiny_path, out)
    result = main([*args, "--iterations", "2"])
    assert result["iterations"] == 2
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "tiny" and config["env"] == "toy" and config["iterations"] == 2
    assert (out / "final" / "config.json").exists()
    with pytest.raises(SystemExit, match="--resume"):
        main([*args, "--iterations", "3"])
    result = main([*args, "--iterations", "3", "--resume"])
    assert result["iterations"] == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert "resumed from" in capsys.readouterr().out
