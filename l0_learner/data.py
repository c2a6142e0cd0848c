"""Which questions each stage uses: data specs, named QA sets, the pooled passage corpus, and the
check that stages are disjoint.

A *data spec* names a question set and, optionally, a slice of it, in one string::

    hotpotqa-dev            the bundled HotpotQA dev sample (1,245 questions, passages indexed)
    hotpotqa-dev[:300]      its first 300 questions
    hotpotqa-dev[300:]      the rest
    hotpotqa-train          the bundled train sample (100 questions)
    musique[:100]           a named QA set (:data:`QA_SETS`), found in the QA data directory
    data/my_tasks.jsonl[100:200]   rows 100–199 of a task file

**Named QA sets** (``hotpotqa``, ``musique``, ``musique-train``, ``bamboogle``, ``simpleqa``,
``nq``, ``triviaqa``, ``popqa``, ``2wiki``) resolve to a file in the *QA data directory*: the
``qa_dir`` argument (``--qa-dir``), else ``$L0_QA_DIR``. Each name lists the files it looks for
(:data:`QA_SETS`), first found wins: the project's shared copies (``/shared/data/qa``, whose
``SOURCES.md`` gives each file's provenance), then the official releases' and FlashRAG's file
names, so either kind of directory works. ``hotpotqa`` falls back to the bundled dev sample when
no directory (or no file) is found; every other name is an error that lists what was looked for.

**Task files** may be in any public layout :mod:`l0_env.tasks.layouts` reads (our JSONL,
FlashRAG, the HotpotQA/2Wiki/MuSiQue/TriviaQA/NQ-open/PopQA/SimpleQA/Bamboogle releases, Parquet).
Files in our schema, FlashRAG's or GAIA's JSON Lines and Parquet are read by
:func:`l0_env.tasks.load_tasks` directly, as before (ids, attached files); the others through the
layout readers.

**The pooled corpus** (:func:`write_pooled_corpus`): every context paragraph of the HotpotQA and
MuSiQue files in the QA directory, de-duplicated by title and text, as one ``{"id", "title",
"text"}`` JSONL file that the embedded BM25 indexes: an offline search backend for the questions
whose paragraphs ship with the data.

Held-out evaluation is only meaningful when the questions a model was fitted on (demonstrations,
SFT) and the ones RL sampled are not the ones it is scored on, so the learner resolves every
stage's spec to question ids, writes them to the run directory and refuses overlapping stages
(:func:`check_disjoint`). Overlap is checked on ids *and* on normalised question text, since two
files can give the same question different ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BUNDLED = {"hotpotqa-dev": "dev", "hotpotqa-train": "train"}
_SLICE_RE = re.compile(r"^(?P<source>.+?)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]$")

QA_DIR_ENV = "L0_QA_DIR"
"""The environment variable naming the QA data directory (when no ``qa_dir`` is passed)."""

QA_SETS: dict[str, tuple[str, ...]] = {
    "hotpotqa": (
        "hotpotqa/dev_distractor_500.jsonl",
        "hotpotqa/hotpot_dev_distractor_v1.json",
        "hotpot_dev_distractor_v1.json",
        "hotpotqa/dev.jsonl",
    ),
    "musique": (
        "musique/dev_answers_1000.jsonl",
        "musique/musique_ans_v1.0_dev.jsonl",
        "musique_ans_v1.0_dev.jsonl",
        "musique/dev.jsonl",
    ),
    "musique-train": (
        "musique/train_with_context_100.jsonl",
        "musique/musique_ans_v1.0_train.jsonl",
        "musique_ans_v1.0_train.jsonl",
        "musique/train.jsonl",
    ),
    "bamboogle": ("bamboogle/test.jsonl", "bamboogle/test.csv", "bamboogle.csv"),
    "simpleqa": ("simpleqa/test.jsonl", "simpleqa/simple_qa_test_set.csv", "simple_qa_test_set.csv"),
    "nq": ("nq/test_1000.jsonl", "nq/test.jsonl", "NQ-open.efficientqa.test.1.1.jsonl"),
    "triviaqa": ("triviaqa/test_1000.jsonl", "triviaqa/test.jsonl", "triviaqa/verified-web-dev.json"),
    "popqa": ("popqa/test_1000.jsonl", "popqa/test.jsonl", "popQA.tsv", "popqa/popQA.tsv"),
    "2wiki": ("2wikimultihopqa/dev_first1000.jsonl", "2wikimultihopqa/dev.jsonl", "2wikimultihopqa/dev.json"),
}
"""Named QA sets → the files looked for under the QA data directory (first found wins). The
first entry is the project's shared copy; the others are the official releases' and FlashRAG's
names. ``musique-train`` is the MuSiQue set that ships its paragraphs (the shared ``musique`` dev
sample has none); ``hotpotqa`` falls back to the bundled ``hotpotqa-dev``."""

QA_PASSAGE_DIRS = ("hotpotqa", "musique")
"""The QA directory's sub-folders whose files' context paragraphs make the pooled corpus."""
_POOL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".parquet")
_POOL_FORMAT = 1  # bump when the pooled file's content rules change


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: a bundled name or a file, and a Python-style slice of its rows.

    ``label`` is the name a named QA set was asked for by (tables show it instead of the file's
    stem); ``note`` says what stood in for it, when something did.
    """

    source: str
    start: int | None = None
    stop: int | None = None
    label: str | None = field(default=None, compare=False)
    note: str | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """A short label for tables: the set's name, the bundled name or the file's stem, with the slice."""
        if self.label is not None:
            base = self.label
        else:
            base = self.source if self.source in BUNDLED else Path(self.source).stem
        if self.start is None and self.stop is None:
            return base
        return f"{base}[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"

    @property
    def slug(self) -> str:
        """:attr:`name` as a file-name part without brackets or colons: ``hotpotqa-dev_0-300``,
        ``hotpotqa-dev_300-end``."""
        if self.start is None and self.stop is None:
            return self.name
        base = self.name.split("[", 1)[0]
        return f"{base}_{self.start or 0}-{'end' if self.stop is None else self.stop}"


def find_qa_dir(qa_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The QA data directory: ``qa_dir`` if given, else ``$L0_QA_DIR``, else None.

    Raises:
        ValueError: The directory named does not exist.
    """
    chosen = qa_dir if qa_dir is not None else os.environ.get(QA_DIR_ENV) or None
    if chosen is None:
        return None
    path = Path(chosen)
    if not path.is_dir():
        origin = "--qa-dir" if qa_dir is not None else f"${QA_DIR_ENV}"
        raise ValueError(
            f"the QA data directory {str(path)!r} ({origin}) does not exist or is not a directory"
        )
    return path


def resolve_qa_set(name: str, qa_dir: str | os.PathLike[str] | None = None) -> Path:
    """The file a named QA set (:data:`QA_SETS`) resolves to in the QA data directory.

    Raises:
        ValueError: An unknown name, no QA data directory, or none of the set's files in it (the
            message lists what was looked for and where).
    """
    if name not in QA_SETS:
        raise ValueError(f"unknown QA set {name!r}; named sets: {', '.join(QA_SETS)}")
    root = find_qa_dir(qa_dir)
    candidates = QA_SETS[name]
    if root is None:
        raise ValueError(
            f"the QA set {name!r} needs a QA data directory: pass --qa-dir DIR or set ${QA_DIR_ENV} "
            f"(it looks there for {', '.join(candidates)})"
        )
    for rel in candidates:
        if (root / rel).is_file():
            return root / rel
    raise ValueError(f"the QA set {name!r}: none of {', '.join(candidates)} exists under {root}")


def parse_data_spec(spec: str, *, qa_dir: str | os.PathLike[str] | None = None) -> DataSpec:
    """Parse ``name[start:stop]`` (the slice is optional).

    Args:
        spec: A bundled name, a named QA set (:data:`QA_SETS`) or a file path, with an optional slice.
        qa_dir: The QA data directory for named sets (default ``$L0_QA_DIR``).

    Raises:
        ValueError: On an empty spec, or a source that is neither a bundled name, a named QA set
            that resolves, nor an existing file (the message lists the names and what was looked for).
    """
    text = str(spec).strip()
    if not text:
        raise ValueError("empty data spec; use e.g. 'hotpotqa-dev[:300]' or a JSONL/Parquet path")
    start = stop = None
    m = _SLICE_RE.match(text)
    if m and (m["source"] in BUNDLED or m["source"] in QA_SETS or not Path(text).exists()):
        text = m["source"]
        start = int(m["start"]) if m["start"] else None
        stop = int(m["stop"]) if m["stop"] else None
    if text in QA_SETS and text not in BUNDLED and not Path(text).exists():
        try:
            path = resolve_qa_set(text, qa_dir)
        except ValueError as exc:
            if text != "hotpotqa":
                raise ValueError(f"data spec {spec!r}: {exc}") from None
            note = f"{exc}; the bundled HotpotQA dev sample (hotpotqa-dev, 1,245 questions) stands in"
            return DataSpec("hotpotqa-dev", start, stop, label="hotpotqa", note=note)
        return DataSpec(str(path), start, stop, label=text)
    if text not in BUNDLED and not Path(text).exists():
        raise ValueError(
            f"data spec {spec!r}: {text!r} is neither a bundled set ({', '.join(sorted(BUNDLED))}), "
            f"a named QA set ({', '.join(QA_SETS)}) nor an existing file"
        )
    return DataSpec(text, start, stop)


def load_task_dicts(spec: str | DataSpec, n: int | None = None) -> list[dict[str, Any]]:
    """The questions of a spec as task dicts (``id``, ``question``, ``answers``, ``supporting_titles``;
    ``answer_type`` and ``tolerance`` where the task has them, ``files`` where it attaches files).

    Args:
        spec: A data spec string or a parsed :class:`DataSpec`.
        n: Keep only the first ``n`` after slicing (None or 0: all).
    """
    from l0_env.tasks import load_tasks

    parsed = spec if isinstance(spec, DataSpec) else parse_data_spec(spec)
    if parsed.source in BUNDLED:
        tasks = load_tasks(None, split=BUNDLED[parsed.source])
    else:
        tasks = _load_file_tasks(Path(parsed.source))
    rows = [_task_dict(t) for t in tasks][parsed.start : parsed.stop]
    return rows[:n] if n else rows


# What changes how a task is played or scored, kept from its metadata (the rest, e.g. HotpotQA's
# context paragraphs, would only bloat every record and info dict).
_SCORING_KEYS = ("answer_type", "tolerance")


def _task_dict(task: Any) -> dict[str, Any]:
    row = task.to_dict()
    metadata = row.pop("metadata")
    row.update({k: metadata[k] for k in _SCORING_KEYS if k in metadata})
    if not row["files"]:
        del row["files"]
    return row


# Layouts that l0_env.tasks.load_tasks reads natively from JSON Lines (it keeps their ids and
# resolves GAIA's attached files); every other layout goes through the layout readers.
_NATIVE_LAYOUTS = frozenset({"ours", "flashrag", "gaia", "nq_open"})


def _load_file_tasks(path: Path) -> list[Any]:
    from l0_env.tasks import load_tasks
    from l0_env.tasks.layouts import detect_format, detect_layout, iter_rows

    if path.is_dir() or detect_format(path) == "parquet":
        return load_tasks(path)
    layout = detect_layout(path)
    if layout in _NATIVE_LAYOUTS and detect_format(path) == "jsonl":
        return load_tasks(path)
    return load_tasks(list(iter_rows(path, layout)))


@dataclass(frozen=True)
class PooledCorpus:
    """A pooled passage file and how it was made.

    Attributes:
        path: The ``{"id", "title", "text"}`` JSONL file.
        files: The QA files whose context paragraphs it holds, in reading order.
        passages: Distinct passages written.
        duplicates: Paragraphs left out as repeats (same title, same text up to whitespace).
        paragraphs_per_file: Paragraphs read from each file (before de-duplication).
    """

    path: str
    files: list[str]
    passages: int
    duplicates: int
    paragraphs_per_file: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pooled_corpus_files(qa_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The QA files whose paragraphs make the pooled corpus: every task file under the QA
    directory's ``hotpotqa/`` and ``musique/`` folders (:data:`QA_PASSAGE_DIRS`), sorted.

    Raises:
        ValueError: No QA data directory, or no such file in it.
    """
    root = find_qa_dir(qa_dir)
    if root is None:
        raise ValueError(
            f"the pooled corpus is built from the QA data directory: pass --qa-dir DIR or set ${QA_DIR_ENV}"
        )
    files = sorted(
        p
        for sub in QA_PASSAGE_DIRS
        if (root / sub).is_dir()
        for p in (root / sub).iterdir()
        if p.is_file() and p.name.lower().endswith(_POOL_SUFFIXES)
    )
    if not files:
        raise ValueError(
            f"no HotpotQA or MuSiQue files under {root} ({', '.join(d + '/' for d in QA_PASSAGE_DIRS)}): "
            "nothing to pool"
        )
    return files


def write_pooled_corpus(
    files: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]
) -> PooledCorpus:
    """Pool the context paragraphs of ``files`` into one passage file under ``out_dir`` (cached).

    Paragraphs are de-duplicated by title and text with runs of whitespace collapsed (IRCoT's
    HotpotQA copy joins sentences with an extra space); the first copy's text is kept. Passage ids
    are ``pool-<n>`` in reading order. The file is named by a hash of the inputs' paths, sizes and
    modification times, so an unchanged set of files is pooled once and reused; it is written to
    a temporary file and renamed into place. Files without paragraphs contribute nothing.

    Raises:
        ValueError: A file in no known layout or with a malformed row (the message names it).
    """
    from l0_env.recording import atomic_write_text
    from l0_env.tasks.layouts import iter_rows

    paths = [Path(f) for f in files]
    stamp = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]
    key = hashlib.sha256(json.dumps([_POOL_FORMAT, stamp]).encode()).hexdigest()[:16]
    out = Path(out_dir)
    target, meta = out / f"pooled-{key}.jsonl", out / f"pooled-{key}.json"
    if target.is_file() and meta.is_file():
        return PooledCorpus(**json.loads(meta.read_text(encoding="utf-8")))
    out.mkdir(parents=True, exist_ok=True)
    seen: set[bytes] = set()
    per_file: dict[str, int] = {}
    written = duplicates = 0
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=out)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for path in paths:
                count = 0
                for row in iter_rows(path):
                    for para in row.get("context") or ():
                        count += 1
                        text = para["text"]
                        # Keys as digests: a pool of millions of paragraphs keeps 20 bytes each.
                        digest = hashlib.sha1(f"{para['title']}\n{' '.join(text.split())}".encode()).digest()
                        if digest in seen:
                            duplicates += 1
                            continue
                        seen.add(digest)
                        written += 1
                        record = {"id": f"pool-{written:07d}", "title": para["title"], "text": text}
                        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                per_file[str(path)] = count
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    pooled = PooledCorpus(str(target), [str(p) for p in paths], written, duplicates, per_file)
    atomic_write_text(meta, json.dumps(pooled.as_dict(), indent=1) + "\n")
    return pooled


def _question_key(question: str) -> str:
    return " ".join(question.lower().split())


def check_disjoint(stages: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Raise if two stages share a question (by id or by normalised question text).

    Args:
        stages: Stage name → its task dicts (each with ``id`` and ``question``).

    Raises:
        ValueError: Naming both stages, how many questions they share and a few examples.
    """
    names = list(stages)
    for i, a in enumerate(names):
        ids_a = {str(t["id"]) for t in stages[a]}
        text_a = {_question_key(t["question"]) for t in stages[a]}
        for b in names[i + 1 :]:
            shared = sorted(
                {
                    str(t["id"])
                    for t in stages[b]
                    if str(t["id"]) in ids_a or _question_key(t["question"]) in text_a
                }
            )
            if shared:
                raise ValueError(
                    f"the {a!r} and {b!r} questions overlap in {len(shared)} question(s) "
                    f"(e.g. {', '.join(shared[:3])}): a held-out score needs disjoint sets; "
                    "change the stages' data specs (e.g. hotpotqa-dev[:300] vs hotpotqa-dev[300:])"
                )


__all__ = [
    "BUNDLED",
    "QA_DIR_ENV",
    "QA_PASSAGE_DIRS",
    "QA_SETS",
    "DataSpec",
    "PooledCorpus",
    "check_disjoint",
    "find_qa_dir",
    "load_task_dicts",
    "parse_data_spec",
    "pooled_corpus_files",
    "resolve_qa_set",
    "write_pooled_corpus",
]
