"""The learner's view of many environments: the vector-env protocol and the env settings.

What the learner needs of a vector env is :class:`IndexedVectorEnv` (a ``typing.Protocol``)::

    venv.num_envs
    venv.reset_some({i: {"seed": s, "options": {...}}}) -> {i: (obs, info)}
    venv.step_some({i: action_text}) -> {i: (obs, reward, terminated, truncated, info)}
    venv.episode(i) -> env i's current (or last) l0_env.recording.EpisodeLog, or None
    venv.close()

and, optionally, :class:`FutureVectorEnv`'s ``submit_step`` / ``submit_reset`` (each returns a
``concurrent.futures.Future`` at once), with which the rollout overlaps slow cells with generation
(``l0_learner.rollout``). ``make_vector_env`` returns ``l0_env.vector.NotebookVectorEnv`` (both
protocols) for the notebook env and a :class:`SequentialVectorEnv` (the first only) for the toy env.

:func:`make_training_env` builds RL's envs for a learner config (:func:`training_tasks`,
:func:`training_env_kwargs`, :func:`count_training_tasks` are its parts).
:func:`notebook_env_kwargs` is the one place where a learner config becomes env settings: RL,
evaluation and the SFT demonstrations all build their envs from it, so they run with the same
sandbox, cell timeout, context budget, search and rewards (only the questions and, for
evaluation, the step limit differ).
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym

from l0_env.notebook import NotebookEnv
from l0_env.recording import EpisodeLog

ResetResult = tuple[Any, dict[str, Any]]
StepResult = tuple[Any, float, bool, bool, dict[str, Any]]


@runtime_checkable
class IndexedVectorEnv(Protocol):
    """The vector env the learner drives: indexed resets and steps of any subset of envs."""

    num_envs: int

    def reset_some(self, resets: Mapping[int, Mapping[str, Any] | None]) -> dict[int, ResetResult]:
        """Reset the given envs, each with optional ``{"seed", "options"}``; returns when all are done."""
        ...

    def step_some(self, actions: Mapping[int, Any]) -> dict[int, StepResult]:
        """Step the given envs; returns when all are done."""
        ...

    def episode(self, i: int) -> EpisodeLog | None:
        """Env ``i``'s current (or last) episode record; None where the env keeps none."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class FutureVectorEnv(IndexedVectorEnv, Protocol):
    """An :class:`IndexedVectorEnv` that also starts single resets and steps without waiting."""

    def submit_step(self, i: int, action: Any) -> cf.Future[StepResult]:
        """Start env ``i``'s step; the future's result is ``(obs, reward, terminated, truncated, info)``."""
        ...

    def submit_reset(
        self, i: int, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> cf.Future[ResetResult]:
        """Start env ``i``'s reset; the future's result is ``(obs, info)``."""
        ...


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


def training_tasks(cfg: Any) -> list[dict[str, Any]]:
    """The RL questions of a notebook-env config (``cfg.tasks``, by default the bundled train set)."""
    from .data import load_task_dicts

    return load_task_dicts(cfg.tasks or "hotpotqa-train")


def training_env_kwargs(cfg: Any, tokenizer: Any) -> dict[str, Any]:
    """Constructor arguments of each RL env for a learner config (the notebook or the toy env)."""
    if cfg.env == "toy":
        return {"max_steps": cfg.max_steps}
    return notebook_env_kwargs(cfg, tokenizer, training_tasks(cfg))


def count_training_tasks(cfg: Any) -> int:
    """How many questions RL draws from (the toy env's built-in ones, or ``cfg.tasks``)."""
    if cfg.env == "toy":
        from .toy_env import TextRewardEnv

        return len(TextRewardEnv().tasks)
    return len(training_tasks(cfg))


def make_training_env(cfg: Any, tokenizer: Any) -> IndexedVectorEnv:
    """The ``cfg.num_envs`` envs RL steps, with the settings of :func:`training_env_kwargs`; on a
    Ray cluster when ``cfg.ray_address`` is set (:class:`l0_env.cluster.RayNotebookVectorEnv`)."""
    kwargs = training_env_kwargs(cfg, tokenizer)
    if getattr(cfg, "ray_address", None) is not None:
        from l0_env.vector import make_notebook_vector_env

        resource = getattr(cfg, "ray_env_resource", None)
        return make_notebook_vector_env(
            cfg.num_envs,
            executor="ray",
            ray_address=cfg.ray_address,
            shard_resources={resource: 1} if resource else None,
            **kwargs,
        )
    return make_vector_env(cfg.num_envs, env=cfg.env, **kwargs)


class SequentialVectorEnv:
    """:class:`IndexedVectorEnv` over a list of envs, stepped one after another (the toy env's)."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]]) -> None:
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)

    def reset_some(self, resets: Mapping[int, Mapping[str, Any] | None]) -> dict[int, ResetResult]:
        out = {}
        for i, req in resets.items():
            req = req or {}
            out[i] = self.envs[i].reset(seed=req.get("seed"), options=req.get("options"))
        return out

    def step_some(self, actions: Mapping[int, Any]) -> dict[int, StepResult]:
        out: dict[int, StepResult] = {}
        for i, action in actions.items():
            obs, reward, terminated, truncated, info = self.envs[i].step(action)
            out[i] = (obs, float(reward), terminated, truncated, info)
        return out

    def episode(self, i: int) -> EpisodeLog | None:
        env = self.envs[i].unwrapped
        return env.episode if isinstance(env, NotebookEnv) else None  # the toy env keeps none

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_vector_env(num_envs: int, *, env: str = "notebook", **kwargs: Any) -> IndexedVectorEnv:
    """Build ``num_envs`` envs behind the indexed interface.

    Args:
        num_envs: How many envs.
        env: "notebook" (``L0Notebook-v0``'s :class:`l0_env.vector.NotebookVectorEnv`, which is
            also a :class:`FutureVectorEnv`) or "toy" (:class:`l0_learner.toy_env.TextRewardEnv`).
        **kwargs: Passed to each env's constructor.
    """
    if env == "toy":
        from .toy_env import TextRewardEnv

        return SequentialVectorEnv([lambda: TextRewardEnv(**kwargs) for _ in range(num_envs)])
    if env != "notebook":
        raise ValueError(f"env must be 'notebook' or 'toy', got {env!r}")
    from l0_env.vector import NotebookVectorEnv

    return NotebookVectorEnv(num_envs, **kwargs)
