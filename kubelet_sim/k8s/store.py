"""An in-memory object store with ``kubectl apply`` semantics: created, configured, unchanged.

Objects are keyed by ``(kind, namespace, name)``. Applying a document equal to the one applied
before is ``unchanged``; pods pass :class:`~kubelet_sim.k8s.admission.Admission` when created or
changed. ``patch`` applies a JSON merge patch to the last applied document, which is what
``kubectl patch serviceaccount default -p '{"imagePullSecrets": [...]}'`` does to a ServiceAccount
(its ``imagePullSecrets`` list has no merge strategy, so it is replaced). Every namespace has a
``default`` ServiceAccount without pull secrets until one is applied or patched.

An object applied without ``metadata.uid`` gets a new random UID when it is created, and keeps the
UID it has when it is configured or unchanged, as the API server assigns and preserves UIDs: a pod
deleted and created again is a new pod (its image backoff, keyed by UID, starts afresh), while
re-applying the same document stays ``unchanged``. Callers that want coordinates-derived UIDs on
create (static pods: upstream hashes the file) pass ``new_uid=stable_uid``.

The store is the kubelet's secret source for pull credentials (:meth:`ObjectStore.get_secret`),
read at pull time, so a Secret applied after its pod is used by the next pull attempt. It also
holds the Services, ConfigMaps and RuntimeClasses a pod's containers read (their environment,
``envFrom``, the runtime handler). The cluster-scoped RuntimeClass is keyed with namespace ``""``
(any namespace given to a read, ``patch`` or ``delete`` of one is ignored). Like the implicit
``default`` ServiceAccount, the ``default/kubernetes`` Service (the API server's own, cluster IP
``10.96.0.1``, port ``https`` 443) is always there unless one is applied; deleting an applied one
brings the implicit one back, as the API server recreates it. Applying or patching an implicit
object keeps the UID it was shown with (an update of the existing object).

Every :class:`ApplyResult` carries the warnings the API server would send for the document
(``unknown field "spec.foo"``, ``field not modelled by kubelet-sim: spec.volumes``; see
:func:`~kubelet_sim.k8s.objects.field_warnings`), also when the object is unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import structlog

from kubelet_sim.errors import APIStatusError, ConfigError
from kubelet_sim.k8s.admission import Admission, implicit_service_account
from kubelet_sim.k8s.changes import HISTORY, Change, ChangeLog, ChangeType
from kubelet_sim.k8s.cluster import ConfigMap, RuntimeClass, Service
from kubelet_sim.k8s.manifests import Manifest, parse_manifests
from kubelet_sim.k8s.objects import (
    DEFAULT_NAMESPACE,
    DEFAULT_SERVICE_ACCOUNT,
    Kind,
    Object,
    Pod,
    Secret,
    ServiceAccount,
    field_warnings,
    fresh_uid,
    parse_object,
)
from kubelet_sim.k8s.patch import merge_patch
from kubelet_sim.k8s.served import ObjectMeta, served_document

__all__ = [
    "HISTORY",
    "KUBERNETES_SERVICE",
    "ApplyAction",
    "ApplyResult",
    "Change",
    "ChangeType",
    "ObjectKey",
    "ObjectStore",
    "UidFactory",
]

log = structlog.get_logger(__name__)

ObjectKey = tuple[Kind, str, str]
"""(kind, namespace, name)."""

UidFactory = Callable[[str, str, str], str]
"""``(kind, namespace, name) -> uid`` for a created object without ``metadata.uid``."""

# The API server's own Service (its ServiceIP is the first of the default 10.96.0.0/12 range).
_KUBERNETES_SERVICE_DOC: Mapping[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "kubernetes",
        "namespace": DEFAULT_NAMESPACE,
        "labels": {"component": "apiserver", "provider": "kubernetes"},
    },
    "spec": {
        "type": "ClusterIP",
        "clusterIP": "10.96.0.1",
        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
    },
}
_kubernetes = parse_object(_KUBERNETES_SERVICE_DOC, where="implicit", namespace=DEFAULT_NAMESPACE)
assert isinstance(_kubernetes, Service)
KUBERNETES_SERVICE: Service = _kubernetes
"""The ``default/kubernetes`` Service every cluster has (the kubelet's service environment always
includes it)."""


class ApplyAction(StrEnum):
    """What ``kubectl apply`` reports per object."""

    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    PATCHED = "patched"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """One object's outcome, printed as kubectl does (``secret/myregistrykey created``)."""

    kind: Kind
    namespace: str
    name: str
    action: ApplyAction
    warnings: tuple[str, ...] = ()
    """What the API server would warn about the document (``unknown field "spec.foo"``)."""

    def __str__(self) -> str:
        # kubectl names a resource of a named API group with it: runtimeclass.node.k8s.io/gvisor
        group = self.kind.api_version.rpartition("/")[0]
        resource = f"{self.kind.lower()}.{group}" if group else self.kind.lower()
        return f"{resource}/{self.name} {self.action}"


class ObjectStore:
    """The API objects of one simulated cluster, as the node sees them.

    Every write takes the next ``revision``, which becomes the object's ``resourceVersion``, and
    is a :class:`Change` in a bounded history and to every subscriber (the API's watches).

    Args:
        admission: the pod admission plugins.
        clock: wall-clock seconds, for ``creationTimestamp`` and ``deletionTimestamp``.
        node_name: the node every pod here is bound to (``spec.nodeName``).
    """

    def __init__(
        self,
        *,
        admission: Admission | None = None,
        clock: Callable[[], float] = time.time,
        node_name: str = "",
    ) -> None:
        self.admission = admission or Admission()
        self.clock = clock
        self.node_name = node_name
        self._objects: dict[ObjectKey, Object] = {}
        self._applied: dict[ObjectKey, Manifest] = {}
        self._meta: dict[ObjectKey, ObjectMeta] = {}
        self._status: dict[ObjectKey, Mapping[str, Any]] = {}
        self._mirrors: dict[ObjectKey, Manifest] = {}
        self._log = ChangeLog()
        self.revision = 1
        """The last write's resourceVersion (1: the implicit objects every cluster starts with)."""
        self.created = clock()

    # -- writes ---------------------------------------------------------------------------

    def apply(self, manifest: Manifest, *, new_uid: UidFactory = fresh_uid) -> ApplyResult:
        """Create or update one object.

        Args:
            manifest: the parsed object and its document.
            new_uid: gives the UID of a created object whose document has no ``metadata.uid``.

        Raises:
            ConfigError: admission refused a pod.
        """
        key: ObjectKey = (manifest.object.kind, manifest.object.namespace, manifest.object.name)
        previous = self._applied.get(key)
        known = previous.object if previous is not None else _implicit(*key)
        manifest = _with_uid(manifest, known, new_uid)
        obj = manifest.object
        warnings = field_warnings(obj)
        # The object model reads only what the node needs (a ConfigMap has no labels here):
        # a document that changed anything else is an update all the same.
        if previous is not None and previous.object == obj and previous.raw == manifest.raw:
            return ApplyResult(obj.kind, obj.namespace, obj.name, ApplyAction.UNCHANGED, warnings)
        stored: Object = obj
        if isinstance(obj, Pod):
            old = self._objects.get(key)
            stored = self.admission.admit(obj, self, old if isinstance(old, Pod) else None)
            if self.node_name and not stored.node_name:
                # bound to this node, as the scheduler's binding sets spec.nodeName: the pod
                # read back from the API (a patch of it) is then the same pod
                stored = replace(stored, node_name=self.node_name)
        self._objects[key] = stored
        self._applied[key] = manifest
        existed = previous is not None or _implicit(*key) is not None
        self._write(key, ChangeType.MODIFIED if existed else ChangeType.ADDED)
        action = ApplyAction.CREATED if previous is None else ApplyAction.CONFIGURED
        log.info(
            "objects.applied",
            kind=str(obj.kind),
            object=f"{obj.namespace}/{obj.name}" if obj.namespace else obj.name,
            action=str(action),
        )
        return ApplyResult(obj.kind, obj.namespace, obj.name, action, warnings)

    def apply_text(
        self,
        data: str | bytes,
        *,
        source: str = "<input>",
        namespace: str = DEFAULT_NAMESPACE,
        new_uid: UidFactory = fresh_uid,
    ) -> list[ApplyResult]:
        """Parse every document first, then apply them in order (``kubectl apply -f``).

        Raises:
            ConfigError: a document is invalid (nothing applied), or admission refused a pod
                (the objects before it stay applied).
        """
        manifests = parse_manifests(data, source=source, namespace=namespace)
        return self.apply_all(manifests, new_uid=new_uid)

    def apply_all(
        self, manifests: Iterable[Manifest], *, new_uid: UidFactory = fresh_uid
    ) -> list[ApplyResult]:
        return [self.apply(m, new_uid=new_uid) for m in manifests]

    def create(self, manifest: Manifest) -> ApplyResult:
        """``POST``: a new object (``AlreadyExists`` when one has its name).

        Raises:
            APIStatusError: 409 AlreadyExists.
            ConfigError: admission refused a pod.
        """
        obj = manifest.object
        key = _key(obj.kind, obj.namespace, obj.name)
        meta = self._meta.get(key)
        if meta is not None and meta.deletion is not None:
            raise APIStatusError(
                409,
                "AlreadyExists",
                f'object is being deleted: {_resource(obj.kind)} "{obj.name}" already exists',
                kind=_resource(obj.kind),
                name=obj.name,
            )
        if self._version(key) is not None:
            raise APIStatusError(
                409,
                "AlreadyExists",
                f'{_resource(obj.kind)} "{obj.name}" already exists',
                kind=_resource(obj.kind),
                name=obj.name,
            )
        return self.apply(manifest)

    def update(self, manifest: Manifest, resource_version: str = "") -> ApplyResult:
        """``PUT`` (and a patch's write): replace an existing object; a ``resourceVersion``
        other than the stored one is a conflict, as optimistic concurrency wants.

        Raises:
            APIStatusError: 404 NotFound, 409 Conflict.
            ConfigError: admission refused a pod.
        """
        obj = manifest.object
        key = _key(obj.kind, obj.namespace, obj.name)
        current = self._version(key)
        resource = _resource(obj.kind)
        if current is None:
            raise APIStatusError(
                404, "NotFound", f'{resource} "{obj.name}" not found', kind=resource, name=obj.name
            )
        if resource_version and resource_version != str(current):
            raise APIStatusError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource} "{obj.name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                kind=resource,
                name=obj.name,
            )
        return self.apply(manifest)

    def _version(self, key: ObjectKey) -> int | None:
        """The resourceVersion of what the API shows at ``key`` (None: nothing), read without
        rendering the document."""
        if key not in self._objects and key not in self._mirrors and _implicit(*key) is None:
            return None
        meta = self._meta.get(key)
        return meta.resource_version if meta is not None else 1

    def patch(self, kind: Kind, namespace: str, name: str, patch: Mapping[str, Any]) -> ApplyResult:
        """``kubectl patch KIND NAME -p PATCH`` with a JSON merge patch.

        Raises:
            ConfigError: the object does not exist, or the patched object is invalid.
        """
        key = _key(kind, namespace, name)
        namespace = key[1]
        base = self._applied.get(key)
        implicit = _implicit(*key)
        if base is not None:
            raw: Mapping[str, Any] = base.raw
        elif kind is Kind.SERVICE and implicit is not None:
            raw = _KUBERNETES_SERVICE_DOC
        elif implicit is not None:
            raw = {"apiVersion": "v1", "kind": str(kind), "metadata": {"name": name}}
        else:
            where = f" in {namespace}" if namespace else ""
            raise ConfigError(None, None, f'{kind.lower()}s "{name}" not found{where}')
        patched = merge_patch(raw, patch)
        meta = patched.get("metadata") if isinstance(patched, Mapping) else None
        if (
            not isinstance(meta, Mapping)
            or patched.get("kind") != str(kind)
            or meta.get("name") != name
            # a cluster-scoped object's namespace is dropped however it is written
            or (kind.namespaced and meta.get("namespace", namespace) != namespace)
        ):
            raise ConfigError(None, "metadata", "a patch may not change kind, name or namespace")
        shown = f"{namespace}/{name}" if namespace else name
        obj = parse_object(patched, where=f"patch {kind} {shown}", namespace=namespace)
        result = self.apply(Manifest(obj, patched))
        if result.action is ApplyAction.UNCHANGED:
            return result
        return ApplyResult(kind, namespace, name, ApplyAction.PATCHED, result.warnings)

    def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        """Remove an object; False when there was none (an implicit object is never removed)."""
        key = _key(kind, namespace, name)
        last = self.document(*key)
        self._applied.pop(key, None)
        if self._objects.pop(key, None) is None:
            return False
        self._meta.pop(key, None)
        self._status.pop(key, None)
        self.revision += 1
        assert last is not None
        metadata = {**last["metadata"], "resourceVersion": str(self.revision)}
        self._publish(
            Change(ChangeType.DELETED, *key, self.revision, {**last, "metadata": metadata})
        )
        if _implicit(*key) is not None:  # the API server makes it again at once
            self._write(key, ChangeType.ADDED)
        return True

    def mark_deleting(self, kind: Kind, namespace: str, name: str, grace: int) -> dict[str, Any]:
        """Begin a graceful deletion: ``deletionTimestamp`` set; the object stays until
        :meth:`delete` (the kubelet has stopped the pod's containers).

        Raises:
            APIStatusError: 404 NotFound.
        """
        key = _key(kind, namespace, name)
        meta = self._meta.get(key)
        if key not in self._objects or meta is None:
            resource = _resource(kind)
            raise APIStatusError(
                404, "NotFound", f'{resource} "{name}" not found', kind=resource, name=name
            )
        if meta.deletion is None:
            self._meta[key] = replace(meta, deletion=self.clock(), deletion_grace=grace)
            self._write(key, ChangeType.MODIFIED)
        document = self.document(*key)
        assert document is not None
        return document

    def set_pod_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        """The kubelet's status update of a pod; True when it changed anything (a new
        resourceVersion and a MODIFIED change)."""
        key: ObjectKey = (Kind.POD, namespace, name)
        known = key in self._objects or key in self._mirrors
        if not known or self._status.get(key) == status:
            return False
        self._status[key] = status
        self._write(key, ChangeType.MODIFIED)
        return True

    def set_mirror_pods(self, pods: Mapping[tuple[str, str], Manifest]) -> None:
        """The node's static pods as the API shows them (the kubelet's mirror pods): created,
        changed or deleted to match ``pods``. They are read-only here: writes go to their files,
        and :meth:`pods` (what the engine runs from the API) never includes them."""
        wanted = {(Kind.POD, ns, name): m for (ns, name), m in pods.items()}
        for key in [k for k in self._mirrors if k not in wanted]:
            last = self.document(*key)
            del self._mirrors[key]
            self._status.pop(key, None)
            self._meta.pop(key, None)
            if last is not None and key not in self._objects:
                self.revision += 1
                metadata = {**last["metadata"], "resourceVersion": str(self.revision)}
                change = Change(
                    ChangeType.DELETED, *key, self.revision, {**last, "metadata": metadata}
                )
                self._publish(change)
        for key, manifest in wanted.items():
            old = self._mirrors.get(key)
            if old is not None and old.object == manifest.object:
                continue
            if old is not None and old.object.uid != manifest.object.uid:
                self._status.pop(key, None)  # a new pod (the file changed): a fresh status
            self._mirrors[key] = manifest
            if key not in self._objects:
                self._write(key, ChangeType.ADDED if old is None else ChangeType.MODIFIED)

    def _write(self, key: ObjectKey, change: ChangeType) -> None:
        self.revision += 1
        meta = self._meta.get(key)
        created = meta.created if meta is not None else self.created
        if meta is None and _implicit(*key) is None:
            created = self.clock()
        self._meta[key] = (
            replace(meta, resource_version=self.revision)
            if meta is not None
            else ObjectMeta(self.revision, created)
        )
        document = self.document(*key)
        assert document is not None
        self._publish(Change(change, *key, self.revision, document))

    def _publish(self, change: Change) -> None:
        self._log.publish(change)

    # -- watch ----------------------------------------------------------------------------

    def subscribe(self, subscriber: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``subscriber`` with every change from now on; returns the unsubscribe."""
        return self._log.subscribe(subscriber)

    @property
    def watchers(self) -> int:
        """Subscribers of the change log now (the API's open watches)."""
        return self._log.subscribers

    def changes_since(self, resource_version: int) -> list[Change] | None:
        """The changes after ``resource_version``; None when the history no longer reaches back
        that far (a watch answers 410 Gone and the client lists again)."""
        return self._log.since(resource_version, self.revision)

    # -- reads ----------------------------------------------------------------------------

    def get(self, kind: Kind, namespace: str, name: str) -> Object | None:
        """The applied object (implicit ones are not returned here)."""
        return self._objects.get(_key(kind, namespace, name))

    def document(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as the API serves it (implicit ones included), or None."""
        key = _key(kind, namespace, name)
        obj = self._objects.get(key)
        manifest = self._applied.get(key)
        mirror = self._mirrors.get(key)
        if obj is not None and manifest is not None:
            raw: Mapping[str, Any] = manifest.raw
        elif mirror is not None:
            obj, raw = mirror.object, mirror.raw
        else:
            obj = _implicit(*key)
            if obj is None:
                return None
            raw = _implicit_document(obj)
        meta = self._meta.get(key) or ObjectMeta(1, self.created)
        status = self._status.get(key)
        return served_document(obj, raw, meta, status=status, node_name=self.node_name)

    def documents(self, kind: Kind, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every object of ``kind`` (of ``namespace``, or all), as served, by namespace then
        name as the API server lists them; the
        ``default`` ServiceAccount of each namespace a listed object is in, and the
        ``default/kubernetes`` Service, included."""
        keys = [
            k
            for k in (*self._objects, *(m for m in self._mirrors if m not in self._objects))
            if k[0] is kind and (namespace is None or not kind.namespaced or k[1] == namespace)
        ]
        implicit: list[ObjectKey] = []
        if kind is Kind.SERVICE and namespace in (None, DEFAULT_NAMESPACE):
            implicit = [(Kind.SERVICE, DEFAULT_NAMESPACE, KUBERNETES_SERVICE.name)]
        elif kind is Kind.SERVICE_ACCOUNT:
            spaces = {k[1] for k in self._objects if namespace is None or k[1] == namespace}
            spaces.add(namespace or DEFAULT_NAMESPACE)
            implicit = [(kind, ns, DEFAULT_SERVICE_ACCOUNT) for ns in sorted(spaces) if ns]
        keys = [k for k in implicit if k not in self._objects] + keys
        keys.sort(key=lambda k: (k[1], k[2]))  # etcd's key order: namespace, then name
        return [d for d in (self.document(*k) for k in keys) if d is not None]

    def deleting(self, kind: Kind, namespace: str, name: str) -> bool:
        """A graceful deletion of the object has begun."""
        meta = self._meta.get(_key(kind, namespace, name))
        return meta is not None and meta.deletion is not None

    def get_secret(self, namespace: str, name: str) -> Secret | None:
        """The Secret ``namespace/name`` (the kubelet's secret manager)."""
        obj = self._objects.get((Kind.SECRET, namespace, name))
        return obj if isinstance(obj, Secret) else None

    def secret_namespaces(self, name: str) -> list[str]:
        """The namespaces that have a Secret called ``name`` (``explain``: a pod naming a
        secret of another namespace)."""
        return sorted(ns for kind, ns, n in self._objects if kind is Kind.SECRET and n == name)

    def get_service_account(self, namespace: str, name: str) -> ServiceAccount | None:
        """The ServiceAccount ``namespace/name``; ``default`` always exists."""
        obj = self._objects.get((Kind.SERVICE_ACCOUNT, namespace, name))
        if isinstance(obj, ServiceAccount):
            return obj
        return implicit_service_account(namespace, name)

    def get_pod(self, namespace: str, name: str) -> Pod | None:
        obj = self._objects.get((Kind.POD, namespace, name))
        return obj if isinstance(obj, Pod) else None

    def pods(self, namespace: str | None = None) -> list[Pod]:
        """Stored (admitted) pods, optionally of one namespace, in apply order."""
        return [
            o
            for o in self._objects.values()
            if isinstance(o, Pod) and (namespace is None or o.namespace == namespace)
        ]

    def get_service(self, namespace: str, name: str) -> Service | None:
        """The Service ``namespace/name``; ``default/kubernetes`` always exists."""
        obj = self._objects.get((Kind.SERVICE, namespace, name))
        if isinstance(obj, Service):
            return obj
        implicit = _implicit(Kind.SERVICE, namespace, name)
        return implicit if isinstance(implicit, Service) else None

    def services(self, namespace: str | None = None) -> list[Service]:
        """Every Service (of ``namespace``, or of all namespaces when None), the implicit
        ``default/kubernetes`` first unless one was applied, then in apply order."""
        applied = [
            o
            for o in self._objects.values()
            if isinstance(o, Service) and (namespace is None or o.namespace == namespace)
        ]
        implicit = KUBERNETES_SERVICE
        key: ObjectKey = (Kind.SERVICE, implicit.namespace, implicit.name)
        if namespace in (None, implicit.namespace) and key not in self._objects:
            return [implicit, *applied]
        return applied

    def get_config_map(self, namespace: str, name: str) -> ConfigMap | None:
        """The ConfigMap ``namespace/name`` (``envFrom`` and ``configMapKeyRef`` read it)."""
        obj = self._objects.get((Kind.CONFIG_MAP, namespace, name))
        return obj if isinstance(obj, ConfigMap) else None

    def config_maps(self, namespace: str | None = None) -> list[ConfigMap]:
        """Every ConfigMap (of ``namespace``, or of all when None), in apply order."""
        return [
            o
            for o in self._objects.values()
            if isinstance(o, ConfigMap) and (namespace is None or o.namespace == namespace)
        ]

    def get_runtime_class(self, name: str) -> RuntimeClass | None:
        """The RuntimeClass ``name`` (cluster-scoped)."""
        obj = self._objects.get((Kind.RUNTIME_CLASS, "", name))
        return obj if isinstance(obj, RuntimeClass) else None

    def runtime_classes(self) -> list[RuntimeClass]:
        """Every RuntimeClass, in apply order."""
        return [o for o in self._objects.values() if isinstance(o, RuntimeClass)]

    def __len__(self) -> int:
        return len(self._objects)


def _resource(kind: Kind) -> str:
    """The resource's plural, as API messages name it (``pods``, ``runtimeclasses.node.k8s.io``)."""
    plural = "services" if kind is Kind.SERVICE else f"{kind.lower()}s"
    group = kind.api_version.rpartition("/")[0]
    return f"{plural}.{group}" if group else plural


def _implicit_document(obj: Object) -> Mapping[str, Any]:
    if obj.kind is Kind.SERVICE:
        return _KUBERNETES_SERVICE_DOC
    return {"apiVersion": "v1", "kind": str(obj.kind), "metadata": {"name": obj.name}}


def _key(kind: Kind, namespace: str, name: str) -> ObjectKey:
    """The store key; a cluster-scoped object's namespace is ``""`` whatever was given."""
    return (kind, namespace if kind.namespaced else "", name)


def _implicit(kind: Kind, namespace: str, name: str) -> Object | None:
    """The object a cluster has before anything is applied: each namespace's ``default``
    ServiceAccount and the ``default/kubernetes`` Service."""
    if kind is Kind.SERVICE_ACCOUNT:
        return implicit_service_account(namespace, name)
    if kind is Kind.SERVICE and (namespace, name) == (
        KUBERNETES_SERVICE.namespace,
        KUBERNETES_SERVICE.name,
    ):
        return KUBERNETES_SERVICE
    return None


def _with_uid(manifest: Manifest, known: Object | None, new_uid: UidFactory) -> Manifest:
    """The manifest with the UID the API server would give it.

    An explicit ``metadata.uid`` is kept; otherwise an update keeps the UID of the object it
    updates (``known``: the stored or implicit one) and a create gets ``new_uid(...)``.
    """
    meta = manifest.raw.get("metadata")
    if isinstance(meta, Mapping) and meta.get("uid"):
        return manifest
    obj = manifest.object
    uid = known.uid if known is not None else new_uid(obj.kind, obj.namespace, obj.name)
    if uid == obj.uid:
        return manifest
    return Manifest(replace(obj, uid=uid), manifest.raw)
