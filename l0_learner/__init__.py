"""The reference learner for L0 Gym: train an LLM agent on ``L0Notebook-v0`` with L0's agentic PG.

Commands::

    python -m l0_learner.run --preset cpu-demo     # demos → SFT → RL on SmolLM2-135M, before/after table
    python -m l0_learner.run --preset tiny         # a locally built tiny model: a smoke run in seconds
    python -m l0_learner.sft --model smollm2       # cold start on oracle demonstrations
    python -m l0_learner.eval --model runs/cpu-demo/final --data hotpotqa-dev --n 50

Modules: ``config`` (one dataclass, presets, files, CLI), ``policy`` (model loading, chat template,
token logprobs), ``backends`` (``hf`` generate, ``openai`` HTTP), ``envs`` (indexed vector env),
``rollout`` (token-in/token-out episodes), ``algorithms`` (AgenticPG, GRPO and their pure math),
``runs`` (run directory, checkpoints), ``sft``, ``eval``, ``toy_env`` and ``tiny`` (for tests).
Importing this package imports no torch; the submodules do.
"""
