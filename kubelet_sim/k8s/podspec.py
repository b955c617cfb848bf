"""The container half of a pod spec: command, environment, resources, ports and lifecycle hooks.

Frozen values for ``core/v1`` ``Container`` fields the kubelet uses to start a container
(``EnvVar``, ``EnvFromSource``, ``Lifecycle``, ``ResourceRequirements``, ``ContainerPort``). They
are parsed by :mod:`kubelet_sim.k8s.objects` and read by :mod:`kubelet_sim.k8s.envvars` and the
runtime's hook runner; quantities stay the strings the manifest holds until something needs a
number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "ConfigMapEnvSource",
    "ContainerPort",
    "EnvFromSource",
    "EnvVar",
    "EnvVarSource",
    "ExecAction",
    "HTTPGetAction",
    "HTTPHeader",
    "KeySelector",
    "Lifecycle",
    "LifecycleHandler",
    "ObjectFieldSelector",
    "ResourceFieldSelector",
    "Resources",
    "SecretEnvSource",
    "SleepAction",
]


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ObjectFieldSelector:
    """``valueFrom.fieldRef``: a field of the pod, e.g. ``metadata.labels['app']``."""

    field_path: str
    api_version: str = "v1"


@dataclass(frozen=True, slots=True)
class ResourceFieldSelector:
    """``valueFrom.resourceFieldRef``: a container's limit or request, scaled by ``divisor``."""

    resource: str
    container_name: str = ""
    divisor: str = ""
    """A quantity string (``1m``, ``1Mi``); empty means 1."""


@dataclass(frozen=True, slots=True)
class KeySelector:
    """``configMapKeyRef`` / ``secretKeyRef``: one key of a named ConfigMap or Secret."""

    name: str
    key: str
    optional: bool = False


@dataclass(frozen=True, slots=True)
class EnvVarSource:
    """``valueFrom``: exactly one of the four is set."""

    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None
    config_map_key_ref: KeySelector | None = None
    secret_key_ref: KeySelector | None = None


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One ``env`` entry: a literal ``value`` (may hold ``$(VAR)`` references) or ``value_from``."""

    name: str
    value: str = ""
    value_from: EnvVarSource | None = None


@dataclass(frozen=True, slots=True)
class ConfigMapEnvSource:
    name: str
    optional: bool = False


@dataclass(frozen=True, slots=True)
class SecretEnvSource:
    name: str
    optional: bool = False


@dataclass(frozen=True, slots=True)
class EnvFromSource:
    """One ``envFrom`` entry: every key of a ConfigMap or Secret, each name prefixed."""

    prefix: str = ""
    config_map_ref: ConfigMapEnvSource | None = None
    secret_ref: SecretEnvSource | None = None


@dataclass(frozen=True, slots=True)
class ExecAction:
    command: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HTTPHeader:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class HTTPGetAction:
    """``httpGet``: ``port`` is a number or the name of one of the container's ports."""

    port: int | str
    path: str = ""
    host: str = ""
    """Empty: the pod's IP."""
    scheme: str = "HTTP"
    headers: tuple[HTTPHeader, ...] = ()


@dataclass(frozen=True, slots=True)
class SleepAction:
    seconds: int


@dataclass(frozen=True, slots=True)
class LifecycleHandler:
    """A ``postStart`` or ``preStop`` handler: exactly one action is set."""

    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    sleep: SleepAction | None = None


@dataclass(frozen=True, slots=True)
class Lifecycle:
    post_start: LifecycleHandler | None = None
    pre_stop: LifecycleHandler | None = None


@dataclass(frozen=True, slots=True)
class Resources:
    """``resources.limits`` and ``resources.requests`` as quantity strings by resource name."""

    limits: Mapping[str, str] = field(default_factory=_empty, hash=False)
    requests: Mapping[str, str] = field(default_factory=_empty, hash=False)


@dataclass(frozen=True, slots=True)
class ContainerPort:
    container_port: int
    name: str = ""
    protocol: str = "TCP"
