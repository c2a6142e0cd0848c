"""What crosses the wire per step: the observation as a delta against the one sent before.

A notebook env's observation is the whole chat so far, so sending it whole every step would copy
the context (up to the token budget, tens of KiB) at each step: quadratic in the episode. The
shard sends ``(keep, tail)``: the first ``keep`` messages are those of the observation it sent
last for this env, ``tail`` the rest. The driver rebuilds the list from the one it holds. When the
context is compacted or cut, the shared prefix is shorter and more is sent; nothing is assumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def encode_obs(previous: Sequence[Any] | None, obs: Sequence[Any]) -> tuple[int, list[Any]]:
    """``(keep, tail)`` with ``obs == [*previous[:keep], *tail]`` and ``keep`` as large as it can be."""
    if previous is None:
        return 0, list(obs)
    keep, limit = 0, min(len(previous), len(obs))
    while keep < limit and (previous[keep] is obs[keep] or previous[keep] == obs[keep]):
        keep += 1
    return keep, list(obs[keep:])


def decode_obs(previous: Sequence[Any] | None, keep: int, tail: Sequence[Any]) -> list[Any]:
    """The observation :func:`encode_obs` encoded, from the ``previous`` one the receiver holds.

    Raises:
        ValueError: ``keep`` is longer than ``previous`` (sender and receiver disagree).
    """
    held = 0 if previous is None else len(previous)
    if not 0 <= keep <= held:
        raise ValueError(f"observation delta keeps {keep} messages, but {held} are held")
    return [*(previous or [])[:keep], *tail]
