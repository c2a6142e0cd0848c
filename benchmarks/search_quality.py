"""Retrieval quality and speed of the embedded BM25 search on the bundled HotpotQA data.

For each bundled dev question (query = the question text) it reports the share of questions with
at least one gold (supporting) title in the top 1 / top 5, with both gold titles in the top 5 / 10,
the batched search time per query, the index build time and the cached load time.

    python benchmarks/search_quality.py            # default settings only
    python benchmarks/search_quality.py --sweep    # also a few title-weight / stemming variants

Builds go to a fresh temporary cache folder, so build times are real builds. The default title
weight (3) was chosen from this sweep: weights 4-6 add about 0.01 at top 1 but nothing at top 10,
and lean harder on question words that happen to be titles, so we stopped at 3.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import bm25s

from l0_env.tasks import load_tasks
from l0_env.tools.bm25 import BM25Search
from l0_env.tools.search import bundled_corpus_path, iter_passages

VARIANTS = {
    "default (stem, title x3, k1 1.2)": {},
    "plain (no stem, title x1, k1 1.5)": {"stemmer": None, "title_weight": 1, "k1": 1.5},
    "stem, title x1": {"title_weight": 1},
    "stem, title x2": {"title_weight": 2},
    "stem, title x5": {"title_weight": 5},
    "no stem, title x3": {"stemmer": None},
}


def measure(settings: dict, tasks: list, cache_dir: str) -> dict[str, float]:
    t0 = time.perf_counter()
    backend = BM25Search.from_corpus(cache_dir=cache_dir, **settings)
    build_s = time.perf_counter() - t0
    assert backend.built
    t0 = time.perf_counter()
    backend = BM25Search.from_corpus(cache_dir=cache_dir, **settings)
    load_s = time.perf_counter() - t0
    assert not backend.built
    queries = [t.question for t in tasks]
    backend.search(queries[:20], k=10)  # warm-up
    t0 = time.perf_counter()
    results = backend.search(queries, k=10)
    per_query_ms = (time.perf_counter() - t0) * 1000 / len(queries)
    n = len(tasks)
    one1 = one5 = all5 = all10 = 0
    for task, hits in zip(tasks, results, strict=True):
        gold = set(task.supporting_titles)
        titles = [h.title for h in hits]
        one1 += bool(gold & set(titles[:1]))
        one5 += bool(gold & set(titles[:5]))
        all5 += gold <= set(titles[:5])
        all10 += gold <= set(titles[:10])
    return {
        "any@1": one1 / n,
        "any@5": one5 / n,
        "both@5": all5 / n,
        "both@10": all10 / n,
        "ms/query": per_query_ms,
        "build s": build_s,
        "load s": load_s,
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="also measure a few setting variants")
    args = parser.parse_args()
    tasks = load_tasks(split="dev")
    corpus = bundled_corpus_path()
    n_passages = sum(1 for _ in iter_passages(corpus))
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}")
    print(f"python {sys.version.split()[0]}, bm25s {bm25s.__version__}")
    print(f"corpus: {corpus.name} ({corpus.stat().st_size:,} bytes, {n_passages:,} passages)")
    print(f"queries: {len(tasks):,} bundled HotpotQA dev questions, batched, k=10, one thread")
    print()
    names = list(VARIANTS) if args.sweep else list(VARIANTS)[:1]
    cols = ["any@1", "any@5", "both@5", "both@10", "ms/query", "build s", "load s"]
    print(f"| {'settings':<34} | " + " | ".join(f"{c:>8}" for c in cols) + " |")
    print(f"|{'-' * 36}|" + "|".join("-" * 10 for _ in cols) + "|")
    for name in names:
        with tempfile.TemporaryDirectory() as cache_dir:
            row = measure(VARIANTS[name], tasks, cache_dir)
        cells = [f"{row[c]:8.3f}" for c in cols]
        print(f"| {name:<34} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
