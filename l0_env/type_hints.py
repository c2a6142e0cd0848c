"""JSON data checked against Python type hints: the arguments the agent passes to a tool.

A tool's parameters are declared with ordinary hints (``ticker: str``, ``k: int = 5``,
``ids: list[str]``, ``unit: Literal["C", "F"]``, ``note: str | None = None``); what arrives from
the kernel is JSON data, so only hints that describe JSON data are allowed: ``str``, ``int``,
``float`` (an int is accepted), ``bool``, ``None``, ``list``/``list[X]``, ``dict``/``dict[str, X]``,
``Literal[...]`` of JSON scalars, unions of these, and ``Any`` (or no hint). A ``bool`` is not an
``int`` here (``True`` for ``k`` is a mistake, not 1).

:func:`check_hint` refuses any other hint when a tool is defined; :func:`check_value` raises
:class:`ArgumentTypeError` with a message the agent can act on (``k must be an int, got str``).
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

__all__ = ["ArgumentTypeError", "check_hint", "check_value", "describe"]


class ArgumentTypeError(TypeError):
    """A value does not match its hint; the message names the argument and both types."""


_SCALARS: dict[Any, str] = {
    str: "a str",
    int: "an int",
    float: "a number",
    bool: "a bool",
    type(None): "None",
}
_JSON_NAMES = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    type(None): "None",
    list: "list",
    dict: "dict",
}


def _origin(hint: Any) -> Any:
    return typing.get_origin(hint)


def _is_union(hint: Any) -> bool:
    return _origin(hint) in (Union, types.UnionType)


def check_hint(label: str, hint: Any) -> None:
    """Raise ``ValueError`` when ``hint`` does not describe JSON data (see the module docstring)."""
    if hint is Any or hint in _SCALARS or hint in (list, dict, None):
        return
    origin = _origin(hint)
    if _is_union(hint):
        for arg in typing.get_args(hint):
            check_hint(label, arg)
        return
    if origin is Literal:
        bad = [v for v in typing.get_args(hint) if not isinstance(v, (str, int, float, bool, type(None)))]
        if bad:
            raise ValueError(f"{label}: Literal values must be JSON scalars, got {bad!r}")
        return
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        check_hint(label, item)
        return
    if origin is dict:
        key, value = typing.get_args(hint) or (str, Any)
        if key is not str:
            raise ValueError(f"{label}: dict keys are str in JSON, got dict[{_name(key)}, ...]")
        check_hint(label, value)
        return
    raise ValueError(
        f"{label}: the type hint {_name(hint)} is not JSON data; use str, int, float, bool, None, "
        "list[...], dict[str, ...], Literal[...], unions of them, or Any"
    )


def describe(hint: Any) -> str:
    """A hint in words, for messages: ``an int``, ``a list of str``, ``'C' or 'F'``."""
    if hint is Any:
        return "anything"
    if hint is None:
        return "None"
    if hint in _SCALARS:
        return _SCALARS[hint]
    if hint is list:
        return "a list"
    if hint is dict:
        return "a dict"
    origin = _origin(hint)
    if _is_union(hint):
        return " or ".join(describe(a) for a in typing.get_args(hint))
    if origin is Literal:
        return " or ".join(repr(v) for v in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return f"a list of {_name(item)}"
    if origin is dict:
        _key, value = typing.get_args(hint) or (str, Any)
        return f"a dict of str to {_name(value)}"
    return _name(hint)


def check_value(label: str, value: Any, hint: Any) -> None:
    """Raise :class:`ArgumentTypeError` unless ``value`` (JSON data) matches ``hint``."""
    if not _matches(value, hint):
        raise ArgumentTypeError(f"{label} must be {describe(hint)}, got {_json_type(value)}")
    origin = _origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        for i, v in enumerate(value):
            check_value(f"{label}[{i}]", v, item)
    elif origin is dict:
        _key, item = typing.get_args(hint) or (str, Any)
        for k, v in value.items():
            check_value(f"{label}[{k!r}]", v, item)


def _matches(value: Any, hint: Any) -> bool:
    """The top level only (containers' items are checked by :func:`check_value`)."""
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    origin = _origin(hint)
    if hint is list or origin is list:
        return isinstance(value, list)
    if hint is dict or origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if origin is Literal:
        # 1 == True in Python: a Literal[1] must not take True, nor Literal[True] take 1.
        return any(value == v and type(value) is type(v) for v in typing.get_args(hint))
    if _is_union(hint):
        for arg in typing.get_args(hint):
            if _matches(value, arg):
                try:
                    check_value("", value, arg)
                except ArgumentTypeError:
                    continue
                return True
        return False
    return False


def _json_type(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _name(hint: Any) -> str:
    if hint in _JSON_NAMES:
        return _JSON_NAMES[hint]
    if hint is Any:
        return "Any"
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
