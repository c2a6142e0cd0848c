"""The gpu-7b preset: L0's settings, and it refuses to run on the bundled sample questions."""

from __future__ import annotations

import pytest

from l0_learner.config import parse_cli


def test_gpu_7b_needs_tasks() -> None:
    with pytest.raises(ValueError, match="--preset gpu-7b needs --tasks FILE"):
        parse_cli(["--preset", "gpu-7b"])


def test_gpu_7b_holds_l0s_settings(tmp_path) -> None:
    tasks = tmp_path / "train.jsonl"
    tasks.write_text('{"question": "q?", "answers": ["a"]}\n')
    with pytest.raises(ValueError, match=r"tasks: data spec 'missing.jsonl'.*nor an existing file"):
        parse_cli(["--preset", "gpu-7b", "--tasks", "missing.jsonl"])
    cfg = parse_cli(["--preset", "gpu-7b", "--tasks", str(tasks)])
    assert (cfg.max_steps, cfg.max_context_tokens, cfg.max_new_tokens) == (8, 16384, 3072)
    assert (cfg.questions_per_batch, cfg.group_size, cfg.lr, cfg.lora_r) == (64, 4, 1e-6, 0)
    assert (cfg.backend, cfg.dist_strategy, cfg.dtype, cfg.tis) == ("vllm", "fsdp", "bfloat16", True)
    assert cfg.micro_batch_tokens >= cfg.max_context_tokens + cfg.max_new_tokens, "one sample fits"
    assert cfg.vllm_devices == "7" and 7 * cfg.num_envs >= 64 * 4, "7 trainer ranks, vLLM on GPU 7"
    lora = parse_cli(
        ["--preset", "gpu-7b", "--tasks", str(tasks), "--lora-r", "64", "--dist-strategy", "ddp"]
    )
    assert lora.lora_r == 64 and lora.dist_strategy == "ddp"
