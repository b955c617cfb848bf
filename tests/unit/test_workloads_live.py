"""``bench --listen``: the fleet collector adds up the nodes' series."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kubelet_sim.errors import ConfigError
from kubelet_sim.workloads.live import FleetCollector, parse_listen, serve_fleet_metrics
from kubelet_sim.workloads.runner import Snapshot


@dataclass
class FakeNode:
    registry: CollectorRegistry


def node(pulls: int, seconds: list[float], depth: int) -> FakeNode:
    registry = CollectorRegistry()
    Counter("pulls", "Pulls", ["result"], registry=registry).labels("ok").inc(pulls)
    histogram = Histogram("pull_seconds", "Pull time", buckets=(1, 10), registry=registry)
    for s in seconds:
        histogram.observe(s)
    Gauge("queue_depth", "Queue", registry=registry).set(depth)
    return FakeNode(registry)


def samples(collector: FleetCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


def test_the_fleet_is_the_sum_of_its_nodes() -> None:
    fleet = FleetCollector()
    nodes = [node(3, [0.5, 5], 2), node(4, [20], 1)]
    fleet.attach(cast(Any, nodes))
    fleet.tick(Snapshot(1.5, 10, 8, 6, 2, 7, 1, 1000, 0, {}))
    got = samples(fleet)
    assert got[("pulls_total", (("result", "ok"),))] == 7
    assert got[("pull_seconds_count", ())] == 3
    assert got[("pull_seconds_sum", ())] == 25.5
    assert got[("pull_seconds_bucket", (("le", "1.0"),))] == 1
    assert got[("pull_seconds_bucket", (("le", "+Inf"),))] == 3
    assert got[("queue_depth", ())] == 3
    created = [v for (name, _), v in got.items() if name == "pulls_created"]
    firsts = [
        s.value for n in nodes for f in n.registry.collect() for s in f.samples
        if s.name == "pulls_created"
    ]  # fmt: skip
    assert created == [min(firsts)]  # the earliest node's, not a sum of timestamps
    assert got[("kubelet_sim_bench_nodes", ())] == 2
    assert got[("kubelet_sim_bench_pods", (("state", "ready"),))] == 6
    assert got[("kubelet_sim_bench_pulls_in_flight", ())] == 2


def test_the_fleet_is_served_over_http_and_the_address_is_checked() -> None:
    fleet = FleetCollector()
    fleet.attach(cast(Any, [node(1, [], 0)]))
    with serve_fleet_metrics("127.0.0.1:0", fleet) as server:
        port = server.server_address[1]
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'pulls_total{result="ok"} 1.0' in text
    assert "kubelet_sim_bench_nodes 1.0" in text
    for bad in ("9100", "host:", ":80", "h:99999", "h:x"):
        with pytest.raises(ConfigError, match="--listen"):
            parse_listen(bad)
