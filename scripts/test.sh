#!/usr/bin/env bash
# The whole test run: set-up, lint, format check, strict types (package, tests, benchmarks), the
# import contracts (pyproject.toml [tool.importlinter]), then every test (including those that
# start the real distribution registry on loopback). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# The kubectl tests drive the real client (tests/integration/test_kubectl.py). It is not in
# Debian's archive at a usable version (kubernetes-client there is 1.20), so it is not installed
# here: say so plainly instead of failing deep inside pytest.
kubectl_minor=$(kubectl version --client -o json 2>/dev/null \
  | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -n1 || true)
if [ -z "$kubectl_minor" ] || [ "$kubectl_minor" -lt 28 ]; then
  echo "test.sh: kubectl >= v1.28 (v1.32 on CI machines) is required for the kubectl tests;" \
    "found: $(command -v kubectl || echo none) ${kubectl_minor:+v1.$kubectl_minor}." \
    "Install it from https://kubernetes.io/docs/tasks/tools/ and run again." >&2
  exit 1
fi
# Byte-compiled modules are cached under .venv, never in the tree: the tests start many child
# interpreters (daemons, crash writers, CLI runs) that would otherwise compile everything again.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="$PWD/.venv/pycache"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict kubelet_sim
.venv/bin/mypy --strict tests benchmarks
.venv/bin/lint-imports --no-cache
# A hang fails here, naming itself, well before the CI job's 90-minute limit. SIGINT first, so
# pytest prints where it was and runs fixture teardown (stopping the registries it started).
run_pytest() {
  local status=0
  timeout --signal=INT --kill-after=2m 75m .venv/bin/pytest "$@" || status=$?
  if [ "$status" -eq 124 ]; then
    echo "test.sh: pytest did not finish within 75 minutes; stopped" >&2
  elif [ "$status" -eq 137 ]; then
    echo "test.sh: pytest was killed (75-minute timeout plus 2 minutes' grace, or out of memory)" >&2
  fi
  return "$status"
}
if [ "$#" -gt 0 ]; then
  run_pytest "$@"  # what the caller asked for, in one process
else
  # The unit tests on both cores (pytest-xdist); then the tests against the real registry in one
  # process, where timing-sensitive runs (signals mid-pull, outages) do not compete for the CPU.
  run_pytest -n 2 tests/unit
  run_pytest tests/integration
fi
