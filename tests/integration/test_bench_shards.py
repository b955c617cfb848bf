"""Sharded bench runs against the real registry: the merged report counts what the nodes did.

The registry logs every request it served (its access log), so the merged report of shards run as
separate processes can be checked against the registry's own count, and against the Prometheus
counters of every node, and against the same workload run in one process.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kubelet_sim.cli.main import configure_logging, main
from kubelet_sim.sim.registry import RegistryProcess
from kubelet_sim.workloads import percentiles
from kubelet_sim.workloads.report import SHARD_SCHEMA

pytestmark = pytest.mark.registry

WORKLOAD = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: shards
seed: 31
bases:
  - {name: base, layers: [200KiB]}
images:
  - {repository: shards/agent, tags: ["1.0"], base: base, layers: [40KiB]}
  - {repository: shards/web, tags: ["1.0"], base: base, layers: [60KiB, 30KiB]}
nodes:
  - {name: small, count: 3, kubelet: {registryPullQPS: 0}}
  - name: wide
    count: 2
    kubelet: {serializeImagePulls: false, maxParallelImagePulls: 2, registryPullQPS: 0}
pods:
  - name: agent
    spec: {containers: [{name: agent, image: "shards/agent:1.0"}]}
    placement: every-node
  - name: web
    count: 10
    spec: {containers: [{name: web, image: "shards/web:1.0"}]}
    arrival: {rate: 40}
run: {timeout: 60s}
"""


@pytest.fixture(scope="module")
def logged(registry_factory: Any) -> RegistryProcess:
    """A registry that logs every request it serves."""
    process: RegistryProcess = registry_factory(access_log=True)
    return process


def node_requests(report: dict[str, Any]) -> int:
    """Registry answers as the nodes' own Prometheus counters saw them."""
    total: Counter[str] = Counter()
    for node in report["nodes"]:
        total.update(node["metrics"]["registry_requests_by_code"])
    return sum(total.values())


def served(registry: RegistryProcess) -> int:
    return sum(1 for line in registry.access_log() if "kubelet-sim/" in line)


def test_two_shard_processes_merge_into_what_one_process_reports(
    logged: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("warning")
    path = tmp_path / "shards.yaml"
    path.write_text(WORKLOAD)
    assert main(["seed", str(path), "--registry", logged.host]) == 0
    capsys.readouterr()
    common = ["--registry", logged.host, "--no-seed", "--quiet", "--no-plots"]

    before = served(logged)
    assert main(["bench", str(path), "--out", str(tmp_path / "one"), *common]) == 0
    one_served = served(logged) - before
    one = json.loads((tmp_path / "one" / "report.json").read_text())

    before = served(logged)
    argv = ["bench", str(path), "--shards", "2", "--out", str(tmp_path / "two"), *common]
    assert main(argv) == 0
    two_served = served(logged) - before
    two = json.loads((tmp_path / "two" / "report.json").read_text())

    for report, count in ((one, one_served), (two, two_served)):
        s = report["summary"]
        assert s["pods"] == s["pods_ready"] == 15  # every pod counted, every pod ready
        assert report["run"]["timed_out"] is False
        assert s["registry_requests"] == node_requests(report) == count > 0
        times = [p["seconds"] for p in report["pods"]]
        assert s["time_to_ready"] == percentiles(times)  # from the merged pods, not averaged
    assert two["run"]["shards"] == 2
    assert two["summary"]["resources"]["processes"] == 2
    assert sorted(n["name"] for n in two["nodes"]) == sorted(n["name"] for n in one["nodes"])
    # The same bytes: each node downloads each layer once, whatever the sharding. (How many
    # pulls reach the registry depends on timing, as on a real kubelet: a pod whose pull was
    # queued behind an identical one pulls again, with one HEAD.)
    assert two["summary"]["bytes_pulled"] == one["summary"]["bytes_pulled"] > 0
    for report in (one, two):
        s = report["summary"]
        assert s["pulls"] + s["cache_hits"] == 15
        assert s["registry_requests_by_status"] == {"200": s["registry_requests"]}
    assert "health" in two["summary"]
    assert two["summary"]["arrival_lag"]["max"] < 1.0  # both shards started at the agreed time


def test_shards_run_alone_then_merged_on_the_command_line(
    logged: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("warning")
    path = tmp_path / "shards.yaml"
    path.write_text(WORKLOAD)
    records = tmp_path / "records"
    before = served(logged)
    for index in range(2):  # as an Indexed Job would: each pod runs one shard
        argv = ["bench", str(path), "--shard", f"{index}/2", "--out", str(records),
                "--registry", logged.host, "--quiet"]  # fmt: skip
        assert main(argv) == 0
    files = sorted(p.name for p in records.iterdir())
    assert files == ["shard-0-of-2.json", "shard-1-of-2.json"]
    shard0 = json.loads((records / files[0]).read_text())
    assert shard0["schema"] == SHARD_SCHEMA
    assert [n["name"] for n in shard0["nodes"]] == ["small-000", "small-002", "wide-001"]

    out = tmp_path / "merged"
    capsys.readouterr()
    assert main(["bench", "merge", str(records), "--out", str(out), "--output", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pods"] == summary["pods_ready"] == 15
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["shards"] == 2
    assert summary["registry_requests"] == node_requests(report)
    # Each shard also seeded (idempotently): the registry served those requests too.
    assert served(logged) - before >= summary["registry_requests"]
    assert (out / "report.md").read_text().startswith("# Bench report: shards")

    # A shard missing: refused, naming it, and no report written.
    assert main(["bench", "merge", str(records / files[0]), "--out", str(tmp_path / "bad")]) == 1
    assert "missing shard records: 1/2" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_run_whose_event_loop_is_starved_is_flagged(
    logged: RegistryProcess, tmp_path: Path
) -> None:
    """The health figures come from the run itself: a task that holds the loop 80 ms at a
    time (as thousands of nodes' bookkeeping would) makes the simulator dominate, and the report
    says so; the same run without it spends a far smaller share on the client side."""
    import time

    import anyio

    from kubelet_sim.workloads import build_report, parse_workload, run_workload, seed_workload

    configure_logging("warning")
    workload = parse_workload(WORKLOAD.replace("rate: 40", "rate: 10"), "shards.yaml")

    async def bench(starve: bool) -> dict[str, Any]:
        await seed_workload(workload, logged.host)

        async def hog() -> None:
            while True:
                time.sleep(0.08)  # noqa: ASYNC251 -- holds the loop, as CPU-bound work does
                await anyio.sleep(0.02)

        async with anyio.create_task_group() as tg:
            if starve:
                tg.start_soon(hog)
            result = await run_workload(workload, logged.host, tmp_path / str(starve))
            tg.cancel_scope.cancel()
        summary: dict[str, Any] = build_report(result)["summary"]
        return summary

    starved = anyio.run(bench, True)
    calm = anyio.run(bench, False)
    assert starved["pods_ready"] == starved["pods"] == 15
    health = starved["health"]
    assert health["dominated_by_simulator"] is True
    assert health["loop_lag"]["p99_ms"] >= 50
    assert any("simulator dominated" in w or "event-loop lag" in w for w in health["warnings"])
    assert calm["health"]["loop_lag"]["p99_ms"] < health["loop_lag"]["p99_ms"]
    assert calm["health"]["client_wait_share"] < health["client_wait_share"]
