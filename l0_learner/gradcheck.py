"""How close is the ``prompt_grad=False`` gradient to the exact one? Measured, not assumed.

``prompt_grad=False`` (the CPU presets' setting) scores the response with the prompt's keys and
values computed under ``no_grad``: the logprobs are the same, but the gradient of the policy loss
loses every path that runs through the prompt's keys/values (the response attends to them, and
they depend on the weights). :func:`gradient_cosine` computes both gradients of the same
token-mean policy-gradient loss on the same batch and returns their cosine similarity (1: same
direction) and norm ratio, so the approximation is a number in the README rather than a claim.

``python -m l0_learner.gradcheck --model smollm2`` measures it on SmolLM2-135M over real oracle
demonstration steps (sandboxed episodes on the bundled training questions).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .policy import response_logprobs


@dataclass(frozen=True)
class GradientAgreement:
    """The approximate gradient against the exact one on one batch.

    Attributes:
        cosine: Cosine similarity of the two flattened gradients.
        norm_ratio: ``|approximate| / |exact|``.
        rows: Samples in the batch.
        response_tokens: Response tokens in the batch.
    """

    cosine: float
    norm_ratio: float
    rows: int
    response_tokens: int


def _policy_gradient(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    advantages: Sequence[float],
    *,
    pad_id: int,
    prompt_grad: bool,
) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    total = sum(len(r) for r in responses)
    # One row at a time, gradients accumulated: the same token-mean loss as one batch, but the
    # exact path's activations over long prompts are held for one row only (8 SmolLM2 rows at
    # once peaked at 17 GB).
    for prompt, response, advantage in zip(prompts, responses, advantages, strict=True):
        logp, mask = response_logprobs(model, [prompt], [response], pad_id=pad_id, prompt_grad=prompt_grad)
        (-(advantage * logp * mask).sum() / max(1, total)).backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.requires_grad and p.grad is not None]
    model.zero_grad(set_to_none=True)
    return torch.cat(grads).double()


def gradient_cosine(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    advantages: Sequence[float],
    *,
    pad_id: int,
) -> GradientAgreement:
    """Compare the ``prompt_grad=False`` gradient with the exact one on the same batch.

    The loss is the token-mean REINFORCE loss ``−Σ adv·logp / tokens`` (what the agentic policy
    gradient differentiates, without the KL term). Every prompt needs at least 2 tokens (the
    cached path's condition).
    """
    if not (len(prompts) == len(responses) == len(advantages)) or not prompts:
        raise ValueError("prompts, responses and advantages must be non-empty and of one length")
    was_training = model.training
    model.train()
    try:
        exact = _policy_gradient(model, prompts, responses, advantages, pad_id=pad_id, prompt_grad=True)
        approx = _policy_gradient(model, prompts, responses, advantages, pad_id=pad_id, prompt_grad=False)
    finally:
        model.train(was_training)
    cosine = float(torch.nn.functional.cosine_similarity(exact, approx, dim=0))
    return GradientAgreement(
        cosine=cosine,
        norm_ratio=float(approx.norm() / exact.norm().clamp(min=1e-30)),
        rows=len(prompts),
        response_tokens=sum(len(r) for r in responses),
    )


def demonstration_batch(tokenizer: Any, n_steps: int, *, sandbox: str = "auto", seed: int = 0) -> tuple:
    """(prompts, responses) of ``n_steps`` real oracle demonstration steps (bundled train split)."""
    from .sft import record_demonstrations, tokenize_samples

    samples = record_demonstrations(n_steps, tasks="hotpotqa-train", max_steps=2, sandbox=sandbox, seed=seed)
    pairs = tokenize_samples(tokenizer, samples[:n_steps])
    return [p for p, _ in pairs], [r for _, r in pairs]


def main(argv: Sequence[str] | None = None) -> GradientAgreement:
    from .models import load_policy

    parser = argparse.ArgumentParser(
        prog="python -m l0_learner.gradcheck", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model", default="smollm2", help="'smollm2', 'tiny' or a model directory")
    parser.add_argument("--steps", type=int, default=8, help="demonstration steps in the batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, tok = load_policy(args.model, device="cpu", dtype="float32")
    prompts, responses = demonstration_batch(tok, args.steps, seed=args.seed)
    # Alternating signs: a batch where some actions are pushed up and others down, as after whitening.
    advantages = [1.0 if i % 2 == 0 else -1.0 for i in range(len(prompts))]
    result = gradient_cosine(model, prompts, responses, advantages, pad_id=tok.pad_token_id)
    print(
        f"model {args.model}: cosine(approximate, exact) = {result.cosine:.4f}, norm ratio "
        f"{result.norm_ratio:.3f} over {result.rows} demonstration steps ({result.response_tokens} response tokens)"
    )
    return result


if __name__ == "__main__":
    main()
