"""Verifiable rewards with L0's defaults, plus TRL-compatible reward callables.

L0's trajectory reward is ``0.8·qa + 0.1·mean_t(format_t) + 0.1·mean_t(code_t)`` with
``qa = 0.9·EM + 0.1·has_answer``. Everything here is pure (stdlib only) and thread-safe.

Two ways to hand the reward out over an episode:

* :func:`online_step_reward` is what the environment emits at step ``t``: the increments of the
  running means, so the episode's rewards sum exactly to :func:`trajectory_reward` without knowing
  the episode length in advance.
* :func:`l0_step_rewards` is L0's own per-step allocation for the learner
  (``format_t/T + code_t/T`` each step, ``qa`` on the last step); same sum, different timing.

TRL contract (``GRPOTrainer(reward_funcs=[...])``): a reward function is called as
``f(prompts, completions, **kwargs)`` where ``completions`` holds one string per sample (or, for
conversational data, a list of chat messages) and ``kwargs`` holds the other dataset columns, one
value per sample. It returns ``list[float | None]``; ``None`` means "this reward does not apply to
this sample". :class:`QAReward` and :class:`FormatReward` follow it; they are plain objects with no
state beyond their settings, so they pickle and can be called from any thread.
"""

from __future__ import annotations

import ast
import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from l0_env.actions import ParsedAction, parse_action

__all__ = [
    "FormatReward",
    "QAReward",
    "RewardWeights",
    "code_execution_reward",
    "completion_text",
    "exact_match",
    "extract_final_answer",
    "f1_score",
    "format_reward",
    "has_answer",
    "l0_step_rewards",
    "length_reward",
    "normalize_answer",
    "online_step_reward",
    "qa_reward",
    "trajectory_reward",
]

_PUNCT = frozenset(string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_SPECIAL_ANSWERS = frozenset({"yes", "no", "noanswer"})
_METRICS = ("em", "f1")


def normalize_answer(s: str) -> str:
    """Normalise an answer as the SQuAD/HotpotQA official scripts do.

    Lowercase, remove ``string.punctuation``, remove the articles a/an/the as words, collapse
    whitespace. Idempotent.
    """
    s = "".join(ch for ch in str(s).lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES_RE.sub(" ", s).split())


def _as_text(prediction: object) -> str:
    return "" if prediction is None else str(prediction)


def _golds(golds: Sequence[str] | str | None) -> list[str]:
    # A bare string is one gold answer, not a sequence of one-character answers.
    if golds is None:
        return []
    return [golds] if isinstance(golds, str) else [str(g) for g in golds]


def exact_match(prediction: str | None, golds: Sequence[str]) -> float:
    """Exact match after normalisation, best over the gold aliases.

    A missing prediction, or one that normalises to the empty string, scores 0.
    """
    pred = normalize_answer(_as_text(prediction))
    if not pred:
        return 0.0
    return float(any(pred == normalize_answer(g) for g in _golds(golds)))


def _f1_one(pred: str, gold: str) -> float:
    if pred != gold and (pred in _SPECIAL_ANSWERS or gold in _SPECIAL_ANSWERS):
        return 0.0
    pred_tokens, gold_tokens = pred.split(), gold.split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, golds: Sequence[str]) -> float:
    """Token F1 after normalisation, best over the gold aliases (HotpotQA rules).

    Following HotpotQA, the score is 0 when either side normalises to "yes", "no" or "noanswer"
    and the two sides differ. A missing or empty prediction scores 0.
    """
    pred = normalize_answer(_as_text(prediction))
    if not pred:
        return 0.0
    return max((_f1_one(pred, normalize_answer(g)) for g in _golds(golds)), default=0.0)


def has_answer(prediction: str | None) -> float:
    """Return 1.0 if a non-empty (after strip) answer was submitted, else 0.0."""
    return float(bool(_as_text(prediction).strip()))


def qa_reward(
    prediction: str | None,
    golds: Sequence[str],
    *,
    metric: str = "em",
    em_weight: float = 0.9,
    has_answer_weight: float = 0.1,
) -> float:
    """Answer reward: ``em_weight·metric + has_answer_weight·has_answer``.

    Args:
        prediction: The submitted answer, or ``None`` if nothing was submitted.
        golds: Gold answer aliases.
        metric: ``"em"`` (exact match) or ``"f1"`` (token F1).
        em_weight: Weight of the metric.
        has_answer_weight: Weight of :func:`has_answer`.

    Raises:
        ValueError: If ``metric`` is not "em" or "f1".
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
    score = exact_match(prediction, golds) if metric == "em" else f1_score(prediction, golds)
    return em_weight * score + has_answer_weight * has_answer(prediction)


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


def code_execution_reward(n_outputs: int, n_error_outputs: int, *, ran: bool = True) -> float:
    """Share of a cell's outputs that are not errors, in [0, 1].

    Args:
        n_outputs: Number of outputs the cell produced (streams, results, errors).
        n_error_outputs: How many of them are errors.
        ran: False when there was no code to run: the reward is then 0.

    Returns:
        ``1 − n_error_outputs/n_outputs`` clamped to [0, 1]; 1.0 for a cell that ran silently.
    """
    if not ran:
        return 0.0
    if n_outputs <= 0:
        return 1.0
    return min(1.0, max(0.0, 1.0 - n_error_outputs / n_outputs))


def length_reward(n_tokens: int, max_tokens: int, *, soft_fraction: float = 0.5) -> float:
    """Penalty for long actions, in [0, 1].

    1.0 up to the soft limit ``soft_fraction·max_tokens``, then falls linearly to 0.0 at
    ``max_tokens`` and stays 0 beyond. ``max_tokens <= 0`` means no limit (always 1.0). Its
    default weight in :class:`RewardWeights` is 0.
    """
    if max_tokens <= 0:
        return 1.0
    soft = max(0.0, min(1.0, soft_fraction)) * max_tokens
    if n_tokens <= soft:
        return 1.0
    if n_tokens >= max_tokens:
        return 0.0
    return (max_tokens - n_tokens) / (max_tokens - soft)


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the reward components (L0 defaults).

    Attributes:
        qa: Weight of the answer reward in the trajectory reward.
        format: Weight of the mean format reward.
        code: Weight of the mean code-execution reward.
        length: Weight of the mean length reward (off by default).
        em: Weight of the answer metric inside the answer reward.
        has_answer: Weight of has-answer inside the answer reward.
        answer_metric: ``"em"`` or ``"f1"``.
    """

    qa: float = 0.8
    format: float = 0.1
    code: float = 0.1
    length: float = 0.0
    em: float = 0.9
    has_answer: float = 0.1
    answer_metric: str = "em"

    def __post_init__(self) -> None:
        if self.answer_metric not in _METRICS:
            raise ValueError(f"answer_metric must be one of {_METRICS}, got {self.answer_metric!r}")

    def qa_reward(self, prediction: str | None, golds: Sequence[str]) -> float:
        """:func:`qa_reward` with these weights and metric."""
        return qa_reward(
            prediction,
            golds,
            metric=self.answer_metric,
            em_weight=self.em,
            has_answer_weight=self.has_answer,
        )


_DEFAULT_WEIGHTS = RewardWeights()


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def trajectory_reward(
    format_rewards: Sequence[float],
    code_rewards: Sequence[float],
    qa: float,
    weights: RewardWeights = _DEFAULT_WEIGHTS,
    length_rewards: Sequence[float] = (),
) -> float:
    """L0's episode reward: ``qa_w·qa + format_w·mean(format) + code_w·mean(code) + length_w·mean(length)``.

    Empty sequences contribute 0.
    """
    return (
        weights.qa * qa
        + weights.format * _mean(format_rewards)
        + weights.code * _mean(code_rewards)
        + weights.length * _mean(length_rewards)
    )


def _mean_increment(values: Sequence[float], t: int) -> float:
    return _mean(values[:t]) - _mean(values[: t - 1])


def online_step_reward(
    t: int,
    format_rewards_so_far: Sequence[float],
    code_rewards_so_far: Sequence[float],
    qa: float | None,
    weights: RewardWeights = _DEFAULT_WEIGHTS,
    length_rewards_so_far: Sequence[float] = (),
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
        length_rewards_so_far: Length rewards of steps 1..t (may be empty).

    Raises:
        ValueError: If ``t < 1``.
    """
    if t < 1:
        raise ValueError(f"steps are 1-based, got t={t}")
    reward = (
        weights.format * _mean_increment(format_rewards_so_far, t)
        + weights.code * _mean_increment(code_rewards_so_far, t)
        + weights.length * _mean_increment(length_rewards_so_far, t)
    )
    if qa is not None:
        reward += weights.qa * qa
    return reward


def l0_step_rewards(
    format_rewards: Sequence[float],
    code_rewards: Sequence[float],
    qa: float,
    weights: RewardWeights = _DEFAULT_WEIGHTS,
    length_rewards: Sequence[float] = (),
) -> list[float]:
    """L0's per-step reward allocation for the learner.

    ``r_t = format_w·format_t/T + code_w·code_t/T (+ length_w·length_t/T)``, plus ``qa_w·qa`` on
    the last step. The sum equals :func:`trajectory_reward`.

    Raises:
        ValueError: If the format and code sequences (and a non-empty length sequence) differ
            in length.
    """
    n = len(format_rewards)
    if len(code_rewards) != n or (length_rewards and len(length_rewards) != n):
        raise ValueError(
            f"one reward per step for each component: got {n} format, {len(code_rewards)} code, "
            f"{len(length_rewards)} length rewards"
        )
    if n == 0:
        return []
    lengths = length_rewards or [0.0] * n
    rewards = [
        (weights.format * f + weights.code * c + weights.length * ln) / n
        for f, c, ln in zip(format_rewards, code_rewards, lengths, strict=True)
    ]
    rewards[-1] += weights.qa * qa
    return rewards


# --------------------------------------------------------------------------- TRL callables


def completion_text(completion: Any) -> str:
    """The text of a TRL completion: a string, or the content of the last assistant message."""
    try:
        return _completion_text(completion)
    except RecursionError:  # absurdly nested content: no text to score
        return ""


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        for message in reversed(completion):
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                content = message.get("content", "")
                if isinstance(content, (list, tuple)):  # content parts: [{"type": "text", ...}]
                    return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
                return "" if content is None else str(content)
        return ""
    return "" if completion is None else str(completion)


_SUBMIT = "submit_final_answer"
_SUBMIT_RE = re.compile(r"\bsubmit_final_answer\s*\(")


def _literal_arg(call: ast.Call) -> str | None:
    node: ast.expr | None = call.args[0] if call.args else None
    if node is None:
        node = next((kw.value for kw in call.keywords if kw.arg == "answer"), None)
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float)):
        return str(node.value)
    return None


def _is_submit(call: ast.Call) -> bool:
    func = call.func
    return (isinstance(func, ast.Name) and func.id == _SUBMIT) or (
        isinstance(func, ast.Attribute) and func.attr == _SUBMIT
    )


def extract_final_answer(code: str | None) -> str | None:
    """The literal argument of the last ``submit_final_answer(...)`` call in ``code``.

    The code is parsed with :mod:`ast`; string (and number) literals are accepted, positional or
    as ``answer=``. If the code does not parse, each call is parsed on its own. Returns ``None``
    when there is no such call or its argument is not a literal.
    """
    if not code or _SUBMIT not in code:
        return None
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    if tree is not None:
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _is_submit(n)]
        calls.sort(key=lambda n: (n.lineno, n.col_offset))
        return _literal_arg(calls[-1]) if calls else None
    # Broken code elsewhere: try the last call alone, closing it at each of the next few ")".
    for match in reversed(list(_SUBMIT_RE.finditer(code))):
        rest = code[match.end() :]
        close = -1
        for _ in range(32):
            close = rest.find(")", close + 1)
            if close == -1:
                break
            try:
                expr = ast.parse(f"{_SUBMIT}({rest[: close + 1]}", mode="eval").body
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                continue
            if isinstance(expr, ast.Call):
                return _literal_arg(expr)
    return None


@dataclass(frozen=True)
class QAReward:
    """TRL reward: the answer reward of the last ``submit_final_answer`` in each completion.

    Gold answers come from the dataset column ``answers_key`` (one list of aliases, or one string,
    per completion). A completion without a literal submitted answer gets ``None``.
    """

    metric: str = "em"
    em_weight: float = 0.9
    has_answer_weight: float = 0.1
    answers_key: str = "answers"

    def __post_init__(self) -> None:
        if self.metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, got {self.metric!r}")

    @property
    def __name__(self) -> str:  # TRL logs each reward under its function's __name__
        return f"qa_{self.metric}"

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        """Score each completion against its gold answers."""
        if self.answers_key not in kwargs:
            raise KeyError(
                f"QAReward needs the gold answers in the dataset column {self.answers_key!r} "
                f"(got columns {sorted(kwargs)}); pass answers_key= to use another column"
            )
        all_golds = kwargs[self.answers_key]
        if len(all_golds) != len(completions):
            raise ValueError(f"{len(all_golds)} gold entries for {len(completions)} completions")
        scores: list[float | None] = []
        for completion, golds in zip(completions, all_golds, strict=True):
            prediction = extract_final_answer(parse_action(completion_text(completion)).code)
            scores.append(
                None
                if prediction is None
                else qa_reward(
                    prediction,
                    _golds(golds),
                    metric=self.metric,
                    em_weight=self.em_weight,
                    has_answer_weight=self.has_answer_weight,
                )
            )
        return scores


@dataclass(frozen=True)
class FormatReward:
    """TRL reward: :func:`format_reward` of each completion."""

    __name__ = "format"

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        """Score the format of each completion."""
        return [format_reward(completion_text(c)) for c in completions]
