"""The one token-budget packer (SFT and the policy gradient had one each)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from l0_learner.packing import pack_by_tokens


@given(st.lists(st.integers(1, 300), max_size=40), st.integers(1, 1000))
def test_every_item_once_and_every_micro_batch_within_the_budget(lengths: list[int], budget: int) -> None:
    items = list(enumerate(lengths))  # (id, length): equal lengths stay distinguishable
    batches = pack_by_tokens(items, budget, length=lambda it: it[1])
    assert sorted(it for b in batches for it in b) == sorted(items)
    assert all(b for b in batches), "no empty micro-batch"
    for b in batches:
        assert len(b) == 1 or len(b) * max(it[1] for it in b) <= budget
    flat = [it for b in batches for it in b]
    assert flat == sorted(items, key=lambda it: it[1]), "shortest first, stable"
    # Greedy: a batch could not have taken the next item.
    for b, nxt in itertools.pairwise(batches):
        assert (len(b) + 1) * nxt[0][1] > budget


def test_edges() -> None:
    assert pack_by_tokens([], 10, length=len) == []
    assert pack_by_tokens(["x" * 50], 10, length=len) == [["x" * 50]], "too long for the budget: alone"
    assert pack_by_tokens(["aa", "b", "cc", "d"], 4, length=len) == [["b", "d"], ["aa", "cc"]]
    with pytest.raises(ValueError, match="budget"):
        pack_by_tokens(["a"], 0, length=len)
