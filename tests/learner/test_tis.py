"""Truncated importance sampling: the per-token weights by hand, and the gradient they give."""

from __future__ import annotations

import math

import pytest
import torch

from l0_learner.algorithms.batch import Sample
from l0_learner.algorithms.loss import token_terms
from l0_learner.policy import response_logprobs

from .test_algorithm import make_algo

# Two samples, right-aligned like the trainer's tensors: row 0 has 3 response tokens, row 1 has 2.
RATIOS = [[0.5, 1.0, 3.0], [2.5, 1.0]]  # pi_trainer / pi_sampler per token, chosen
CAP = 2.0
WEIGHTS = [[0.5, 1.0, 2.0], [2.0, 1.0]]  # min(ratio, CAP)


def test_token_terms_by_hand() -> None:
    logp = torch.tensor([[-1.0, -2.0, -0.5], [0.0, -3.0, -1.5]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    sampler = logp.detach() - torch.log(torch.tensor([[0.5, 1.0, 3.0], [1.0, 2.5, 1.0]]))
    known = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])  # row 1's last token: no sampler logprob
    adv = torch.tensor([[2.0], [-1.0]])
    t = token_terms(logp, adv, mask, sampler_logp=sampler, known=known, tis_cap=CAP)
    expected_w = torch.tensor([[0.5, 1.0, 2.0], [1.0, 2.0, 1.0]])
    assert torch.allclose(t.weights * mask, expected_w * mask)
    assert torch.equal(t.clipped, torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    assert torch.allclose(t.pg.detach() * mask, -adv * expected_w * mask)
    assert t.log_ratio[1, 2] == 0.0, "an unknown sampler logprob is a ratio of 1"
    ((t.loss * mask).sum()).backward()
    assert torch.allclose(logp.grad, -adv * expected_w * mask), "d loss / d logp = -A * w"

    off = token_terms(logp, adv, mask, sampler_logp=sampler, known=known, tis=False, tis_cap=CAP)
    assert torch.equal(off.weights, torch.ones_like(logp))
    assert torch.equal(off.clipped, t.clipped), "the clip rate is measured with the correction off too"
    kl = token_terms(logp, adv, mask, ref_logp=logp.detach() - 1.0, kl_coef=0.5)
    assert torch.allclose(kl.kl, torch.full_like(logp, math.exp(-1) + 1 - 1))
    assert torch.allclose(kl.loss, kl.pg + 0.5 * kl.kl)


def _samples(algo, ratios):
    """Two real samples whose sampler logprobs are the trainer's minus log(ratio)."""
    prompts, responses = [[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14, 15]]
    with torch.no_grad():
        logp, _ = response_logprobs(algo.model, prompts, responses, pad_id=algo.tokenizer.pad_token_id)
    out = []
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        trainer = logp[i, -len(r) :].tolist()
        sampler = [lp - math.log(x) for lp, x in zip(trainer, ratios[i], strict=True)]
        out.append(Sample(p, r, sampler, advantage=[1.5, -0.5][i]))
    return out, prompts, responses


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("tis", [True, False])
def test_the_update_weights_each_token_by_its_capped_ratio(tiny_path, tis) -> None:
    """The trainer's gradient is d/dθ of -(1/N) Σ A·w·logπ with w = min(ratio, 2) (or 1 without TIS);
    it logs the mismatch, the weights' mean and the clip rate."""
    algo = make_algo(tiny_path, kl_coef=0.0, tis=tis, tis_cap=CAP, micro_batch_tokens=8)
    samples, prompts, responses = _samples(algo, RATIOS)
    algo.optimizer.zero_grad(set_to_none=True)
    sums = algo.accumulate_gradients(samples)
    got = _grads(algo.model)

    algo.optimizer.zero_grad(set_to_none=True)
    logp, mask = response_logprobs(algo.model, prompts, responses, pad_id=algo.tokenizer.pad_token_id)
    w = torch.tensor([[0.5, 1.0, 2.0], [0.0, 2.0, 1.0]]) if tis else torch.ones_like(logp)
    adv = torch.tensor([[1.5], [-0.5]])
    (-(adv * w * logp * mask).sum() / 5).backward()
    want = _grads(algo.model)
    assert set(got) == set(want)
    for n in want:
        assert torch.allclose(got[n], want[n], atol=1e-7, rtol=1e-5), n

    assert sums["known"] == 5 and sums["clipped"] == 2  # ratios 3.0 and 2.5 exceed the cap
    assert sums["weight"] == pytest.approx((0.5 + 1 + 2 + 2 + 1) if tis else 5, rel=1e-5)
    mismatch = sum(abs(math.log(x)) for row in RATIOS for x in row)
    assert sums["mismatch"] == pytest.approx(mismatch, rel=1e-4)

    episodes_metrics = _metrics_of_update(algo, samples)
    assert episodes_metrics["charts/tis_clip_rate"] == pytest.approx(2 / 5)
    assert episodes_metrics["charts/tis_weight_mean"] == pytest.approx(6.5 / 5 if tis else 1.0, rel=1e-5)
    assert episodes_metrics["charts/logprob_mismatch"] == pytest.approx(mismatch / 5, rel=1e-4)
    algo.close()


def _metrics_of_update(algo, samples):
    """``update`` on episodes that hold exactly these samples (one step each)."""
    from l0_learner.rollout import Episode, Job, StepSample

    episodes = [
        Episode(Job(0, 0, k), {}, [StepSample(s.prompt_ids, s.response_ids, s.logprobs, "", {})])
        for k, s in enumerate(samples)
    ]
    return algo.update(episodes, [[s.advantage] for s in samples])
