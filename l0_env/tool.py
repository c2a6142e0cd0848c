"""One tool abstraction: everything about a tool derives from one :class:`Tool`.

A tool is a host-side Python function. Its name, signature and docstring become the kernel's stub
(:class:`l0_env.kernel.tool_stubs.ToolStub`) and the system prompt's entry; its type hints check
the agent's arguments (:mod:`l0_env.type_hints`); ``budget`` caps its calls per episode;
``timeout`` bounds each call (a hung function cannot hold the episode); how its errors reach the
agent is fixed here: a :class:`ToolCallError` the function raises is shown as it is (the tool
chose the words), any other exception only by its type name (its text can carry secrets: a key in
a URL, a host path), and a result that is not JSON data, or is too large, is a ``ToolError``.

    def stock_price(ticker: str) -> float:
        \"\"\"Last closing price of a ticker.\"\"\"
        ...

    env = gym.make("L0Notebook-v0", tools=[stock_price])   # or Tool.from_function(stock_price, budget=5)

The built-in tools (``web_search``, ``open_page``, ``submit_final_answer``) are Tools too
(:mod:`l0_env.builtin_tools`); :class:`l0_env.tool_service.ToolService` runs them for an episode.
"""

from __future__ import annotations

import inspect
import json
import keyword
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .context import ToolDoc
from .env_args import check_int, check_seconds
from .kernel.bridge import ToolCallError
from .kernel.tool_stubs import StubParam, ToolStub, check_name
from .type_hints import ArgumentTypeError, check_hint, check_value

__all__ = ["MAX_RESULT_BYTES", "Tool", "ToolCallError", "as_tools", "short_repr"]

MAX_RESULT_BYTES = 1 << 20
"""Largest tool result (as JSON) sent to the kernel; a bigger one is a ToolError."""

_EMPTY = inspect.Parameter.empty


class _Omitted:
    def __repr__(self) -> str:
        return "..."


OMITTED: Any = _Omitted()
"""Default of a schema tool's optional parameter: left out of the call unless the agent gives it."""


@dataclass(frozen=True)
class Tool:
    """A function the agent can call from its notebook.

    Build one with :meth:`from_function` (hints and docstring are read from the function).

    Attributes:
        name: The Python name in the kernel.
        fn: The host-side function; called with the checked arguments as keywords.
        description: What it does and returns (the system prompt and the stub's docstring).
        parameters: The function's named parameters.
        hints: Each parameter's type hint (``Any`` where none is given).
        budget: Calls per episode (None: no limit but the env's request limits).
        timeout: Seconds a call may take (None: the env's ``tool_timeout``). A call past it is a
            ``ToolError`` for the agent; the function's thread is left to finish on its own.
        inline: Run in the bridge thread without a deadline (for tools that only touch the
            episode's own state, like ``submit_final_answer``: fast, and they must not race it).
        prepare: Optional argument rewrite before the checks (e.g. ``open_page`` takes a whole hit
            dict for its ``doc_id``).
        validate: Optional check of the typed arguments (ranges, lengths) that raises a
            :class:`ToolCallError`; it runs before the call is counted against the budget.

    :attr:`signature_text` is the signature shown to the agent, e.g. ``web_search(query, k=5)``.
    """

    name: str
    fn: Callable[..., Any]
    description: str
    parameters: tuple[inspect.Parameter, ...]
    hints: Mapping[str, Any] = field(default_factory=dict)
    budget: int | None = None
    timeout: float | None = None
    inline: bool = False
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    validate: Callable[[dict[str, Any]], None] | None = None
    schema: Mapping[str, Any] | None = None

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        budget: int | None = None,
        timeout: float | None = None,
        inline: bool = False,
        prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        validate: Callable[[dict[str, Any]], None] | None = None,
    ) -> Tool:
        """A Tool from a function with type hints and a docstring.

        Raises:
            ValueError: The function cannot be a tool (no name, ``*args``/``**kwargs`` or
                positional-only parameters, a hint that is not JSON data, a default that is not
                JSON data, a name the kernel uses, a bad budget or timeout).
        """
        if not callable(fn):
            raise ValueError(f"a tool must be a callable, got {type(fn).__name__}")
        tool_name = name if name is not None else getattr(fn, "__name__", None)
        check_name(tool_name, "tool name")
        assert isinstance(tool_name, str)
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"tool {tool_name!r}: cannot read its signature ({exc})") from None
        try:
            resolved = typing.get_type_hints(fn)
        except Exception as exc:  # a hint naming something that is not importable
            raise ValueError(f"tool {tool_name!r}: cannot resolve its type hints ({exc!r})") from None
        params, hints = [], {}
        for p in sig.parameters.values():
            if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                raise ValueError(
                    f"tool {tool_name!r}: parameter {p.name!r} must be named (no *args, **kwargs "
                    "or positional-only parameters): the agent's call is sent as keywords"
                )
            hint = resolved.get(p.name, Any)
            check_hint(f"tool {tool_name!r}, parameter {p.name!r}", hint)
            if p.default is not _EMPTY:
                try:
                    json.dumps(p.default, allow_nan=False)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"tool {tool_name!r}: the default of {p.name!r} ({p.default!r}) is not JSON data"
                    ) from None
            params.append(p)
            hints[p.name] = hint
        text = description if description is not None else inspect.getdoc(fn) or ""
        if not text.strip():
            raise ValueError(
                f"tool {tool_name!r} has no description: give the function a docstring (the agent "
                "reads it in the system prompt) or pass description="
            )
        if budget is not None:
            check_int(f"tool {tool_name!r}: budget", budget, 0)
        if timeout is not None:
            timeout = check_seconds(f"tool {tool_name!r}: timeout", timeout)
        return cls(
            name=tool_name,
            fn=fn,
            description=text.strip(),
            parameters=tuple(params),
            hints=hints,
            budget=budget,
            timeout=timeout,
            inline=inline,
            prepare=prepare,
            validate=validate,
        )

    @classmethod
    def from_schema(
        cls,
        name: str,
        fn: Callable[..., Any],
        *,
        description: str,
        input_schema: Mapping[str, Any],
        budget: int | None = None,
        timeout: float | None = None,
    ) -> Tool:
        """A Tool whose parameters come from a JSON schema (an MCP tool's ``inputSchema``).

        Every parameter is keyword-only; the required ones have no default, the others are left
        out of the call unless given. Arguments are checked against the whole schema (types,
        ranges, enums) with ``jsonschema`` before the call.

        Raises:
            ValueError: A name that is not ``tool`` or ``server.tool`` of identifiers, a schema
                that is not a valid JSON schema of an object, or a property name that is not a
                Python identifier (the agent could not pass it as a keyword).
        """
        import jsonschema

        ToolStub(name)  # the name's rules, e.g. "geo.distance"
        if not isinstance(input_schema, Mapping) or input_schema.get("type", "object") != "object":
            raise ValueError(f"tool {name!r}: the input schema must describe an object")
        try:
            jsonschema.validators.validator_for(input_schema).check_schema(input_schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"tool {name!r}: invalid input schema ({exc.message})") from None
        properties = input_schema.get("properties") or {}
        required = set(input_schema.get("required") or [])
        params = []
        for prop in properties:
            if not isinstance(prop, str) or not prop.isidentifier() or keyword.iskeyword(prop):
                raise ValueError(f"tool {name!r}: parameter {prop!r} is not a Python identifier")
            default = _EMPTY if prop in required else OMITTED
            params.append(inspect.Parameter(prop, inspect.Parameter.KEYWORD_ONLY, default=default))
        if not str(description).strip():
            description = f"{name} (no description given)"
        return cls(
            name=name,
            fn=fn,
            description=str(description).strip(),
            parameters=tuple(params),
            budget=budget,
            timeout=timeout,
            schema=dict(input_schema),
        )

    # -- what the agent sees ------------------------------------------------------------------

    @property
    def signature_text(self) -> str:
        parts = []
        star = False
        for p in self.parameters:
            if p.kind is p.KEYWORD_ONLY and not star:
                parts.append("*")
                star = True
            parts.append(p.name if p.default is _EMPTY else f"{p.name}={p.default!r}")  # OMITTED: "..."
        return f"{self.name}({', '.join(parts)})"

    def doc(self) -> ToolDoc:
        """The system prompt's entry: the first paragraph of the description."""
        first = self.description.split("\n\n", 1)[0]
        return ToolDoc(self.name, self.signature_text, " ".join(first.split()))

    def stub(self, *, deadline: float | None = None) -> ToolStub:
        """The kernel's function for this tool (its signature and docstring). ``deadline``: the
        seconds the host gives a call; the kernel waits that long and a margin for queueing."""
        return ToolStub(
            self.name,
            tuple(
                StubParam(
                    p.name,
                    None if p.default is _EMPTY or p.default is OMITTED else json.dumps(p.default),
                    keyword_only=p.kind is p.KEYWORD_ONLY,
                    optional=p.default is OMITTED,
                )
                for p in self.parameters
            ),
            doc=f"{self.signature_text}\n\n{self.description}",
            wait_s=None if deadline is None else max(120.0, deadline + 60.0),
        )

    # -- a call -------------------------------------------------------------------------------

    def check_args(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments as keywords for :attr:`fn`, or a ToolCallError the agent can act on."""
        values = dict(args)
        if self.prepare is not None:
            values = self.prepare(values)
        known = {p.name for p in self.parameters}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ToolCallError(
                "TypeError", f"{self.signature_text} got an unexpected argument {unknown[0][:64]!r}"
            )
        out = {}
        for p in self.parameters:
            if p.name not in values:
                if p.default is _EMPTY:
                    raise ToolCallError("TypeError", f"{self.signature_text} is missing {p.name!r}")
                if p.default is not OMITTED:
                    out[p.name] = p.default
                continue
            try:
                check_value(p.name, values[p.name], self.hints.get(p.name, Any))
            except ArgumentTypeError as exc:
                raise ToolCallError("TypeError", str(exc)) from None
            out[p.name] = values[p.name]
        if self.schema is not None:
            _check_schema(self.name, out, self.schema)
        if self.validate is not None:
            self.validate(out)
        return out

    def check_result(self, result: Any) -> Any:
        """The result as the kernel will get it: JSON data of at most MAX_RESULT_BYTES."""
        try:
            encoded = json.dumps(result, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            raise ToolCallError(
                "ToolError",
                f"{self.name} returned {type(result).__name__}, which is not JSON data (the tool's "
                "author must return str, numbers, bool, None, lists or dicts)",
            ) from None
        size = len(encoded.encode("utf-8", errors="replace"))
        if size > MAX_RESULT_BYTES:
            raise ToolCallError(
                "ToolError",
                f"{self.name} returned {size:,} bytes; at most {MAX_RESULT_BYTES:,} reach the notebook",
            )
        return result


def _check_schema(name: str, args: dict[str, Any], schema: Mapping[str, Any]) -> None:
    """The arguments against a tool's JSON schema; the first problem as a ToolCallError."""
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(args))
    if error is None:
        return
    where = "".join(f"[{p!r}]" for p in error.absolute_path)
    where = where[2:-2] if where.count("[") == 1 else where  # a top-level argument by its name
    kind = "TypeError" if error.validator in ("type", "required", "additionalProperties") else "ValueError"
    message = error.message if len(error.message) <= 300 else error.message[:300] + "…"
    raise ToolCallError(kind, f"{name}: {where + ': ' if where else ''}{message}")


def short_repr(text: str, limit: int = 100) -> str:
    """``repr`` of the kernel's text for a message, cut: the text can be a megabyte."""
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


def as_tools(tools: Any) -> list[Tool]:
    """A list of Tools from ``tools=``: Tools or plain functions (made with their defaults)."""
    if tools is None:
        return []
    if isinstance(tools, (Tool, str, bytes, Mapping)) or callable(tools) or not hasattr(tools, "__iter__"):
        raise ValueError(f"tools must be a list of functions or Tools, got {type(tools).__name__}")
    out = []
    for item in tools:
        out.append(item if isinstance(item, Tool) else Tool.from_function(item))
    return out
