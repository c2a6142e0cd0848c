"""Scripted policies: an oracle that uses the gold data (demonstrations, tests) and a random one.

A policy maps ``(observation, info)`` to the next action text. Both keep per-episode state and
start over when ``info["step"] == 0`` (the info ``reset`` returns).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .checker import NASTY_ACTIONS


class OraclePolicy:
    """Searches the gold supporting titles, reads the pages, notes them, submits the gold answer.

    Args:
        answer: "gold" submits ``answers[0]``; "wrong" submits a deliberately wrong answer;
            "none" never submits (the episode is truncated at ``max_steps``).
        read_steps: how many reading steps before submitting (one title per step, at least 1).
    """

    def __init__(self, answer: str = "gold", *, read_steps: int = 2) -> None:
        if answer not in ("gold", "wrong", "none"):
            raise ValueError(f"answer must be 'gold', 'wrong' or 'none', got {answer!r}")
        self.answer = answer
        self.read_steps = max(1, read_steps)
        self._t = 0

    def __call__(self, observation: list[dict[str, str]], info: dict[str, Any]) -> str:
        if info.get("step", 0) == 0:
            self._t = 0
        self._t += 1
        task = info["task"]
        titles = list(task.get("supporting_titles") or []) or [task["question"]]
        if self._t <= self.read_steps and (self._t <= len(titles) or self._t == 1):
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
        return (
            "<think>The notes answer the question, so I submit the answer now.</think>\n"
            f"<code>submit_final_answer({answer!r})</code>"
        )


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
