"""The per-token loss of the agentic policy gradient, with the truncated importance-sampling correction.

Pure tensor functions (no model, no IO); :meth:`l0_learner.algorithms.AgenticPG.update` applies
them per micro-batch. Shapes: ``(rows, tokens)``, right-aligned, ``mask`` 1 on response tokens.

TIS (truncated importance sampling; Yao et al. 2025, "Your Efficient RL Framework Secretly Brings
You Off-Policy RL Training", as in verl's ``tis_imp_ratio_cap``): the sampler (vLLM, or bfloat16
kernels) and the trainer never compute exactly the same distribution, so the tokens were drawn
from ``π_sampler`` while the gradient is of ``π_trainer``. Each token's term is weighted by
``w = min(π_trainer(y) / π_sampler(y), C)``, detached: the importance ratio of the sampled token,
capped so that a token the sampler found far less likely than the trainer does not dominate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .advantages import k3_kl


@dataclass
class TokenTerms:
    """Per-token pieces of one micro-batch's loss (all ``(rows, tokens)``).

    Attributes:
        loss: What to sum (times the mask) and backpropagate: ``pg + kl_coef · kl``.
        pg: The (weighted) policy-gradient term; its value is ``−A·w`` (the ratio
            ``exp(logp − logp.detach())`` is 1 in value, ``∇logp`` in gradient).
        kl: The k3 KL to the reference (zeros without one).
        weights: The importance weights applied (ones with the correction off).
        log_ratio: ``logπ_trainer − logπ_sampler`` of each sampled token (detached; 0 where no
            sampler logprob is known).
        ratio: ``exp(log_ratio)``.
        clipped: 1 where the ratio exceeded the cap.
        known: 1 where the sampler's logprob is known (masked response tokens only).
    """

    loss: torch.Tensor
    pg: torch.Tensor
    kl: torch.Tensor
    weights: torch.Tensor
    log_ratio: torch.Tensor
    ratio: torch.Tensor
    clipped: torch.Tensor
    known: torch.Tensor


def truncated_importance_weights(
    logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(weights, ratio, clipped)``: ``ratio = exp(logp − sampler_logp)`` (detached),
    ``weights = min(ratio, cap)``, ``clipped = ratio > cap`` (as a float mask)."""
    ratio = torch.exp(logp.detach() - sampler_logp)
    return ratio.clamp(max=cap), ratio, (ratio > cap).to(ratio.dtype)


def token_terms(
    logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    sampler_logp: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
    tis: bool = True,
    tis_cap: float = 2.0,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> TokenTerms:
    """The per-token loss ``−A·w·exp(logp − logp.detach()) + kl_coef·k3``.

    Args:
        logp: Trainer logprobs of the sampled tokens (with the graph).
        advantages: Each token's advantage (broadcastable, e.g. ``(rows, 1)``).
        mask: 1 on response tokens.
        sampler_logp: The sampler's logprobs of the same tokens.
        known: 1 where ``sampler_logp`` holds a value (a text-only backend reports none);
            default: every masked token.
        tis: Apply the importance weights; False is the uncorrected update (the ratios and the
            share above the cap are still measured).
        tis_cap: Cap C of the importance weights.
        ref_logp: Reference-policy logprobs (no graph) for the KL term.
        kl_coef: Weight of the KL term.
    """
    known = mask if known is None else known * mask
    if sampler_logp is None:
        sampler_logp, known = logp.detach(), torch.zeros_like(mask)
    # Where the sampler's logprob is unknown, compare the trainer with itself: ratio 1, weight 1.
    sampler_logp = torch.where(known > 0, sampler_logp, logp.detach())
    weights, ratio, clipped = truncated_importance_weights(logp, sampler_logp, tis_cap)
    if not tis:
        weights = torch.ones_like(ratio)
    pg = -advantages * weights * torch.exp(logp - logp.detach())
    kl = k3_kl(logp, ref_logp) if ref_logp is not None else torch.zeros_like(logp)
    loss = pg + kl_coef * kl if ref_logp is not None else pg
    return TokenTerms(
        loss=loss,
        pg=pg,
        kl=kl,
        weights=weights,
        log_ratio=logp.detach() - sampler_logp,
        ratio=ratio,
        clipped=clipped * known,
        known=known,
    )
