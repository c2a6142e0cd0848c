"""Question keys and word shingles: what de-duplication and decontamination compare (pure).

A question's *key* is the project's answer normalisation (:func:`l0_env.answers.normalize_answer`:
lowercase, drop ASCII punctuation and the articles a/an/the, collapse whitespace) applied after two
Unicode steps the answer scorer does not need but questions from many sources do: NFKC (full-width
and compatibility characters fold to their plain form) and removal of every Unicode punctuation
character (curly quotes, dashes, « », ¿), so ``Arthur’s`` and ``Arthur's`` give the same key.
Two questions are exact duplicates when their keys are equal.

*Shingles* are the key's word n-grams (default bigrams; a question shorter than n words is one
shingle, the whole key). Near-duplicates are compared by the Jaccard similarity of their shingle
sets (:mod:`.decontaminate`). Bigrams keep some word order: a rewording that changes one word of a
ten-word question scores 0.64 against the original; two different questions that share a
template score lower the longer the part that differs ("who is the father of Barack Obama" vs
"... of Donald Trump": 0.43; with one-word names, "... of Alexander" vs "... of Tanya": 0.6).
"""

from __future__ import annotations

import functools
import hashlib
import re
import string
import sys
import unicodedata

__all__ = ["DEFAULT_NGRAM", "key_hash", "question_key", "shingles"]

DEFAULT_NGRAM = 2


_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


@functools.cache
def _punctuation_table() -> dict[int, None]:
    """``str.translate`` table deleting ``string.punctuation`` and every Unicode punctuation (P*).

    Built on first use (about 0.5 s), not at import: nothing runs at import time.
    """
    table: dict[int, None] = {ord(c): None for c in string.punctuation}
    table.update(
        (cp, None) for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)).startswith("P")
    )
    return table


def question_key(question: str) -> str:
    """The normalised form of a question that duplicates share (see the module docstring).

    Equal to :func:`l0_env.answers.normalize_answer` of the NFKC form with Unicode punctuation
    removed (the tests check this); written out here because one ``str.translate`` is several
    times faster than that function's per-character loop, and a build normalises every question.
    Idempotent: ``question_key(question_key(q)) == question_key(q)``.
    """
    table = _punctuation_table()
    text = unicodedata.normalize("NFKC", str(question)).translate(table).lower()
    if not unicodedata.is_normalized("NFKC", text):  # lowercasing can denormalise ("İ" → "i̇")
        text = unicodedata.normalize("NFKC", text).translate(table)
    return " ".join(_ARTICLES_RE.sub(" ", text).split())


def key_hash(key: str) -> int:
    """A 64-bit hash of a key (blake2b, so stable across processes, unlike ``hash``).

    Sets of these stand in for sets of strings: 1M keys cost tens of MB instead of hundreds.
    At 64 bits, the chance of any collision among 10M keys is about 3e-6.
    """
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")


def shingles(key: str, n: int = DEFAULT_NGRAM) -> frozenset[str]:
    """The set of word n-grams of a question key (the whole key when it has fewer than n words).

    Args:
        key: A key from :func:`question_key` (words separated by single spaces).
        n: Words per shingle, >= 1.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    words = key.split()
    if len(words) <= n:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
