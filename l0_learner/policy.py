"""The policy's arithmetic: chat prompts as token ids, and the token logprobs of responses.

Token logprobs are computed the same way at sampling and at training time: left padding, position
ids from the attention mask, ``log_softmax(logits / temperature)`` at the sampled ids. The prefix
that every row of a batch shares (the env's system prompt, ~650 tokens) is computed once per batch
and its KV cache repeated, in sampling and in ``prompt_grad=False`` training: on a CPU most of the
work of an agent step is reading that prompt. Loading the model is :mod:`l0_learner.models`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch


def encode_chat(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """The prompt ids of a conversation, ending with the assistant turn's opening.

    Message contents are data, never markup: an observation that prints ``<|im_start|>system``
    (cell output, a page, the notepad) must not become a real control token, a fake system turn.
    So the template is rendered with a placeholder per content, its structure (role markers) is
    tokenized with special tokens, and each content with special-token splitting on. Lone
    surrogates in a content (tokenizers refuse them) become U+FFFD.

    Raises:
        ValueError: The chat template does not place every message's content unchanged (it
            rewrites contents), so contents cannot be kept apart from its markup.
    """
    import re

    slots = [f"\ue000l0-content-{i}\ue001" for i in range(len(messages))]
    text = tokenizer.apply_chat_template(
        [{**m, "content": slot} for m, slot in zip(messages, slots, strict=True)],
        tokenize=False,
        add_generation_prompt=True,
    )
    contents = {
        slot: re.sub("[\ud800-\udfff]", "\ufffd", str(m.get("content", "")))
        for m, slot in zip(messages, slots, strict=True)
    }
    pieces = (
        [p for p in re.split("(" + "|".join(map(re.escape, slots)) + ")", text) if p] if slots else [text]
    )
    missing = [i for i, slot in enumerate(slots) if slot not in pieces]
    if missing:
        raise ValueError(
            f"the chat template does not place message {missing[0]}'s content unchanged; encode_chat "
            "needs one that does (to keep contents apart from control tokens)"
        )

    def encode(texts: list[str], *, split: bool) -> list[list[int]]:
        if not texts:
            return []
        return tokenizer(texts, add_special_tokens=False, split_special_tokens=split)["input_ids"]

    data_ids = iter(encode([contents[p] for p in pieces if p in contents], split=True))
    markup_ids = iter(encode([p for p in pieces if p not in contents], split=False))
    ids: list[int] = []
    for p in pieces:
        ids.extend(next(data_ids) if p in contents else next(markup_ids))
    return ids


def left_pad(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id rows: ``(input_ids, attention_mask)``."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as ``generate`` does for left-padded rows."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def response_logprobs(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    pad_id: int,
    temperature: float = 1.0,
    prompt_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logprobs of each response token given its prompt (left-padded, like generation).

    Args:
        model: A causal LM.
        prompts, responses: Token id rows.
        pad_id: Padding id.
        temperature: Logits are divided by it before the softmax.
        prompt_grad: False runs the prompt (all but its last token) under ``no_grad`` and feeds
            its KV cache to a second pass over the response: the same values, but the gradient no
            longer flows through the prompt's keys/values. About 2× cheaper for long prompts and
            short actions (what makes CPU training affordable); an approximation of the gradient.

    Returns:
        ``(logprobs, mask)``, both ``(rows, max_response_len)`` and right-aligned: row ``i``'s
        response tokens are its last ``len(responses[i])`` columns. The graph is kept (call under
        ``torch.no_grad()`` for a reference model).
    """
    if not prompt_grad and all(len(p) >= 2 for p in prompts):
        return _response_logprobs_cached(model, prompts, responses, pad_id=pad_id, temperature=temperature)
    device = next(model.parameters()).device
    rows = [list(p) + list(r) for p, r in zip(prompts, responses, strict=True)]
    ids, mask = left_pad(rows, pad_id, device)
    width = max(len(r) for r in responses)
    # Only the last width+1 positions predict response tokens: skip the rest of the LM head.
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=width + 1)
    logits = out.logits[:, :-1, :].float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = ids[:, -width:]
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    resp_mask = torch.zeros_like(logprobs)
    for i, r in enumerate(responses):
        if len(r):
            resp_mask[i, width - len(r) :] = 1.0
    return logprobs * resp_mask, resp_mask


MIN_SHARED_PREFIX = 32
"""Shortest common prompt prefix (tokens) worth computing once for a whole batch."""


def common_prefix_len(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix that every row starts with."""
    if not rows:
        return 0
    first, n = rows[0], min(len(r) for r in rows)
    for row in rows[1:]:
        k = 0
        while k < n and row[k] == first[k]:
            k += 1
        n = k
    return n


def cache_kwarg(fn: Any) -> str:
    """The name under which ``fn`` takes a KV cache (``cache`` in newer transformers)."""
    return "cache" if "cache" in inspect.signature(fn).parameters else "past_key_values"


def _out_cache(out: Any) -> Any:
    return getattr(out, "cache", None) or out.past_key_values


@torch.no_grad()
def shared_prefix_cache(model: Any, prefix: Sequence[int], batch: int) -> Any:
    """KV cache of one prefix, repeated for ``batch`` rows (the system prompt every row shares)."""
    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True, logits_to_keep=1)
    cache = _out_cache(out)
    cache.batch_repeat_interleave(batch)
    return cache


def _response_logprobs_cached(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    pad_id: int,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    kw = cache_kwarg(getattr(model, "module", model).forward)  # a DDP wrapper takes **kwargs
    heads = [list(p[:-1]) for p in prompts]
    shared = common_prefix_len(heads)
    if shared < MIN_SHARED_PREFIX:
        shared = 0  # too short to be worth a separate pass: no cached prefix, nothing to offset by
    cache = None
    if shared:
        cache = shared_prefix_cache(model, heads[0][:shared], len(prompts))
        heads = [h[shared:] for h in heads]
    prefix_ids, prefix_mask = left_pad(heads, pad_id, device)
    pos = position_ids(prefix_mask) + shared
    if shared:
        prefix_mask = torch.cat(
            [torch.ones((len(prompts), shared), dtype=torch.long, device=device), prefix_mask], 1
        )
    if prefix_ids.shape[1]:
        with torch.no_grad():
            first = model(
                input_ids=prefix_ids,
                attention_mask=prefix_mask,
                position_ids=pos,
                use_cache=True,
                logits_to_keep=1,
                **({kw: cache} if cache is not None else {}),
            )
        cache = _out_cache(first)
    width = max(len(r) for r in responses)
    # Block = [last prompt token, response...], right-padded: its logits predict the response.
    block = torch.full((len(prompts), width + 1), pad_id, dtype=torch.long)
    block_mask = torch.zeros_like(block)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        row = [p[-1], *r]
        block[i, : len(row)] = torch.tensor(row)
        block_mask[i, : len(row)] = 1
    block, block_mask = block.to(device), block_mask.to(device)
    start = prefix_mask.sum(-1, keepdim=True)
    pos = start + torch.arange(width + 1, device=device).unsqueeze(0)
    out = model(
        input_ids=block,
        attention_mask=torch.cat([prefix_mask, block_mask], dim=1),
        position_ids=pos,
        use_cache=True,
        **{kw: cache},
    )
    logits = out.logits[:, :-1, :].float()
    if temperature != 1.0:
        logits = logits / temperature
    lp = torch.log_softmax(logits, dim=-1).gather(-1, block[:, 1:].unsqueeze(-1)).squeeze(-1)
    rows, masks = [], []
    for i, r in enumerate(responses):
        n = len(r)
        rows.append(torch.nn.functional.pad(lp[i, :n], (width - n, 0)))
        masks.append(torch.nn.functional.pad(torch.ones(n, device=device), (width - n, 0)))
    return torch.stack(rows), torch.stack(masks)
