"""The node's recorded events as ``v1 Event`` objects, which ``kubectl describe`` lists by
``involvedObject`` and ``kubectl get events`` prints.

The recorder aggregates as the kubelet's does (``count``, ``firstTimestamp``,
``lastTimestamp``); events about the Node are in the ``default`` namespace, as upstream records
them.
"""

from __future__ import annotations

from typing import Any

from kubelet_sim.k8s.objects import DEFAULT_NAMESPACE
from kubelet_sim.k8s.served import rfc3339
from kubelet_sim.telemetry.events import Event

__all__ = ["event_document"]


def event_document(event: Event, *, resource_version: str) -> dict[str, Any]:
    """One event, as the API serves it."""
    obj = event.involved_object
    involved: dict[str, Any] = {
        "kind": obj.kind,
        "name": obj.name,
        "uid": obj.uid,
        "apiVersion": obj.api_version,
    }
    if obj.namespace:
        involved["namespace"] = obj.namespace
    if obj.field_path:
        involved["fieldPath"] = obj.field_path
    return {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {
            "name": event.name,
            "namespace": obj.namespace or DEFAULT_NAMESPACE,
            "resourceVersion": resource_version,
            "creationTimestamp": rfc3339(event.first_timestamp),
        },
        "involvedObject": involved,
        "reason": str(event.reason),
        "message": event.message,
        "type": str(event.type),
        "count": event.count,
        "firstTimestamp": rfc3339(event.first_timestamp),
        "lastTimestamp": rfc3339(event.last_timestamp),
        "source": {"component": event.source_component, "host": event.source_host},
        "reportingComponent": event.source_component,
        "reportingInstance": event.source_host,
        "eventTime": None,
    }
