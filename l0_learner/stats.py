"""Statistics for before/after tables: intervals and paired tests on per-question scores (pure).

Why paired: the same held-out questions are scored before and after a training stage, so the
question-to-question spread (some questions are easy for every model) cancels out. On per-question
exact match (0/1) the right test is McNemar's: only the *discordant* questions count — ``b``
right before and wrong after, ``c`` wrong before and right after — and under "no change" each of
them is equally likely to go either way, so ``b ~ Binomial(b + c, 1/2)``. We use the exact
(binomial) two-sided p-value, which is valid for small ``b + c`` where the chi-square form is not.
For EM and F1 *differences* a paired bootstrap (resample questions, keep the pairs) gives a
percentile interval; for one proportion, a Wilson score interval (sane at 0% and near 100%,
unlike the normal approximation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default).

    Args:
        successes: Number of successes; fractional counts (e.g. a mean over samples × n) are
            accepted.
        n: Number of trials.

    Raises:
        ValueError: If ``n < 1`` or ``successes`` is outside ``[0, n]``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts.

    Args:
        b: Pairs that were right before and wrong after.
        c: Pairs that were wrong before and right after.

    Returns:
        ``min(1, 2·P(X <= min(b, c)))`` for ``X ~ Binomial(b + c, 1/2)``; 1.0 when ``b + c == 0``.
    """
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    # Exact integers, then one division: no underflow for any n we will see.
    return min(1.0, 2 * tail / 2**n)


def _paired(
    before: Sequence[float] | np.ndarray, after: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"paired scores must be two 1-D sequences of one length, got {x.shape} and {y.shape}"
        )
    if x.size == 0:
        raise ValueError("no paired scores")
    return x, y


def bootstrap_diff_interval(
    before: Sequence[float] | np.ndarray,
    after: Sequence[float] | np.ndarray,
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(after) − mean(before)`` over paired questions.

    Questions are resampled with replacement and each keeps its pair, so the interval reflects
    the paired design. Deterministic for a given ``seed``.
    """
    x, y = _paired(before, after)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    d = y - x
    idx = rng.integers(0, d.size, size=(resamples, d.size))
    means = d[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_ratio_interval(
    numerators: Sequence[float] | np.ndarray,
    denominators: Sequence[float] | np.ndarray | None = None,
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``sum(numerators) / sum(denominators)`` over clusters.

    Each cluster (a question) is resampled whole, so per-step rates whose steps share a question
    (well-formed steps: numerator = well-formed steps, denominator = steps) get an interval that
    respects the clustering; with no denominators it is the interval of a plain mean over
    questions (F1, steps, tool calls). Deterministic for a given ``seed``.

    Raises:
        ValueError: Empty or mismatched inputs, a bad ``confidence``, or a resample whose
            denominators sum to 0 (all denominators must be positive).
    """
    num = np.asarray(numerators, dtype=float)
    den = np.ones_like(num) if denominators is None else np.asarray(denominators, dtype=float)
    if num.ndim != 1 or num.shape != den.shape or num.size == 0:
        raise ValueError(f"need two non-empty 1-D sequences of one length, got {num.shape} and {den.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if np.any(den <= 0):
        raise ValueError("every denominator must be > 0 (a cluster with no steps has no rate)")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num.size, size=(resamples, num.size))
    ratios = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(ratios, [alpha, 1 - alpha])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedComparison:
    """A before/after comparison on the same questions.

    Attributes:
        n: Paired questions.
        em_before, em_after: Mean exact match (0–1).
        em_diff: ``em_after − em_before``.
        em_diff_low, em_diff_high: 95% paired-bootstrap interval of ``em_diff``.
        f1_before, f1_after, f1_diff, f1_diff_low, f1_diff_high: The same for token F1.
        right_to_wrong: Questions right before and wrong after (McNemar's ``b``).
        wrong_to_right: Questions wrong before and right after (``c``).
        mcnemar_p: Exact two-sided McNemar p-value on per-question EM (binarised at 0.5, so a
            mean over several samples counts as right when most samples were).
    """

    n: int
    em_before: float
    em_after: float
    em_diff: float
    em_diff_low: float
    em_diff_high: float
    f1_before: float
    f1_after: float
    f1_diff: float
    f1_diff_low: float
    f1_diff_high: float
    right_to_wrong: int
    wrong_to_right: int
    mcnemar_p: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def summary(self) -> str:
        """One line for logs and tables."""
        return (
            f"EM {100 * self.em_before:.1f} → {100 * self.em_after:.1f} "
            f"(Δ {100 * self.em_diff:+.1f}, 95% CI [{100 * self.em_diff_low:+.1f}, {100 * self.em_diff_high:+.1f}]); "
            f"F1 Δ {100 * self.f1_diff:+.1f} [{100 * self.f1_diff_low:+.1f}, {100 * self.f1_diff_high:+.1f}]; "
            f"McNemar: {self.wrong_to_right} gained, {self.right_to_wrong} lost, p = {self.mcnemar_p:.3g} "
            f"(n = {self.n} paired questions)"
        )


def compare_paired(
    em_before: Sequence[float],
    em_after: Sequence[float],
    f1_before: Sequence[float],
    f1_after: Sequence[float],
    *,
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """McNemar on per-question EM plus bootstrap intervals of the EM and F1 differences."""
    eb, ea = _paired(em_before, em_after)
    fb, fa = _paired(f1_before, f1_after)
    if eb.size != fb.size:
        raise ValueError(f"EM and F1 cover different questions: {eb.size} vs {fb.size}")
    right_before, right_after = eb >= 0.5, ea >= 0.5
    b = int(np.sum(right_before & ~right_after))
    c = int(np.sum(~right_before & right_after))
    em_lo, em_hi = bootstrap_diff_interval(eb, ea, resamples=resamples, seed=seed)
    f1_lo, f1_hi = bootstrap_diff_interval(fb, fa, resamples=resamples, seed=seed)
    return PairedComparison(
        n=int(eb.size),
        em_before=float(eb.mean()),
        em_after=float(ea.mean()),
        em_diff=float(ea.mean() - eb.mean()),
        em_diff_low=em_lo,
        em_diff_high=em_hi,
        f1_before=float(fb.mean()),
        f1_after=float(fa.mean()),
        f1_diff=float(fa.mean() - fb.mean()),
        f1_diff_low=f1_lo,
        f1_diff_high=f1_hi,
        right_to_wrong=b,
        wrong_to_right=c,
        mcnemar_p=mcnemar_exact(b, c),
    )


__all__ = [
    "PairedComparison",
    "bootstrap_diff_interval",
    "bootstrap_ratio_interval",
    "compare_paired",
    "mcnemar_exact",
    "wilson_interval",
]
