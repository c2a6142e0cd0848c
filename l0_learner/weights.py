"""The policy's weights as a separate sampler (a vLLM engine) loads them: full, HF-named, LoRA merged.

After every update the trainer hands these to a backend that holds its own copy of the weights
(``backend.sync_weights(weights)``; the ``hf`` backend samples from the trained module itself and
needs none). Names are those of the plain transformers model (``model.layers.0.self_attn.q_proj
.weight``, …), every entry of its ``state_dict`` (a tied ``lm_head.weight`` included: an update that
left it out would keep the old output layer), in the dtype asked for.

LoRA: ``W + scale · B·A`` computed out of place per adapted layer (merging into the frozen base and
unmerging again would round the base weights a little at every update).
"""

from __future__ import annotations

from typing import Any

import torch

from .distributed import is_fsdp, unwrapped


def sampler_weights(model: Any, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Every weight of the policy, full, by its plain transformers name.

    Args:
        model: The trained policy (plain, a DDP wrapper, FSDP-sharded, or a peft LoRA model).
        dtype: Cast floating-point tensors to it (the sampler's serving dtype); None keeps them.

    Returns:
        ``{name: tensor}`` on CPU. Under FSDP this is a collective and only rank 0 gets the
        tensors (the others ``{}``).
    """
    model = unwrapped(model)
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # A model's state dict holds tensors; torch types it as any state value.
        state: dict[str, Any] = get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
    elif hasattr(model, "get_base_model"):
        state = _merged_lora_state(model)
    else:
        state = {n: t.detach() for n, t in model.state_dict().items()}
    out = {}
    for name, t in state.items():
        t = t.detach().cpu()
        out[name] = t.to(dtype) if dtype is not None and t.is_floating_point() else t
    return out


@torch.no_grad()
def _merged_lora_state(peft_model: Any) -> dict[str, torch.Tensor]:
    base = peft_model.get_base_model()
    state = {
        k.replace(".base_layer.", "."): v.detach()
        for k, v in base.state_dict().items()
        if "lora_" not in k and "lora_magnitude" not in k
    }
    for name, module in base.named_modules():
        if not (hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")):
            continue
        key = f"{name}.weight"
        merged = state[key].float()
        for adapter in getattr(module, "active_adapters", []):
            if adapter in getattr(module, "lora_A", {}):
                merged = merged + module.get_delta_weight(adapter).float()
        state[key] = merged.to(state[key].dtype)
    return state
