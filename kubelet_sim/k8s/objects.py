"""The Kubernetes objects the node needs, parsed as the API would: Pods, Secrets, ServiceAccounts,
Services, ConfigMaps and RuntimeClasses.

Reads YAML or JSON the way ``kubectl apply -f`` accepts it: several documents, ``kind: List``,
``apiVersion: v1`` (``node.k8s.io/v1`` for RuntimeClass). Each object is validated as upstream's
``pkg/apis/core/validation`` does for the fields the node models, and defaulted as the API server
does (``pkg/apis/core/v1/defaults.go``: ``imagePullPolicy`` from the tag, ``serviceAccountName``
``default``, ``restartPolicy`` ``Always``, ``terminationGracePeriodSeconds`` 30,
``enableServiceLinks`` true, Secret ``type`` ``Opaque``, ``stringData`` merged into ``data``).
Secrets of the docker types must hold well-formed JSON under their key (``ValidateSecret``).
Errors are :class:`~kubelet_sim.errors.ConfigError` naming the document, the object and the
field path; they never quote Secret data. Containers are read by
:mod:`kubelet_sim.k8s.containers`, Services, ConfigMaps and RuntimeClasses by
:mod:`kubelet_sim.k8s.cluster`.

Nothing is dropped silently: a pod field kubelet-sim does not model (``spec.volumes``,
``spec.containers[0].livenessProbe``, ...), when set to anything but its default, is listed in
:attr:`Pod.unsupported_fields`, and a key upstream does not know either in ``unknown_fields``
(of every kind); :func:`field_warnings` words them as the API server's warnings. Pod
``ephemeralContainers`` are read from the manifest, although the API refuses them on create
(they are added through the ``ephemeralcontainers`` subresource, ``kubectl debug``): here a
manifest stands in for that subresource.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeAlias

from kubelet_sim.core.pods import ContainerKind
from kubelet_sim.k8s.cluster import (
    ConfigMap,
    RuntimeClass,
    Service,
    decode_base64,
    parse_config_map,
    parse_runtime_class,
    parse_service,
)
from kubelet_sim.k8s.containers import Container, parse_containers
from kubelet_sim.k8s.fields import FieldReader, field_names

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_SERVICE_ACCOUNT",
    "DOCKERCFG_KEY",
    "DOCKER_CONFIG_JSON_KEY",
    "Container",
    "Kind",
    "Object",
    "Pod",
    "Secret",
    "SecretType",
    "ServiceAccount",
    "field_warnings",
    "fresh_uid",
    "parse_object",
    "stable_uid",
]

DEFAULT_NAMESPACE = "default"
DEFAULT_SERVICE_ACCOUNT = "default"
DOCKER_CONFIG_JSON_KEY = ".dockerconfigjson"
DOCKERCFG_KEY = ".dockercfg"
_UID_NAMESPACE = uuid.UUID("6f1c3f0e-6b0e-4c1e-9a57-6b75626c6574")
_MAX_SECRET_SIZE = 1024 * 1024  # core.MaxSecretSize
_RESTART_POLICIES = ("Always", "OnFailure", "Never")


class Kind(StrEnum):
    """The kinds kubelet-sim reads."""

    POD = "Pod"
    SECRET = "Secret"  # noqa: S105 - a kind name
    SERVICE_ACCOUNT = "ServiceAccount"
    SERVICE = "Service"
    CONFIG_MAP = "ConfigMap"
    RUNTIME_CLASS = "RuntimeClass"

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` the kind is served at."""
        return "node.k8s.io/v1" if self is Kind.RUNTIME_CLASS else "v1"

    @property
    def namespaced(self) -> bool:
        return self is not Kind.RUNTIME_CLASS


class SecretType(StrEnum):
    """Secret types the kubelet reads pull credentials from (``v1.SecretType*``)."""

    OPAQUE = "Opaque"
    DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"
    DOCKERCFG = "kubernetes.io/dockercfg"


# Top-level keys upstream knows per kind (any other is an unknown field). Pod ``status`` is
# dropped by the API server on create; the other kinds' fields the node does not read change
# nothing on a node, so only unknown keys are reported for them.
_TOP_LEVEL = {
    Kind.POD: frozenset({"apiVersion", "kind", "metadata", "spec"}),
    Kind.SECRET: frozenset({"apiVersion", "kind", "metadata", "data", "stringData", "type"}),
    Kind.SERVICE_ACCOUNT: frozenset({"apiVersion", "kind", "metadata", "imagePullSecrets"}),
    Kind.SERVICE: frozenset({"apiVersion", "kind", "metadata", "spec"}),
    Kind.CONFIG_MAP: frozenset({"apiVersion", "kind", "metadata", "data", "binaryData"}),
    Kind.RUNTIME_CLASS: frozenset({"apiVersion", "kind", "metadata", "handler", "overhead"}),
}
_TOP_LEVEL_IGNORED = {
    Kind.POD: frozenset({"status"}),
    Kind.SECRET: frozenset({"immutable"}),
    Kind.SERVICE_ACCOUNT: frozenset({"secrets", "automountServiceAccountToken"}),
    Kind.SERVICE: frozenset({"status"}),
    Kind.CONFIG_MAP: frozenset({"immutable"}),
    Kind.RUNTIME_CLASS: frozenset({"scheduling"}),
}
# ObjectMeta: what the node reads, and the API server's bookkeeping (ignored).
_METADATA = frozenset({"name", "namespace", "uid", "labels", "annotations"})
_METADATA_IGNORED = field_names(
    "generateName selfLink resourceVersion generation creationTimestamp deletionTimestamp "
    "deletionGracePeriodSeconds ownerReferences finalizers managedFields"
)
# v1.PodSpec: the fields kubelet-sim models, the ones only a scheduler reads (ignored), and the
# rest, reported when set to anything but their zero value or API default.
_POD_SPEC_MODELLED = field_names(
    "containers initContainers ephemeralContainers imagePullSecrets serviceAccountName "
    "serviceAccount runtimeClassName nodeName hostname subdomain setHostnameAsFQDN "
    "enableServiceLinks restartPolicy terminationGracePeriodSeconds overhead nodeSelector"
)
_POD_SPEC_IGNORED = frozenset({"schedulerName", "preemptionPolicy"})
_POD_SPEC_OTHER = field_names(
    "volumes activeDeadlineSeconds dnsPolicy automountServiceAccountToken "
    "hostNetwork hostPID hostIPC shareProcessNamespace securityContext affinity tolerations "
    "hostAliases priorityClassName priority dnsConfig readinessGates "
    "topologySpreadConstraints os hostUsers schedulingGates resourceClaims resources "
    "hostnameOverride"
)
_POD_SPEC_DEFAULTS: Mapping[str, object] = {"dnsPolicy": "ClusterFirst", "hostUsers": True}


def stable_uid(kind: str, namespace: str, name: str) -> str:
    """A UID derived from the object's coordinates, for manifests that carry none."""
    return str(uuid.uuid5(_UID_NAMESPACE, f"{kind}/{namespace}/{name}"))


def fresh_uid(kind: str, namespace: str, name: str) -> str:
    """A new random UID, as the API server assigns to every created object (arguments unused)."""
    del kind, namespace, name
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Pod:
    """A Pod as far as image pulls and starting its containers go."""

    namespace: str
    name: str
    uid: str
    containers: tuple[Container, ...]
    init_containers: tuple[Container, ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    service_account_name: str = DEFAULT_SERVICE_ACCOUNT
    runtime_class_name: str | None = None
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    ephemeral_containers: tuple[Container, ...] = ()
    node_name: str = ""
    hostname: str = ""
    subdomain: str = ""
    set_hostname_as_fqdn: bool = False
    enable_service_links: bool = True
    restart_policy: str = "Always"
    termination_grace_period_seconds: int = 30
    overhead: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    """``spec.overhead``: set by RuntimeClass admission from the class's ``overhead.podFixed``."""
    unsupported_fields: tuple[str, ...] = ()
    """Field paths the manifest sets that kubelet-sim does not model (reported, never dropped
    silently)."""
    unknown_fields: tuple[str, ...] = ()
    """The subset of :attr:`unsupported_fields` upstream does not know either."""
    node_selector: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    """``spec.nodeSelector`` (RuntimeClass admission merges the class's into it); the daemon
    checks it against the node's labels (``NodeAffinity``)."""

    kind = Kind.POD

    def all_containers(self) -> tuple[Container, ...]:
        return self.init_containers + self.containers + self.ephemeral_containers


@dataclass(frozen=True, slots=True)
class Secret:
    """A Secret; ``data`` holds decoded bytes and never shows in repr."""

    namespace: str
    name: str
    uid: str
    type: str = SecretType.OPAQUE
    data: Mapping[str, bytes] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, hash=False
    )
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    unknown_fields: tuple[str, ...] = ()

    kind = Kind.SECRET

    def __repr__(self) -> str:
        return (
            f"Secret(namespace={self.namespace!r}, name={self.name!r}, uid={self.uid!r}, "
            f"type={self.type!r}, keys={sorted(self.data)!r})"
        )

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """A ServiceAccount's pull secrets."""

    namespace: str
    name: str
    uid: str
    image_pull_secrets: tuple[str, ...] = ()
    unknown_fields: tuple[str, ...] = ()

    kind = Kind.SERVICE_ACCOUNT


Object: TypeAlias = Pod | Secret | ServiceAccount | Service | ConfigMap | RuntimeClass


def field_warnings(obj: Object, *, unknown_only: bool = False) -> tuple[str, ...]:
    """The warnings the API server would answer with for ``obj``'s manifest: ``unknown field
    "spec.foo"`` (as kubectl shows them), and ``field not modelled by kubelet-sim: spec.volumes``
    for a pod field upstream knows but kubelet-sim ignores (not with ``unknown_only``: what
    ``fieldValidation=Strict`` refuses)."""
    unknown = set(obj.unknown_fields)
    paths = (
        obj.unsupported_fields if isinstance(obj, Pod) and not unknown_only else obj.unknown_fields
    )
    return tuple(
        f'unknown field "{path}"'
        if path in unknown
        else f"field not modelled by kubelet-sim: {path}"
        for path in paths
    )


def parse_object(raw: Mapping[str, Any], *, where: str, prefix: str = "", namespace: str) -> Object:
    """One object of a kind kubelet-sim reads, from its decoded manifest.

    Args:
        raw: the decoded document (or ``List`` item).
        where: names the document for errors, e.g. ``pods.yaml (document 2)``.
        prefix: prepended to field paths (``items[3].`` inside a List).
        namespace: used when ``metadata.namespace`` is absent (ignored for cluster-scoped kinds).

    Raises:
        ConfigError: naming the object and the field path.
    """
    doc = FieldReader(where, prefix)
    kind_text = doc.string(raw.get("kind"), "kind", required=True)
    api_version = doc.string(raw.get("apiVersion"), "apiVersion", required=True)
    no_match = f'no matches for kind "{kind_text}" in version "{api_version}"'
    if kind_text not in set(Kind):
        raise doc.fail("kind", no_match)
    kind = Kind(kind_text)
    if api_version != kind.api_version:
        raise doc.fail("apiVersion", no_match)
    doc.fields(raw, "", _TOP_LEVEL[kind], ignored=_TOP_LEVEL_IGNORED[kind])
    meta = doc.mapping(raw.get("metadata"), "metadata", required=True)
    doc.fields(meta, "metadata", _METADATA, ignored=_METADATA_IGNORED)
    name = doc.string(meta.get("name"), "metadata.name", required=True)
    if kind.namespaced:
        ns = doc.string(meta.get("namespace"), "metadata.namespace") or namespace
        doc.where = f"{where} {kind} {ns}/{name}"
        doc.name(ns, "metadata.namespace", label=True)
    else:
        doc.string(meta.get("namespace"), "metadata.namespace")  # cleared, as the API server does
        ns = ""
        doc.where = f"{where} {kind} {name}"
    doc.name(name, "metadata.name")
    uid = doc.string(meta.get("uid"), "metadata.uid") or stable_uid(kind, ns, name)
    annotations = _annotations(doc, meta.get("annotations"))
    labels = doc.labels(meta.get("labels"), "metadata.labels")
    if kind is Kind.POD:
        return _pod(doc, raw, ns, name, uid, annotations, labels)
    if kind is Kind.SECRET:
        return _secret(doc, raw, ns, name, uid, annotations)
    if kind is Kind.SERVICE:
        return parse_service(doc, raw, ns, name, uid)
    if kind is Kind.CONFIG_MAP:
        return parse_config_map(doc, raw, ns, name, uid)
    if kind is Kind.RUNTIME_CLASS:
        return parse_runtime_class(doc, raw, name, uid)
    secrets = _refs(doc, raw.get("imagePullSecrets"), "imagePullSecrets")
    return ServiceAccount(ns, name, uid, secrets, tuple(doc.unknown))


def _annotations(doc: FieldReader, value: Any) -> Mapping[str, str]:
    items = doc.mapping(value, "metadata.annotations")
    for key, item in items.items():
        if not isinstance(item, str):
            raise doc.fail(f"metadata.annotations[{key}]", "expected a string")
    return MappingProxyType(dict(items))


def _refs(doc: FieldReader, value: Any, path: str) -> tuple[str, ...]:
    names = []
    for index, ref in enumerate(doc.sequence(value, path)):
        item = doc.mapping(ref, f"{path}[{index}]")
        doc.fields(item, f"{path}[{index}]", frozenset({"name"}))
        names.append(doc.string(item.get("name"), f"{path}[{index}].name"))
    return tuple(names)


def _pod(
    doc: FieldReader,
    raw: Mapping[str, Any],
    ns: str,
    name: str,
    uid: str,
    annotations: Mapping[str, str],
    labels: Mapping[str, str],
) -> Pod:
    spec = doc.mapping(raw.get("spec"), "spec", required=True)
    doc.fields(
        spec,
        "spec",
        _POD_SPEC_MODELLED,
        _POD_SPEC_OTHER,
        defaults=_POD_SPEC_DEFAULTS,
        ignored=_POD_SPEC_IGNORED,
    )
    restart_policy = doc.string(spec.get("restartPolicy"), "spec.restartPolicy") or "Always"
    if restart_policy not in _RESTART_POLICIES:
        raise doc.fail(
            "spec.restartPolicy",
            f'Unsupported value: "{restart_policy}": supported values: "Always", "OnFailure", '
            '"Never"',
        )
    grace = doc.integer(
        spec.get("terminationGracePeriodSeconds"), "spec.terminationGracePeriodSeconds"
    )
    grace = 30 if grace is None else grace
    if grace < 0:
        raise doc.fail(
            "spec.terminationGracePeriodSeconds",
            f"Invalid value: {grace}: must be greater than or equal to 0",
        )
    seen: set[str] = set()
    init = parse_containers(
        doc, spec.get("initContainers"), ContainerKind.INIT, seen, grace_period=grace
    )
    app = parse_containers(doc, spec.get("containers"), ContainerKind.APP, seen, grace_period=grace)
    if not app:
        raise doc.fail("spec.containers", "Required value")
    ephemeral = parse_containers(
        doc,
        spec.get("ephemeralContainers"),
        ContainerKind.EPHEMERAL,
        seen,
        grace_period=grace,
        targets=frozenset(seen),
    )
    account = doc.string(spec.get("serviceAccountName"), "spec.serviceAccountName")
    account = account or doc.string(spec.get("serviceAccount"), "spec.serviceAccount")
    if account:
        doc.name(account, "spec.serviceAccountName")
    runtime_class = doc.string(spec.get("runtimeClassName"), "spec.runtimeClassName")
    if runtime_class:
        doc.name(runtime_class, "spec.runtimeClassName")  # ValidateRuntimeClassName
    node_name = doc.string(spec.get("nodeName"), "spec.nodeName")
    if node_name:
        doc.name(node_name, "spec.nodeName")
    hostname = doc.string(spec.get("hostname"), "spec.hostname")
    if hostname:
        doc.name(hostname, "spec.hostname", label=True)
    node_selector = doc.labels(spec.get("nodeSelector"), "spec.nodeSelector")
    subdomain = doc.string(spec.get("subdomain"), "spec.subdomain")
    if subdomain:
        doc.name(subdomain, "spec.subdomain", label=True)
    return Pod(
        namespace=ns,
        name=name,
        uid=uid,
        containers=app,
        init_containers=init,
        image_pull_secrets=_refs(doc, spec.get("imagePullSecrets"), "spec.imagePullSecrets"),
        service_account_name=account or DEFAULT_SERVICE_ACCOUNT,
        runtime_class_name=runtime_class or None,
        annotations=annotations,
        labels=labels,
        ephemeral_containers=ephemeral,
        node_name=node_name,
        hostname=hostname,
        subdomain=subdomain,
        set_hostname_as_fqdn=doc.boolean(
            spec.get("setHostnameAsFQDN"), "spec.setHostnameAsFQDN", False
        ),
        enable_service_links=doc.boolean(
            spec.get("enableServiceLinks"), "spec.enableServiceLinks", True
        ),
        restart_policy=restart_policy,
        termination_grace_period_seconds=grace,
        overhead=MappingProxyType(doc.resource_list(spec.get("overhead"), "spec.overhead")),
        unsupported_fields=tuple(doc.unsupported),
        unknown_fields=tuple(doc.unknown),
        node_selector=node_selector,
    )


def _secret(
    doc: FieldReader,
    raw: Mapping[str, Any],
    ns: str,
    name: str,
    uid: str,
    annotations: Mapping[str, str],
) -> Secret:
    type_ = doc.string(raw.get("type"), "type") or SecretType.OPAQUE
    data: dict[str, bytes] = {}
    for key, value in doc.mapping(raw.get("data"), "data").items():
        path = f"data[{key}]"
        doc.config_key(key, path)
        data[key] = decode_base64(doc, value, path)
    for key, value in doc.mapping(raw.get("stringData"), "stringData").items():
        path = f"stringData[{key}]"
        doc.config_key(key, path)
        if not isinstance(value, str):
            raise doc.fail(path, "expected a string")
        data[key] = value.encode()  # the API server merges stringData over data
    if sum(len(v) for v in data.values()) > _MAX_SECRET_SIZE:
        raise doc.fail("data", f"Too long: must have at most {_MAX_SECRET_SIZE} bytes")
    required = {
        SecretType.DOCKER_CONFIG_JSON: DOCKER_CONFIG_JSON_KEY,
        SecretType.DOCKERCFG: DOCKERCFG_KEY,
    }
    docker_key = required.get(SecretType(type_)) if type_ in set(SecretType) else None
    if docker_key is not None:
        key = docker_key
        # ValidateSecret: the docker types need their key, holding well-formed JSON.
        if key not in data:
            raise doc.fail(f"data[{key}]", "Required value")
        try:
            parsed = json.loads(data[key])
        except RecursionError:
            raise doc.fail(
                f"data[{key}]", 'Invalid value: "<secret contents redacted>": nested too deeply'
            ) from None
        except ValueError as exc:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not valid UTF-8"
            raise doc.fail(
                f"data[{key}]", f'Invalid value: "<secret contents redacted>": {reason}'
            ) from None
        if not isinstance(parsed, dict):
            raise doc.fail(
                f"data[{key}]", 'Invalid value: "<secret contents redacted>": not a JSON object'
            )
    return Secret(ns, name, uid, type_, MappingProxyType(data), annotations, tuple(doc.unknown))
