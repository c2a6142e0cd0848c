"""Episode records and their export: a real ``.ipynb`` notebook and a JSON-lines trajectory.

Files are written atomically (temp file in the same directory, then ``os.replace``) so a crash
never leaves a half-written notebook or log line behind.

What a step records of a tool call is bounded (:func:`bounded_preview`): the arguments come from
the kernel, and an agent sending 100 requests of 1 MB per cell must not grow host memory or the
episode log by that much (it did: 258 MiB per step, 198 MB of ``episodes.jsonl`` in 2 steps).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbformat import v4

from .kernel.outputs import CellOutput


@dataclass
class StepLog:
    """Everything about one step of an episode."""

    index: int
    action: str
    think: str | None
    code: str | None
    problems: list[str]
    observation: str
    outputs: list[CellOutput]
    cell_status: str | None
    reward: float
    reward_components: dict[str, Any]
    tool_calls: list[dict[str, Any]]
    notepad: dict[str, Any]
    duration_s: float
    actor: str | None = None
    tool_calls_dropped: int = 0
    """Tool calls of this step left out of ``tool_calls`` (past its cap)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outputs"] = [o.to_dict() for o in self.outputs]
        return data


@dataclass
class EpisodeLog:
    """One episode: the task, its steps and how it ended."""

    task: dict[str, Any]
    system_prompt: str
    steps: list[StepLog] = field(default_factory=list)
    final_answer: str | None = None
    terminated: bool = False
    truncated: bool = False
    total_reward: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps"] = [s.to_dict() for s in self.steps]
        return data


def bounded_preview(value: Any, max_chars: int = 1_000, *, max_depth: int = 4) -> Any:
    """A copy of JSON-like data small enough to keep: about ``max_chars`` characters in all.

    Strings past the budget are cut with a ``…[N chars cut]`` marker, lists and dicts past it end
    with a ``…[N more items]`` marker, data nested deeper than ``max_depth`` is replaced by a
    marker, non-finite floats and other objects by their ``repr``. The work is bounded by the
    budget, not by the size of ``value``.
    """
    budget = [max_chars]

    def text(s: str) -> str:
        keep = max(0, min(len(s), budget[0]))
        budget[0] -= keep + 4  # with the quotes and separator it costs in JSON
        return s if keep == len(s) else f"{s[:keep]}…[{len(s) - keep} chars cut]"

    def walk(v: Any, depth: int) -> Any:
        if isinstance(v, str):
            return text(v)
        if v is None or isinstance(v, (bool, int)):
            budget[0] -= 4
            return v if not isinstance(v, int) or abs(v) < 10**18 else text(str(v))
        if isinstance(v, float):
            budget[0] -= 8
            return v if math.isfinite(v) else repr(v)
        if not isinstance(v, (list, tuple, dict)):
            return text(f"<{type(v).__name__}>")
        if depth >= max_depth:
            budget[0] -= 16
            return f"…[nested {type(v).__name__} cut]"
        items = list(v.items()) if isinstance(v, dict) else None
        n = len(v)
        if items is not None:
            out_d: dict[str, Any] = {}
            for i, (key, item) in enumerate(items):
                if budget[0] <= 0:
                    out_d["…"] = f"[{n - i} more items]"
                    break
                name = text(str(key)[:100])  # before the value: the budget goes in order
                out_d[name] = walk(item, depth + 1)
            return out_d
        out_l: list[Any] = []
        for i, item in enumerate(v):
            if budget[0] <= 0:
                out_l.append(f"…[{n - i} more items]")
                break
            out_l.append(walk(item, depth + 1))
        return out_l

    return walk(value, 0)


def _nb_output(out: CellOutput, execution_count: int) -> Any:
    if out.kind == "stream":
        return v4.new_output(
            "stream", name=out.name if out.name in ("stdout", "stderr") else "stdout", text=out.text
        )
    if out.kind == "result":
        return v4.new_output("execute_result", data={"text/plain": out.text}, execution_count=execution_count)
    if out.kind == "display":
        return v4.new_output("display_data", data={"text/plain": out.text})
    text = out.text.splitlines() or [out.name]
    return v4.new_output("error", ename=out.name, evalue=text[-1], traceback=text)


def episode_to_notebook(episode: EpisodeLog) -> nbformat.NotebookNode:
    """The episode as a notebook: the task, then per step a markdown think and a code cell."""
    task = episode.task
    cells = [v4.new_markdown_cell(f"# Task\n\n{task.get('question', '')}")]
    for step in episode.steps:
        think = step.think if step.think is not None else "*(no think block)*"
        who = f" ({step.actor})" if step.actor else ""
        md = f"**Step {step.index}{who}** — reward {step.reward:+.4f}\n\n{think}"
        if step.problems:
            md += "\n\n> format problems: " + "; ".join(step.problems)
        # The exact action and observation ride along, so a notebook is a lossless trajectory
        # (SFT reads notebooks back: `notebook_to_episode`).
        meta = {
            "l0": {
                "step": step.index,
                "action": step.action,
                "observation": step.observation,
                "notepad": step.notepad,
            }
        }
        cells.append(v4.new_markdown_cell(md, metadata=meta))
        if step.code is None:
            continue
        cell = v4.new_code_cell(step.code, execution_count=step.index)
        cell.outputs = [_nb_output(o, step.index) for o in step.outputs]
        cells.append(cell)
    ending = "submitted" if episode.final_answer is not None else "no answer"
    summary = (
        f"# Result\n\nFinal answer: `{episode.final_answer}` ({ending}); gold: "
        f"{', '.join(f'`{a}`' for a in task.get('answers', []))}\n\n"
        f"Total reward {episode.total_reward:.4f}; metrics {json.dumps(episode.metrics)}"
    )
    cells.append(v4.new_markdown_cell(summary))
    nb = v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["l0"] = {
        "task": task,
        "final_answer": episode.final_answer,
        "terminated": episode.terminated,
        "truncated": episode.truncated,
        "total_reward": episode.total_reward,
        "metrics": episode.metrics,
        "system_prompt": episode.system_prompt,
    }
    nbformat.validate(nb)
    return nb


def notebook_to_episode(nb: nbformat.NotebookNode | str | os.PathLike[str]) -> dict[str, Any]:
    """Read an episode back from a notebook `episode_to_notebook` wrote (a node or a path).

    Returns ``{"task", "system_prompt", "steps": [{"action", "observation", "notepad"}], ...}``,
    the shape of ``EpisodeLog.to_dict()`` that episode readers take. Notebooks written before the
    per-step metadata existed are read from their cells: the action is rebuilt from the think
    and code, the observation from the cell outputs (close to, not exactly, what the agent saw).

    Raises:
        ValueError: The notebook was not written by l0_env (no ``metadata.l0``).
    """
    notebook = nb if isinstance(nb, nbformat.NotebookNode) else nbformat.read(os.fspath(nb), as_version=4)
    meta = notebook.metadata.get("l0")
    if not meta or "task" not in meta or "system_prompt" not in meta:
        raise ValueError(
            "not an l0_env episode notebook: metadata.l0 with the task and system prompt is missing"
        )
    steps: list[dict[str, Any]] = []
    cells = list(notebook.cells)
    for i, cell in enumerate(cells):
        if cell.cell_type != "markdown" or not cell.source.startswith("**Step "):
            continue
        saved = cell.metadata.get("l0")
        if saved is not None:
            steps.append({k: saved.get(k) for k in ("action", "observation", "notepad")})
            continue
        think = (
            cell.source.split("\n\n", 1)[1].split("\n\n> format problems:")[0]
            if "\n\n" in cell.source
            else ""
        )
        code_cell = cells[i + 1] if i + 1 < len(cells) and cells[i + 1].cell_type == "code" else None
        action = f"<think>{think}</think>\n<code>\n{code_cell.source}\n</code>" if code_cell else think
        observation = "".join(_output_text(o) for o in code_cell.outputs) if code_cell else ""
        steps.append({"action": action, "observation": observation, "notepad": {}})
    return {
        "task": meta["task"],
        "system_prompt": meta["system_prompt"],
        "steps": steps,
        "final_answer": meta.get("final_answer"),
        "total_reward": meta.get("total_reward"),
        "metrics": meta.get("metrics", {}),
    }


def _output_text(out: Any) -> str:
    if out.output_type == "stream":
        return out.text
    if out.output_type == "error":
        return "\n".join(out.traceback) + "\n"
    return out.get("data", {}).get("text/plain", "") + "\n"


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_notebook(episode: EpisodeLog, path: str | os.PathLike[str]) -> Path:
    """Write the episode as an ``.ipynb`` file that Jupyter opens."""
    return atomic_write_text(path, nbformat.writes(episode_to_notebook(episode)))


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON line with a single ``O_APPEND`` write, so lines from concurrent writers
    (threads or processes) never interleave."""
    data = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):  # only on a full disk: say so (readers skip a torn last line)
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes (disk full?)")
        os.fsync(fd)
    finally:
        os.close(fd)


def record_episode(directory: str | os.PathLike[str], name: str, episode: EpisodeLog) -> str | None:
    """Save a finished episode as ``directory/<name>.ipynb`` and append it to ``episodes.jsonl``.

    Returns None, or why writing failed (a full disk, a bad value): a failed write must not cost
    the caller its step result, so it is reported, not raised.
    """
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        save_notebook(episode, Path(directory) / f"{name}.ipynb")
        append_jsonl(Path(directory) / "episodes.jsonl", {"episode": name, **episode.to_dict()})
    except (OSError, ValueError) as exc:
        logging.getLogger(__name__).warning("recording episode %s to %s failed: %r", name, directory, exc)
        from .tool_requests import RECORD_ERROR_CHARS

        return f"{type(exc).__name__}: {exc}"[:RECORD_ERROR_CHARS]
    return None
