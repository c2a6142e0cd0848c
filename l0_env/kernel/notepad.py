"""The notepad's schema and size, checked on the host before a pushed snapshot is kept (pure).

The kernel pushes its notepad through the tool bridge after every cell; the host keeps the last
snapshot, renders it into every observation, records it with every step and restores it into a
restarted kernel. The kernel is untrusted: agent code can push any JSON over the bridge, e.g. a
hidden key holding 1 MB (never shown, but copied and recorded every step) or a plan of 240,000
items (seconds of host CPU per step). So a snapshot is kept only when it has the shape the
kernel's ``Notepad.snapshot()`` produces and fits the limits below; otherwise the push is refused
with a ``ValueError`` the agent sees in its cell output, and the host keeps the last good one.
"""

from __future__ import annotations

from typing import Any

from .bridge import ToolCallError

__all__ = [
    "MAX_FACTS",
    "MAX_NOTEPAD_CHARS",
    "MAX_PLAN_ITEMS",
    "NOTEPAD_KEYS",
    "PLAN_STATUSES",
    "validate_notepad",
]

NOTEPAD_KEYS = ("plan", "facts", "draft")
PLAN_STATUSES = ("todo", "doing", "done")
MAX_PLAN_ITEMS = 100
MAX_FACTS = 100
MAX_NOTEPAD_CHARS = 20_000
"""All text of the notepad together (plan items, fact keys and values, draft): it is shown in
every observation, so it must fit the context with room to spare."""


def _refuse(why: str) -> ToolCallError:
    return ToolCallError("ValueError", f"notepad not saved (the last saved one is kept): {why}")


def validate_notepad(state: Any) -> dict[str, Any]:
    """Check a pushed notepad snapshot; return a fresh copy holding only the known keys.

    Args:
        state: The decoded ``state`` argument of a ``notepad`` bridge request.

    Returns:
        ``{"plan": [{"text", "status"}, ...], "facts": {str: str}, "draft": str}``; missing keys
        are filled with empty values.

    Raises:
        ToolCallError: ``ValueError`` naming the first problem and the limit, for the agent.
    """
    if not isinstance(state, dict):
        raise _refuse("the state must be an object")
    unknown = [key for key in state if key not in NOTEPAD_KEYS]
    if unknown:
        raise _refuse(
            f"unknown key {str(unknown[0])[:40]!r}; the notepad holds only {', '.join(NOTEPAD_KEYS)}"
        )
    plan, facts, draft = state.get("plan", []), state.get("facts", {}), state.get("draft", "")
    # Counts before contents: a 240,000-item list is refused without walking it.
    if not isinstance(plan, list):
        raise _refuse("plan must be a list of {'text', 'status'} items")
    if len(plan) > MAX_PLAN_ITEMS:
        raise _refuse(
            f"the plan has {len(plan)} items; at most {MAX_PLAN_ITEMS} (notepad.remove_todo removes one)"
        )
    if not isinstance(facts, dict):
        raise _refuse("facts must be an object of text keys and text values")
    if len(facts) > MAX_FACTS:
        raise _refuse(f"there are {len(facts)} facts; at most {MAX_FACTS} (notepad.remove_fact removes one)")
    if not isinstance(draft, str):
        raise _refuse("draft must be text")
    chars = len(draft)
    clean_plan = []
    for i, item in enumerate(plan):
        if not isinstance(item, dict) or set(item) - {"text", "status"}:
            raise _refuse(f"plan item {i} must be {{'text': str, 'status': str}}")
        text, status = item.get("text", ""), item.get("status", "todo")
        if not isinstance(text, str):
            raise _refuse(f"plan item {i}: text must be a str")
        if status not in PLAN_STATUSES:
            raise _refuse(f"plan item {i}: status must be one of {PLAN_STATUSES}")
        chars += len(text)
        clean_plan.append({"text": text, "status": status})
    for key, value in facts.items():
        if not isinstance(value, str):
            raise _refuse(f"fact {str(key)[:40]!r}: the value must be a str")
        chars += len(key) + len(value)
    if chars > MAX_NOTEPAD_CHARS:
        raise _refuse(
            f"it holds {chars} characters of text; at most {MAX_NOTEPAD_CHARS} (keep short notes: "
            "shorten the draft or remove facts and plan items)"
        )
    return {"plan": clean_plan, "facts": dict(facts), "draft": draft}
