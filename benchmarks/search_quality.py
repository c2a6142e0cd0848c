"""Retrieval quality and speed of every search backend on the issue's HotpotQA corpus.

Corpus (default ``--corpus issue``): the pooled paragraphs of all HotpotQA dev questions in
``../shared/data/qa/hotpotqa`` (12,115 passages; `search_common.build_dev_pool`); queries: the
1,245 question texts. ``--corpus bundled`` uses the 13,062 bundled passages instead (the bundled
dev questions are the same 1,245), and a path uses that corpus with the bundled questions.

For each backend: share of questions with ≥1 gold title in the top 1 / 5, with both gold titles
in the top 5 / 10, and the batched search time per query (all questions in one ``search`` call,
k=10, after a warm-up). "baseline" is the issue's plain bm25s (title + text, English stop words,
default settings), computed here so the comparison runs on the same machine.

    python benchmarks/search_quality.py                       # baseline, bm25, and dense/hybrid if installed
    python benchmarks/search_quality.py --sweep               # + BM25 and RRF setting variants
    python benchmarks/search_quality.py --backends bm25,hybrid --corpus bundled

BM25 builds go to a fresh temporary cache (build times are real builds). Dense embeddings are
slow on CPU, so they are cached in ``--dense-cache`` (default: the normal index cache) and reused
between runs; the table then shows the embedding throughput measured on 256 passages instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bm25s

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table
from search_common import DEFAULT_HOTPOTQA_DIR, build_dev_pool, machine_line, recall_row

from l0_env.tasks import load_tasks
from l0_env.tools.bm25 import BM25Search, default_cache_dir
from l0_env.tools.search import SearchBackend, bundled_corpus_path, iter_passages

BM25_SWEEP = {
    "bm25 title x1, no title boost": {"title_weight": 1, "title_boost": 0.0},
    "bm25 title x3, no title boost": {"title_boost": 0.0},
    "bm25 title x5, no title boost": {"title_weight": 5, "title_boost": 0.0},
    "bm25 title x3, boost 0.1": {"title_boost": 0.1},
    "bm25 title x3, boost 0.5": {"title_boost": 0.5},
    "bm25 title x3, boost 1.0": {"title_boost": 1.0},
    "bm25 title x1, boost 0.3": {"title_weight": 1},
    "bm25 no stemming, boost 0.3": {"stemmer": None},
}
HYBRID_SWEEP = {
    "hybrid plain RRF (k 60, weights 1:1)": {"rrf_k": 60.0, "bm25_weight": 1.0},
    "hybrid rrf_k 2": {"rrf_k": 2.0},
    "hybrid rrf_k 60": {"rrf_k": 60.0},
    "hybrid bm25 weight 1": {"bm25_weight": 1.0},
    "hybrid bm25 weight 3": {"bm25_weight": 3.0},
    "hybrid depth 20": {"depth": 20},
    "hybrid, bm25 without title boost": {"bm25_title_boost": 0.0},
}


def timed_search(backend: SearchBackend, queries: list[str]) -> tuple[list[list[str]], float]:
    backend.search(queries[:20], k=10)  # warm-up
    t0 = time.perf_counter()
    results = backend.search(queries, k=10)
    ms = (time.perf_counter() - t0) * 1000 / len(queries)
    return [[h.title for h in hits] for hits in results], ms


def baseline(corpus: Path, queries: list[str]) -> tuple[list[list[str]], float, float]:
    """The issue's plain bm25s: title + text, English stop words, default settings."""
    t0 = time.perf_counter()
    passages = list(iter_passages(corpus))
    titles = [p.title for p in passages]
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([f"{p.title}\n{p.text}" for p in passages], stopwords="en", show_progress=False),
        show_progress=False,
    )
    build_s = time.perf_counter() - t0
    tok = bm25s.tokenize(queries[:20], stopwords="en", show_progress=False)
    retriever.retrieve(tok, k=10, show_progress=False)
    t0 = time.perf_counter()
    docs, _ = retriever.retrieve(
        bm25s.tokenize(queries, stopwords="en", show_progress=False), k=10, show_progress=False
    )
    ms = (time.perf_counter() - t0) * 1000 / len(queries)
    return [[titles[i] for i in row] for row in docs], ms, build_s


def embed_rate(dense: Any, corpus: Path, n: int = 256) -> float:
    from l0_env.tools.dense import doc_text

    texts = []
    for p in iter_passages(corpus):
        texts.append(doc_text(p.title, p.text))
        if len(texts) >= n:
            break
    t0 = time.perf_counter()
    dense.encoder.encode(texts, batch_size=64, show_progress_bar=False)
    return len(texts) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="issue", help="'issue' (default), 'bundled', or a corpus file")
    parser.add_argument("--hotpotqa-dir", type=Path, default=DEFAULT_HOTPOTQA_DIR)
    parser.add_argument("--backends", default="baseline,bm25,dense,hybrid")
    parser.add_argument("--sweep", action="store_true", help="also measure BM25 and RRF setting variants")
    parser.add_argument("--dense-cache", type=Path, default=default_cache_dir())
    args = parser.parse_args()

    if args.corpus == "issue":
        corpus, qs = build_dev_pool(
            args.hotpotqa_dir, default_cache_dir() / "bench" / "hotpotqa_dev_pool.jsonl"
        )
        queries = [q["question"] for q in qs]
        gold = [set(q["supporting_titles"]) for q in qs]
    else:
        corpus = bundled_corpus_path() if args.corpus == "bundled" else Path(args.corpus)
        tasks = load_tasks(split="dev")
        queries = [t.question for t in tasks]
        gold = [set(t.supporting_titles) for t in tasks]
    n_passages = sum(1 for _ in iter_passages(corpus))
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    try:
        import faiss  # noqa: F401
        import sentence_transformers  # noqa: F401

        has_dense = True
    except ImportError:
        has_dense = False
    print(machine_line())
    print(
        f"bm25s {bm25s.__version__}; corpus: {corpus.name} ({n_passages:,} passages); "
        f"queries: {len(queries):,} HotpotQA dev questions, k=10, batched, one process"
    )
    if not has_dense and {"dense", "hybrid"} & set(wanted):
        print("dense/hybrid skipped: the 'dense' extra is not installed")
    print()

    headers = ["backend", "any@1", "any@5", "both@5", "both@10", "ms/query", "build s", "load s"]
    rows: list[list[Any]] = []
    notes: list[str] = []

    def add(name: str, ranked: list[list[str]], ms: float, build: Any, load: Any) -> None:
        r = recall_row(gold, ranked)
        rows.append([name, r["any@1"], r["any@5"], r["both@5"], r["both@10"], f"{ms:.2f}", build, load])
        print(markdown_table(headers, rows[-1:]).splitlines()[-1], flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        if "baseline" in wanted:
            ranked, ms, build_s = baseline(corpus, queries)
            add("baseline: plain bm25s (issue)", ranked, ms, f"{build_s:.1f}", "-")
        bm25_variants = {"bm25 (default: title x3, boost 0.3)": {}}
        if args.sweep:
            bm25_variants.update(BM25_SWEEP)
        if "bm25" in wanted:
            for name, opts in bm25_variants.items():
                cache = Path(tmp) / f"bm25-{len(rows)}"
                t0 = time.perf_counter()
                b = BM25Search.from_corpus(corpus, cache_dir=cache, **opts)
                build_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                b = BM25Search.from_corpus(corpus, cache_dir=cache, **opts)
                load_s = time.perf_counter() - t0
                ranked, ms = timed_search(b, queries)
                add(name, ranked, ms, f"{build_s:.1f}", f"{load_s:.3f}")
        if has_dense and {"dense", "hybrid"} & set(wanted):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from l0_env.tools.dense import DenseSearch
            from l0_env.tools.hybrid import HybridSearch

            t0 = time.perf_counter()
            dense = DenseSearch.from_corpus(corpus, cache_dir=args.dense_cache, show_progress=True)
            dense_build = f"{time.perf_counter() - t0:.0f}" if dense.built else "cached"
            t0 = time.perf_counter()
            dense = DenseSearch.from_corpus(corpus, cache_dir=args.dense_cache, encoder=dense.encoder)
            dense_load = f"{time.perf_counter() - t0:.3f}"
            rate = embed_rate(dense, corpus)
            notes.append(
                f"dense: all-MiniLM-L6-v2 embeds {rate:.0f} passages/s here (batch 64, "
                f"{os.cpu_count()} CPUs); embedding this corpus takes ~{n_passages / rate / 60:.0f} min, "
                f"1M passages ~{1e6 / rate / 3600:.0f} h."
            )
            if "dense" in wanted:
                ranked, ms = timed_search(dense, queries)
                add("dense (MiniLM-L6 + faiss flat)", ranked, ms, dense_build, dense_load)
            if "hybrid" in wanted:
                bm25 = BM25Search.from_corpus(corpus, cache_dir=Path(tmp) / "bm25-hybrid")
                variants: dict[str, dict[str, Any]] = {"hybrid (default: RRF k 10, bm25 weight 2)": {}}
                if args.sweep:
                    variants.update(HYBRID_SWEEP)
                for name, opts in variants.items():
                    opts = dict(opts)
                    bm25.title_boost = opts.pop("bm25_title_boost", 0.3)
                    hybrid = HybridSearch(bm25, dense, **opts)
                    ranked, ms = timed_search(hybrid, queries)
                    add(name, ranked, ms, "(both)", "(both)")
    print()
    print(markdown_table(headers, rows))
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
