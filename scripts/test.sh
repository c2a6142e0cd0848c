#!/usr/bin/env bash
# Set up (idempotent) and run the default test suite. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m slow` for the slow tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m mypy  # the packages' types ([tool.mypy] in pyproject.toml)
.venv/bin/python -m pytest -q "$@"
