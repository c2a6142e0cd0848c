"""A bounded, thread-safe memory of recent items (pages seen in search results).

Remote backends remember what their last results named so that ``open_page`` can serve it
without another request (:class:`l0_env.tools.remote.HTTPSearch`) or check that a URL came from a
result (:class:`l0_env.tools.web.SerperSearch`). Bounded because an agent can search forever.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class RecentItems(Generic[K, V]):
    """The ``capacity`` most recently put items; putting a key again makes it the newest.

    Args:
        capacity: How many items to keep (>= 1); the oldest fall out first.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, key: K) -> V | None:
        """The item, or None when it was never put or has fallen out."""
        with self._lock:
            return self._items.get(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
