"""``vllm`` backend: rollouts from a vLLM engine, token-in/token-out, weights synced after every update.

The ``hf`` backend's contract: a conversation is encoded once with the learner's
:func:`~l0_learner.policy.encode_chat` (exactly the ids the trainer scores) and sent as token ids;
the sampled ids and the logprob of each sampled token under the temperature-scaled distribution
(``log_softmax(logits / T)``, the trainer's formula) come back; generation stops after ``</code>``
or the end-of-turn token, which stay in the response as the ``hf`` backend keeps them;
temperature 0 is greedy decoding (logprobs then at temperature 1). Two layouts, one interface:

- :class:`VLLMServerBackend`: an OpenAI-compatible vLLM server in its own Python environment
  (:mod:`l0_learner.backends.vllm_server`), over HTTP on 127.0.0.1: ``/v1/completions`` with a
  token-id prompt, ``return_token_ids`` and ``logprobs=0``. The learner starts the server
  (``--vllm-server auto``) or uses a running one (``--vllm-server http://127.0.0.1:8000``, started
  with ``VLLM_SERVER_DEV_MODE=1`` and ``--logprobs-mode processed_logprobs``).
- :class:`~l0_learner.backends.vllm_colocated.VLLMColocatedBackend`: ``vllm.LLM`` in the learner's
  process, for one GPU (unverified: no vllm in the learner's environment on the CPU machines).

Weight sync (:meth:`VLLMBackend.sync_weights`, which the trainer calls after every optimizer step
and after loading a checkpoint, before the next rollout): the weights
(:func:`l0_learner.weights.sampler_weights`: HF names, LoRA merged, the tied ``lm_head.weight``
included) are written as ``model.safetensors`` into a directory the engine reads, the engine
reloads them in place (``collective_rpc("reload_weights", weights_path=…)``), and its prefix cache
is reset: KV blocks computed with the old weights would otherwise be reused for every prompt that
starts with the same system prompt, a stale policy that no error reveals. Without
``lm_head.weight`` vLLM keeps its old output layer (it holds its own copy even when the model ties
it). :meth:`VLLMBackend.sync_mismatch` scores a fixed sequence on both sides; the learner's
``charts/logprob_mismatch`` measures the same on every rollout token of every update.

Logprobs are vLLM's ``processed_logprobs``: after temperature and, with ``top_p < 1``, of the
truncated distribution that was sampled (the ``hf`` backend reports the full one there).

Seeds: every rollout gets its own sampling seed from (run seed, policy version, prompt ids, how
often that prompt was sampled under this version) (:class:`RolloutSeeds`), so a row's tokens do
not depend on which rows share its batch, unlike ``hf`` sampling from one global RNG. (vLLM's
batched float arithmetic is still not batch-invariant: a near-tie may flip.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from . import STOP, Generation
from .vllm_server import VLLMServer, VLLMServerError, log_tail, make_server, max_model_len, model_source

WEIGHTS_FILE = "model.safetensors"
PROBE_MESSAGES = [
    {"role": "system", "content": "You answer questions by writing Python code."},
    {"role": "user", "content": "Which city is the capital of France?"},
]
PROBE_ACTION = "<think>I search.</think>\n<code>hits = web_search('capital of France')\nprint(hits)</code>"


class RolloutSeeds:
    """Sampling seeds per rollout that depend on the prompt, not on the batch it is sampled in.

    ``seeds(prompt)`` hashes (run seed, policy version, prompt ids, occurrence) to a 63-bit seed;
    the occurrence counts how often this prompt was sampled under this version, so the rollouts of
    one question (the same first prompt) get different seeds. :meth:`set_version` starts a version.
    """

    def __init__(self, seed: int, version: int = 0) -> None:
        self.seed, self.version = seed, version
        self._seen: Counter[bytes] = Counter()

    def set_version(self, version: int) -> None:
        self.version = version
        self._seen.clear()

    def __call__(self, prompt: Sequence[int]) -> int:
        key = hashlib.blake2b(",".join(map(str, prompt)).encode(), digest_size=16).digest()
        occurrence = self._seen[key]
        self._seen[key] += 1
        tag = f"{self.seed}:{self.version}:{occurrence}:".encode() + key
        return int.from_bytes(hashlib.blake2b(tag, digest_size=8).digest(), "big") >> 1


@dataclass
class Sampling:
    """What every request asks for (one place for both layouts)."""

    max_new_tokens: int = 192
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = STOP
    stop_token_ids: list[int] = field(default_factory=list)

    def params(self, seed: int) -> dict[str, Any]:
        """Sampling parameters of one request (names as vLLM's ``SamplingParams`` has them)."""
        greedy = self.temperature == 0
        return {
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": 1.0 if greedy else self.top_p,
            # Neutral values said explicitly: a server's defaults (a generation_config) must not apply.
            "top_k": 0,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "seed": seed,
            "stop": list(self.stop),
            "include_stop_str_in_output": True,
            "stop_token_ids": list(self.stop_token_ids),
            "logprobs": 0,
        }


def to_generation(
    tokenizer: Any,
    prompt: Sequence[int],
    ids: Sequence[int],
    logprobs: Sequence[float],
    finished: str,
    eos_ids: Sequence[int],
) -> Generation:
    """A :class:`Generation` from an engine's output (``finished``: the engine's finish reason).

    Raises:
        ValueError: When the engine returned a different number of logprobs than tokens.
    """
    ids = [int(i) for i in ids]
    if len(logprobs) != len(ids):
        raise ValueError(f"the engine returned {len(ids)} tokens but {len(logprobs)} logprobs")
    if finished == "length":
        reason = "length"
    elif ids and ids[-1] in eos_ids:
        reason = "eos"
    else:
        reason = "stop"
    return Generation(
        text=tokenizer.decode(ids, skip_special_tokens=True),
        prompt_ids=list(prompt),
        response_ids=ids,
        logprobs=[float(x) for x in logprobs],
        finish_reason=reason,
    )


def write_weights(weights: Mapping[str, Any], directory: str | Path) -> Path:
    """Write ``{name: tensor}`` to ``directory/model.safetensors`` atomically; returns the file."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share memory (a tied output layer): each gets its own copy.
    seen: set[int] = set()
    flat = {}
    for name, tensor in weights.items():
        tensor = tensor.detach().to("cpu")
        ptr = tensor.untyped_storage().data_ptr()
        flat[name] = tensor.clone().contiguous() if ptr in seen else tensor.contiguous()
        seen.add(ptr)
    target = directory / WEIGHTS_FILE
    # The temporary name does not end in .safetensors: a loader that globs the folder skips it.
    tmp = directory / f".{WEIGHTS_FILE}.tmp{os.getpid()}"
    save_file(flat, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, target)
    return target


def probe_sequence(tokenizer: Any) -> tuple[list[int], list[int]]:
    """A fixed (prompt, response) pair that engine and trainer both score."""
    from ..policy import encode_chat

    prompt = encode_chat(tokenizer, PROBE_MESSAGES)
    return prompt, list(tokenizer(PROBE_ACTION, add_special_tokens=False)["input_ids"])


class VLLMBackend:
    """What both layouts share: encoding, seeds, stats and the weight sync.

    Args:
        tokenizer: The policy's tokenizer (prompts are encoded here, responses decoded here).
        weights_dir: Where :meth:`sync_weights` writes; the engine must be able to read it.
        sampling: Sampling settings (``stop_token_ids`` default to the tokenizer's end of turn).
        seed: The run's seed (see :class:`RolloutSeeds`).
    """

    holds_weights: ClassVar[bool] = True
    """The engine samples from its own copy of the policy: :meth:`sync_weights` after every update."""

    def __init__(self, tokenizer: Any, *, weights_dir: str | Path, sampling: Sampling, seed: int = 0) -> None:
        self.tokenizer = tokenizer
        self.weights_dir = Path(weights_dir)
        self.sampling = sampling
        if not sampling.stop_token_ids and tokenizer.eos_token_id is not None:
            sampling.stop_token_ids = [int(tokenizer.eos_token_id)]
        self.seeds = RolloutSeeds(seed)
        self.stats: dict[str, float] = {
            "gen_tokens": 0,
            "gen_seconds": 0.0,
            "prompt_tokens": 0,
            "syncs": 0,
            "sync_seconds": 0.0,
        }

    def generate(self, conversations: list[list[dict[str, str]]]) -> list[Generation]:
        from ..policy import encode_chat

        return self.generate_ids([encode_chat(self.tokenizer, c) for c in conversations])

    def generate_ids(
        self, prompts: Sequence[Sequence[int]], seeds: Sequence[int] | None = None
    ) -> list[Generation]:
        """Sample one response per prompt (token ids in, token ids + logprobs out).

        Args:
            prompts: Prompt token ids.
            seeds: One sampling seed per prompt (default: :class:`RolloutSeeds`).
        """
        if not prompts:
            return []
        if seeds is None:
            seeds = [self.seeds(p) for p in prompts]
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        started = time.perf_counter()
        gens = self._sample(prompts, seeds)
        self.stats["gen_seconds"] += time.perf_counter() - started
        self.stats["gen_tokens"] += sum(len(g.response_ids) for g in gens)
        self.stats["prompt_tokens"] += sum(len(p) for p in prompts)
        return gens

    def sync_weights(self, weights: Mapping[str, Any], version: int | None = None) -> None:
        """Load the trainer's weights into the engine before it samples again.

        Args:
            weights: ``{name: tensor}`` of the whole policy (:func:`l0_learner.weights.sampler_weights`).
            version: The policy version (the iteration the weights come from) for the rollout
                seeds; None counts the syncs.
        """
        started = time.perf_counter()
        write_weights(weights, self.weights_dir)
        self.load_weights_from(self.weights_dir)
        self.seeds.set_version(self.seeds.version + 1 if version is None else version)
        self.stats["syncs"] += 1
        self.stats["sync_seconds"] += time.perf_counter() - started

    def sync_mismatch(self, model: Any) -> float:
        """Mean |engine − trainer| logprob per token of a fixed sequence (temperature 1)."""
        import torch

        from ..policy import response_logprobs

        prompt, response = probe_sequence(self.tokenizer)
        engine = self.score(prompt, response)
        with torch.no_grad():
            lp, _ = response_logprobs(model, [prompt], [response], pad_id=self.tokenizer.pad_token_id)
        trainer = lp[0, lp.shape[1] - len(response) :].float().tolist()
        return sum(abs(a - b) for a, b in zip(engine, trainer, strict=True)) / max(1, len(response))

    def score(self, prompt: Sequence[int], response: Sequence[int]) -> list[float]:
        """The engine's logprobs (temperature 1) of ``response`` after ``prompt``."""
        raise NotImplementedError

    def _sample(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int]) -> list[Generation]:
        raise NotImplementedError

    def load_weights_from(self, directory: str | Path) -> None:
        """Reload the engine's weights from the safetensors in ``directory``; reset its prefix cache."""
        raise NotImplementedError

    def sleep(self) -> None:
        """Free what the engine holds while the trainer steps (the colocated engine overrides it;
        a server in another process keeps its memory)."""

    def close(self) -> None:
        """Release the engine (idempotent)."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class VLLMServerBackend(VLLMBackend):
    """Sample from a vLLM OpenAI-compatible server over HTTP.

    Args:
        tokenizer: The policy's tokenizer.
        base_url: The server, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is accepted).
        weights_dir: Where weight syncs are written; the server must be able to read it.
        sampling: Sampling settings.
        model: The served model name (default: the server's first model).
        seed: The run's seed.
        server: A :class:`~l0_learner.backends.vllm_server.VLLMServer` to stop on :meth:`close`.
        timeout: Seconds one request may take.
        concurrency: Requests in flight at once (the server batches them).
    """

    def __init__(
        self,
        tokenizer: Any,
        base_url: str,
        *,
        weights_dir: str | Path,
        sampling: Sampling | None = None,
        model: str | None = None,
        seed: int = 0,
        server: VLLMServer | None = None,
        timeout: float = 900.0,
        concurrency: int = 256,
    ) -> None:
        import httpx

        super().__init__(tokenizer, weights_dir=weights_dir, sampling=sampling or Sampling(), seed=seed)
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.server = server
        self.timeout, self.concurrency = timeout, concurrency
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0))
        try:
            self.model = model or self._request("GET", "/v1/models")["data"][0]["id"]
        except BaseException:
            self.close()
            raise

    def _error(self, what: str, detail: str) -> VLLMServerError:
        where = ""
        if self.server is not None:
            state = "is running" if self.server.alive() else "has exited"
            tail = log_tail(self.server.log_path)
            where = f"\nthe server {state}; the end of its log ({self.server.log_path}):\n{tail}"
        return VLLMServerError(f"vLLM server {self.base_url}: {what}: {detail}{where}")

    def _answer(self, resp: Any, what: str) -> Any:
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("error", {}).get("message") or resp.text
            except (ValueError, AttributeError):
                detail = resp.text
            raise self._error(what, f"HTTP {resp.status_code}: {str(detail)[:2000]}")
        return resp.json() if resp.content else {}

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx

        try:
            resp = self._client.request(method, self.base_url + path, json=body)
        except httpx.HTTPError as exc:
            raise self._error(f"{method} {path}", repr(exc)) from exc
        return self._answer(resp, f"{method} {path}")

    def _sample(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int]) -> list[Generation]:
        bodies = [
            {"model": self.model, "prompt": list(p), "return_token_ids": True, **self.sampling.params(s)}
            for p, s in zip(prompts, seeds, strict=True)
        ]
        # asyncio, not threads: a stop signal (raised in this thread) cancels every request at once.
        choices = asyncio.run(self._complete_all(bodies))
        return [
            to_generation(
                self.tokenizer,
                prompt,
                c["token_ids"],
                (c.get("logprobs") or {}).get("token_logprobs") or [],
                c.get("finish_reason") or "stop",
                self.sampling.stop_token_ids,
            )
            for prompt, c in zip(prompts, choices, strict=True)
        ]

    async def _complete_all(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import httpx

        gate = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency)
        timeout = httpx.Timeout(self.timeout, connect=10.0)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

            async def one(body: dict[str, Any]) -> dict[str, Any]:
                async with gate:
                    try:
                        resp = await client.post(self.base_url + "/v1/completions", json=body)
                    except httpx.HTTPError as exc:
                        raise self._error("POST /v1/completions", repr(exc)) from exc
                choice = self._answer(resp, "POST /v1/completions")["choices"][0]
                if choice.get("token_ids") is None:
                    raise self._error(
                        "POST /v1/completions", "no token_ids in the answer (needs vLLM >= 0.10.2)"
                    )
                return choice

            return list(await asyncio.gather(*(one(b) for b in bodies)))

    def score(self, prompt: Sequence[int], response: Sequence[int]) -> list[float]:
        ids = [*prompt, *response]
        body = {"model": self.model, "prompt": ids, "max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 0}
        rows = self._request("POST", "/v1/completions", body)["choices"][0]["prompt_logprobs"]
        # Row i holds the logprob of ids[i] (keyed by the token id as a string); row 0 is null.
        return [float(rows[i][str(ids[i])]["logprob"]) for i in range(len(prompt), len(ids))]

    def load_weights_from(self, directory: str | Path) -> None:
        kwargs = {"weights_path": str(Path(directory).resolve())}
        self._request("POST", "/collective_rpc", {"method": "reload_weights", "kwargs": kwargs})
        for _ in range(100):  # refused while KV blocks are in use (requests in flight): none should be
            if self._request("POST", "/reset_prefix_cache").get("success", True):
                return
            time.sleep(0.1)
        raise self._error("POST /reset_prefix_cache", "the prefix cache could not be reset")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()
        if self.server is not None:
            self.server.close()


def from_config(cfg: Any, tokenizer: Any) -> VLLMBackend:
    """The ``vllm`` backend that ``cfg.vllm_server`` asks for, serving ``cfg.model`` until the first sync.

    ``auto`` starts a server (log ``<output_dir>/vllm/server.log``, pid ``…/server.pid``) on rank 0;
    under torchrun the other ranks sample from it too (the trainer syncs its weights from rank 0).
    Weight syncs are written to ``<output_dir>/vllm/weights``.

    Raises:
        ValueError: 'colocated' under torchrun (every rank would hold an engine only rank 0 syncs),
            or a GGUF model (vLLM is given transformers directories and hub ids).
    """
    from ..distributed import Ranks
    from ..models import pick_dtype

    ranks = Ranks.current()
    vdir = Path(cfg.output_dir) / "vllm"
    device = ranks.device(cfg.device)
    dtype = str(pick_dtype(cfg.dtype, device)).removeprefix("torch.")
    sampling = Sampling(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    common: dict[str, Any] = {"weights_dir": vdir / "weights", "sampling": sampling, "seed": cfg.seed}
    if cfg.vllm_server == "colocated":
        if ranks.enabled:
            raise ValueError(
                "vllm_server='colocated' runs in one process; under torchrun use 'auto' or a URL"
            )
        from .vllm_colocated import VLLMColocatedBackend

        source = model_source(cfg.model)
        engine: dict[str, Any] = {"dtype": dtype, "max_model_len": max_model_len(cfg, source)}
        if cfg.vllm_kv_cache_bytes is not None:
            engine["kv_cache_memory_bytes"] = cfg.vllm_kv_cache_bytes
        else:
            engine["gpu_memory_utilization"] = cfg.vllm_gpu_memory_utilization
        return VLLMColocatedBackend(tokenizer, source, **common, **engine)
    url = cfg.vllm_server
    server = None
    if url == "auto":
        if ranks.is_main:
            server = make_server(cfg, device)
            print(f"[vllm] starting a vLLM server with {server.python} (log: {server.log_path})", flush=True)
            server.start()
            (vdir / "server.pid").write_text(f"{server.pid}\n")
            print(f"[vllm] server ready at {server.url} (pid {server.pid})", flush=True)
        url = ranks.broadcast(server.url if server is not None else None)
    try:
        backend = VLLMServerBackend(tokenizer, url, server=server, **common)
    except BaseException:
        if server is not None:
            server.close()
        raise
    source = model_source(cfg.model)
    if server is None and ranks.is_main and Path(source, "config.json").exists():
        # A running server holds whatever it was started with: give it cfg.model's weights, the
        # ones the trainer starts from (a checkpoint's come with the trainer's first sync). A hub
        # id cannot be read from here: the server must have been started with that model.
        try:
            backend.load_weights_from(source)
        except BaseException:
            backend.close()
            raise
    return backend


__all__ = [
    "RolloutSeeds",
    "Sampling",
    "VLLMBackend",
    "VLLMServer",
    "VLLMServerBackend",
    "VLLMServerError",
    "from_config",
    "write_weights",
]
