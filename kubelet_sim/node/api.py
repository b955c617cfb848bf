"""The daemon's HTTP endpoints: health, metrics, apply/delete, pods, images, events.

Routes map to the node's state through the :class:`NodeView` seam so they can be tested without a
registry. Bad input answers 400/413/422 naming the field; nothing here may crash the daemon.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST

from kubelet_sim.errors import ConfigError, KubeletSimError
from kubelet_sim.node.httpserver import Request, Response


class NodeView(Protocol):
    """What the API needs of the daemon."""

    @property
    def ready(self) -> bool: ...

    def metrics_text(self) -> bytes: ...

    async def apply(self, body: bytes, content_type: str) -> list[dict[str, str]]: ...

    async def delete_pod(self, namespace: str, name: str) -> bool: ...

    def pods(self) -> list[dict[str, Any]]: ...

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def images(self) -> list[dict[str, Any]]: ...

    def events(self, namespace: str | None, name: str | None) -> list[dict[str, Any]]: ...


_POD = re.compile(r"/pods/([a-z0-9]([-a-z0-9]*[a-z0-9])?)/([a-z0-9]([-.a-z0-9]*[a-z0-9])?)")


class API:
    """Routes requests to a :class:`NodeView`."""

    def __init__(self, node: NodeView) -> None:
        self.node = node

    async def __call__(self, request: Request) -> Response:
        path, method = request.path.rstrip("/") or "/", request.method
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
        match = _POD.fullmatch(path)
        if match:
            namespace, name = match.group(1), match.group(3)
            if method == "GET":
                pod = self.node.pod(namespace, name)
                if pod is None:
                    return Response.error(404, f"pod {namespace}/{name} not found")
                return Response.json(200, pod)
            if method == "DELETE":
                try:
                    deleted = await self.node.delete_pod(namespace, name)
                except ConfigError as exc:  # a static pod: its file, not the API, owns it
                    return Response.error(409, str(exc))
                if deleted:
                    return Response.json(200, {"deleted": f"{namespace}/{name}"})
                return Response.error(404, f"pod {namespace}/{name} not found")
            return Response.error(405, f"method {method} not allowed on {path}")
        if path.startswith("/pods/"):
            return Response.error(400, f"bad pod path {path!r}: want /pods/NAMESPACE/NAME")
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
        return Response.json(200, {"items": results})

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
