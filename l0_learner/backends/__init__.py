"""Generation backends: one ``generate(conversations) -> list[Generation]`` interface.

``hf`` (transformers ``generate`` on the trained module; token-in/token-out, so it can train),
``vllm`` (a vLLM engine: a server in its own Python environment or ``vllm.LLM`` in-process; also
token-in/token-out, and ``sync_weights(weights)`` loads the trainer's weights into it after every
update) and ``openai`` (any OpenAI-compatible server; text only, so it is for evaluation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

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
    """What evaluation needs: actions for chat conversations."""

    def generate(self, conversations: list[list[dict[str, str]]]) -> list[Generation]: ...


class TrainingBackend(Backend, Protocol):
    """What the trainer needs: token-in/token-out sampling and the engine's life cycle.

    ``holds_weights`` says whether the backend samples from its own copy of the policy (a vLLM
    engine) that :meth:`sync_weights` must refresh after every update, or from the trained module
    itself (``hf``: nothing to sync). :meth:`sleep` frees what the engine holds while the trainer
    steps (a colocated vLLM engine's GPU memory; a no-op elsewhere); the next sync or rollout wakes
    it. Every training backend has all of these, so the trainer calls them without probing.
    """

    holds_weights: ClassVar[bool]
    stats: dict[str, float]

    def generate_ids(self, prompts: Sequence[Sequence[int]]) -> list[Generation]: ...

    def sync_weights(self, weights: Mapping[str, Any], version: int | None = None) -> None: ...

    def sleep(self) -> None: ...

    def close(self) -> None: ...


__all__ = ["STOP", "Backend", "Generation", "TrainingBackend"]
