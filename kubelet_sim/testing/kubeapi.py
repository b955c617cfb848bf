"""A fake daemon for the Kubernetes API paths, and a request helper, for tests.

:class:`FakeKubeNode` is the daemon's part of :class:`~kubelet_sim.node.kubeapi.KubeNode` over a
real :class:`~kubelet_sim.k8s.store.ObjectStore`: writes go straight to the store, a pod's
delete only marks it (the grace periods asked for are kept), and the events are whatever the
test gives. :func:`call` sends one request to a :class:`~kubelet_sim.node.kubeapi.KubeAPI` as
the HTTP server would hand it over.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from kubelet_sim.k8s.objects import Kind
from kubelet_sim.k8s.store import ObjectStore
from kubelet_sim.node.httpserver import Request, Response
from kubelet_sim.node.kubeapi import KubeAPI

__all__ = ["NOW", "FakeKubeNode", "body_of", "call", "drain"]

T = TypeVar("T")
NOW = 1_800_000_000.0
"""The wall clock of the fake node's store (2027-01-15T08:00:00Z)."""


class FakeKubeNode:
    """The daemon's part of the API, faked over a real object store (node ``node-1``)."""

    def __init__(self, *, events: list[dict[str, Any]] | None = None) -> None:
        self.objects = ObjectStore(clock=lambda: NOW, node_name="node-1")
        self.graces: list[int | None] = []
        self.events = events or []

    async def write(self, change: Callable[[ObjectStore], T]) -> T:
        return change(self.objects)

    async def delete_pod(
        self, namespace: str, name: str, *, grace: int | None = None
    ) -> dict[str, Any] | None:
        if self.objects.get_pod(namespace, name) is None:
            return None
        self.graces.append(grace)
        return self.objects.mark_deleting(Kind.POD, namespace, name, 30 if grace is None else grace)

    def event_documents(self, namespace: str | None) -> list[dict[str, Any]]:
        return [e for e in self.events if namespace in (None, e["metadata"]["namespace"])]


async def call(
    api: KubeAPI,
    method: str,
    target: str,
    body: object = None,
    *,
    content_type: str = "application/json",
    accept: str = "application/json",
    peer: str = "127.0.0.1",
) -> Response:
    """One request (``body`` as JSON unless it is bytes already), from ``peer``."""
    parts = urlsplit(target)
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    headers = {"accept": accept, "content-type": content_type}
    request = Request(method, parts.path, parse_qs(parts.query), headers, raw, peer)
    assert api.handles(parts.path)
    return await api(request)


def body_of(response: Response) -> Any:
    """The answer's JSON."""
    return json.loads(response.body)


async def drain(response: Response) -> list[bytes]:
    """Every chunk of a streaming answer (a watch that ends: ``timeoutSeconds``)."""
    assert response.stream is not None
    chunks: list[bytes] = []

    async def send(chunk: bytes) -> None:
        chunks.append(chunk)

    await response.stream(send)
    return chunks
