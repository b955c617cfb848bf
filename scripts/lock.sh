#!/usr/bin/env bash
# Refresh requirements/lock.txt, the exact versions and hashes that bootstrap.sh installs, from
# pyproject.toml (runtime + the test and ray extras) and requirements/build.in (the build backend).
# Run it after changing a dependency in pyproject.toml, or to take upgrades:
#   bash scripts/lock.sh                      # keep current pins where they still satisfy pyproject
#   bash scripts/lock.sh --upgrade            # newest versions of everything
#   bash scripts/lock.sh --upgrade-package X  # newest X only
# uv runs from a throwaway virtualenv at a pinned version; the lock works for Python >= 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
uv_version=0.13.9
tool=$(mktemp -d)
trap 'rm -rf "$tool"' EXIT
python3 -m venv "$tool"
"$tool/bin/python" -m pip install -q --disable-pip-version-check "uv==$uv_version"
"$tool/bin/uv" pip compile pyproject.toml requirements/build.in --extra test --extra ray \
  --generate-hashes --universal --python-version 3.11 --quiet \
  --custom-compile-command "bash scripts/lock.sh" -o requirements/lock.txt "$@"
echo "lock.sh: requirements/lock.txt refreshed; run bash scripts/test.sh" >&2
