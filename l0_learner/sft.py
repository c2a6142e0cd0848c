"""Cold start: record oracle demonstrations through the real env, then supervised fine-tuning.

Small models cannot write the think+code format zero-shot (SmolLM2-135M: 0 of 16 well-formed
steps), so RL alone gets no signal. The scripted oracle (``l0_env.policies.OraclePolicy`` with
``lookup="question"``: searches the question, prints the top hits, submits the gold answer) plays
episodes in the real sandboxed env on *training* questions only. Only episodes whose answer can
be read off the hits (or is yes/no) are kept, so the demonstrations teach looking the answer up,
not guessing it. Every step becomes one sample (prompt = the exact chat context the env showed,
response = the oracle's action). SFT minimises the token-mean negative log-likelihood of the
action tokens (the prompt is not trained on).

Command line::

    python -m l0_learner.sft --model smollm2 --demos 64 --output-dir runs/sft
    python -m l0_learner.sft --model smollm2 --data my_episodes.jsonl --output-dir runs/sft

``--data`` takes JSONL of samples ``{"messages": [...], "action": "..."}`` (what ``record`` writes)
or of episodes (``EpisodeLog.to_dict()`` lines from the env), an episode notebook (``.ipynb``
that the env saved) or a folder of them; for episodes the context is rebuilt with
``l0_env.context.render_context`` without trimming.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from l0_env.recording import append_jsonl

from .models import compute_context
from .packing import pack_by_tokens
from .policy import encode_chat, response_logprobs


def record_demonstrations(
    n_samples: int,
    *,
    tasks: str | Sequence[Mapping[str, Any]] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    max_steps: int = 3,
    sandbox: str = "auto",
    seed: int = 0,
    out_path: str | Path | None = None,
    count_tokens: Any = None,
    max_context_tokens: int = 16_000,
    lookup: str = "question",
    only_visible: bool = True,
    stats: dict[str, int] | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Play the gold oracle on training questions until ``n_samples`` step samples are recorded.

    Args:
        tasks: The questions: a data spec (:mod:`l0_learner.data`) or task dicts; None: those of
            ``env_kwargs``, else the bundled training questions.
        env_kwargs: ``L0Notebook-v0`` settings (e.g. :func:`l0_learner.envs.notebook_env_kwargs`);
            they take precedence over ``max_steps``, ``sandbox``, ``count_tokens`` and
            ``max_context_tokens``.
        lookup: The oracle's lookup (`l0_env.policies.OraclePolicy`): "question" searches the
            question and prints the top hits, which a policy can imitate; "titles" reads the gold
            supporting pages.
        only_visible: Keep an episode only if its gold answer could be read off the context before
            submitting (`l0_env.policies.answer_visible`). Otherwise a demonstration teaches the
            model to produce answers it had no way to know, i.e. to guess.
        stats: If given, filled with ``episodes`` played and ``kept``.
        progress: Show a progress bar over the recorded steps.

    Returns:
        Samples ``{"messages", "action", "task_id", "step"}`` (whole episodes; the last one may be
        cut to ``n_samples``); also appended to ``out_path``.
    """
    import gymnasium as gym
    from tqdm.auto import tqdm

    import l0_env
    from l0_env.policies import OraclePolicy, answer_visible

    from .data import load_task_dicts

    if tasks is None:
        tasks = (env_kwargs or {}).get("tasks", "hotpotqa-train")
    task_list = load_task_dicts(tasks) if isinstance(tasks, str) else [dict(t) for t in tasks]
    settings: dict[str, Any] = {
        "max_steps": max_steps,
        "sandbox": sandbox,
        "count_tokens": count_tokens,
        "max_context_tokens": max_context_tokens,
        **dict(env_kwargs or {}),
        "tasks": task_list,
    }
    env = gym.make(l0_env.ENV_ID, **settings)
    notebook = env.unwrapped
    assert isinstance(notebook, l0_env.NotebookEnv)  # what gym.make(ENV_ID) builds
    rng = random.Random(seed)
    n_tasks = len(notebook.tasks)
    order = list(range(n_tasks))
    rng.shuffle(order)
    samples: list[dict[str, Any]] = []
    played = kept = 0
    bar = tqdm(total=n_samples, disable=not progress, desc="demonstrations", unit="step")
    try:
        while len(samples) < n_samples:
            if only_visible and played >= n_tasks and kept == 0:
                raise RuntimeError(
                    f"no oracle episode on the {n_tasks} questions shows its answer in the context; "
                    "use only_visible=False or another search backend"
                )
            if played >= n_tasks * (1 if lookup == "question" else 4):
                break  # the question oracle replays a question identically: one pass is all there is
            # Vary how many pages the title oracle reads, so submitting at steps 2 and 3 both occur.
            read_steps = rng.choice([1, 2]) if max_steps >= 3 else 1
            policy = OraclePolicy("gold", read_steps=read_steps, lookup=lookup)
            obs, info = env.reset(seed=seed + played, options={"task_index": order[played % n_tasks]})
            played += 1
            episode: list[dict[str, Any]] = []
            done = False
            while not done:
                action = policy(obs, info)
                episode.append(
                    {"messages": obs, "action": action, "task_id": info["task"]["id"], "step": info["step"]}
                )
                obs, _r, terminated, truncated, info = env.step(action)
                done = terminated or truncated
            if only_visible and not answer_visible(info["task"]["answers"], episode[-1]["messages"]):
                continue
            kept += 1
            for sample in episode[: n_samples - len(samples)]:
                samples.append(sample)
                bar.update(1)
                if out_path is not None:
                    append_jsonl(out_path, sample)
            bar.set_postfix(kept=f"{kept}/{played}")
    finally:
        bar.close()
        env.close()
    if stats is not None:
        stats.update(episodes=played, kept=kept)
    return samples


def load_samples(path: str | Path, *, max_steps: int = 12) -> list[dict[str, Any]]:
    """Read SFT samples from JSONL, from an ``.ipynb`` episode notebook, or from a folder of them.

    JSONL lines are samples (``messages``, ``action``) taken as they are, or episodes
    (``EpisodeLog.to_dict()``) expanded per step; notebooks are episodes the env saved
    (`l0_env.recording.notebook_to_episode`). For episodes the context of each step is rebuilt
    with `l0_env.context.render_context` (no trimming; ``max_steps`` sets the budget notice).

    Raises:
        ValueError: A line or notebook that is none of these, or a folder without notebooks.
    """
    from l0_env.recording import notebook_to_episode

    path = Path(path)
    if path.is_dir():
        notebooks = sorted(path.glob("*.ipynb"))
        if not notebooks:
            raise ValueError(f"{path}: a folder without .ipynb notebooks")
        return [s for nb in notebooks for s in _episode_samples(notebook_to_episode(nb), max_steps)]
    if path.suffix == ".ipynb":
        try:
            return _episode_samples(notebook_to_episode(path), max_steps)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    out: list[dict[str, Any]] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "messages" in row and "action" in row:
            out.append(row)
        elif "steps" in row and "system_prompt" in row:
            out.extend(_episode_samples(row, max_steps))
        else:
            raise ValueError(f"{path}:{n}: neither a sample (messages, action) nor an episode (steps)")
    return out


def _episode_samples(episode: dict[str, Any], max_steps: int) -> list[dict[str, Any]]:
    from l0_env.context import StepRecord, render_context, task_message

    out: list[dict[str, Any]] = []
    history: list[StepRecord] = []
    notepad: dict[str, Any] = {}
    for t, step in enumerate(episode["steps"]):
        ctx = render_context(
            system=episode["system_prompt"],
            task=task_message(
                episode["task"]["question"],
                [os.path.basename(f) for f in episode["task"].get("files") or ()],
            ),
            history=history,
            notepad=notepad,
            steps_left=max_steps - t,
        )
        out.append({"messages": ctx.messages, "action": step["action"], "task_id": episode["task"].get("id")})
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
    compute = params[0].dtype if params else torch.float32
    if compute != torch.float32:
        # Trainable weights in float32, computed in their original dtype under autocast: a
        # bfloat16 weight near 0.02 does not move by an update below one ulp (~1e-4), so SFT on
        # bfloat16 weights would silently learn little (the trainer does the same; see policy.py).
        for p in params:
            p.data = p.data.float()
    autocast = compute_context(
        params[0].device if params else torch.device("cpu"), None if compute == torch.float32 else compute
    )
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
            batch = [data[i] for i in order[start : start + batch_size]]
            n_tokens = sum(len(r) for _, r in batch)
            total = 0.0
            for mb in pack_by_tokens(batch, micro_batch_tokens, length=lambda d: len(d[0]) + len(d[1])):
                with autocast:
                    logp, mask = response_logprobs(
                        model,
                        [p for p, _ in mb],
                        [r for _, r in mb],
                        pad_id=tokenizer.pad_token_id,
                        prompt_grad=prompt_grad,
                    )
                loss = -(logp.float() * mask).sum() / max(1, n_tokens)
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


@dataclass
class SFTArgs:
    """Supervised fine-tuning on recorded episodes (cold start for small models)."""

    model: str = "smollm2"
    """Model to fine-tune: 'smollm2', 'tiny', a local directory or a hub id."""
    output_dir: str = "runs/sft"
    """Where the fine-tuned model (save_pretrained) and the demonstrations go."""
    data: str | None = None
    """JSONL of samples or episodes, an episode .ipynb, or a folder of them (a run's notebooks/);
    None records oracle demonstrations on training questions."""
    demos: int = 64
    """Step samples to record when data is None."""
    tasks: str = "hotpotqa-train"
    """Questions to record the demonstrations on (a data spec, see l0_learner.data)."""
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

    from .models import load_policy

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
            args.demos,
            tasks=args.tasks,
            max_steps=args.max_steps,
            sandbox=args.sandbox,
            seed=args.seed,
            out_path=demo_path,
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
