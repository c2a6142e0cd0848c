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
5. Loss = token-mean over all action tokens of the batch of ``−A·w·logπ`` plus
   ``kl_coef · k3(π, π_ref)`` (k3 = ``exp(ref−logp) − (ref−logp) − 1``, coefficient 0.001) against
   the frozen initial policy. ``w`` is the truncated importance weight of the sampled token,
   ``min(π_trainer/π_sampler, tis_cap)`` (C = 2), detached (TIS, as verl does; see
   :mod:`l0_learner.algorithms.loss`): it corrects for the sampler (vLLM, bfloat16 kernels) and the
   trainer disagreeing on the logprobs. ``tis=False`` sets ``w = 1`` (the uncorrected update). The
   KL term is not weighted. One AdamW step with global-norm clipping; micro-batches by token budget
   with gradient accumulation.
6. Logged per update: ``charts/logprob_mismatch`` (mean ``|logπ_trainer − logπ_sampler|`` per
   token: a stale sampler shows here), ``charts/tis_weight_mean`` (mean weight applied) and
   ``charts/tis_clip_rate`` (share of tokens whose ratio exceeded the cap; measured with the
   correction off too).

Precision: trainable weights and the AdamW state are always float32; ``dtype`` is the compute dtype
(bfloat16 by default on GPU). Full fine-tuning in bfloat16 weights would not learn: an update of
1e-6 on a weight near 0.02 is below one bfloat16 ulp and rounds away. So the model is loaded in
float32 and runs under ``torch.autocast`` (one process, DDP) or FSDP2's ``MixedPrecisionPolicy``
(parameters cast to the compute dtype for the forward, gradients reduced in float32). With LoRA
the frozen base stays in the compute dtype and the adapters are float32.

Several GPUs: under ``torchrun`` the rollouts are split over the ranks by question group and
gathered, the update is data-parallel (DDP or FSDP2); see :mod:`l0_learner.distributed`.

What it simplifies:

- Strictly on-policy, one update per batch, so there is no PPO ratio and no clipping (the ratio to
  the policy that sampled would be exactly 1 up to the sampler/trainer mismatch, which TIS
  corrects; L0's PPO-style clip never binds in this regime).
- Observation (tool output) tokens are never trained on: each step is its own sample whose
  response is only the action; the context is the prompt.
- Rollouts overlap generation with running cells (see :mod:`l0_learner.rollout`). With the ``hf``
  backend generation and training take turns on one model; a backend with weights of its own
  (vLLM) gets the new weights after every update (``backend.sync_weights``).
- With LoRA the reference policy is the base model with the adapters switched off.
- ``prompt_grad=False`` (the CPU presets) runs each prompt under ``no_grad`` and trains on the
  action tokens given that cached context: identical logprobs and loss value, but the gradient
  skips the path through the prompt's keys/values. ``prompt_grad=True`` is the exact gradient.

``GRPO`` swaps step 4 for a group-normalised trajectory reward shared by all steps of an episode.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .. import distributed as D
from ..backends import TrainingBackend
from ..backends.hf import HFBackend
from ..config import Config
from ..envs import count_training_tasks, make_training_env, reward_weights
from ..models import compute_context, load_policy, pick_dtype
from ..packing import pack_by_tokens
from ..policy import response_logprobs
from ..rollout import Episode, Job, RolloutTimings, run_episodes
from .advantages import agentic_pg_advantages, dynamic_sampling_filter, grpo_advantages
from .batch import Sample, episode_metrics, training_samples
from .loss import TokenTerms, token_terms


class Callback:
    """Hooks called by ``learn``; return False from ``on_iteration_end`` to stop training."""

    def on_training_start(self, algo: AgenticPG) -> None: ...

    def on_iteration_end(self, algo: AgenticPG, metrics: dict[str, Any]) -> bool | None: ...

    def on_training_end(self, algo: AgenticPG) -> None: ...


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class AgenticPG:
    """L0's agentic policy gradient (see the module docstring for what it does and skips).

    Args:
        cfg: The config.
        model, tokenizer: A loaded policy (default: ``load_policy(cfg.model)``). For full
            fine-tuning its weights are converted to float32 (see the module docstring).
        venv: An indexed vector env (default: built from ``cfg``); closed by :meth:`close`.
        run: A :class:`l0_learner.runs.RunDir` for metrics, notebooks and checkpoints (optional;
            under torchrun, rank 0's).

    Under ``torchrun`` (a process group initialised, :func:`l0_learner.distributed.init_from_env`)
    every rank builds one with the same config; ``self.model`` is the policy module (sharded in
    place under FSDP), ``self.train_model`` what the training forward goes through (a DDP wrapper
    or ``self.model``).
    """

    def __init__(
        self, cfg: Config, *, model: Any = None, tokenizer: Any = None, venv: Any = None, run: Any = None
    ) -> None:

        self.cfg = cfg
        self.ranks = D.Ranks.current()
        self.device = self.ranks.device(cfg.device)
        seed_everything(cfg.seed)
        full = cfg.lora_r == 0
        fsdp = self.ranks.enabled and cfg.dist_strategy == "fsdp"
        if fsdp and not full:
            raise ValueError(
                "LoRA runs with dist_strategy='ddp' (the adapters are small; the frozen base is "
                "replicated); FSDP is for full fine-tuning"
            )
        self.compute_dtype = compute = pick_dtype(cfg.dtype, self.device)
        if model is None:
            # Full fine-tuning: float32 weights whatever the compute dtype (a bfloat16 weight does
            # not move by 1e-6); LoRA: the frozen base in the compute dtype.
            dtype = "float32" if full else cfg.dtype
            model, tokenizer = load_policy(cfg.model, device=str(self.device), dtype=dtype)
        elif full:
            model = model.to(torch.float32)
        self.tokenizer = tokenizer
        self.model = self._wrap(model)
        # torch.autocast where the weights are float32 and the compute dtype is not; FSDP casts
        # the parameters itself (MixedPrecisionPolicy).
        self.autocast = compute if full and compute != torch.float32 and not fsdp else None
        self.ref = None
        if cfg.kl_coef > 0 and full:
            self.ref = copy.deepcopy(self.model).eval().requires_grad_(False)
            if fsdp:
                D.shard(self.ref, compute)
        self.train_model = D.wrap(self.model, self.ranks, cfg.dist_strategy, compute)
        self.fsdp = D.is_fsdp(self.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if self.ranks.rank > 0:  # each rank samples its own stream (rank 0's is a single process's)
            torch.manual_seed(cfg.seed + self.ranks.rank)
        self.backend = self._make_backend()
        self.venv = venv if venv is not None else make_training_env(cfg, tokenizer)
        self.n_tasks = count_training_tasks(cfg)
        self.weights = reward_weights(cfg)
        self.rng = np.random.default_rng(cfg.seed)
        self.iteration = 0
        self._order: list[int] = []
        self._pos = 0
        self._groups_seen = 0
        self.run = run
        self._saving = self.ranks.broadcast(run is not None)  # rank 0 writes; every rank gathers

    # -- the loop (read first: an iteration is collect → advantages → update) -----------------------

    def train_iteration(self) -> dict[str, Any]:
        """Collect a batch, compute advantages, update once; returns the iteration's metrics."""
        t0 = time.perf_counter()
        episodes, stats, timings = self.collect()
        self.backend.sleep()  # a colocated vLLM engine frees its GPU memory while the trainer steps
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
                "perf/ranks": float(self.ranks.world),
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
        (:mod:`l0_learner.interrupt`). Under torchrun every rank runs this (the checkpoint's
        tensors are gathered from all), rank 0 writes; ``perf/*`` metrics are rank 0's own.
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
        bar = tqdm(
            total=total_iterations,
            initial=self.iteration,
            disable=not progress or not self.ranks.is_main,
            desc="RL",
            unit="it",
        )
        try:
            while self.iteration < total_iterations:
                metrics = self.train_iteration()
                last = self.iteration == total_iterations
                due = self._saving and (self.iteration % max(1, self.cfg.save_every) == 0 or last)
                state = self.checkpoint_state() if due else None
                if self.run is not None:
                    with critical():
                        self.run.log_metrics(self.iteration, metrics)
                        if state is not None:
                            self._write_checkpoint(state)
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

    # -- construction ----------------------------------------------------------------------------

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
            # Non-reentrant: the reentrant variant breaks under DDP and FSDP.
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = True  # generate still uses the cache; checkpointing only in training
        return model

    def _make_backend(self) -> TrainingBackend:
        cfg = self.cfg
        if cfg.backend == "hf":
            return HFBackend(
                self.model,
                self.tokenizer,
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                batch_size=cfg.num_envs,
                autocast=self.autocast,
            )
        if cfg.backend == "vllm":
            from ..backends import vllm

            return vllm.from_config(cfg, self.tokenizer)
        raise ValueError(
            f"backend {cfg.backend!r} cannot train (it returns no token ids): use 'hf' or 'vllm'"
        )

    # -- data ------------------------------------------------------------------------------------

    def next_questions(self, k: int) -> list[int]:
        """The next ``k`` task indices: a fresh shuffle of all training questions per epoch."""
        out: list[int] = []
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
        sampled: list[Episode] = []  # every episode of every round: the policy's success rate
        lost = 0  # episodes whose env node or actor died (RayNotebookVectorEnv): left out
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
            episodes, t = self.rollout(jobs, keep_logs=keep_logs, label=f"rollouts (round {rounds})")
            timings.add(t)
            lost += sum(ep.lost for ep in episodes)
            by_group: dict[int, list[Episode]] = {}
            for ep in episodes:
                if not ep.lost:  # its env's node died: says nothing of the policy, scored as nothing
                    by_group.setdefault(ep.job.group, []).append(ep)
            sampled += [ep for g in by_group.values() for ep in g]
            groups = list(by_group.values())
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
        # Before dynamic sampling: charts/em is of the batch kept, which over-represents mixed groups.
        stats = {
            "sampling/rounds": rounds,
            "sampling/dropped_groups": n_dropped,
            "sampling/episodes": len(sampled),
            "sampling/lost_episodes": lost,
            "charts/em_sampled": float(np.mean([ep.em for ep in sampled])) if sampled else 0.0,
            "charts/f1_sampled": float(np.mean([float(ep.final.get("f1") or 0.0) for ep in sampled]))
            if sampled
            else 0.0,
        }
        return [ep for g in kept for ep in g], stats, timings

    def rollout(
        self, jobs: Sequence[Job], *, keep_logs: int = 0, label: str = "rollouts"
    ) -> tuple[list[Episode], RolloutTimings]:
        """Run ``jobs`` to the end of their episodes, in job order.

        Under torchrun each rank runs its question groups and every rank gets all the episodes
        (the timings are this rank's own).
        """
        cfg = self.cfg
        mine = self.ranks.my_jobs(len(jobs), cfg.group_size)
        hf = isinstance(self.backend, HFBackend)
        with D.gathered_for_inference(self.model) if hf else contextlib.nullcontext():
            episodes, timings = run_episodes(
                self.backend,
                self.venv,
                [jobs[i] for i in mine],
                num_envs=cfg.num_envs,
                keep_logs=keep_logs if self.ranks.is_main else 0,
                overlap=cfg.rollout_overlap,
                progress=label if cfg.progress and self.ranks.is_main else None,
            )
        return self.ranks.gather_in_order(mine, episodes, len(jobs)), timings

    def advantages(self, episodes: Sequence[Episode]) -> list[list[float]]:
        comps = [[s.components for s in ep.steps] for ep in episodes]
        return agentic_pg_advantages(
            comps, gamma=self.cfg.gamma, weights=self.weights, normalize=self.cfg.whiten
        )

    # -- training --------------------------------------------------------------------------------

    def micro_batches(self, samples: Sequence[Sample]) -> list[list[Sample]]:
        """Group samples (sorted by length) so rows × padded length stays within the token budget."""
        return pack_by_tokens(samples, self.cfg.micro_batch_tokens, length=lambda s: s.tokens)

    def _ref_logprobs(self, prompts: list, responses: list) -> torch.Tensor:
        # No gradient here, so the cached-prompt path (shared system-prompt prefix computed once)
        # gives the same values for less work; under FSDP every forward is a collective, so every
        # rank must run the same number of them: one per micro-batch.
        kwargs = {
            "pad_id": self.tokenizer.pad_token_id,
            "temperature": self.cfg.temperature,
            "prompt_grad": self.fsdp,
        }
        with torch.no_grad():
            if self.ref is not None:
                return response_logprobs(self.ref, prompts, responses, **kwargs)[0]
            with self.model.disable_adapter():
                return response_logprobs(self.model, prompts, responses, **kwargs)[0]

    def token_terms(self, batch: Sequence[Sample]) -> tuple[TokenTerms, torch.Tensor]:
        """Forward one micro-batch: its per-token loss terms and response mask (graph kept)."""
        cfg = self.cfg
        prompts, responses = [s.prompt_ids for s in batch], [s.response_ids for s in batch]
        with compute_context(self.device, self.autocast):
            logp, mask = response_logprobs(
                self.train_model,
                prompts,
                responses,
                pad_id=self.tokenizer.pad_token_id,
                temperature=cfg.temperature,
                prompt_grad=cfg.prompt_grad or self.fsdp,  # FSDP: one forward per micro-batch
            )
            ref = self._ref_logprobs(prompts, responses) if cfg.kl_coef > 0 else None
        width = logp.shape[1]
        sampler = torch.zeros_like(logp)
        known = torch.zeros_like(logp)
        for i, s in enumerate(batch):  # right-aligned like logp
            if s.logprobs:
                sampler[i, width - len(s.logprobs) :] = torch.tensor(s.logprobs, dtype=logp.dtype)
                known[i, width - len(s.logprobs) :] = 1.0
        adv = torch.tensor([s.advantage for s in batch], dtype=logp.dtype, device=logp.device).unsqueeze(1)
        terms = token_terms(
            logp,
            adv,
            mask,
            sampler_logp=sampler,
            known=known,
            tis=cfg.tis,
            tis_cap=cfg.tis_cap,
            ref_logp=ref,
            kl_coef=cfg.kl_coef,
        )
        return terms, mask

    def accumulate_gradients(self, samples: Sequence[Sample]) -> dict[str, float]:
        """Forward and backward every micro-batch (this rank's share); returns the batch's sums.

        The loss is the token-mean over all action tokens of the batch: each rank's sum is scaled
        by ``world / total tokens`` because DDP and FSDP average the gradients over ranks.
        """
        total = sum(len(s.response_ids) for s in samples)
        scale = self.ranks.world / max(1, total)
        batches = self.ranks.deal(self.micro_batches(samples), size=lambda s: s.tokens)
        sums = dict.fromkeys(("pg", "kl", "mismatch", "known", "weight", "clipped"), 0.0)
        self.train_model.train()
        for k, (batch, weight) in enumerate(batches):
            with D.no_grad_sync(self.train_model, last=k == len(batches) - 1):
                terms, mask = self.token_terms(batch)
                # weight 0: a padding copy that keeps the ranks' collectives in step
                ((terms.loss * mask).sum() * (scale * weight)).backward()
            if weight:
                mismatch = (terms.log_ratio.abs() * terms.known).sum()
                for key, value in (
                    ("pg", (terms.pg.detach() * mask).sum()),
                    ("kl", (terms.kl.detach() * mask).sum()),
                    ("mismatch", mismatch),
                    ("known", terms.known.sum()),
                    ("weight", (terms.weights * mask).sum()),
                    ("clipped", terms.clipped.sum()),
                ):
                    sums[key] += float(value)
        return self.ranks.sum(sums, self.device)

    def step(self) -> float:
        """Clip the gradients, take the AdamW step, hand the new weights to the sampler; the norm."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = D.grad_norm_value(torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.sync_sampler(version=self.iteration + 1)  # the weights of the iteration now ending
        return norm

    def sync_sampler(self, version: int) -> None:
        """Give a backend that holds its own weights (vLLM) the policy's, before the next rollout.

        ``version`` is the number of updates in these weights: a seeded vLLM sampler derives its
        per-rollout seeds from it, so a resumed run samples what the uninterrupted one did.
        """
        if not self.backend.holds_weights:
            return
        from ..weights import sampler_weights

        serving = None if self.compute_dtype == torch.float32 else self.compute_dtype
        weights = sampler_weights(self.model, serving)  # a collective under FSDP
        if self.ranks.is_main:
            self.backend.sync_weights(weights, version=version)
        self.ranks.broadcast(None)  # no rank samples before the new weights are in

    def update(self, episodes: Sequence[Episode], advantages: Sequence[Sequence[float]]) -> dict[str, float]:
        """One policy-gradient step on all steps of ``episodes`` (token-mean loss)."""
        samples = training_samples(episodes, advantages)
        total = sum(len(s.response_ids) for s in samples)
        self.optimizer.zero_grad(set_to_none=True)
        sums = self.accumulate_gradients(samples)
        grad_norm = self.step() if samples else 0.0
        self.optimizer.zero_grad(set_to_none=True)
        n, known = max(1, total), max(1.0, sums["known"])
        return {
            "losses/pg": sums["pg"] / n,
            "losses/kl": sums["kl"] / n,
            "losses/total": (sums["pg"] + self.cfg.kl_coef * sums["kl"]) / n,
            "charts/grad_norm": grad_norm,
            "charts/logprob_mismatch": sums["mismatch"] / known,
            "charts/tis_weight_mean": sums["weight"] / n if total else 1.0,
            "charts/tis_clip_rate": sums["clipped"] / known,
            "perf/train_tokens": float(total),
        }

    # -- state ------------------------------------------------------------------------------------

    def trainer_state(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "order": self._order,
            "pos": self._pos,
            "groups_seen": self._groups_seen,
            "numpy_rng": self.rng.bit_generator.state,
            "ranks": self.ranks.world,
        }

    def checkpoint_state(self) -> dict[str, Any]:
        """Trainable weights, optimizer state and every rank's RNG states (a collective under
        torchrun; the tensors are on rank 0)."""
        from ..runs import rng_state

        return {
            "weights": D.trainable_state(self.model, self.ranks),
            "optimizer_state": D.optimizer_state(self.model, self.optimizer),
            "rng": self.ranks.gather_objects(rng_state()),
        }

    def _write_checkpoint(self, state: dict[str, Any]) -> Any:
        return self.run.save_checkpoint(
            self.iteration, **state, trainer_state=self.trainer_state(), keep=self.cfg.keep_checkpoints
        )

    def save(self) -> Any:
        """Write a checkpoint of the current iteration (every rank calls it; rank 0 writes and
        returns its path, the others None)."""
        state = self.checkpoint_state()
        return self._write_checkpoint(state) if self.run is not None else None

    def load(self, path: Any) -> None:
        """Continue from a checkpoint: weights, optimizer, RNGs, question order and position."""
        from ..runs import read_checkpoint, restore_rng

        expected = {n for n, p in self.model.named_parameters() if p.requires_grad}
        ckpt = read_checkpoint(path, expected)
        D.load_state(self.model, self.optimizer, ckpt.weights, ckpt.optimizer_state)
        restore_rng(ckpt.rng, self.ranks.rank)
        state = ckpt.trainer_state
        self.iteration, self._order, self._pos = state["iteration"], state["order"], state["pos"]
        self._groups_seen = state["groups_seen"]
        self.rng.bit_generator.state = state["numpy_rng"]
        self.sync_sampler(version=self.iteration)

    def save_pretrained(self, path: Any) -> None:
        """Write the policy as a transformers model (LoRA merged into it, FSDP shards gathered; the
        weights as trained, float32 for full fine-tuning) and its tokenizer. Every rank calls it;
        rank 0 writes."""
        if self.cfg.lora_r > 0:
            model, state = self.model.merge_and_unload(), None
        elif self.fsdp:
            from ..weights import sampler_weights

            model, state = self.model, sampler_weights(self.model)  # a collective
        else:
            model, state = self.model, None
        if self.ranks.is_main:
            model.save_pretrained(path, state_dict=state)
            self.tokenizer.save_pretrained(path)
        self.ranks.broadcast(None)

    def close(self) -> None:
        self.venv.close()
        self.backend.close()


class GRPO(AgenticPG):
    """GRPO-style advantages: each episode's total reward, normalised within its question group."""

    def advantages(self, episodes: Sequence[Episode]) -> list[list[float]]:
        comps = [[s.components for s in ep.steps] for ep in episodes]
        return grpo_advantages(comps, [ep.job.group for ep in episodes], weights=self.weights)


ALGORITHMS = {"agentic_pg": AgenticPG, "grpo": GRPO}
