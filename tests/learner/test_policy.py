"""The tiny model, the chat template, token-in/token-out sampling and training-time logprobs."""

from __future__ import annotations

import torch

from l0_learner.backends.hf import HFBackend
from l0_learner.policy import MIN_SHARED_PREFIX, common_prefix_len, encode_chat, response_logprobs

CONV = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "Question: which city?"}]


def test_tiny_model_has_a_chat_template_and_specials(tiny_policy) -> None:
    model, tok = tiny_policy
    ids = encode_chat(tok, CONV)
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\nAnswer.<|im_end|>") and text.endswith(
        "<|im_start|>assistant\n"
    )
    assert tok.padding_side == "left" and tok.pad_token_id != tok.eos_token_id
    assert sum(p.numel() for p in model.parameters()) < 200_000


def test_sampled_logprobs_match_training_logprobs(tiny_policy) -> None:
    model, tok = tiny_policy
    torch.manual_seed(1)
    backend = HFBackend(model, tok, max_new_tokens=12, batch_size=4)
    system = {"role": "system", "content": "You are a research agent. Search, read, then answer. " * 3}
    convs = [[system, {"role": "user", "content": "Question " * k}] for k in (1, 3, 6, 9)]
    assert common_prefix_len([encode_chat(tok, c) for c in convs]) >= MIN_SHARED_PREFIX, (
        "exercise the shared prefix"
    )
    gens = backend.generate(convs)
    assert len(gens) == 4 and {len(g.prompt_ids) for g in gens} != 1
    for g, conv in zip(gens, convs, strict=True):
        assert g.prompt_ids == encode_chat(tok, conv)
        assert len(g.response_ids) == len(g.logprobs) >= 1
    for prompt_grad in (True, False):
        lp, mask = response_logprobs(
            model,
            [g.prompt_ids for g in gens],
            [g.response_ids for g in gens],
            pad_id=tok.pad_token_id,
            prompt_grad=prompt_grad,
        )
        for i, g in enumerate(gens):
            n = len(g.response_ids)
            assert mask[i].sum() == n
            assert torch.allclose(lp[i, -n:], torch.tensor(g.logprobs), atol=1e-4), (
                "sampler and trainer disagree"
            )


def test_padding_does_not_change_logprobs(tiny_policy) -> None:
    model, tok = tiny_policy
    prompts, responses = [[5, 6, 7], [8] * 20], [[9, 10], [11, 12, 13, 14]]
    together, _ = response_logprobs(model, prompts, responses, pad_id=tok.pad_token_id)
    alone, _ = response_logprobs(model, prompts[:1], responses[:1], pad_id=tok.pad_token_id)
    assert torch.allclose(together[0, -2:], alone[0, -2:], atol=1e-5)


def test_cached_prompt_logprobs_equal_the_full_pass_when_prompts_share_a_short_prefix(tiny_policy) -> None:
    """prompt_grad=False with a common prefix under MIN_SHARED_PREFIX (chat-template prompts of the
    toy env share ~25 tokens; a lone short prompt shares all of itself): no offset, no extra mask."""
    model, tok = tiny_policy
    cases = [
        ([[5, 6, 7], list(range(5, 15))], [[30, 31, 32], [33, 34]]),  # one prompt a prefix of the other
        ([[5, 6, 7, 8, 9, 10, 11]], [[30, 31]]),  # a single short prompt
        ([[*range(5, 30), 40], [*range(5, 30), 41, 42, 43]], [[30], [31, 32, 33]]),  # 25 shared tokens
    ]
    for prompts, responses in cases:
        full, _ = response_logprobs(model, prompts, responses, pad_id=tok.pad_token_id, prompt_grad=True)
        cached, _ = response_logprobs(model, prompts, responses, pad_id=tok.pad_token_id, prompt_grad=False)
        assert torch.allclose(full, cached, atol=1e-5), (prompts, (full - cached).abs().max())


def test_generation_stops_after_code_close_and_at_eos(tiny_policy) -> None:
    model, tok = tiny_policy
    backend = HFBackend(model, tok)
    action = "<think>read the page</think><code>print(1)</code>"
    row = tok(action + " more text", add_special_tokens=False)["input_ids"]
    cut, reason = backend._cut(row, tok.eos_token_id)
    assert reason == "stop" and tok.decode(row[:cut]).endswith("</code>")
    assert "</code>" not in tok.decode(row[: cut - 1])
    row = tok("abc", add_special_tokens=False)["input_ids"] + [tok.eos_token_id, 5, 6]
    assert backend._cut(row, tok.eos_token_id) == (len(row) - 2, "eos")
    assert backend._cut([5, 6, 7], tok.eos_token_id) == (3, "length")


def test_greedy_generation_is_deterministic(tiny_policy) -> None:
    model, tok = tiny_policy
    backend = HFBackend(model, tok, max_new_tokens=8, temperature=0.0)
    a = backend.generate([CONV, CONV[1:]])
    b = backend.generate([CONV, CONV[1:]])
    assert [g.response_ids for g in a] == [g.response_ids for g in b]


def test_shared_prefix_changes_nothing_but_the_cost(tiny_policy) -> None:
    model, tok = tiny_policy
    assert common_prefix_len([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2 and common_prefix_len([[5], [6]]) == 0
    prefix = list(range(3, 3 + 2 * MIN_SHARED_PREFIX))
    prompts = [[*prefix, 7], [*prefix, 8, 9, 10], [*prefix, *[11] * 5]]
    responses = [[12, 13], [14], [15, 16, 17]]
    full, _ = response_logprobs(model, prompts, responses, pad_id=tok.pad_token_id, prompt_grad=True)
    cached, _ = response_logprobs(model, prompts, responses, pad_id=tok.pad_token_id, prompt_grad=False)
    assert torch.allclose(full, cached, atol=1e-5)
    for share in (True, False):
        torch.manual_seed(3)
        gens = HFBackend(model, tok, max_new_tokens=6, share_prefix=share).generate_ids(prompts)
        if share:
            first = [g.response_ids for g in gens]
        else:
            assert [g.response_ids for g in gens] == first


def _peak_tensor_bytes(fn) -> int:
    """Peak bytes of live CPU tensors while ``fn`` runs (torch's own allocator accounting)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e.start_ns(),
    )
    live = peak = 0
    for e in events:
        live += e.nbytes()  # negative for a free
        peak = max(peak, live)
    return peak


def _model_with_vocab(tok, vocab: int):
    """A 1-layer Qwen2 of ``vocab`` output tokens that never ends a row (eos/pad logits pushed down)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config).eval()
    model.lm_head = torch.nn.Linear(32, vocab, bias=True)
    with torch.no_grad():
        model.lm_head.bias.zero_()
        model.lm_head.bias[[tok.eos_token_id, tok.pad_token_id]] = -1e4
    return model


def test_sampler_memory_per_token_does_not_grow_with_the_vocabulary(tiny_policy) -> None:
    """Peak memory per generated token: the same for a 320- and an 8192-token vocabulary.

    Keeping every step's logits (``output_logits=True``) grew it by rows × vocabulary × 4 bytes
    (three copies: ~390 KB per step at 8192 tokens and 4 rows, against ~0.7 KB of KV cache).
    """
    _, tok = tiny_policy
    rows, prompts = 4, [[5, 6, 7, 8], [9, 10, 11, 12, 13, 14], [15, 16], [17, 18, 19]]
    slope = {}
    for vocab in (320, 8192):
        model = _model_with_vocab(tok, vocab)
        peaks = {}
        for steps in (8, 40):
            backend = HFBackend(model, tok, max_new_tokens=steps, stop=(), batch_size=rows)
            gens: list = []
            torch.manual_seed(1)
            peaks[steps] = _peak_tensor_bytes(lambda b=backend, out=gens: out.extend(b.generate_ids(prompts)))
            assert [len(g.response_ids) for g in gens] == [steps] * rows, "every row must run all steps"
            assert all(len(g.logprobs) == steps for g in gens)
        slope[vocab] = (peaks[40] - peaks[8]) / 32
    growth = slope[8192] - slope[320]
    one_row = rows * 4 * (8192 - 320)  # one more float32 vocabulary row per batch row
    assert growth < one_row / 10, (
        f"peak bytes per generated token grow with the vocabulary: {slope} (one float32 vocabulary "
        f"row per batch row is {one_row} bytes): the sampler keeps per-step logits"
    )


def test_the_models_generation_config_does_not_change_what_is_sampled(tiny_policy) -> None:
    """A model's generation_config.json (Qwen2.5 ships repetition_penalty and top_k) must not reach
    the sampler: it samples softmax(logits / T), the distribution the trainer scores."""
    model, tok = tiny_policy
    prompts = [encode_chat(tok, CONV), encode_chat(tok, CONV[1:])]
    runs = []
    for shaped in (False, True):
        if shaped:
            model.generation_config.update(
                repetition_penalty=3.0, no_repeat_ngram_size=1, top_k=3, min_p=0.5, typical_p=0.2
            )
        torch.manual_seed(5)
        runs.append(HFBackend(model, tok, max_new_tokens=10, stop=()).generate_ids(prompts))
    plain, shaped = runs
    assert [g.response_ids for g in plain] == [g.response_ids for g in shaped]
    assert [g.logprobs for g in plain] == [g.logprobs for g in shaped]
    lp, _ = response_logprobs(
        model, [g.prompt_ids for g in shaped], [g.response_ids for g in shaped], pad_id=tok.pad_token_id
    )
    for i, g in enumerate(shaped):
        n = len(g.response_ids)
        assert torch.allclose(lp[i, -n:], torch.tensor(g.logprobs), atol=1e-4)
