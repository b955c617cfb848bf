"""Wall time of short CLI commands against the interpreter's own start-up, side by side.

Runs each command ``--runs`` times as a fresh process (the way a user or a script calls it) and
prints the median and best wall time, and the median minus the bare ``python -c pass`` floor.
The issue's target: ``kubelet-sim --help`` and ``kubelet-sim ref busybox`` under 150 ms.

    .venv/bin/python benchmarks/cli_startup.py [--runs 21]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).with_name("kubelet-sim")
CASES: list[tuple[str, list[str]]] = [
    ("python -c pass (floor)", [sys.executable, "-c", "pass"]),
    ("python -S -c pass", [sys.executable, "-S", "-c", "pass"]),
    ("kubelet-sim --help", [str(BIN), "--help"]),
    ("kubelet-sim --version", [str(BIN), "--version"]),
    ("kubelet-sim ref busybox", [str(BIN), "ref", "busybox"]),
    (
        "kubelet-sim ref --output json nginx:1.27",
        [str(BIN), "ref", "--output", "json", "nginx:1.27"],
    ),
    ("kubelet-sim pull --help", [str(BIN), "pull", "--help"]),
    ("kubelet-sim images --help", [str(BIN), "images", "--help"]),
]


def measure(argv: list[str], runs: int) -> list[float]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run(argv, capture_output=True, check=True, env=env)  # warm the page cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    floor = None
    print(f"{'command':<44} {'median':>8} {'best':>8} {'-floor':>8}")
    for label, argv in CASES:
        times = measure(argv, args.runs)
        median = statistics.median(times)
        if floor is None:
            floor = median
        print(
            f"{label:<44} {median * 1000:7.1f}ms {min(times) * 1000:7.1f}ms "
            f"{(median - floor) * 1000:7.1f}ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
