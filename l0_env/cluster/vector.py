"""``RayNotebookVectorEnv``: the notebook vector env with its envs spread over a Ray cluster.

The driver holds the same API as :class:`l0_env.vector.NotebookVectorEnv` (it shares its base,
:class:`l0_env.vector.IndexedNotebookVectorEnv`); the envs live in :class:`~l0_env.cluster.shard.EnvShard`
actors that Ray places on nodes with free CPUs (``SPREAD``, or where ``shard_resources`` ask, e.g.
a custom ``{"l0_env": 1}`` an operator gives only to env nodes). Actions go out and observations
come back as text, the observations as deltas against the previous one (:mod:`l0_env.cluster.wire`).

**Faults.** When a shard's actor or its whole node dies, every call in flight on it gets one
result: a step ends its episode as truncated with ``info["env_lost"] = True`` (and
``lost_reason``), with the last observation the driver had; a reset is retried on the shard's
replacement. The shard is re-created at once on the nodes that remain (its envs start from a
reset), and an env of it that is stepped again before its reset gets the same truncated result
(its episode died with the node). No call hangs on a dead node and none returns twice.

**Records.** ``record_dir`` is written by the driver (finished episodes come back with their last
step), so it need not be visible on the env nodes.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gymnasium.vector import AutoresetMode

from ..env_args import check_record_dir
from ..notebook import NotebookEnv
from ..recording import EpisodeLog, record_episode
from ..vector import IndexedNotebookVectorEnv, ResetResult, StepResult
from .search import NodeSearchServer, is_embedded
from .shard import EnvShard
from .wire import decode_obs

RESET_ATTEMPTS = 3  # a reset whose shard died is retried on the replacement this many times in all


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"executor='ray' needs Ray: pip install 'l0-gym[ray]' ({exc})") from exc
    return ray


@dataclass
class _Shard:
    """The driver's view of one shard: its envs' global indices, its actor and node."""

    indices: list[int]
    actor: Any = None
    place: dict[str, Any] = field(default_factory=dict)  # the actor's node_id, pid and host
    generation: int = 0  # bumped each time the shard is re-created
    lock: threading.Lock = field(default_factory=threading.Lock)


class RayNotebookVectorEnv(IndexedNotebookVectorEnv):
    """``num_envs`` notebook envs in Ray actors across a cluster, with ``NotebookVectorEnv``'s API.

    Args:
        num_envs: How many envs.
        ray_address: The cluster (``"auto"``, ``"127.0.0.1:6379"``, ``"ray://..."``); None joins the
            Ray instance this process already started, else starts a local one. A Ray this env
            started is shut down by ``close``.
        shards: How many actors hold the envs (default: one per node that can host one).
        shard_num_cpus: CPUs each shard asks of Ray (its kernels are processes of their own; this
            is what keeps shards off nodes with no CPUs to spare, e.g. ``--num-cpus 0``).
        shard_resources: Custom resources each shard asks, e.g. ``{"l0_env": 1}``.
        pool_size: Warm kernels per shard (default: the local vector env's, ``min(envs, 8)``).
        search_per_node: With an embedded search setting, one search server per node instead of
            an index in every shard process (:mod:`l0_env.cluster.search`).
        start_timeout: Seconds for a shard (and a node's search server) to start; one that cannot
            be placed or started in time raises instead of hanging.
        autoreset_mode, record_dir, **env_kwargs: as for ``NotebookVectorEnv`` / ``NotebookEnv``.
    """

    def __init__(
        self,
        num_envs: int,
        *,
        ray_address: str | None = None,
        shards: int | None = None,
        shard_num_cpus: float = 1.0,
        shard_resources: Mapping[str, float] | None = None,
        pool_size: int | None = None,
        search_per_node: bool = True,
        start_timeout: float = 600.0,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        record_dir: str | os.PathLike[str] | None = None,
        **env_kwargs: Any,
    ) -> None:
        if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if shards is not None and (not isinstance(shards, int) or not 1 <= shards <= num_envs):
            raise ValueError(f"shards must be an int from 1 to num_envs ({num_envs}), got {shards!r}")
        for key in ("kernel_pool", "max_workers"):
            if key in env_kwargs:
                raise ValueError(f"{key!r} is not an option of executor='ray'")
        ray = _import_ray()
        # The settings are checked here, on the driver, before anything starts on the cluster.
        probe = NotebookEnv(**env_kwargs, pool_size=0)
        probe.close()
        self._init_batch(num_envs, autoreset_mode, probe.action_space, probe.observation_space)
        self.record_dir = check_record_dir(record_dir) if record_dir is not None else None
        self._env_kwargs = dict(env_kwargs)
        self._pool_size = pool_size
        self._start_timeout = float(start_timeout)
        self._search_spec = env_kwargs.get("search")
        self._per_node_search = search_per_node and is_embedded(self._search_spec)
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=ray_address, log_to_driver=False, logging_level="ERROR")
        self._ray = ray
        self._actor_options: dict[str, Any] = {
            "num_cpus": float(shard_num_cpus),
            "resources": dict(shard_resources or {}),
            "scheduling_strategy": "SPREAD",
            "max_restarts": 0,  # a dead shard is re-created by the driver, which knows its episodes ended
        }
        self._search_servers: dict[str, tuple[Any, str]] = {}
        self._search_lock = threading.Lock()
        self._tag = uuid.uuid4().hex[:8]
        self._last_obs: list[Any] = [None] * num_envs
        self._env_generation = [-1] * num_envs  # the shard generation each env was last reset in
        self._count_lock = threading.Lock()  # the counters below are bumped from worker threads
        self._episodes_recorded = 0
        self.lost_episodes = 0
        """Episodes ended by a lost shard or node since construction."""
        n_shards = shards or max(1, min(num_envs, self._hosting_nodes()))
        bounds = [round(k * num_envs / n_shards) for k in range(n_shards + 1)]
        self._shards = [_Shard(list(range(bounds[k], bounds[k + 1]))) for k in range(n_shards)]
        self._where = [(k, j) for k, s in enumerate(self._shards) for j in range(len(s.indices))]
        self._threads = cf.ThreadPoolExecutor(max_workers=num_envs + 4, thread_name_prefix="l0-ray-vec")
        try:
            self._start_shards(list(range(n_shards)))
        except BaseException:
            self.close()
            raise

    # -- placement -----------------------------------------------------------------------------

    def _hosting_nodes(self) -> int:
        """Alive nodes with the CPUs and resources for one shard (the default shard count)."""
        need = {"CPU": self._actor_options["num_cpus"], **self._actor_options["resources"]}
        return sum(
            1
            for node in self._ray.nodes()
            if node.get("Alive")
            and all(node.get("Resources", {}).get(k, 0) >= v for k, v in need.items() if v)
        )

    def _new_actor(self, k: int) -> Any:
        remote = self._ray.remote(EnvShard).options(
            max_concurrency=len(self._shards[k].indices) + 4, **self._actor_options
        )
        return remote.remote(len(self._shards[k].indices), self._env_kwargs, self._pool_size)

    def _get(self, ref: Any) -> Any:
        try:
            return self._ray.get(ref, timeout=self._start_timeout)
        except self._ray.exceptions.GetTimeoutError:
            raise TimeoutError(
                f"a shard did not start in {self._start_timeout:.0f} s: no node has "
                f"{self._actor_options['num_cpus']} CPUs and {self._actor_options['resources']} free, "
                f"or its envs are slow to build (start_timeout=)"
            ) from None

    def _start_shards(self, ks: list[int]) -> None:
        """Create shards ``ks`` (all at once) and start their envs with their node's search."""
        actors = {k: self._new_actor(k) for k in ks}
        try:
            where = {k: self._get(actors[k].where.remote()) for k in ks}
            search = {k: self._node_search(where[k]["node_id"]) for k in ks}
            self._get([actors[k].start.remote(search[k]) for k in ks])
        except BaseException:
            for actor in actors.values():
                self._kill(actor)
            raise
        for k in ks:
            self._shards[k].actor, self._shards[k].place = actors[k], where[k]

    def _node_search(self, node_id: str) -> str | None:
        """The search URL for envs on ``node_id`` (None: the envs' own setting)."""
        if not self._per_node_search:
            return None
        with self._search_lock:  # one server per node, and the first one alone (it may build the index)
            if node_id not in self._search_servers:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                server = (
                    self._ray.remote(NodeSearchServer)
                    .options(
                        num_cpus=0,
                        max_concurrency=4,
                        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                        name=f"l0-search-{self._tag}-{node_id[:16]}",
                    )
                    .remote(self._search_spec, self._env_kwargs.get("corpus"))
                )
                self._search_servers[node_id] = (server, self._get(server.url.remote()))
            return self._search_servers[node_id][1]

    def _kill(self, actor: Any) -> None:
        with contextlib.suppress(Exception):  # already dead, or the cluster is gone
            self._ray.kill(actor, no_restart=True)

    def _replace(self, k: int, generation: int) -> None:
        """Re-create shard ``k`` (whose actor of ``generation`` died) on the nodes that remain."""
        shard = self._shards[k]
        with shard.lock:
            if shard.generation != generation:
                return  # another call saw the same death and replaced it already
            dead, shard.actor = shard.actor, None
            shard.generation += 1  # its envs' episodes are over, whatever happens next
            if dead is not None:
                self._kill(dead)
            with self._search_lock:  # a dead node's server went with it
                alive = {n["NodeID"] for n in self._ray.nodes() if n.get("Alive")}
                for node_id in [n for n in self._search_servers if n not in alive]:
                    del self._search_servers[node_id]
            self._start_shards([k])

    # -- the single-env calls ------------------------------------------------------------------

    def _is_lost(self, exc: BaseException) -> bool:
        errors = self._ray.exceptions
        return isinstance(exc, (errors.RayActorError, errors.WorkerCrashedError, errors.NodeDiedError))

    def _start_step(self, i: int, action: Any) -> cf.Future:
        return self._threads.submit(self._step_blocking, i, action)

    def _start_reset(self, i: int, seed: int | None, options: dict | None) -> cf.Future:
        return self._threads.submit(self._reset_blocking, i, seed, options)

    def _lost(self, i: int, reason: str) -> StepResult:
        with self._count_lock:
            self.lost_episodes += 1
        obs = self._last_obs[i] if self._last_obs[i] is not None else []
        return obs, 0.0, False, True, {"env_lost": True, "lost_reason": reason}

    def _step_blocking(self, i: int, action: Any) -> StepResult:
        k, j = self._where[i]
        shard = self._shards[k]
        generation, actor = shard.generation, shard.actor
        if self._env_generation[i] != generation or actor is None:
            return self._lost(i, "the env's shard was re-created after its node or actor died; reset it")
        try:
            keep, tail, reward, terminated, truncated, info, episode = self._ray.get(
                actor.step.remote(j, action, self.record_dir is not None)
            )
        except Exception as exc:
            if not self._is_lost(exc):
                raise
            self._env_generation[i] = -1
            self._threads.submit(self._replace_quietly, k, generation)
            return self._lost(i, f"{type(exc).__name__}: its shard's actor or node died mid-episode")
        obs = decode_obs(self._last_obs[i], keep, tail)
        self._last_obs[i] = obs
        if episode is not None and self.record_dir is not None:
            with self._count_lock:  # two episodes must never share a name
                self._episodes_recorded += 1
                number = self._episodes_recorded
            name = f"{os.getpid()}-{id(self):x}-{i:04d}-{number:05d}"
            error = record_episode(self.record_dir, name, episode)
            if error is not None:
                info["record_error"] = error
        return obs, reward, terminated, truncated, info

    def _replace_quietly(self, k: int, generation: int) -> None:
        with contextlib.suppress(Exception):  # the next reset of one of its envs retries and reports it
            self._replace(k, generation)

    def _reset_blocking(self, i: int, seed: int | None, options: dict | None) -> ResetResult:
        k, j = self._where[i]
        shard = self._shards[k]
        for attempt in range(RESET_ATTEMPTS):
            with shard.lock:  # wait for a replacement in progress
                generation, actor = shard.generation, shard.actor
            if actor is None:
                self._replace(k, generation)  # a failed replacement is retried here, or raises
                continue
            try:
                keep, tail, info = self._ray.get(actor.reset.remote(j, seed, options))
            except Exception as exc:
                if not self._is_lost(exc) or attempt == RESET_ATTEMPTS - 1:
                    raise
                self._replace(k, generation)
                continue
            obs = decode_obs(None, keep, tail)
            self._last_obs[i], self._env_generation[i] = obs, generation
            self._needs_reset[i] = False  # before the future is done: a waiter sees the env as reset
            return obs, info
        raise RuntimeError(f"env {i}: its shard could not be re-created ({RESET_ATTEMPTS} attempts)")

    def episode(self, i: int) -> EpisodeLog | None:
        """Env ``i``'s current (or last) episode record; None when it died with its node."""
        self._check_indices([i])
        k, j = self._where[int(i)]
        shard = self._shards[k]
        if shard.actor is None or self._env_generation[int(i)] != shard.generation:
            return None
        try:
            return self._ray.get(shard.actor.episode.remote(j))
        except Exception as exc:
            if self._is_lost(exc):
                return None
            raise

    def where(self) -> list[dict[str, Any]]:
        """Each shard's envs and where its actor runs: ``[{"envs", "node_id", "pid", "host"}, ...]``."""
        return [{"envs": list(s.indices), **s.place} for s in self._shards]

    def close_extras(self, **kwargs: Any) -> None:
        """Close every shard's envs (no kernel or sandbox remains on any node), then the actors,
        the nodes' search servers, and Ray if this env started it."""
        shards = getattr(self, "_shards", [])
        closing = []
        for shard in shards:
            if shard.actor is not None:
                closing.append(shard.actor.close.remote())
        if closing:
            with contextlib.suppress(Exception):
                self._ray.wait(closing, num_returns=len(closing), timeout=120)
        for shard in shards:
            if shard.actor is not None:
                self._kill(shard.actor)
                shard.actor = None
        for server, _url in getattr(self, "_search_servers", {}).values():
            with contextlib.suppress(Exception):
                self._ray.get(server.stop.remote(), timeout=30)
            self._kill(server)
        if hasattr(self, "_threads"):
            self._threads.shutdown(wait=True)
        if getattr(self, "_owns_ray", False):
            self._ray.shutdown()
