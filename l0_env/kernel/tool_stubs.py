"""What the kernel is told about each tool: a name, named parameters with JSON defaults, a docstring.

The kernel turns each :class:`ToolStub` into a Python function with that signature and docstring
(``help(web_search)`` works, a wrong call is an ordinary ``TypeError``) that sends its arguments
through the tool bridge; everything else about a tool (argument types, budgets, the handler) lives
on the host (:class:`l0_env.tool.Tool`). The kernel's own names cannot be taken by a tool.
"""

from __future__ import annotations

import builtins
import json
import keyword
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

RESERVED_NAMES = frozenset({"notepad", "view_file", "ToolError", "BudgetExhausted"})
"""Names the kernel defines itself."""

MAX_DOC_CHARS = 4_000


@dataclass(frozen=True)
class StubParam:
    """One parameter. ``default_json`` is the JSON text of the default, or None for a required one;
    an ``optional`` one without a default is left out of the call unless given (MCP tools)."""

    name: str
    default_json: str | None = None
    keyword_only: bool = False
    optional: bool = False


@dataclass(frozen=True)
class ToolStub:
    """A tool as the kernel sees it (frozen and hashable: it is part of a :class:`KernelConfig`)."""

    name: str
    params: tuple[StubParam, ...] = ()
    doc: str = ""
    wait_s: float | None = None
    """How long the kernel waits for the host's answer (None: 120 s); past the host's deadline."""

    def __post_init__(self) -> None:
        group, _, attr = self.name.rpartition(".")
        if group:  # a server's tool, e.g. "geo.distance": the kernel's object geo, attribute distance
            check_name(group, "tool group name")
            check_name(attr, f"{group}: tool name", allow_builtin=True)
        else:
            check_name(self.name, "tool name")
        seen: set[str] = set()
        for p in self.params:
            check_name(p.name, f"{self.name}: parameter name", allow_builtin=True)
            if p.name in seen:
                raise ValueError(f"{self.name}: parameter {p.name!r} appears twice")
            seen.add(p.name)
            if p.default_json is not None:
                json.loads(p.default_json)  # a default the kernel cannot rebuild is a host bug

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "wait_s": self.wait_s,
            "doc": self.doc[:MAX_DOC_CHARS],
            "params": [
                {"name": p.name, "keyword_only": p.keyword_only}
                | ({} if p.default_json is None else {"default": json.loads(p.default_json)})
                | ({"optional": True} if p.optional else {})
                for p in self.params
            ],
        }


def check_name(name: Any, what: str, *, allow_builtin: bool = False) -> None:
    """A Python identifier that is not a keyword, not one of the kernel's names, not private and
    (for tools) not a builtin that the agent's code relies on (``print``, ``open``)."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"{what} must be a Python identifier, got {name!r}")
    if name.startswith("_"):
        raise ValueError(f"{what} {name!r} must not start with '_' (the kernel's private names do)")
    if not allow_builtin and (name in RESERVED_NAMES or hasattr(builtins, name)):
        raise ValueError(f"{what} {name!r} is taken in the kernel (a builtin or the kernel's own)")


def check_stubs(stubs: Sequence[ToolStub]) -> tuple[ToolStub, ...]:
    """The stubs as a tuple; two tools with one name are refused."""
    out = tuple(stubs)
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"two tools are named {dupes[0]!r}")
    clashes = sorted({n.partition(".")[0] for n in names if "." in n} & set(names))
    if clashes:
        raise ValueError(f"{clashes[0]!r} names both a tool and a server's tools")
    if not all(isinstance(s, ToolStub) for s in out):
        raise ValueError("tools must be ToolStub instances")
    return out
