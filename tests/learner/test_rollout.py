"""``run_episodes`` on the real notebook env: a slow cell holds up only its own episode.

The vector env's futures let the other episodes generate and step around a cell that sleeps; the
episodes that come back are the ones synchronous rounds give (same order, actions, rewards, outputs).
"""

from __future__ import annotations

import time

import pytest

from l0_learner.backends import Generation
from l0_learner.envs import FutureVectorEnv, IndexedVectorEnv, SequentialVectorEnv, make_vector_env
from l0_learner.rollout import Job, eta_seconds, run_episodes

SLOW_S = 3.0
MAX_STEPS = 4
N = 4
TASKS = [
    {"id": f"t{i}", "question": f"What is rollout test number {i}?", "answers": [str(i)]} for i in range(N)
]
SLOW = f"<think>This one takes a while.</think><code>import time; time.sleep({SLOW_S}); print('slow')</code>"


def fast(i: int, step: int) -> str:
    return f"<think>Quick step.</think><code>print({i} * 100 + {step})</code>"


class ScriptedBackend:
    """Fixed actions by (episode, step); episode 0's first cell sleeps. Records when it was called."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s  # a stand-in for the time a real model takes
        self.calls: list[tuple[float, list[tuple[int, int]]]] = []

    def generate(self, conversations):
        rows, out = [], []
        for conv in conversations:
            i = int(conv[1]["content"].split("rollout test number ")[1].split("?")[0])
            step = sum(m["role"] == "assistant" for m in conv)
            rows.append((i, step))
            out.append(Generation(text=SLOW if (i, step) == (0, 0) else fast(i, step)))
        time.sleep(self.delay_s)
        self.calls.append((time.perf_counter(), rows))
        return out

    def called_at(self, row: tuple[int, int]) -> float:
        return next(t for t, rows in self.calls if row in rows)


def summary(episodes) -> list:
    """What must not depend on the schedule: everything but timings."""
    return [
        (
            ep.job,
            ep.task["question"],
            [(s.action, s.components, s.cell_status) for s in ep.steps],
            {k: v for k, v in ep.metrics.items()},
            [st.observation for st in ep.log.steps] if ep.log is not None else None,
        )
        for ep in episodes
    ]


@pytest.fixture(scope="module")
def venv():
    env = make_vector_env(N, tasks=TASKS, max_steps=MAX_STEPS)
    yield env
    env.close()


def test_a_slow_cell_does_not_hold_up_the_other_episodes(venv) -> None:
    assert isinstance(venv, FutureVectorEnv), "the notebook vector env has the future API"
    jobs = [Job(task_index=i, seed=i) for i in range(N)]
    backend = ScriptedBackend()
    t0 = time.perf_counter()
    episodes, timings = run_episodes(backend, venv, jobs, num_envs=N, keep_logs=N)
    wall = time.perf_counter() - t0
    slow_back = backend.called_at((0, 1))  # episode 0's second action: its slow cell is back
    for i in range(1, N):
        last = backend.called_at((i, MAX_STEPS - 1))
        assert last < slow_back, f"episode {i} waited for the slow cell"
    assert slow_back - backend.called_at((0, 0)) >= SLOW_S
    assert [ep.job.task_index for ep in episodes] == list(range(N))
    assert all(len(ep.steps) == MAX_STEPS and ep.metrics["length"] == MAX_STEPS for ep in episodes)
    assert episodes[0].log.steps[0].outputs[0].text.strip() == "slow"
    assert episodes[2].log.steps[3].outputs[0].text.strip() == "203"
    # The env was busy for at least the sleep; part of that ran while the others generated.
    assert timings.env_busy_s >= SLOW_S and timings.env_busy_s <= wall
    assert timings.overlap_s > 0 and timings.env_s < timings.env_busy_s

    sync_backend = ScriptedBackend()
    sync_episodes, sync_timings = run_episodes(
        sync_backend, venv, jobs, num_envs=N, keep_logs=N, overlap=False
    )
    assert summary(sync_episodes) == summary(episodes)
    # Synchronous rounds: every step waits for the slowest cell, and nothing overlaps.
    assert [len(rows) for _, rows in sync_backend.calls] == [N] * MAX_STEPS
    assert sync_backend.called_at((1, MAX_STEPS - 1)) > sync_backend.called_at((0, 1))
    assert sync_timings.overlap_s == pytest.approx(0.0, abs=1e-6)


def test_slots_are_refilled_and_the_fallback_env_gives_the_same_episodes(venv) -> None:
    """More jobs than slots, and a venv without futures (SequentialVectorEnv): same episodes."""
    jobs = [Job(task_index=i % N, seed=10 + i, group=i // 2) for i in range(6)]

    class NoSleep(ScriptedBackend):
        def generate(self, conversations):
            gens = super().generate(conversations)
            return [Generation(text=g.text.replace(f"time.sleep({SLOW_S})", "time.sleep(0.3)")) for g in gens]

    episodes, _ = run_episodes(NoSleep(0.0), venv, jobs, num_envs=3, keep_logs=6, batch_wait_s=0.0)
    import gymnasium as gym

    import l0_env

    seq = SequentialVectorEnv([lambda: gym.make(l0_env.ENV_ID, tasks=TASKS, max_steps=MAX_STEPS)] * 2)
    try:
        assert isinstance(seq, IndexedVectorEnv) and not isinstance(seq, FutureVectorEnv)
        seq_episodes, seq_timings = run_episodes(
            NoSleep(0.0), seq, jobs, num_envs=2, keep_logs=6, progress="sequential"
        )
    finally:
        seq.close()
    assert [ep.job for ep in episodes] == jobs
    assert summary(seq_episodes) == summary(episodes)
    assert seq_timings.env_s == pytest.approx(seq_timings.env_busy_s)


def test_the_hf_backend_gives_the_same_episode_structure(venv, tiny_policy) -> None:
    """The tiny real model (greedy): overlapped and synchronous runs give the same episode shapes."""
    from l0_learner.backends.hf import HFBackend

    model, tok = tiny_policy
    backend = HFBackend(model, tok, max_new_tokens=8, temperature=0.0)
    jobs = [Job(task_index=i, seed=i) for i in range(3)]  # 3 jobs on 2 slots: one slot is refilled
    runs = {}
    for overlap in (True, False):
        runs[overlap] = run_episodes(backend, venv, jobs, num_envs=2, overlap=overlap)
    for episodes, timings in runs.values():
        assert [ep.job for ep in episodes] == jobs
        assert timings.gen_tokens == sum(len(s.response_ids) for ep in episodes for s in ep.steps) > 0
        assert timings.generate_s > 0 and timings.env_busy_s > 0
        for ep in episodes:
            assert ep.metrics["length"] == len(ep.steps) >= 1
            assert all(len(s.response_ids) == len(s.logprobs) > 0 for s in ep.steps)
            assert all(s.finish_reason in ("stop", "eos", "length") for s in ep.steps)
    (a, _), (b, _) = runs[True], runs[False]
    assert [len(ep.steps) for ep in a] == [len(ep.steps) for ep in b]
    assert [ep.steps[0].prompt_ids for ep in a] == [ep.steps[0].prompt_ids for ep in b]
    assert [ep.task for ep in a] == [ep.task for ep in b]


def test_the_time_left_waits_for_a_first_wave_and_uses_the_mean_rate() -> None:
    """8 slots, 64 episodes of 60 s each: the first ends at 60 s and the other 7 right after. The
    old bar extrapolated from the first one: 63 × 60 s = 63 min left, for a run of 8 minutes."""
    assert eta_seconds(1, 64, 60.0, slots=8) is None
    assert eta_seconds(7, 64, 61.0, slots=8) is None
    assert eta_seconds(8, 64, 62.0, slots=8) == pytest.approx(56 * 62.0 / 8)  # ~7 min
    assert eta_seconds(2, 3, 10.0, slots=8) is None, "fewer jobs than slots: they all run at once"
    assert eta_seconds(64, 64, 480.0, slots=8) == 0.0


def test_a_venv_without_the_protocol_is_a_clear_error() -> None:
    class StepOnly:
        num_envs = 1

        def step_some(self, actions):
            return {}

    with pytest.raises(TypeError, match="IndexedVectorEnv"):
        run_episodes(ScriptedBackend(), StepOnly(), [Job(0, 0)], num_envs=1)
