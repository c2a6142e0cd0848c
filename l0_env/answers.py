"""Answer scoring as the SQuAD/HotpotQA official scripts do it: normalisation, EM, F1 (pure).

Normalisation: lowercase, remove ``string.punctuation``, remove the articles a/an/the as words,
collapse whitespace. Scores are the best over the gold aliases. Two deliberate choices: an
empty (or all-punctuation) prediction scores 0 even against an empty gold (the official HotpotQA
script scores 1 there), and F1 follows HotpotQA's yes/no/noanswer rule (0 unless both sides agree).
L0's own training code normalises differently (keeps articles, drops non-ASCII); we follow the
official evaluation scripts so numbers compare with published ones.

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

__all__ = [
    "DEFAULT_TOLERANCE",
    "exact_match",
    "f1_score",
    "gold_list",
    "has_answer",
    "normalize_answer",
    "numbers_match",
    "parse_number",
]

DEFAULT_TOLERANCE = 1e-6
"""Numeric answers match when ``math.isclose(pred, gold, rel_tol=tol, abs_tol=tol)``."""
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_GROUPED_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_CURRENCY = "$€£¥"

_PUNCT = frozenset(string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_SPECIAL_ANSWERS = frozenset({"yes", "no", "noanswer"})


def normalize_answer(s: str) -> str:
    """Normalise an answer as the SQuAD/HotpotQA official scripts do.

    Lowercase, remove ``string.punctuation``, remove the articles a/an/the as words, collapse
    whitespace. Idempotent.
    """
    s = "".join(ch for ch in str(s).lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES_RE.sub(" ", s).split())


def _as_text(prediction: object) -> str:
    return "" if prediction is None else str(prediction)


def gold_list(golds: Sequence[str] | str | None) -> list[str]:
    """Gold aliases as a list of strings; a bare string is one gold answer, not a sequence of
    one-character answers."""
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
    return float(any(pred == normalize_answer(g) for g in gold_list(golds)))


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


def has_answer(prediction: str | None) -> float:
    """Return 1.0 if a non-empty (after strip) answer was submitted, else 0.0."""
    return float(bool(_as_text(prediction).strip()))
