"""Objects as the API server serves them: the stored document with its metadata, the values
admission and defaulting set, and (pods) the status the kubelet reported.

What ``kubectl get -o yaml`` shows is the document that was written, plus what the API server
owns: ``metadata.uid``, ``resourceVersion``, ``creationTimestamp`` (and ``deletionTimestamp``
while a pod terminates). Fields admission or defaulting changed are shown as stored: a pod's
``spec.imagePullSecrets`` from its ServiceAccount, ``imagePullPolicy`` from the tag or
AlwaysPullImages, ``serviceAccountName``, ``restartPolicy``, ``nodeName`` (the node's own: every
pod here is bound to it); a Secret's ``stringData`` merged into ``data``.
"""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubelet_sim.k8s.cluster import Service
from kubelet_sim.k8s.objects import Object, Pod, Secret

__all__ = ["ObjectMeta", "rfc3339", "served_document"]


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """What the API server keeps about an object besides its document."""

    resource_version: int
    created: float
    """``creationTimestamp`` (wall-clock seconds)."""
    deletion: float | None = None
    """``deletionTimestamp``: when a graceful deletion began (the object goes once it is done)."""
    deletion_grace: int | None = None


def rfc3339(wall: float) -> str:
    """``metav1.Time`` as JSON: seconds resolution, UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def served_document(
    obj: Object,
    raw: Mapping[str, Any],
    meta: ObjectMeta,
    *,
    status: Mapping[str, Any] | None = None,
    node_name: str = "",
) -> dict[str, Any]:
    """The object as ``GET`` answers it (a new document; ``raw`` is not changed)."""
    doc: dict[str, Any] = copy.deepcopy(dict(raw))
    doc["apiVersion"] = obj.kind.api_version
    doc["kind"] = str(obj.kind)
    metadata = doc.get("metadata")
    metadata = dict(metadata) if isinstance(metadata, Mapping) else {}
    metadata["name"] = obj.name
    if obj.kind.namespaced:
        metadata["namespace"] = obj.namespace
    else:
        metadata.pop("namespace", None)
    metadata["uid"] = obj.uid
    metadata["resourceVersion"] = str(meta.resource_version)
    metadata["creationTimestamp"] = rfc3339(meta.created)
    if meta.deletion is not None:
        metadata["deletionTimestamp"] = rfc3339(meta.deletion)
        metadata["deletionGracePeriodSeconds"] = meta.deletion_grace or 0
    metadata.pop("managedFields", None)
    doc["metadata"] = {k: metadata[k] for k in sorted(metadata)}
    if isinstance(obj, Pod):
        _pod(doc, obj, status, node_name)
    elif isinstance(obj, Secret):
        doc.pop("stringData", None)
        doc["type"] = str(obj.type)
        if obj.data:
            doc["data"] = {k: base64.b64encode(v).decode() for k, v in obj.data.items()}
    elif isinstance(obj, Service):
        spec = _mapping(doc, "spec")
        spec["type"] = obj.type
        if obj.cluster_ip:
            spec["clusterIP"] = obj.cluster_ip
            spec.setdefault("clusterIPs", [obj.cluster_ip])
        ports = spec.get("ports")
        if isinstance(ports, list):  # pkg/apis/core/v1/defaults.go SetDefaults_ServicePort
            spec["ports"] = [
                {"protocol": "TCP", "targetPort": p.get("port"), **p}
                if isinstance(p, Mapping)
                else p
                for p in ports
            ]
        spec.setdefault("sessionAffinity", "None")
        if obj.type != "ExternalName":
            spec.setdefault("internalTrafficPolicy", "Cluster")
        if obj.has_cluster_ip:  # the allocator's defaults for a single-stack cluster
            spec.setdefault("ipFamilies", ["IPv6" if ":" in obj.cluster_ip else "IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
    return doc


def _mapping(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    out = dict(value) if isinstance(value, Mapping) else {}
    doc[key] = out
    return out


def _pod(doc: dict[str, Any], pod: Pod, status: Mapping[str, Any] | None, node_name: str) -> None:
    spec = _mapping(doc, "spec")
    spec["serviceAccountName"] = pod.service_account_name
    spec["serviceAccount"] = pod.service_account_name  # the deprecated alias the API fills in
    spec["restartPolicy"] = pod.restart_policy
    spec["terminationGracePeriodSeconds"] = pod.termination_grace_period_seconds
    spec["enableServiceLinks"] = pod.enable_service_links
    spec["nodeName"] = pod.node_name or node_name
    if pod.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in pod.image_pull_secrets]
    if pod.overhead:
        spec["overhead"] = dict(pod.overhead)
    if pod.node_selector:
        spec["nodeSelector"] = dict(pod.node_selector)
    for field, containers in (
        ("containers", pod.containers),
        ("initContainers", pod.init_containers),
        ("ephemeralContainers", pod.ephemeral_containers),
    ):
        listed = spec.get(field)
        if not isinstance(listed, list):
            continue
        policies = {c.name: str(c.image_pull_policy) for c in containers}
        out = []
        for item in listed:
            if isinstance(item, Mapping) and item.get("name") in policies:
                item = {**item, "imagePullPolicy": policies[str(item["name"])]}
            out.append(item)
        spec[field] = out
    doc["status"] = dict(status) if status is not None else {"phase": "Pending"}
