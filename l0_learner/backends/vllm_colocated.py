"""``vllm`` backend, colocated layout: ``vllm.LLM`` in the learner's process, for one GPU.

The same contract and weight sync as the server layout (:mod:`l0_learner.backends.vllm`). With
``enable_sleep_mode`` (the default here) :meth:`VLLMColocatedBackend.sleep` frees the engine's
GPU memory (KV cache dropped, weights offloaded to host memory) for the trainer's step; the next
weight sync or rollout wakes it. It needs vllm in the learner's own environment, which this
project's CPU machines do not have (vLLM pins its own torch): this layout is unverified there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import Generation
from .vllm import Sampling, VLLMBackend, to_generation


class VLLMColocatedBackend(VLLMBackend):
    """``vllm.LLM`` in the learner's process.

    Args:
        tokenizer: The policy's tokenizer.
        model_dir: The model directory to load first.
        weights_dir: Where weight syncs are written.
        sampling: Sampling settings.
        seed: The run's seed.
        engine_args: Further ``vllm.LLM`` keyword arguments (dtype, max_model_len,
            gpu_memory_utilization, …).

    Raises:
        ImportError: vllm is not installed in this environment.
    """

    def __init__(
        self,
        tokenizer: Any,
        model_dir: str | Path,
        *,
        weights_dir: str | Path,
        sampling: Sampling | None = None,
        seed: int = 0,
        **engine_args: Any,
    ) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError(
                "vllm_server='colocated' runs vllm.LLM in the learner's process and needs vllm installed "
                "there (pip install vllm, on a GPU machine); vllm_server='auto' runs vLLM in its own "
                "environment instead"
            ) from exc
        super().__init__(tokenizer, weights_dir=weights_dir, sampling=sampling or Sampling(), seed=seed)
        engine_args.setdefault("enable_sleep_mode", True)
        self.sleep_enabled = bool(engine_args["enable_sleep_mode"])
        self.asleep = False
        self.llm: Any = LLM(
            model=str(model_dir),
            seed=seed,
            logprobs_mode="processed_logprobs",
            generation_config="vllm",
            **engine_args,
        )

    def sleep(self) -> None:
        """Free the engine's GPU memory while the trainer steps (the next sync or rollout wakes it)."""
        if self.sleep_enabled and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def _wake(self, tags: list[str] | None = None) -> None:
        if self.asleep:
            self.llm.wake_up(tags=tags)
            self.asleep = tags is not None

    def _params(self, seed: int) -> Any:
        from vllm import SamplingParams

        return SamplingParams(**self.sampling.params(seed))

    def _sample(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int]) -> list[Generation]:
        self._wake()
        outs = self.llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompts],
            [self._params(s) for s in seeds],
            use_tqdm=False,
        )
        gens = []
        for prompt, out in zip(prompts, outs, strict=True):
            c = out.outputs[0]
            ids = list(c.token_ids)
            lps = [row[t].logprob for row, t in zip(c.logprobs or [], ids, strict=True)]
            gens.append(
                to_generation(
                    self.tokenizer, prompt, ids, lps, c.finish_reason or "stop", self.sampling.stop_token_ids
                )
            )
        return gens

    def score(self, prompt: Sequence[int], response: Sequence[int]) -> list[float]:
        from vllm import SamplingParams

        self._wake()
        ids = [*prompt, *response]
        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0)
        out = self.llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)[0]
        return [out.prompt_logprobs[i][ids[i]].logprob for i in range(len(prompt), len(ids))]

    def load_weights_from(self, directory: str | Path) -> None:
        self._wake(tags=["weights"])  # the KV cache stays released until the next rollout
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(Path(directory).resolve())})
        self._wake()
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        llm, self.llm = self.__dict__.get("llm"), None
        if llm is not None:
            with contextlib.suppress(Exception):
                llm.llm_engine.engine_core.shutdown()
