"""Learner configs on the toy env and the tiny model that several tests (and the torchrun worker,
which imports this file by path) share; one place, so that a test and its reference agree."""

from __future__ import annotations

from typing import Any

TOY = dict(
    env="toy",
    device="cpu",
    max_steps=1,
    max_new_tokens=8,
    questions_per_batch=4,
    group_size=4,
    num_envs=16,
    lr=1e-2,
    dynamic_sampling=False,
    seed=0,
    tensorboard=False,
    progress=False,
)
"""One update's worth of the toy env: 4 questions x 4 rollouts, one step each."""

TWO_RANKS = dict(
    TOY,
    max_steps=2,
    max_new_tokens=6,
    questions_per_batch=3,  # an odd number of question groups for 2 ranks
    group_size=2,
    num_envs=4,
    lr=1e-3,
    micro_batch_tokens=64,  # several micro-batches, an uneven number per rank
)
"""The batch the torchrun tests split over 2 ranks and compare with one process."""


def toy_config(tiny_path: str, base: dict[str, Any] = TOY, **overrides: Any) -> Any:
    """``make_config`` with ``base`` (default :data:`TOY`), the tiny model, then ``overrides``."""
    from l0_learner.config import make_config

    return make_config(**{**base, "model": tiny_path, **overrides})
