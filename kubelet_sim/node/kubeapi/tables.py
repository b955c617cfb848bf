"""``kubectl get`` tables (``meta.k8s.io/v1 Table``), printed server side as the API server does.

Columns and cells follow ``pkg/printers/internalversion/printers.go``: a pod's READY, STATUS
(``printPod``: an init step, the last waiting or terminated reason, ``Terminating`` while it is
deleted), RESTARTS with how long ago, AGE as ``duration.HumanDuration``. Columns of priority 1
are the ones ``-o wide`` adds. Each row carries the object's metadata (``includeObject=Metadata``,
the default) or the whole object (``Object``).
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping, Sequence
from typing import Any

from kubelet_sim.node.kubeapi.resources import Resource

__all__ = ["human_duration", "pod_columns", "table"]

_Column = tuple[str, str, int]  # name, type, priority

_COLUMNS: dict[str, tuple[_Column, ...]] = {
    "pods": (
        ("Name", "string", 0),
        ("Ready", "string", 0),
        ("Status", "string", 0),
        ("Restarts", "string", 0),
        ("Age", "string", 0),
        ("IP", "string", 1),
        ("Node", "string", 1),
        ("Nominated Node", "string", 1),
        ("Readiness Gates", "string", 1),
    ),
    "secrets": (("Name", "string", 0), ("Type", "string", 0), ("Data", "integer", 0)),
    "serviceaccounts": (("Name", "string", 0), ("Secrets", "integer", 0)),
    "services": (
        ("Name", "string", 0),
        ("Type", "string", 0),
        ("Cluster-IP", "string", 0),
        ("External-IP", "string", 0),
        ("Port(s)", "string", 0),
    ),
    "configmaps": (("Name", "string", 0), ("Data", "integer", 0)),
    "events": (
        ("Last Seen", "string", 0),
        ("Type", "string", 0),
        ("Reason", "string", 0),
        ("Object", "string", 0),
        ("Subobject", "string", 1),
        ("Source", "string", 1),
        ("Message", "string", 0),
        ("First Seen", "string", 1),
        ("Count", "integer", 1),
        ("Name", "string", 1),
    ),
    "runtimeclasses": (("Name", "string", 0), ("Handler", "string", 0)),
}
_AGE_LAST = ("secrets", "serviceaccounts", "configmaps", "runtimeclasses")


def human_duration(seconds: float) -> str:
    """``duration.HumanDuration``: ``5s``, ``3m20s``, ``2h5m``, ``3d4h``, ``2y3d``."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _since(stamp: Any, now: float) -> str:
    """``translateTimestampSince``: ``<unknown>`` without a time."""
    wall = _parse_time(stamp)
    return "<unknown>" if wall is None else human_duration(now - wall)


def _parse_time(stamp: Any) -> float | None:
    if isinstance(stamp, int | float):
        return float(stamp)
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return float(calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None


def _get(doc: Mapping[str, Any], *path: str) -> Any:
    value: Any = doc
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _list(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def pod_columns(pod: Mapping[str, Any], now: float) -> tuple[str, str, str]:
    """READY, STATUS and RESTARTS of a served pod, as ``printPod`` computes them."""
    spec, status = _get(pod, "spec") or {}, _get(pod, "status") or {}
    total = len(_list(spec.get("containers")))
    inits = _list(spec.get("initContainers"))
    restartable = {
        c.get("name") for c in inits if c.get("restartPolicy") == "Always"
    }  # sidecars count as containers
    total += len(restartable)
    ready = restarts = sidecar_restarts = 0
    last_restart = sidecar_last = 0.0
    phase = str(status.get("phase") or "")
    reason = str(status.get("reason") or phase)
    for condition in _list(status.get("conditions")):
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    initializing = False
    for index, c in enumerate(_list(status.get("initContainerStatuses"))):
        restarts += int(c.get("restartCount") or 0)
        finished = _parse_time(_get(c, "lastState", "terminated", "finishedAt")) or 0.0
        last_restart = max(last_restart, finished)
        sidecar = c.get("name") in restartable
        if sidecar:
            sidecar_restarts += int(c.get("restartCount") or 0)
            sidecar_last = max(sidecar_last, finished)
        terminated = _get(c, "state", "terminated")
        waiting_reason = _get(c, "state", "waiting", "reason")
        if isinstance(terminated, Mapping) and not terminated.get("exitCode"):  # 0 or unset
            continue
        if sidecar and c.get("started"):
            ready += 1 if c.get("ready") else 0
            continue
        if isinstance(terminated, Mapping):
            reason = (
                f"Init:{terminated['reason']}"
                if terminated.get("reason")
                else f"Init:Signal:{terminated['signal']}"
                if terminated.get("signal")
                else f"Init:ExitCode:{terminated.get('exitCode', 0)}"
            )
        elif waiting_reason and waiting_reason != "PodInitializing":
            reason = f"Init:{waiting_reason}"
        else:
            reason = f"Init:{index}/{len(inits)}"
        initializing = True
        break
    initialized = any(
        c.get("type") == "Initialized" and c.get("status") == "True"
        for c in _list(status.get("conditions"))
    )
    if not initializing or initialized:
        restarts, last_restart = sidecar_restarts, sidecar_last
        running = False
        for c in reversed(_list(status.get("containerStatuses"))):
            restarts += int(c.get("restartCount") or 0)
            finished = _parse_time(_get(c, "lastState", "terminated", "finishedAt")) or 0.0
            last_restart = max(last_restart, finished)
            waiting = _get(c, "state", "waiting")
            terminated = _get(c, "state", "terminated")
            if isinstance(waiting, Mapping) and waiting.get("reason"):
                reason = str(waiting["reason"])
            elif isinstance(terminated, Mapping):
                reason = (
                    str(terminated["reason"])
                    if terminated.get("reason")
                    else f"Signal:{terminated['signal']}"
                    if terminated.get("signal")
                    else f"ExitCode:{terminated.get('exitCode', 0)}"
                )
            elif c.get("ready") and isinstance(_get(c, "state", "running"), Mapping):
                running = True
                ready += 1
        if reason == "Completed" and running:
            pod_ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in _list(status.get("conditions"))
            )
            reason = "Running" if pod_ready else "NotReady"
    if _get(pod, "metadata", "deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"
    shown = str(restarts)
    if restarts and last_restart:
        shown = f"{restarts} ({human_duration(now - last_restart)} ago)"
    return f"{ready}/{total}", reason, shown


def _cells(resource: Resource, doc: Mapping[str, Any], now: float) -> list[Any]:
    name = _get(doc, "metadata", "name")
    age = _since(_get(doc, "metadata", "creationTimestamp"), now)
    plural = resource.plural
    if plural == "pods":
        ready, reason, restarts = pod_columns(doc, now)
        ips = _list(_get(doc, "status", "podIPs"))
        gates = _list(_get(doc, "spec", "readinessGates"))
        return [
            name,
            ready,
            reason,
            restarts,
            age,
            (ips[0].get("ip") if ips else None) or "<none>",
            _get(doc, "spec", "nodeName") or "<none>",
            _get(doc, "status", "nominatedNodeName") or "<none>",
            f"0/{len(gates)}" if gates else "<none>",
        ]
    if plural == "secrets":
        data = doc.get("data")
        return [name, doc.get("type", ""), len(data) if isinstance(data, Mapping) else 0, age]
    if plural == "serviceaccounts":
        return [name, len(_list(doc.get("secrets"))), age]
    if plural == "configmaps":
        data, binary = doc.get("data"), doc.get("binaryData")
        count = sum(len(d) for d in (data, binary) if isinstance(d, Mapping))
        return [name, count, age]
    if plural == "runtimeclasses":
        return [name, doc.get("handler", ""), age]
    if plural == "services":
        spec = _get(doc, "spec") or {}
        ports = ",".join(
            f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in _list(spec.get("ports"))
        )
        external = spec.get("externalIPs")
        selector = spec.get("selector")
        return [
            name,
            spec.get("type", "ClusterIP"),
            spec.get("clusterIP") or "<none>",
            ",".join(map(str, external)) if isinstance(external, list) and external else "<none>",
            ports or "<none>",
            age,
            ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
            if isinstance(selector, Mapping) and selector
            else "<none>",
        ]
    # events
    involved = _get(doc, "involvedObject") or {}
    source = _get(doc, "source") or {}
    return [
        _since(doc.get("lastTimestamp"), now),
        doc.get("type", ""),
        doc.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        involved.get("fieldPath", ""),
        ", ".join(v for v in (source.get("component"), source.get("host")) if v),
        str(doc.get("message", "")).strip(),
        _since(doc.get("firstTimestamp"), now),
        doc.get("count", 1),
        name,
    ]


def _definitions(resource: Resource) -> list[dict[str, Any]]:
    columns = list(_COLUMNS[resource.plural])
    if resource.plural in _AGE_LAST:
        columns.append(("Age", "string", 0))
    elif resource.plural == "services":
        columns.insert(5, ("Age", "string", 0))
        columns.append(("Selector", "string", 1))
    return [
        {
            "name": name,
            "type": kind,
            "format": "name" if name == "Name" else "",
            "description": "",
            "priority": priority,
        }
        for name, kind, priority in columns
    ]


def table(
    resource: Resource,
    docs: Sequence[Mapping[str, Any]],
    now: float,
    *,
    resource_version: str,
    include_object: str = "Metadata",
    headers: bool = True,
) -> dict[str, Any]:
    """A Table of ``docs`` (``headers`` False: rows only, as a watch event after the first)."""
    rows = []
    for doc in docs:
        row: dict[str, Any] = {"cells": _cells(resource, doc, now)}
        if include_object == "Object":
            row["object"] = dict(doc)
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": dict(_get(doc, "metadata") or {}),
            }
        rows.append(row)
    out: dict[str, Any] = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": _definitions(resource) if headers else [],
        "rows": rows,
    }
    return out
