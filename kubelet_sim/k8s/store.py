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
read at pull time, so a Secret applied after its pod is used by the next pull attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import structlog

from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s.admission import Admission, implicit_service_account
from kubelet_sim.k8s.manifests import Manifest, parse_manifests
from kubelet_sim.k8s.objects import (
    DEFAULT_NAMESPACE,
    Kind,
    Object,
    Pod,
    Secret,
    ServiceAccount,
    fresh_uid,
    parse_object,
)

__all__ = ["ApplyAction", "ApplyResult", "ObjectKey", "ObjectStore", "UidFactory", "merge_patch"]

log = structlog.get_logger(__name__)

ObjectKey = tuple[Kind, str, str]
"""(kind, namespace, name)."""

UidFactory = Callable[[str, str, str], str]
"""``(kind, namespace, name) -> uid`` for a created object without ``metadata.uid``."""


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

    def __str__(self) -> str:
        return f"{self.kind.lower()}/{self.name} {self.action}"


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
    """Pods, Secrets and ServiceAccounts of one simulated cluster, as the node sees them."""

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
        manifest = _with_uid(manifest, previous, new_uid)
        obj = manifest.object
        if previous is not None and previous.object == obj:
            return ApplyResult(obj.kind, obj.namespace, obj.name, ApplyAction.UNCHANGED)
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
            object=f"{obj.namespace}/{obj.name}",
            action=str(action),
        )
        return ApplyResult(obj.kind, obj.namespace, obj.name, action)

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
        key: ObjectKey = (kind, namespace, name)
        base = self._applied.get(key)
        implicit = (
            implicit_service_account(namespace, name) if kind is Kind.SERVICE_ACCOUNT else None
        )
        if base is not None:
            raw: Mapping[str, Any] = base.raw
        elif implicit is not None:
            raw = {"apiVersion": "v1", "kind": str(kind), "metadata": {"name": name}}
        else:
            raise ConfigError(None, None, f'{kind.lower()}s "{name}" not found in {namespace}')
        patched = merge_patch(raw, patch)
        meta = patched.get("metadata") if isinstance(patched, Mapping) else None
        if (
            not isinstance(meta, Mapping)
            or patched.get("kind") != str(kind)
            or meta.get("name") != name
            or meta.get("namespace", namespace) != namespace
        ):
            raise ConfigError(None, "metadata", "a patch may not change kind, name or namespace")
        obj = parse_object(patched, where=f"patch {kind} {namespace}/{name}", namespace=namespace)
        # Patching the implicit account creates it with the UID it was already shown with.
        uid = implicit.uid if base is None and implicit is not None else None
        result = self.apply(
            Manifest(obj, patched), new_uid=fresh_uid if uid is None else _constant(uid)
        )
        if result.action is ApplyAction.UNCHANGED:
            return result
        return ApplyResult(kind, namespace, name, ApplyAction.PATCHED)

    def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        """Remove an object; False when there was none."""
        key: ObjectKey = (kind, namespace, name)
        self._applied.pop(key, None)
        if self._objects.pop(key, None) is None:
            return False
        self.revision += 1
        return True

    # -- reads ----------------------------------------------------------------------------

    def get(self, kind: Kind, namespace: str, name: str) -> Object | None:
        return self._objects.get((kind, namespace, name))

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

    def __len__(self) -> int:
        return len(self._objects)


def _with_uid(manifest: Manifest, previous: Manifest | None, new_uid: UidFactory) -> Manifest:
    """The manifest with the UID the API server would give it.

    An explicit ``metadata.uid`` is kept; otherwise an update keeps the stored object's UID and a
    create gets ``new_uid(...)``.
    """
    meta = manifest.raw.get("metadata")
    if isinstance(meta, Mapping) and meta.get("uid"):
        return manifest
    obj = manifest.object
    uid = (
        previous.object.uid if previous is not None else new_uid(obj.kind, obj.namespace, obj.name)
    )
    if uid == obj.uid:
        return manifest
    return Manifest(replace(obj, uid=uid), manifest.raw)


def _constant(uid: str) -> UidFactory:
    def factory(kind: str, namespace: str, name: str) -> str:
        return uid

    return factory
