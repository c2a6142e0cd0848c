"""Drive the (vector) env with a generation backend; keep every step's token ids and logprobs.

Each step is one training sample: prompt = the context at that step (the env's chat messages,
encoded once with the chat template), response = the sampled action ids exactly as sampled.
Nothing is re-tokenized. Episodes run in slots: every round, the envs waiting for an action get
one batched ``generate`` call, then all those actions are stepped with ``step_some`` (concurrent
in the vector env); a finished episode's slot is refilled with the next job at once.

Simplification: rounds are synchronous (generation for round k+1 starts when all cells of round
k are back); with a GPU inference server one would overlap them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .envs import episode_log


@dataclass
class StepSample:
    """One step: what the policy saw and wrote, and the env's reward components for it."""

    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    action: str
    components: dict[str, Any]
    finish_reason: str = "stop"
    cell_status: str | None = None


@dataclass
class Job:
    """One episode to run: which task and with which env seed; ``group`` ties rollouts of a question."""

    task_index: int
    seed: int
    group: int = 0


@dataclass
class Episode:
    """A finished episode."""

    job: Job
    task: dict[str, Any]
    steps: list[StepSample] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    log: Any = None

    @property
    def final(self) -> dict[str, Any]:
        return self.steps[-1].components if self.steps else {}

    @property
    def em(self) -> float:
        return float(self.final.get("em") or 0.0)


@dataclass
class RolloutTimings:
    generate_s: float = 0.0
    env_s: float = 0.0
    gen_tokens: int = 0

    def add(self, other: RolloutTimings) -> None:
        self.generate_s += other.generate_s
        self.env_s += other.env_s
        self.gen_tokens += other.gen_tokens


def run_episodes(
    backend: Any,
    venv: Any,
    jobs: Sequence[Job],
    *,
    num_envs: int,
    keep_logs: int = 0,
    progress: str | None = None,
) -> tuple[list[Episode], RolloutTimings]:
    """Run every job to the end of its episode.

    Args:
        backend: A generation backend (``generate(conversations) -> list[Generation]``).
        venv: The indexed vector env (:mod:`l0_learner.envs`).
        jobs: Episodes to run, in order.
        num_envs: Slots of ``venv`` to use.
        keep_logs: Keep the full EpisodeLog of this many episodes (for sample notebooks).
        progress: Show a progress bar over finished episodes with this label.

    Returns:
        The episodes in job order, and where the time went.
    """
    timings = RolloutTimings()
    pending = deque(enumerate(jobs))
    done: dict[int, Episode] = {}
    slots: dict[int, tuple[int, Episode]] = {}
    obs: dict[int, Any] = {}

    def fill(free: list[int]) -> None:
        requests = {}
        for slot in free:
            if not pending:
                break
            k, job = pending.popleft()
            slots[slot] = (k, Episode(job=job, task={}))
            requests[slot] = {"seed": job.seed, "options": {"task_index": job.task_index}}
        if requests:
            t0 = time.perf_counter()
            for slot, (o, info) in venv.reset_some(requests).items():
                obs[slot] = o
                slots[slot][1].task = dict(info.get("task", {}))
            timings.env_s += time.perf_counter() - t0

    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc=progress, unit="ep", disable=progress is None, leave=False)
    fill(list(range(num_envs)))
    while slots:
        active = sorted(slots)
        t0 = time.perf_counter()
        gens = backend.generate([obs[s] for s in active])
        timings.generate_s += time.perf_counter() - t0
        timings.gen_tokens += sum(len(g.response_ids) for g in gens)
        t0 = time.perf_counter()
        results = venv.step_some({s: g.text for s, g in zip(active, gens, strict=True)})
        timings.env_s += time.perf_counter() - t0
        freed = []
        for slot, gen in zip(active, gens, strict=True):
            o, _reward, terminated, truncated, info = results[slot]
            k, ep = slots[slot]
            ep.steps.append(
                StepSample(
                    prompt_ids=list(gen.prompt_ids),
                    response_ids=list(gen.response_ids),
                    logprobs=list(gen.logprobs),
                    action=gen.text,
                    components=dict(info.get("reward_components", {})),
                    finish_reason=gen.finish_reason,
                    cell_status=info.get("cell_status"),
                )
            )
            obs[slot] = o
            if terminated or truncated:
                ep.metrics = dict(info.get("episode", {}))
                if k < keep_logs:
                    ep.log = episode_log(venv, slot)
                done[k] = ep
                bar.update(1)
                del slots[slot]
                freed.append(slot)
        if freed:
            fill(freed)
    bar.close()
    return [done[k] for k in range(len(jobs))], timings
