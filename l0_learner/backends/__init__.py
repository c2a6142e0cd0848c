"""Generation backends: one ``generate(conversations) -> list[Generation]`` interface.

``hf`` (transformers ``generate`` on the trained module; token-in/token-out, so it can train),
``vllm`` (a vLLM engine: a server in its own Python environment or ``vllm.LLM`` in-process; also
token-in/token-out, and ``sync_weights(weights)`` loads the trainer's weights into it after every
update) and ``openai`` (any OpenAI-compatible server; text only, so it is for evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

STOP = ("</code>",)


@dataclass
class Generation:
    """One sampled action.

    Attributes:
        text: The action text (special tokens removed).
        prompt_ids: The prompt's token ids (empty for text-only backends).
        response_ids: The sampled token ids, cut after the stop string or end-of-turn.
        logprobs: Logprob of each sampled id under the (temperature-scaled) policy.
        finish_reason: "stop" (stop string), "eos" (end of turn) or "length".
    """

    text: str
    prompt_ids: list[int] = field(default_factory=list)
    response_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "stop"


class Backend(Protocol):
    def generate(self, conversations: list[list[dict[str, str]]]) -> list[Generation]: ...


__all__ = ["STOP", "Backend", "Generation"]
