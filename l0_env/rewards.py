"""Verifiable rewards: L0's reward combination and its per-step allocations (pure, stdlib only).

L0's trajectory reward is ``qa_w·qa + format_w·mean_t(format_t) + code_w·mean_t(code_t)``, by
default ``0.8·qa + 0.1·mean(format) + 0.1·mean(code)``. The answer reward ``qa`` has two presets
(:data:`REWARD_PRESETS`):

* ``"l0"`` (default, L0's released code): ``qa = 0.9·EM + 0.1·has_answer``;
* ``"paper"`` (L0's paper): ``qa = 0.5·EM + 0.4·F1 + 0.1·has_answer``: partial credit for a partly
  right answer, a denser signal for small models.

The code-execution reward of a cell (:func:`code_execution_reward`) comes from what the host knows
about the execution (the kernel's ``execute_reply`` status, a timeout, a dead kernel), not from
the outputs, which the cell controls: 0 for a cell that failed, 1 for one that ran and printed
something, and ``silent_cell`` (0 by default, L0's rule) for one that ran without any output, so a
silent cell is not rewarded as a success. This is stricter than L0's ``1 − error outputs/outputs``
(a cell that prints three lines and then raises scores 0 here, 0.75 there): the ratio can be gamed
by printing more, the reply cannot (short of a kernel that rewrites ipykernel itself).

Two ways to hand the reward out over an episode:

* :func:`online_step_reward` is what the environment emits at step ``t``: the increments of the
  running means, so the episode's rewards sum exactly to :func:`trajectory_reward` without knowing
  the episode length in advance.
* :func:`l0_step_rewards` is L0's own per-step allocation for the learner
  (``format_t/T + code_t/T`` each step, ``qa`` on the last step); same sum, different timing.

Answer metrics live in :mod:`l0_env.answers` (re-exported here); TRL-style reward callables in
:mod:`l0_env.trl_rewards`; the LLM judge (:class:`LLMJudge`, an HTTP client) in :mod:`l0_env.judge`,
re-exported here lazily so that importing this pure module does not import the client.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from l0_env.actions import ParsedAction, parse_action

from .answers import exact_match, f1_score, has_answer, normalize_answer, numbers_match

if TYPE_CHECKING:
    from .judge import LLMJudge, Verdict

__all__ = [
    "REWARD_PRESETS",
    "LLMJudge",
    "RewardWeights",
    "Verdict",
    "as_reward_weights",
    "code_execution_reward",
    "exact_match",
    "f1_score",
    "format_reward",
    "has_answer",
    "l0_step_rewards",
    "normalize_answer",
    "numbers_match",
    "online_step_reward",
    "qa_reward",
    "trajectory_reward",
]

_METRICS = ("em", "f1")

_LAZY = {"LLMJudge", "Verdict"}  # from l0_env.judge: httpx and threads, kept out of this module's import


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import judge

        return getattr(judge, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def qa_reward(
    prediction: str | None,
    golds: Sequence[str],
    *,
    metric: str = "em",
    em_weight: float = 0.9,
    has_answer_weight: float = 0.1,
    f1_weight: float = 0.0,
    tolerance: float | None = None,
) -> float:
    """Answer reward: ``em_weight·metric + f1_weight·F1 + has_answer_weight·has_answer``.

    Args:
        prediction: The submitted answer, or ``None`` if nothing was submitted.
        golds: Gold answer aliases.
        metric: ``"em"`` (exact match) or ``"f1"`` (token F1): what ``em_weight`` weighs.
        em_weight: Weight of ``metric``.
        has_answer_weight: Weight of :func:`has_answer`.
        f1_weight: Weight of token F1 on top (the paper's preset: EM 0.5, F1 0.4, has-answer 0.1).
        tolerance: For a task whose answer is a number: EM and F1 are both
            :func:`l0_env.answers.numbers_match` with this tolerance (None: text answers).

    Raises:
        ValueError: If ``metric`` is not "em" or "f1".
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    if tolerance is not None:
        em = f1 = numbers_match(prediction, golds, tolerance=tolerance)
    else:
        em, f1 = exact_match(prediction, golds), f1_score(prediction, golds)
    score = em if metric == "em" else f1
    reward = em_weight * score + has_answer_weight * has_answer(prediction)
    if f1_weight:
        reward += f1_weight * f1
    return reward


def format_reward(action: ParsedAction | str) -> float:
    """Return 1.0 iff the action is well formed with substantial parts, else 0.0.

    Substantial: exactly one think block with more than 10 characters and exactly one code block
    with more than 5 characters (both stripped), and no problem that makes the action malformed
    (see :attr:`ParsedAction.well_formed`; an unclosed final ``<code>`` is fine).
    """
    parsed = action if isinstance(action, ParsedAction) else parse_action(action)
    return float(
        parsed.well_formed and len((parsed.think or "").strip()) > 10 and len((parsed.code or "").strip()) > 5
    )


def code_execution_reward(
    n_outputs: int,
    n_error_outputs: int,
    *,
    ran: bool = True,
    failed: bool | None = None,
    silent: float = 0.0,
) -> float:
    """Code-execution reward of one cell, in [0, 1].

    Args:
        n_outputs: Number of outputs the cell produced (streams, results, errors).
        n_error_outputs: How many of them are errors.
        ran: False when there was no code to run: the reward is then 0.
        failed: What the host knows about the execution itself (the env passes it): True when the
            kernel's ``execute_reply`` said the code raised, or the cell timed out, died or flooded.
            When given, the outputs no longer decide success: the cell controls its outputs
            (``get_ipython().showtraceback = ...`` hides an error, many ``display()`` calls dilute
            one, and in a shared kernel one agent's hook can print errors into another's cells),
            not the reply ipykernel sends.
        silent: The reward of a cell that ran without error and produced no output. L0's rule
            is 0: a cell that shows nothing gets no credit (1.0 scores it as a success).

    Returns:
        0.0 if the cell did not run or failed; ``silent`` if it produced no output; otherwise 1.0
        with ``failed`` given, or L0's ``1 − n_error_outputs/n_outputs`` (clamped) without it.
    """
    if not ran or failed:
        return 0.0
    if n_outputs <= 0:
        return silent
    if failed is not None:
        return 1.0
    return min(1.0, max(0.0, 1.0 - n_error_outputs / n_outputs))


@dataclass(frozen=True)
class RewardWeights:
    """How an episode is scored (L0's released code by default).

    Attributes:
        qa: Weight of the answer reward in the trajectory reward.
        format: Weight of the mean format reward.
        code: Weight of the mean code-execution reward.
        em: Weight of ``answer_metric`` inside the answer reward.
        has_answer: Weight of has-answer inside the answer reward.
        f1: Weight of token F1 inside the answer reward (0 in L0's code, 0.4 in the paper).
        answer_metric: ``"em"`` or ``"f1"``: what ``em`` weighs.
        silent_cell: Code reward of a cell that ran without error and printed nothing (L0: 0).
    """

    qa: float = 0.8
    format: float = 0.1
    code: float = 0.1
    em: float = 0.9
    has_answer: float = 0.1
    f1: float = 0.0
    answer_metric: str = "em"
    silent_cell: float = 0.0

    def __post_init__(self) -> None:
        if self.answer_metric not in _METRICS:
            raise ValueError(f"answer_metric must be one of {_METRICS}, got {self.answer_metric!r}")
        for name in ("qa", "format", "code", "em", "has_answer", "f1", "silent_cell"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"RewardWeights.{name} must be a finite number, got {value!r}")
        if not 0.0 <= self.silent_cell <= 1.0:
            raise ValueError(f"RewardWeights.silent_cell must be in [0, 1], got {self.silent_cell!r}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> RewardWeights:
        """A named preset (:data:`REWARD_PRESETS`) with some fields overridden.

        Raises:
            ValueError: On an unknown preset name.
        """
        if name not in REWARD_PRESETS:
            raise ValueError(f"unknown reward preset {name!r}; choose one of {sorted(REWARD_PRESETS)}")
        return replace(REWARD_PRESETS[name], **overrides)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RewardWeights:
        """From a dict of fields; ``{"preset": "paper", ...}`` starts from a preset.

        Raises:
            ValueError: On an unknown key (a typo would otherwise be ignored silently).
        """
        values = dict(values)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known - {"preset"})
        if unknown:
            raise ValueError(f"unknown RewardWeights field(s) {unknown}; known: {sorted(known)} and 'preset'")
        preset = values.pop("preset", "l0")
        return cls.preset(preset, **values)

    def qa_reward(
        self, prediction: str | None, golds: Sequence[str], *, tolerance: float | None = None
    ) -> float:
        """:func:`qa_reward` with these weights and metric (``tolerance``: a numeric answer's)."""
        return qa_reward(
            prediction,
            golds,
            metric=self.answer_metric,
            em_weight=self.em,
            has_answer_weight=self.has_answer,
            f1_weight=self.f1,
            tolerance=tolerance,
        )

    def code_reward(self, n_outputs: int, n_error_outputs: int, *, failed: bool | None) -> float:
        """:func:`code_execution_reward` with this ``silent_cell`` rule."""
        return code_execution_reward(n_outputs, n_error_outputs, failed=failed, silent=self.silent_cell)


def as_reward_weights(value: RewardWeights | Mapping[str, Any] | str | None) -> RewardWeights:
    """Reward settings from what a user may pass: None (L0's), a preset name, a dict, an instance.

    Raises:
        ValueError: On an unknown preset or field, a bad value, or another type.
    """
    if value is None:
        return RewardWeights()
    if isinstance(value, str):
        return RewardWeights.preset(value)
    if isinstance(value, Mapping):
        return RewardWeights.from_mapping(value)
    if not isinstance(value, RewardWeights):
        raise ValueError(
            f"reward weights must be a RewardWeights, a dict of its fields or a preset name "
            f"({sorted(REWARD_PRESETS)}), got {type(value).__name__}"
        )
    return value


REWARD_PRESETS: dict[str, RewardWeights] = {
    "l0": RewardWeights(),
    "paper": RewardWeights(em=0.5, f1=0.4, has_answer=0.1),
}
"""``"l0"``: L0's released code, ``qa = 0.9·EM + 0.1·has_answer``. ``"paper"``: L0's paper,
``qa = 0.5·EM + 0.4·F1 + 0.1·has_answer``. Both: ``0.8·qa + 0.1·format + 0.1·code``, silent
cells score 0."""

_DEFAULT_WEIGHTS = RewardWeights()


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def trajectory_reward(
    format_rewards: Sequence[float],
    code_rewards: Sequence[float],
    qa: float,
    weights: RewardWeights = _DEFAULT_WEIGHTS,
) -> float:
    """L0's episode reward: ``qa_w·qa + format_w·mean(format) + code_w·mean(code)``.

    Empty sequences contribute 0.
    """
    return weights.qa * qa + weights.format * _mean(format_rewards) + weights.code * _mean(code_rewards)


def _mean_increment(values: Sequence[float], t: int) -> float:
    return _mean(values[:t]) - _mean(values[: t - 1])


def online_step_reward(
    t: int,
    format_rewards_so_far: Sequence[float],
    code_rewards_so_far: Sequence[float],
    qa: float | None,
    weights: RewardWeights = _DEFAULT_WEIGHTS,
) -> float:
    """The reward the environment emits at step ``t``.

    ``weight·(mean over steps 1..t − mean over steps 1..t−1)`` for each per-step component, plus
    ``qa_w·qa`` when ``qa`` is given (the final step). Summed over an episode this telescopes to
    :func:`trajectory_reward`, so the episode length need not be known in advance.

    Args:
        t: The step, 1-based; the sequences hold the rewards of steps 1..t (later ones ignored).
        format_rewards_so_far: Format rewards of steps 1..t.
        code_rewards_so_far: Code-execution rewards of steps 1..t.
        qa: The answer reward on the final step, else ``None``.
        weights: Component weights.

    Raises:
        ValueError: If ``t < 1``.
    """
    if t < 1:
        raise ValueError(f"steps are 1-based, got t={t}")
    reward = weights.format * _mean_increment(format_rewards_so_far, t) + weights.code * _mean_increment(
        code_rewards_so_far, t
    )
    if qa is not None:
        reward += weights.qa * qa
    return reward


def l0_step_rewards(
    format_rewards: Sequence[float],
    code_rewards: Sequence[float],
    qa: float,
    weights: RewardWeights = _DEFAULT_WEIGHTS,
) -> list[float]:
    """L0's per-step reward allocation for the learner.

    ``r_t = format_w·format_t/T + code_w·code_t/T``, plus ``qa_w·qa`` on the last step. The sum
    equals :func:`trajectory_reward`.

    Raises:
        ValueError: If the format and code sequences differ in length.
    """
    n = len(format_rewards)
    if len(code_rewards) != n:
        raise ValueError(
            f"one reward per step for each component: got {n} format and {len(code_rewards)} code rewards"
        )
    if n == 0:
        return []
    rewards = [
        (weights.format * f + weights.code * c) / n for f, c in zip(format_rewards, code_rewards, strict=True)
    ]
    rewards[-1] += weights.qa * qa
    return rewards
