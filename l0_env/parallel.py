"""PettingZoo ``ParallelEnv``: several agents share one task and one notebook kernel.

Every step each live agent acts once, in the fixed order of ``agents`` (e.g. a solver writes code,
then a verifier checks it in the same kernel: variables and the notepad are shared). Each agent
sees its own actions as ``assistant`` messages and everything the others did in between as part
of the following ``user`` message. Rewards: per-agent format and code-execution terms (L0's
weights, averaged over that agent's own steps: the notebook env does this for the ``actor`` it is
told) and the team's answer reward for everyone when the episode ends. Any agent's
``submit_final_answer`` ends the episode for all; agents later in the order do not act in that
step. Everything about the notebook goes through ``NotebookEnv``'s public surface: ``actor``,
``context()`` (each agent's view), ``episode``, ``reward_weights``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from pettingzoo import ParallelEnv

from .context import StepRecord
from .notebook import NotebookEnv
from .recording import EpisodeLog
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
        self._round = 0

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
        self._round = 0
        return {a: self._observe(a) for a in self.agents}, {a: dict(info) for a in self.agents}

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise RuntimeError("call reset() first: the episode has not started or has ended")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"no action for agents {missing}; every live agent acts each step")
        self._round += 1
        infos: dict[str, dict[str, Any]] = {a: {"acted": False} for a in self.agents}
        rewards = dict.fromkeys(self.agents, 0.0)
        ender: str | None = None  # the agent whose step ended the episode
        for agent in self.agents:
            self._env.actor = agent  # the env averages format/code over this agent's own steps
            _, reward, terminated, truncated, info = self._env.step(actions[agent])
            last = self._episode().steps[-1]
            self._turns.append((agent, last.action, last.observation))
            rewards[agent] = reward  # with the answer reward when this step ended the episode
            infos[agent] = {**_deterministic(info), "acted": True}
            if terminated or truncated:
                ender = agent
                break
        if ender is not None:  # the team's answer reward for everyone else too
            qa = self._env.reward_weights.qa * self._episode().steps[-1].reward_components["qa"]
            for agent in self.agents:
                if agent != ender:
                    rewards[agent] += qa
        terminated = ender is not None and self._episode().terminated
        truncated = not terminated and (ender is not None or self._round >= self.max_cycles)
        rewards = {a: float(r) for a, r in rewards.items()}
        observations = {a: self._observe(a) for a in self.agents}
        terminations = {a: bool(terminated) for a in self.agents}
        truncations = {a: bool(truncated) for a in self.agents}
        if terminated or truncated:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def _episode(self) -> EpisodeLog:
        episode = self._env.episode
        if episode is None:
            raise RuntimeError("call reset() first: the episode has not started")
        return episode

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
        return self._env.context(
            system=self._system[agent],
            history=history,
            task_note="\n\n".join(preamble),
            steps_left=self.max_cycles - len(history),
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
