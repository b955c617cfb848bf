#!/usr/bin/env bash
# The main job on a built-in default: set up, then run the demo (a local registry seeded with synthetic
# multi-arch images, pulled through the engine into a fresh store). Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/kubelet-sim demo "$@"
