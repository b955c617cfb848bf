#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian-like machine: the system packages the tests and the demo need
# (the CNCF distribution registry, htpasswd, skopeo for the peer benchmarks), then a virtualenv in .venv
# with kubelet-sim and its test dependencies. Re-running it does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "bootstrap: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  # The package's service is not started here: the tests and the demo run their own registries.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "bootstrap: Python >= 3.11 is required ($python is $("$python" --version 2>&1))" >&2
  exit 1
}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.kubelet-sim-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing Python dependencies into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
