"""``bench --listen``: the whole fleet's Prometheus metrics while a run goes on.

A Grafana next to the registry under test sees both sides: every kubelet series of every
simulated node summed over the nodes (``kubelet_image_pull_duration_seconds``,
``kubelet_sim_registry_requests_total``, ...: the same names a single daemon exposes, so the same
dashboards work), and the run's own figures (``kubelet_sim_bench_pods{state}``,
``kubelet_sim_bench_pulls_in_flight``, ``kubelet_sim_bench_elapsed_seconds``).

Samples of one name and label set are added up across nodes; a counter's ``_created`` time is the
earliest node's (the nodes' own series have none). The exposition is prometheus-client's own
HTTP server, on its own thread: a scrape reads the nodes' series (plain floats the event loop
updates, copied whole under the GIL) and never waits for the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubelet_sim.errors import ConfigError
from kubelet_sim.node.httpserver import parse_listen
from kubelet_sim.workloads.runner import SimNode, Snapshot

__all__ = ["FleetCollector", "parse_listen", "serve_fleet_metrics"]


class FleetCollector(Collector):
    """Every node's families merged by name, plus the run's own gauges."""

    def __init__(self) -> None:
        self._nodes: list[SimNode] = []
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()

    def attach(self, nodes: Sequence[SimNode]) -> None:
        with self._lock:
            self._nodes = list(nodes)

    def tick(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            nodes = list(self._nodes)
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for sim in nodes:
            for family in sim.registry.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = Metric(family.name, family.documentation, family.type, family.unit)
                    families[family.name] = merged
                    values[family.name] = {}
                samples = values[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if sample.name.endswith("_created"):
                        old = samples.get(key)
                        samples[key] = sample.value if old is None else min(old, sample.value)
                    else:
                        samples[key] = samples.get(key, 0.0) + sample.value
        for name, merged in families.items():
            for (sample_name, labels), value in values[name].items():
                merged.add_sample(sample_name, dict(labels), value)
            yield merged
        yield from self._own(len(nodes))

    def _own(self, nodes: int) -> Iterator[Metric]:
        snap = self._snapshot
        yield GaugeMetricFamily("kubelet_sim_bench_nodes", "Simulated nodes of the run", nodes)
        if snap is None:
            return
        pods = GaugeMetricFamily(
            "kubelet_sim_bench_pods", "Pods of the run by state", labels=["state"]
        )
        pods.add_metric(["planned"], snap.pods_total)
        pods.add_metric(["submitted"], snap.submitted)
        pods.add_metric(["ready"], snap.ready)
        yield pods
        yield GaugeMetricFamily(
            "kubelet_sim_bench_pulls_in_flight",
            "Pulls under way on all nodes",
            snap.pulls_in_flight,
        )
        yield GaugeMetricFamily(
            "kubelet_sim_bench_elapsed_seconds", "Seconds since the run's time zero", snap.elapsed
        )


@contextmanager
def serve_fleet_metrics(listen: str, collector: FleetCollector) -> Iterator[Any]:
    """Serve ``collector`` at ``http://LISTEN/metrics`` while the block runs; the server.

    Raises:
        ConfigError: the address cannot be listened on.
    """
    host, port = parse_listen(listen)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        server, thread = start_http_server(port, host, registry=registry)
    except OSError as exc:
        raise ConfigError(None, "--listen", f"cannot listen on {listen}: {exc.strerror}") from None
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
