"""Micro-batches within a token budget: the one packer for SFT and the policy gradient (pure).

A forward pass pads every row of a micro-batch to its longest row, so what it costs (memory and
time) is ``rows × longest row`` tokens. Sorting by length first keeps the padding small.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def pack_by_tokens(items: Iterable[T], budget: int, *, length: Callable[[T], int]) -> list[list[T]]:
    """Group ``items``, shortest first, so that each group's rows × longest row ≤ ``budget``.

    Args:
        items: What to pack (samples, rows of token ids...).
        budget: Tokens per micro-batch, counted with padding. An item longer than the budget
            gets a micro-batch of its own (it cannot be split).
        length: An item's length in tokens (prompt and response together).

    Returns:
        The micro-batches, in order of length (the sort is stable); no empty ones.

    Raises:
        ValueError: If ``budget`` < 1.
    """
    if budget < 1:
        raise ValueError(f"the token budget must be >= 1, got {budget}")
    batches: list[list[T]] = []
    current: list[T] = []
    for item in sorted(items, key=length):
        if current and (len(current) + 1) * length(item) > budget:
            batches.append(current)
            current = []
        current.append(item)
    if current:
        batches.append(current)
    return batches
