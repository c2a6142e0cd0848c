"""Parse an agent action: one ``<think>…</think>`` then one ``<code>…</code>``.

Pure and total: :func:`parse_action` accepts any object (bytes are decoded with
``errors="replace"``, ``None`` becomes ``""``, anything else goes through ``str()``) and never
raises. It runs in linear time: one regex pass finds the tags (a literal ``<`` anchors every
match, so there is no backtracking blow-up), then a small state machine walks them.

Rules:

* Tags are case-insensitive (``<THINK>`` works); whitespace before the closing ``>`` and after
  the ``/`` is tolerated (``<code >``, ``</ code>``).
* An unclosed ``<code>`` runs to the end of the text and is accepted without a problem:
  generation stops at the stop string ``</code>``, which backends often strip.
* An unclosed ``<think>`` runs up to the next ``<code>`` (or the end) and is reported.
* Mentions are text, not problems: ``<code>``/``</code>`` inside a *closed* think block (the
  agent may mention them while thinking: the code block is the first ``<code>`` after the think
  block closes), ``<think>``/``</think>`` anywhere in code (``print('<think>')``), and
  ``<code>``/``</code>`` inside a Python string literal in the code (``s = "</code>"``). Comments
  do not hide tags: ``print(1)  # done</code>`` closes the block.
* Nested tags of the same kind (outside string literals): the outermost first block is taken
  (tags are matched by depth) and the nesting is reported.
* Only the first block of each kind counts; extra blocks and text outside the tags are reported.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass

__all__ = ["MAX_TAGS", "OUTSIDE_TEXT_PROBLEM", "ParsedAction", "format_help", "parse_action"]

OUTSIDE_TEXT_PROBLEM = "text outside the tags is ignored"
"""The one problem that does not make an action malformed."""

MAX_TAGS = 10_000
"""Tags after this many are treated as plain text."""

_TAG_RE = re.compile(r"<(/?)\s*(think|code)\s*>", re.IGNORECASE)
_CODE_SPECIAL = re.compile(r"['\"#]")
# What ends each kind of open string (a backslash escapes the next character, a newline ends a
# one-line string that Python would refuse anyway).
_STRING_END = {
    "'": re.compile(r"[\\'\n]"),
    '"': re.compile(r'[\\"\n]'),
    "'''": re.compile(r"\\|'''"),
    '"""': re.compile(r'\\|"""'),
}


@dataclass(frozen=True)
class ParsedAction:
    """The result of :func:`parse_action`.

    Attributes:
        raw: The input text (after coercion to ``str``).
        think: Content of the first ``<think>`` block, stripped; ``None`` if there is none.
        code: Content of the first ``<code>`` block, stripped, with a wrapping markdown fence
            (```` ```python … ``` ````) removed; ``None`` if there is none.
        n_think: Number of top-level ``<think>`` blocks found (closed or not).
        n_code: Number of top-level ``<code>`` blocks found (closed or not).
        problems: Human-readable problems for the agent; empty if the action is clean.
    """

    raw: str
    think: str | None
    code: str | None
    n_think: int
    n_code: int
    problems: tuple[str, ...]

    @property
    def well_formed(self) -> bool:
        """True for exactly one think and one code block and no problem that matters.

        Text outside the tags (:data:`OUTSIDE_TEXT_PROBLEM`) does not matter; an unclosed final
        ``<code>`` is not a problem at all.
        """
        return (
            self.n_think == 1 and self.n_code == 1 and all(p == OUTSIDE_TEXT_PROBLEM for p in self.problems)
        )


def format_help() -> str:
    """Return the one-paragraph explanation of the required action format."""
    return (
        "Each reply must contain exactly one <think>...</think> block with your reasoning, "
        "followed by exactly one <code>...</code> block with Python code to run in the notebook "
        "kernel, and nothing else. Example: <think>I need the birth year of X; search for it."
        '</think><code>results = web_search("X birth year")\nprint(results)</code>. The code '
        "runs as one cell; its printed output is shown to you next step. Variables persist "
        "between steps. Call submit_final_answer(answer) in a code block when you are done."
    )


def _coerce(text: object) -> str:
    if isinstance(text, str):
        return text
    if text is None:
        return ""
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text).decode("utf-8", errors="replace")
    try:
        return str(text)
    except Exception:  # a hostile __str__ must not make parsing raise
        return ""


class _PythonStrings:
    """Tells whether a position of the text lies inside a Python string literal.

    Scans forward only, from ``start``, so all the questions asked about one code block cost one
    pass over it. Comments are tracked so that a quote in a comment (``# don't``) opens nothing.
    Approximate where Python itself would fail (an unterminated one-line string ends at its line).
    """

    def __init__(self, text: str, start: int) -> None:
        self._text = text
        self._pos = start
        self._quote = ""  # "" (code), "#" (a comment) or the open string's quote (1 or 3 chars)

    def inside(self, pos: int) -> bool:
        """Whether ``pos`` (not before the last position asked about) is inside a string."""
        text, i, quote = self._text, self._pos, self._quote
        while i < pos:
            if not quote:
                m = _CODE_SPECIAL.search(text, i, pos)
                if m is None:
                    i = pos
                    break
                i, c = m.start(), m.group()
                quote = "#" if c == "#" else c * 3 if text.startswith(c * 3, i) else c
                i += len(quote)
            elif quote == "#":
                j = text.find("\n", i, pos)
                if j < 0:
                    i = pos
                    break
                quote, i = "", j + 1
            else:
                m = _STRING_END[quote].search(text, i, pos)
                if m is None:
                    i = pos
                    break
                if m.group() == "\\":
                    i = m.start() + 2  # the escaped character cannot end the string
                else:
                    quote, i = "", m.end()
        self._pos, self._quote = max(i, pos), quote
        return quote not in ("", "#")


def _strip_fence(code: str) -> str:
    """Remove a markdown fence wrapping the whole code (closing fence optional)."""
    if not code.startswith("```"):
        return code
    first_nl = code.find("\n")
    if first_nl == -1:
        # A one-liner like ```print(1)``` or just ```python.
        body = code[3:]
        if body.endswith("```"):
            return body[:-3].strip()
        return "" if re.fullmatch(r"[\w+.-]*", body) else body.strip()
    header = code[3:first_nl].strip()
    if not re.fullmatch(r"[\w+.-]*", header):
        return code
    body = code[first_nl + 1 :]
    stripped = body.rstrip()
    if stripped.endswith("```"):
        stripped = stripped[:-3]
    return stripped.strip()


# (name, tag_start, content_start, content_end, block_end, a </code> was taken as string text)
_Block = tuple[str, int, int, int, int, bool]


def _match_blocks(
    raw: str, tags: list[tuple[int, int, bool, str]], last_think_close: int, *, unshielded: int
) -> tuple[list[_Block], Counter[str]]:
    """Walk the tags: the blocks in order, and the problems found (counted).

    ``unshielded`` is the tag position of a code block whose string literals hide no tags.
    """
    counts: Counter[str] = Counter()
    blocks: list[_Block] = []
    state: str | None = None
    depth = 0
    open_start = content_start = 0
    strings: _PythonStrings | None = None  # of the open code block
    shielded_close = False

    for start, end, closing, name in tags:
        if state is None:
            if closing:
                counts[f"stray </{name}> without an opening tag"] += 1
                continue
            state, depth, open_start, content_start = name, 1, start, end
            strings = _PythonStrings(raw, end) if name == "code" and start != unshielded else None
            shielded_close = False
        elif state == "think":
            if name == "think":
                if closing:
                    depth -= 1
                    if depth == 0:
                        blocks.append(("think", open_start, content_start, start, end, False))
                        state = None
                else:
                    depth += 1
                    counts["nested <think> inside <think>"] += 1
            elif start > last_think_close and not closing:
                # Unclosed think: it runs into this <code>, which opens the code block.
                counts["missing </think>: the thought ran into <code>"] += 1
                blocks.append(("think", open_start, content_start, start, start, False))
                state, depth, open_start, content_start = "code", 1, start, end
                strings = _PythonStrings(raw, end) if start != unshielded else None
                shielded_close = False
            # else: a <code> mentioned in a closed think block is text
        elif name == "code":  # state == "code"; <think> tags in code are code text
            if strings is not None and strings.inside(start):
                shielded_close = shielded_close or closing
                continue
            if closing:
                depth -= 1
                if depth == 0:
                    blocks.append(("code", open_start, content_start, start, end, shielded_close))
                    state = None
            else:
                depth += 1
                counts["nested <code> inside <code>"] += 1

    if state is not None:
        if state == "think":
            counts["missing </think>"] += 1
        elif depth > 1:
            counts["missing </code> for a nested <code>"] += 1
        blocks.append((state, open_start, content_start, len(raw), len(raw), shielded_close))
    return blocks, counts


def parse_action(text: object) -> ParsedAction:
    """Parse an action text into its think and code parts.

    Args:
        text: The raw completion. Any object is accepted; bytes are decoded as UTF-8 with
            replacement characters, ``None`` is ``""``, other non-strings go through ``str()``.

    Returns:
        The parsed action. Never raises.
    """
    raw = _coerce(text)
    # Past MAX_TAGS the rest of the text is plain text: bounds the work on degenerate inputs.
    tags = [
        (m.start(), m.end(), m.group(1) == "/", m.group(2).lower())
        for m in itertools.islice(_TAG_RE.finditer(raw), MAX_TAGS + 1)
    ]
    too_many = len(tags) > MAX_TAGS
    del tags[MAX_TAGS:]
    # Position of the last </think>: decides whether a <code> inside an open think ends it.
    last_think_close = max((start for start, _, close, name in tags if close and name == "think"), default=-1)

    blocks, counts = _match_blocks(raw, tags, last_think_close, unshielded=-1)
    last = blocks[-1] if blocks else None
    if last is not None and last[0] == "code" and last[3] == len(raw) and last[5]:
        # The last code block never closed, and only because a </code> sat inside what looked
        # like an open string (code="'" say): that string never closed, so it was no string. Parse
        # again with that block's tags taken as tags.
        blocks, counts = _match_blocks(raw, tags, last_think_close, unshielded=last[1])

    think_blocks = [b for b in blocks if b[0] == "think"]
    code_blocks = [b for b in blocks if b[0] == "code"]
    think = raw[think_blocks[0][2] : think_blocks[0][3]].strip() if think_blocks else None
    code = _strip_fence(raw[code_blocks[0][2] : code_blocks[0][3]].strip()) if code_blocks else None

    problems: list[str] = []
    if not think_blocks:
        problems.append("missing <think> block")
    elif len(think_blocks) > 1:
        problems.append(f"{len(think_blocks)} <think> blocks: only the first is read")
    if not code_blocks:
        problems.append("missing <code> block: nothing was run")
    elif len(code_blocks) > 1:
        problems.append(f"{len(code_blocks)} <code> blocks: only the first runs")
    if think_blocks and code_blocks and code_blocks[0][1] < think_blocks[0][1]:
        problems.append("<code> comes before <think>")
    if think == "":
        problems.append("empty <think> block")
    if code == "":
        problems.append("empty <code> block")
    if too_many:
        problems.append(f"more than {MAX_TAGS} tags: the rest of the text is ignored")
    for message, n in counts.items():
        problems.append(message if n == 1 else f"{message} (x{n})")

    # Text outside the blocks (whitespace does not count).
    pos = 0
    outside = False
    for _, tag_start, _, _, block_end, _ in blocks:
        if raw[pos:tag_start].strip():
            outside = True
            break
        pos = block_end
    if not outside and raw[pos:].strip():
        outside = True
    if outside and blocks:
        problems.append(OUTSIDE_TEXT_PROBLEM)

    return ParsedAction(
        raw=raw,
        think=think,
        code=code,
        n_think=len(think_blocks),
        n_code=len(code_blocks),
        problems=tuple(problems),
    )
