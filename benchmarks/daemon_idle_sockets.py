"""How many idle API connections a daemon survives, and how it answers while they are open.

Starts ``kubelet-sim run`` (no pods), opens idle TCP connections to its API in steps, and after
each step times ``GET /healthz``: the daemon must keep answering. Run once with the soft file
limit the daemon raises to its hard limit (the default), once with a hard limit of 1024 (the
old soft default, where the daemon used to exit at ~1,100 connections).

    .venv/bin/python benchmarks/daemon_idle_sockets.py [--steps 500,1100,3000,6000]
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from kubelet_sim.sim.registry import free_port


def _start(work: Path, preexec: Callable[[], None] | None) -> tuple[subprocess.Popen[bytes], int]:
    config = work / "kubelet.yaml"
    config.write_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n")
    port = free_port()
    log = (work / f"daemon-{port}.log").open("wb")
    argv = [sys.executable, "-m", "kubelet_sim", "run", "--config", str(config)]
    argv += ["--root", str(work / f"root-{port}"), "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("daemon did not start")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(label: str, steps: list[int], preexec: Callable[[], None] | None) -> None:
    with tempfile.TemporaryDirectory(prefix="ksim-idle-") as tmp:
        proc, port = _start(Path(tmp), preexec)
        conns: list[socket.socket] = []
        try:
            for target in steps:
                while len(conns) < target:
                    conns.append(socket.create_connection(("127.0.0.1", port), timeout=10))
                started = time.perf_counter()
                try:
                    status = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__  # type: ignore[assignment]
                took = (time.perf_counter() - started) * 1000
                running = proc.poll() is None
                alive = "alive" if running else f"EXITED {proc.returncode}"
                rss = _rss_mib(proc.pid) if running else 0.0
                print(f"{label:<28} {target:>6} idle  /healthz {status} in {took:7.1f} ms  "
                      f"daemon {alive}, RSS {rss:.0f} MiB")  # fmt: skip
        finally:
            for conn in conns:
                conn.close()
            proc.terminate()
            proc.wait(15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="500,1100,3000,6000")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process opens them all
    os.environ["PYTHONUNBUFFERED"] = "1"
    run(f"hard limit {hard}", steps, None)

    def old_default() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    run("hard limit 1024", steps, old_default)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
