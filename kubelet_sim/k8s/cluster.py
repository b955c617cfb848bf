"""The objects a pod's containers read besides Secrets: Services, ConfigMaps and RuntimeClasses.

Frozen values for ``v1 Service`` (its cluster IP and ports, for the docker-links environment of
``pkg/kubelet/envvars``), ``v1 ConfigMap`` (``envFrom`` and ``configMapKeyRef``) and the
cluster-scoped ``node.k8s.io/v1 RuntimeClass`` (its ``handler``, ``overhead.podFixed`` and
``scheduling.nodeSelector``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["ConfigMap", "RuntimeClass", "Service", "ServicePort"]


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


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


@dataclass(frozen=True, slots=True)
class RuntimeClass:
    """A cluster-scoped RuntimeClass (``namespace`` is always ``""``)."""

    name: str
    uid: str
    handler: str
    overhead_pod_fixed: Mapping[str, str] = field(default_factory=_empty, hash=False)
    node_selector: Mapping[str, str] = field(default_factory=_empty, hash=False)
    namespace: str = ""
