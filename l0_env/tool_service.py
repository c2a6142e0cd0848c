"""The host side of an env's tools: one :class:`ToolService` answers the kernel's tool requests.

For every request: count it (:class:`l0_env.tool_requests.RequestLedger`: limits per step and
episode, bounded records), find the tool, check its arguments against the tool's hints and
checks, spend one call of its budget, run it (with a deadline unless the tool is ``inline``),
check the result is JSON data of bounded size, record the outcome. What the agent gets on a
failure is decided by :class:`l0_env.tool.Tool`: a ``ToolCallError`` as raised, anything else by
its type name only.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .context import ToolDoc
from .env_args import check_int
from .kernel.bridge import ToolCallError
from .kernel.tool_stubs import ToolStub, check_stubs
from .tool import Tool, short_repr
from .tool_requests import RequestLedger, backend_calls

__all__ = ["ToolService", "check_tool_budgets"]

log = logging.getLogger(__name__)


def check_tool_budgets(budgets: Any, tools: Sequence[Tool]) -> dict[str, int]:
    """Each tool's per-episode budget: its own default, replaced by ``budgets[name]`` where given
    (``None`` there lifts the budget). Unknown names and values that are not ints >= 0 are refused:
    a typo would silently leave a tool without its budget."""
    out = {t.name: t.budget for t in tools}
    if budgets is not None:
        if not isinstance(budgets, Mapping):
            raise ValueError(
                f"tool_budgets must be a mapping of tool name to calls, got {type(budgets).__name__}"
            )
        for name, limit in budgets.items():
            if name not in out:
                raise ValueError(
                    f"tool_budgets: unknown tool {name!r}; budgets apply to {sorted(out)} (a typo would "
                    "silently leave that tool without a budget)"
                )
            out[name] = None if limit is None else check_int(f"tool_budgets[{name!r}]", limit, 0)
    return {name: limit for name, limit in out.items() if limit is not None}


class ToolService:
    """An env's tools, budgets and per-episode accounting.

    Args:
        tools: The tools (names must differ).
        budgets: ``tool_budgets`` as the user gave it (see :func:`check_tool_budgets`).
        timeout: Seconds a call may take, for tools without their own ``timeout``.
    """

    def __init__(self, tools: Sequence[Tool], *, budgets: Any = None, timeout: float) -> None:
        self.tools = {t.name: t for t in tools}
        self._stubs = check_stubs(  # names: identifiers, no duplicates
            [t.stub(deadline=None if t.inline else (t.timeout or timeout)) for t in tools]
        )
        self.budgets = check_tool_budgets(budgets, tools)
        self.timeout = timeout
        self.ledger = RequestLedger()
        self.counts: dict[str, int] = {}

    @property
    def stubs(self) -> tuple[ToolStub, ...]:
        """What the kernel defines (part of the env's :class:`KernelConfig`)."""
        return self._stubs

    def docs(self) -> list[ToolDoc]:
        """The system prompt's tool list, in order."""
        return [t.doc() for t in self.tools.values()]

    def start_episode(self) -> None:
        """Fresh counts and records (a call still in flight lands in the old ledger)."""
        self.ledger = RequestLedger()
        self.counts = {}

    def handle(self, op: str, args: dict[str, Any]) -> Any:
        """The bridge's handler: run one request, or raise the ToolCallError the agent gets."""
        ledger = self.ledger  # this episode's: a call that ends after a reset stays in it
        record = ledger.admit(op, args)  # counts every request; raises past the limits
        try:
            result = self._run(op, args)
        except Exception as exc:
            ledger.close(record, error=exc)
            raise
        ledger.close(record)
        return result

    def _run(self, op: str, args: dict[str, Any]) -> Any:
        tool = self.tools.get(op)
        if tool is None:
            raise ToolCallError("ToolError", f"unknown tool {short_repr(op)}")
        kwargs = tool.check_args(args)
        self._spend(op)
        if tool.inline:
            result = self._call(tool, kwargs)
        else:
            timeout = tool.timeout if tool.timeout is not None else self.timeout
            future = backend_calls().submit(self._call, tool, kwargs)
            try:
                result = future.result(timeout=timeout)
            except cf.TimeoutError:
                raise ToolCallError("ToolError", f"{op} timed out after {timeout:g}s; try again") from None
        return tool.check_result(result)

    @staticmethod
    def _call(tool: Tool, kwargs: dict[str, Any]) -> Any:
        try:
            return tool.fn(**kwargs)
        except ToolCallError:
            raise
        except Exception as exc:
            # Only the type reaches the agent: the text may carry an API key or a host path.
            log.warning("tool %s failed: %r", tool.name, exc, exc_info=True)
            raise ToolCallError(
                "ToolError", f"{tool.name} failed on the host ({type(exc).__name__}); try again"
            ) from None

    def _spend(self, op: str) -> None:
        budget = self.budgets.get(op)
        used = self.counts.get(op, 0)
        if budget is not None and used >= budget:
            raise ToolCallError(
                "BudgetExhausted",
                f"{op} budget spent ({budget} calls this episode); answer with what you have",
            )
        self.counts[op] = used + 1
