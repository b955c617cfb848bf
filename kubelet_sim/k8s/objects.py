"""The Kubernetes objects the node needs: Pods, Secrets and ServiceAccounts, parsed as the API would.

Reads YAML or JSON the way ``kubectl apply -f`` accepts it: several documents, ``kind: List``,
``apiVersion: v1``. Each object is validated as far as the image path cares (names, containers,
images, pull policies, pull secrets, Secret data) and defaulted as the API server does
(``pkg/apis/core/v1/defaults.go``: ``imagePullPolicy`` from the tag, ``serviceAccountName``
``default``, Secret ``type`` ``Opaque``, ``stringData`` merged into ``data``). Secrets of the docker
types must hold well-formed JSON under their key (``ValidateSecret``). Errors are
:class:`~kubelet_sim.errors.ConfigError` naming the document, the object and the field path; they
never quote Secret data.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeAlias

from kubelet_sim.core.pods import ContainerKind
from kubelet_sim.core.policy import PullPolicy, default_pull_policy, parse_pull_policy
from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s.podspec import ContainerPort, EnvFromSource, EnvVar, Lifecycle, Resources

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
    "fresh_uid",
    "stable_uid",
]

DEFAULT_NAMESPACE = "default"
DEFAULT_SERVICE_ACCOUNT = "default"
DOCKER_CONFIG_JSON_KEY = ".dockerconfigjson"
DOCKERCFG_KEY = ".dockercfg"
_UID_NAMESPACE = uuid.UUID("6f1c3f0e-6b0e-4c1e-9a57-6b75626c6574")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_MAX_SECRET_SIZE = 1024 * 1024  # core.MaxSecretSize


class Kind(StrEnum):
    """The kinds kubelet-sim reads."""

    POD = "Pod"
    SECRET = "Secret"  # noqa: S105 - a kind name
    SERVICE_ACCOUNT = "ServiceAccount"


class SecretType(StrEnum):
    """Secret types the kubelet reads pull credentials from (``v1.SecretType*``)."""

    OPAQUE = "Opaque"
    DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"
    DOCKERCFG = "kubernetes.io/dockercfg"


def stable_uid(kind: str, namespace: str, name: str) -> str:
    """A UID derived from the object's coordinates, for manifests that carry none."""
    return str(uuid.uuid5(_UID_NAMESPACE, f"{kind}/{namespace}/{name}"))


def fresh_uid(kind: str, namespace: str, name: str) -> str:
    """A new random UID, as the API server assigns to every created object (arguments unused)."""
    del kind, namespace, name
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Container:
    """One container: its image settings (the API's defaulted pull policy) and how it runs."""

    name: str
    image: str
    image_pull_policy: PullPolicy
    kind: ContainerKind = ContainerKind.APP
    command: tuple[str, ...] | None = None
    """``command``; None when absent (the image's ``Entrypoint`` is used)."""
    args: tuple[str, ...] | None = None
    """``args``; None when absent (the image's ``Cmd`` is used unless ``command`` is set)."""
    working_dir: str = ""
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFromSource, ...] = ()
    resources: Resources = field(default_factory=Resources)
    ports: tuple[ContainerPort, ...] = ()
    lifecycle: Lifecycle = field(default_factory=Lifecycle)


@dataclass(frozen=True, slots=True)
class Pod:
    """A Pod as far as image pulls go."""

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

    kind = Kind.SERVICE_ACCOUNT


Object: TypeAlias = Pod | Secret | ServiceAccount


class _Doc:
    """Field access for one document that raises ConfigError with the object and field path."""

    def __init__(self, where: str, prefix: str) -> None:
        self.where = where
        self.prefix = prefix

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(self.where, self.prefix + path, message)

    def mapping(self, value: Any, path: str, *, required: bool = False) -> dict[str, Any]:
        if value is None:
            if required:
                raise self.fail(path, "Required value")
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected an object, got {_type_name(value)}")
        return value

    def sequence(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {_type_name(value)}")
        return value

    def string(self, value: Any, path: str, *, required: bool = False) -> str:
        if value is None or value == "":
            if required:
                raise self.fail(path, "Required value")
            return ""
        if not isinstance(value, str):
            raise self.fail(path, f"expected a string, got {_type_name(value)}")
        return value


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else "null"
    )


def _check_name(doc: _Doc, value: str, path: str, *, label: bool = False) -> None:
    pattern, limit, what = (
        (_DNS_LABEL, 63, "RFC 1123 label") if label else (_DNS_SUBDOMAIN, 253, "RFC 1123 subdomain")
    )
    if len(value) > limit:
        raise doc.fail(path, f'Invalid value: "{value}": must be no more than {limit} characters')
    if not pattern.fullmatch(value):
        raise doc.fail(
            path,
            f'Invalid value: "{value}": a lowercase {what} must consist of lower case '
            "alphanumeric characters, '-'"
            + ("" if label else " or '.'")
            + ", and must start and end with an alphanumeric character",
        )


def parse_object(raw: Mapping[str, Any], *, where: str, prefix: str = "", namespace: str) -> Object:
    """One Pod, Secret or ServiceAccount from its decoded manifest.

    Args:
        raw: the decoded document (or ``List`` item).
        where: names the document for errors, e.g. ``pods.yaml (document 2)``.
        prefix: prepended to field paths (``items[3].`` inside a List).
        namespace: used when ``metadata.namespace`` is absent.

    Raises:
        ConfigError: naming the object and the field path.
    """
    doc = _Doc(where, prefix)
    kind = doc.string(raw.get("kind"), "kind", required=True)
    api_version = doc.string(raw.get("apiVersion"), "apiVersion", required=True)
    if kind not in set(Kind):
        raise doc.fail("kind", f'no matches for kind "{kind}" in version "{api_version}"')
    if api_version != "v1":
        raise doc.fail("apiVersion", f'no matches for kind "{kind}" in version "{api_version}"')
    meta = doc.mapping(raw.get("metadata"), "metadata", required=True)
    name = doc.string(meta.get("name"), "metadata.name", required=True)
    ns = doc.string(meta.get("namespace"), "metadata.namespace") or namespace
    doc.where = f"{where} {kind} {ns}/{name}"
    _check_name(doc, name, "metadata.name")
    _check_name(doc, ns, "metadata.namespace", label=True)
    uid = doc.string(meta.get("uid"), "metadata.uid") or stable_uid(kind, ns, name)
    annotations = _annotations(doc, meta.get("annotations"))
    if kind == Kind.POD:
        return _pod(doc, raw, ns, name, uid, annotations)
    if kind == Kind.SECRET:
        return _secret(doc, raw, ns, name, uid, annotations)
    secrets = _refs(doc, raw.get("imagePullSecrets"), "imagePullSecrets")
    return ServiceAccount(ns, name, uid, secrets)


def _annotations(doc: _Doc, value: Any) -> Mapping[str, str]:
    items = doc.mapping(value, "metadata.annotations")
    for key, item in items.items():
        if not isinstance(item, str):
            raise doc.fail(f"metadata.annotations[{key}]", "expected a string")
    return MappingProxyType(dict(items))


def _refs(doc: _Doc, value: Any, path: str) -> tuple[str, ...]:
    names = []
    for index, ref in enumerate(doc.sequence(value, path)):
        item = doc.mapping(ref, f"{path}[{index}]")
        names.append(doc.string(item.get("name"), f"{path}[{index}].name"))
    return tuple(names)


def _pod(
    doc: _Doc,
    raw: Mapping[str, Any],
    ns: str,
    name: str,
    uid: str,
    annotations: Mapping[str, str],
) -> Pod:
    spec = doc.mapping(raw.get("spec"), "spec", required=True)
    seen: set[str] = set()
    init = _containers(doc, spec.get("initContainers"), ContainerKind.INIT, seen)
    app = _containers(doc, spec.get("containers"), ContainerKind.APP, seen)
    if not app:
        raise doc.fail("spec.containers", "Required value")
    account = doc.string(spec.get("serviceAccountName"), "spec.serviceAccountName")
    account = account or doc.string(spec.get("serviceAccount"), "spec.serviceAccount")
    if account:
        _check_name(doc, account, "spec.serviceAccountName")
    runtime_class = doc.string(spec.get("runtimeClassName"), "spec.runtimeClassName") or None
    return Pod(
        namespace=ns,
        name=name,
        uid=uid,
        containers=app,
        init_containers=init,
        image_pull_secrets=_refs(doc, spec.get("imagePullSecrets"), "spec.imagePullSecrets"),
        service_account_name=account or DEFAULT_SERVICE_ACCOUNT,
        runtime_class_name=runtime_class,
        annotations=annotations,
    )


def _containers(
    doc: _Doc, value: Any, kind: ContainerKind, seen: set[str]
) -> tuple[Container, ...]:
    out = []
    for index, item in enumerate(doc.sequence(value, f"spec.{kind}")):
        path = f"spec.{kind}[{index}]"
        spec = doc.mapping(item, path)
        name = doc.string(spec.get("name"), f"{path}.name", required=True)
        _check_name(doc, name, f"{path}.name", label=True)
        if name in seen:
            raise doc.fail(f"{path}.name", f'Duplicate value: "{name}"')
        seen.add(name)
        image = doc.string(spec.get("image"), f"{path}.image", required=True)
        if image != image.strip():
            raise doc.fail(
                f"{path}.image", "Invalid value: must not have leading or trailing whitespace"
            )
        policy_text = doc.string(spec.get("imagePullPolicy"), f"{path}.imagePullPolicy")
        try:
            policy = parse_pull_policy(policy_text) if policy_text else default_pull_policy(image)
        except ConfigError as exc:
            raise doc.fail(f"{path}.imagePullPolicy", exc.message) from None
        out.append(Container(name, image, policy, kind))
    return tuple(out)


def _secret(
    doc: _Doc,
    raw: Mapping[str, Any],
    ns: str,
    name: str,
    uid: str,
    annotations: Mapping[str, str],
) -> Secret:
    type_ = doc.string(raw.get("type"), "type") or SecretType.OPAQUE
    data: dict[str, bytes] = {}
    for key, value in doc.mapping(raw.get("data"), "data").items():
        _check_secret_key(doc, key, f"data[{key}]")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise doc.fail(f"data[{key}]", "expected a base64 string")
        try:
            data[key] = base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            raise doc.fail(f"data[{key}]", "illegal base64 data") from None
    for key, value in doc.mapping(raw.get("stringData"), "stringData").items():
        _check_secret_key(doc, key, f"stringData[{key}]")
        if not isinstance(value, str):
            raise doc.fail(f"stringData[{key}]", "expected a string")
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
    return Secret(ns, name, uid, type_, MappingProxyType(data), annotations)


def _kind(value: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", type(None): "null"}.get(
        type(value), "a collection"
    )


def _check_secret_key(doc: _Doc, key: object, path: str) -> None:
    if not isinstance(key, str):
        # YAML keys may be numbers, booleans or null; the API's keys are strings.
        raise doc.fail(path, f"Invalid value: a config key must be a string, got {_kind(key)}")
    if not _SECRET_KEY.fullmatch(key) or len(key) > 253:
        raise doc.fail(
            path,
            f'Invalid value: "{key}": a valid config key must consist of alphanumeric '
            "characters, '-', '_' or '.'",
        )
