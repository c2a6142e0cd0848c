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
