"""Answer scoring as the SQuAD/HotpotQA official scripts do it: normalisation, EM, F1 (pure).

Normalisation: lowercase, remove ``string.punctuation``, remove the articles a/an/the as words,
collapse whitespace. Scores are the best over the gold aliases. Two deliberate choices: an
empty (or all-punctuation) prediction scores 0 even against an empty gold (the official HotpotQA
script scores 1 there), and F1 follows HotpotQA's yes/no/noanswer rule (0 unless both sides agree).
L0's own training code normalises differently (keeps articles, drops non-ASCII); we follow the
official evaluation scripts so numbers compare with published ones.

**L0's training normalisation as an option** (``normalization="l0"`` on :func:`exact_match`,
:func:`f1_score` and :func:`has_answer`; :func:`normalize_answer_l0`), to reproduce L0's reward
exactly. Read from ``cmriat/l0`` (commit ``3ad5028d42fadcf8639d3593752562fbc03b4461``),
``src/l0/verl_adapter/reward/nb_agent_reward.py``: ``_normalize_text``, ``_compute_exact_match``,
``_compute_f1_score`` and ``qa_reward_fn``. Lower-case, then delete every character that is not
an ASCII letter, an ASCII digit or whitespace (so articles stay and "Zürich" becomes "zrich"),
then collapse whitespace. EM is equality of the normalised strings, *including* both empty (a gold
with no ASCII letters or digits matches any prediction without them, an empty one too). F1 is
token F1 with no yes/no rule; both empty scores 1, one empty 0. has-answer is 1 for any submitted
string, even an empty one; only "nothing submitted" (``None``) scores 0 on all three. L0's reward
compares against one gold string (its data has one); here the best over the gold aliases is taken,
which is the same for a one-item gold list. (L0's *evaluation* script,
``evaluation/nb_agent_eval/compute_metrics.py``, uses the SQuAD normalisation, like our default.)

Tasks whose answer is a number (``answer_type: "number"``) are scored by :func:`numbers_match`
instead: the stated number against the gold's, with a tolerance (default 1e-6, relative and
absolute; a task's ``tolerance`` overrides it).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "DEFAULT_TOLERANCE",
    "NORMALIZATIONS",
    "Normalization",
    "exact_match",
    "f1_score",
    "gold_list",
    "has_answer",
    "normalize_answer",
    "normalize_answer_l0",
    "numbers_match",
    "parse_number",
]

Normalization = Literal["squad", "l0"]
NORMALIZATIONS: tuple[str, ...] = ("squad", "l0")
"""``"squad"``: the SQuAD/HotpotQA official rules (the default everywhere). ``"l0"``: L0's
training reward (see the module docstring)."""

DEFAULT_TOLERANCE = 1e-6
"""Numeric answers match when ``math.isclose(pred, gold, rel_tol=tol, abs_tol=tol)``."""
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_GROUPED_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_CURRENCY = "$€£¥"

_PUNCT = frozenset(string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_SPECIAL_ANSWERS = frozenset({"yes", "no", "noanswer"})
_L0_DROP_RE = re.compile(r"[^a-z0-9\s]")  # L0 keeps ASCII letters, digits and whitespace only


def normalize_answer(s: str) -> str:
    """Normalise an answer as the SQuAD/HotpotQA official scripts do.

    Lowercase, remove ``string.punctuation``, remove the articles a/an/the as words, collapse
    whitespace. Idempotent.
    """
    s = "".join(ch for ch in str(s).lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES_RE.sub(" ", s).split())


def normalize_answer_l0(s: str) -> str:
    """Normalise an answer as L0's training reward does (``cmriat/l0``, ``_normalize_text``).

    Lowercase, delete every character other than ASCII letters, ASCII digits and whitespace
    (punctuation, accents and non-Latin scripts alike: "Małgorzata" becomes "magorzata"), collapse
    whitespace. Articles are kept. Idempotent.
    """
    return " ".join(_L0_DROP_RE.sub("", str(s).lower()).split())


def _check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def _as_text(prediction: object) -> str:
    return "" if prediction is None else str(prediction)


def gold_list(golds: Sequence[str] | str | None) -> list[str]:
    """Gold aliases as a list of strings; a bare string is one gold answer, not a sequence of
    one-character answers."""
    if golds is None:
        return []
    return [golds] if isinstance(golds, str) else [str(g) for g in golds]


def exact_match(
    prediction: str | None, golds: Sequence[str], *, normalization: Normalization = "squad"
) -> float:
    """Exact match after normalisation, best over the gold aliases.

    ``"squad"`` (default): a missing prediction, or one that normalises to the empty string,
    scores 0. ``"l0"``: L0's reward; a missing prediction scores 0, but two strings that both
    normalise to "" match (see the module docstring).
    """
    _check_normalization(normalization)
    if normalization == "l0":
        if prediction is None:
            return 0.0
        pred_l0 = normalize_answer_l0(str(prediction))
        return float(any(pred_l0 == normalize_answer_l0(g) for g in gold_list(golds)))
    pred = normalize_answer(_as_text(prediction))
    if not pred:
        return 0.0
    return float(any(pred == normalize_answer(g) for g in gold_list(golds)))


def _f1_one(pred: str, gold: str) -> float:
    if pred != gold and (pred in _SPECIAL_ANSWERS or gold in _SPECIAL_ANSWERS):
        return 0.0
    return _token_f1(pred.split(), gold.split())


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _f1_l0(pred: str, gold: str) -> float:
    pred_tokens, gold_tokens = pred.split(), gold.split()
    if not pred_tokens and not gold_tokens:
        return 1.0  # L0 scores two empty strings as a perfect match
    return _token_f1(pred_tokens, gold_tokens)


def f1_score(
    prediction: str | None, golds: Sequence[str], *, normalization: Normalization = "squad"
) -> float:
    """Token F1 after normalisation, best over the gold aliases.

    ``"squad"`` (default, HotpotQA rules): the score is 0 when either side normalises to "yes",
    "no" or "noanswer" and the two sides differ; a missing or empty prediction scores 0. ``"l0"``:
    L0's reward, no yes/no rule, two empty strings score 1, a missing prediction 0.
    """
    _check_normalization(normalization)
    if normalization == "l0":
        if prediction is None:
            return 0.0
        pred_l0 = normalize_answer_l0(str(prediction))
        return max((_f1_l0(pred_l0, normalize_answer_l0(g)) for g in gold_list(golds)), default=0.0)
    pred = normalize_answer(_as_text(prediction))
    if not pred:
        return 0.0
    return max((_f1_one(pred, normalize_answer(g)) for g in gold_list(golds)), default=0.0)


def parse_number(text: object) -> float | None:
    """The number an answer states, or None: ``"1,234.5"``, ``"$12"``, ``"12%"``, ``"-3e2"``,
    ``" 7 "``; not ``"about 12"``, ``"12 apples"``, ``"nan"`` or ``"inf"``. A percent sign is
    dropped (``"12%"`` is 12: the gold and the prediction are written the same way)."""
    s = str(text).strip()
    if s[:1] in _CURRENCY:
        s = s[1:].strip()
    elif s[:2] in ("-$", "+$", "-€", "+€", "-£", "+£", "-¥", "+¥"):
        s = s[0] + s[2:].strip()
    if s.endswith("%"):
        s = s[:-1].strip()
    if _GROUPED_RE.fullmatch(s):
        s = s.replace(",", "")
    if not _NUMBER_RE.fullmatch(s):
        return None
    value = float(s)
    return value if math.isfinite(value) else None


def numbers_match(
    prediction: str | None, golds: Sequence[str] | str, *, tolerance: float = DEFAULT_TOLERANCE
) -> float:
    """1.0 when the prediction states a number within ``tolerance`` (relative, and absolute near
    0) of a numeric gold alias, else 0.0. For tasks whose answer is a number (``answer_type``
    ``"number"`` in the task's metadata), in place of EM and F1: ``"1,234"``, ``"1234.0"`` and
    ``"$1234"`` all match a gold ``"1234"``."""
    pred = parse_number(_as_text(prediction))
    if pred is None:
        return 0.0
    for gold in gold_list(golds):
        value = parse_number(gold)
        if value is not None and math.isclose(pred, value, rel_tol=tolerance, abs_tol=tolerance):
            return 1.0
    return 0.0


def has_answer(prediction: str | None, *, normalization: Normalization = "squad") -> float:
    """Return 1.0 if a non-empty (after strip) answer was submitted, else 0.0.

    With ``normalization="l0"`` (L0's reward) any submitted string counts, even an empty one;
    only ``None`` (nothing submitted) scores 0.
    """
    _check_normalization(normalization)
    if normalization == "l0":
        return float(isinstance(prediction, str))
    return float(bool(_as_text(prediction).strip()))
