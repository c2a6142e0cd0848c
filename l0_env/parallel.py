"""PettingZoo ``ParallelEnv``: several agents share one task and one notebook kernel.

Every step each live agent acts once, in the fixed order of ``agents`` (e.g. a solver writes code,
then a verifier checks it in the same kernel: variables and the notepad are shared). Each agent
sees its own actions as ``assistant`` messages and everything the others did in between as part
of the following ``user`` message. Rewards: per-agent format and code-execution terms (L0's
weights, averaged over that agent's own steps) and the team's answer reward for everyone when the
episode ends. Any agent's ``submit_final_answer`` ends the episode for all; agents later in the
order do not act in that step.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from pettingzoo import ParallelEnv

from . import rewards as R
from .context import StepRecord, render_context
from .notebook import NotebookEnv
from .spaces import ChatSpace, TextSpace


class NotebookParallelEnv(ParallelEnv):
    """Agents taking turns in one sandboxed notebook.

    Args:
        agents: agent names, in acting order.
        max_cycles: steps (rounds of every agent acting) before truncation.
        roles: optional per-agent instructions appended to that agent's system prompt.
        **env_kwargs: passed to the underlying ``NotebookEnv`` (tasks, corpus, sandbox, ...).
    """

    metadata = {"name": "l0_notebook_parallel_v0", "render_modes": ["ansi"]}  # noqa: RUF012

    def __init__(
        self,
        agents: Sequence[str] = ("solver", "verifier"),
        *,
        max_cycles: int = 8,
        roles: dict[str, str] | None = None,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        if not agents or len(set(agents)) != len(agents) or not all(isinstance(a, str) and a for a in agents):
            raise ValueError(f"agents must be distinct non-empty names, got {agents!r}")
        if not isinstance(max_cycles, int) or max_cycles < 1:
            raise ValueError(f"max_cycles must be an int >= 1, got {max_cycles!r}")
        self.possible_agents = list(agents)
        self.agents: list[str] = []
        self.max_cycles = max_cycles
        self.render_mode = render_mode
        self._env = NotebookEnv(max_steps=max_cycles * len(agents), **env_kwargs)
        roles = roles or {}
        unknown = set(roles) - set(agents)
        if unknown:
            raise ValueError(f"roles given for unknown agents {sorted(unknown)}")
        team = ", ".join(agents)
        self._system = {
            a: (
                f"{self._env.system_prompt}\n\n## Team\nYou are {a!r} in a team of {team} sharing one notebook "
                f"(same kernel, variables and notepad); you act in that order each round, for at most "
                f"{max_cycles} rounds. Other members' code and outputs appear in your messages. "
                f"{roles.get(a, '')}"
            ).strip()
            for a in agents
        }
        self._obs_space = ChatSpace()
        self._act_space = TextSpace(max_length=self._env.action_space.max_length)
        self._turns: list[tuple[str, str, str]] = []  # (agent, action, observation)
        self._scores: dict[str, dict[str, list[float]]] = {}

    @functools.cache  # noqa: B019 - PettingZoo requires the same object every call
    def observation_space(self, agent: str) -> ChatSpace:
        return self._obs_space

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> TextSpace:
        return self._act_space

    def reset(self, seed: int | None = None, options: dict | None = None):
        _, info = self._env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        self._turns = []
        self._scores = {a: {"format": [], "code": []} for a in self.agents}
        self._round = 0
        return {a: self._observe(a) for a in self.agents}, {a: dict(info) for a in self.agents}

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise RuntimeError("call reset() first: the episode has not started or has ended")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"no action for agents {missing}; every live agent acts each step")
        self._round += 1
        infos: dict[str, dict[str, Any]] = {a: {} for a in self.agents}
        ended, answer_components = False, None
        for agent in self.agents:
            if ended:
                infos[agent] = {"acted": False}
                continue
            self._env.actor = agent
            _, _, terminated, truncated, info = self._env.step(actions[agent])
            comps = info["reward_components"]
            self._scores[agent]["format"].append(comps["format"])
            self._scores[agent]["code"].append(comps["code"])
            self._turns.append(
                (agent, self._env.episode.steps[-1].action, self._env.episode.steps[-1].observation)
            )
            infos[agent] = {**_deterministic(info), "acted": True}
            if terminated or truncated:
                ended, answer_components = True, comps
        terminated = ended and answer_components is not None and self._env.episode.terminated
        truncated = not terminated and (ended or self._round >= self.max_cycles)
        rewards = {a: self._reward(a, infos[a].get("acted", False), answer_components) for a in self.agents}
        observations = {a: self._observe(a) for a in self.agents}
        terminations = {a: bool(terminated) for a in self.agents}
        truncations = {a: bool(truncated) for a in self.agents}
        if terminated or truncated:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def _reward(self, agent: str, acted: bool, answer: dict[str, Any] | None) -> float:
        w = self._env.reward_weights
        scores = self._scores[agent]
        t = len(scores["format"])
        reward = 0.0
        if acted and t:
            reward = R.online_step_reward(t, scores["format"], scores["code"], None, w)
        if answer is not None:
            reward += w.qa * answer["qa"]
        return float(reward)

    def _observe(self, agent: str) -> list[dict[str, str]]:
        """Chat context from ``agent``'s point of view."""
        history: list[StepRecord] = []
        preamble: list[str] = []
        for who, action, observation in self._turns:
            if who == agent:
                history.append(StepRecord(action=action, observation=f"[your cell's output]\n{observation}"))
            else:
                note = f"[{who} acted]\n{action}\n[{who}'s output]\n{observation}"
                if history:
                    last = history[-1]
                    history[-1] = StepRecord(last.action, f"{last.observation}\n\n{note}")
                else:
                    preamble.append(note)
        task = f"Question: {self._env._task.question}" if self._env._task else ""
        if preamble:
            task += "\n\n" + "\n\n".join(preamble)
        steps_left = self.max_cycles - len(history)
        return render_context(
            system=self._system[agent],
            task=task,
            history=history,
            notepad=self._env._kernel.notepad_state if self._env._kernel else {},
            steps_left=steps_left,
            max_context_tokens=self._env.max_context_tokens,
            count_tokens=self._env.count_tokens,
        ).messages

    def render(self) -> str | None:
        return self._env.render() if self.render_mode == "ansi" else None

    def save_notebook(self, path: str) -> str:
        """The shared notebook of the current (or last) episode; each step names its agent."""
        return self._env.save_notebook(path)

    def close(self) -> None:
        self._env.close()


def _deterministic(info: dict[str, Any]) -> dict[str, Any]:
    """The step info without wall-clock timings, so equal seeds give equal infos (PettingZoo's
    seed test compares them); ``save_notebook`` and the episode record keep the timings."""
    info = {k: v for k, v in info.items() if k != "timings"}
    info["tool_calls"] = [
        {k: v for k, v in c.items() if k != "elapsed_s"} for c in info.get("tool_calls", [])
    ]
    return info


def parallel_env(agents: Sequence[str] = ("solver", "verifier"), **kwargs: Any) -> NotebookParallelEnv:
    """A PettingZoo ``ParallelEnv`` where ``agents`` share one notebook (see ``NotebookParallelEnv``)."""
    return NotebookParallelEnv(agents, **kwargs)
