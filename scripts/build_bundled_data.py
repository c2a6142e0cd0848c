"""Build the HotpotQA data bundled with l0_env from /work/shared/data/qa/hotpotqa.

Writes, into ``l0_env/data/``:

- ``hotpotqa_dev.jsonl.gz``: the 1,245 distinct dev questions of the three dev files
  (a duplicate id keeps its first occurrence, files read in the order below), sorted by id.
- ``hotpotqa_train.jsonl.gz``: the 100 train questions, sorted by id.
- ``hotpotqa_passages.jsonl.gz``: the pooled paragraphs of all those questions, one per title,
  sorted by title; ``id`` = ``hp-<6-digit position>`` in that order.

The output is deterministic: same inputs, same bytes (gzip mtime=0, sorted rows, sorted keys).

Usage::

    python scripts/build_bundled_data.py [--src /work/shared/data/qa/hotpotqa] [--out l0_env/data]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
from pathlib import Path
from typing import Any

DEV_FILES = ("dev_distractor_500.jsonl", "dev_distractor_extra_300.jsonl", "dev_distractor_ircot_500.jsonl")
TRAIN_FILES = ("train_distractor_100.jsonl",)
ROOT = Path(__file__).resolve().parents[1]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl_gz(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.BytesIO()
    # mtime=0 and no file name in the header: the bytes depend on the rows only.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def question_row(row: dict[str, Any], source_file: str) -> dict[str, Any]:
    out = {
        "id": row["id"],
        "question": row["question"],
        "answers": list(row["answers"]),
        "supporting_titles": list(row["supporting_titles"]),
        "source_file": source_file,
    }
    for key in ("type", "level"):
        if key in row:
            out[key] = row[key]
    return out


def collect(
    src: Path, files: tuple[str, ...], seen: set[str]
) -> tuple[list[dict], list[tuple[str, str, bool]]]:
    """Return (question rows, paragraphs as (title, text, is_official_join))."""
    questions: list[dict[str, Any]] = []
    paragraphs: list[tuple[str, str, bool]] = []
    for name in files:
        for row in read_jsonl(src / name):
            if row["id"] in seen:
                continue
            seen.add(row["id"])
            questions.append(question_row(row, f"hotpotqa/{name}"))
            for para in row["context"]:
                official = "sentences" in para
                text = "".join(para["sentences"]) if official else para["text"]
                paragraphs.append((para["title"], text, official))
    return questions, paragraphs


def canonical_passages(paragraphs: list[tuple[str, str, bool]]) -> dict[str, str]:
    """One text per title.

    The official join (sentences concatenated, as in the HotpotQA release) wins over IRCoT's
    single-space join. IRCoT joined sentences that already start with a space, so its text has a
    double space at each sentence boundary; for titles only IRCoT has, collapsing "  " to " "
    gives back the official text (checked: 629 of the 643 titles both sources share). When a
    title has several texts of the same kind (2 titles do), the smallest string is kept.
    """
    official: dict[str, str] = {}
    ircot: dict[str, str] = {}
    for title, text, is_official in paragraphs:
        pool = official if is_official else ircot
        pool[title] = min(text, pool.get(title, text))
    out = {title: text.replace("  ", " ") for title, text in ircot.items()}
    out.update(official)
    return out


def build(src: Path, out: Path) -> dict[str, Any]:
    seen: set[str] = set()
    dev, dev_paras = collect(src, DEV_FILES, seen)
    train, train_paras = collect(src, TRAIN_FILES, seen)
    assert len(dev) == 1245, f"expected 1,245 distinct dev questions, got {len(dev)}"
    assert len(train) == 100, f"expected 100 train questions, got {len(train)}"
    dev.sort(key=lambda r: r["id"])
    train.sort(key=lambda r: r["id"])

    texts = canonical_passages(dev_paras + train_paras)
    dev_titles = {t for t, _, _ in dev_paras}
    passages = [
        {"id": f"hp-{i:06d}", "title": title, "text": texts[title]} for i, title in enumerate(sorted(texts))
    ]
    for row in dev + train:
        missing = [t for t in row["supporting_titles"] if t not in texts]
        assert not missing, f"question {row['id']}: supporting titles {missing} have no passage"
        assert row["answers"] and all(a.strip() for a in row["answers"]), row["id"]

    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_gz(out / "hotpotqa_dev.jsonl.gz", dev)
    write_jsonl_gz(out / "hotpotqa_train.jsonl.gz", train)
    write_jsonl_gz(out / "hotpotqa_passages.jsonl.gz", passages)
    stats = {
        "dev_questions": len(dev),
        "train_questions": len(train),
        "passages": len(passages),
        "dev_titles": len(dev_titles),
    }
    for name in ("hotpotqa_dev.jsonl.gz", "hotpotqa_train.jsonl.gz", "hotpotqa_passages.jsonl.gz"):
        data = (out / name).read_bytes()
        stats[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()[:16]}
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path("/work/shared/data/qa/hotpotqa"))
    parser.add_argument("--out", type=Path, default=ROOT / "l0_env" / "data")
    args = parser.parse_args()
    print(json.dumps(build(args.src, args.out), indent=2))


if __name__ == "__main__":
    main()
