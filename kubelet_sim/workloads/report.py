"""The bench report: figures computed from a run's observations, as ``report.json``.

Every figure comes from what the run measured: pod submit/ready times from the engine's pod states,
pulls from the runtime calls the nodes' pullers made, bytes from the runtime's bytes observer,
registry answers from the transport observer, events from the nodes' recorders. Each node's own
Prometheus samples are included next to them (``nodes[].metrics``) so the two can be checked
against each other. Percentiles interpolate linearly between order statistics.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from kubelet_sim import __version__
from kubelet_sim.workloads.runner import BenchResult, PodOutcome, SimNode
from kubelet_sim.workloads.schedule import template_images

SCHEMA = "kubelet-sim/bench-report/v1"


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, min, p50, p90, p99, max and mean of ``values`` (None when empty)."""
    data = sorted(values)
    if not data:
        return {"count": 0, "min": None, "p50": None, "p90": None, "p99": None, "max": None,
                "mean": None}  # fmt: skip

    def q(p: float) -> float:
        pos = (len(data) - 1) * p
        lo, hi = math.floor(pos), math.ceil(pos)
        return data[lo] + (data[hi] - data[lo]) * (pos - lo)

    return {
        "count": len(data),
        "min": round(data[0], 4),
        "p50": round(q(0.50), 4),
        "p90": round(q(0.90), 4),
        "p99": round(q(0.99), 4),
        "max": round(data[-1], 4),
        "mean": round(sum(data) / len(data), 4),
    }


def _samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    """Every sample of the family ``name`` keyed by its label values joined with ``,``."""
    out: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                key = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[key] = sample.value
    return out


def metrics_snapshot(registry: CollectorRegistry) -> dict[str, Any]:
    """The node's own Prometheus figures the report can be checked against."""

    def total(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    requests: Counter[str] = Counter()
    for key, value in _samples(registry, "kubelet_sim_registry_requests_total").items():
        code = dict(part.split("=", 1) for part in key.split(","))["code"]
        requests[code] += int(value)
    ensure = _samples(registry, "kubelet_image_manager_ensure_image_requests_total")
    return {
        "pull_image_operations": int(
            total("kubelet_runtime_operations_total", operation_type="pull_image")
        ),
        "pull_image_errors": int(
            total("kubelet_runtime_operations_errors_total", operation_type="pull_image")
        ),
        "pull_bytes": int(total("kubelet_sim_pull_bytes_total")),
        "cache_hits": int(total("kubelet_sim_image_cache_hits_total")),
        "ensure_image_requests": int(sum(ensure.values())),
        "registry_requests_by_code": dict(sorted(requests.items())),
        "registry_retries": int(
            sum(_samples(registry, "kubelet_sim_registry_retries_total").values())
        ),
        "image_pull_duration_count": int(
            sum(_samples(registry, "kubelet_image_pull_duration_seconds_count").values())
        ),
    }


def _kubelet_summary(sim: SimNode) -> dict[str, Any]:
    k = sim.group.kubelet
    return {
        "serializeImagePulls": k.serialize_image_pulls,
        "maxParallelImagePulls": k.max_parallel_image_pulls,
        "registryPullQPS": k.registry_pull_qps,
        "registryBurst": k.registry_burst,
    }


def _node(sim: SimNode, pods: list[PodOutcome]) -> dict[str, Any]:
    obs = sim.observer
    mine = [p for p in pods if p.planned.node == sim.name]
    return {
        "name": sim.name,
        "group": sim.group.name,
        "platform": sim.group.platform,
        "pods": len(mine),
        "pods_ready": sum(1 for p in mine if p.ready is not None),
        "pulls": len(obs.spans),
        "pull_errors": sum(1 for s in obs.spans if s.error),
        "registry_pulls": sim.image_service.registry_pulls,
        "shared_pulls": sim.image_service.shared_pulls,
        "cache_hits": obs.cache_hits,
        "ensure_image_requests": obs.ensure_requests,
        "bytes_pulled": obs.bytes,
        "bytes_received": obs.received,
        "peak_pulls_in_flight": sim.node.peak_in_flight,
        "registry_responses": {f"{m} {s}": n for (m, s), n in sorted(obs.responses.items())},
        "registry_retries": dict(sorted(obs.retries.items())),
        "events_emitted": dict(sorted(sim.recorder.emitted.items())),
        "events_stored": dict(sorted(sim.recorder.stored_by_reason().items())),
        "events_spam_filtered": sim.recorder.statistics().spam_filtered,
        "metrics": metrics_snapshot(sim.registry),
    }


def _aggregate(nodes: Iterable[dict[str, Any]], pods: list[PodOutcome]) -> dict[str, Any]:
    nodes = list(nodes)
    times = [p.seconds for p in pods if p.seconds is not None]
    ready = [p.ready for p in pods if p.ready is not None]
    submitted = [p.submitted for p in pods if p.submitted is not None]
    events: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    by_method: Counter[str] = Counter()
    for node in nodes:
        events.update(node["events_emitted"])
        for key, n in node["registry_responses"].items():
            _method, status = key.split(" ", 1)
            statuses[status] += n
            by_method[key] += n
    not_ready = [p for p in pods if p.ready is None]
    reasons: Counter[str] = Counter()
    for pod in not_ready:
        for c in pod.containers:
            if not c["ready"]:
                reasons[str(c["reason"]) or "not submitted"] += 1
    return {
        "nodes": len(nodes),
        "pods": len(pods),
        "pods_ready": len(ready),
        "pods_not_ready": len(not_ready),
        "waiting_reasons": dict(sorted(reasons.items())),
        "time_to_ready": percentiles(times),
        "arrival_lag": percentiles(
            [p.submitted - p.planned.at for p in pods if p.submitted is not None]
        ),
        "makespan": round(max(ready) - min(submitted), 4) if ready and submitted else None,
        "pulls": sum(n["pulls"] for n in nodes),
        "pull_errors": sum(n["pull_errors"] for n in nodes),
        "registry_pulls": sum(n["registry_pulls"] for n in nodes),
        "shared_pulls": sum(n["shared_pulls"] for n in nodes),
        "cache_hits": sum(n["cache_hits"] for n in nodes),
        "bytes_pulled": sum(n["bytes_pulled"] for n in nodes),
        "bytes_received": sum(n["bytes_received"] for n in nodes),
        "registry_requests": sum(statuses.values()),
        "registry_requests_by_status": dict(sorted(statuses.items())),
        "registry_requests_by_method_status": dict(sorted(by_method.items())),
        "registry_retries": sum(sum(n["registry_retries"].values()) for n in nodes),
        "backoffs": events.get("BackOff", 0),
        "events_by_reason": dict(sorted(events.items())),
        "peak_pulls_in_flight_max": max((n["peak_pulls_in_flight"] for n in nodes), default=0),
        "peak_pulls_in_flight_per_node": {n["name"]: n["peak_pulls_in_flight"] for n in nodes},
    }


def build_report(result: BenchResult) -> dict[str, Any]:
    """The JSON report of a run (see the module docstring for where each figure comes from)."""
    w = result.workload
    nodes = [_node(sim, result.pods) for sim in result.nodes]
    summary = _aggregate(nodes, result.pods)
    summary["resources"] = result.resources
    groups = {}
    for group in w.nodes:
        members = [n for n in nodes if n["group"] == group.name]
        sim = next(s for s in result.nodes if s.group is group)
        stats = _aggregate(members, [p for p in result.pods if p.group == group.name])
        stats.pop("peak_pulls_in_flight_per_node")
        groups[group.name] = {
            "platform": group.platform,
            "cache": str(group.cache),
            "kubelet": _kubelet_summary(sim),
            "kubelet_fields": dict(group.kubelet_fields),
            **stats,
        }
    templates = {
        t.name: {
            "pods": t.count,
            "images": list(t.images()),
            "arrival": t.arrival.describe(),
            "placement": str(t.placement.kind),
            "time_to_ready": percentiles(
                [
                    p.seconds
                    for p in result.pods
                    if p.planned.template is t and p.seconds is not None
                ]
            ),
        }
        for t in w.pods
    }
    seeded = set(w.references())
    used = {image for t in w.pods for image in template_images(t)}
    missing = sorted(used - seeded)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "workload": {
            "name": w.name,
            "description": w.description,
            "file": w.source,
            "sha256": w.digest,
            "seed": w.seed,
        },
        "run": {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(result.started_at)),
            "registry": result.registry,
            "nodes_pulled_from": result.target,
            "via_fault_proxy": result.proxy is not None,
            "stopped_at": round(result.stopped_at, 3),
            "timed_out": result.timed_out,
            "timeout": w.run.timeout,
            "kubelet_sim": __version__,
            "python": sys.version.split()[0],
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        },
        "summary": summary,
        "groups": groups,
        "templates": templates,
        "images": {
            "seeded": len(seeded),
            "sizes": result.seed.sizes if result.seed is not None else {},
            "pod_images_not_seeded": missing,
            "seeding": result.seed.to_dict() if result.seed is not None else None,
        },
        "faults": {"plan": result.workload.faults.to_list()},
        "nodes": nodes,
        "pods": [
            {
                "name": p.planned.name,
                "template": p.planned.template.name,
                "node": p.planned.node,
                "group": p.group,
                "arrival": round(p.planned.at, 4),
                "submitted": p.submitted,
                "ready": p.ready,
                "seconds": None if p.seconds is None else round(p.seconds, 4),
                "containers": p.containers,
            }
            for p in result.pods
        ],
        "pulls": [
            {
                "node": sim.name,
                "start": round(s.start, 4),
                "end": round(s.end, 4),
                "size": s.size,
                "error": s.error,
            }
            for sim in result.nodes
            for s in sim.observer.spans
        ],
        "bytes_timeline": result.timeline.series(),
    }
    if result.proxy is not None:
        report["faults"]["proxy"] = result.proxy.stats.to_dict()
        report["faults"]["served_timeline"] = result.proxy.served_series()
    return report
