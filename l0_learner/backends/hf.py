"""``hf`` backend: batched ``transformers`` ``generate`` with left padding, token-in/token-out.

Each conversation is encoded once with the chat template; the sampled ids and their logprobs
(``log_softmax(raw_logits / temperature)``, the distribution the trainer differentiates) are kept
as they came out of the sampler. Generation stops at ``</code>`` or the end-of-turn token. With
``top_p < 1`` the sampler draws from a truncated distribution while the logprobs are of the full
one (as vLLM reports them): slightly off-policy, stated rather than hidden.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ..policy import (
    MIN_SHARED_PREFIX,
    cache_kwarg,
    common_prefix_len,
    encode_chat,
    left_pad,
    shared_prefix_cache,
)
from . import STOP, Generation


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
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.batch_size, self.stop, self.share_prefix = batch_size, tuple(stop), share_prefix
        self.stats = {"gen_tokens": 0, "gen_seconds": 0.0, "prompt_tokens": 0}

    def generate(self, conversations: list[list[dict[str, str]]]) -> list[Generation]:
        prompts = [encode_chat(self.tokenizer, c) for c in conversations]
        return self.generate_ids(prompts)

    def generate_ids(self, prompts: Sequence[Sequence[int]]) -> list[Generation]:
        """Sample one response per prompt (token ids in, token ids + logprobs out)."""
        out: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            out.extend(self._generate_batch(prompts[start : start + self.batch_size]))
        return out

    @torch.no_grad()
    def _generate_batch(self, prompts: Sequence[Sequence[int]]) -> list[Generation]:
        from transformers import GenerationConfig

        started = time.perf_counter()
        tok, model = self.tokenizer, self.model
        device = next(model.parameters()).device
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
        eos = tok.eos_token_id
        greedy = self.temperature == 0
        sampling = {} if greedy else {"temperature": self.temperature, "top_p": self.top_p, "top_k": 0}
        config = GenerationConfig(
            do_sample=not greedy,
            **sampling,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=eos,
            pad_token_id=tok.pad_token_id,
            stop_strings=list(self.stop) or None,
            output_logits=True,
            return_dict_in_generate=True,
        )
        was_training = model.training
        model.eval()
        try:
            with warnings.catch_warnings():  # transformers 5 renames past_key_values -> cache
                warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
                result = model.generate(
                    input_ids=ids, attention_mask=mask, generation_config=config, tokenizer=tok, **extra
                )
        finally:
            model.train(was_training)
        width = ids.shape[1]
        new = result.sequences[:, width:]
        logits = torch.stack(result.logits, dim=1).float() / (self.temperature or 1.0)  # (B, steps, V)
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new[:, : logits.shape[1]].unsqueeze(-1))
        logprobs = logprobs.squeeze(-1).cpu()
        new = new.cpu()
        gens = []
        for i, prompt in enumerate(prompts):
            row = new[i].tolist()
            cut, reason = self._cut(row, eos)
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
