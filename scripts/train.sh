#!/usr/bin/env bash
# Set up (idempotent) and run the main job: the learner on the embedded defaults (SmolLM2-135M,
# bundled HotpotQA, local BM25, sandboxed notebooks): evaluate → oracle demonstrations → SFT →
# evaluate → agentic policy gradient → evaluate, with the before/after table at the end.
# Extra flags go to `python -m l0_learner.run` (e.g. --resume, --output-dir, --iterations).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m l0_learner.run --preset cpu-demo "$@"
