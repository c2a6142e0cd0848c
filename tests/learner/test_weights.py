"""The weights a separate sampler gets after every update: full, HF-named, LoRA merged, never stale."""

from __future__ import annotations

import copy

import pytest
import torch

from l0_learner.backends.hf import HFBackend
from l0_learner.weights import sampler_weights

from .test_algorithm import make_algo


class SyncingHF(HFBackend):
    """The real hf sampler, plus the hooks a backend with weights of its own (vLLM) implements."""

    holds_weights = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.synced: list[dict[str, torch.Tensor]] = []
        self.versions: list[int | None] = []
        self.sleeps = 0

    def sleep(self) -> None:
        self.sleeps += 1

    def sync_weights(self, weights: dict[str, torch.Tensor], version: int | None = None) -> None:
        self.synced.append(weights)
        self.versions.append(version)


def test_the_sampler_gets_the_new_weights_after_every_update_and_on_resume(tiny_path, tmp_path) -> None:
    from l0_learner.runs import RunDir

    algo = make_algo(tiny_path)
    algo.run = RunDir(tmp_path, tensorboard=False)
    algo.backend = SyncingHF(algo.model, algo.tokenizer, max_new_tokens=8, batch_size=16)
    for k in range(2):
        algo.train_iteration()
        assert len(algo.backend.synced) == k + 1
        assert algo.backend.sleeps == k + 1, "the engine sleeps while the trainer steps"
        pushed, live = algo.backend.synced[-1], algo.model.state_dict()
        assert set(pushed) == set(live) and "lm_head.weight" in pushed, "tied output layer included"
        assert all(torch.equal(pushed[n], live[n].cpu()) for n in live)
    path = algo.save()
    algo.train_iteration()
    algo.load(path)
    assert len(algo.backend.synced) == 4, "a resumed run pushes the checkpoint's weights"
    # Each push names the updates in it (the vLLM sampler's seeds depend on it): resume says 2 again.
    assert algo.backend.versions == [1, 2, 3, 2]
    assert all(torch.equal(algo.backend.synced[-1][n], t) for n, t in algo.model.state_dict().items())
    algo.close()


def test_a_backend_that_samples_from_the_trained_module_gets_no_sync(tiny_path, monkeypatch) -> None:
    """``hf`` holds no weights of its own: no full copy of the policy is gathered for it."""
    import l0_learner.weights as weights

    gathered = []
    monkeypatch.setattr(weights, "sampler_weights", lambda *a, **k: gathered.append(1) or {})
    algo = make_algo(tiny_path)
    assert type(algo.backend) is HFBackend and not algo.backend.holds_weights
    algo.train_iteration()
    assert gathered == []
    algo.close()


def test_lora_weights_are_merged_out_of_place_under_plain_names(tiny_path) -> None:
    pytest.importorskip("peft")
    algo = make_algo(tiny_path, lora_r=4, lora_alpha=8)
    for _ in range(2):
        episodes, _, _ = algo.collect()
        algo.update(episodes, algo.advantages(episodes))
    base_before = {n: p.detach().clone() for n, p in algo.model.named_parameters() if not p.requires_grad}
    got = sampler_weights(algo.model)
    merged = copy.deepcopy(algo.model).merge_and_unload().state_dict()
    assert set(got) == set(merged), "the plain model's names (no base_model./base_layer./lora_)"
    for name, t in merged.items():
        assert torch.allclose(got[name], t, atol=1e-7, rtol=0), name
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(
        got[q], base_before[f"base_model.model.{q.replace('.weight', '.base_layer.weight')}"]
    )
    assert all(t.dtype == torch.bfloat16 for t in sampler_weights(algo.model, torch.bfloat16).values())
    assert all(
        torch.equal(p, base_before[n]) for n, p in algo.model.named_parameters() if n in base_before
    ), "the frozen base is left as it was"
    algo.close()
