"""Checks of ``NotebookEnv``'s constructor arguments: each bad value is a ``ValueError`` naming it.

A bad number must fail at ``gym.make``, not in the middle of training: ``cell_timeout=nan``
compares false with everything, so it used to disable the cell timeout (``while True: pass`` then
hung ``env.step`` for good); a negative ``max_context_tokens`` ended every episode at step 1.
(``tool_budgets`` is checked by :func:`l0_env.tool_service.check_tool_budgets`.)
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "check_dataclass_arg",
    "check_int",
    "check_record_dir",
    "check_seconds",
]

T = TypeVar("T")


def check_seconds(name: str, value: Any) -> float:
    """A finite number of seconds > 0 (bools, nan and inf are refused)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def check_int(name: str, value: Any, minimum: int) -> int:
    """An int (not a bool, not a float) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_dataclass_arg(name: str, value: Any, cls: type[T]) -> T:
    """An instance of the dataclass ``cls``, or a mapping of its fields.

    Fields whose default is a number must hold a finite number (not nan, inf, a bool or a str).

    Raises:
        ValueError: Another type, an unknown field, or a value the class or this check refuses.
    """
    if isinstance(value, Mapping):
        # The ignore: cls is a dataclass (every caller passes one), which a TypeVar cannot say.
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(value) - fields)
        if unknown:
            raise ValueError(f"{name}: unknown keys {unknown}; {cls.__name__} has {sorted(fields)}")
        try:
            value = cls(**value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: {exc}") from None
    if not isinstance(value, cls):
        raise ValueError(
            f"{name} must be a {cls.__name__} or a dict of its fields, got {type(value).__name__}"
        )
    for field in dataclasses.fields(value):  # type: ignore[arg-type]  # a cls instance: a dataclass
        item, default = getattr(value, field.name), field.default
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and (
            isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item)
        ):
            raise ValueError(f"{name}.{field.name} must be a finite number, got {item!r}")
    return value


def check_record_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and prove a file can be written there (a probe, then removed).

    A probe, not ``os.access``: as root ``os.access`` says yes to a read-only mount.
    """
    record_dir = Path(path)
    try:
        record_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=record_dir, prefix=".l0-write-probe-"):
            pass
    except OSError as exc:
        raise ValueError(
            f"record_dir {str(record_dir)!r} cannot be written ({exc.strerror or exc}): episodes "
            "could not be recorded"
        ) from None
    return record_dir
