"""The Kubernetes resources the node serves, and the discovery documents that announce them.

kubectl learns what a server offers before any request: ``/api`` and ``/apis`` (the aggregated
``apidiscovery.k8s.io/v2`` form when asked for it, else the legacy ``APIVersions`` /
``APIGroupList`` and one ``APIResourceList`` per group version), ``/version``, and the OpenAPI v3
index, where the PATCH operation of each kind lists ``fieldValidation`` so kubectl leaves
validation to the server instead of downloading schemas (cli-runtime's queryParamVerifierV3).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from kubelet_sim.k8s.objects import Kind

__all__ = [
    "AGGREGATED_CONTENT_TYPE",
    "RESOURCES",
    "Resource",
    "aggregated_discovery",
    "api_group_list",
    "api_versions",
    "find",
    "openapi_index",
    "openapi_spec",
    "resource_list",
    "version_info",
]

AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
_WRITE = ("create", "delete", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, slots=True)
class Resource:
    """One resource: its REST name, kind and verbs (``kind`` None: served from the node's event
    recorder, not the object store)."""

    plural: str
    singular: str
    kind_name: str
    group: str
    version: str
    namespaced: bool
    short_names: tuple[str, ...]
    verbs: tuple[str, ...]
    kind: Kind | None

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """As API messages name it: ``pods``, ``runtimeclasses.node.k8s.io``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES: tuple[Resource, ...] = (
    Resource("pods", "pod", "Pod", "", "v1", True, ("po",), _WRITE, Kind.POD),
    Resource("secrets", "secret", "Secret", "", "v1", True, (), _WRITE, Kind.SECRET),
    Resource(
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        "",
        "v1",
        True,
        ("sa",),
        _WRITE,
        Kind.SERVICE_ACCOUNT,
    ),
    Resource("services", "service", "Service", "", "v1", True, ("svc",), _WRITE, Kind.SERVICE),
    Resource(
        "configmaps", "configmap", "ConfigMap", "", "v1", True, ("cm",), _WRITE, Kind.CONFIG_MAP
    ),
    Resource("events", "event", "Event", "", "v1", True, ("ev",), ("get", "list", "watch"), None),
    Resource(
        "runtimeclasses",
        "runtimeclass",
        "RuntimeClass",
        "node.k8s.io",
        "v1",
        False,
        (),
        _WRITE,
        Kind.RUNTIME_CLASS,
    ),
)
_GROUPS = ("node.k8s.io",)


def find(group: str, version: str, plural: str) -> Resource | None:
    for resource in RESOURCES:
        if (resource.group, resource.version, resource.plural) == (group, version, plural):
            return resource
    return None


def version_info() -> dict[str, str]:
    """``/version``: the API version kubelet-sim's objects follow."""
    return {
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-kubelet-sim",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "",
        "platform": "linux/amd64",
    }


def api_versions() -> dict[str, Any]:
    """Legacy ``/api``."""
    return {"kind": "APIVersions", "apiVersion": "v1", "versions": ["v1"]}


def api_group_list() -> dict[str, Any]:
    """Legacy ``/apis``."""
    groups = []
    for group in _GROUPS:
        version = {"groupVersion": f"{group}/v1", "version": "v1"}
        groups.append({"name": group, "versions": [version], "preferredVersion": version})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str) -> dict[str, Any] | None:
    """Legacy ``/apis/GROUP``."""
    for one in api_group_list()["groups"]:
        if one["name"] == group:
            return {"kind": "APIGroup", "apiVersion": "v1", **one}
    return None


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    """Legacy ``/api/v1`` or ``/apis/GROUP/VERSION``."""
    served = [r for r in RESOURCES if (r.group, r.version) == (group, version)]
    if not served:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": served[0].group_version,
        "resources": [
            {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind_name,
                "verbs": list(r.verbs),
                **({"shortNames": list(r.short_names)} if r.short_names else {}),
                **({"categories": ["all"]} if r.kind_name in ("Pod", "Service") else {}),
            }
            for r in served
        ],
    }


def aggregated_discovery(*, legacy: bool) -> dict[str, Any]:
    """``/api`` (``legacy``) or ``/apis`` as one ``APIGroupDiscoveryList``."""
    groups = [""] if legacy else list(_GROUPS)
    items = []
    for group in groups:
        resources = [
            {
                "resource": r.plural,
                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind_name},
                "scope": "Namespaced" if r.namespaced else "Cluster",
                "singularResource": r.singular,
                "verbs": list(r.verbs),
                **({"shortNames": list(r.short_names)} if r.short_names else {}),
                **({"categories": ["all"]} if r.kind_name in ("Pod", "Service") else {}),
            }
            for r in RESOURCES
            if r.group == group
        ]
        metadata: dict[str, Any] = {"creationTimestamp": None}
        if group:
            metadata["name"] = group
        items.append(
            {
                "metadata": metadata,
                "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


def _paths(group: str, version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for r in RESOURCES:
        if (r.group, r.version) != (group, version) or "patch" not in r.verbs:
            continue
        base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
        item = (
            f"{base}/namespaces/{{namespace}}/{r.plural}/{{name}}"
            if r.namespaced
            else f"{base}/{r.plural}/{{name}}"
        )
        gvk = {"group": r.group, "version": r.version, "kind": r.kind_name}
        query = {"in": "query", "schema": {"type": "string", "uniqueItems": True}}
        paths[item] = {
            "patch": {
                "operationId": f"patch{r.kind_name}",
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [
                    {"name": "dryRun", **query},
                    {"name": "fieldManager", **query},
                    {"name": "fieldValidation", **query},
                    {"name": "force", "in": "query", "schema": {"type": "boolean"}},
                ],
                "responses": {"200": {"description": "OK"}},
            }
        }
    return paths


def openapi_spec(group: str, version: str) -> dict[str, Any] | None:
    """``/openapi/v3/api/v1`` or ``/openapi/v3/apis/GROUP/VERSION``: the operations, without
    schemas (the server validates)."""
    paths = _paths(group, version)
    if not paths:
        return None
    title = "Kubernetes (kubelet-sim)"
    return {
        "openapi": "3.0.0",
        "info": {"title": title, "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},  # none: kubectl explain then says so instead of failing
    }


def openapi_index() -> dict[str, Any]:
    """``/openapi/v3``: each group version's document, with the hash clients cache it by."""
    out: dict[str, Any] = {}
    for group, prefix in (("", "api/v1"), *((g, f"apis/{g}/v1") for g in _GROUPS)):
        spec = openapi_spec(group, "v1")
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]
        out[prefix] = {"serverRelativeURL": f"/openapi/v3/{prefix}?hash={digest.upper()}"}
    return {"paths": out}
