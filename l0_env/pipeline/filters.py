"""Answer kinds and the answer filters: length and kind (pure).

Both look at the canonical answer, ``answers[0]`` (aliases vary in length and form; the canonical
one is what the task is about).

Kinds, decided in this order (:func:`classify_answer`; heuristics, stated so a user can predict
them):

* ``yes_no``: the answer normalises to "yes" or "no".
* ``date``: a month name (or its three-letter form) next to a number ("June 5, 1990", "1 Jan
  2001"), a numeric date (``1990-06-05``, ``5/6/1990``), a bare year 1000-2099 or a decade
  ("1990s"), optionally with AD/BC/CE/BCE.
* ``number``: what :func:`l0_env.answers.parse_number` reads ("1,234", "$12", "12%"), a number
  with a scale or a common unit ("5 million", "12 km", "3.5 kg", "40 years"), or a number word
  from zero to twenty ("seven").
* ``entity``: any other answer of at most :data:`ENTITY_MAX_WORDS` words (names, titles, places).
* ``other``: longer answers (phrases, sentences).

Lengths: ``chars`` counts the characters of the stripped answer; ``words`` its whitespace-separated
tokens (not model tokens: the filter must not depend on a tokenizer).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..answers import normalize_answer, parse_number

__all__ = ["ANSWER_KINDS", "ENTITY_MAX_WORDS", "AnswerFilter", "classify_answer", "parse_kinds"]

ANSWER_KINDS = ("yes_no", "number", "date", "entity", "other")
ENTITY_MAX_WORDS = 6

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_ERA_WORD = r"\s*(?:ad|bc|bce|ce|a\.d\.|b\.c\.)"
_ERA = rf"(?:{_ERA_WORD})?"
_DATE_RES = (
    re.compile(
        rf"^(?:\d{{1,2}}(?:st|nd|rd|th)?\s+)?{_MONTH},?\s+\d{{1,4}}(?:st|nd|rd|th)?(?:,?\s+\d{{3,4}})?{_ERA}$"
    ),
    re.compile(rf"^{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?$"),
    re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$"),
    re.compile(r"^\d{1,2}[/.]\d{1,2}[/.]\d{2,4}$"),
    re.compile(rf"^(?:1\d{{3}}|20\d{{2}}){_ERA}$"),
    re.compile(r"^(?:1\d{3}|20\d{2}|\d0)'?s$"),
    re.compile(rf"^\d{{1,4}}{_ERA_WORD}$"),  # "44 BC": a number with an era is a year
)
_UNITS = (
    "percent|%|thousand|million|billion|trillion|hundred|dozen|km|kilometres|kilometers|m|metres|meters"
    "|cm|mm|mi|miles?|ft|feet|foot|inch(?:es)?|in|yards?|kg|kilograms?|g|grams?|lbs?|pounds?|tons?|tonnes?"
    "|years?|months?|weeks?|days?|hours?|minutes?|seconds?|people|times|degrees?|°[cf]?|mph|km/h"
)
_NUMBER_UNIT_RE = re.compile(
    rf"^(?:about |approximately |around |over |under |nearly |more than |less than )?"
    rf"[$€£¥]?\s*[+-]?\d[\d,]*(?:\.\d+)?\s*(?:{_UNITS})?(?:\s+(?:{_UNITS}))?\.?$"
)
_NUMBER_WORDS = frozenset(
    [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
    ]
)


def classify_answer(answer: str) -> str:
    """The kind of an answer: one of :data:`ANSWER_KINDS` (see the module docstring for the rules)."""
    text = " ".join(str(answer).lower().split())
    key = normalize_answer(text)
    if key in ("yes", "no"):
        return "yes_no"
    if any(r.match(text) for r in _DATE_RES):
        return "date"
    if parse_number(text) is not None or _NUMBER_UNIT_RE.match(text) or key in _NUMBER_WORDS:
        return "number"
    return "entity" if len(text.split()) <= ENTITY_MAX_WORDS else "other"


def parse_kinds(text: str | Iterable[str]) -> frozenset[str]:
    """Kinds from ``"yes_no,number"`` (or an iterable); raise ValueError naming an unknown one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    kinds = frozenset(k.strip() for k in items if k.strip())
    unknown = sorted(kinds - set(ANSWER_KINDS))
    if unknown:
        raise ValueError(f"unknown answer kind(s) {unknown}; choose from {', '.join(ANSWER_KINDS)}")
    if not kinds:
        raise ValueError(f"no answer kind given; choose from {', '.join(ANSWER_KINDS)}")
    return kinds


@dataclass(frozen=True)
class AnswerFilter:
    """Which canonical answers to keep. ``None`` bounds are off; bounds are inclusive.

    Attributes:
        min_chars: Fewest characters.
        max_chars: Most characters.
        min_words: Fewest whitespace-separated words.
        max_words: Most words.
        keep_kinds: Keep only these kinds (``None``: all).
        drop_kinds: Drop these kinds.
    """

    min_chars: int | None = None
    max_chars: int | None = None
    min_words: int | None = None
    max_words: int | None = None
    keep_kinds: frozenset[str] | None = None
    drop_kinds: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("min_chars", "max_chars", "min_words", "max_words"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer or None, got {value!r}")
        for lo, hi in (("min_chars", "max_chars"), ("min_words", "max_words")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{lo} ({a}) is greater than {hi} ({b}): nothing would pass")
        if self.keep_kinds is not None:
            parse_kinds(self.keep_kinds)
        if self.drop_kinds:
            parse_kinds(self.drop_kinds)
        if self.keep_kinds is not None and self.drop_kinds:
            raise ValueError("give keep_kinds or drop_kinds, not both")

    @property
    def active(self) -> bool:
        """Whether any bound or kind rule is set."""
        return self != AnswerFilter()

    def reason(self, answer: str, kind: str) -> str | None:
        """Why this canonical answer is dropped (a short code for the report), or None to keep it.

        Codes: ``answer_too_short``, ``answer_too_long`` (chars or words), ``answer_kind:<kind>``.
        """
        text = str(answer).strip()
        chars, words = len(text), len(text.split())
        if (self.min_chars is not None and chars < self.min_chars) or (
            self.min_words is not None and words < self.min_words
        ):
            return "answer_too_short"
        if (self.max_chars is not None and chars > self.max_chars) or (
            self.max_words is not None and words > self.max_words
        ):
            return "answer_too_long"
        if (self.keep_kinds is not None and kind not in self.keep_kinds) or kind in self.drop_kinds:
            return f"answer_kind:{kind}"
        return None
