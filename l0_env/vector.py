"""Many notebooks from one process: ``NotebookVectorEnv`` (gymnasium ``VectorEnv`` API + indexed steps).

RL on LLM agents is bound by generation; the env must never make the GPU wait. Each notebook's
kernel is already its own process, so one Python process can drive hundreds: a step sends the cell
and waits on the kernel's sockets. Steps of different envs run concurrently on a thread pool (the
waits are in zmq and socket calls, which release the GIL), and the indexed API lets a rollout step
only the envs whose actions are ready and take each result as soon as it is done:

* ``step(actions)`` / ``reset()``: the batched gymnasium API (autoreset modes next-step,
  same-step or disabled);
* ``step_some({i: action})`` / ``reset_some({i: {...}})``: step or reset a subset, concurrently;
* ``iter_step_some({i: action})``: yield ``(i, result)`` in completion order;
* ``astep(i, action)`` / ``areset(i)``: awaitables for asyncio rollouts.
* ``submit_step(i, action)`` / ``submit_reset(i)``: ``concurrent.futures.Future`` s, for
  thread-based rollouts that wait on whichever env finishes first.

All envs share one warm kernel pool and one search index. The API is built once, in
``IndexedNotebookVectorEnv``, over single-env futures; ``NotebookVectorEnv`` runs the envs in this
process, ``l0_env.cluster.RayNotebookVectorEnv`` in Ray actors across a cluster, and
``make_notebook_vector_env`` (``gym.make_vec``'s entry point) picks one by ``executor``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import resource
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .kernel.pool import KernelPool
from .notebook import NotebookEnv
from .recording import EpisodeLog, save_notebook

StepResult = tuple[list, float, bool, bool, dict[str, Any]]
ResetResult = tuple[list, dict[str, Any]]


def info_at(infos: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Env ``i``'s info dict out of gymnasium's batched infos (keys with a ``_key`` mask)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        if isinstance(value, Mapping):
            out[key] = info_at(value, i)
        elif key == "final_obs" or (f"_{key}" in infos and infos[f"_{key}"][i]):
            value = value[i]
            out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def _ensure_fd_limit(needed: int) -> None:
    """Raise the soft open-file limit towards the hard one (often 1024 vs 1M) when many kernels need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _autoreset_mode(mode: str | AutoresetMode) -> AutoresetMode:
    if isinstance(mode, AutoresetMode):
        return mode
    by_name = {m.name.lower(): m for m in AutoresetMode} | {m.value.lower(): m for m in AutoresetMode}
    key = str(mode).lower().replace("-", "_")
    if key not in by_name:
        raise ValueError(f"autoreset_mode must be one of 'next_step', 'same_step', 'disabled', got {mode!r}")
    return by_name[key]


class IndexedNotebookVectorEnv(VectorEnv):
    """The vector API of L0 Gym over single-env futures: what the local and the Ray vector envs share.

    A subclass sets ``num_envs``, the spaces and ``autoreset_mode`` (:meth:`_init_batch`), and
    implements :meth:`_start_step` and :meth:`_start_reset` (each returns a
    ``concurrent.futures.Future`` at once), :meth:`episode` and ``close_extras``. Everything else,
    the indexed API (``step_some``, ``iter_step_some``, ``reset_some``, ``submit_*``, ``astep``,
    ``areset``) and gymnasium's batched ``reset``/``step`` with autoreset, is built here on those.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}  # noqa: RUF012 - gymnasium's convention

    def _init_batch(
        self,
        num_envs: int,
        autoreset_mode: str | AutoresetMode,
        single_action_space: Any,
        single_observation_space: Any,
    ) -> None:
        self.num_envs = num_envs
        self.autoreset_mode = _autoreset_mode(autoreset_mode)
        self.metadata = {"autoreset_mode": self.autoreset_mode}
        self.single_action_space = single_action_space
        self.single_observation_space = single_observation_space
        self.action_space = batch_space(single_action_space, num_envs)
        self.observation_space = batch_space(single_observation_space, num_envs)
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._started = False
        self.closed = False

    def _start_step(self, i: int, action: Any) -> cf.Future:
        """Start env ``i``'s step; a future of ``(obs, reward, terminated, truncated, info)``."""
        raise NotImplementedError

    def _start_reset(self, i: int, seed: int | None, options: dict | None) -> cf.Future:
        """Start env ``i``'s reset; a future of ``(obs, info)`` that clears ``_needs_reset[i]``
        before it is done (a waiter then sees the env as reset)."""
        raise NotImplementedError

    def episode(self, i: int) -> EpisodeLog | None:
        """Env ``i``'s current (or last) episode record."""
        raise NotImplementedError

    # -- indexed API ---------------------------------------------------------------------------

    def _check_indices(self, indices: Sequence[int]) -> None:
        for i in indices:
            if not isinstance(i, (int, np.integer)) or not 0 <= int(i) < self.num_envs:
                raise IndexError(f"env index {i!r} out of range for {self.num_envs} envs")
        if self.closed:
            raise RuntimeError("the vector env is closed")

    def _submit_step(self, i: int, action: Any) -> cf.Future:
        return self._start_step(i, action)

    def _submit_reset(self, i: int, kwargs: Mapping[str, Any] | None) -> cf.Future:
        kwargs = dict(kwargs or {})
        unknown = set(kwargs) - {"seed", "options"}
        if unknown:
            raise ValueError(f"reset_some takes 'seed' and 'options' per env, got {sorted(unknown)}")
        return self._start_reset(i, kwargs.get("seed"), kwargs.get("options"))

    def step_some(self, actions: Mapping[int, Any]) -> dict[int, StepResult]:
        """Step the given envs concurrently; returns when all of them are done."""
        self._check_indices(list(actions))
        futures = {i: self._submit_step(int(i), a) for i, a in actions.items()}
        return {i: f.result() for i, f in futures.items()}

    def iter_step_some(self, actions: Mapping[int, Any]) -> Iterator[tuple[int, StepResult]]:
        """Step the given envs concurrently; yield ``(index, result)`` as each one finishes."""
        self._check_indices(list(actions))
        futures = {self._submit_step(int(i), a): int(i) for i, a in actions.items()}
        for future in cf.as_completed(futures):
            yield futures[future], future.result()

    def reset_some(self, resets: Mapping[int, Mapping[str, Any] | None]) -> dict[int, ResetResult]:
        """Reset the given envs concurrently, each with optional ``{"seed", "options"}``."""
        self._check_indices(list(resets))
        futures = {i: self._submit_reset(int(i), kw) for i, kw in resets.items()}
        results = {i: f.result() for i, f in futures.items()}
        self._needs_reset[list(results)] = False
        return results

    def submit_step(self, i: int, action: Any) -> cf.Future:
        """Start env ``i``'s step on the worker threads; returns at once with a ``Future``.

        ``future.result()`` is the step's ``(obs, reward, terminated, truncated, info)`` (or raises
        what the step raised). Use it with ``concurrent.futures.wait`` to act on each env as soon
        as its cell is done. Keep at most one call in flight per env.
        """
        self._check_indices([i])
        return self._submit_step(int(i), action)

    def submit_reset(self, i: int, *, seed: int | None = None, options: dict | None = None) -> cf.Future:
        """Start env ``i``'s reset on the worker threads; returns at once with a ``Future`` of ``(obs, info)``."""
        self._check_indices([i])
        return self._start_reset(int(i), seed, options)

    async def astep(self, i: int, action: Any) -> StepResult:
        """Await one env's step (runs on the vector env's worker threads)."""
        self._check_indices([i])
        return await asyncio.wrap_future(self._submit_step(int(i), action))

    async def areset(self, i: int, *, seed: int | None = None, options: dict | None = None) -> ResetResult:
        """Await one env's reset."""
        self._check_indices([i])
        result = await asyncio.wrap_future(self._submit_reset(int(i), {"seed": seed, "options": options}))
        self._needs_reset[i] = False
        return result

    # -- gymnasium VectorEnv API -----------------------------------------------------------------

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[tuple, dict[str, Any]]:
        """Reset every env (or those in ``options["reset_mask"]``) concurrently.

        Args:
            seed: One int (env ``i`` gets ``seed + i``), one per env, or None.
            options: Passed to every env's reset (``task``/``task_index``), plus ``reset_mask``.

        Returns:
            ``(observations, infos)``: a tuple of chat-message lists, and the envs' reset infos
            (``NotebookEnv.reset`` lists the keys) batched the gymnasium way: ``infos[key]`` is an
            array over envs with a boolean mask ``infos["_" + key]``; nested dicts are batched
            key by key (``l0_env.vector.info_at`` takes env ``i``'s dict back out).
        """
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
        if seed is not None:
            self._np_random, self._np_random_seed = np.random.default_rng(seeds[0]), seeds[0]
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        indices = range(self.num_envs) if mask is None else np.flatnonzero(mask).tolist()
        results = self.reset_some({i: {"seed": seeds[i], "options": options or None} for i in indices})
        self._started = True
        observations: list[Any] = [None] * self.num_envs
        infos: dict[str, Any] = {}
        for i, (obs, info) in results.items():
            observations[i] = obs
            infos = self._add_info(infos, info, i)
        return tuple(observations), infos

    def step(
        self, actions: Sequence[Any]
    ) -> tuple[tuple, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every env concurrently, with gymnasium's autoreset (``autoreset_mode``).

        Returns:
            ``(observations, rewards, terminated, truncated, infos)``; ``infos`` batches the
            envs' step infos as ``reset`` does (``NotebookEnv.step`` lists the keys; an env that
            autoresets in this call contributes its reset info). With ``"same_step"`` autoreset an
            env that ended also has ``final_obs`` (its last observation) and ``final_info`` (its
            last step info); ``episode_metrics`` arrives with the step that ends an episode.
        """
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if len(actions) != self.num_envs:
            raise ValueError(f"got {len(actions)} actions for {self.num_envs} envs")
        observations: list[Any] = [None] * self.num_envs
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        env_infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        to_reset = [i for i in range(self.num_envs) if self._needs_reset[i]]
        if self.autoreset_mode == AutoresetMode.DISABLED and to_reset:
            raise RuntimeError(
                f"envs {to_reset} are done; reset them with reset(options={{'reset_mask': ...}})"
            )
        futures: dict[cf.Future, tuple[str, int]] = {}
        for i in range(self.num_envs):
            if i in to_reset:  # next-step autoreset: this step resets, the action is ignored
                futures[self._submit_reset(i, None)] = ("reset", i)
            else:
                futures[self._submit_step(i, actions[i])] = ("step", i)
        done_now: list[int] = []
        for future, (kind, i) in futures.items():
            if kind == "reset":
                observations[i], env_infos[i] = future.result()
                self._needs_reset[i] = False
            else:
                observations[i], rewards[i], terminated[i], truncated[i], env_infos[i] = future.result()
                if terminated[i] or truncated[i]:
                    done_now.append(i)
        if self.autoreset_mode == AutoresetMode.SAME_STEP and done_now:
            for i, (obs, info) in self.reset_some({i: None for i in done_now}).items():
                env_infos[i] = {**info, "final_obs": observations[i], "final_info": env_infos[i]}
                observations[i] = obs
        elif self.autoreset_mode == AutoresetMode.NEXT_STEP or done_now:
            self._needs_reset[done_now] = True
        infos: dict[str, Any] = {}
        for i, info in enumerate(env_infos):
            infos = self._add_info(infos, info, i)
        return tuple(observations), rewards, terminated, truncated, infos

    def save_notebooks(self, directory: str, prefix: str = "env") -> list[str]:
        """Save each env's current (or last) episode as ``{prefix}-{i}.ipynb``."""
        import os

        paths = []
        for i in range(self.num_envs):
            ep = self.episode(i)
            if ep is not None:
                paths.append(str(save_notebook(ep, os.path.join(directory, f"{prefix}-{i:03d}.ipynb"))))
        return paths


class NotebookVectorEnv(IndexedNotebookVectorEnv):
    """``num_envs`` notebook envs in one process, stepped concurrently.

    Args:
        num_envs: how many envs.
        autoreset_mode: gymnasium's autoreset mode for ``step`` ("next_step", "same_step",
            "disabled", or an ``AutoresetMode``); ``step_some`` never autoresets.
        pool_size: warm kernels kept ready in the shared pool (default: ``min(num_envs, 8)``).
        max_workers: threads stepping envs at once (default: ``num_envs``).
        **env_kwargs: passed to every ``NotebookEnv`` (tasks, corpus, max_steps, sandbox, ...).
    """

    def __init__(
        self,
        num_envs: int,
        *,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        pool_size: int | None = None,
        max_workers: int | None = None,
        **env_kwargs: Any,
    ) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        for key in ("kernel_pool", "pool_size"):
            if key in env_kwargs:
                raise ValueError(
                    f"{key!r} is managed by the vector env; pass pool_size= to NotebookVectorEnv"
                )
        _ensure_fd_limit(num_envs * 24 + 256)  # ~20 fds per kernel: zmq sockets, pipes, the bridge
        # The shared pool starts kernels with the envs' settings, which an env validates and
        # resolves from env_kwargs: a probe (no kernel, no pool) reads them.
        probe = NotebookEnv(**env_kwargs, pool_size=0)
        probe.close()
        self._pool = KernelPool(
            probe.kernel_config, size=min(num_envs, 8) if pool_size is None else pool_size
        )
        self.envs: list[NotebookEnv] = []
        try:  # an env that fails to build (an MCP server that does not start) leaves nothing running
            for _ in range(num_envs):
                self.envs.append(NotebookEnv(**env_kwargs, kernel_pool=self._pool))
        except BaseException:
            for env in self.envs:
                env.close()
            self._pool.close()
            raise
        self._init_batch(num_envs, autoreset_mode, probe.action_space, probe.observation_space)
        self._executor = cf.ThreadPoolExecutor(
            max_workers=max_workers or num_envs, thread_name_prefix="l0-vec"
        )

    def _start_step(self, i: int, action: Any) -> cf.Future:
        return self._executor.submit(self.envs[i].step, action)

    def _start_reset(self, i: int, seed: int | None, options: dict | None) -> cf.Future:
        return self._executor.submit(self._reset_one, i, seed, options)

    def _reset_one(self, i: int, seed: int | None, options: dict | None) -> ResetResult:
        result = self.envs[i].reset(seed=seed, options=options)
        self._needs_reset[i] = False  # before the future is done: a waiter sees the env as reset
        return result

    def episode(self, i: int) -> EpisodeLog | None:
        """Env ``i``'s current (or last) episode record (``NotebookEnv.episode``)."""
        self._check_indices([i])
        return self.envs[int(i)].episode

    @property
    def kernel_pool(self) -> KernelPool:
        """The warm kernel pool every env of this vector env takes its kernels from."""
        return self._pool

    def close_extras(self, **kwargs: Any) -> None:
        """Close every env and the shared pool: no kernel, bwrap or socket remains."""
        list(self._executor.map(lambda env: env.close(), self.envs))
        self._executor.shutdown(wait=True)
        self._pool.close()


EXECUTORS = ("local", "ray")


def make_notebook_vector_env(
    num_envs: int, *, executor: str = "local", **kwargs: Any
) -> IndexedNotebookVectorEnv:
    """``gym.make_vec("L0Notebook-v0", num_envs, ...)``'s entry point.

    Args:
        num_envs: How many envs.
        executor: "local" (:class:`NotebookVectorEnv`: every env's kernel on this machine) or
            "ray" (:class:`l0_env.cluster.RayNotebookVectorEnv`: envs in Ray actors across a
            cluster; takes ``ray_address``, ``shards``, ``shard_num_cpus``, ``shard_resources``,
            ``search_per_node``, ``start_timeout``; needs the ``ray`` extra).
        **kwargs: The vector env's and the envs' settings.

    Raises:
        ValueError: An unknown executor, or a Ray option with ``executor="local"``.
    """
    if executor == "local":
        ray_only = sorted(
            k
            for k in kwargs
            if k
            in (
                "ray_address",
                "shards",
                "shard_num_cpus",
                "shard_resources",
                "search_per_node",
                "start_timeout",
            )
        )
        if ray_only:
            raise ValueError(f"{ray_only} are options of executor='ray'; the executor is 'local'")
        return NotebookVectorEnv(num_envs, **kwargs)
    if executor == "ray":
        from .cluster.vector import RayNotebookVectorEnv

        return RayNotebookVectorEnv(num_envs, **kwargs)
    raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
