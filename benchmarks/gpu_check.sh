#!/usr/bin/env bash
# GPU check of the learner (issue 10), at most 10 minutes: a Qwen2.5-0.5B-shaped model with random
# weights built locally (no hub access), rollouts through vLLM (where a python with vllm is found)
# and the hf sampler, then one bfloat16 update with float32 master weights; tokens/s and peak GPU
# memory printed, results in gpu_check.json. See benchmarks/gpu_check.py for what it measures.
#
#   bash benchmarks/gpu_check.sh                       # on a GPU machine
#   bash benchmarks/gpu_check.sh --size 1.5b           # any gpu_check.py flag passes through
#   bash benchmarks/gpu_check.sh --device cpu --small  # the CPU dry run (about a minute)
#
# A GPU machine without PyPI whose Python has torch and transformers but not the env's pure-Python
# dependencies (gymnasium, jupyter_client, nbformat, ...; the trainer imports l0_env): fetch them as
# wheels where PyPI is reachable, carry the folder along, and this script installs them into
# /tmp/l0_site first:
#
#   bash benchmarks/gpu_check.sh --fetch-wheels        # writes .whl/ (~3 MB; Python 3.12, x86-64)
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(gymnasium farama-notifications jupyter_client jupyter_core traitlets tornado pyzmq nbformat
        fastjsonschema jsonschema jsonschema-specifications referencing rpds-py platformdirs)
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  mkdir -p .whl
  for name in "${WHEELS[@]}"; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$name"
  done
  du -sh .whl
  echo "carry .whl to the GPU machine (and keep it out of git: echo /.whl/ >> .git/info/exclude)"
  exit 0
fi

if ! "$PY" -c "import torch, transformers" 2>/dev/null; then
  echo "error: $PY cannot import torch and transformers; set PYTHON=/path/to/python" >&2
  exit 2
fi
if ! "$PY" -c "import gymnasium, jupyter_client, nbformat" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/l0_site .whl/*.whl
    export PYTHONPATH="/tmp/l0_site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "error: $PY lacks the env's dependencies (gymnasium, jupyter_client, nbformat): pip install -e .," \
         "or run 'bash benchmarks/gpu_check.sh --fetch-wheels' where PyPI is reachable and carry .whl/" >&2
    exit 2
  fi
fi

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec timeout 600 "$PY" benchmarks/gpu_check.py "$@"
