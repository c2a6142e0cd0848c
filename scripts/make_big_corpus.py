"""Grow a passage corpus to N passages with distractors made by recombining its real sentences.

    python scripts/make_big_corpus.py --size 1000000 --out ~/.cache/l0_env/bench/big-1m.jsonl

The output holds every real passage of ``--base`` first (same ids, titles and texts; default: the
bundled 13,062 HotpotQA passages, which contain the gold paragraphs of all bundled questions),
then ``size - len(base)`` distractors ``{"id": "dx-0000000", "title", "text"}``:

- text: 2-5 sentences (uniform) drawn independently and uniformly from all real sentences
  (split at ``. ``/``! ``/``? `` before a capital, digit or quote; sentences under 20 characters
  dropped), so vocabulary and term statistics stay those of real Wikipedia text, and every real
  sentence reappears in about ``3.5 * (size - len(base)) / len(sentences)`` distractors;
- title: the first half of one random real title's words (without a trailing "(...)") + the
  second half of another's ("Harvey Pekar" + "American Splendor (film)" -> "Harvey Splendor
  (film)"): title words have
  real statistics, yet a distractor rarely repeats a real title exactly.

The distractors are harder than most of Wikipedia (they contain the gold sentences themselves,
cut and mixed) and easier in one way (no topical coherence). Recall on the real questions is
measured by the ids of the real gold passages. Same arguments, same bytes: numpy's PCG64 with
``--seed``, fixed JSON formatting.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from l0_env.tools.search import bundled_corpus_path, iter_passages  # noqa: E402

_QUALIFIER = re.compile(r"\s*\([^()]*\)\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.strip()) >= 20]


def make_big_corpus(base: Path, out: Path, size: int, seed: int = 0, show_progress: bool = True) -> dict:
    """Write the grown corpus to ``out`` (JSONL; ``.gz`` suffix compresses); return a summary."""
    real = list(iter_passages(base))
    if size < len(real):
        raise ValueError(f"--size {size} is smaller than the base corpus ({len(real)} passages)")
    sentences = [s for p in real for s in split_sentences(p.text)]
    titles = [p.title.split() or [p.title] for p in real]
    bare = [_QUALIFIER.sub("", p.title).split() or [p.title] for p in real]
    rng = np.random.Generator(np.random.PCG64(seed))
    n_new = size - len(real)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    opener = __import__("gzip").open if out.name.endswith(".gz") else open
    started = time.monotonic()
    with opener(tmp, "wt", encoding="utf-8") as f:
        for p in real:
            f.write(json.dumps({"id": p.id, "title": p.title, "text": p.text}, ensure_ascii=False) + "\n")
        block = 100_000
        for start in range(0, n_new, block):
            m = min(block, n_new - start)
            counts = rng.integers(2, 6, size=m)
            picks = rng.integers(0, len(sentences), size=int(counts.sum()))
            ta = rng.integers(0, len(titles), size=m)
            tb = rng.integers(0, len(titles), size=m)
            offsets = np.concatenate([[0], np.cumsum(counts)])
            lines = []
            for i in range(m):
                a, b = bare[ta[i]], titles[tb[i]]
                title = " ".join(a[: max(1, len(a) // 2)] + b[len(b) // 2 :])
                text = " ".join(sentences[j] for j in picks[offsets[i] : offsets[i + 1]])
                row = {"id": f"dx-{start + i:07d}", "title": title, "text": text}
                lines.append(json.dumps(row, ensure_ascii=False))
            f.write("\n".join(lines) + "\n")
            if show_progress:
                done = start + m
                rate = done / max(1e-9, time.monotonic() - started)
                print(
                    f"\r{done:,}/{n_new:,} distractors ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True
                )
    if show_progress:
        print(file=sys.stderr)
    tmp.replace(out)
    return {
        "out": str(out),
        "passages": size,
        "real": len(real),
        "distractors": n_new,
        "sentences": len(sentences),
        "bytes": out.stat().st_size,
        "seed": seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="total passages (real + distractors)")
    parser.add_argument("--out", type=Path, required=True, help="output .jsonl or .jsonl.gz")
    parser.add_argument("--base", type=Path, default=bundled_corpus_path(), help="real passages to grow")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    summary = make_big_corpus(args.base, args.out, args.size, args.seed)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
