"""The small Kubernetes object model the node needs: Pods, Secrets, ServiceAccounts, Services,
ConfigMaps, RuntimeClasses, admission and the object store."""

from kubelet_sim.k8s.admission import Admission, ServiceAccountGetter, pod_spec
from kubelet_sim.k8s.cluster import ConfigMap, RuntimeClass, Service, ServicePort
from kubelet_sim.k8s.manifests import Manifest, parse_manifests
from kubelet_sim.k8s.objects import (
    DEFAULT_NAMESPACE,
    DEFAULT_SERVICE_ACCOUNT,
    DOCKER_CONFIG_JSON_KEY,
    DOCKERCFG_KEY,
    Container,
    Kind,
    Object,
    Pod,
    Secret,
    SecretType,
    ServiceAccount,
    field_warnings,
    fresh_uid,
    stable_uid,
)
from kubelet_sim.k8s.patch import merge_patch
from kubelet_sim.k8s.podspec import parse_quantity
from kubelet_sim.k8s.store import (
    KUBERNETES_SERVICE,
    ApplyAction,
    ApplyResult,
    ObjectKey,
    ObjectStore,
    UidFactory,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_SERVICE_ACCOUNT",
    "DOCKERCFG_KEY",
    "DOCKER_CONFIG_JSON_KEY",
    "KUBERNETES_SERVICE",
    "Admission",
    "ApplyAction",
    "ApplyResult",
    "ConfigMap",
    "Container",
    "Kind",
    "Manifest",
    "Object",
    "ObjectKey",
    "ObjectStore",
    "Pod",
    "RuntimeClass",
    "Secret",
    "SecretType",
    "Service",
    "ServiceAccount",
    "ServiceAccountGetter",
    "ServicePort",
    "UidFactory",
    "field_warnings",
    "fresh_uid",
    "merge_patch",
    "parse_manifests",
    "parse_quantity",
    "pod_spec",
    "stable_uid",
]
