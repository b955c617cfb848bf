"""The Kubernetes REST paths for the node's objects: discovery, get, list, watch, create, update,
patch and delete, as kubectl v1.32 uses them.

Paths are upstream's (``/api/v1/namespaces/NS/pods/NAME``,
``/apis/node.k8s.io/v1/runtimeclasses``); every write goes through the node (its lock, pod
admission, and pods submitted to or removed from the engine), every read from the object store
as served (:mod:`kubelet_sim.k8s.served`). ``kubectl get`` asks for tables
(``Accept: application/json;as=Table;g=meta.k8s.io;v=v1``) and gets them printed server side;
``-w`` gets a watch stream. Events come from the node's event recorder.

A pod's ``DELETE`` is graceful: it answers at once with ``deletionTimestamp`` set, the node
runs preStop and stops the containers within the grace period (``gracePeriodSeconds`` of the
DeleteOptions, else the pod's), and the pod is gone (a ``DELETED`` watch event) once they
stopped. Secrets are answered to loopback clients only (as ``?reveal=1`` on ``/pods``).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from kubelet_sim.errors import APIStatusError, ConfigError
from kubelet_sim.k8s.fields import FieldReader
from kubelet_sim.k8s.objects import Kind
from kubelet_sim.k8s.store import ObjectStore
from kubelet_sim.node.httpserver import Request, Response
from kubelet_sim.node.kubeapi import resources
from kubelet_sim.node.kubeapi.documents import grace_period, patched, prepare
from kubelet_sim.node.kubeapi.resources import Resource
from kubelet_sim.node.kubeapi.selection import Selection
from kubelet_sim.node.kubeapi.tables import table
from kubelet_sim.node.kubeapi.watch import watch_stream
from kubelet_sim.node.kubeapi.wire import (
    decode_body,
    dumps,
    invalid,
    mapping,
    status_response,
    warning_headers,
)

__all__ = ["KubeAPI", "KubeNode"]

T = TypeVar("T")


class KubeNode(Protocol):
    """What the REST paths need of the daemon."""

    @property
    def objects(self) -> ObjectStore: ...

    async def write(self, change: Callable[[ObjectStore], T]) -> T:
        """Run ``change`` under the node's lock, then bring the engine's pods in line."""
        ...

    async def delete_pod(
        self, namespace: str, name: str, *, grace: int | None = None
    ) -> dict[str, Any] | None:
        """Begin a graceful deletion; the pod as served after it, None if there is none."""
        ...

    def event_documents(self, namespace: str | None) -> list[dict[str, Any]]: ...


def _wants_table(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    first = accept.split(",", 1)[0]
    return "as=Table" in first and "g=meta.k8s.io" in first


def _ok(status: int, doc: object, warnings: tuple[str, ...] = ()) -> Response:
    return Response(status, dumps(doc), "application/json", warning_headers(warnings))


class KubeAPI:
    """Answers the Kubernetes API paths; :meth:`handles` says which paths are its."""

    def __init__(self, node: KubeNode, *, clock: Callable[[], float]) -> None:
        self.node = node
        self.clock = clock

    @staticmethod
    def handles(path: str) -> bool:
        return path in ("/api", "/apis", "/version") or path.startswith(
            ("/api/", "/apis/", "/openapi/")
        )

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except APIStatusError as exc:
            return status_response(exc)

    async def _route(self, request: Request) -> Response:
        path = request.path.rstrip("/")
        parts = [p for p in path.split("/") if p]
        if request.method != "GET" and (len(parts) < 3 or parts[0] == "openapi"):
            raise APIStatusError(
                405, "MethodNotAllowed", f"{request.method} is not allowed on {path}"
            )
        discovery = self._discovery(request, parts)
        if discovery is not None:
            return discovery
        if parts[0] == "api" and parts[1] == "v1":
            group, version, rest = "", "v1", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _not_found_path(path)
        namespace: str | None = None
        if group == "authorization.k8s.io" and rest == ["selfsubjectaccessreviews"]:
            return self._access_review(request)
        if (group, rest, request.method) == ("", ["namespaces"], "POST"):
            return self._create_namespace(request)
        if len(rest) >= 2 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
            if not rest:
                return self._namespace(request, namespace)
        if not rest:
            raise _not_found_path(path)
        resource = resources.find(group, version, rest[0])
        if resource is not None and len(rest) > 2:
            raise APIStatusError(
                405,
                "MethodNotAllowed",
                f"{resource.plural}/{rest[2][:40]} is not served by kubelet-sim (only the objects "
                "themselves are: no logs, exec, status or other subresources)",
                kind=resource.plural,
                name=rest[1],
            )
        if len(rest) > 2:
            raise _not_found_path(path)
        if resource is None or (namespace is not None and not resource.namespaced):
            raise _not_found_path(path)
        name = rest[1] if len(rest) == 2 else None
        if resource.plural == "secrets" and not request.from_loopback:
            # every verb answers the Secret (a patch answers it patched): loopback only
            raise APIStatusError(
                403, "Forbidden", "secrets are served to loopback clients only", kind="secrets"
            )
        if name is None:
            return await self._collection(request, resource, namespace)
        if not resource.namespaced:
            namespace = ""
        elif namespace is None:
            raise _not_found_path(path)
        return await self._item(request, resource, namespace, name)

    # -- discovery -------------------------------------------------------------------------

    def _discovery(self, request: Request, parts: list[str]) -> Response | None:
        aggregated = (
            "as=APIGroupDiscoveryList" in request.headers.get("accept", "").split(",", 1)[0]
        )
        doc: dict[str, Any] | None
        if parts == ["version"]:
            doc = resources.version_info()
        elif parts in (["api"], ["apis"]):
            if aggregated:
                body = dumps(resources.aggregated_discovery(legacy=parts == ["api"]))
                return Response(200, body, resources.AGGREGATED_CONTENT_TYPE)
            doc = resources.api_versions() if parts == ["api"] else resources.api_group_list()
        elif parts == ["api", "v1"]:
            doc = resources.resource_list("", "v1")
        elif len(parts) == 2 and parts[0] == "apis":
            doc = resources.api_group(parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = resources.resource_list(parts[1], parts[2])
        elif parts[:2] == ["openapi", "v3"]:
            if len(parts) == 2:
                doc = resources.openapi_index()
            elif parts[2:] == ["api", "v1"]:
                doc = resources.openapi_spec("", "v1")
            elif len(parts) == 5 and parts[2] == "apis":
                doc = resources.openapi_spec(parts[3], parts[4])
            else:
                doc = None
        elif parts[:1] == ["openapi"]:
            doc = None  # v2 is protobuf-only in kubectl; v3 says the server validates
        else:
            return None
        if doc is None:
            raise _not_found_path("/" + "/".join(parts))
        return _ok(200, doc)

    def _access_review(self, request: Request) -> Response:
        """``kubectl auth can-i``: the daemon authorizes nothing, so everything is allowed."""
        if request.method != "POST":
            raise APIStatusError(405, "MethodNotAllowed", "selfsubjectaccessreviews are created")
        # The answer is the same whatever was asked (kubectl sends it as protobuf): not read.
        return _ok(
            201,
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "metadata": {},
                "spec": {},
                "status": {"allowed": True, "reason": "kubelet-sim authorizes every request"},
            },
        )

    def _create_namespace(self, request: Request) -> Response:
        """``kubectl create namespace``: namespaces are implicit (each exists once something is
        in it), so creating one succeeds and changes nothing."""
        doc = mapping(decode_body(request.body, request.headers.get("content-type", "")), "it")
        metadata = doc.get("metadata")
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        if not isinstance(name, str) or not name:
            raise invalid("Namespace", "", ConfigError(None, "metadata.name", "Required value"))
        try:
            FieldReader("", "").name(name, "metadata.name", label=True)  # a namespace's rule
        except ConfigError as exc:
            raise invalid("Namespace", name[:63], exc) from exc
        return _ok(201, self._namespace_document(name))

    def _namespace(self, request: Request, namespace: str) -> Response:
        """``GET /api/v1/namespaces/NS``: every namespace exists (objects make it)."""
        if request.method != "GET":
            raise APIStatusError(405, "MethodNotAllowed", "namespaces are not written here")
        return _ok(200, self._namespace_document(namespace))

    @staticmethod
    def _namespace_document(name: str) -> dict[str, Any]:
        return {
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": {"name": name, "creationTimestamp": resources.version_info()["buildDate"]},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }

    # -- reads -----------------------------------------------------------------------------

    def _documents(self, resource: Resource, namespace: str | None) -> list[dict[str, Any]]:
        if resource.kind is None:
            return self.node.event_documents(namespace)
        return self.node.objects.documents(resource.kind, namespace)

    def _document(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        if resource.kind is None:
            found = [
                d for d in self.node.event_documents(namespace) if d["metadata"]["name"] == name
            ]
            doc = found[0] if found else None
        else:
            doc = self.node.objects.document(resource.kind, namespace, name)
        if doc is None:
            raise _not_found(resource, name)
        return doc

    def _answer(
        self, request: Request, resource: Resource, docs: list[dict[str, Any]], *, one: bool
    ) -> Response:
        rv = str(self.node.objects.revision)
        if _wants_table(request):
            include = request.param("includeObject") or "Metadata"
            return _ok(
                200,
                table(resource, docs, self.clock(), resource_version=rv, include_object=include),
            )
        if one:
            return _ok(200, docs[0])
        return _ok(
            200,
            {
                "kind": f"{resource.kind_name}List",
                "apiVersion": resource.group_version,
                "metadata": {"resourceVersion": rv},
                "items": docs,
            },
        )

    async def _collection(
        self, request: Request, resource: Resource, namespace: str | None
    ) -> Response:
        method = request.method
        if method == "GET":
            selection = Selection(request, resource)
            if request.param("watch") in ("1", "true"):
                return watch_stream(
                    request,
                    resource,
                    namespace,
                    selection.matches,
                    self.node.objects,
                    events=self.node.event_documents if resource.kind is None else None,
                    clock=self.clock,
                    table=_wants_table(request),
                )
            docs = [d for d in self._documents(resource, namespace) if selection.matches(d)]
            return self._answer(request, resource, docs, one=False)
        if method == "POST":
            if resource.kind is None:
                raise APIStatusError(405, "MethodNotAllowed", "events are recorded by the node")
            if resource.namespaced and namespace is None:
                raise _not_found_path(request.path)
            return await self._create(request, resource, namespace or "")
        raise APIStatusError(
            405, "MethodNotAllowed", f"{method} is not allowed on {resource.qualified}"
        )

    async def _item(
        self, request: Request, resource: Resource, namespace: str, name: str
    ) -> Response:
        method = request.method
        if method == "GET":
            return self._answer(
                request, resource, [self._document(resource, namespace, name)], one=True
            )
        if resource.kind is None:
            raise APIStatusError(405, "MethodNotAllowed", f"{method} is not allowed on events here")
        if method == "PUT":
            doc = mapping(
                decode_body(request.body, request.headers.get("content-type", "")), "the object"
            )
            return await self._write(request, resource, namespace, name, dict(doc), create=False)
        if method == "PATCH":
            return await self._patch(request, resource, namespace, name)
        if method == "DELETE":
            return await self._delete(request, resource, namespace, name)
        raise APIStatusError(
            405, "MethodNotAllowed", f"{method} is not allowed on {resource.qualified}"
        )

    # -- writes ----------------------------------------------------------------------------

    async def _create(self, request: Request, resource: Resource, namespace: str) -> Response:
        doc = dict(
            mapping(
                decode_body(request.body, request.headers.get("content-type", "")), "the object"
            )
        )
        metadata = dict(mapping(doc.get("metadata") or {}, "metadata"))
        if not metadata.get("name") and isinstance(metadata.get("generateName"), str):
            suffix = "".join(
                secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5)
            )
            metadata["name"] = f"{metadata['generateName']}{suffix}"
        doc["metadata"] = metadata
        name = str(metadata.get("name") or "")
        if not name:
            raise invalid(
                resource.kind_name,
                "",
                ConfigError(
                    None, "metadata.name", "Required value: name or generateName is required"
                ),
            )
        return await self._write(request, resource, namespace, name, doc, create=True)

    async def _patch(
        self, request: Request, resource: Resource, namespace: str, name: str
    ) -> Response:
        """Patch the object as it is when the node's lock is held: a status write (or another
        patch) in between is never a spurious conflict or a lost update. A patch that sets
        ``metadata.resourceVersion`` is a precondition, as upstream."""
        content_type = request.headers.get("content-type", "")
        patch = decode_body(request.body, content_type, patch=True)
        media = content_type.split(";", 1)[0].strip().lower()
        kind = resource.kind
        assert kind is not None

        def change(store: ObjectStore) -> list[str]:
            current = store.document(kind, namespace, name)
            if current is None:
                raise _not_found(resource, name)
            doc = dict(mapping(patched(media, resource, name, current, patch), "the object"))
            metadata = doc.get("metadata")
            if isinstance(metadata, Mapping) and metadata.get("resourceVersion") == current[
                "metadata"
            ].get("resourceVersion"):
                doc["metadata"] = {k: v for k, v in metadata.items() if k != "resourceVersion"}
            manifest, version, warnings = prepare(request, resource, namespace, name, doc, store)
            store.update(manifest, version)
            return warnings

        warnings = await self._stored(self.node.write(change), resource, name)
        return self._written(resource, namespace, name, warnings, created=False)

    async def _write(
        self,
        request: Request,
        resource: Resource,
        namespace: str,
        name: str,
        doc: dict[str, Any],
        *,
        create: bool,
    ) -> Response:
        """Create or replace one object from its document."""
        store = self.node.objects
        manifest, version, warnings = prepare(request, resource, namespace, name, doc, store)

        def change(store: ObjectStore) -> list[str]:
            if create:
                store.create(manifest)
            else:
                store.update(manifest, version)
            return warnings

        await self._stored(self.node.write(change), resource, name)
        return self._written(resource, namespace, name, warnings, created=create)

    @staticmethod
    async def _stored(write: Awaitable[T], resource: Resource, name: str) -> T:
        """The write's result; admission refusing a pod is a 403 Forbidden."""
        try:
            return await write
        except APIStatusError:
            raise
        except ConfigError as exc:
            raise APIStatusError(
                403, "Forbidden", exc.message, kind=resource.qualified, name=name
            ) from exc

    def _written(
        self, resource: Resource, namespace: str, name: str, warnings: list[str], *, created: bool
    ) -> Response:
        assert resource.kind is not None
        stored = self.node.objects.document(resource.kind, namespace, name)
        assert stored is not None
        return _ok(201 if created else 200, stored, tuple(warnings))

    async def _delete(
        self, request: Request, resource: Resource, namespace: str, name: str
    ) -> Response:
        assert resource.kind is not None
        grace = grace_period(request)
        if resource.kind is Kind.POD:
            try:
                doc = await self.node.delete_pod(namespace, name, grace=grace)
            except ConfigError as exc:  # a static pod: its file owns it
                raise APIStatusError(409, "Conflict", str(exc), kind="pods", name=name) from exc
            if doc is None:
                raise _not_found(resource, name)
            return _ok(200, doc)
        kind = resource.kind
        last = self._document(resource, namespace, name)
        await self.node.write(lambda s: s.delete(kind, namespace, name))
        return _ok(
            200,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "kind": resource.plural, "uid": last["metadata"]["uid"]},
            },
        )


def _not_found(resource: Resource, name: str) -> APIStatusError:
    return APIStatusError(
        404,
        "NotFound",
        f'{resource.qualified} "{name}" not found',
        kind=resource.plural,
        group=resource.group,
        name=name,
    )


def _not_found_path(path: str) -> APIStatusError:
    return APIStatusError(
        404, "NotFound", f"the server could not find the requested resource ({path[:200]})"
    )
