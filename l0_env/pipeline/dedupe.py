"""De-duplication by normalised question: the first occurrence wins (pure, bounded memory).

Two rows are duplicates when their question keys (:func:`.questions.question_key`) are equal.
The row kept is the first one the build reaches (inputs in the order given, rows in file order),
and it is kept unchanged: answer aliases are **not** merged across duplicates. Merging would hold
every kept row in memory until the end (breaking streaming), and aliases from another dataset
can be wrong for this row's wording (the question's key can match while a source's answer
convention differs: "Denise Levertov" vs "Levertov"). Instead, a duplicate whose canonical answer
normalises differently from the kept row's is reported as ``duplicate_conflicting`` (with
examples), so an operator sees where sources disagree.

Memory: one dict entry of two 64-bit hashes per distinct question (about 100 bytes in CPython),
so 1M distinct questions cost about 100 MB; no question text is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..answers import normalize_answer
from .questions import key_hash

__all__ = ["Deduper"]


class Deduper:
    """Remembers the questions seen so far (as hashes) and says whether a row repeats one."""

    def __init__(self) -> None:
        self._first_answer: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._first_answer)

    def check(self, key_digest: int, answers: Sequence[str]) -> str | None:
        """Record a row; return None if its question is new, else the reason it is dropped.

        Args:
            key_digest: :func:`.questions.key_hash` of the row's question key.
            answers: The row's answers (``answers[0]`` is compared with the first row's).

        Returns:
            ``None`` (first occurrence: keep), ``"duplicate"`` (same question, same canonical
            answer after normalisation) or ``"duplicate_conflicting"`` (same question, a different
            canonical answer).
        """
        answer_digest = key_hash(normalize_answer(answers[0]))
        first = self._first_answer.get(key_digest)
        if first is None:
            self._first_answer[key_digest] = answer_digest
            return None
        return "duplicate" if first == answer_digest else "duplicate_conflicting"
