"""Exact title matches: which passages have a title that the query names word for word.

Search engines over Wikipedia boost a page whose title the query contains ("Which composer wrote
the opera Maria Golovin?" → the page *Maria Golovin*); BM25 alone ranks it by word statistics
only. `TitleIndex` finds those passages fast at any corpus size: every title is normalised
(HTML entities decoded, accents folded, lower-cased, ``\\w+`` words; a trailing "(film)"-style
qualifier also gives the bare name as a second key), each key is stored as a 64-bit hash in a
sorted, memory-mapped array, and a query looks up all of its word n-grams with one binary search.
Keys made only of stop words or shorter than 3 characters are not indexed (a question's "It" or
"US" must not pull in the pages *It* and *US*).
"""

from __future__ import annotations

import html
import re
import unicodedata
from pathlib import Path

import numpy as np

from l0_env.tools.passage_store import key_hash

TITLE_HASH_FILE = "title_hash.npy"
TITLE_ROW_FILE = "title_row.npy"
MAX_TITLE_WORDS = 12  # longer titles are not matched (and queries are not cut into longer n-grams)
MAX_ROWS_PER_KEY = 256  # bound the work for a key that many passages share

_WORD = re.compile(r"\w+")
_QUALIFIER = re.compile(r"\s*\([^()]*\)\s*$")


def normalize_words(text: str) -> list[str]:
    """Lower-cased ``\\w+`` words of ``text`` with HTML entities decoded and accents removed."""
    text = unicodedata.normalize("NFKD", html.unescape(text).lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return _WORD.findall(text)


def title_keys(title: str, stopwords: frozenset[str] = frozenset()) -> set[str]:
    """The keys a title is found under: the whole title and, if it ends in "(...)", the name alone."""
    keys = set()
    for variant in (title, _QUALIFIER.sub("", title)):
        words = normalize_words(variant)
        if not words or len(words) > MAX_TITLE_WORDS or all(w in stopwords for w in words):
            continue
        key = " ".join(words)
        if len(key) >= 3:
            keys.add(key)
    return keys


class TitleIndex:
    """Memory-mapped title keys of an index folder (see the module docstring). Thread-safe."""

    def __init__(self, folder: Path) -> None:
        self._hash = np.load(folder / TITLE_HASH_FILE, mmap_mode="r")
        self._row = np.load(folder / TITLE_ROW_FILE, mmap_mode="r")

    def matches(self, query: str) -> list[int]:
        """Rows whose title (or its bare name) ``query`` contains as whole words.

        Matching is by 64-bit key hash alone: with ~10^6 keys and ~10^2 n-grams per query, a false
        match is about as likely as 10^-11 per query, so rows are not re-checked against titles.
        """
        words = normalize_words(query)
        keys = [
            " ".join(words[i:j])
            for i in range(len(words))
            for j in range(i + 1, min(len(words), i + MAX_TITLE_WORDS) + 1)
        ]
        if not keys or len(self._hash) == 0:
            return []
        hashes = np.array([key_hash(k) for k in keys], dtype=np.uint64)
        lo = np.searchsorted(self._hash, hashes, side="left")
        hi = np.minimum(np.searchsorted(self._hash, hashes, side="right"), lo + MAX_ROWS_PER_KEY)
        hit = np.flatnonzero(hi > lo)
        if hit.size == 0:
            return []
        rows = np.concatenate([self._row[lo[i] : hi[i]] for i in hit])
        return np.unique(rows).tolist()
