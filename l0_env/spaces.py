"""Charset-free text and chat-message spaces.

gymnasium's ``spaces.Text`` needs a finite charset and batches strings through shared memory
(where it silently returns stale strings). LLM actions are arbitrary Unicode, so these spaces
accept any ``str`` within a length bound and are never flattenable to arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

ROLES = ("system", "user", "assistant")


def _random_text(rng: np.random.Generator, max_length: int) -> str:
    length = int(rng.integers(0, max_length + 1))
    # Mostly printable ASCII with some arbitrary code points (surrogates excluded: not valid str
    # content for UTF-8 encoders downstream).
    points = rng.integers(32, 127, size=length)
    wide = rng.random(length) < 0.1
    points[wide] = rng.integers(0xA0, 0xD7FF, size=int(wide.sum()))
    return "".join(map(chr, points.tolist()))


class TextSpace(spaces.Space[str]):
    """Any Unicode string of at most ``max_length`` characters."""

    def __init__(self, max_length: int = 65_536, *, seed: int | np.random.Generator | None = None) -> None:
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        self.max_length = max_length
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """A random string (mostly ASCII, some wider code points), at most 64 characters."""
        return _random_text(self.np_random, min(self.max_length, 64))

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"TextSpace(max_length={self.max_length})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TextSpace) and other.max_length == self.max_length


class ChatSpace(spaces.Space[list]):
    """A list of chat messages ``{"role": "system"|"user"|"assistant", "content": str}``."""

    def __init__(
        self,
        max_messages: int = 512,
        max_chars: int = 1_000_000,
        *,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        self.max_messages = max_messages
        self.max_chars = max_chars
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def sample(self, mask: Any = None, probability: Any = None) -> list[dict[str, str]]:
        n = int(self.np_random.integers(1, 4))
        roles = ["system"] + ["user", "assistant"] * n
        return [{"role": role, "content": _random_text(self.np_random, 64)} for role in roles[:n]]

    def contains(self, x: Any) -> bool:
        if not isinstance(x, list) or not 0 < len(x) <= self.max_messages:
            return False
        total = 0
        for message in x:
            if not isinstance(message, dict) or set(message) != {"role", "content"}:
                return False
            if message["role"] not in ROLES or not isinstance(message["content"], str):
                return False
            total += len(message["content"])
        return total <= self.max_chars

    def __repr__(self) -> str:
        return f"ChatSpace(max_messages={self.max_messages}, max_chars={self.max_chars})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ChatSpace)
            and other.max_messages == self.max_messages
            and other.max_chars == self.max_chars
        )


def refuse_shared_memory() -> None:
    """Make gymnasium's shared-memory batching fail loudly for our spaces.

    ``AsyncVectorEnv(shared_memory=True)`` (its default) would otherwise fail with an obscure
    custom-space error, and for ``spaces.Text`` it silently returns stale strings. Say what to do.
    """
    from gymnasium.error import CustomSpaceError
    from gymnasium.vector.utils import create_shared_memory

    def refuse(space: spaces.Space, n: int = 1, ctx: Any = None) -> Any:
        raise CustomSpaceError(
            f"{space!r} holds text, which gymnasium's shared memory cannot carry. Use "
            "gym.make_vec(..., vectorization_mode='async', vector_kwargs={'shared_memory': False}), "
            "or the default vectorization_mode='vector_entry_point' (l0_env.vector.NotebookVectorEnv)."
        )

    for space_type in (TextSpace, ChatSpace):
        create_shared_memory.register(space_type)(refuse)
