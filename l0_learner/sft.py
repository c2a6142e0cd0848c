"""Cold start: record oracle demonstrations through the real env, then supervised fine-tuning.

Small models cannot write the think+code format zero-shot (SmolLM2-135M: 0 of 16 well-formed
steps), so RL alone gets no signal. The scripted oracle (``l0_env.policies.OraclePolicy``:
searches the gold supporting titles, reads, submits the gold answer) plays episodes in the real
sandboxed env on *training* questions only; every step becomes one sample (prompt = the exact chat
context the env showed, response = the oracle's action). SFT minimises the token-mean negative
log-likelihood of the action tokens (the prompt is not trained on).

Command line::

    python -m l0_learner.sft --model smollm2 --demos 64 --output-dir runs/sft
    python -m l0_learner.sft --model smollm2 --data my_episodes.jsonl --output-dir runs/sft

``--data`` takes JSONL of samples ``{"messages": [...], "action": "..."}`` (what ``record`` writes)
or of episodes (``EpisodeLog.to_dict()`` lines from the env); for episodes the context is rebuilt
with ``l0_env.context.render_context`` without trimming.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from l0_env.recording import append_jsonl

from .policy import encode_chat, response_logprobs


def record_demonstrations(
    n_samples: int,
    *,
    split: str = "train",
    max_steps: int = 3,
    sandbox: str = "auto",
    seed: int = 0,
    out_path: str | Path | None = None,
    count_tokens: Any = None,
    max_context_tokens: int = 16_000,
) -> list[dict[str, Any]]:
    """Play the gold oracle on training questions until ``n_samples`` step samples are recorded.

    Returns samples ``{"messages", "action", "task_id", "step"}``; also appended to ``out_path``.
    """
    import gymnasium as gym

    import l0_env
    from l0_env.policies import OraclePolicy

    env = gym.make(
        l0_env.ENV_ID,
        split=split,
        max_steps=max_steps,
        sandbox=sandbox,
        count_tokens=count_tokens,
        max_context_tokens=max_context_tokens,
    )
    rng = random.Random(seed)
    n_tasks = len(env.unwrapped.tasks)
    order = list(range(n_tasks))
    rng.shuffle(order)
    samples: list[dict[str, Any]] = []
    try:
        k = 0
        while len(samples) < n_samples:
            # Vary how many pages the oracle reads, so submitting at steps 2 and 3 both occur.
            policy = OraclePolicy("gold", read_steps=rng.choice([1, 2]) if max_steps >= 3 else 1)
            obs, info = env.reset(seed=seed + k, options={"task_index": order[k % n_tasks]})
            k += 1
            done = False
            while not done and len(samples) < n_samples:
                action = policy(obs, info)
                sample = {
                    "messages": obs,
                    "action": action,
                    "task_id": info["task"]["id"],
                    "step": info["step"],
                }
                samples.append(sample)
                if out_path is not None:
                    append_jsonl(out_path, sample)
                obs, _r, terminated, truncated, info = env.step(action)
                done = terminated or truncated
    finally:
        env.close()
    return samples


def load_samples(path: str | Path, *, max_steps: int = 12) -> list[dict[str, Any]]:
    """Read SFT samples from JSONL: sample lines as they are, episode lines expanded per step."""
    from l0_env.context import StepRecord, render_context

    out: list[dict[str, Any]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if "messages" in row and "action" in row:
            out.append(row)
            continue
        if "steps" not in row or "system_prompt" not in row:
            raise ValueError(f"{path}: a line is neither a sample (messages, action) nor an episode (steps)")
        history: list[StepRecord] = []
        notepad: dict[str, Any] = {}
        for t, step in enumerate(row["steps"]):
            ctx = render_context(
                system=row["system_prompt"],
                task=f"Question: {row['task']['question']}",
                history=history,
                notepad=notepad,
                steps_left=max_steps - t,
            )
            out.append({"messages": ctx.messages, "action": step["action"], "task_id": row["task"].get("id")})
            history.append(StepRecord(action=step["action"], observation=step["observation"]))
            notepad = step.get("notepad") or {}
    return out


def tokenize_samples(tokenizer: Any, samples: Sequence[dict[str, Any]]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, action ids) per sample."""
    return [
        (
            encode_chat(tokenizer, s["messages"]),
            list(tokenizer(s["action"], add_special_tokens=False)["input_ids"]),
        )
        for s in samples
    ]


def sft(
    model: Any,
    tokenizer: Any,
    samples: Sequence[dict[str, Any]],
    *,
    epochs: int = 2,
    batch_size: int = 8,
    lr: float = 5e-5,
    seed: int = 0,
    micro_batch_tokens: int = 8192,
    prompt_grad: bool = False,
    progress: bool = True,
) -> list[float]:
    """Fine-tune ``model`` in place on the samples; returns the mean loss of each update.

    ``prompt_grad=False`` (default) runs the prompt under ``no_grad`` (see
    :func:`l0_learner.policy.response_logprobs`): the action tokens' loss is exact, the gradient
    skips the prompt's keys/values, and training is ~2× cheaper on CPU.
    """
    from tqdm.auto import tqdm

    data = tokenize_samples(tokenizer, samples)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    losses: list[float] = []
    model.train()
    n_updates = epochs * math.ceil(len(data) / batch_size)
    bar = tqdm(total=n_updates, disable=not progress, desc="SFT", unit="step")
    for _ in range(epochs):
        order = list(range(len(data)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            batch = sorted(
                (data[i] for i in order[start : start + batch_size]), key=lambda d: len(d[0]) + len(d[1])
            )
            n_tokens = sum(len(r) for _, r in batch)
            total = 0.0
            for mb in _pack(batch, micro_batch_tokens):
                logp, mask = response_logprobs(
                    model,
                    [p for p, _ in mb],
                    [r for _, r in mb],
                    pad_id=tokenizer.pad_token_id,
                    prompt_grad=prompt_grad,
                )
                loss = -(logp * mask).sum() / max(1, n_tokens)
                loss.backward()
                total += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(total)
            bar.update(1)
            bar.set_postfix(loss=f"{total:.3f}")
    bar.close()
    return losses


def _pack(batch: list, budget: int) -> list[list]:
    out: list[list] = [[]]
    for item in batch:
        length = len(item[0]) + len(item[1])
        if out[-1] and (len(out[-1]) + 1) * length > budget:
            out.append([])
        out[-1].append(item)
    return out


@dataclass
class SFTArgs:
    """Supervised fine-tuning on recorded episodes (cold start for small models)."""

    model: str = "smollm2"
    """Model to fine-tune: 'smollm2', 'tiny', a local directory or a hub id."""
    output_dir: str = "runs/sft"
    """Where the fine-tuned model (save_pretrained) and the demonstrations go."""
    data: str | None = None
    """JSONL of samples or episodes; None records oracle demonstrations on training questions."""
    demos: int = 64
    """Step samples to record when data is None."""
    max_steps: int = 3
    """Episode length of the recorded demonstrations (match the RL run's)."""
    epochs: int = 2
    batch_size: int = 8
    lr: float = 5e-5
    seed: int = 0
    sandbox: str = "auto"
    device: str = "auto"


def main(argv: Sequence[str] | None = None) -> Path:
    import tyro

    from .policy import load_policy

    args = tyro.cli(SFTArgs, args=argv, prog="python -m l0_learner.sft")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model, tok = load_policy(args.model, device=args.device)
    if args.data:
        samples = load_samples(args.data, max_steps=args.max_steps)
    else:
        demo_path = out / "demonstrations.jsonl"
        demo_path.unlink(missing_ok=True)
        samples = record_demonstrations(
            args.demos, max_steps=args.max_steps, sandbox=args.sandbox, seed=args.seed, out_path=demo_path
        )
    started = time.perf_counter()
    losses = sft(
        model, tok, samples, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    print(
        f"SFT: {len(samples)} samples, {len(losses)} updates, loss {losses[0]:.3f} → {losses[-1]:.3f}, "
        f"{time.perf_counter() - started:.0f} s; model in {out / 'model'}"
    )
    return out / "model"


if __name__ == "__main__":
    main()
