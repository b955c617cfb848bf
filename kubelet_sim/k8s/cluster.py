"""The objects a pod's containers read besides Secrets: Services, ConfigMaps and RuntimeClasses.

Frozen values for ``v1 Service`` (its cluster IP and ports, for the docker-links environment of
``pkg/kubelet/envvars``), ``v1 ConfigMap`` (``envFrom`` and ``configMapKeyRef``) and the
cluster-scoped ``node.k8s.io/v1 RuntimeClass`` (its ``handler``, ``overhead.podFixed`` and
``scheduling.nodeSelector``), and their parsing, called by
:func:`kubelet_sim.k8s.objects.parse_object` after the metadata is read. Validation follows
``ValidateService``, ``ValidateConfigMap`` (``pkg/apis/core/validation``) and
``ValidateRuntimeClass`` (``pkg/apis/node/validation``):

- a Service name is an RFC 1035 label; ports are 1-65535 with unique (protocol, port) pairs,
  named (RFC 1123 labels) when there are several, TCP, UDP or SCTP; ``clusterIP`` is empty, an
  IP or ``None`` (headless). There is no IP allocator: a Service applied without ``clusterIP``
  keeps ``""`` and so gets no environment variables, as a Service without a cluster IP;
- ConfigMap keys are config keys, ``binaryData`` is base64 and may not repeat a ``data`` key,
  and both together hold at most 1 MiB;
- a RuntimeClass ``handler`` is required and an RFC 1123 label; ``overhead.podFixed`` holds
  resource quantities and ``scheduling.nodeSelector`` labels. A RuntimeClass has no namespace:
  a ``metadata.namespace`` in its manifest is dropped, as the API server clears it for a
  cluster-scoped object (``rest.EnsureObjectNamespaceMatchesRequestNamespace``).

Only unknown keys are reported for these kinds (``unknown_fields``): the fields the node does not
model (``selector``, ``sessionAffinity``, ``immutable``, ``tolerations``, ...) change nothing on a
node.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from kubelet_sim.k8s.fields import FieldReader, field_names

if TYPE_CHECKING:
    from kubelet_sim.k8s.objects import Kind

__all__ = [
    "MAX_CONFIG_MAP_SIZE",
    "ConfigMap",
    "RuntimeClass",
    "Service",
    "ServicePort",
    "decode_base64",
    "parse_config_map",
    "parse_runtime_class",
    "parse_service",
]

MAX_CONFIG_MAP_SIZE = 1024 * 1024  # core.MaxSecretSize, the limit of data + binaryData
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
_SERVICE_SPEC = field_names(
    "ports selector clusterIP clusterIPs type externalIPs sessionAffinity loadBalancerIP "
    "loadBalancerSourceRanges externalName externalTrafficPolicy healthCheckNodePort "
    "publishNotReadyAddresses sessionAffinityConfig ipFamilies ipFamilyPolicy "
    "allocateLoadBalancerNodePorts loadBalancerClass internalTrafficPolicy "
    "trafficDistribution"
)
_SERVICE_PORT = frozenset({"name", "protocol", "appProtocol", "port", "targetPort", "nodePort"})


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


def _kind(name: str) -> Kind:
    # objects.py imports this module (for its Object alias and parse_object), so Kind is
    # imported when first asked for rather than at the top.
    from kubelet_sim.k8s.objects import Kind

    return Kind(name)


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class Service:
    """A Service; ``cluster_ip`` is ``""`` or ``"None"`` (headless) when it has no cluster IP."""

    namespace: str
    name: str
    uid: str
    cluster_ip: str = ""
    ports: tuple[ServicePort, ...] = ()
    type: str = "ClusterIP"
    unknown_fields: tuple[str, ...] = ()
    """Keys of the manifest upstream does not know (``unknown field "spec.foo"``)."""

    @property
    def kind(self) -> Kind:
        return _kind("Service")

    @property
    def has_cluster_ip(self) -> bool:
        """``v1helper.IsServiceIPSet``: set and not ``None``."""
        return self.cluster_ip not in ("", "None")


@dataclass(frozen=True, slots=True)
class ConfigMap:
    """A ConfigMap: ``data`` as strings, ``binary_data`` as decoded bytes."""

    namespace: str
    name: str
    uid: str
    data: Mapping[str, str] = field(default_factory=_empty, hash=False)
    binary_data: Mapping[str, bytes] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    unknown_fields: tuple[str, ...] = ()

    @property
    def kind(self) -> Kind:
        return _kind("ConfigMap")


@dataclass(frozen=True, slots=True)
class RuntimeClass:
    """A cluster-scoped RuntimeClass (``namespace`` is always ``""``)."""

    name: str
    uid: str
    handler: str
    overhead_pod_fixed: Mapping[str, str] = field(default_factory=_empty, hash=False)
    node_selector: Mapping[str, str] = field(default_factory=_empty, hash=False)
    namespace: str = ""
    unknown_fields: tuple[str, ...] = ()

    @property
    def kind(self) -> Kind:
        return _kind("RuntimeClass")


def decode_base64(doc: FieldReader, value: Any, path: str) -> bytes:
    """A ``[]byte`` field: standard base64 (line breaks and spaces ignored)."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise doc.fail(path, "expected a base64 string")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise doc.fail(path, "illegal base64 data") from None


# -- Service ------------------------------------------------------------------------------


def parse_service(
    doc: FieldReader, raw: Mapping[str, Any], namespace: str, name: str, uid: str
) -> Service:
    """A ``v1 Service`` (``ValidateService``); the metadata is already read."""
    doc.name(name, "metadata.name", dns1035=True)
    spec = doc.mapping(raw.get("spec"), "spec")
    doc.fields(spec, "spec", _SERVICE_SPEC)
    type_ = doc.string(spec.get("type"), "spec.type") or "ClusterIP"
    if type_ not in _SERVICE_TYPES:
        raise doc.fail(
            "spec.type",
            f'Unsupported value: "{type_}": supported values: '
            + ", ".join(f'"{t}"' for t in sorted(_SERVICE_TYPES)),
        )
    cluster_ip = _cluster_ip(doc, spec, type_)
    ports = _service_ports(doc, spec.get("ports"), type_)
    if not ports and cluster_ip != "None" and type_ != "ExternalName":
        raise doc.fail("spec.ports", "Required value")
    doc.labels(spec.get("selector"), "spec.selector")
    for index, ip in enumerate(doc.strings(spec.get("externalIPs"), "spec.externalIPs") or ()):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise doc.fail(
                f"spec.externalIPs[{index}]",
                f'Invalid value: "{ip[:100]}": must be a valid IP address',
            ) from None
    return Service(namespace, name, uid, cluster_ip, ports, type_, tuple(doc.unknown))


def _cluster_ip(doc: FieldReader, spec: Mapping[str, Any], type_: str) -> str:
    """``clusterIP`` and ``clusterIPs`` (the strategy keeps them in step; the first is the one)."""
    cluster_ip = doc.string(spec.get("clusterIP"), "spec.clusterIP")
    cluster_ips = doc.strings(spec.get("clusterIPs"), "spec.clusterIPs") or ()
    if cluster_ip and cluster_ips and cluster_ips[0] != cluster_ip:
        raise doc.fail(
            "spec.clusterIPs[0]",
            f'Invalid value: "{cluster_ips[0]}": must match `clusterIP` when both are specified',
        )
    every = cluster_ips or ((cluster_ip,) if cluster_ip else ())
    if type_ == "ExternalName":
        if every:
            raise doc.fail("spec.clusterIPs", "Forbidden: may not be set for ExternalName services")
        external = doc.string(spec.get("externalName"), "spec.externalName", required=True)
        doc.name(external.removesuffix("."), "spec.externalName")
        return ""
    if len(every) > 2:
        raise doc.fail("spec.clusterIPs", "Invalid value: may only hold up to 2 values")
    families = set()
    for index, ip in enumerate(every):
        path = "spec.clusterIP" if not cluster_ips else f"spec.clusterIPs[{index}]"
        if ip == "None":
            if len(every) > 1:
                raise doc.fail(path, 'Invalid value: "None": must be the only value when set')
            if type_ != "ClusterIP":
                raise doc.fail(
                    path, f"Invalid value: \"None\": may not be set to 'None' for {type_} services"
                )
            continue
        try:
            families.add(ipaddress.ip_address(ip).version)
        except ValueError:
            raise doc.fail(path, f'Invalid value: "{ip}": must be a valid IP address') from None
    if len(every) == 2 and len(families) != 2:
        raise doc.fail(
            "spec.clusterIPs", "Invalid value: may specify no more than one IP for each IP family"
        )
    return every[0] if every else ""


def _service_ports(doc: FieldReader, value: Any, type_: str) -> tuple[ServicePort, ...]:
    items = doc.sequence(value, "spec.ports")
    out = []
    names: set[str] = set()
    pairs: set[tuple[str, int]] = set()
    for index, item in enumerate(items):
        path = f"spec.ports[{index}]"
        raw = doc.mapping(item, path)
        doc.fields(raw, path, _SERVICE_PORT)
        name = doc.string(raw.get("name"), f"{path}.name", required=len(items) > 1)
        if name:
            doc.name(name, f"{path}.name", label=True)
            if name in names:
                raise doc.fail(f"{path}.name", f'Duplicate value: "{name}"')
            names.add(name)
        port = doc.port_number(raw.get("port"), f"{path}.port")
        protocol = doc.string(raw.get("protocol"), f"{path}.protocol") or "TCP"
        if protocol not in ("TCP", "UDP", "SCTP"):
            raise doc.fail(
                f"{path}.protocol",
                f'Unsupported value: "{protocol}": supported values: "SCTP", "TCP", "UDP"',
            )
        if raw.get("targetPort") not in (None, 0):  # 0 or absent: defaulted to ``port``
            doc.port_or_name(raw["targetPort"], f"{path}.targetPort")
        if raw.get("appProtocol") is not None:
            doc.qualified_name(doc.string(raw["appProtocol"], f"{path}.appProtocol"), path)
        node_port = doc.port_number(raw.get("nodePort") or None, f"{path}.nodePort", required=False)
        if node_port and type_ == "ClusterIP":
            raise doc.fail(
                f"{path}.nodePort", "Forbidden: may not be used when `type` is 'ClusterIP'"
            )
        if (protocol, port) in pairs:
            raise doc.fail(path, f'Duplicate value: {{"port": {port}, "protocol": "{protocol}"}}')
        pairs.add((protocol, port))
        out.append(ServicePort(port, name, protocol))
    return tuple(out)


# -- ConfigMap ----------------------------------------------------------------------------


def parse_config_map(
    doc: FieldReader, raw: Mapping[str, Any], namespace: str, name: str, uid: str
) -> ConfigMap:
    """A ``v1 ConfigMap`` (``ValidateConfigMap``); the metadata is already read."""
    data: dict[str, str] = {}
    for key, value in doc.mapping(raw.get("data"), "data").items():
        path = f"data[{key}]"
        doc.config_key(key, path)
        data[key] = doc.string(value, path)
    binary: dict[str, bytes] = {}
    for key, value in doc.mapping(raw.get("binaryData"), "binaryData").items():
        path = f"binaryData[{key}]"
        doc.config_key(key, path)
        if key in data:
            raise doc.fail(path, f'Invalid value: "{key}": duplicate of key present in data')
        binary[key] = decode_base64(doc, value, path)
    size = sum(len(v.encode()) for v in data.values()) + sum(len(v) for v in binary.values())
    if size > MAX_CONFIG_MAP_SIZE:
        raise doc.fail("data", f"Too long: must have at most {MAX_CONFIG_MAP_SIZE} bytes")
    doc.boolean(raw.get("immutable"), "immutable", False)
    return ConfigMap(
        namespace,
        name,
        uid,
        MappingProxyType(data),
        MappingProxyType(binary),
        tuple(doc.unknown),
    )


# -- RuntimeClass -------------------------------------------------------------------------


def parse_runtime_class(
    doc: FieldReader, raw: Mapping[str, Any], name: str, uid: str
) -> RuntimeClass:
    """A ``node.k8s.io/v1 RuntimeClass`` (``ValidateRuntimeClass``); the metadata is read."""
    handler = doc.string(raw.get("handler"), "handler", required=True)
    doc.name(handler, "handler", label=True)
    overhead = doc.mapping(raw.get("overhead"), "overhead")
    doc.fields(overhead, "overhead", frozenset({"podFixed"}))
    pod_fixed = doc.resource_list(overhead.get("podFixed"), "overhead.podFixed")
    scheduling = doc.mapping(raw.get("scheduling"), "scheduling")
    doc.fields(scheduling, "scheduling", frozenset({"nodeSelector", "tolerations"}))
    node_selector = doc.labels(scheduling.get("nodeSelector"), "scheduling.nodeSelector")
    doc.sequence(scheduling.get("tolerations"), "scheduling.tolerations")
    return RuntimeClass(
        name,
        uid,
        handler,
        MappingProxyType(pod_fixed),
        node_selector,
        unknown_fields=tuple(doc.unknown),
    )
