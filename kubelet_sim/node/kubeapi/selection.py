"""A list or watch request's ``labelSelector`` and ``fieldSelector``, checked against what the
API server supports for the resource (``field label not supported: spec.foo`` otherwise)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s.fields import field_names
from kubelet_sim.k8s.selectors import FieldSelector, LabelSelector
from kubelet_sim.node.httpserver import Request
from kubelet_sim.node.kubeapi.resources import Resource
from kubelet_sim.node.kubeapi.wire import bad_request

__all__ = ["Selection", "field_values"]

_COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
_FIELDS: dict[str, frozenset[str]] = {
    "pods": field_names(
        "spec.nodeName spec.restartPolicy spec.schedulerName spec.serviceAccountName "
        "spec.hostNetwork status.phase status.podIP status.nominatedNodeName"
    ),
    "secrets": frozenset({"type"}),
    "events": field_names(
        "involvedObject.kind involvedObject.namespace involvedObject.name involvedObject.uid "
        "involvedObject.apiVersion involvedObject.resourceVersion involvedObject.fieldPath "
        "reason reportingComponent source type"
    ),
}


def field_values(doc: Mapping[str, Any], names: frozenset[str]) -> dict[str, str]:
    """The values of the fields ``names`` (``a.b`` paths) of a served document, as field
    selectors compare them (an event's ``source`` is its component)."""
    out: dict[str, str] = {}
    for name in names:
        value: Any = doc
        for part in name.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if name == "source" and isinstance(value, Mapping):
            value = value.get("component", "")
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, str | int):
            out[name] = str(value)
    return out


class Selection:
    """A request's ``labelSelector`` and ``fieldSelector``, checked against the resource."""

    def __init__(self, request: Request, resource: Resource) -> None:
        try:
            self.labels = LabelSelector.parse(request.param("labelSelector") or "")
            self.fields = FieldSelector.parse(request.param("fieldSelector") or "")
        except ConfigError as exc:
            raise bad_request(exc.message) from exc
        allowed = _COMMON_FIELDS | _FIELDS.get(resource.plural, frozenset())
        for name in sorted(self.fields.fields()):
            if name not in allowed:
                raise bad_request(f"field label not supported: {name[:100]}")

    def matches(self, doc: Mapping[str, Any]) -> bool:
        if self.labels.requirements:
            metadata = doc.get("metadata")
            labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
            if not self.labels.matches(labels if isinstance(labels, Mapping) else {}):
                return False
        names = self.fields.fields()
        return not names or self.fields.matches(field_values(doc, names))
