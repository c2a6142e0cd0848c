"""``TextRewardEnv``: a pure-Python env whose reward depends only on the generated text.

It speaks the notebook env's protocol (chat-message observations, text actions,
``info["reward_components"]`` with format/code each step and qa/em/f1/has_answer on the last), so
the learner runs on it unchanged. No kernel, no search: for tests that prove learning and for
benchmarks that isolate the learner. The answer reward is the share of the action's characters
that are ``target`` (capped at 1 when half of them are); EM is 1 when that share reaches 1/2.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from l0_env.spaces import ChatSpace, TextSpace


class TextRewardEnv(gym.Env):
    """Episodes of ``max_steps`` steps; the reward counts a target character in the actions.

    Args:
        max_steps: Steps per episode (the last one is scored).
        target: The character the reward counts.
        n_tasks: Distinct prompts (``task_index`` picks one).
    """

    def __init__(self, max_steps: int = 1, target: str = "a", n_tasks: int = 8, **_: Any) -> None:
        self.max_steps, self.target = max_steps, target
        self.tasks: list[dict[str, Any]] = [
            {"id": f"toy-{k}", "question": f"Write text {k}.", "answers": [target]} for k in range(n_tasks)
        ]
        self.action_space = TextSpace(max_length=100_000)
        self.observation_space = ChatSpace()
        self._t = 0
        self._task: dict[str, Any] = self.tasks[0]
        self._messages: list[dict[str, str]] = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        k = int(options.get("task_index", self.np_random.integers(len(self.tasks)))) % len(self.tasks)
        self._task, self._t = self.tasks[k], 0
        self._messages = [{"role": "user", "content": self._task["question"]}]
        return [dict(m) for m in self._messages], {"task": dict(self._task), "step": 0}

    def score(self, text: str) -> float:
        if not text:
            return 0.0
        return min(1.0, 2.0 * text.count(self.target) / len(text))

    def step(self, action: str):
        self._t += 1
        text = str(action)
        components: dict[str, Any] = {"format": float(bool(text.strip())), "code": 0.0, "qa": None}
        truncated = self._t >= self.max_steps
        reward = 0.0
        if truncated:
            qa = self.score(text)
            components.update(qa=qa, em=float(qa >= 1.0), f1=qa, has_answer=float(bool(text.strip())))
            reward = qa
        self._messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "Go on."}]
        info: dict[str, Any] = {"step": self._t, "reward_components": components, "task": dict(self._task)}
        if truncated:
            info["episode_metrics"] = {
                "return": reward,
                "length": self._t,
                "em": components["em"],
                "f1": components["f1"],
            }
        return [dict(m) for m in self._messages], reward, False, truncated, info
