"""The daemon's HTTP endpoints: health, metrics, apply/delete, pods, images, events, and the
cluster objects a pod's containers read (services, configmaps, runtimeclasses).

Routes map to the node's state through the :class:`NodeView` seam so they can be tested without a
registry. Bad input answers 400/413/422 naming the field; nothing here may crash the daemon.

``POST /apply`` answers ``{"items": [...], "warnings": [...]}``: each item is the node's answer
for one object plus its ``warnings`` (what the API server would warn about its document:
``unknown field "spec.foo"``, ``field not modelled by kubelet-sim: spec.volumes``), and the
top-level ``warnings`` lists them all, each prefixed with its object (``pod/web: ...``), as
kubectl prints them. ``GET /services``, ``/configmaps`` and ``/runtimeclasses`` list those objects
(``?namespace=NS`` narrows the first two); ConfigMap values are shown, Secrets never are.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST

from kubelet_sim.errors import ConfigError, KubeletSimError
from kubelet_sim.k8s.cluster import ConfigMap, RuntimeClass, Service
from kubelet_sim.k8s.objects import Kind, Object, field_warnings
from kubelet_sim.node.httpserver import Request, Response


class ClusterObjects(Protocol):
    """What the API reads of the node's API objects (:class:`~kubelet_sim.k8s.ObjectStore`)."""

    def get(self, kind: Kind, namespace: str, name: str) -> Object | None: ...

    def services(self, namespace: str | None = None) -> list[Service]: ...

    def config_maps(self, namespace: str | None = None) -> list[ConfigMap]: ...

    def runtime_classes(self) -> list[RuntimeClass]: ...


class NodeView(Protocol):
    """What the API needs of the daemon."""

    @property
    def ready(self) -> bool: ...

    @property
    def objects(self) -> ClusterObjects: ...

    def metrics_text(self) -> bytes: ...

    async def apply(self, body: bytes, content_type: str) -> list[dict[str, Any]]:
        """One item per object: ``kind``, ``namespace``, ``name``, ``result`` and, when the node
        has them, ``warnings`` (else the API reads them from the stored object)."""
        ...

    async def delete_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Begin a graceful deletion; the pod as served, None when there is none."""
        ...

    def pods(self) -> list[dict[str, Any]]: ...

    def pod(self, namespace: str, name: str, *, reveal: bool = False) -> dict[str, Any] | None: ...

    async def explain(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def images(self) -> list[dict[str, Any]]: ...

    def events(self, namespace: str | None, name: str | None) -> list[dict[str, Any]]: ...


_POD = re.compile(r"/pods/([a-z0-9]([-a-z0-9]*[a-z0-9])?)/([a-z0-9]([-.a-z0-9]*[a-z0-9])?)")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class KubernetesPaths(Protocol):
    """The Kubernetes API paths (:class:`~kubelet_sim.node.kubeapi.KubeAPI`)."""

    def handles(self, path: str) -> bool: ...

    async def __call__(self, request: Request) -> Response: ...


class API:
    """Routes requests to a :class:`NodeView`, and the Kubernetes paths to ``kube``."""

    def __init__(self, node: NodeView, *, kube: KubernetesPaths | None = None) -> None:
        self.node = node
        self.kube = kube

    async def __call__(self, request: Request) -> Response:
        path, method = request.path.rstrip("/") or "/", request.method
        if self.kube is not None and self.kube.handles(path):
            return await self.kube(request)
        if path == "/healthz":
            return _only(method, "GET") or Response.text(200, "ok")
        if path == "/readyz":
            return _only(method, "GET") or (
                Response.text(200, "ok") if self.node.ready else Response.text(503, "not ready")
            )
        if path == "/metrics":
            return _only(method, "GET") or Response(
                200, self.node.metrics_text(), CONTENT_TYPE_LATEST
            )
        if path == "/apply":
            return _only(method, "POST") or await self._apply(request)
        if path == "/pods":
            return _only(method, "GET") or Response.json(200, {"items": self.node.pods()})
        if path == "/images":
            return _only(method, "GET") or Response.json(200, {"items": await self.node.images()})
        if path == "/events":
            return _only(method, "GET") or self._events(request)
        if path == "/services":
            return _only(method, "GET") or self._list(request, _services)
        if path == "/configmaps":
            return _only(method, "GET") or self._list(request, _config_maps)
        if path == "/runtimeclasses":
            return _only(method, "GET") or Response.json(
                200, {"items": [_runtime_class(r) for r in self.node.objects.runtime_classes()]}
            )
        if path.startswith("/pods/") and path.endswith("/explain"):
            explained = _POD.fullmatch(path.removesuffix("/explain"))
            if explained is not None:
                namespace, name = explained.group(1), explained.group(3)
                if method != "GET":
                    return Response.error(405, f"method {method} not allowed on {path}")
                account = await self.node.explain(namespace, name)
                if account is None:
                    return Response.error(404, f"pod {namespace}/{name} not found")
                return Response.json(200, account)
        match = _POD.fullmatch(path)
        if match:
            namespace, name = match.group(1), match.group(3)
            if method == "GET":
                reveal = request.param("reveal") in ("1", "true")
                if reveal and not request.from_loopback:
                    # Secret values leave the node only to a client on the node itself.
                    return Response.error(403, "reveal=1 is answered on loopback only")
                pod = self.node.pod(namespace, name, reveal=reveal)
                if pod is None:
                    return Response.error(404, f"pod {namespace}/{name} not found")
                return Response.json(200, pod)
            if method == "DELETE":
                try:
                    deleted = await self.node.delete_pod(namespace, name)
                except ConfigError as exc:  # a static pod: its file, not the API, owns it
                    return Response.error(409, str(exc))
                if deleted is not None:
                    return Response.json(200, {"deleted": f"{namespace}/{name}"})
                return Response.error(404, f"pod {namespace}/{name} not found")
            return Response.error(405, f"method {method} not allowed on {path}")
        if path.startswith("/pods/"):
            return Response.error(
                400, f"bad pod path {path!r}: want /pods/NAMESPACE/NAME[/explain]"
            )
        return Response.error(404, f"no route for {path}")

    async def _apply(self, request: Request) -> Response:
        if not request.body.strip():
            return Response.error(400, "empty body: send YAML or JSON objects")
        try:
            results = await self.node.apply(request.body, request.headers.get("content-type", ""))
        except ConfigError as exc:
            return Response.error(422, exc.message, field=exc.field, source=exc.file)
        except KubeletSimError as exc:
            return Response.error(400, str(exc))
        items = [self._with_warnings(item) for item in results]
        warnings = [
            f"{str(item.get('kind', '')).lower()}/{item.get('name', '')}: {warning}"
            for item in items
            for warning in item["warnings"]
        ]
        return Response.json(200, {"items": items, "warnings": warnings})

    def _with_warnings(self, item: dict[str, Any]) -> dict[str, Any]:
        """The item with its ``warnings``: the node's, or those of the object as stored (the
        daemon's items do not carry them)."""
        warnings = item.get("warnings")
        if warnings is None:
            try:
                kind = Kind(str(item.get("kind", "")))
            except ValueError:
                return {**item, "warnings": []}
            namespace = item.get("namespace") if kind.namespaced else ""
            obj = self.node.objects.get(kind, str(namespace or ""), str(item.get("name", "")))
            warnings = field_warnings(obj) if obj is not None else ()
        return {**item, "warnings": list(warnings)}

    def _list(self, request: Request, rows: _Rows) -> Response:
        namespace = request.param("namespace")
        if namespace is not None and (len(namespace) > 63 or not _NAMESPACE.fullmatch(namespace)):
            return Response.error(400, f"namespace must be a DNS label, got {namespace[:64]!r}")
        return Response.json(200, {"items": rows(self.node.objects, namespace)})

    def _events(self, request: Request) -> Response:
        pod = request.param("pod")
        namespace = name = None
        if pod:
            namespace, _, name = pod.partition("/")
            if not namespace or not name:
                return Response.error(400, f"pod must be NAMESPACE/NAME, got {pod!r}")
        return Response.json(200, {"items": self.node.events(namespace, name)})


def _only(method: str, allowed: str) -> Response | None:
    if method == allowed:
        return None
    return Response.error(405, f"method {method} not allowed; use {allowed}")


class _Rows(Protocol):
    def __call__(self, objects: ClusterObjects, namespace: str | None) -> list[dict[str, Any]]: ...


def _services(objects: ClusterObjects, namespace: str | None) -> list[dict[str, Any]]:
    """``GET /services``: each Service's cluster IP and ports (what the kubelet's env uses)."""
    return [
        {
            "namespace": s.namespace,
            "name": s.name,
            "uid": s.uid,
            "type": s.type,
            "clusterIP": s.cluster_ip,
            "ports": [{"name": p.name, "port": p.port, "protocol": p.protocol} for p in s.ports],
        }
        for s in objects.services(namespace)
    ]


def _config_maps(objects: ClusterObjects, namespace: str | None) -> list[dict[str, Any]]:
    """``GET /configmaps``: keys and values (``binaryData`` base64, as the API shows it)."""
    return [
        {
            "namespace": c.namespace,
            "name": c.name,
            "uid": c.uid,
            "data": dict(c.data),
            "binaryData": {k: base64.b64encode(v).decode() for k, v in c.binary_data.items()},
        }
        for c in objects.config_maps(namespace)
    ]


def _runtime_class(r: RuntimeClass) -> dict[str, Any]:
    """One row of ``GET /runtimeclasses``."""
    return {
        "name": r.name,
        "uid": r.uid,
        "handler": r.handler,
        "overhead": {"podFixed": dict(r.overhead_pod_fixed)},
        "scheduling": {"nodeSelector": dict(r.node_selector)},
    }
