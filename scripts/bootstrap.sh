#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian-like machine: the system packages the tests and the demo need
# (the CNCF distribution registry, htpasswd, skopeo for the peer benchmarks, runc and busybox-static
# for the runc handler, Python with venv when the virtualenv has to be made), then a virtualenv in
# .venv with exactly the committed lock (requirements/lock.txt) and kubelet-sim itself. Re-running
# it does nothing that is already done; a broken .venv is made again.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
# Never the interpreter of the .venv this script may delete and re-create: an activated .venv puts
# its own python3 first on PATH, and removing .venv would remove the interpreter doing the work.
case "$(command -v "$python" 2>/dev/null || true)" in
  "$PWD"/.venv/*) python=$("$python" -c 'import sys; print(sys._base_executable)' 2>/dev/null || echo python3) ;;
esac

# A .venv whose pip does not run (interrupted creation, a Python upgraded underneath) is rebuilt.
venv_ok() { [ -x .venv/bin/python ] && .venv/bin/python -m pip --version >/dev/null 2>&1; }

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# The runc handler's integration tests and demo: runc runs the containers, and the runnable test
# image is built from the static busybox (Debian's `busybox` package is dynamically linked).
# runc lives in /usr/sbin, which is not on a Debian user's PATH.
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
[ -x /bin/busybox ] || missing+=(busybox-static)
if ! venv_ok && ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  # Debian splits ensurepip out of python3: without python3-venv, `python3 -m venv` fails.
  missing+=(python3 python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    # -n: fail at once instead of waiting for a password nobody will type (CI).
    sudo="sudo -n"
  fi
  echo "bootstrap: installing ${missing[*]}" >&2
  $sudo apt-get -o Acquire::Retries=3 update -qq
  # The package's service is not started here: the tests and the demo run their own registries.
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=3 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi

"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "bootstrap: Python >= 3.11 is required ($python is $("$python" --version 2>&1))" >&2
  exit 1
}
if ! venv_ok; then
  if [ -e .venv ]; then
    echo "bootstrap: .venv is broken (its pip does not run); creating it again" >&2
    rm -rf .venv
  fi
  "$python" -m venv .venv
fi
# The virtualenv holds exactly requirements/lock.txt (versions and hashes), then the project itself
# without dependencies or build isolation (its build backend is in the lock too). A changed lock or
# pyproject.toml rebuilds .venv from scratch, so nothing from an older resolution lingers.
stamp=.venv/.kubelet-sim-lock
want=$(cat requirements/lock.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if [ -f "$stamp" ] || [ -f .venv/.kubelet-sim-installed ]; then
    echo "bootstrap: requirements/lock.txt or pyproject.toml changed; rebuilding .venv" >&2
    rm -rf .venv
    "$python" -m venv .venv
  fi
  echo "bootstrap: installing requirements/lock.txt into .venv" >&2
  pip=(.venv/bin/python -m pip install -q --disable-pip-version-check --no-input)
  "${pip[@]}" --require-hashes --no-deps -r requirements/lock.txt
  "${pip[@]}" --no-deps --no-build-isolation -e .
  .venv/bin/python -m pip check >/dev/null || {
    .venv/bin/python -m pip check >&2
    echo "bootstrap: the lock is inconsistent; refresh it with bash scripts/lock.sh" >&2
    exit 1
  }
  echo "$want" > "$stamp"
fi
