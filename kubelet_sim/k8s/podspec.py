"""The container half of a pod spec: command, environment, resources, ports and lifecycle hooks.

Frozen values for ``core/v1`` ``Container`` fields the kubelet uses to start a container
(``EnvVar``, ``EnvFromSource``, ``Lifecycle``, ``ResourceRequirements``, ``ContainerPort``). They
are parsed by :mod:`kubelet_sim.k8s.containers` and read by :mod:`kubelet_sim.k8s.envvars` and the
runtime's hook runner; quantities stay the strings the manifest holds until something needs a
number, and then :func:`parse_quantity` reads them as ``resource.ParseQuantity`` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
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
    "TCPSocketAction",
    "parse_quantity",
]

MAX_QUANTITY_LENGTH = 128
"""Longest quantity text read (real ones stay under 20 characters): bounds the work a hostile
manifest can ask for, as :data:`MAX_QUANTITY_EXPONENT` does."""
MAX_QUANTITY_EXPONENT = 1000
"""Largest ``|n|`` of an ``eN`` exponent (upstream allows int32; the values are exact here)."""

# apimachinery resource.Quantity: <signedNumber><suffix>, the suffix binary SI (Ki..Ei), decimal
# SI (n, u, m, "", k, M, G, T, P, E) or a decimal exponent (e3, E-2). "1E" is exa, "1E3" 1000.
_QUANTITY = re.compile(r"([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([a-zA-Z]*)([+-]?[0-9]*)", re.ASCII)
_QUANTITY_FORMAT = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)
_BINARY_SI = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL_SI = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(text: str) -> Fraction:
    """The exact value of a Kubernetes quantity (``resource.ParseQuantity``): ``500m``, ``1.5Gi``,
    ``2e3``, ``-1``.

    Surrounding whitespace is not trimmed (the manifest reader trims, as ``UnmarshalJSON`` does).

    Raises:
        ValueError: not a quantity, or longer than :data:`MAX_QUANTITY_LENGTH` / an exponent
            beyond :data:`MAX_QUANTITY_EXPONENT`.
    """
    if len(text) > MAX_QUANTITY_LENGTH:
        raise ValueError(f"quantity longer than {MAX_QUANTITY_LENGTH} characters")
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(_QUANTITY_FORMAT)
    sign, number, letters, tail = match.groups()
    value = Fraction(number)
    if letters in ("e", "E") and tail not in ("", "+", "-"):
        exponent = int(tail)
        if abs(exponent) > MAX_QUANTITY_EXPONENT:
            raise ValueError(f"exponent beyond +/-{MAX_QUANTITY_EXPONENT}")
        value *= Fraction(10) ** exponent
    elif tail:
        raise ValueError(_QUANTITY_FORMAT)
    elif letters in _BINARY_SI:
        value *= 1024 ** _BINARY_SI[letters]
    elif letters in _DECIMAL_SI:
        value *= Fraction(10) ** _DECIMAL_SI[letters]
    else:
        raise ValueError(_QUANTITY_FORMAT)
    return -value if sign == "-" else value


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
    """Empty: the container whose environment this is."""
    divisor: str = ""
    """A quantity string (``1m``, ``1Mi``); empty means 1 (a zero divisor is read as empty, as
    the kubelet's ``ExtractContainerResourceValue`` treats it)."""


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
class TCPSocketAction:
    """``tcpSocket`` in a lifecycle handler: deprecated and kept for compatibility. The API
    accepts it (``validateHandler``) but the kubelet never runs it: the hook fails with
    ``Cannot run handler: invalid handler`` (``pkg/kubelet/lifecycle/handlers.go``)."""

    port: int | str
    host: str = ""


@dataclass(frozen=True, slots=True)
class LifecycleHandler:
    """A ``postStart`` or ``preStop`` handler: exactly one action is set."""

    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    sleep: SleepAction | None = None
    tcp_socket: TCPSocketAction | None = None
    """Set only for a manifest's deprecated ``tcpSocket`` handler, which fails when run."""


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
