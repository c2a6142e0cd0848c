"""The learner's view of many environments: indexed ``reset_some`` / ``step_some``.

``make_vector_env`` returns ``l0_env.vector.NotebookVectorEnv`` when it is importable (envs step
concurrently, so one slow cell does not hold up the others), otherwise a :class:`SequentialVectorEnv`
over single ``gym.make`` envs with the same interface::

    venv.reset_some({i: {"seed": s, "options": {...}}}) -> {i: (obs, info)}
    venv.step_some({i: action_text}) -> {i: (obs, reward, terminated, truncated, info)}
    venv.close()

``episode_log(venv, i)`` returns env ``i``'s full :class:`l0_env.recording.EpisodeLog` where the
env exposes one (for the sample notebooks), else ``None``.

:func:`notebook_env_kwargs` is the one place where a learner config becomes env settings: RL,
evaluation and the SFT demonstrations all build their envs from it, so they run with the same
sandbox, cell timeout, context budget, search and rewards (only the questions and, for
evaluation, the step limit differ).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym


class TokenCounter:
    """The env's context budget counted in the policy's own tokens (picklable)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def reward_weights(cfg: Any) -> Any:
    """The env's reward settings for a learner config (preset, then the weights over it)."""
    from l0_env.rewards import RewardWeights

    return RewardWeights.preset(
        cfg.reward_preset,
        qa=cfg.qa_weight,
        format=cfg.format_weight,
        code=cfg.code_weight,
        silent_cell=cfg.silent_cell,
    )


def notebook_env_kwargs(
    cfg: Any, tokenizer: Any, tasks: Sequence[Mapping[str, Any]], *, max_steps: int | None = None
) -> dict[str, Any]:
    """``L0Notebook-v0`` settings for a learner config (:class:`l0_learner.config.Config`).

    Args:
        cfg: The learner config.
        tokenizer: The policy's tokenizer (the context budget is counted in its tokens).
        tasks: The questions (task dicts, e.g. from :func:`l0_learner.data.load_task_dicts`).
        max_steps: Steps per episode (default ``cfg.max_steps``; evaluation passes its own).
    """
    kwargs: dict[str, Any] = {
        "tasks": [dict(t) for t in tasks],
        "sandbox": cfg.sandbox,
        "max_steps": cfg.max_steps if max_steps is None else max_steps,
        "cell_timeout": cfg.cell_timeout,
        "max_context_tokens": cfg.max_context_tokens,
        "count_tokens": TokenCounter(tokenizer),
        "reward_weights": reward_weights(cfg),
    }
    if cfg.corpus is not None:
        kwargs["corpus"] = cfg.corpus
    if cfg.search is not None:
        kwargs["search"] = cfg.search
    return kwargs


class SequentialVectorEnv:
    """``reset_some``/``step_some`` over a list of envs, one after another (the fallback)."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]]) -> None:
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)

    def reset_some(self, requests: Mapping[int, Mapping[str, Any]]) -> dict[int, tuple[Any, dict]]:
        return {
            i: self.envs[i].reset(seed=req.get("seed"), options=req.get("options"))
            for i, req in requests.items()
        }

    def step_some(self, actions: Mapping[int, str]) -> dict[int, tuple[Any, float, bool, bool, dict]]:
        return {i: self.envs[i].step(a) for i, a in actions.items()}

    def episode(self, i: int) -> Any:
        return getattr(self.envs[i].unwrapped, "episode", None)

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_vector_env(num_envs: int, *, env: str = "notebook", **kwargs: Any) -> Any:
    """Build ``num_envs`` envs behind the indexed interface.

    Args:
        num_envs: How many envs.
        env: "notebook" (``L0Notebook-v0``) or "toy" (:class:`l0_learner.toy_env.TextRewardEnv`).
        **kwargs: Passed to each env's constructor.
    """
    if env == "toy":
        from .toy_env import TextRewardEnv

        return SequentialVectorEnv([lambda: TextRewardEnv(**kwargs) for _ in range(num_envs)])
    if env != "notebook":
        raise ValueError(f"env must be 'notebook' or 'toy', got {env!r}")
    try:
        from l0_env.vector import NotebookVectorEnv
    except ImportError:
        NotebookVectorEnv = None
    if NotebookVectorEnv is not None:
        return NotebookVectorEnv(num_envs, **kwargs)
    import l0_env

    return SequentialVectorEnv([lambda: gym.make(l0_env.ENV_ID, **kwargs) for _ in range(num_envs)])


def episode_log(venv: Any, i: int) -> Any:
    """Env ``i``'s last EpisodeLog, or None where the vector env does not expose it."""
    for name in ("episode", "get_episode"):
        fn = getattr(venv, name, None)
        if callable(fn):
            try:
                return fn(i)
            except Exception:
                return None
    envs = getattr(venv, "envs", None)
    if envs is not None:
        return getattr(getattr(envs[i], "unwrapped", envs[i]), "episode", None)
    return None
