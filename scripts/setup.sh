#!/usr/bin/env bash
# Install everything L0 Gym needs into ./.venv (idempotent): bubblewrap from apt when running as
# root, a virtual environment, the package with its dev extras. Set L0_WITH_LEARNER=1 to add the
# learner's extras (torch, transformers).
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
if [ "${L0_WITH_LEARNER:-0}" = 1 ]; then
    # The CPU build of torch; a GPU user keeps their own build (pyproject asks for a range).
    .venv/bin/python -m pip install -q "torch==2.13.0"
    .venv/bin/python -m pip install -q -e ".[dev,pettingzoo,server,learner]"
else
    .venv/bin/python -m pip install -q -e ".[dev,pettingzoo,server]"
fi
echo "setup: ready ($(.venv/bin/python --version), bwrap: $(command -v bwrap || echo missing))"
