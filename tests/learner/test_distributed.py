"""torchrun on CPU: 2 gloo ranks, DDP and FSDP2, the tiny model on the toy env.

Each test starts a real ``torchrun`` (``python -m torch.distributed.run --standalone``: a free
rendezvous port, so concurrent runs do not collide), one torch thread per rank.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from l0_learner.algorithms import AgenticPG

from .cli import cli_args
from .toy_configs import TWO_RANKS, toy_config

WORKER = Path(__file__).with_name("dist_worker.py")


def torchrun(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    return proc


def test_two_ranks_split_the_rollouts_and_match_a_one_process_update(tiny_path, tmp_path) -> None:
    """Each rank runs its own question groups; both end with the same weights, and those are the
    weights one process gets from the same batch (DDP, and FSDP2 with sharded float32 weights)."""
    torchrun(str(WORKER), tiny_path, str(tmp_path))
    for strategy in ("ddp", "fsdp"):
        r0, r1 = (torch.load(tmp_path / f"{strategy}-rank{r}.pt", weights_only=False) for r in (0, 1))
        assert r0["fsdp"] == (strategy == "fsdp")
        assert (r0["groups_run"], r1["groups_run"]) == ([0, 2], [1]), "groups are dealt round-robin"
        ids = [[[s.response_ids for s in ep.steps] for ep in r["episodes"]] for r in (r0, r1)]
        assert ids[0] == ids[1] and len(ids[0]) == 6, "every rank holds the whole batch, in job order"
        assert r0["metrics"] == r1["metrics"], "metrics are reduced over the ranks"
        for name, w in r0["after"].items():
            assert torch.equal(w, r1["after"][name]), f"{strategy}: ranks disagree on {name}"
        changed = sum(not torch.equal(w, r0["before"][n]) for n, w in r0["after"].items())
        assert changed == len(r0["after"]), "every weight moves"

        # One process, the same batch: FSDP runs one forward per micro-batch (prompt_grad=True).
        cfg = toy_config(tiny_path, TWO_RANKS, prompt_grad=strategy == "fsdp")
        one = AgenticPG(cfg)
        assert all(torch.equal(p.detach(), r0["before"][n]) for n, p in one.model.named_parameters())
        metrics = one.update(r0["episodes"], r0["advantages"])
        for name, p in one.model.named_parameters():
            assert torch.allclose(p.detach(), r0["after"][name], atol=2e-6, rtol=0), (
                f"{strategy}: {name} differs from one process by "
                f"{(p.detach() - r0['after'][name]).abs().max():.2e}"
            )
        assert metrics["charts/grad_norm"] == pytest.approx(r0["metrics"]["charts/grad_norm"], rel=1e-5)
        assert metrics["perf/train_tokens"] == r0["metrics"]["perf/train_tokens"]
        one.close()


def test_torchrun_cli_fsdp_writes_rank0_checkpoints_and_resumes_bit_for_bit(tiny_path, tmp_path) -> None:
    """``torchrun -m l0_learner.run``: rank 0 writes one run directory; resuming from iteration 1
    redoes iteration 2 exactly (weights, AdamW state, metrics), every rank's RNG restored."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    a, b = tmp_path / "a", tmp_path / "b"
    flags = ("--iterations", "2", "--keep-checkpoints", "3", "--dist-strategy", "fsdp", "--no-tensorboard")
    proc = torchrun("-m", "l0_learner.run", *cli_args(tiny_path, a, *flags))
    assert proc.stdout.count("done: 2 iterations") == 1, "only rank 0 reports"
    lines = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [1, 2] and lines[0]["perf/ranks"] == 2.0
    ckpt = a / "checkpoints" / "iter_000002"
    state = torch.load(ckpt / "rng.pt", weights_only=False)
    assert len(state["ranks"]) == 2 and not torch.equal(
        state["ranks"][0]["torch"], state["ranks"][1]["torch"]
    )
    optimizer = torch.load(ckpt / "optimizer.pt", weights_only=False)
    assert "model.embed_tokens.weight" in optimizer["state"], "FSDP optimizer state is by parameter name"

    shutil.copytree(a, b)
    shutil.rmtree(b / "checkpoints" / "iter_000002")
    proc = torchrun("-m", "l0_learner.run", *cli_args(tiny_path, b, *flags, "--resume"))
    assert proc.stdout.count("resumed from") == 1
    wa, wb = load_file(ckpt / "model.safetensors"), load_file(b / "checkpoints/iter_000002/model.safetensors")
    assert set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)
    ob = torch.load(b / "checkpoints" / "iter_000002" / "optimizer.pt", weights_only=False)
    for k, v in optimizer["state"].items():
        assert torch.equal(v["exp_avg_sq"], ob["state"][k]["exp_avg_sq"])
    ma, mb = (
        [_without_perf(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (a, b)
    )
    assert ma == mb
    final = AutoModelForCausalLM.from_pretrained(str(a / "final"))
    for n, p in final.named_parameters():
        assert torch.equal(p.detach(), wa[n]), f"final/ is not the trained {n}"


def _without_perf(line: str) -> dict:
    return {k: v for k, v in json.loads(line).items() if not k.startswith("perf/")}
