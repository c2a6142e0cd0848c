"""Decontamination: find the evaluation question a training question repeats, exactly or nearly (pure).

Two checks against every question of the evaluation sets (``--exclude``):

* **exact**: equal question keys (:func:`.questions.question_key`: case, punctuation, articles and
  spacing do not count);
* **near**: Jaccard similarity of the word-n-gram shingle sets (:func:`.questions.shingles`) at or
  above ``threshold``.

The near check is an *exact* set-similarity join, not an approximation such as MinHash-LSH: it
uses prefix filtering (Chaudhuri et al. 2006; Bayardo et al. 2007). Order all shingles globally
(rarest in the evaluation sets first); if ``J(x, y) >= t`` then the first ``|x| - ceil(t|x|) + 1``
shingles of ``x`` and the first ``|y| - ceil(t|y|) + 1`` of ``y`` share at least one shingle. So
the index maps only each evaluation question's prefix shingles to it; a training question looks
up its own prefix, and the few candidates found are verified with the true Jaccard (after a
length filter: ``t|x| <= |y| <= |x|/t``). Nothing above the threshold is missed and nothing
below it is reported. Common shingles ("what is", "who was") sort last, so they rarely sit in a
prefix and candidate lists stay short.

Memory: the evaluation side only (the shingle sets of ~10k questions: a few MB). Each training
question is checked and forgotten.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from .questions import DEFAULT_NGRAM, key_hash, question_key, shingles

__all__ = ["DEFAULT_NEAR_THRESHOLD", "EvalIndex", "EvalMatch"]

DEFAULT_NEAR_THRESHOLD = 0.6
"""Bigram Jaccard at which a training question counts as a reworded evaluation question.

A ten-word question with a middle word changed scores 0.64 against the original (shorter ones
less: six words, 0.43, missed); one with a word added or dropped, 0.7-0.9. Questions that share only a
template score 0.4-0.6, and at 0.6 (a one-word name: "who is the father of Alexander" vs "... of
Tanya") they are dropped. Decontamination errs on the side of dropping: a lost training row costs
little, a leaked test question costs the evaluation. On the shared QA files (4,184 train-like
rows against 6,751 evaluation questions) 0.6 dropped nothing by template alone; 0.5 dropped one
row (a MuSiQue train question sharing a 12-word template with a dev one), 0.4 dropped 51.
"""

_EPS = 1e-9  # t*n is computed in floating point: 0.56 * 25 = 14.000000000000002 must ceil to 14


@dataclass(frozen=True)
class EvalMatch:
    """The evaluation question a training question overlaps.

    Attributes:
        kind: ``"exact"`` or ``"near"``.
        similarity: Jaccard of the shingle sets (1.0 for exact).
        question: The evaluation question as its source wrote it.
        source: The evaluation set's name.
    """

    kind: str
    similarity: float
    question: str
    source: str


def _overlap_needed(t: float, size: int) -> int:
    return max(1, math.ceil(t * size - _EPS))


class EvalIndex:
    """The evaluation questions, indexed for exact and near-duplicate lookups.

    Args:
        threshold: Jaccard at or above which a question is a near-duplicate, in (0, 1]; ``None``
            turns the near check off (exact only).
        ngram: Words per shingle.
    """

    def __init__(
        self, *, threshold: float | None = DEFAULT_NEAR_THRESHOLD, ngram: int = DEFAULT_NGRAM
    ) -> None:
        if threshold is not None and not (isinstance(threshold, (int, float)) and 0.0 < threshold <= 1.0):
            raise ValueError(f"threshold must be in (0, 1] or None, got {threshold!r}")
        if isinstance(ngram, bool) or not isinstance(ngram, int) or ngram < 1:
            raise ValueError(f"ngram must be an integer >= 1, got {ngram!r}")
        self.threshold = None if threshold is None else float(threshold)
        self.ngram = ngram
        self._exact: dict[int, int] = {}
        self._questions: list[str] = []
        self._sources: list[str] = []
        self._sets: list[frozenset[str]] = []
        self._rank: dict[str, int] = {}
        self._index: dict[str, list[int]] = {}
        self._frozen = False

    def __len__(self) -> int:
        return len(self._questions)

    def add(self, question: str, source: str) -> None:
        """Add one evaluation question (before the first lookup)."""
        if self._frozen:
            raise RuntimeError("EvalIndex: add() after the first lookup; build the index first")
        key = question_key(question)
        if not key:
            return
        self._exact.setdefault(key_hash(key), len(self._questions))
        self._questions.append(question)
        self._sources.append(source)
        self._sets.append(shingles(key, self.ngram))

    def add_all(self, items: Iterable[tuple[str, str]]) -> None:
        """Add ``(question, source)`` pairs."""
        for question, source in items:
            self.add(question, source)

    def _freeze(self) -> None:
        """Fix the global shingle order and build the prefix index (once, at the first lookup)."""
        self._frozen = True
        if self.threshold is None:
            return
        freq = Counter(s for shingle_set in self._sets for s in shingle_set)
        # Rarest first; ties broken by the text so the order (and so the result) is deterministic.
        self._rank = {s: r for r, s in enumerate(sorted(freq, key=lambda s: (freq[s], s)))}
        for eid, shingle_set in enumerate(self._sets):
            for s in self._prefix(shingle_set):
                self._index.setdefault(s, []).append(eid)

    def _prefix(self, shingle_set: frozenset[str]) -> list[str]:
        assert self.threshold is not None
        size = len(shingle_set)
        length = size - _overlap_needed(self.threshold, size) + 1
        # Shingles absent from every evaluation question rank first (rank -1): they can never be
        # shared, and ranking them first keeps the prefix property for the shared ones.
        ordered = sorted(shingle_set, key=lambda s: (self._rank.get(s, -1), s))
        return ordered[:length]

    def match(self, question: str, *, key: str | None = None, digest: int | None = None) -> EvalMatch | None:
        """The evaluation question this one repeats (exact first, else the most similar near one).

        Args:
            question: The training question.
            key: Its :func:`.questions.question_key`, when the caller has it already.
            digest: :func:`.questions.key_hash` of the key, likewise.
        """
        if not self._frozen:
            self._freeze()
        if key is None:
            key = question_key(question)
        if not key or not self._questions:
            return None
        eid = self._exact.get(key_hash(key) if digest is None else digest)
        if eid is not None:
            return EvalMatch("exact", 1.0, self._questions[eid], self._sources[eid])
        if self.threshold is None:
            return None
        x = shingles(key, self.ngram)
        t = self.threshold
        lo, hi = t * len(x) - _EPS, len(x) / t + _EPS
        best, best_j = -1, 0.0
        seen: set[int] = set()
        for s in self._prefix(x):
            for cand in self._index.get(s, ()):
                if cand in seen:
                    continue
                seen.add(cand)
                y = self._sets[cand]
                if not lo <= len(y) <= hi:
                    continue
                inter = len(x & y)
                j = inter / (len(x) + len(y) - inter)
                if j >= t - _EPS and j > best_j:
                    best, best_j = cand, j
        if best < 0:
            return None
        return EvalMatch("near", round(best_j, 4), self._questions[best], self._sources[best])
