"""Hybrid retrieval: reciprocal rank fusion (RRF) of BM25 and dense results (``dense`` extra).

For each query, BM25 and the dense index each rank their best ``depth`` passages; a passage's
fused score is ``sum_i w_i / (rrf_k + rank_i)`` over the lists it appears in (rank from 1;
Cormack et al., 2009). Both indexes are built from the same corpus file, so their rows are the
same passages and the fusion works on rows, not ids.

Defaults (``rrf_k=10``, BM25 weight 2, depth 100) come from a grid over rrf_k {2, 5, 10, 20, 60} x
BM25 weight {1, 1.5, 2, 3} x depth {20, 50, 100} on the HotpotQA dev questions
(benchmarks/search_quality.py): MiniLM alone is weaker than BM25 on these multi-entity questions,
so BM25 gets more weight, and a small rrf_k lets top ranks dominate. Plain RRF (60, 1, 1) scores
0.757 "both gold @10" there, below BM25 alone (0.778); the defaults score 0.798. The grid is flat
near the defaults (within 0.005), but they were tuned on the questions they are measured on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from l0_env.tools.bm25 import BM25Search
from l0_env.tools.dense import DenseSearch
from l0_env.tools.search import Hit, Page, SearchBackend, check_search_args


def rrf_fuse(
    ranked_lists: list[np.ndarray], weights: list[float], rrf_k: float, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse best-first row lists; return the top ``k`` rows and fused scores (ties: lower row first)."""
    fused: dict[int, float] = {}
    for rows, w in zip(ranked_lists, weights, strict=True):
        for rank, row in enumerate(rows.tolist(), start=1):
            fused[row] = fused.get(row, 0.0) + w / (rrf_k + rank)
    best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
    return np.array([r for r, _ in best], dtype=np.int64), np.array([s for _, s in best])


class HybridSearch(SearchBackend):
    """RRF of a `BM25Search` and a `DenseSearch` over the same corpus. Build with `from_corpus`.

    Args:
        bm25: The BM25 backend.
        dense: The dense backend (same corpus file).
        rrf_k: The RRF rank constant (Cormack et al. use 60; see the module docstring for 10).
        depth: How many results of each backend are fused.
        bm25_weight: Weight of the BM25 list (the dense list has weight 1).
    """

    def __init__(
        self,
        bm25: BM25Search,
        dense: DenseSearch,
        *,
        rrf_k: float = 10.0,
        depth: int = 100,
        bm25_weight: float = 2.0,
    ) -> None:
        if bm25.num_docs != dense.num_docs or bm25.store.doc_id(0) != dense.store.doc_id(0):
            raise ValueError("HybridSearch needs BM25 and dense indexes of the same corpus file")
        self.bm25 = bm25
        self.dense = dense
        self.rrf_k = rrf_k
        self.depth = depth
        self.bm25_weight = bm25_weight
        self.num_docs = bm25.num_docs

    @classmethod
    def from_corpus(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        bm25_options: Mapping[str, Any] | None = None,
        dense_options: Mapping[str, Any] | None = None,
        rrf_k: float = 10.0,
        depth: int = 100,
        bm25_weight: float = 2.0,
        show_progress: bool = False,
    ) -> HybridSearch:
        """Load (building if needed) both indexes of ``path``; options go to each ``from_corpus``."""
        bm25 = BM25Search.from_corpus(
            path, cache_dir=cache_dir, show_progress=show_progress, **dict(bm25_options or {})
        )
        dense = DenseSearch.from_corpus(
            path, cache_dir=cache_dir, show_progress=show_progress, **dict(dense_options or {})
        )
        return cls(bm25, dense, rrf_k=rrf_k, depth=depth, bm25_weight=bm25_weight)

    def ranked_many(self, queries: list[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        dense = self.dense.ranked_many(queries, self.depth)
        out = []
        for q, (d_rows, _) in zip(queries, dense, strict=True):
            b_rows, _ = self.bm25.ranked(q, self.depth)
            out.append(rrf_fuse([b_rows, d_rows], [self.bm25_weight, 1.0], self.rrf_k, k))
        return out

    def search(self, queries: list[str], k: int = 5) -> list[list[Hit]]:
        k = check_search_args(queries, k)
        return [
            [self.bm25.hit(int(r), float(s)) for r, s in zip(rows, scores, strict=True)]
            for rows, scores in self.ranked_many(list(queries), k)
        ]

    def get(self, doc_id: str) -> Page:
        return self.bm25.get(doc_id)

    def close(self) -> None:
        self.bm25.close()
        self.dense.close()
