"""``--executor ray`` on a real local Ray cluster (2 CPUs) against the real registry.

Every test starts its own local cluster through :func:`run_ray` (or the command line), which shuts
it down again; Ray's files go to its own temporary folder (``/tmp/ray``), not the tree.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from kubelet_sim.errors import KubeletSimError
from kubelet_sim.sim.registry import RegistryFactory, RegistryProcess
from kubelet_sim.workloads import parse_workload, seed_workload
from kubelet_sim.workloads.rayexec import run_ray
from kubelet_sim.workloads.report import merge_records
from kubelet_sim.workloads.shards import agreed_start

pytestmark = [pytest.mark.registry, pytest.mark.timeout(180)]

WORKLOAD = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: NAME
seed: 5
bases:
  - {name: base, layers: [64KiB]}
images:
  - {repository: PREFIX/web, tags: ["1.0"], base: base, layers: [32KiB, 16KiB]}
  - {repository: PREFIX/side, tags: ["1.0"], layers: [8KiB]}
nodes:
  - {name: pool, count: 4, kubelet: {registryPullQPS: 0}}
pods:
  - name: web
    count: 8
    spec:
      containers:
        - {name: web, image: "PREFIX/web:1.0"}
        - {name: side, image: "PREFIX/side:1.0"}
run: {timeout: 30s}
"""

# The registry's access log lines (distribution's combined log format): one per request answered.
ACCESS = re.compile(r'"(?:GET|HEAD|POST|PUT|PATCH|DELETE) /v2/\S* HTTP/[\d.]+" \d{3} ')


def _write(tmp_path: Path, name: str, prefix: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(WORKLOAD.replace("NAME", name).replace("PREFIX", prefix))
    return path


def _access_lines(registry: RegistryProcess) -> int:
    return len(ACCESS.findall(registry.log_path.read_text(errors="replace")))


def test_two_shards_as_ray_tasks_agree_with_the_nodes_and_the_registry(
    registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    # A registry of its own with the access log on: its count of the shards' requests is the truth.
    registry = registry_factory(extra={"log": {"level": "warn", "accesslog": {"disabled": False}}})
    path = _write(tmp_path, "ray-agree", "ray-agree")
    workload = parse_workload(path.read_text(), str(path))
    anyio.run(seed_workload, workload, registry.host)
    seeded = _access_lines(registry)
    assert seeded > 0  # the access log is on

    began = time.monotonic()
    records = run_ray(
        path, 2, registry.host, start_at=agreed_start(4, 2), store="disk", timeout=None,
        address=None,
    )  # fmt: skip
    elapsed = time.monotonic() - began

    assert [r["shard"] for r in records] == [{"index": 0, "count": 2}, {"index": 1, "count": 2}]
    assert [len(r["nodes"]) for r in records] == [2, 2]
    assert all(not r["run"]["timed_out"] for r in records)
    assert all(r["run"]["store"] == "disk" for r in records)
    report = merge_records(records)
    s = report["summary"]
    assert report["run"]["shards"] == 2
    assert s["nodes"] == 4
    assert s["pods"] == s["pods_ready"] == 8
    by_code: Counter[str] = Counter()
    for record in records:
        for node in record["nodes"]:
            by_code.update(node["metrics"]["registry_requests_by_code"])
    assert s["registry_requests"] == sum(by_code.values()) > 0
    assert s["registry_requests_by_status"] == dict(by_code)
    assert _access_lines(registry) - seeded == s["registry_requests"]
    assert elapsed < 90


def test_a_failing_shard_is_named_with_its_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        "apiVersion: kubelet-sim.dev/v1alpha1\nkind: Workload\nname: broken\nnodes: 3\n"
    )
    with pytest.raises(KubeletSimError) as info:
        run_ray(
            path, 2, "127.0.0.1:9", start_at=time.time(), store="memory", timeout=1.0,
            address=None,
        )  # fmt: skip
    message = str(info.value)
    for index in (0, 1):
        assert f"shard {index}/2 failed: ConfigError: {path}:4: nodes: expected a list" in message
    assert "Traceback" not in message
    assert "Ray" not in message  # the shard's error, not Ray's wrapping


def test_bench_command_with_the_ray_executor(registry: RegistryProcess, tmp_path: Path) -> None:
    path = _write(tmp_path, "ray-cli", "ray-cli")
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "kubelet_sim", "bench", str(path), "--shards", "2",
        "--executor", "ray", "--registry", registry.host, "--no-plots", "--quiet",
        "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=150, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["shards"] == 2
    assert report["summary"]["pods"] == report["summary"]["pods_ready"] == 8


def test_virtual_shards_as_ray_tasks_merge_into_the_single_process_run(tmp_path: Path) -> None:
    """``--virtual --executor ray``: each task models its share of the registry; with an outage
    and no bandwidth limit the merged pods and registry view are the single process's."""
    path = _write(tmp_path, "ray-virtual", "rv")
    text = path.read_text().replace("run: {timeout: 30s}", "run: {timeout: 10m}")
    path.write_text(
        text + "faults: {windows: [{kind: outage, start: 0s, end: 40s}]}\n"
        "virtual: {registry: {latency: 3ms, auth: token}}\n"
    )
    reports = {}
    for name, extra in (("one", []), ("ray", ["--shards", "2", "--executor", "ray"])):
        out = tmp_path / name
        argv = [
            sys.executable, "-m", "kubelet_sim", "bench", str(path), "--virtual", "--no-plots",
            "--quiet", "--out", str(out), *extra,
        ]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=150, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        reports[name] = json.loads((out / "report.json").read_text())
    one, ray = reports["one"], reports["ray"]
    assert ray["run"]["shards"] == 2
    assert ray["summary"]["pods_ready"] == one["summary"]["pods_ready"] == 8
    ready = {p["name"]: p["ready"] for p in one["pods"]}
    assert ready == {p["name"]: p["ready"] for p in ray["pods"]}
    assert min(ready.values()) >= 40.0  # every pod waited out the outage
    assert ray["registry_view"]["totals"]["requests"] == one["registry_view"]["totals"]["requests"]
    assert ray["registry_view"]["outages"] == one["registry_view"]["outages"]
