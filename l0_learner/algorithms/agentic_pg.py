"""The agentic policy gradient of L0 (arXiv 2506.23667) as an SB3-style class, plus a GRPO option.

What ``AgenticPG`` does, per iteration:

1. Samples ``questions_per_batch`` training questions and runs ``group_size`` episodes of each
   through the env (the vector env when available), keeping every step's prompt ids, sampled
   response ids and their logprobs (token-in/token-out).
2. Dynamic sampling: a group whose answers (EM) are all right or all wrong is dropped with
   probability ``drop_prob``; more questions are sampled to refill the batch, for at most
   ``max_sampling_rounds`` rounds, after which dropped groups are taken back to fill it.
3. Step rewards exactly as L0 allocates them: ``0.1·format_t/T + 0.1·code_t/T`` every step and
   ``0.8·qa`` on the last step, ``qa = 0.9·EM + 0.1·has_answer``.
4. REINFORCE++ step returns ``G_t = r_t + γ·G_{t+1}`` (γ = 0.95, no critic), whitened over all
   steps of the batch. Every token of a step's action gets that step's advantage.
5. Loss = token-mean over all action tokens of the batch of ``−A·logπ`` plus
   ``kl_coef · k3(π, π_ref)`` (k3 = ``exp(ref−logp) − (ref−logp) − 1``, coefficient 0.001) against
   the frozen initial policy. One AdamW step with global-norm clipping; micro-batches by token
   budget with gradient accumulation.

What it simplifies:

- Strictly on-policy, one update per batch, so there is no ratio and no clipping (the ratio would be
  exactly 1; L0's PPO-style clip never binds in this regime). The sampler's logprobs are kept to
  measure the sampler/trainer mismatch (``charts/logprob_mismatch``), not to correct for it.
- Observation (tool output) tokens are never trained on: each step is its own sample whose
  response is only the action; the context is the prompt.
- Rollouts overlap generation with running cells (see :mod:`l0_learner.rollout`), but there is
  no separate inference engine: generation and training take turns on one model.
- With LoRA the reference policy is the base model with the adapters switched off.
- ``prompt_grad=False`` (the CPU presets) runs each prompt under ``no_grad`` and trains on the
  action tokens given that cached context: identical logprobs and loss value, but the gradient
  skips the path through the prompt's keys/values. ``prompt_grad=True`` is the exact gradient.

``GRPO`` swaps step 4 for a group-normalised trajectory reward shared by all steps of an episode.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from l0_env.rewards import RewardWeights

from ..backends.hf import HFBackend
from ..config import Config
from ..policy import load_policy, pick_device, response_logprobs
from ..rollout import Episode, Job, RolloutTimings, run_episodes
from .advantages import agentic_pg_advantages, dynamic_sampling_filter, grpo_advantages, k3_kl


class Callback:
    """Hooks called by ``learn``; return False from ``on_iteration_end`` to stop training."""

    def on_training_start(self, algo: AgenticPG) -> None: ...

    def on_iteration_end(self, algo: AgenticPG, metrics: dict[str, Any]) -> bool | None: ...

    def on_training_end(self, algo: AgenticPG) -> None: ...


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def env_kwargs(cfg: Config, tokenizer: Any) -> dict[str, Any]:
    """Constructor arguments of each env for this config."""
    if cfg.env == "toy":
        return {"max_steps": cfg.max_steps}
    return {
        "tasks": cfg.tasks,
        "split": cfg.split,
        "sandbox": cfg.sandbox,
        "max_steps": cfg.max_steps,
        "cell_timeout": cfg.cell_timeout,
        "max_context_tokens": cfg.max_context_tokens,
        "count_tokens": TokenCounter(tokenizer),
        "reward_weights": reward_weights(cfg),
    }


def reward_weights(cfg: Config) -> RewardWeights:
    return RewardWeights(qa=cfg.qa_weight, format=cfg.format_weight, code=cfg.code_weight)


class TokenCounter:
    """The env's context budget counted in the policy's own tokens (picklable)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def count_tasks(cfg: Config) -> int:
    if cfg.env == "toy":
        from ..toy_env import TextRewardEnv

        return len(TextRewardEnv().tasks)
    from l0_env.tasks import load_tasks

    return len(load_tasks(cfg.tasks, split=cfg.split))


class AgenticPG:
    """L0's agentic policy gradient (see the module docstring for what it does and skips).

    Args:
        cfg: The config.
        model, tokenizer: A loaded policy (default: ``load_policy(cfg.model)``).
        venv: An indexed vector env (default: built from ``cfg``); closed by :meth:`close`.
        run: A :class:`l0_learner.runs.RunDir` for metrics, notebooks and checkpoints (optional).
    """

    def __init__(
        self, cfg: Config, *, model: Any = None, tokenizer: Any = None, venv: Any = None, run: Any = None
    ) -> None:
        from ..envs import make_vector_env

        self.cfg = cfg
        seed_everything(cfg.seed)
        if model is None:
            model, tokenizer = load_policy(cfg.model, device=cfg.device, dtype=cfg.dtype)
        self.device = pick_device(cfg.device)
        self.tokenizer = tokenizer
        self.model = self._wrap(model)
        self.ref = None
        if cfg.kl_coef > 0 and cfg.lora_r == 0:
            self.ref = copy.deepcopy(self.model).eval().requires_grad_(False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.backend = HFBackend(
            self.model,
            tokenizer,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            batch_size=cfg.num_envs,
        )
        self.venv = (
            venv
            if venv is not None
            else make_vector_env(cfg.num_envs, env=cfg.env, **env_kwargs(cfg, tokenizer))
        )
        self.n_tasks = count_tasks(cfg)
        self.weights = reward_weights(cfg)
        self.rng = np.random.default_rng(cfg.seed)
        self.iteration = 0
        self._order: list[int] = []
        self._pos = 0
        self._groups_seen = 0
        self.run = run

    def _wrap(self, model: Any) -> Any:
        if self.cfg.lora_r > 0:
            try:
                from peft import LoraConfig, get_peft_model
            except ImportError as exc:
                raise ImportError("lora_r > 0 needs peft: pip install 'l0-gym[lora]'") from exc
            config = LoraConfig(
                r=self.cfg.lora_r, lora_alpha=self.cfg.lora_alpha, target_modules="all-linear"
            )
            model = get_peft_model(model, config)
        if self.cfg.gradient_checkpointing and self.device.type == "cuda":
            model.gradient_checkpointing_enable()
            model.config.use_cache = True  # generate still uses the cache; checkpointing only in training
        return model

    # -- data ------------------------------------------------------------------------------------

    def next_questions(self, k: int) -> list[int]:
        """The next ``k`` task indices: a fresh shuffle of all training questions per epoch."""
        out = []
        while len(out) < k:
            if self._pos >= len(self._order):
                self._order = self.rng.permutation(self.n_tasks).tolist()
                self._pos = 0
            out.append(self._order[self._pos])
            self._pos += 1
        return out

    def collect(self) -> tuple[list[Episode], dict[str, Any], RolloutTimings]:
        """Roll out a batch of question groups, with dynamic sampling."""
        cfg = self.cfg
        kept: list[list[Episode]] = []
        dropped: list[list[Episode]] = []
        timings = RolloutTimings()
        rounds = 0
        for _ in range(max(1, cfg.max_sampling_rounds)):
            need = cfg.questions_per_batch - len(kept)
            if need <= 0:
                break
            rounds += 1
            jobs = []
            for q in self.next_questions(need):
                gid = self._groups_seen
                self._groups_seen += 1
                jobs += [Job(q, int(self.rng.integers(2**31)), gid) for _ in range(cfg.group_size)]
            keep_logs = cfg.notebooks_per_iteration if rounds == 1 else 0
            episodes, t = run_episodes(
                self.backend,
                self.venv,
                jobs,
                num_envs=cfg.num_envs,
                keep_logs=keep_logs,
                overlap=cfg.rollout_overlap,
                progress=f"rollouts (round {rounds})" if cfg.progress else None,
            )
            timings.add(t)
            groups = [episodes[i : i + cfg.group_size] for i in range(0, len(episodes), cfg.group_size)]
            if cfg.dynamic_sampling:
                correct = [[ep.em >= 1.0 for ep in g] for g in groups]
                keep_idx, drop_idx = dynamic_sampling_filter(correct, self.rng, cfg.drop_prob)
            else:
                keep_idx, drop_idx = list(range(len(groups))), []
            kept += [groups[i] for i in keep_idx]
            dropped += [groups[i] for i in drop_idx]
        n_dropped = len(dropped)
        while len(kept) < cfg.questions_per_batch and dropped:
            kept.append(dropped.pop(0))
        stats = {"sampling/rounds": rounds, "sampling/dropped_groups": n_dropped}
        return [ep for g in kept for ep in g], stats, timings

    def advantages(self, episodes: Sequence[Episode]) -> list[list[float]]:
        comps = [[s.components for s in ep.steps] for ep in episodes]
        return agentic_pg_advantages(
            comps, gamma=self.cfg.gamma, weights=self.weights, normalize=self.cfg.whiten
        )

    # -- training --------------------------------------------------------------------------------

    def micro_batches(self, samples: list[tuple]) -> list[list[tuple]]:
        """Group samples (sorted by length) so rows × padded length stays within the token budget."""
        order = sorted(samples, key=lambda s: len(s[0]) + len(s[1]))
        batches: list[list[tuple]] = []
        current: list[tuple] = []
        for s in order:
            length = len(s[0]) + len(s[1])
            if current and (len(current) + 1) * length > self.cfg.micro_batch_tokens:
                batches.append(current)
                current = []
            current.append(s)
        if current:
            batches.append(current)
        return batches

    def _ref_logprobs(self, prompts: list, responses: list) -> torch.Tensor:
        # No gradient here, so the cached-prompt path (shared system-prompt prefix computed once)
        # gives the same values for less work.
        kwargs = {
            "pad_id": self.tokenizer.pad_token_id,
            "temperature": self.cfg.temperature,
            "prompt_grad": False,
        }
        with torch.no_grad():
            if self.ref is not None:
                return response_logprobs(self.ref, prompts, responses, **kwargs)[0]
            with self.model.disable_adapter():
                return response_logprobs(self.model, prompts, responses, **kwargs)[0]

    def update(self, episodes: Sequence[Episode], advantages: Sequence[Sequence[float]]) -> dict[str, float]:
        """One policy-gradient step on all steps of ``episodes`` (token-mean loss)."""
        cfg = self.cfg
        samples = [
            (s.prompt_ids, s.response_ids, s.logprobs, a)
            for ep, advs in zip(episodes, advantages, strict=True)
            for s, a in zip(ep.steps, advs, strict=True)
            if s.response_ids
        ]
        total_tokens = sum(len(s[1]) for s in samples)
        sums = {"pg": 0.0, "kl": 0.0, "mismatch": 0.0}
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        use_kl = cfg.kl_coef > 0
        for batch in self.micro_batches(samples) if samples else []:
            prompts, responses = [b[0] for b in batch], [b[1] for b in batch]
            logp, mask = response_logprobs(
                self.model,
                prompts,
                responses,
                pad_id=self.tokenizer.pad_token_id,
                temperature=cfg.temperature,
                prompt_grad=cfg.prompt_grad,
            )
            adv = torch.tensor([b[3] for b in batch], dtype=logp.dtype, device=logp.device).unsqueeze(1)
            old = torch.zeros_like(logp)
            for i, b in enumerate(batch):
                if b[2]:
                    old[i, logp.shape[1] - len(b[2]) :] = torch.tensor(b[2], dtype=logp.dtype)
            # exp(logp − logp.detach()) is 1 in value; its gradient is ∇logp (REINFORCE, on-policy).
            pg = -adv * torch.exp(logp - logp.detach())
            loss_tok = pg
            if use_kl:
                kl = k3_kl(logp, self._ref_logprobs(prompts, responses))
                loss_tok = pg + cfg.kl_coef * kl
                sums["kl"] += float((kl.detach() * mask).sum())
            loss = (loss_tok * mask).sum() / max(1, total_tokens)
            loss.backward()
            sums["pg"] += float((pg.detach() * mask).sum())
            sums["mismatch"] += float(((logp.detach() - old).abs() * mask).sum())
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)) if samples else 0.0
        if samples:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        n = max(1, total_tokens)
        return {
            "losses/pg": sums["pg"] / n,
            "losses/kl": sums["kl"] / n,
            "losses/total": (sums["pg"] + cfg.kl_coef * sums["kl"]) / n,
            "charts/grad_norm": grad_norm,
            "charts/logprob_mismatch": sums["mismatch"] / n,
            "perf/train_tokens": float(total_tokens),
        }

    # -- the loop ----------------------------------------------------------------------------------

    def train_iteration(self) -> dict[str, Any]:
        """Collect a batch, compute advantages, update once; returns the iteration's metrics."""
        t0 = time.perf_counter()
        episodes, stats, timings = self.collect()
        advantages = self.advantages(episodes)
        t1 = time.perf_counter()
        metrics = self.update(episodes, advantages)
        train_s = time.perf_counter() - t1
        self.iteration += 1
        metrics.update(stats)
        metrics.update(episode_metrics(episodes, self.weights))
        gen_tok = timings.gen_tokens
        metrics.update(
            {
                "perf/generate_s": timings.generate_s,
                "perf/env_s": timings.env_s,
                "perf/env_busy_s": timings.env_busy_s,
                "perf/train_s": train_s,
                "perf/iteration_s": time.perf_counter() - t0,
                "perf/gen_tokens_per_s": gen_tok / timings.generate_s if timings.generate_s else 0.0,
                "perf/train_tokens_per_s": metrics["perf/train_tokens"] / train_s if train_s else 0.0,
            }
        )
        if self.run is not None:
            for k, ep in enumerate(e for e in episodes if e.log is not None):
                if k >= self.cfg.notebooks_per_iteration:
                    break
                self.run.save_episode(ep.log, f"iter_{self.iteration:06d}_ep{k}")
        return metrics

    def learn(
        self, total_iterations: int, callbacks: Sequence[Callback] = (), progress: bool = False
    ) -> AgenticPG:
        """Train until ``self.iteration == total_iterations`` (counts resumed iterations too).

        With a run directory, what it logged after ``self.iteration`` (an earlier run stopped
        after its last checkpoint) is dropped first, and each iteration's metrics line and
        checkpoint are written as one commit that a stop signal does not split
        (:mod:`l0_learner.interrupt`).
        """
        from tqdm.auto import tqdm

        from ..interrupt import critical

        if self.run is not None:
            dropped = self.run.rollback_to(self.iteration)
            if dropped:
                print(
                    f"metrics.jsonl: dropped {dropped} line(s) after iteration {self.iteration} "
                    "(not in the checkpoint; redone now)",
                    flush=True,
                )
        for cb in callbacks:
            cb.on_training_start(self)
        bar = tqdm(total=total_iterations, initial=self.iteration, disable=not progress, desc="RL", unit="it")
        try:
            while self.iteration < total_iterations:
                metrics = self.train_iteration()
                if self.run is not None:
                    with critical():
                        self.run.log_metrics(self.iteration, metrics)
                        last = self.iteration == total_iterations
                        if self.iteration % max(1, self.cfg.save_every) == 0 or last:
                            self.save()
                bar.update(1)
                bar.set_postfix(
                    reward=f"{metrics['charts/reward']:.3f}",
                    em=f"{metrics['charts/em']:.2f}",
                    steps=f"{metrics['charts/steps_per_episode']:.1f}",
                    tok_s=f"{metrics['perf/gen_tokens_per_s']:.0f}",
                )
                if any(cb.on_iteration_end(self, metrics) is False for cb in callbacks):
                    break
        finally:
            bar.close()
        for cb in callbacks:
            cb.on_training_end(self)
        return self

    # -- state ------------------------------------------------------------------------------------

    def trainer_state(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "order": self._order,
            "pos": self._pos,
            "groups_seen": self._groups_seen,
            "numpy_rng": self.rng.bit_generator.state,
        }

    def save(self) -> Any:
        return self.run.save_checkpoint(
            self.iteration,
            model=self.model,
            optimizer=self.optimizer,
            trainer_state=self.trainer_state(),
            keep=self.cfg.keep_checkpoints,
        )

    def load(self, path: Any) -> None:
        """Continue from a checkpoint: weights, optimizer, RNGs, question order and position."""
        from ..runs import load_checkpoint

        state = load_checkpoint(path, model=self.model, optimizer=self.optimizer)
        self.iteration, self._order, self._pos = state["iteration"], state["order"], state["pos"]
        self._groups_seen = state["groups_seen"]
        self.rng.bit_generator.state = state["numpy_rng"]

    def close(self) -> None:
        self.venv.close()


class GRPO(AgenticPG):
    """GRPO-style advantages: each episode's total reward, normalised within its question group."""

    def advantages(self, episodes: Sequence[Episode]) -> list[list[float]]:
        comps = [[s.components for s in ep.steps] for ep in episodes]
        return grpo_advantages(comps, [ep.job.group for ep in episodes], weights=self.weights)


ALGORITHMS = {"agentic_pg": AgenticPG, "grpo": GRPO}


def episode_metrics(episodes: Sequence[Episode], weights: RewardWeights | None = None) -> dict[str, float]:
    """Batch means: L0 trajectory reward, EM/F1/has-answer, steps, well-formed and code-error rates."""
    from .advantages import step_rewards

    if not episodes:
        return {"charts/reward": 0.0, "charts/em": 0.0, "charts/steps_per_episode": 0.0}
    steps = [s for ep in episodes for s in ep.steps]
    errors = [s for s in steps if s.cell_status not in (None, "ok")]
    return {
        "charts/reward": float(
            np.mean([math.fsum(step_rewards([s.components for s in ep.steps], weights)) for ep in episodes])
        ),
        "charts/em": float(np.mean([ep.em for ep in episodes])),
        "charts/f1": float(np.mean([float(ep.final.get("f1") or 0.0) for ep in episodes])),
        "charts/has_answer": float(np.mean([float(ep.final.get("has_answer") or 0.0) for ep in episodes])),
        "charts/steps_per_episode": float(np.mean([len(ep.steps) for ep in episodes])),
        "charts/well_formed_rate": float(np.mean([float(s.components.get("format") or 0.0) for s in steps])),
        "charts/code_error_rate": len(errors) / max(1, len(steps)),
        "charts/episodes": float(len(episodes)),
    }
