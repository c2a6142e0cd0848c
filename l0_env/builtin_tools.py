"""The env's own tools as :class:`l0_env.tool.Tool` s: ``web_search``, ``open_page``,
``submit_final_answer``. The first two ask the episode's search backend; the last fills the
episode's :class:`AnswerSlot`, which ends the episode after the cell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .context import ToolDoc
from .kernel.bridge import ToolCallError
from .kernel.tool_stubs import ToolStub
from .tool import Tool, short_repr
from .tools.pages import format_page
from .tools.search import PageNotFound, SearchBackend, SearchError

__all__ = [
    "DEFAULT_TOOL_BUDGETS",
    "MAX_ANSWER_CHARS",
    "MAX_K",
    "MAX_QUERY_CHARS",
    "VIEW_FILE_DOC",
    "AnswerSlot",
    "builtin_tools",
]

DEFAULT_TOOL_BUDGETS = {"web_search": 20, "open_page": 40}
MAX_QUERY_CHARS = 1_000
MAX_K = 20
MAX_ANSWER_CHARS = 1_000


VIEW_FILE_DOC = ToolDoc(
    "view_file",
    "view_file(name, page=1)",
    "the text of an attached file (txt, md, csv, json, html, pdf, docx, xlsx; for an image its format "
    "and size); long files come in parts (page=2, 3, ...). It runs in the kernel, with no budget",
)
"""``view_file`` is defined in every kernel (``kernel/in_kernel_files.py``), not a host tool: files
are parsed inside the sandbox. The env lists it in the system prompt when a task has files."""


class AnswerSlot:
    """The episode's final answer: empty until ``submit_final_answer``, which may fill it once."""

    def __init__(self) -> None:
        self.answer: str | None = None


def builtin_tools(search: Callable[[], SearchBackend], slot: AnswerSlot) -> list[Tool]:
    """The three built-in tools, bound to a search backend (a callable: it starts lazily) and an
    answer slot."""

    def web_search(query: str, k: int = 5) -> list[dict[str, Any]]:
        """search the corpus; returns a list of up to k hits, each a dict {"id", "title", "snippet"}, best first"""
        try:
            hits = search().search([query], k=k)[0]
        except SearchError as exc:  # server down, rate-limited...: the agent is told, the episode goes on
            raise ToolCallError("ToolError", f"web_search failed: {exc}") from None
        return [{"id": h.doc_id, "title": h.title, "snippet": h.snippet} for h in hits]

    def check_search(args: dict[str, Any]) -> None:
        query, k = args["query"], args["k"]
        if not 1 <= k <= MAX_K:
            raise ToolCallError("ValueError", f"k must be an int from 1 to {MAX_K}, got {k!r}")
        if len(query) > MAX_QUERY_CHARS:
            raise ToolCallError("ValueError", f"query is {len(query)} characters; at most {MAX_QUERY_CHARS}")

    def open_page(doc_id: str, page: int = 1) -> str:
        """the full text of a hit (pass its 'id'); long pages come in parts (page=2, 3, ...)"""
        try:
            return format_page(search().get(doc_id), page_no=page)
        except PageNotFound:
            raise ToolCallError(
                "LookupError", f"no page with id {short_repr(doc_id)}; use an 'id' from web_search results"
            ) from None
        except ValueError as exc:
            raise ToolCallError("ValueError", str(exc)) from None
        except SearchError as exc:
            raise ToolCallError("ToolError", f"open_page failed: {exc}") from None

    def hit_id(args: dict[str, Any]) -> dict[str, Any]:
        doc_id = args.get("doc_id")
        if isinstance(doc_id, dict) and isinstance(doc_id.get("id"), str):  # a whole hit was passed
            args = {**args, "doc_id": doc_id["id"]}
        return args

    def submit_final_answer(answer: str | int | float) -> str:
        """submit your short final answer; ends the episode"""
        if answer.__class__ is not str:
            answer = str(answer)
        if slot.answer is not None:
            raise ToolCallError("ToolError", f"an answer was already submitted: {slot.answer!r}")
        slot.answer = answer.strip()[:MAX_ANSWER_CHARS]
        return f"submitted: {slot.answer!r}"

    return [
        Tool.from_function(web_search, budget=DEFAULT_TOOL_BUDGETS["web_search"], validate=check_search),
        Tool.from_function(open_page, budget=DEFAULT_TOOL_BUDGETS["open_page"], prepare=hit_id),
        Tool.from_function(submit_final_answer, inline=True),
    ]


def builtin_stubs() -> tuple[ToolStub, ...]:
    """The built-in tools as the kernel defines them, for kernels started without an env (the
    kernel tests, benchmarks): ``KernelConfig(tools=builtin_stubs())``."""

    def no_search() -> SearchBackend:
        raise ToolCallError("ToolError", "no search backend")

    return tuple(t.stub() for t in builtin_tools(no_search, AnswerSlot()))
