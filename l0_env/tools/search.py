"""The search interface every backend implements, its errors, and passage-corpus reading.

A backend answers batched queries with `Hit`s and opens whole passages as `Page`s. Backends
(build one with `l0_env.tools.make_search_backend`):

- `l0_env.tools.bm25.BM25Search`: embedded BM25, the default (no extra dependencies);
- `l0_env.tools.dense.DenseSearch` and `l0_env.tools.hybrid.HybridSearch`: MiniLM + faiss, and
  reciprocal-rank fusion of BM25 and dense (the ``dense`` extra);
- `l0_env.tools.remote.HTTPSearch`: a retrieval server speaking Search-R1's ``/retrieve`` API
  (ours, ``python -m l0_env.tools.search_server``, or any Search-R1/FlashRAG server);
- `l0_env.tools.web.SerperSearch`: Google results through Serper, only with an API key.

Backends raise `SearchError` (often `SearchUnavailable`) for failures the agent should hear about
as a tool error while the episode goes on; `PageNotFound` for unknown ids.
"""

from __future__ import annotations

import abc
import gzip
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_K = 50


@dataclass(frozen=True)
class Hit:
    """One search result: a passage id, its title, the start of its text, and the score."""

    doc_id: str
    title: str
    snippet: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form the agent sees: ``{"id", "title", "snippet", "score"}``."""
        return {"id": self.doc_id, "title": self.title, "snippet": self.snippet, "score": self.score}


@dataclass(frozen=True)
class Page:
    """A whole passage, as returned by `SearchBackend.get`."""

    doc_id: str
    title: str
    text: str


class PageNotFound(KeyError):
    """`SearchBackend.get` was asked for an id the backend does not hold."""

    def __str__(self) -> str:  # KeyError's str() is the repr of its argument; keep the message readable
        return str(self.args[0]) if self.args else "page not found"


class SearchError(RuntimeError):
    """A search backend failed in a way the agent should be told about (the episode goes on).

    The message is written for the agent: it says what failed and whether retrying may help.
    """


class SearchUnavailable(SearchError):
    """The backend cannot answer now: server down or timing out, rate-limited, no API key."""


class SearchBackend(abc.ABC):
    """Batched search plus page lookup. Implementations must be safe to call from many threads."""

    @abc.abstractmethod
    def search(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        """Return the top-``k`` hits for each query (best first), one list per query.

        ``k`` is clamped to [1, 50]; an empty or whitespace-only query gives an empty list.
        """

    @abc.abstractmethod
    def get(self, doc_id: str) -> Page:
        """Return the passage with this id; raise `PageNotFound` if there is none."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release resources. Idempotent."""

    def __enter__(self) -> SearchBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_search_args(queries: Any, k: Any) -> int:
    """Validate `SearchBackend.search` arguments; return ``k`` clamped to [1, MAX_K]."""
    if isinstance(queries, str) or not isinstance(queries, (list, tuple)):
        raise ValueError(
            f"queries must be a list of strings (wrap one query in a list), got {type(queries).__name__}"
        )
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise ValueError(f"queries[{i}] must be a string, got {type(q).__name__}")
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an int, got {type(k).__name__} {k!r}")
    return max(1, min(MAX_K, k))


@dataclass(frozen=True)
class Passage:
    """One corpus row."""

    id: str
    title: str
    text: str


def bundled_corpus_path() -> Path:
    """The bundled HotpotQA passage corpus (13,062 passages; see ``l0_env/data/NOTICE.md``)."""
    return Path(__file__).resolve().parents[1] / "data" / "hotpotqa_passages.jsonl.gz"


def passage_from_row(row: Any) -> Passage:
    """Parse ``{"id","title","text"}`` or Search-R1/FlashRAG ``{"id","contents"}`` rows.

    ``contents`` is ``'"Title"\\ntext'``: the first line is the title (one pair of surrounding
    quotes removed, as FlashRAG writes them), the rest is the text.
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    doc_id = row.get("id", row.get("doc_id"))
    if doc_id is None or isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id) == "":
        raise ValueError("missing or empty 'id'")
    if "text" in row:
        title, text = row.get("title", ""), row["text"]
        if title is None:
            title = ""
    elif "contents" in row:
        contents = row["contents"]
        if not isinstance(contents, str):
            raise ValueError(f"'contents' must be a string, got {type(contents).__name__}")
        head, sep, rest = contents.partition("\n")
        title, text = (unquote_title(head), rest) if sep else ("", contents)
    else:
        raise ValueError("row has neither 'text' nor 'contents'")
    if not isinstance(title, str) or not isinstance(text, str):
        raise ValueError("'title' and 'text' must be strings")
    return Passage(str(doc_id), title, text)


def unquote_title(head: str) -> str:
    """The title in the first line of a FlashRAG ``contents`` field: one pair of quotes removed."""
    head = head.strip()
    if len(head) >= 2 and head[0] == '"' and head[-1] == '"':
        return head[1:-1]
    return head


def passage_contents(title: str, text: str) -> str:
    """Search-R1/FlashRAG's ``contents`` field: ``'"Title"\\ntext'`` (newlines in the title become spaces)."""
    return '"' + " ".join(title.splitlines()) + '"\n' + text


def iter_passages(path: str | os.PathLike[str]) -> Iterator[Passage]:
    """Stream passages from a JSONL (optionally gzipped) or Parquet corpus file.

    Raises:
        ValueError: An unknown extension or a bad row (the message names the file and line/row).
        FileNotFoundError: The file does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus file not found: {path}")
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
            for row in batch.to_pylist():
                try:
                    yield passage_from_row(row)
                except ValueError as e:
                    raise ValueError(f"{path}: row {n}: {e}") from None
                n += 1
        return
    if not name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")):
        raise ValueError(f"{path}: unknown corpus extension; use .jsonl, .jsonl.gz or .parquet")
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield passage_from_row(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
