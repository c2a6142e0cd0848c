"""Paired statistics on tables worked out by hand (l0_learner.stats)."""

from __future__ import annotations

import pytest

from l0_learner.stats import bootstrap_diff_interval, compare_paired, mcnemar_exact, wilson_interval


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (1, 6, 2 * (1 + 7) / 2**7),  # P(X <= 1), X ~ Bin(7, 1/2) = 8/128, two-sided 0.125
        (0, 5, 2 / 2**5),
        (6, 1, 2 * (1 + 7) / 2**7),  # symmetric in b and c
        (3, 3, 1.0),  # capped at 1
        (0, 0, 1.0),  # no discordant pair: no evidence either way
        (2, 10, 2 * (1 + 12 + 66) / 2**12),  # 0.03857: significant at 5%
    ],
)
def test_mcnemar_exact_on_hand_computed_tables(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_exact_does_not_underflow_on_large_tables():
    p = mcnemar_exact(400, 600)
    assert 0 < p < 1e-9


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError, match="counts"):
        mcnemar_exact(-1, 3)


def test_wilson_interval_matches_hand_values():
    lo, hi = wilson_interval(0, 10)  # upper = z²/(n + z²)
    assert lo == 0.0
    assert hi == pytest.approx(3.8414588 / 13.8414588, abs=1e-6)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.236593, 0.763407), abs=1e-5)
    with pytest.raises(ValueError, match="n must be"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_bootstrap_interval_is_degenerate_for_a_constant_difference_and_seeded():
    before, after = [0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]
    assert bootstrap_diff_interval([0, 0, 0], [1, 1, 1]) == (1.0, 1.0)
    a = bootstrap_diff_interval(before, after, seed=3)
    assert a == bootstrap_diff_interval(before, after, seed=3)
    assert 0.0 <= a[0] <= 0.5 <= a[1] <= 1.0


def test_bootstrap_interval_covers_the_mean_difference():
    before = [0, 1] * 100
    after = [1, 1] * 100  # +0.5 on average
    lo, hi = bootstrap_diff_interval(before, after)
    assert lo < 0.5 < hi
    assert hi - lo < 0.2


def test_compare_paired_counts_discordant_questions():
    em_before = [1, 1, 0, 0, 0, 1]
    em_after = [1, 0, 1, 1, 0, 1]
    f1 = [0.5] * 6
    r = compare_paired(em_before, em_after, f1, f1, resamples=2000)
    assert (r.right_to_wrong, r.wrong_to_right) == (1, 2)
    assert r.mcnemar_p == pytest.approx(1.0)  # 2·P(X<=1), X~Bin(3,.5) = 2·4/8
    assert r.em_diff == pytest.approx(1 / 6)
    assert r.f1_diff == 0.0 and r.f1_diff_low == 0.0 and r.f1_diff_high == 0.0
    assert "McNemar" in r.summary() and "n = 6" in r.summary()


def test_compare_paired_binarises_sample_means_at_one_half():
    # Three samples per question averaged: 2/3 counts as right, 1/3 as wrong.
    r = compare_paired([1 / 3, 2 / 3], [2 / 3, 2 / 3], [0, 0], [0, 0], resamples=100)
    assert (r.right_to_wrong, r.wrong_to_right) == (0, 1)


def test_compare_paired_rejects_unpaired_input():
    with pytest.raises(ValueError, match="paired"):
        compare_paired([1, 0], [1], [1, 0], [1, 0])
    with pytest.raises(ValueError, match="no paired"):
        compare_paired([], [], [], [])
