"""A tiny chat model built locally in about a second: for tests and ``--preset tiny`` smoke runs.

A byte-level BPE tokenizer is trained with ``tokenizers`` on a small built-in text (the env's
action format and some English), given a ChatML chat template, and paired with a randomly
initialised 2-layer Qwen2 model. Nothing is downloaded. The heads are 32 wide (2 query heads,
1 KV head at width 64): vLLM's CPU attention supports no head size below 32, and the same files
serve the ``hf`` and ``vllm`` backends.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_TEXT = """\
<think>I search for the page, read it and note the answer.</think>
<code>hits = web_search('film director', k=5)
print(hits[0]['title'])
text = open_page(hits[0]['id'])
notepad.add_fact('director', text[:300])
submit_final_answer('Paris')</code>
Question: Which city is the capital of France? The answer is Paris.
The quick brown fox jumps over the lazy dog. a a a b b c
Were Scott Derrickson and Ed Wood of the same nationality? yes no
for i in range(10): print(i, i * 2) # numbers 0123456789
"""


HEAD_DIM = 32
"""Attention head width: the smallest that vLLM's CPU attention kernels take."""


def _built_with(path: Path, shape: dict[str, int]) -> bool:
    """Whether ``path`` holds a finished build of this shape (an older build is rebuilt)."""
    import json

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (path / "tokenizer.json").exists() and all(config.get(k) == v for k, v in shape.items())


def build_tiny_model(
    path: str | Path, *, vocab_size: int = 320, hidden_size: int = 64, seed: int = 0
) -> Path:
    """Write a tiny tokenizer + Qwen2 model to ``path`` (idempotent: reuses a finished one).

    Args:
        path: Output directory, loadable with ``from_pretrained``.
        vocab_size: BPE vocabulary size (byte alphabet + merges + specials).
        hidden_size: Model width; 2 layers, heads of width 32 (hidden_size // 32 query heads,
            half as many KV heads, at least one).
        seed: Seed of the random weights.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    heads = max(1, hidden_size // HEAD_DIM)
    shape = {
        "hidden_size": hidden_size,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
    }
    if _built_with(path, shape):
        return path
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_TEXT] * 4, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=CHATML_TEMPLATE,
    )
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(hf_tok),
        intermediate_size=hidden_size * 2,
        num_hidden_layers=2,
        hidden_size=shape["hidden_size"],
        num_attention_heads=shape["num_attention_heads"],
        num_key_value_heads=shape["num_key_value_heads"],
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    hf_tok.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)  # an unfinished earlier build
    os.replace(tmp, path)
    return path
