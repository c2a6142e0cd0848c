"""``hf`` backend: batched ``transformers`` ``generate`` with left padding, token-in/token-out.

Each conversation is encoded once with the chat template; the sampled ids and their logprobs
(``log_softmax(raw_logits / temperature)``, the distribution the trainer differentiates) are kept
as they came out of the sampler. Generation stops at ``</code>`` or the end-of-turn token. With
``top_p < 1`` the sampler draws from a truncated distribution while the logprobs are of the full
one (as vLLM reports them): slightly off-policy, stated rather than hidden.

Memory: only the sampled token's logprob is kept per step (:class:`SampledLogprobs`, a logits
processor), never the full-vocabulary logits of every step (``output_logits=True`` kept a float32
copy of the vocabulary per generated token per row: 78 MB per token at 128 rows of Qwen2.5's
152,064 tokens, tens of GB per action). Scoring the response in one forward pass after generation
would give the same values but costs a second prefill and, unchunked, the same
``rows × tokens × vocabulary`` logits tensor.

The model's own ``generation_config`` (e.g. Qwen2.5's ``repetition_penalty=1.05, top_k=20``) is
overridden with neutral values: the sampler draws from exactly ``softmax(logits / temperature)``
(nucleus-truncated when ``top_p < 1``), the distribution the trainer scores.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from ..models import compute_context
from ..policy import (
    MIN_SHARED_PREFIX,
    cache_kwarg,
    common_prefix_len,
    encode_chat,
    left_pad,
    shared_prefix_cache,
)
from . import STOP, Generation


class SampledLogprobs:
    """A logits processor that records the logprob of each token the sampler picks.

    A processor runs before the token is chosen, so it keeps one step's
    ``log_softmax(scores / temperature)`` (rows × vocabulary, float32) and reads the chosen token's
    entry at the next call, from the last column of ``input_ids``; :meth:`finish` reads the last
    step's from the finished sequences. Memory is one vocabulary row per batch row, whatever the
    number of steps. It must see the raw logits: transformers runs custom processors after its
    built-in penalties/masks and before the sampling warpers (temperature, top-p), and
    :class:`HFBackend` turns all the built-in ones off.

    Args:
        temperature: Logits are divided by it (0 means greedy decoding: logprobs at temperature 1).
        prompt_width: Columns of ``input_ids`` before the first generated token.
    """

    def __init__(self, temperature: float, prompt_width: int) -> None:
        self.temperature = temperature or 1.0
        self.prompt_width = prompt_width
        self._last: torch.Tensor | None = None  # (rows, vocabulary) log-probabilities of the last step
        self._steps: list[torch.Tensor] = []  # (rows,) logprob of the token sampled at each step

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self._last is not None:
            chosen = input_ids[:, self.prompt_width + len(self._steps)]
            self._steps.append(self._last.gather(-1, chosen.unsqueeze(-1)).squeeze(-1))
        self._last = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """``(rows, generated)`` logprobs of the generated columns of ``sequences``.

        ``generate`` may run a step past the end and drop it (deferred stop checks): only as many
        steps as ``sequences`` has generated columns are returned.
        """
        n = sequences.shape[1] - self.prompt_width
        steps = self._steps[:n]
        if len(steps) < n and self._last is not None:
            chosen = sequences[:, self.prompt_width + len(steps)]
            steps.append(self._last.gather(-1, chosen.unsqueeze(-1)).squeeze(-1))
        self._last = None
        if len(steps) != n:
            raise RuntimeError(f"recorded {len(steps)} sampling steps for {n} generated tokens")
        if not steps:
            return torch.zeros((sequences.shape[0], 0))
        return torch.stack(steps, dim=1)


# Every logits-shaping option of GenerationConfig that a model's generation_config.json could set,
# at its neutral value: generate() fills the options we leave unset from the model's file.
# (``min_new_tokens`` set overrides ``min_length``.)
NEUTRAL_PROCESSORS = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_new_tokens": 0,
    "renormalize_logits": False,
    "guidance_scale": 1.0,
}
NEUTRAL_WARPERS = {"top_k": 0, "typical_p": 1.0, "min_p": 0.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}
"""Sampling-only options (transformers warns when they are set for greedy decoding)."""


class HFBackend:
    """Sample actions from a transformers model.

    Args:
        model: A causal LM (its mode is restored after sampling).
        tokenizer: Its tokenizer, with a chat template.
        max_new_tokens: Tokens per action.
        temperature: Sampling temperature; 0 is greedy decoding (logprobs then at temperature 1).
        top_p: Nucleus sampling threshold.
        batch_size: Conversations per ``generate`` call.
        stop: Stop strings (kept in the action).
        share_prefix: Prefill the prompt prefix that all rows share (the system prompt) once per
            batch instead of once per row; rows are then padded after it. Same logprobs, far less
            prefill on CPU.
        autocast: Run the model under ``torch.autocast`` in this dtype (the trainer's compute
            dtype when it keeps float32 weights, see :func:`l0_learner.models.compute_context`).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int = 192,
        temperature: float = 1.0,
        top_p: float = 1.0,
        batch_size: int = 8,
        stop: Sequence[str] = STOP,
        share_prefix: bool = True,
        autocast: torch.dtype | None = None,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.autocast = autocast
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.batch_size, self.stop, self.share_prefix = batch_size, tuple(stop), share_prefix
        self.stats = {"gen_tokens": 0, "gen_seconds": 0.0, "prompt_tokens": 0}

    holds_weights: ClassVar[bool] = False
    """It samples from the trained module itself: there are no weights to sync."""

    def generate(self, conversations: list[list[dict[str, str]]]) -> list[Generation]:
        prompts = [encode_chat(self.tokenizer, c) for c in conversations]
        return self.generate_ids(prompts)

    def sync_weights(self, weights: Mapping[str, Any], version: int | None = None) -> None:
        """Nothing to do: the next rollout samples from the updated module."""

    def sleep(self) -> None:
        """Nothing to free: the model is the trainer's."""

    def close(self) -> None:
        """Nothing to release."""

    def generate_ids(self, prompts: Sequence[Sequence[int]]) -> list[Generation]:
        """Sample one response per prompt (token ids in, token ids + logprobs out)."""
        out: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            out.extend(self._generate_batch(prompts[start : start + self.batch_size]))
        return out

    @torch.no_grad()
    def _generate_batch(self, prompts: Sequence[Sequence[int]]) -> list[Generation]:
        started = time.perf_counter()
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            with compute_context(device, self.autocast):
                sequences, width, record = self._sample(prompts, device)
        finally:
            self.model.train(was_training)
        tok = self.tokenizer
        new = sequences[:, width:].cpu()
        logprobs = record.finish(sequences).cpu()
        gens = []
        for i, prompt in enumerate(prompts):
            row = new[i].tolist()
            cut, reason = self._cut(row, tok.eos_token_id)
            response = row[:cut]
            gens.append(
                Generation(
                    text=tok.decode(response, skip_special_tokens=True),
                    prompt_ids=list(prompt),
                    response_ids=response,
                    logprobs=logprobs[i, :cut].tolist(),
                    finish_reason=reason,
                )
            )
            self.stats["gen_tokens"] += cut
            self.stats["prompt_tokens"] += len(prompt)
        self.stats["gen_seconds"] += time.perf_counter() - started
        return gens

    def _sample(
        self, prompts: Sequence[Sequence[int]], device: torch.device
    ) -> tuple[torch.Tensor, int, SampledLogprobs]:
        """One ``generate`` call: ``(sequences, prompt width, the recorded logprobs)``."""
        from transformers import GenerationConfig, LogitsProcessorList

        tok, model = self.tokenizer, self.model
        extra: dict[str, Any] = {}
        shared = common_prefix_len(prompts) if self.share_prefix else 0
        if shared >= MIN_SHARED_PREFIX and all(len(p) > shared for p in prompts):
            # Every row starts with the same system prompt: prefill it once, pad after it.
            rest_ids, rest_mask = left_pad([p[shared:] for p in prompts], tok.pad_token_id, device)
            head = torch.tensor([list(prompts[0][:shared])] * len(prompts), device=device)
            ids = torch.cat([head, rest_ids], dim=1)
            mask = torch.cat([torch.ones_like(head), rest_mask], dim=1)
            extra[cache_kwarg(model.generate)] = shared_prefix_cache(model, prompts[0][:shared], len(prompts))
        else:
            ids, mask = left_pad(prompts, tok.pad_token_id, device)
        greedy = self.temperature == 0
        config = GenerationConfig(
            do_sample=not greedy,
            **NEUTRAL_PROCESSORS,
            **({} if greedy else {**NEUTRAL_WARPERS, "temperature": self.temperature, "top_p": self.top_p}),
            max_new_tokens=self.max_new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            stop_strings=list(self.stop) or None,
        )
        record = SampledLogprobs(self.temperature, ids.shape[1])
        with warnings.catch_warnings():  # transformers 5 renames past_key_values -> cache
            warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
            sequences = model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=config,
                tokenizer=tok,
                logits_processor=LogitsProcessorList([record]),
                **extra,
            )
        return sequences, ids.shape[1], record

    def _cut(self, row: list[int], eos: int | None) -> tuple[int, str]:
        """Where the response ends: after the first stop string or end-of-turn token."""
        end = len(row)
        reason = "length"
        if eos is not None and eos in row:
            end, reason = row.index(eos) + 1, "eos"
        text = self.tokenizer.decode(row[:end], skip_special_tokens=True)
        if any(s in text for s in self.stop):
            lo, hi = 1, end  # the shortest prefix whose text holds a stop string (monotone in length)
            while lo < hi:
                mid = (lo + hi) // 2
                if any(s in self.tokenizer.decode(row[:mid], skip_special_tokens=True) for s in self.stop):
                    hi = mid
                else:
                    lo = mid + 1
            return lo, "stop"
        return end, reason
