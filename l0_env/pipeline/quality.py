"""The optional LLM quality filter: a model rates each QA pair; rows below the thresholds are dropped.

What L0 did, and what we mirror. L0's released data pipeline (``cmriat/l0``, ``data/``: download,
merge, ``quality_assess_datasets.py``, ``filter_datasets.py``) sends every merged QA pair, as
``Question: ...`` / ``Answer: ...``, to an OpenAI-compatible model with a system prompt asking for
two ratings, each -1, 0 or 1 with a rationale, as JSON:

* **temporal stability**: does the correct answer change over time (1: never, e.g. historical
  facts; 0: stable for long periods, e.g. geography; -1: changes often, e.g. office holders,
  prices);
* **objectivity**: is it a verifiable fact (1), a mix of fact and judgement (0), or mainly
  opinion (-1)?

Its filter keeps the pairs whose two ratings reach thresholds (``filter_datasets.py`` defaults:
both 1) and drops pairs whose assessment failed after retries (they stay unassessed). (Its
``prompt.py`` also holds a 1-5 difficulty prompt; the assessor does not use it.) We ask for the
same two ratings on the same scale, with the same defaults, and add a third the issue asks for:

* **well_formed**: is the question clear, unambiguous and answerable, and does the answer fit it
  (1), is it answerable but vague or with several defensible answers (0), or is it garbled,
  incomplete, or its answer of the wrong kind (-1)?

The prompt is ours (:data:`SYSTEM_PROMPT`), not a copy of L0's; it asks for bare ratings (no
rationales: they cost tokens and nothing reads them). The model does not check that the answer is
true; that is the dataset's job.

Operational rules:

* **Bounded concurrency**: requests go through :meth:`l0_env.llm_client.ChatClient.complete_many`,
  at most the client's ``max_concurrency`` at a time.
* **Failures are counted, not fatal**: a request that fails after the client's retries, or a reply
  that does not parse, is a verdict with an ``error``; ``on_error`` says whether such rows are
  dropped (``"drop"``, L0's behaviour and the default) or kept unrated (``"keep"``).
* **Cached by row hash**: successful ratings are appended to a JSONL cache keyed by a hash of the
  prompt version, the model name, the question and the answers, so a rerun (or a build that adds
  inputs) pays only for pairs it has not rated. Errors are not cached: a rerun retries them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

__all__ = [
    "CRITERIA",
    "PROMPT_VERSION",
    "SYSTEM_PROMPT",
    "QualityCache",
    "QualityFilter",
    "QualityThresholds",
    "Verdict",
    "parse_ratings",
]

PROMPT_VERSION = "l0gym-quality-v1"
"""Part of every cache key: change it whenever :data:`SYSTEM_PROMPT` or the user message changes."""

CRITERIA = ("temporal_stability", "objectivity", "well_formed")
_MAX_ALIASES = 5

SYSTEM_PROMPT = """\
You review question-answer pairs for a training set of factual questions that an agent answers \
by searching the web. Rate the pair on three criteria, each with -1, 0 or 1.

temporal_stability: does the correct answer stay the same over time?
  1 = it never changes (past events, historical facts, fixed properties of things);
  0 = it is stable for years but could change (geography, records, buildings, institutions);
  -1 = it changes often (current office holders, populations, prices, "the latest" anything).

objectivity: is the answer a verifiable fact rather than an opinion?
  1 = a fact that anyone can check;
  0 = a mix of fact and judgement;
  -1 = mainly opinion, taste or interpretation.

well_formed: is the question clear, unambiguous and answerable, and does the answer fit it?
  1 = one clear question with a definite answer, and the answer is the kind of thing asked for;
  0 = answerable, but vague or with more than one defensible answer;
  -1 = garbled, incomplete or unanswerable, or the answer is not the kind of thing asked for.

You do not need to check whether the answer is true. Reply with only a JSON object, nothing else:
{"temporal_stability": <-1|0|1>, "objectivity": <-1|0|1>, "well_formed": <-1|0|1>}"""


class _Client(Protocol):
    model: str

    def complete_many(self, batch: list[list[dict[str, str]]], **kw: Any) -> list[Any]: ...

    def close(self) -> None: ...


def user_message(question: str, answers: Sequence[str]) -> str:
    """The pair as the model sees it: the question, the answer, up to five accepted aliases."""
    text = f"Question: {question}\nAnswer: {answers[0]}"
    aliases = list(answers[1 : 1 + _MAX_ALIASES])
    if aliases:
        text += "\nAlso accepted: " + "; ".join(aliases)
    return text


def _rating(value: Any) -> int:
    if isinstance(value, Mapping) and "rating" in value:  # L0's layout: {"rating": 1, "rationale": [...]}
        value = value["rating"]
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str) and value.strip().lstrip("+").lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (-1, 0, 1):
        raise ValueError(f"rating {value!r} is not -1, 0 or 1")
    return int(value)


def _json_objects(text: str) -> list[Any]:
    """Every JSON object in ``text`` (fenced blocks first), in order."""
    found: list[Any] = []
    decoder = json.JSONDecoder()
    candidates = [m.group(1) for m in re.finditer(r"```(?:json)?\s*(.*?)```", text, re.S)] + [text]
    for chunk in candidates:
        for m in re.finditer(r"\{", chunk):
            try:
                obj, _ = decoder.raw_decode(chunk, m.start())
            except ValueError:
                continue
            found.append(obj)
    return found


def parse_ratings(text: str) -> dict[str, int]:
    """The three ratings from a model's reply.

    Accepts a bare JSON object or one inside a fenced block, surrounded by other text; a rating may
    be a number, a numeric string, or L0's ``{"rating": n}``.

    Raises:
        ValueError: No JSON object with all three criteria rated -1, 0 or 1; the message says why.
    """
    last_error = "no JSON object in the reply"
    for obj in _json_objects(text):
        if not isinstance(obj, dict):
            continue
        missing = [c for c in CRITERIA if c not in obj]
        if missing:
            last_error = f"the JSON object lacks {missing}"
            continue
        try:
            return {c: _rating(obj[c]) for c in CRITERIA}
        except ValueError as e:
            last_error = str(e)
    raise ValueError(f"{last_error}: {text[:120]!r}")


@dataclass(frozen=True)
class QualityThresholds:
    """The lowest rating of each criterion a row may have and be kept (L0's defaults: all 1)."""

    temporal_stability: int = 1
    objectivity: int = 1
    well_formed: int = 1

    def __post_init__(self) -> None:
        for name in CRITERIA:
            value = getattr(self, name)
            if isinstance(value, bool) or value not in (-1, 0, 1):
                raise ValueError(f"threshold {name} must be -1, 0 or 1, got {value!r}")

    def passes(self, ratings: Mapping[str, int]) -> bool:
        return all(ratings[c] >= getattr(self, c) for c in CRITERIA)


@dataclass(frozen=True)
class Verdict:
    """The filter's answer for one row.

    Attributes:
        ratings: The three ratings, or None when there was an error.
        error: Why there are no ratings (the client's error, or the unparseable reply).
        cached: Whether the ratings came from the cache.
    """

    ratings: dict[str, int] | None
    error: str | None = None
    cached: bool = False


class QualityCache:
    """Ratings by row hash, in a JSONL file that only grows (one ``{"key", "ratings"}`` a line).

    A line that does not parse (a build killed mid-write) is skipped on load and counted in
    :attr:`skipped`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.skipped = 0
        self._data: dict[str, dict[str, int]] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        item = json.loads(line)
                        self._data[str(item["key"])] = {c: _rating(item["ratings"][c]) for c in CRITERIA}
                    except (ValueError, KeyError, TypeError):
                        self.skipped += 1
        self._file: IO[str] | None = None

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> dict[str, int] | None:
        return self._data.get(key)

    def put(self, key: str, ratings: dict[str, int]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)
        self._file.write(json.dumps({"key": key, "ratings": ratings}) + "\n")
        self._data[key] = ratings

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class QualityStats:
    """What the filter did: rows rated, requests sent, cache hits, errors."""

    rows: int = 0
    requests: int = 0
    cache_hits: int = 0
    request_errors: int = 0
    parse_errors: int = 0
    error_examples: list[str] = field(default_factory=list)


class QualityFilter:
    """Rate QA rows with an LLM through a :class:`~l0_env.llm_client.ChatClient`.

    Args:
        client: The chat client (its ``max_concurrency`` bounds requests in flight).
        thresholds: Minimum ratings to keep a row.
        cache: Where ratings are remembered across runs (None: no cache).
        on_error: ``"drop"`` (default, as L0) or ``"keep"`` rows that could not be rated.
        max_tokens: Reply budget (the reply is one small JSON object).
    """

    def __init__(
        self,
        client: _Client,
        *,
        thresholds: QualityThresholds | None = None,
        cache: QualityCache | None = None,
        on_error: str = "drop",
        max_tokens: int = 64,
    ) -> None:
        if on_error not in ("drop", "keep"):
            raise ValueError(f"on_error must be 'drop' or 'keep', got {on_error!r}")
        self.client = client
        self.thresholds = thresholds or QualityThresholds()
        self.cache = cache
        self.on_error = on_error
        self.max_tokens = max_tokens
        self.stats = QualityStats()

    def cache_key(self, question: str, answers: Sequence[str]) -> str:
        """The row hash: prompt version, model, question and answers (sha256, 32 hex digits)."""
        blob = json.dumps([PROMPT_VERSION, self.client.model, question, list(answers)], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]

    def keeps(self, verdict: Verdict) -> bool:
        """Whether a row with this verdict stays."""
        if verdict.ratings is None:
            return self.on_error == "keep"
        return self.thresholds.passes(verdict.ratings)

    def assess(self, rows: Sequence[Mapping[str, Any]]) -> list[Verdict]:
        """Rate rows (each with ``question`` and ``answers``); one verdict per row, in order.

        Rows already in the cache cost nothing; identical pairs within the batch are asked once.
        """
        keys = [self.cache_key(r["question"], r["answers"]) for r in rows]
        verdicts: dict[str, Verdict] = {}
        todo: dict[str, Mapping[str, Any]] = {}
        for key, row in zip(keys, rows, strict=True):
            cached = self.cache.get(key) if self.cache is not None else None
            if cached is not None:
                verdicts[key] = Verdict(dict(cached), cached=True)
            elif key not in todo:
                todo[key] = row
        self.stats.rows += len(rows)
        self.stats.cache_hits += sum(1 for k in keys if k in verdicts)
        if todo:
            batch = [
                [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": user_message(r["question"], r["answers"])},
                ]
                for r in todo.values()
            ]
            self.stats.requests += len(batch)
            replies = self.client.complete_many(batch, max_tokens=self.max_tokens, temperature=0.0)
            for key, reply in zip(todo, replies, strict=True):
                verdicts[key] = self._verdict(reply)
                if verdicts[key].ratings is not None and self.cache is not None:
                    self.cache.put(key, verdicts[key].ratings)  # type: ignore[arg-type]
            if self.cache is not None:
                self.cache.flush()
        return [verdicts[k] for k in keys]

    def _verdict(self, reply: Any) -> Verdict:
        if not isinstance(reply, str):  # an LLMError (complete_many returns failures in place)
            self.stats.request_errors += 1
            self._note(f"request failed: {reply}")
            return Verdict(None, error=f"request failed: {reply}")
        try:
            return Verdict(parse_ratings(reply))
        except ValueError as e:
            self.stats.parse_errors += 1
            self._note(f"unparseable reply: {e}")
            return Verdict(None, error=f"unparseable reply: {e}")

    def _note(self, message: str) -> None:
        if len(self.stats.error_examples) < 5:
            self.stats.error_examples.append(message[:300])
