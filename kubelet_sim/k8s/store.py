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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import structlog

from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s.admission import Admission, implicit_service_account
from kubelet_sim.k8s.cluster import ConfigMap, RuntimeClass, Service
from kubelet_sim.k8s.manifests import Manifest, parse_manifests
from kubelet_sim.k8s.objects import (
    DEFAULT_NAMESPACE,
    Kind,
    Object,
    Pod,
    Secret,
    ServiceAccount,
    field_warnings,
    fresh_uid,
    parse_object,
)

__all__ = [
    "KUBERNETES_SERVICE",
    "ApplyAction",
    "ApplyResult",
    "ObjectKey",
    "ObjectStore",
    "UidFactory",
    "merge_patch",
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


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, ``null`` deletes, the rest replaces."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class ObjectStore:
    """The API objects of one simulated cluster, as the node sees them."""

    def __init__(self, *, admission: Admission | None = None) -> None:
        self.admission = admission or Admission()
        self._objects: dict[ObjectKey, Object] = {}
        self._applied: dict[ObjectKey, Manifest] = {}
        self.revision = 0

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
        if previous is not None and previous.object == obj:
            return ApplyResult(obj.kind, obj.namespace, obj.name, ApplyAction.UNCHANGED, warnings)
        stored: Object = obj
        if isinstance(obj, Pod):
            old = self._objects.get(key)
            stored = self.admission.admit(obj, self, old if isinstance(old, Pod) else None)
        self._objects[key] = stored
        self._applied[key] = manifest
        self.revision += 1
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
        self._applied.pop(key, None)
        if self._objects.pop(key, None) is None:
            return False
        self.revision += 1
        return True

    # -- reads ----------------------------------------------------------------------------

    def get(self, kind: Kind, namespace: str, name: str) -> Object | None:
        """The applied object (implicit ones are not returned here)."""
        return self._objects.get(_key(kind, namespace, name))

    def get_secret(self, namespace: str, name: str) -> Secret | None:
        """The Secret ``namespace/name`` (the kubelet's secret manager)."""
        obj = self._objects.get((Kind.SECRET, namespace, name))
        return obj if isinstance(obj, Secret) else None

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
