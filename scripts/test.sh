#!/usr/bin/env bash
# The whole test run: set-up, lint, format check, strict types, then every test (including those that
# start the real distribution registry on loopback). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict kubelet_sim
.venv/bin/pytest "$@"
