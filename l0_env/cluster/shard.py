"""One Ray actor's slice of a cluster vector env: ``EnvShard`` (a plain class; made remote by the driver).

A shard is a local :class:`l0_env.vector.NotebookVectorEnv` (its own warm kernel pool, its envs'
kernels on the shard's node) behind per-env methods. The actor runs with ``max_concurrency`` above
its env count, so a slow cell holds up only its own env: each call runs on an actor thread and
waits on the kernel's sockets, which releases the GIL. Observations go back as deltas
(:mod:`l0_env.cluster.wire`); autoreset is the driver's business (the local envs never autoreset).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from ..recording import EpisodeLog
from ..vector import NotebookVectorEnv
from .wire import encode_obs


class EnvShard:
    """Envs ``0..num_envs-1`` of one shard (the driver maps its global indices onto them).

    Args:
        num_envs: How many envs the shard holds.
        env_kwargs: ``NotebookEnv`` settings (the driver validated them).
        pool_size: Warm kernels kept ready (None: the local vector env's default).
    """

    def __init__(self, num_envs: int, env_kwargs: dict[str, Any], pool_size: int | None) -> None:
        self._num_envs = num_envs
        self._env_kwargs = dict(env_kwargs)
        self._pool_size = pool_size
        self._venv: NotebookVectorEnv | None = None
        self._sent: list[Any] = [None] * num_envs  # the observation each env's last delta was against

    def where(self) -> dict[str, Any]:
        """The node and process this shard runs in."""
        import ray

        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }

    def start(self, search: Any = None) -> None:
        """Build the envs; ``search``, when given, replaces the settings' (the node's search server)."""
        kwargs = dict(self._env_kwargs)
        if search is not None:
            kwargs["search"] = search
        self._venv = NotebookVectorEnv(
            self._num_envs, autoreset_mode="disabled", pool_size=self._pool_size, **kwargs
        )

    def _env(self) -> NotebookVectorEnv:
        if self._venv is None:
            raise RuntimeError("the shard was not started")
        return self._venv

    def reset(self, i: int, seed: int | None, options: dict | None) -> tuple[int, list, dict]:
        """Reset env ``i``: ``(keep, tail, info)``; the delta is against nothing (a new episode)."""
        obs, info = self._env().submit_reset(i, seed=seed, options=options).result()
        self._sent[i] = None
        keep, tail = encode_obs(None, obs)
        self._sent[i] = obs
        return keep, tail, info

    def step(
        self, i: int, action: Any, with_episode: bool
    ) -> tuple[int, list, float, bool, bool, dict, EpisodeLog | None]:
        """Step env ``i``: ``(keep, tail, reward, terminated, truncated, info, episode)``; the
        episode record comes along when the step ends it and ``with_episode`` (the driver records it)."""
        obs, reward, terminated, truncated, info = self._env().submit_step(i, action).result()
        keep, tail = encode_obs(self._sent[i], obs)
        self._sent[i] = obs
        episode = self._env().episode(i) if with_episode and (terminated or truncated) else None
        return keep, tail, float(reward), bool(terminated), bool(truncated), info, episode

    def episode(self, i: int) -> EpisodeLog | None:
        return self._env().episode(i)

    def close(self) -> None:
        """Close every env and the pool: no kernel or sandbox of this shard remains."""
        if self._venv is not None:
            self._venv.close()
            self._venv = None
