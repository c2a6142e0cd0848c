"""Full fine-tuning in bfloat16 learns: float32 weights and AdamW state, bfloat16 compute (CPU autocast)."""

from __future__ import annotations

import torch

from l0_learner.algorithms import AgenticPG
from l0_learner.models import load_policy

from .test_algorithm import make_algo, toy_config


def _advantages(episodes):
    return [[1.0 if k % 2 else -1.0] * len(ep.steps) for k, ep in enumerate(episodes)]


def test_a_1e_6_update_moves_the_weights_in_bfloat16_training(tiny_path) -> None:
    """lr 1e-6 is below one bfloat16 ulp of a weight near 0.02 (~1.2e-4): bfloat16 weights updated in
    place by AdamW keep ~99% of their values. The trainer keeps float32 weights, so all move."""
    algo = make_algo(tiny_path, dtype="bfloat16", lr=1e-6, kl_coef=0.0)
    before = {n: p.detach().clone() for n, p in algo.model.named_parameters()}
    seen: list[torch.dtype] = []
    hook = algo.model.model.layers[0].mlp.down_proj.register_forward_hook(
        lambda _m, _i, out: seen.append(out.dtype)
    )
    episodes, _, _ = algo.collect()
    algo.update(episodes, _advantages(episodes))
    hook.remove()
    moved = sum(int((p.detach() != before[n]).sum()) for n, p in algo.model.named_parameters())
    total = sum(p.numel() for p in before.values())
    assert moved / total > 0.95, f"only {moved} of {total} weight elements moved with lr 1e-6"
    for n, p in algo.model.named_parameters():
        assert (p.detach() != before[n]).float().mean() > 0.5, f"{n} barely moved"
    assert all(p.dtype == torch.float32 for p in algo.model.parameters()), "trainable weights are float32"
    assert seen and set(seen) == {torch.bfloat16}, "sampling and training compute in bfloat16"
    state = next(iter(algo.optimizer.state.values()))
    assert state["exp_avg"].dtype == torch.float32
    algo.close()


def test_a_bfloat16_model_handed_to_the_trainer_is_trained_in_float32(tiny_path) -> None:
    model, tok = load_policy(tiny_path, device="cpu", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    algo = AgenticPG(toy_config(tiny_path, dtype="bfloat16", kl_coef=0.0), model=model, tokenizer=tok)
    assert all(p.dtype == torch.float32 for p in algo.model.parameters())
    assert algo.autocast == torch.bfloat16
    algo.close()


def test_sft_on_bfloat16_weights_moves_them_at_a_small_learning_rate(tiny_path) -> None:
    """The SFT cold start had the trainer's old bug: bfloat16 weights updated in place by AdamW."""
    from l0_learner.sft import sft

    model, tok = load_policy(tiny_path, device="cpu", dtype="bfloat16")
    before = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    sample = {
        "messages": [{"role": "user", "content": "Question: capital of France?"}],
        "action": "<think>It is Paris.</think><code>submit_final_answer('Paris')</code>",
    }
    sft(model, tok, [sample] * 4, epochs=1, batch_size=4, lr=1e-6, progress=False)
    moved = sum(int((p.detach() != before[n]).sum()) for n, p in model.named_parameters())
    total = sum(p.numel() for p in before.values())
    assert moved / total > 0.9, f"only {moved} of {total} weight elements moved with lr 1e-6"
    assert all(p.dtype == torch.float32 for p in model.parameters())
