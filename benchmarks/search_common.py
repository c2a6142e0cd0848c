"""Shared pieces of the search benchmarks: the issue's HotpotQA corpus, recall, their header line
(machine and tables come from ``common.py``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import common

DEV_FILES = ("dev_distractor_500.jsonl", "dev_distractor_extra_300.jsonl", "dev_distractor_ircot_500.jsonl")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOTPOTQA_DIR = ROOT.parent / "shared" / "data" / "qa" / "hotpotqa"


def build_dev_pool(src: Path, out: Path) -> tuple[Path, list[dict]]:
    """Write the issue's corpus: the pooled paragraphs of all HotpotQA dev questions in ``src``.

    Questions are read from `DEV_FILES` in order (a repeated question id keeps its first copy);
    each paragraph title keeps its first text. That gives 12,115 passages and 1,245 questions, on
    which plain bm25s scores the issue's baseline exactly (0.788 / 0.947 / 0.507 / 0.729). Rows are
    ``{"id": "hpd-000000", "title", "text"}`` in first-seen order; the bytes are deterministic, so
    cached indexes of this file are reused between runs.

    Returns:
        The corpus path and the questions as ``{"id", "question", "supporting_titles"}``.
    """
    paragraphs: dict[str, str] = {}
    questions: dict[str, dict] = {}
    for name in DEV_FILES:
        with (src / name).open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                row = json.loads(line)
                if row["id"] in questions:
                    continue
                questions[row["id"]] = {
                    "id": row["id"],
                    "question": row["question"],
                    "supporting_titles": list(row["supporting_titles"]),
                }
                for para in row["context"]:
                    text = "".join(para["sentences"]) if "sentences" in para else para["text"]
                    paragraphs.setdefault(para["title"], text)
    lines = [
        json.dumps({"id": f"hpd-{i:06d}", "title": t, "text": x}, ensure_ascii=False)
        for i, (t, x) in enumerate(paragraphs.items())
    ]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists() or out.read_bytes() != data:
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(out)
    return out, list(questions.values())


def recall_row(gold: Sequence[set[str]], ranked: Sequence[Sequence[str]]) -> dict[str, float]:
    """The issue's four recalls: ≥1 gold @1, @5; all gold @5, @10 (gold and ranked keys alike)."""
    n = len(gold)
    any1 = any5 = all5 = all10 = 0
    for g, keys in zip(gold, ranked, strict=True):
        top1, top5, top10 = set(keys[:1]), set(keys[:5]), set(keys[:10])
        any1 += bool(g & top1)
        any5 += bool(g & top5)
        all5 += g <= top5
        all10 += g <= top10
    return {"any@1": any1 / n, "any@5": any5 / n, "both@5": all5 / n, "both@10": all10 / n}


def machine_line() -> str:
    """The machine, its load now and Python's version, on one line (the search benchmarks' header)."""
    return f"{common.machine_line()}; load average {os.getloadavg()[0]:.1f} at start; python {sys.version.split()[0]}"
