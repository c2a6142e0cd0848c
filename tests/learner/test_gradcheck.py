"""The prompt_grad=False approximation measured against the exact gradient on a real batch."""

from __future__ import annotations

import pytest

from l0_learner.gradcheck import demonstration_batch, gradient_cosine


def test_gradient_cosine_on_real_demonstration_steps(tiny_policy, capsys):
    model, tok = tiny_policy
    prompts, responses = demonstration_batch(tok, 4)
    assert len(prompts) == 4 and all(len(p) > 100 for p in prompts), "real env contexts, not toy prompts"
    result = gradient_cosine(model, prompts, responses, [1.0, -1.0, 0.5, -0.5], pad_id=tok.pad_token_id)
    with capsys.disabled():
        print(f"\n[gradcheck] tiny model: cosine {result.cosine:.4f}, norm ratio {result.norm_ratio:.3f}")
    # Not identical (the prompt's keys/values carry gradient the approximation drops) ...
    assert result.cosine < 1 - 1e-6
    # ... but pointing the same way: an approximation that lost the response's own path would not.
    assert result.cosine > 0.5
    same = gradient_cosine(model, prompts[:1], responses[:1], [1.0], pad_id=tok.pad_token_id)
    assert same.rows == 1 and same.response_tokens == len(responses[0])


def test_gradient_cosine_rejects_mismatched_batches(tiny_policy):
    model, tok = tiny_policy
    with pytest.raises(ValueError, match="one length"):
        gradient_cosine(model, [[1, 2, 3]], [[4]], [1.0, 2.0], pad_id=tok.pad_token_id)
