"""Drive the (vector) env with a generation backend; keep every step's token ids and logprobs.

Each step is one training sample: prompt = the context at that step (the env's chat messages,
encoded once with the chat template), response = the sampled action ids exactly as sampled.
Nothing is re-tokenized.

Scheduling: episodes run in ``num_envs`` slots, and a finished episode's slot is refilled with the
next job at once. Resets and steps go to the vector env without waiting (the ``submit_reset`` /
``submit_step`` futures of :class:`l0_env.vector.NotebookVectorEnv`), so every slot is either
*ready* (its observation is back and it waits for an action) or *in flight* (its cell or reset is
running). Each turn of the loop:

1. take every finished future; if no slot is ready, block until the first one finishes
   (``concurrent.futures.wait(FIRST_COMPLETED)``) and take all others that are done by then;
2. give the other resets/cells in flight a short time to finish and join the batch (by default
   as long as the last ``generate`` call took: see ``BATCH_WAIT_S``); one still running after
   that is not waited for again (it rejoins a batch when it is back);
3. one batched ``generate`` for every ready slot, submit those actions, go round again.

So a slow cell (a ``time.sleep(10)``, a long search) holds up only its own episode: the other
episodes keep generating and stepping around it, and its slot rejoins the batches when it is back.
A venv without the future API (not a :class:`l0_learner.envs.FutureVectorEnv`: e.g.
:class:`l0_learner.envs.SequentialVectorEnv`), and ``overlap=False``, get synchronous rounds
instead: generate for all slots, step them all with one ``step_some``, repeat.

Determinism. The episodes come back in job order whatever the timing. Which slots share a
``generate`` call now depends on how fast cells run. With a scripted or otherwise per-row backend
that changes nothing. With the ``hf`` backend and greedy decoding (``temperature=0``) each row's
tokens are in principle independent of the other rows, but the batched float arithmetic is not:
the padding width and the shared-prefix split (computed over the batch's prompts) change the
logprobs by float rounding, which can flip a near-tie argmax. With sampling, ``model.generate``
draws all rows of a batch from the global torch RNG in one ``torch.multinomial`` call per token,
so the tokens a row gets depend on the batch's size, order and on every call before it: a seeded
run is reproducible only with ``overlap=False`` (rounds fixed by the seeds, as before).
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .envs import FutureVectorEnv, IndexedVectorEnv


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
    answer: str | None = None
    """The submitted final answer (None when the episode ended without one)."""
    lost: bool = False
    """The env's node or actor died mid-episode (``info["env_lost"]``): the episode says nothing
    about the policy, and RL leaves it out of the batch."""

    @property
    def final(self) -> dict[str, Any]:
        return self.steps[-1].components if self.steps else {}

    @property
    def em(self) -> float:
        return float(self.final.get("em") or 0.0)


@dataclass
class RolloutTimings:
    """Where a rollout's time went, in seconds (:meth:`add` sums rollouts).

    Attributes:
        generate_s: Inside ``backend.generate``.
        env_s: Waiting for the env with nothing to generate (no slot ready, or the short batch
            wait for more cells): the env time that was *not* hidden behind generation.
            In synchronous rounds it is all of the env's time.
        gen_tokens: Generated tokens.
        env_busy_s: Wall time during which at least one reset or step was running, overlapped
            or not (the union of their intervals).
    """

    generate_s: float = 0.0
    env_s: float = 0.0
    gen_tokens: int = 0
    env_busy_s: float = 0.0

    @property
    def overlap_s(self) -> float:
        """Env time that ran while the learner generated (or did its bookkeeping)."""
        return max(0.0, self.env_busy_s - self.env_s)

    def add(self, other: RolloutTimings) -> None:
        self.generate_s += other.generate_s
        self.env_s += other.env_s
        self.gen_tokens += other.gen_tokens
        self.env_busy_s += other.env_busy_s


# The batch wait. Leaving a row out of this ``generate`` call costs about one more call later,
# and a call has a large fixed cost: it runs up to max_new_tokens decoding steps whatever its batch
# size (hf backend, tiny model, one 64-token action from a real env prompt on 2 loaded CPUs: 3.1 s
# for 1 row, 6.6 s for 8 rows). Waiting for the row idles the generator just the same. So, as in
# ski rental, wait for the resets/cells in flight up to as long as one call takes (the last one's
# duration): never worse than twice the better choice. An ordinary cell (5-300 ms,
# benchmarks/RESULTS-throughput.md) joins the batch; a slow one is waited for once, then left to
# rejoin the batch after its return. Before the first call is timed: BATCH_WAIT_S.
BATCH_WAIT_S = 0.2


def eta_seconds(done: int, total: int, elapsed_s: float, slots: int) -> float | None:
    """Time left for ``total`` episodes, ``done`` of them after ``elapsed_s`` on ``slots`` slots.

    The mean rate since the start, and no estimate (None) before a first wave of episodes, one
    per slot, has ended: the slots run concurrently, so the first episode ends after a whole
    episode's time and the others soon after it. Extrapolating from the first one (tqdm's
    default) said 5.5 h for an evaluation that took 48 min.
    """
    if done >= total:
        return 0.0
    if done < min(slots, total) or elapsed_s <= 0:
        return None
    return (total - done) * elapsed_s / done


def _end_span(span: list[float], _future: Any) -> None:
    span[1] = time.perf_counter()


def _union_length(spans: list[list[float]], now: float) -> float:
    total, end = 0.0, float("-inf")
    for lo, hi in sorted(spans):
        hi = now if hi == float("inf") else hi  # a done-callback that has not run yet
        if hi > end:
            total += hi - max(lo, end)
            end = hi
    return total


def run_episodes(
    backend: Any,
    venv: IndexedVectorEnv,
    jobs: Sequence[Job],
    *,
    num_envs: int,
    keep_logs: int = 0,
    progress: str | None = None,
    batch_wait_s: float | None = None,
    overlap: bool = True,
) -> tuple[list[Episode], RolloutTimings]:
    """Run every job to the end of its episode (scheduling: see the module docstring).

    Args:
        backend: A generation backend (``generate(conversations) -> list[Generation]``).
        venv: The indexed vector env (:class:`l0_learner.envs.IndexedVectorEnv`); when it is a
            :class:`l0_learner.envs.FutureVectorEnv`, slow cells do not hold up the other episodes.
        jobs: Episodes to run, in order.
        num_envs: Slots of ``venv`` to use.
        keep_logs: Keep the full EpisodeLog of this many episodes (for sample notebooks).
        progress: Show a progress bar over finished episodes with this label (with the steps
            taken, and the time left once every slot has finished an episode: ``eta_seconds``).
        batch_wait_s: Before generating, wait up to this long for the resets/cells in flight to
            finish and join the batch (each one is waited for once at most); 0 generates for
            whatever is ready; None (default): as long as the last ``generate`` call took.
        overlap: False runs synchronous rounds even on a vector env with futures (the batches,
            hence sampled tokens under a seeded RNG, are then independent of timing).

    Returns:
        The episodes in job order, and where the time went.
    """
    import concurrent.futures as cf

    from tqdm.auto import tqdm

    timings = RolloutTimings()
    if not isinstance(venv, IndexedVectorEnv):
        raise TypeError(
            f"venv must have num_envs, reset_some, step_some, episode and close "
            f"(l0_learner.envs.IndexedVectorEnv), got {type(venv).__name__}"
        )
    futures_venv = venv if overlap and isinstance(venv, FutureVectorEnv) else None
    pending = deque(enumerate(jobs))
    done: dict[int, Episode] = {}
    slots: dict[int, tuple[int, Episode]] = {}  # slot -> (job number, its episode so far)
    ready: dict[int, Any] = {}  # slot -> the observation that waits for an action
    inflight: dict[cf.Future, tuple[int, Any]] = {}  # -> (slot, its Generation; None for a reset)
    outwaited: set[cf.Future] = set()  # in flight through a whole batch wait: not waited for again
    last_generate_s = BATCH_WAIT_S  # the batch wait with batch_wait_s=None, until generate is timed
    spans: list[list[float]] = []  # [start, end] of every env call, for env_busy_s
    # The bar's time left is eta_seconds' (tqdm's own extrapolates from the first episode).
    bar = tqdm(
        total=len(jobs),
        desc=progress,
        unit="ep",
        disable=progress is None,
        leave=False,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} episodes [{elapsed}{postfix}]",
    )
    n_steps = 0

    def show_progress() -> None:
        if bar.disable:
            return
        eta = eta_seconds(len(done), len(jobs), bar.format_dict["elapsed"], num_envs)
        left = "estimate after the first episode of every slot" if eta is None else tqdm.format_interval(eta)
        bar.set_postfix_str(f"{n_steps} steps, left: {left}", refresh=True)

    def submit(calls: dict[int, Any], gens: dict[int, Any] | None = None) -> None:
        """Start steps (``calls[slot]`` = action, ``gens[slot]`` its Generation) or, without
        ``gens``, resets (``calls[slot]`` = reset kwargs)."""
        if not calls:
            return
        is_step = gens is not None
        gens = gens or {}
        if futures_venv is not None:
            for slot, arg in calls.items():
                t0 = time.perf_counter()
                span = [t0, float("inf")]
                spans.append(span)
                f: cf.Future[Any] = (
                    futures_venv.submit_step(slot, arg) if is_step else futures_venv.submit_reset(slot, **arg)
                )
                f.add_done_callback(functools.partial(_end_span, span))
                inflight[f] = (slot, gens.get(slot))
            return
        t0 = time.perf_counter()
        results: Mapping[int, Any] = venv.step_some(calls) if is_step else venv.reset_some(calls)
        t1 = time.perf_counter()
        timings.env_s += t1 - t0
        spans.append([t0, t1])
        for slot in calls:
            done_now: cf.Future = cf.Future()
            done_now.set_result(results[slot])
            inflight[done_now] = (slot, gens.get(slot))

    def start_jobs(free: list[int]) -> None:
        requests = {}
        for slot in free:
            if not pending:
                break
            k, job = pending.popleft()
            slots[slot] = (k, Episode(job=job, task={}))
            requests[slot] = {"seed": job.seed, "options": {"task_index": job.task_index}}
        submit(requests)

    def collect() -> None:
        """Take every finished reset/step (in slot order); refill the slots of finished episodes."""
        nonlocal n_steps
        while finished := sorted((inflight[f][0], f) for f in list(inflight) if f.done()):
            freed = []
            for slot, f in finished:
                _, gen = inflight.pop(f)
                outwaited.discard(f)
                k, ep = slots[slot]
                if gen is None:
                    o, info = f.result()
                    ep.task = dict(info.get("task", {}))
                    ready[slot] = o
                    continue
                o, _reward, terminated, truncated, info = f.result()
                n_steps += 1
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
                if terminated or truncated:
                    ep.lost = bool(info.get("env_lost"))
                    ep.metrics = dict(info.get("episode_metrics", {}))
                    ep.answer = info.get("final_answer")
                    if k < keep_logs:
                        ep.log = venv.episode(slot)
                    done[k] = ep
                    bar.update(1)
                    del slots[slot]
                    freed.append(slot)
                else:
                    ready[slot] = o
            start_jobs(freed)  # these resets may be done at once (always, on a synchronous venv)
            show_progress()

    def wait_env(futures: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        cf.wait(futures, **kwargs)
        timings.env_s += time.perf_counter() - t0

    try:
        start_jobs(list(range(num_envs)))
        while True:
            collect()
            if not slots:
                break
            if not ready:  # nothing to generate for: wait for the first cell, take all done by then
                assert inflight, "every running episode's slot is ready or in flight"
                wait_env(list(inflight), return_when=cf.FIRST_COMPLETED)
                continue
            hopeful = [f for f in inflight if f not in outwaited]
            wait_s = last_generate_s if batch_wait_s is None else batch_wait_s
            if wait_s > 0 and hopeful:  # let the other cells join the batch, if they are quick
                wait_env(hopeful, timeout=wait_s)
                outwaited.update(f for f in hopeful if not f.done())
                collect()
            active = sorted(ready)
            t0 = time.perf_counter()
            gens = backend.generate([ready.pop(s) for s in active])
            last_generate_s = time.perf_counter() - t0
            timings.generate_s += last_generate_s
            timings.gen_tokens += sum(len(g.response_ids) for g in gens)
            submit(
                {s: g.text for s, g in zip(active, gens, strict=True)}, dict(zip(active, gens, strict=True))
            )
    finally:
        bar.close()
    timings.env_busy_s = _union_length(spans, time.perf_counter())
    return [done[k] for k in range(len(jobs))], timings
