"""The bounded memory of recent search results that remote backends serve ``open_page`` from."""

from __future__ import annotations

import threading

import pytest

from l0_env.tools.recent import RecentItems


def test_the_oldest_fall_out_and_putting_again_makes_an_item_the_newest() -> None:
    recent: RecentItems[str, int] = RecentItems(3)
    for i, key in enumerate("abc"):
        recent.put(key, i)
    recent.put("a", 10)  # a is now the newest: b is the oldest
    recent.put("d", 3)
    assert recent.get("b") is None
    assert [recent.get(k) for k in "acd"] == [10, 2, 3]
    assert len(recent) == 3


def test_many_threads_never_grow_it_past_its_capacity() -> None:
    recent: RecentItems[int, int] = RecentItems(100)

    def put(base: int) -> None:
        for i in range(2_000):
            recent.put(base + i, i)

    threads = [threading.Thread(target=put, args=(k * 10_000,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(recent) == 100
    recent.put(-1, -1)  # still a working LRU after the race
    assert recent.get(-1) == -1 and len(recent) == 100


def test_a_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        RecentItems(0)
