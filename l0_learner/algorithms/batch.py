"""What a batch of episodes becomes: training samples (one per step) and the batch's metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from l0_env.rewards import RewardWeights

from ..rollout import Episode
from .advantages import step_rewards


@dataclass
class Sample:
    """One training sample: a step's prompt and action ids, the sampler's logprobs, the advantage."""

    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    advantage: float

    @property
    def tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def training_samples(episodes: Sequence[Episode], advantages: Sequence[Sequence[float]]) -> list[Sample]:
    """Every step with an action, as a sample carrying its step's advantage.

    Raises:
        ValueError: If a step's sampler logprobs do not match its response length.
    """
    out = []
    for ep, advs in zip(episodes, advantages, strict=True):
        for s, a in zip(ep.steps, advs, strict=True):
            if not s.response_ids:
                continue
            if s.logprobs and len(s.logprobs) != len(s.response_ids):
                raise ValueError(
                    f"a step has {len(s.logprobs)} sampler logprobs for {len(s.response_ids)} tokens"
                )
            out.append(Sample(list(s.prompt_ids), list(s.response_ids), list(s.logprobs), float(a)))
    return out


def episode_metrics(episodes: Sequence[Episode], weights: RewardWeights | None = None) -> dict[str, float]:
    """Batch means: L0 trajectory reward, EM/F1/has-answer, steps, well-formed and code-error rates."""
    if not episodes:
        return {"charts/reward": 0.0, "charts/em": 0.0, "charts/steps_per_episode": 0.0}
    steps = [s for ep in episodes for s in ep.steps]
    errors = [s for s in steps if s.cell_status not in (None, "ok")]
    return {
        "charts/reward": float(
            np.mean([math.fsum(step_rewards([s.components for s in ep.steps], weights)) for ep in episodes])
        ),
        "charts/em": float(np.mean([ep.em for ep in episodes])),
        "charts/f1": float(np.mean([float(ep.final.get("f1") or 0.0) for ep in episodes])),
        "charts/has_answer": float(np.mean([float(ep.final.get("has_answer") or 0.0) for ep in episodes])),
        "charts/steps_per_episode": float(np.mean([len(ep.steps) for ep in episodes])),
        "charts/well_formed_rate": float(np.mean([float(s.components.get("format") or 0.0) for s in steps])),
        "charts/code_error_rate": len(errors) / max(1, len(steps)),
        "charts/episodes": float(len(episodes)),
    }
