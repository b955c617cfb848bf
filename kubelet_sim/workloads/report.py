"""The bench report: figures computed from a run's raw records, as ``report.json``.

A run (or each shard of a sharded run) first becomes a **shard record** (:func:`shard_record`):
the raw per-pod, per-pull and per-node observations plus what describes the workload. The report
is built from one or many shard records by :func:`merge_records`: every figure is computed from
the merged raw data (percentiles are never averaged), so a run split over processes or machines
reports exactly what one process would have.

Every figure comes from what the run measured: pod submit/ready times from the engine's pod states,
pulls from the runtime calls the nodes' pullers made, bytes from the runtime's bytes observer,
registry answers from the transport observer, events from the nodes' recorders. Each node's own
Prometheus samples are included next to them (``nodes[].metrics``) so the two can be checked
against each other. Percentiles interpolate linearly between order statistics; pods that never
became ready stay in their denominator (a percentile that falls among them is ``null``, shown as
"not ready"), so a run cannot look faster by losing its slowest pods.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from kubelet_sim import __version__
from kubelet_sim.errors import ConfigError
from kubelet_sim.telemetry.metrics import IMAGE_SIZE_BUCKETS
from kubelet_sim.workloads import health
from kubelet_sim.workloads.observe import SLOT
from kubelet_sim.workloads.runner import BenchResult, SimNode
from kubelet_sim.workloads.schedule import template_images
from kubelet_sim.workloads.thresholds import evaluate, parse_threshold

SCHEMA = "kubelet-sim/bench-report/v2"
SHARD_SCHEMA = "kubelet-sim/bench-shard/v1"


def percentiles(values: Sequence[float], not_ready: int = 0) -> dict[str, float | int | None]:
    """count, min, p50, p90, p99, max and mean of ``values`` (None when empty).

    ``not_ready`` pods count as slower than every value: a percentile whose rank falls among them
    is None, and ``max`` and ``mean`` are None when any pod is missing.
    """
    data = sorted(values)
    total = len(data) + not_ready
    out: dict[str, float | int | None] = {"count": len(data), "not_ready": not_ready}
    if not data:
        return out | {"min": None, "p50": None, "p90": None, "p99": None, "max": None,
                      "mean": None}  # fmt: skip

    def q(p: float) -> float | None:
        value = health.quantile(data, p, total)
        return None if value is None else round(value, 4)

    return out | {
        "min": round(data[0], 4),
        "p50": q(0.50),
        "p90": q(0.90),
        "p99": q(0.99),
        "max": round(data[-1], 4) if not not_ready else None,
        "mean": round(sum(data) / len(data), 4) if not not_ready else None,
    }


Samples = dict[str, list[tuple[dict[str, str], float]]]
"""Every sample of a registry by sample name: its labels and value."""


def _collect(registry: CollectorRegistry) -> Samples:
    """The registry's samples, collected once (each collection walks every metric family)."""
    out: Samples = {}
    for family in registry.collect():
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _histograms(samples: Samples, name: str, by: str | None = None) -> dict[str, dict[str, Any]]:
    """The histogram ``name`` as cumulative ``buckets`` by ``le``, ``sum`` and ``count``: one
    per value of the label ``by``, or one summed over every label (``by`` None, key "")."""
    out: dict[str, dict[str, Any]] = {}
    for suffix in ("bucket", "sum", "count"):
        for labels, value in samples.get(f"{name}_{suffix}", ()):
            key = labels.get(by, "") if by is not None else ""
            entry = out.setdefault(key, {"buckets": {}, "sum": 0.0, "count": 0.0})
            if suffix == "bucket":
                entry["buckets"][labels["le"]] = entry["buckets"].get(labels["le"], 0) + int(value)
            else:
                entry[suffix] += value
    return out


def metrics_snapshot(registry: CollectorRegistry) -> dict[str, Any]:
    """The node's own Prometheus figures the report can be checked against."""
    samples = _collect(registry)

    def total(name: str, **labels: str) -> float:
        return sum(
            v for got, v in samples.get(name, ()) if all(got.get(k) == w for k, w in labels.items())
        )

    requests: Counter[str] = Counter()
    for labels, value in samples.get("kubelet_sim_registry_requests_total", ()):
        requests[labels["code"]] += int(value)
    ttfb = _histograms(samples, "kubelet_sim_registry_request_duration_seconds")  # all methods
    return {
        "pull_image_operations": int(
            total("kubelet_runtime_operations_total", operation_type="pull_image")
        ),
        "pull_image_errors": int(
            total("kubelet_runtime_operations_errors_total", operation_type="pull_image")
        ),
        "pull_bytes": int(total("kubelet_sim_pull_bytes_total")),
        "cache_hits": int(total("kubelet_sim_image_cache_hits_total")),
        "ensure_image_requests": int(total("kubelet_image_manager_ensure_image_requests_total")),
        "registry_requests_by_code": dict(sorted(requests.items())),
        "registry_retries": int(total("kubelet_sim_registry_retries_total")),
        "image_pull_duration_count": int(total("kubelet_image_pull_duration_seconds_count")),
        "registry_ttfb": ttfb.get("", {"buckets": {}, "sum": 0.0, "count": 0.0}),
        "image_pull_duration_by_size": _histograms(
            samples, "kubelet_image_pull_duration_seconds", by="image_size_in_bytes"
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


def _node(sim: SimNode, pods: list[dict[str, Any]]) -> dict[str, Any]:
    obs = sim.observer
    return {
        "name": sim.name,
        "group": sim.group.name,
        "platform": sim.group.platform,
        "pods": len(pods),
        "pods_ready": sum(1 for p in pods if p["ready"] is not None),
        "pulls": len(obs.spans),
        "pull_errors": sum(1 for s in obs.spans if s.error),
        "registry_pulls": sim.registry_pulls,
        "shared_pulls": sim.shared_pulls,
        "cache_hits": obs.cache_hits,
        "ensure_image_requests": obs.ensure_requests,
        "bytes_pulled": obs.bytes,
        "bytes_received": obs.received,
        "peak_pulls_in_flight": sim.peak_in_flight,
        "pull_causes": dict(sorted(sim.observer.causes.items())),
        "restarts": sim.restarts,
        "registry_responses": {f"{m} {s}": n for (m, s), n in sorted(obs.responses.items())},
        "registry_retries": dict(sorted(obs.retries.items())),
        "events_emitted": dict(sorted(sim.recorder.emitted.items())),
        "events_stored": dict(sorted(sim.recorder.stored_by_reason().items())),
        "events_spam_filtered": sim.recorder.statistics().spam_filtered,
        "metrics": metrics_snapshot(sim.registry),
    }


def _pod(outcome: Any) -> dict[str, Any]:
    p = outcome
    return {
        "name": p.planned.name,
        "template": p.planned.template.name,
        "node": p.planned.node,
        "group": p.group,
        "arrival": round(p.planned.at, 4),
        "submitted": p.submitted,
        "ready": p.ready,
        "seconds": None if p.seconds is None else round(p.seconds, 4),
        "containers": p.containers,
        "deleted": p.deleted,
    }


def shard_record(result: BenchResult) -> dict[str, Any]:
    """The raw records of one run or shard, from which :func:`merge_records` builds the report."""
    w = result.workload
    pods = [_pod(p) for p in result.pods]
    by_node: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        by_node.setdefault(pod["node"], []).append(pod)
    nodes = [_node(sim, by_node.get(sim.name, [])) for sim in result.nodes]
    groups: dict[str, Any] = {}
    for group in w.nodes:
        sim = next((s for s in result.nodes if s.group is group), None)
        groups[group.name] = {
            "platform": group.platform,
            "cache": str(group.cache),
            "kubelet": _kubelet_summary(sim) if sim is not None else {},
            "kubelet_fields": dict(group.kubelet_fields),
            "nodes_planned": group.count,
        }
    seeded = set(w.references())
    used = {image for t in w.pods for image in template_images(t)}
    record: dict[str, Any] = {
        "schema": SHARD_SCHEMA,
        "shard": {"index": result.shard[0], "count": result.shard[1]},
        "workload": {
            "name": w.name,
            "description": w.description,
            "file": w.source,
            "sha256": w.digest,
            "seed": w.seed,
            "thresholds": [t.text for t in w.thresholds],
        },
        "run": {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(result.started_at)),
            "start_epoch": result.started_at,
            "agreed_start": result.agreed_start,
            "registry": result.registry,
            "nodes_pulled_from": result.target,
            "via_fault_proxy": result.proxy is not None,
            "stopped_at": round(result.stopped_at, 3),
            "timed_out": result.timed_out,
            "interrupted": result.interrupted,
            "timeout": w.run.timeout,
            "store": result.store_kind,
            "kubelet_sim": __version__,
            "python": sys.version.split()[0],
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
            "host": platform.node(),
        },
        "groups": groups,
        "templates": {
            t.name: {
                "pods": t.count,
                "images": list(t.images()),
                "arrival": t.arrival.describe(),
                "placement": str(t.placement.kind),
            }
            for t in w.pods
        },
        "images": {
            "seeded": len(seeded),
            "sizes": result.seed.sizes if result.seed is not None else {},
            "pod_images_not_seeded": sorted(used - seeded),
            "seeding": result.seed.to_dict() if result.seed is not None else None,
        },
        "faults": {"plan": w.faults.to_list()},
        "resources": result.resources,
        "loop_lag": [round(x, 5) for x in result.loop_lag],
        "nodes": nodes,
        "pods": pods,
        "pulls": [
            {
                "node": sim.name,
                "start": round(s.start, 4),
                "end": round(s.end, 4),
                "size": s.size,
                "error": s.error,
                "dispatch": None if s.dispatch is None else round(s.dispatch, 5),
                "requests": s.requests,
                "request_seconds": round(s.request_seconds, 5),
                "image": _relative(s.image, result.target),
            }
            for sim in result.nodes
            for s in sim.observer.spans
        ],
        "bytes_timeline": result.timeline.series(),
        "request_timeline": result.requests.series(),
        "churn": result.churn,
    }
    if result.model is not None:
        from kubelet_sim.workloads.virtual import view_record

        record["run"]["virtual"] = True
        record["registry_raw"] = view_record(result.model, w)
    if result.proxy is not None:
        record["faults"]["proxy"] = result.proxy.stats.to_dict()
        record["faults"]["served_timeline"] = result.proxy.served_series()
    return record


def _counted(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods the figures count: all but those churn deleted before they were ready."""
    return [p for p in pods if p.get("deleted") is None or p["ready"] is not None]


def _aggregate(nodes: Iterable[dict[str, Any]], pods: list[dict[str, Any]]) -> dict[str, Any]:
    nodes = list(nodes)
    deleted = sum(1 for p in pods if p.get("deleted") is not None)
    every, pods = len(pods), _counted(pods)
    times = [p["seconds"] for p in pods if p["seconds"] is not None]
    ready = [p["ready"] for p in pods if p["ready"] is not None]
    submitted = [p["submitted"] for p in pods if p["submitted"] is not None]
    events: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    by_method: Counter[str] = Counter()
    for node in nodes:
        events.update(node["events_emitted"])
        for key, n in node["registry_responses"].items():
            _method, status = key.split(" ", 1)
            statuses[status] += n
            by_method[key] += n
    not_ready = [p for p in pods if p["ready"] is None]
    reasons: Counter[str] = Counter()
    for pod in not_ready:
        if pod["submitted"] is None:
            reasons["not submitted"] += 1
        for c in pod["containers"]:
            if not c["ready"]:
                reasons[str(c["reason"]) or "waiting"] += 1
    makespan = None
    if ready and submitted and not not_ready:
        makespan = round(max(ready) - min(submitted), 4)
    return {
        "nodes": len(nodes),
        "pods": every,
        "pods_ready": len(ready),
        "pods_not_ready": len(not_ready),
        "pods_deleted": deleted,
        "pods_deleted_unready": every - len(pods),
        "waiting_reasons": dict(sorted(reasons.items())),
        "time_to_ready": percentiles(times, len(pods) - len(times)),
        "arrival_lag": percentiles(
            [p["submitted"] - p["arrival"] for p in pods if p["submitted"] is not None]
        ),
        "makespan": makespan,
        "last_ready": round(max(ready), 4) if ready else None,
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
    }


def _check_shards(records: Sequence[dict[str, Any]], source: str) -> None:
    if not records:
        raise ConfigError(source, None, "no shard records to merge")
    for r in records:
        if r.get("schema") != SHARD_SCHEMA:
            raise ConfigError(
                source, "schema", f"expected {SHARD_SCHEMA!r}, got {r.get('schema')!r}"
            )
    first = records[0]
    digests = {r["workload"]["sha256"] for r in records}
    if len(digests) != 1:
        raise ConfigError(source, "workload.sha256", "the shards ran different workload files")
    counts = {r["shard"]["count"] for r in records}
    if len(counts) != 1:
        raise ConfigError(
            source, "shard.count", f"the shards disagree on the count: {sorted(counts)}"
        )
    timeouts = {r["run"].get("timeout") for r in records}
    if len(timeouts) != 1:
        raise ConfigError(source, "run.timeout", "the shards ran with different timeouts")
    count = first["shard"]["count"]
    seen = Counter(r["shard"]["index"] for r in records)
    twice = sorted(i for i, n in seen.items() if n > 1)
    if twice:
        raise ConfigError(source, "shard.index", f"shard {twice[0]}/{count} given twice")
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        listed = ", ".join(f"{i}/{count}" for i in missing)
        raise ConfigError(source, "shard.index", f"missing shard records: {listed}")


def _shifted(record: dict[str, Any], by: float) -> dict[str, Any]:
    """``record``'s times moved ``by`` seconds later (a shard that started after the others)."""
    if not by:
        return record

    def later(value: float | None) -> float | None:
        return None if value is None else round(value + by, 6)

    pods = [
        p | {"submitted": later(p["submitted"]), "ready": later(p["ready"]),
             "deleted": later(p.get("deleted"))}
        for p in record["pods"]
    ]  # fmt: skip
    pulls = [s | {"start": later(s["start"]), "end": later(s["end"])} for s in record["pulls"]]
    timeline = [[round(t + by, 3), n] for t, n in record["bytes_timeline"]]
    requests = [
        [second + round(by), *counts] for second, *counts in record.get("request_timeline", [])
    ]
    churn = [c | {"started": later(c.get("started")), "finished": later(c.get("finished"))}
             for c in record.get("churn") or []]  # fmt: skip
    return record | {"pods": pods, "pulls": pulls, "bytes_timeline": timeline,
                     "request_timeline": requests, "churn": churn}  # fmt: skip


def _merge_timeline(series: Iterable[list[Any]]) -> list[tuple[float, int]]:
    slots: Counter[int] = Counter()
    for t, n in series:
        slots[round(t / SLOT)] += n
    if not slots:
        return []
    return [(round(i * SLOT, 3), slots.get(i, 0)) for i in range(max(slots) + 1)]


def _relative(image: str, target: str) -> str:
    """An image reference without the registry's ``HOST:PORT`` (as the workload names it)."""
    prefix = f"{target}/"
    return image[len(prefix) :] if image.startswith(prefix) else image


def _merge_requests(series: Iterable[list[list[int]]]) -> list[list[int]]:
    """Shards' per-second request counts, summed by second."""
    slots: dict[int, list[int]] = {}
    for shard in series:
        for second, *counts in shard:
            slot = slots.setdefault(second, [0] * len(counts))
            for i, n in enumerate(counts):
                slot[i] += n
    return [[second, *slots[second]] for second in sorted(slots)]


SLOWEST_NODES = 10
"""Rows of the report's slowest-nodes table."""


def histogram_quantile(q: float, buckets: dict[str, int]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear inside the bucket holding rank ``q * count``;
    in the ``+Inf`` bucket, the largest finite bound. None without observations."""
    bounds = sorted(((float(le), n) for le, n in buckets.items()), key=lambda b: b[0])
    if len(bounds) < 2 or bounds[-1][1] == 0:
        return None  # Prometheus: NaN below two buckets or without observations
    for i in range(1, len(bounds)):  # as Prometheus, counts made monotonic first
        if bounds[i][1] < bounds[i - 1][1]:
            bounds[i] = (bounds[i][0], bounds[i - 1][1])
    rank = q * bounds[-1][1]
    lower, below = 0.0, 0
    for upper, cumulative in bounds:
        if cumulative >= rank:
            if upper == float("inf"):
                return lower
            if cumulative == below:
                return upper
            return round(lower + (upper - lower) * (rank - below) / (cumulative - below), 6)
        lower, below = upper, cumulative
    return lower


def _histogram(buckets: dict[str, int], total: float, count: float) -> dict[str, Any]:
    """Count, mean and p50/p90/p99 of a Prometheus histogram (summed over nodes)."""
    return {
        "count": int(count),
        "mean": round(total / count, 6) if count else None,
        **{f"p{round(q * 100)}": histogram_quantile(q, buckets) for q in (0.5, 0.9, 0.99)},
    }


def _breakdowns(
    nodes: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    pulls: list[dict[str, Any]],
    requests: list[list[int]],
) -> dict[str, Any]:
    """Where the time went: pulls per image, the slowest nodes, failures by cause, time to first
    byte and pull duration by image size (the nodes' own histograms), requests per second."""
    by_image: dict[str, list[dict[str, Any]]] = {}
    seconds_by_node: dict[str, list[float]] = {}  # grouped once: a fleet has 10,000s of nodes
    for pull in pulls:
        by_image.setdefault(pull.get("image") or "?", []).append(pull)
        seconds_by_node.setdefault(pull["node"], []).append(pull["end"] - pull["start"])
    images = {}
    for image, mine in sorted(by_image.items()):
        done = [s["end"] - s["start"] for s in mine if not s["error"]]
        images[image] = {
            "pulls": len(mine),
            "failed": sum(1 for s in mine if s["error"]),
            "bytes": sum(s["size"] for s in mine if not s["error"]),
            "seconds": percentiles(done),
        }
    ttr: dict[str, list[float | None]] = {}
    for pod in _counted(pods):
        ttr.setdefault(pod["node"], []).append(pod["seconds"])
    rows = []
    for node in nodes:
        times = ttr.get(node["name"], [])
        ready = [t for t in times if t is not None]
        spans = seconds_by_node.get(node["name"], [])
        rows.append({
            "node": node["name"], "group": node["group"], "pods": len(times),
            "not_ready": len(times) - len(ready),
            "time_to_ready": percentiles(ready, len(times) - len(ready)),
            "pulls": node["pulls"], "pull_errors": node["pull_errors"],
            "pull_seconds_mean": round(sum(spans) / len(spans), 4) if spans else None,
        })  # fmt: skip
    rows.sort(key=lambda r: (-r["not_ready"], -(r["time_to_ready"]["max"] or 0.0), r["node"]))
    causes: Counter[str] = Counter()
    ttfb = _Sum()
    sizes: dict[str, _Sum] = {}
    for node in nodes:
        causes.update(node.get("pull_causes", {}))
        metrics = node.get("metrics", {})
        ttfb.add(metrics.get("registry_ttfb", {}))
        for size, h in metrics.get("image_pull_duration_by_size", {}).items():
            sizes.setdefault(size, _Sum()).add(h)
    order = [label for _, label in IMAGE_SIZE_BUCKETS]
    return {
        "by_image": images,
        "slowest_nodes": rows[:SLOWEST_NODES],
        "failure_causes": dict(causes.most_common()),
        "registry_ttfb": ttfb.figures(),
        "pull_duration_by_size": {
            size: sizes[size].figures()
            for size in sorted(sizes, key=order.index)
            if sizes[size].count
        },
        "registry_peak_requests_per_second": max((r[1] for r in requests), default=0),
        "registry_peak_errors_per_second": max((r[2] + r[3] for r in requests), default=0),
    }


@dataclass(slots=True)
class _Sum:
    """A histogram summed over nodes: cumulative bucket counts by ``le``, sum and count."""

    buckets: Counter[str] = field(default_factory=Counter)
    total: float = 0.0
    count: float = 0.0

    def add(self, h: dict[str, Any]) -> None:
        self.buckets.update(h.get("buckets", {}))
        self.total += h.get("sum", 0.0)
        self.count += h.get("count", 0.0)

    def figures(self) -> dict[str, Any]:
        return _histogram(dict(self.buckets), self.total, self.count)


def _resources(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    res = [r["resources"] for r in records]
    out: dict[str, Any] = {
        "wall_seconds": round(max(x["wall_seconds"] for x in res), 3),
        "cpu_user_seconds": round(sum(x["cpu_user_seconds"] for x in res), 3),
        "cpu_system_seconds": round(sum(x["cpu_system_seconds"] for x in res), 3),
        "cpu_seconds": round(sum(x["cpu_seconds"] for x in res), 3),
        "peak_rss_mib": round(sum(x["peak_rss_mib"] for x in res), 1),
        "peak_rss_reset_at_start": float(all(x["peak_rss_reset_at_start"] for x in res)),
        "processes": len(res),
    }
    if len(res) > 1:
        out["peak_rss_mib_per_process"] = [x["peak_rss_mib"] for x in res]
    return out


def merge_records(records: Sequence[dict[str, Any]], *, source: str = "<shards>") -> dict[str, Any]:
    """The report of a run from its shard records (one for an unsharded run).

    Shards that agreed on a start instant have their times on that instant's clock; a shard that
    started late keeps its lateness (its pods' arrival lag shows it).

    Raises:
        ConfigError: the records are not one complete set of shards of one workload.
    """
    _check_shards(records, source)
    if len({bool(r["run"].get("virtual")) for r in records}) > 1:
        raise ConfigError(source, "run.virtual", "virtual and real shards cannot be merged")
    records = sorted(records, key=lambda r: r["shard"]["index"])
    first = records[0]
    agreed = first["run"].get("agreed_start")
    if agreed is not None:
        records = [_shifted(r, max(0.0, r["run"]["start_epoch"] - agreed)) for r in records]
    nodes = [n for r in records for n in r["nodes"]]
    pods = [p for r in records for p in r["pods"]]
    pulls = [s for r in records for s in r["pulls"]]
    summary = _aggregate(nodes, pods)
    summary["resources"] = resources = _resources(records)
    summary["health"] = health.assess(
        loop_lag=[x for r in records for x in r["loop_lag"]],
        dispatch=[s["dispatch"] for s in pulls if s.get("dispatch") is not None],
        pulls=[
            (s["end"] - s["start"], s.get("requests", 0), s.get("request_seconds", 0.0))
            for s in pulls
        ],
        arrival_lag=[p["submitted"] - p["arrival"] for p in pods if p["submitted"] is not None],
        ttr_p50=summary["time_to_ready"]["p50"],
        cpu_seconds=resources["cpu_seconds"],
        wall_seconds=resources["wall_seconds"],
        processes=len(records),
    )
    if first["run"].get("virtual"):
        simulated = max(r["run"]["stopped_at"] for r in records)
        summary["health"] = _virtual_health(summary["health"], simulated,
                                            resources["wall_seconds"])  # fmt: skip
    groups = {}
    for name, meta in first["groups"].items():
        kubelet: dict[str, Any] = next(
            (r["groups"][name]["kubelet"] for r in records if r["groups"][name]["kubelet"]), {}
        )
        stats = _aggregate(
            [n for n in nodes if n["group"] == name], [p for p in pods if p["group"] == name]
        )
        groups[name] = {**meta, "kubelet": kubelet, **stats}
    templates = {}
    for name, meta in first["templates"].items():
        mine = _counted([p for p in pods if p["template"] == name])
        times = [p["seconds"] for p in mine if p["seconds"] is not None]
        templates[name] = {**meta, "time_to_ready": percentiles(times, len(mine) - len(times))}
    run = dict(first["run"])
    run["stopped_at"] = round(max(r["run"]["stopped_at"] for r in records), 3)
    run["timed_out"] = any(r["run"]["timed_out"] for r in records)
    run["interrupted"] = any(r["run"].get("interrupted", False) for r in records)
    # Not every pod settled: what the report says is what was measured until it stopped.
    run["partial"] = run["timed_out"] or run["interrupted"]
    run["shards"] = len(records)
    run["hosts"] = sorted({r["run"]["host"] for r in records})
    for key in ("start_epoch", "host"):
        run.pop(key, None)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "workload": first["workload"],
        "run": run,
        "summary": summary,
        "groups": groups,
        "templates": templates,
        "images": first["images"],
        "faults": _merged_faults(records),
        "nodes": nodes,
        "pods": pods,
        "pulls": pulls,
        "bytes_timeline": _merge_timeline(s for r in records for s in r["bytes_timeline"]),
        "request_timeline": _merge_requests(r.get("request_timeline", []) for r in records),
    }
    summary.update(_breakdowns(nodes, pods, pulls, report["request_timeline"]))
    churn = [r["churn"] for r in records if r.get("churn")]
    if churn:
        from kubelet_sim.workloads.churn import merge_churn

        summary["churn"] = merge_churn(churn)
    summary["thresholds"] = check_thresholds(report, source)
    raws = [r["registry_raw"] for r in records if "registry_raw" in r]
    if raws:
        from kubelet_sim.workloads.virtual import merge_views, registry_view

        report["registry_view"] = registry_view(
            merge_views(raws), first["faults"]["plan"], run["stopped_at"], shards=len(records)
        )
    return report


def check_thresholds(report: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """The workload's thresholds checked against the merged report (re-read from the records,
    so ``bench merge`` checks them too)."""
    texts = report["workload"].get("thresholds", [])
    groups, templates = list(report["groups"]), list(report["templates"])
    parsed = []
    for i, text in enumerate(texts):
        try:
            parsed.append(parse_threshold(text, groups=groups, templates=templates))
        except ValueError as exc:
            raise ConfigError(source, f"workload.thresholds[{i}]", str(exc)) from None
    return evaluate(parsed, report)


def _virtual_health(figures: dict[str, Any], simulated: float, wall: float) -> dict[str, Any]:
    """A virtual run's health: its times are the virtual clock's, which the simulator's own
    speed cannot move (the clock waits for the computation), so nothing is suspect; what the
    report states is how much faster than real time the run went."""
    return figures | {
        "virtual_time": True,
        "simulated_seconds": round(simulated, 3),
        "speedup": round(simulated / wall, 1) if wall > 0 else None,
        "warnings": [],
        "note": "virtual time: the figures are the modelled registry's and the engine's, "
        "not this process's speed",
    }


def _merged_faults(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    faults: dict[str, Any] = {"plan": records[0]["faults"]["plan"]}
    proxies = [r["faults"]["proxy"] for r in records if "proxy" in r["faults"]]
    if proxies:
        merged: dict[str, Any] = {}
        for stats in proxies:
            for key, value in stats.items():
                if isinstance(value, dict):
                    counts = Counter(merged.get(key, {}))
                    counts.update(value)
                    merged[key] = dict(sorted(counts.items()))
                else:
                    merged[key] = merged.get(key, 0) + value
        faults["proxy"] = merged
        faults["served_timeline"] = _merge_timeline(
            s for r in records for s in r["faults"].get("served_timeline", [])
        )
    return faults


def build_report(result: BenchResult) -> dict[str, Any]:
    """The JSON report of one unsharded run (see the module docstring)."""
    return merge_records([shard_record(result)], source=result.workload.source)
