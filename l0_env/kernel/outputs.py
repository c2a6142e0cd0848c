"""Cell outputs: what a cell printed, bounded and cleaned for the agent to read (pure).

Jupyter iopub messages arrive as ``stream`` / ``execute_result`` / ``display_data`` / ``error``.
``OutputCollector`` turns them into ``CellOutput`` items while keeping host memory bounded (a
cell can print gigabytes), and ``format_outputs`` renders the observation text: ANSI stripped,
tracebacks trimmed to the frames that matter, head and tail kept around a marker when too long.

Output that arrives while a cell runs but belongs to another request (a thread an earlier cell
started and that still prints) is *background* output: it is kept apart (``add_background``),
bounded to a small head and tail, not counted as the cell's outputs or errors, and shown after the
cell's own output under a ``[background output …]`` label, never as the cell's own.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
TRACEBACK_MAX_LINES = 16
BACKGROUND = "background"  # CellOutput.name of output from other requests (kind "stream")
BACKGROUND_LABEL = "[background output: printed by code that an earlier cell started, e.g. a thread]"


@dataclass(frozen=True)
class CellOutput:
    """One output of a cell.

    Attributes:
        kind: "stream", "result", "display" or "error".
        name: stream name ("stdout"/"stderr"; "background" for output of other requests), or the
            exception name for errors.
        text: the cleaned text.
    """

    kind: str
    name: str
    text: str

    @property
    def is_error(self) -> bool:
        return self.kind == "error"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "text": self.text}


def strip_ansi(text: str) -> str:
    """Remove terminal escape codes and control characters (keeps newlines and tabs)."""
    return _CONTROL.sub("", _ANSI.sub("", text))


def _cut_marker(n_cut: int) -> str:
    return f"\n…[{n_cut} characters cut]…\n"


def truncate_middle(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters: its head and tail around a marker saying how many
    characters were cut (the one cut rule for cell output and for the context).

    Two thirds of what is kept come from the head. The result is ``text`` itself when it fits,
    else at most ``max(limit, len(marker))`` characters: a limit below the marker's length
    (about 25) keeps the marker alone.
    """
    if len(text) <= limit:
        return text
    keep = max(limit - len(_cut_marker(len(text))), 0)  # the marker for len(text) is the longest
    head = keep * 2 // 3
    tail = keep - head
    return f"{text[:head]}{_cut_marker(len(text) - keep)}{text[len(text) - tail :] if tail else ''}"


def format_error(ename: str, evalue: str, traceback: list[str]) -> str:
    """An exception as the agent should see it: the user-code frames and the message."""
    lines: list[str] = []
    for entry in traceback:
        lines.extend(strip_ansi(str(entry)).splitlines())
    # IPython frames from its own machinery say nothing about the agent's code.
    lines = [ln for ln in lines if "site-packages/IPython" not in ln and ln.strip("-") != ""]
    if len(lines) > TRACEBACK_MAX_LINES:
        lines = ["Traceback (most recent call last, trimmed):", *lines[-(TRACEBACK_MAX_LINES - 1) :]]
    last = f"{ename}: {strip_ansi(evalue)}".rstrip(": ").rstrip()
    if not lines or lines[-1].strip() != last.strip():
        lines.append(last)
    return "\n".join(lines)


@dataclass
class OutputCollector:
    """Accumulates iopub content with bounded memory.

    Stores up to ``keep_chars`` characters in order; past that, only a rolling tail of
    ``tail_chars`` is kept and the rest is counted. ``total_chars`` counts everything received, so
    the caller can stop a flood. Background output (other requests') is counted apart in
    ``background_chars`` and at most ``background_keep`` characters of it are kept.
    """

    keep_chars: int = 16_384
    tail_chars: int = 4_096
    outputs: list[CellOutput] = field(default_factory=list)
    total_chars: int = 0
    dropped_chars: int = 0
    n_outputs: int = 0
    n_errors: int = 0
    _kept: int = 0
    _tail: deque = field(default_factory=deque)
    _tail_len: int = 0
    _last_key: tuple[str, str] | None = None
    _notes: list[CellOutput] = field(default_factory=list)
    background_keep: int = 2_000
    background_chars: int = 0
    _bg_head: str = ""
    _bg_tail: str = ""
    _bg_last_key: tuple[str, str] | None = None
    _bg_len: int = 0  # with the separators added between outputs

    def add(self, msg_type: str, content: dict) -> None:
        """Add one iopub message's content (other message types are ignored)."""
        if msg_type == "stream":
            room = max(self.keep_chars - self._kept, 0)
            content, skipped = _trim_stream(content, room, self.tail_chars)
            self.total_chars += skipped
            self.dropped_chars += skipped
        item = _to_item(msg_type, content)
        if item is None:
            return
        if item.name == BACKGROUND:  # the label is the host's: a cell's own stream cannot claim it
            item = CellOutput(item.kind, "stdout", item.text)
        self.n_errors += int(item.is_error)
        self._append(item)

    def add_background(self, msg_type: str, content: dict) -> None:
        """Output of another request (not this cell's): counted, bounded, shown under a label."""
        half, skipped = self.background_keep // 2, 0
        if msg_type == "stream":
            content, skipped = _trim_stream(content, max(half - len(self._bg_head), 0), half)
        item = _to_item(msg_type, content)
        if item is None or not item.text:
            return
        text = item.text
        self.background_chars += len(text) + skipped
        self._bg_len += skipped
        key = (item.kind, item.name)
        if self._bg_last_key not in (None, key) and not (self._bg_tail or self._bg_head).endswith("\n"):
            text = "\n" + text  # another output: on its own line, as the cell's own are shown
        self._bg_last_key = key
        self._bg_len += len(text)
        room = max(half - len(self._bg_head), 0)
        self._bg_head += text[:room]
        if rest := text[room:]:
            self._bg_tail = (self._bg_tail + rest[-half:])[-half:] if half else ""

    def add_note(self, kind: str, name: str, text: str, *, is_error: bool = False) -> None:
        """An output the host adds itself (timeouts, restarts); always kept, shown last."""
        self.n_outputs += 1
        self.n_errors += int(is_error)
        self._notes.append(CellOutput(kind, name, text))

    def _append(self, item: CellOutput) -> None:
        self.total_chars += len(item.text)
        key = (item.kind, item.name)
        if not (item.kind == "stream" and key == self._last_key):
            self.n_outputs += 1  # consecutive chunks of one stream are one output
        self._last_key = key
        room = max(self.keep_chars - self._kept, 0)
        head, rest = item.text[:room], item.text[room:]
        if head or not rest:
            self._kept += len(head)
            last = self.outputs[-1] if self.outputs else None
            if last is not None and item.kind == "stream" and (last.kind, last.name) == key:
                self.outputs[-1] = CellOutput(last.kind, last.name, last.text + head)
            else:
                self.outputs.append(CellOutput(item.kind, item.name, head))
        if rest:
            self._tail.append(CellOutput(item.kind, item.name, rest))
            self._tail_len += len(rest)
            # Cut from the front, inside an item when needed: one 50 MB chunk must not stay whole.
            while self._tail_len > self.tail_chars:
                first, excess = self._tail[0], self._tail_len - self.tail_chars
                if len(first.text) <= excess:
                    self._tail.popleft()
                    excess = len(first.text)
                else:
                    self._tail[0] = CellOutput(first.kind, first.name, first.text[excess:])
                self._tail_len -= excess
                self.dropped_chars += excess

    def finish(self) -> list[CellOutput]:
        """The outputs in order, with the dropped middle marked and host notes last."""
        result = list(self.outputs)
        if self.dropped_chars:
            result.append(
                CellOutput("stream", "stderr", f"…[{self.dropped_chars} characters of output cut]…")
            )
        result.extend(self._tail)
        if self.background_chars:
            cut = self._bg_len - len(self._bg_head) - len(self._bg_tail)
            text = self._bg_head + (f"\n…[{cut} characters cut]…\n" if cut else "") + self._bg_tail
            result.append(CellOutput("stream", BACKGROUND, text))
        return result + self._notes


def _trim_stream(content: dict, head: int, tail: int) -> tuple[dict, int]:
    """A stream chunk cut to what can be kept (``head`` + ``tail`` characters, with some slack).

    Cleaning 30 MB of flood text costs more than the rest of receiving it, and the middle is dropped
    anyway. Returns the content to clean and keep, and how many characters were cut out.
    """
    text = content.get("text")
    slack = 64  # room for escape codes that cleaning removes around the cut
    if not isinstance(text, str) or len(text) <= head + tail + 2 * slack:
        return content, 0
    kept = text[: head + slack] + text[len(text) - tail - slack :]
    return {**content, "text": kept}, len(text) - len(kept)


def _to_item(msg_type: str, content: dict) -> CellOutput | None:
    if msg_type == "stream":
        name = str(content.get("name", "stdout"))
        return CellOutput("stream", name, strip_ansi(str(content.get("text", ""))))
    if msg_type in ("execute_result", "display_data"):
        data = content.get("data") or {}
        text = data.get("text/plain")
        if text is None:
            kinds = ", ".join(sorted(data)) or "nothing"
            text = f"<display output of type {kinds}; only text/plain is shown>"
        kind = "result" if msg_type == "execute_result" else "display"
        return CellOutput(kind, kind, strip_ansi(str(text)))
    if msg_type == "error":
        ename, evalue = str(content.get("ename", "Error")), str(content.get("evalue", ""))
        return CellOutput("error", ename, format_error(ename, evalue, list(content.get("traceback") or [])))
    return None


def format_outputs(outputs: list[CellOutput], *, limit: int) -> str:
    """The observation text for a cell's outputs, at most ``limit`` characters (about)."""
    if not outputs:
        return "(no output)"
    parts: list[str] = []
    for out in outputs:
        if out.kind == "stream" and out.name == "stderr":
            parts.append(f"[stderr]\n{out.text}")
        elif out.kind == "stream" and out.name == BACKGROUND:
            parts.append(f"{BACKGROUND_LABEL}\n{out.text}")
        elif out.kind == "error":
            parts.append(f"[error]\n{out.text}")
        else:
            parts.append(out.text)
    text = "\n".join(p.rstrip("\n") for p in parts)
    return truncate_middle(text, limit)
