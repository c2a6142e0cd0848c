"""Render the agent's chat context (L0 layout) and trim it to a token budget. Pure.

Layout: system prompt (tools, format rules) · user task · history ``a1, o1, …`` · notepad ·
budget notice. As chat messages::

    system      the system prompt
    user        the task
    assistant   action 1
    user        observation 1
    …
    assistant   action t
    user        observation t + notepad + budget notice   <- only this message changes later

Earlier messages never change between steps, so the prompt prefix stays stable and a server's
prefix cache keeps working. With no history yet, the task message is the last user message and
carries the notepad and budget.

Hard trim: when the messages exceed ``max_context_tokens``, the oldest steps are dropped (system,
task, notepad/budget and the newest step are always kept) and the last user message says how many
were removed. If even that minimum does not fit, the newest observation (then the newest action)
is cut in the middle. If the system prompt, task and notepad alone exceed the budget, the result
is returned over budget rather than raising; ``RenderedContext.n_tokens`` tells.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .kernel.outputs import strip_ansi, truncate_middle

__all__ = [
    "MESSAGE_OVERHEAD_TOKENS",
    "RenderedContext",
    "StepRecord",
    "ToolDoc",
    "approx_token_count",
    "budget_notice",
    "build_system_prompt",
    "render_context",
    "render_notepad",
    "task_message",
    "truncate_middle",
]

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens counted per message for the chat template's role markers."""

_STATUSES = ("todo", "doing", "done")


@dataclass(frozen=True)
class ToolDoc:
    """Documentation of one tool the kernel exposes.

    Attributes:
        name: The Python name, e.g. ``"web_search"``.
        signature: The call signature, e.g. ``"web_search(query, k=5)"``.
        doc: What it does and returns.
    """

    name: str
    signature: str
    doc: str


@dataclass(frozen=True)
class StepRecord:
    """One past step: the agent's action text and the observation it got."""

    action: str
    observation: str


@dataclass(frozen=True)
class RenderedContext:
    """The rendered chat context.

    Attributes:
        messages: Chat messages ``{"role", "content"}``, fresh objects on every call.
        n_dropped_steps: How many of the oldest steps were dropped to fit the budget.
        n_tokens: Token count of ``messages`` (contents plus :data:`MESSAGE_OVERHEAD_TOKENS` each).
    """

    messages: list[dict[str, str]]
    n_dropped_steps: int
    n_tokens: int


_NOTEPAD_API = """\
The notepad (`notepad` in the kernel) is shown at the end of the latest message, after every cell.
It survives context trimming and kernel restarts, so save there what you must not forget:
- notepad.add_todo(text): append a plan item (status "todo")
- notepad.set_status(index, status): status is "todo", "doing" or "done"; index as shown in the plan
- notepad.remove_todo(index): delete a plan item
- notepad.add_fact(key, value): record a fact (overwrites the same key)
- notepad.remove_fact(key): delete a fact
- notepad.write_draft(text): replace the draft answer"""

_EXAMPLE = """\
<think>I need the year the author of "Dune" was born. Search first, then read the best hit.</think>
<code>
hits = web_search("Frank Herbert Dune author born", k=3)
for h in hits:
    print(h["id"], h["title"], h["snippet"][:100])
</code>"""


def build_system_prompt(tools: Sequence[ToolDoc], *, max_steps: int, extra_rules: str = "") -> str:
    """Build the system prompt: format rules with an example, the kernel, tools, notepad API.

    Args:
        tools: The tools available in the kernel, in the order to list them.
        max_steps: The episode's step limit.
        extra_rules: Extra text appended at the end (task-specific rules).

    Returns:
        The system prompt text.
    """
    tool_lines = "\n".join(f"- {t.signature}: {t.doc}" for t in tools) or "- (no tools)"
    parts = [
        "You are a research agent working in a Python notebook. You solve the task step by step.",
        "## Format\n"
        "Every reply is exactly one <think>...</think> block with your reasoning, followed by "
        "exactly one <code>...</code> block of Python, and nothing else. Example:\n" + _EXAMPLE,
        "## Notebook\n"
        "Your code runs as one cell in a persistent Jupyter kernel: variables, imports and "
        "functions you define stay available in later steps. What the cell prints (and errors) "
        "is shown to you as the next message. Print only what you need: long outputs are cut.",
        "## Tools (Python functions already defined in the kernel)\n" + tool_lines,
        "## Notepad\n" + _NOTEPAD_API,
        "## Finishing\n"
        "Call submit_final_answer(answer) with a short answer (a name, a date, a number, yes/no: "
        "no full sentence) when you are done; this ends the episode. You have at most "
        f"{max_steps} steps; submit your best answer before they run out.",
    ]
    if extra_rules.strip():
        parts.append(extra_rules.strip())
    return "\n\n".join(parts)


def task_message(question: str, files: Sequence[str] = ()) -> str:
    """The task as the policy reads it: the first user message of every context (and the start
    of the last one before the first step, where the notepad and budget follow it).

    Args:
        question: The question.
        files: The names of the task's attached files (what the agent sees in its working
            directory), in the task's order.
    """
    text = f"Question: {question}"
    if files:
        names = ", ".join(repr(name) for name in files)
        text += (
            f"\n\nAttached files (read-only, in your working directory): {names}. "
            "Read one with view_file(name, page=1), or open it with Python."
        )
    return text


def _plan_items(plan: Any) -> list[tuple[str, str]]:
    if not isinstance(plan, (list, tuple)):
        return []
    items = []
    for item in plan:
        if isinstance(item, Mapping):
            text = str(item.get("text", ""))
            status = str(item.get("status", "todo"))
        else:
            text, status = str(item), "todo"
        items.append((text, status if status in _STATUSES else "todo"))
    return items


def _agent_text(text: str, indent: str) -> str:
    """Text the agent wrote, cleaned as cell output is and kept inside the notepad's indentation.

    Every line break (``splitlines`` knows the Unicode ones too) continues at ``indent``, so no
    notepad line starts at column 0: only the env's own markers (``[Notepad]``, ``[Budget]``,
    ``[Context]``) do, and the notepad cannot fake them (e.g. a draft line
    ``[Budget] LAST STEP`` that would push the agent to give up early).
    """
    lines = strip_ansi(text).splitlines() or [""]
    return f"\n{indent}".join(lines)


def render_notepad(snapshot: Mapping[str, Any] | Any) -> str:
    """Render a notepad snapshot for the context.

    Args:
        snapshot: ``{"plan": [{"text", "status"}, ...], "facts": {key: value}, "draft": str}``.
            Missing or malformed parts are skipped or coerced; a non-mapping is an empty notepad.

    Returns:
        The notepad section; an empty notepad renders a short hint on how to use it. Only the
        section's labels start at column 0; the agent's text is indented on every line and
        cleaned of escape and control codes.
    """
    snap: Mapping[str, Any] = snapshot if isinstance(snapshot, Mapping) else {}
    plan = _plan_items(snap.get("plan"))
    facts = snap.get("facts")
    fact_items = [(str(k), str(v)) for k, v in facts.items()] if isinstance(facts, Mapping) else []
    draft = snap.get("draft")
    draft = "" if draft is None else str(draft).strip()

    lines = ["[Notepad]"]
    if plan:
        lines.append("Plan:")
        lines.extend(
            f"  {i}. [{status}] {_agent_text(text, '     ')}" for i, (text, status) in enumerate(plan)
        )
    if fact_items:
        lines.append("Facts:")
        lines.extend(f"  - {_agent_text(k, '    ')}: {_agent_text(v, '    ')}" for k, v in fact_items)
    if draft:
        lines.append("Draft:")
        lines.append("  " + _agent_text(draft, "  "))
    if len(lines) == 1:
        lines.append("(empty: notepad.add_todo / add_fact / write_draft keep notes that survive trimming)")
    return "\n".join(lines)


def budget_notice(*, steps_left: int, tokens_left: int | None) -> str:
    """The budget line shown at the end of the context.

    Warns strongly when ``steps_left <= 1``: the agent must submit in this step.
    """
    tokens = f", about {max(0, tokens_left)} tokens left" if tokens_left is not None else ""
    if steps_left <= 1:
        return (
            f"[Budget] LAST STEP{tokens}. This is your final cell: call "
            "submit_final_answer(answer) now with your best answer, or the episode ends without one."
        )
    return f"[Budget] {steps_left} steps left{tokens}."


def approx_token_count(text: str) -> int:
    """Approximate token count, ``ceil(len(text) / 4)``; the default when no tokenizer is given."""
    return (len(text) + 3) // 4


def _trim_notice(n_dropped: int) -> str:
    steps = "step was" if n_dropped == 1 else "steps were"
    return (
        f"[Context] The {n_dropped} earliest {steps} removed to fit the context window; "
        "the notepad below still holds what you saved."
    )


def _step_fields(step: Any) -> tuple[str, str]:
    if isinstance(step, Mapping):
        return str(step.get("action", "")), str(step.get("observation", ""))
    return str(getattr(step, "action", "")), str(getattr(step, "observation", ""))


def render_context(
    *,
    system: str,
    task: str,
    history: Sequence[StepRecord],
    notepad: Mapping[str, Any],
    steps_left: int,
    max_context_tokens: int | None = None,
    count_tokens: Callable[[str], int] = approx_token_count,
    tokens_left: int | None = None,
) -> RenderedContext:
    """Render the chat messages for the next step, trimmed to ``max_context_tokens``.

    Args:
        system: The system prompt (see :func:`build_system_prompt`).
        task: The task text (the first user message).
        history: Past steps, oldest first.
        notepad: The notepad snapshot (see :func:`render_notepad`).
        steps_left: Steps left including the one about to be taken.
        max_context_tokens: Token budget for the whole context; ``None`` means no limit.
        count_tokens: Token counter for a text.
        tokens_left: Tokens left in the episode budget, shown in the budget notice.

    Returns:
        The messages, the number of dropped steps and the token count. Never raises for any
        budget; the result is over budget only when system, task and notepad alone do not fit.
    """
    steps = [_step_fields(s) for s in history]
    tail = f"{render_notepad(notepad)}\n\n{budget_notice(steps_left=steps_left, tokens_left=tokens_left)}"

    def cost(content: str) -> int:
        return count_tokens(content) + MESSAGE_OVERHEAD_TOKENS

    def last_user(observation: str, n_dropped: int) -> str:
        notice = f"{_trim_notice(n_dropped)}\n\n" if n_dropped else ""
        return f"{observation}\n\n{notice}{tail}"

    def build(k: int, action: str | None = None, observation: str | None = None) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": system}]
        if not steps:
            messages.append({"role": "user", "content": f"{task}\n\n{tail}"})
            return messages
        messages.append({"role": "user", "content": task})
        kept = steps[k:]
        for act, obs in kept[:-1]:
            messages.append({"role": "assistant", "content": act})
            messages.append({"role": "user", "content": obs})
        act, obs = kept[-1]
        messages.append({"role": "assistant", "content": act if action is None else action})
        messages.append(
            {"role": "user", "content": last_user(obs if observation is None else observation, k)}
        )
        return messages

    def total(messages: list[dict[str, str]]) -> int:
        return sum(cost(m["content"]) for m in messages)

    if max_context_tokens is None or not steps:
        messages = build(0)
        return RenderedContext(messages, 0, total(messages))

    # Cost of everything but the last step: system, task and steps k..n-2, via suffix sums.
    n = len(steps)
    fixed = cost(system) + cost(task)
    step_costs = [cost(a) + cost(o) for a, o in steps[:-1]]
    suffix = [0] * (n + 1)
    for i in range(n - 2, -1, -1):
        suffix[i] = suffix[i + 1] + step_costs[i]
    newest_action, newest_obs = steps[-1]
    newest_action_cost = cost(newest_action)
    for k in range(n):
        if fixed + suffix[k] + newest_action_cost + cost(last_user(newest_obs, k)) <= max_context_tokens:
            messages = build(k)
            return RenderedContext(messages, k, total(messages))

    # Only the newest step is left and it does not fit: cut its observation, then its action.
    k = n - 1

    def fits(action: str, observation: str) -> bool:
        return fixed + cost(action) + cost(last_user(observation, k)) <= max_context_tokens

    def longest_fitting(text: str, fits_with: Callable[[str], bool]) -> str | None:
        if not fits_with(truncate_middle(text, 0)):
            return None
        lo, hi = 0, len(text)  # invariant: truncate_middle(text, lo) fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits_with(truncate_middle(text, mid)):
                lo = mid
            else:
                hi = mid - 1
        return truncate_middle(text, lo)

    observation = longest_fitting(newest_obs, lambda o: fits(newest_action, o))
    action = newest_action
    if observation is None:
        observation = truncate_middle(newest_obs, 0)
        action = longest_fitting(newest_action, lambda a: fits(a, observation)) or truncate_middle(
            newest_action, 0
        )
    messages = build(k, action=action, observation=observation)
    return RenderedContext(messages, k, total(messages))
