"""The small Kubernetes object model the node needs: Pods, Secrets, ServiceAccounts, admission."""

from kubelet_sim.k8s.admission import Admission, ServiceAccountGetter, pod_spec
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
    fresh_uid,
    stable_uid,
)
from kubelet_sim.k8s.store import (
    ApplyAction,
    ApplyResult,
    ObjectKey,
    ObjectStore,
    UidFactory,
    merge_patch,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_SERVICE_ACCOUNT",
    "DOCKERCFG_KEY",
    "DOCKER_CONFIG_JSON_KEY",
    "Admission",
    "ApplyAction",
    "ApplyResult",
    "Container",
    "Kind",
    "Manifest",
    "Object",
    "ObjectKey",
    "ObjectStore",
    "Pod",
    "Secret",
    "SecretType",
    "ServiceAccount",
    "ServiceAccountGetter",
    "UidFactory",
    "fresh_uid",
    "merge_patch",
    "parse_manifests",
    "pod_spec",
    "stable_uid",
]
