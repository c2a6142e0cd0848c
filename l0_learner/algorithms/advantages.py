"""Pure math of the agentic policy gradient: step rewards, returns, advantages, KL, dynamic sampling.

Plain Python/NumPy on plain data, so every piece is tested exactly (see the worked example in
``tests/learner/test_advantages.py``: 3 steps, one code error, right answer → step rewards
[0.0667, 0.0333, 0.8667], returns [0.880, 0.857, 0.867]).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from l0_env.rewards import RewardWeights, l0_step_rewards


def step_rewards(
    components: Sequence[Mapping[str, Any]], weights: RewardWeights | None = None
) -> list[float]:
    """L0's per-step rewards from the env's per-step components.

    ``r_t = w_format·format_t/T + w_code·code_t/T``, plus ``w_qa·qa`` on the last step (qa is read
    from the last step's components; a missing qa counts 0).
    """
    if not components:
        return []
    qa = components[-1].get("qa") or 0.0
    return l0_step_rewards(
        [float(c.get("format") or 0.0) for c in components],
        [float(c.get("code") or 0.0) for c in components],
        float(qa),
        weights or RewardWeights(),
    )


def discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    """REINFORCE++ step returns ``G_t = r_t + γ·G_{t+1}`` (no critic, no bootstrap)."""
    out = [0.0] * len(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def whiten(values: Sequence[float], eps: float = 1e-6) -> list[float]:
    """``(x − mean) / (std + eps)`` over all values (population std); one value → 0."""
    if not values:
        return []
    arr = np.asarray(values, dtype=np.float64)
    return ((arr - arr.mean()) / (arr.std() + eps)).tolist()


def agentic_pg_advantages(
    episodes_components: Sequence[Sequence[Mapping[str, Any]]],
    *,
    gamma: float = 0.95,
    weights: RewardWeights | None = None,
    normalize: bool = True,
) -> list[list[float]]:
    """L0's advantages: step rewards → discounted step returns → whitened over every step of the batch."""
    returns = [discounted_returns(step_rewards(ep, weights), gamma) for ep in episodes_components]
    if not normalize:
        return returns
    flat = whiten([g for ep in returns for g in ep])
    out, k = [], 0
    for ep in returns:
        out.append(flat[k : k + len(ep)])
        k += len(ep)
    return out


def grpo_advantages(
    episodes_components: Sequence[Sequence[Mapping[str, Any]]],
    groups: Sequence[int],
    *,
    weights: RewardWeights | None = None,
    eps: float = 1e-6,
) -> list[list[float]]:
    """GRPO-style: each episode's total reward normalised within its group; every step shares it."""
    totals = [math.fsum(step_rewards(ep, weights)) for ep in episodes_components]
    by_group: dict[int, list[float]] = {}
    for g, total in zip(groups, totals, strict=True):
        by_group.setdefault(g, []).append(total)
    stats = {g: (float(np.mean(v)), float(np.std(v))) for g, v in by_group.items()}
    out = []
    for ep, g, total in zip(episodes_components, groups, totals, strict=True):
        mean, std = stats[g]
        out.append([(total - mean) / (std + eps)] * len(ep))
    return out


def group_is_uniform(correct: Sequence[bool]) -> bool:
    """True when a group's answers are all right or all wrong (no learning signal between them)."""
    return all(correct) or not any(correct)


def dynamic_sampling_filter(
    group_correct: Sequence[Sequence[bool]], rng: np.random.Generator, drop_prob: float = 0.5
) -> tuple[list[int], list[int]]:
    """Split group indices into (kept, dropped): uniform groups are dropped with ``drop_prob``.

    Mixed groups are always kept. One uniform draw is made per uniform group, in order.
    """
    kept, dropped = [], []
    for i, correct in enumerate(group_correct):
        if group_is_uniform(correct) and rng.random() < drop_prob:
            dropped.append(i)
        else:
            kept.append(i)
    return kept, dropped


def k3_kl(logprobs: Any, ref_logprobs: Any) -> Any:
    """The low-variance "k3" KL estimator per token: ``exp(ref − logp) − (ref − logp) − 1`` ≥ 0.

    Works on floats, NumPy arrays and torch tensors. Zero where the two agree.
    """
    diff = ref_logprobs - logprobs
    exp = np.exp(diff) if isinstance(diff, (float, np.ndarray)) else diff.exp()
    return exp - diff - 1
