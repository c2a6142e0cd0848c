"""The pure math: L0's step rewards, returns, whitening, GRPO, dynamic sampling, k3 KL."""

from __future__ import annotations

import numpy as np
import pytest

from l0_learner.algorithms.advantages import (
    agentic_pg_advantages,
    discounted_returns,
    dynamic_sampling_filter,
    grpo_advantages,
    k3_kl,
    step_rewards,
    whiten,
)

# The worked example: 3 steps, one code error (step 2), right answer.
WORKED = [
    {"format": 1.0, "code": 1.0, "qa": None},
    {"format": 1.0, "code": 0.0, "qa": None},
    {"format": 1.0, "code": 1.0, "qa": 1.0, "em": 1.0, "f1": 1.0, "has_answer": 1.0},
]


def test_worked_example_step_rewards_and_returns() -> None:
    rewards = step_rewards(WORKED)
    assert rewards == pytest.approx([0.2 / 3, 0.1 / 3, 0.2 / 3 + 0.8], abs=1e-12)
    assert [round(r, 4) for r in rewards] == [0.0667, 0.0333, 0.8667]
    returns = discounted_returns(rewards, 0.95)
    assert [round(g, 3) for g in returns] == [0.880, 0.857, 0.867]
    assert returns[2] == pytest.approx(rewards[2])
    assert returns[1] == pytest.approx(rewards[1] + 0.95 * rewards[2])
    assert returns[0] == pytest.approx(rewards[0] + 0.95 * returns[1])
    assert sum(rewards) == pytest.approx(0.8 + 0.1 + 0.1 * 2 / 3)


def test_missing_answer_counts_zero_and_empty_episode() -> None:
    comps = [{"format": 0.0, "code": 0.0, "qa": None}, {"format": 1.0, "code": 1.0, "qa": None}]
    assert step_rewards(comps) == pytest.approx([0.0, 0.1])
    assert step_rewards([]) == []
    assert discounted_returns([], 0.95) == []


def test_gamma_one_and_zero() -> None:
    assert discounted_returns([1.0, 2.0, 3.0], 1.0) == [6.0, 5.0, 3.0]
    assert discounted_returns([1.0, 2.0, 3.0], 0.0) == [1.0, 2.0, 3.0]


def test_whitening_is_over_all_steps_of_the_batch() -> None:
    eps = [WORKED, [*WORKED[:1], dict(WORKED[2], qa=0.0, em=0.0)]]
    raw = agentic_pg_advantages(eps, normalize=False)
    adv = agentic_pg_advantages(eps)
    flat_raw = [g for ep in raw for g in ep]
    flat = [a for ep in adv for a in ep]
    assert [len(a) for a in adv] == [3, 2]
    assert np.mean(flat) == pytest.approx(0.0, abs=1e-9)
    assert np.std(flat) == pytest.approx(1.0, abs=1e-4)
    assert flat == pytest.approx(whiten(flat_raw))
    assert np.argsort(flat).tolist() == np.argsort(flat_raw).tolist()


def test_whiten_edge_cases() -> None:
    assert whiten([]) == []
    assert whiten([3.0]) == [0.0]
    assert whiten([2.0, 2.0]) == [0.0, 0.0]


def test_grpo_advantage_is_group_normalised_and_shared_by_steps() -> None:
    right = WORKED
    wrong = [dict(c, qa=0.0, em=0.0) if c["qa"] is not None else c for c in WORKED]
    adv = grpo_advantages([right, wrong, right, right], groups=[0, 0, 1, 1])
    assert adv[0][0] > 0 > adv[1][0]
    assert adv[0] == [adv[0][0]] * 3
    assert adv[0][0] == pytest.approx(-adv[1][0])
    assert adv[2] == pytest.approx([0.0] * 3)  # a uniform group has no signal


def test_dynamic_sampling_drops_only_uniform_groups_at_the_given_rate() -> None:
    groups = [[True, True, True, True], [False] * 4, [True, False, False, False]] * 400
    kept, dropped = dynamic_sampling_filter(groups, np.random.default_rng(0), drop_prob=0.5)
    assert sorted(kept + dropped) == list(range(len(groups)))
    assert all(i % 3 != 2 for i in dropped), "mixed groups must always be kept"
    uniform_dropped = len(dropped) / 800
    assert 0.45 < uniform_dropped < 0.55
    assert dynamic_sampling_filter(groups, np.random.default_rng(0), drop_prob=0.0) == (list(range(1200)), [])
    kept1, _ = dynamic_sampling_filter(groups, np.random.default_rng(0), drop_prob=1.0)
    assert kept1 == list(range(2, 1200, 3))


def test_k3_kl() -> None:
    torch = pytest.importorskip("torch")
    x = torch.tensor([-1.0, -2.0, -0.5])
    assert torch.equal(k3_kl(x, x), torch.zeros(3))
    y = torch.tensor([-1.5, -1.0, -0.5])
    kl = k3_kl(x, y)
    assert (kl >= 0).all() and kl[0] > 0 and kl[2] == 0
    assert k3_kl(np.array([-1.0]), np.array([-2.0]))[0] == pytest.approx(np.exp(-1) + 1 - 1)
