"""Scripted policies: oracles that use the gold data (demonstrations, tests) and a random one.

A policy maps ``(observation, info)`` to the next action text. Both keep per-episode state and
start over when ``info["step"] == 0`` (the info ``reset`` returns).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .checker import NASTY_ACTIONS
from .rewards import normalize_answer


class OraclePolicy:
    """A scripted agent that knows the gold answer: for demonstrations, tests and reward checks.

    Two ways to look things up:

    - ``lookup="titles"`` searches each gold supporting title, opens the page and notes it (uses
      gold knowledge a policy would not have; good for exercising tools and the notepad);
    - ``lookup="question"`` searches the question text itself and prints the top hits, exactly
      what a policy can imitate, then submits saying where the answer was seen. Used for SFT
      demonstrations: `answer_visible` tells whether the answer could have been read off the
      context, so a cold start teaches looking the answer up rather than guessing it.

    Args:
        answer: "gold" submits ``answers[0]``; "wrong" submits a deliberately wrong answer;
            "none" never submits (the episode is truncated at ``max_steps``).
        read_steps: how many reading steps before submitting (one title per step, at least 1;
            ``lookup="question"`` always reads once).
        lookup: "titles" or "question" (above).
        k: hits printed by ``lookup="question"``.
    """

    def __init__(
        self, answer: str = "gold", *, read_steps: int = 2, lookup: str = "titles", k: int = 3
    ) -> None:
        if answer not in ("gold", "wrong", "none"):
            raise ValueError(f"answer must be 'gold', 'wrong' or 'none', got {answer!r}")
        if lookup not in ("titles", "question"):
            raise ValueError(f"lookup must be 'titles' or 'question', got {lookup!r}")
        self.answer = answer
        self.lookup = lookup
        self.k = k
        self.read_steps = 1 if lookup == "question" else max(1, read_steps)
        self._t = 0

    def __call__(self, observation: list[dict[str, str]], info: dict[str, Any]) -> str:
        if info.get("step", 0) == 0:
            self._t = 0
        self._t += 1
        task = info["task"]
        if self.lookup == "question" and self._t == 1:
            return (
                "<think>I search the question and read the top hits.</think>\n"
                "<code>\n"
                f"for h in web_search({task['question']!r}, k={self.k}):\n"
                '    print(h["title"], "-", h["snippet"])\n'
                "</code>"
            )
        titles = list(task.get("supporting_titles") or []) or [task["question"]]
        if (
            self.lookup == "titles"
            and self._t <= self.read_steps
            and (self._t <= len(titles) or self._t == 1)
        ):
            title = titles[min(self._t, len(titles)) - 1]
            return (
                f"<think>I need the page about {title!r}. I search for it, open the matching hit and "
                "keep the first sentences in the notepad.</think>\n"
                "<code>\n"
                f"query = {title!r}\n"
                "hits = web_search(query, k=5)\n"
                "best = next((h for h in hits if h['title'] == query), hits[0] if hits else None)\n"
                "if best is None:\n"
                "    print('no hits for', query)\n"
                "else:\n"
                "    text = open_page(best['id'])\n"
                "    notepad.add_fact(best['title'], text[:300])\n"
                "    print(text[:500])\n"
                "</code>"
            )
        if self.answer == "none":
            return (
                "<think>I keep reading instead of answering.</think>\n<code>print(len(notepad.facts))</code>"
            )
        answer = task["answers"][0] if self.answer == "gold" else "definitely not " + task["answers"][0]
        if self.lookup == "question":
            return f"<think>The hits say the answer is {answer}.</think>\n<code>submit_final_answer({answer!r})</code>"
        return (
            "<think>The notes answer the question, so I submit the answer now.</think>\n"
            f"<code>submit_final_answer({answer!r})</code>"
        )


class FileTaskOracle:
    """A scripted agent for tasks with files that carry their solution (the bundled file tasks).

    Step 1 looks at each attached file with ``view_file`` (first page, printed); step 2 runs the
    task's ``oracle_code`` (its metadata), which computes the answer from the file and submits it.
    The answer is never typed in: a broken file, parser or sandbox makes the oracle fail.

    Raises:
        ValueError: (when called) the task has no ``oracle_code``.
    """

    def __init__(self) -> None:
        self._t = 0

    def __call__(self, observation: list[dict[str, str]], info: dict[str, Any]) -> str:
        if info.get("step", 0) == 0:
            self._t = 0
        self._t += 1
        task = info["task"]
        code = task.get("metadata", {}).get("oracle_code")
        if not isinstance(code, str) or not code.strip():
            raise ValueError(f"task {task.get('id')!r} has no 'oracle_code' in its metadata")
        names = [os.path.basename(f) for f in task.get("files") or ()]
        if self._t == 1 and names:
            lines = "\n".join(f"print(view_file({name!r})[:1500])" for name in names)
            return f"<think>I look at the attached file first.</think>\n<code>\n{lines}\n</code>"
        return f"<think>I compute the answer from the file and submit it.</think>\n<code>\n{code.strip()}\n</code>"


def answer_visible(answers: list[str] | str, observation: list[dict[str, str]]) -> bool:
    """True when a gold answer can be read off the context: it appears in the messages (question,
    cell outputs; compared after SQuAD normalisation, as whole words) or it is yes/no."""
    golds = [answers] if isinstance(answers, str) else list(answers)
    text = " " + normalize_answer(" ".join(m.get("content", "") for m in observation[1:])) + " "
    for gold in golds:
        norm = normalize_answer(gold)
        if norm in ("yes", "no") or (norm and f" {norm} " in text):
            return True
    return False


class RandomPolicy:
    """Random actions: well-formed cells, malformed text and edge cases, for fuzzing and soak runs."""

    WELL_FORMED = (
        "<think>Try a search for the question terms.</think><code>print(web_search('film director', k=2))</code>",
        "<think>Compute something small here.</think><code>x = sum(range(100)); print(x)</code>",
        "<think>Keep a plan item in the notepad.</think><code>notepad.add_todo('search more')</code>",
        "<think>This cell raises an error on purpose.</think><code>1/0</code>",
        "<think>Give up and answer something.</think><code>submit_final_answer('unknown')</code>",
    )

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, observation: list[dict[str, str]], info: dict[str, Any]) -> str:
        pool = self.WELL_FORMED + NASTY_ACTIONS
        return pool[int(self.rng.integers(len(pool)))]
