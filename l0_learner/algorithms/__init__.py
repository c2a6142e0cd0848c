"""Algorithms: L0's agentic policy gradient (REINFORCE++ step returns) and a GRPO option."""

from .advantages import (
    agentic_pg_advantages,
    discounted_returns,
    dynamic_sampling_filter,
    grpo_advantages,
    k3_kl,
    step_rewards,
    whiten,
)
from .agentic_pg import ALGORITHMS, GRPO, AgenticPG, Callback

__all__ = [
    "ALGORITHMS",
    "GRPO",
    "AgenticPG",
    "Callback",
    "agentic_pg_advantages",
    "discounted_returns",
    "dynamic_sampling_filter",
    "grpo_advantages",
    "k3_kl",
    "step_rewards",
    "whiten",
]
