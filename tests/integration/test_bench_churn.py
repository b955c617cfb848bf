"""Churn against the real registry: a tag moved on it, a kubelet restarted on its durable store, a
rolling update and a delete; and churn merged over shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from kubelet_sim.cli.main import configure_logging, main
from kubelet_sim.sim.registry import RegistryProcess
from kubelet_sim.workloads import build_report, parse_workload, run_workload, seed_workload

pytestmark = pytest.mark.registry

WORKLOAD = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: churn-real
seed: 8
bases:
  - {{name: base, layers: [200KiB]}}
images:
  - {{repository: {prefix}/web, tags: ["1.0", "2.0"], base: base, layers: [100KiB]}}
nodes:
  - name: pool
    count: 2
    timing: {{resyncPeriod: 200ms, backoffInitial: 300ms, backoffMax: 600ms}}
pods:
  - name: web
    count: 4
    spec: {{containers: [{{name: web, image: "{prefix}/web:1.0"}}]}}
  - name: probe
    count: 1
    spec: {{containers: [{{name: p, image: "{prefix}/web:2.0"}}]}}
  - name: always
    count: 2
    arrival: {{at: 1.5s}}
    spec: {{containers: [{{name: a, image: "{prefix}/web:1.0", imagePullPolicy: Always}}]}}
churn:
  - {{name: move, kind: retag, at: 1s, repository: {prefix}/web, tag: "1.0", to: "2.0"}}
  - {{name: bounce, kind: restart, at: 1.2s, nodes: pool, count: 1, downtime: 200ms}}
  - {{name: roll, kind: rollout, at: 2s, pods: web, image: "{prefix}/web:2.0", maxSurge: 1,
      maxUnavailable: 0}}
  - {{name: cut, kind: delete, at: 2.5s, pods: probe}}
run: {{timeout: 60s}}
"""


def _digest(registry: RegistryProcess, repository: str, tag: str) -> str:
    accept = ", ".join((
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ))  # fmt: skip
    answer = httpx.head(
        f"http://{registry.host}/v2/{repository}/manifests/{tag}", headers={"Accept": accept}
    )
    answer.raise_for_status()
    return answer.headers["Docker-Content-Digest"]


def test_churn_on_the_real_registry_and_a_durable_store(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    configure_logging("warning")
    workload = parse_workload(WORKLOAD.format(prefix="churn-real"), "churn.yaml")

    async def bench() -> Any:
        seed = await seed_workload(workload, registry.host)
        before = _digest(registry, "churn-real/web", "1.0")
        result = await run_workload(
            workload, registry.host, tmp_path / "stores", seed=seed, tick=0.05, store="disk"
        )
        return before, result

    before, result = anyio.run(bench)
    report = json.loads(json.dumps(build_report(result)))
    s, churn = report["summary"], report["summary"]["churn"]
    assert report["run"]["timed_out"] is False
    # The tag moved on the registry itself.
    after = _digest(registry, "churn-real/web", "1.0")
    assert after == _digest(registry, "churn-real/web", "2.0") != before
    assert (churn["move"]["from"], churn["move"]["to"]) == (before, after)

    def ids(template: str) -> set[str]:
        return {c["image_id"] for p in report["pods"] if p["template"] == template
                for c in p["containers"]}  # fmt: skip

    # Always pods after the move run 2.0's image; the first web pods ran 1.0's.
    assert ids("always") == ids("probe")
    first = {c["image_id"] for p in report["pods"] if p["name"].startswith("web-0")
             for c in p["containers"]}  # fmt: skip
    assert first.isdisjoint(ids("probe"))
    # The restart closed and reopened the node's durable store; its ready pods stayed ready.
    assert churn["bounce"]["nodes"] == 1
    assert churn["bounce"]["pods_kept_running"] >= 1
    assert [n["restarts"] for n in report["nodes"]] == [1, 0]
    assert (tmp_path / "stores" / "pool-000" / "store").is_dir()
    # The rollout replaced the four web pods with 2.0 ones, one extra pod at a time.
    roll = churn["roll"]
    assert (roll["replicas"], roll["created"], roll["deleted"], roll["peak_pods"]) == (4, 4, 4, 5)
    assert roll["min_ready"] == 4
    assert roll["finished"] is not None
    new = [p for p in report["pods"] if "-r1-" in p["name"]]
    assert len(new) == 4
    assert all(p["ready"] is not None for p in new)
    assert {c["image_id"] for p in new for c in p["containers"]} == ids("probe")
    # The delete, and the figures: every pod counted, the deleted ones said so.
    assert churn["cut"]["deleted"] == 1
    assert s["pods"] == 4 + 1 + 2 + 4
    assert (s["pods_deleted"], s["pods_deleted_unready"], s["pods_not_ready"]) == (5, 0, 0)
    assert s["pods_ready"] == s["pods"]


VIRTUAL = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: churn-shards
seed: 4
images:
  - {repository: app/web, tags: ["1", "2"], layers: [1MiB]}
nodes:
  - {name: pool, count: 4, timing: {resyncPeriod: 1s, backoffInitial: 5s, backoffMax: 10s}}
pods:
  - name: web
    count: 8
    spec: {containers: [{name: web, image: "app/web:1"}]}
churn:
  - {name: roll, kind: rollout, at: 2s, pods: web, image: "app/web:2", maxSurge: 50%}
  - {name: bounce, kind: restart, at: 1s, nodes: pool, downtime: 1s}
  - {name: cut, kind: delete, at: 30s, pods: web, count: 25%}
virtual:
  registry: {latency: 5ms, bandwidth: {perConnection: 20MiB/s, total: 1GiB/s}}
"""


def test_churn_over_two_shards_adds_up_to_the_single_run(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(VIRTUAL)
    reports = {}
    for shards in (1, 2):
        out = tmp_path / f"out-{shards}"
        code = main(["bench", str(path), "--virtual", "--quiet", "--no-plots", "--out", str(out),
                     "--shards", str(shards)])  # fmt: skip
        assert code == 0
        reports[shards] = json.loads((out / "report.json").read_text())
    one, two = (reports[n]["summary"] for n in (1, 2))
    for name in ("roll", "bounce", "cut"):
        a, b = one["churn"][name], two["churn"][name]
        assert b["finished"] is not None
        for key in ("replicas", "created", "deleted", "nodes", "pods_kept_running"):
            assert a.get(key) == b.get(key), (name, key)
    assert one["churn"]["bounce"]["nodes"] == 4
    assert one["churn"]["cut"]["deleted"] == 2  # 25% of each shard's 4 (or the run's 8)
    assert one["pods"] == two["pods"] == 16
    assert one["pods_deleted"] == two["pods_deleted"] == 10
