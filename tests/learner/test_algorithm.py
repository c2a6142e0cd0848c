"""AgenticPG on the tiny model: KL, weight updates, dynamic sampling, learning, GRPO, callbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from l0_learner.algorithms import GRPO, AgenticPG, Callback
from l0_learner.algorithms.batch import Sample
from l0_learner.policy import response_logprobs
from l0_learner.rollout import Episode, Job, StepSample

from .toy_configs import toy_config


def make_algo(tiny_path: str, cls=AgenticPG, **overrides) -> AgenticPG:
    return cls(toy_config(tiny_path, **overrides))


def _kl_to_ref(algo: AgenticPG, episodes: list[Episode]) -> float:
    prompts = [s.prompt_ids for ep in episodes for s in ep.steps]
    responses = [s.response_ids for ep in episodes for s in ep.steps]
    pad = algo.tokenizer.pad_token_id
    with torch.no_grad():
        logp, mask = response_logprobs(algo.model, prompts, responses, pad_id=pad)
        ref = algo._ref_logprobs(prompts, responses)
    kl = torch.exp(ref - logp) - (ref - logp) - 1
    return float((kl * mask).sum() / mask.sum())


def test_kl_is_zero_against_itself_then_positive_and_weights_change(tiny_path) -> None:
    algo = make_algo(tiny_path)
    before = {n: p.detach().clone() for n, p in algo.model.named_parameters()}
    episodes, _, _ = algo.collect()
    assert _kl_to_ref(algo, episodes) == 0.0
    metrics = algo.update(episodes, algo.advantages(episodes))
    assert metrics["losses/kl"] == 0.0 and metrics["perf/train_tokens"] > 0
    assert metrics["charts/logprob_mismatch"] < 1e-4
    changed = [n for n, p in algo.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before), f"unchanged parameters: {set(before) - set(changed)}"
    assert all(torch.equal(p, before[n]) for n, p in algo.ref.named_parameters()), (
        "the reference must stay frozen"
    )
    assert _kl_to_ref(algo, episodes) > 0.0
    metrics = algo.update(episodes, algo.advantages(episodes))
    assert metrics["losses/kl"] > 0.0
    algo.close()


def test_every_token_of_a_step_gets_its_advantage_and_micro_batches_respect_the_budget(tiny_path) -> None:
    algo = make_algo(tiny_path, micro_batch_tokens=40)
    samples = [Sample([1] * n, [2] * 3, [0.0] * 3, 1.0) for n in (5, 30, 10, 2, 17)]
    batches = algo.micro_batches(samples)
    assert sorted(len(s.prompt_ids) for b in batches for s in b) == [2, 5, 10, 17, 30]
    for b in batches:
        assert len(b) == 1 or len(b) * max(s.tokens for s in b) <= 40
    # Zero advantages and no KL: the loss is zero, so the weights do not move (grad only from A).
    algo0 = make_algo(tiny_path, kl_coef=0.0)
    eps, _, _ = algo0.collect()
    before = [p.detach().clone() for p in algo0.model.parameters()]
    algo0.update(eps, [[0.0] * len(ep.steps) for ep in eps])
    assert all(torch.equal(a, b) for a, b in zip(before, algo0.model.parameters(), strict=True))
    algo.close()
    algo0.close()


def _fake_group(em: list[float], gid: int) -> list[Episode]:
    step = dict(format=1.0, code=1.0, qa=None)
    return [
        Episode(job=Job(0, 0, gid), task={}, steps=[StepSample([1], [2], [0.0], "a", dict(step, qa=e, em=e))])
        for e in em
    ]


def test_episodes_lost_with_their_env_node_are_left_out_of_the_batch_not_scored(
    tiny_path, monkeypatch
) -> None:
    """An episode whose env died with its Ray node (``info["env_lost"]``) is not a failure of the
    policy: it is counted and dropped; its group keeps the episodes that finished."""
    import l0_learner.algorithms.agentic_pg as mod

    algo = make_algo(tiny_path, dynamic_sampling=False, questions_per_batch=2, group_size=3)

    def fake_run(backend, venv, jobs, *, num_envs, keep_logs=0, overlap=True, progress=None):
        a = _fake_group([1, 0, 0], jobs[0].group)
        b = _fake_group([0, 0, 1], jobs[3].group)
        a[1].lost = b[0].lost = b[1].lost = True  # a lost episode scores 0, like a wrong answer
        return [*a, *b], mod.RolloutTimings()

    monkeypatch.setattr(mod, "run_episodes", fake_run)
    episodes, stats, _ = algo.collect()
    assert stats["sampling/lost_episodes"] == 3 and stats["sampling/episodes"] == 3
    assert not any(ep.lost for ep in episodes) and len(episodes) == 3
    assert [ep.job.group for ep in episodes] == [0, 0, 1]
    assert stats["charts/em_sampled"] == 2 / 3, "the success rate is of the episodes that ran to the end"
    advantages = algo.advantages(episodes)
    assert len(advantages) == 3
    algo.close()


def test_dynamic_sampling_drops_uniform_groups_and_refills(tiny_path, monkeypatch) -> None:
    import l0_learner.algorithms.agentic_pg as mod

    algo = make_algo(
        tiny_path,
        dynamic_sampling=True,
        questions_per_batch=3,
        group_size=2,
        max_sampling_rounds=3,
        drop_prob=1.0,
    )
    rounds: list[int] = []
    # Round 1: 3 groups, 2 uniform (dropped at p=1); round 2 asks for 2 more, 1 is mixed; round 3 asks for 1.
    plan = [[[1, 1], [0, 1], [0, 0]], [[1, 0], [1, 1]], [[0, 0]]]

    def fake_run(backend, venv, jobs, *, num_envs, keep_logs=0, overlap=True, progress=None):
        k = len(rounds)
        rounds.append(len(jobs))
        groups = [_fake_group(em, jobs[2 * i].group) for i, em in enumerate(plan[k])]
        return [ep for g in groups for ep in g], mod.RolloutTimings()

    monkeypatch.setattr(mod, "run_episodes", fake_run)
    episodes, stats, _ = algo.collect()
    assert rounds == [6, 4, 2], "each round samples as many questions as are missing"
    # The success rate before the filter counts every sampled episode: 6 of 12 right.
    assert stats == {
        "sampling/rounds": 3,
        "sampling/dropped_groups": 4,
        "sampling/episodes": 12,
        "sampling/lost_episodes": 0,
        "charts/em_sampled": 0.5,
        "charts/f1_sampled": 0.0,
    }
    # Two mixed groups were kept; the batch is filled with the first dropped group.
    assert [[ep.em for ep in episodes[i : i + 2]] for i in range(0, 6, 2)] == [[0, 1], [1, 0], [1, 1]]
    algo.close()


def test_learning_works_on_a_text_reward_env(tiny_path) -> None:
    """The reward is the share of 'a' in the sampled text: mean reward must rise clearly."""
    algo = make_algo(tiny_path)
    rewards: list[float] = []

    class Record(Callback):
        def on_iteration_end(self, a, metrics):
            rewards.append(metrics["charts/reward"])

    algo.learn(30, callbacks=[Record()])
    first, last = float(np.mean(rewards[:5])), float(np.mean(rewards[-5:]))
    assert last > first + 0.2, (
        f"reward did not rise: {first:.3f} -> {last:.3f} ({[round(r, 2) for r in rewards]})"
    )
    algo.close()


def test_grpo_plugs_in_and_callbacks_can_stop(tiny_path) -> None:
    algo = make_algo(tiny_path, cls=GRPO, algorithm="grpo")
    seen = []

    class StopAfterTwo(Callback):
        def on_iteration_end(self, a, metrics):
            seen.append(metrics)
            return len(seen) < 2

    algo.learn(10, callbacks=[StopAfterTwo()])
    assert algo.iteration == 2 and len(seen) == 2
    for key in ("charts/reward", "losses/pg", "losses/kl", "perf/gen_tokens_per_s", "charts/em"):
        assert key in seen[0]
    eps, _, _ = algo.collect()
    adv = algo.advantages(eps)
    for g in range(0, len(eps), 4):
        assert sum(a[0] for a in adv[g : g + 4]) == pytest.approx(0.0, abs=1e-5)
    algo.close()


def test_lora_trains_only_adapters_and_uses_the_base_as_reference(tiny_path, tmp_path) -> None:
    pytest.importorskip("peft")
    from l0_learner.runs import RunDir

    algo = AgenticPG(toy_config(tiny_path, lora_r=4, lora_alpha=8), run=RunDir(tmp_path, tensorboard=False))
    assert algo.ref is None
    trainable = {n for n, p in algo.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    frozen = {n: p.detach().clone() for n, p in algo.model.named_parameters() if not p.requires_grad}
    episodes, _, _ = algo.collect()
    assert _kl_to_ref(algo, episodes) == 0.0
    algo.update(episodes, algo.advantages(episodes))
    algo.update(episodes, algo.advantages(episodes))
    assert _kl_to_ref(algo, episodes) > 0.0
    assert all(torch.equal(p, frozen[n]) for n, p in algo.model.named_parameters() if n in frozen)
    algo.iteration = 1
    path = algo.save()
    from safetensors.torch import load_file

    assert set(load_file(str(path / "model.safetensors"))) == trainable, "checkpoints hold only the adapters"
    algo.close()
