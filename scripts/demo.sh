#!/usr/bin/env bash
# Set up (idempotent) and run the env's main job: scripted episodes in the sandboxed notebook,
# saved as notebooks under runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m l0_env.demo --out runs/demo "$@"
