"""Registry credentials as the kubelet finds them: pull secrets, node docker config, plugins.

:class:`CredentialResolver` builds the per-request lookup the engine's image manager calls (pod
secrets of the pod's namespace, then the node's docker config, then credential provider plugins,
matched with the upstream keyring rules); :class:`ImageAccessVerifier` applies KEP-2535 to images
already on the node and records who pulled what. :func:`build_node_credentials` wires both from a
KubeletConfiguration.
"""

from kubelet_sim.credentials.dockerconfig import (
    CACHE_LIFETIME,
    DockerConfig,
    DockerConfigEntry,
    DockerConfigSearch,
    NodeDockerConfig,
    decode_auth_field,
    parse_config_json,
    parse_dockercfg,
    read_docker_config_file,
)
from kubelet_sim.credentials.keyring import (
    BasicKeyring,
    Keyring,
    SecretSource,
    SourcedCredentials,
    UnionKeyring,
    is_default_registry_match,
    urls_match,
)
from kubelet_sim.credentials.metrics import CredentialMetrics
from kubelet_sim.credentials.plugin_config import (
    CredentialProvider,
    CredentialProviderConfig,
    ExecEnvVar,
    load_credential_provider_config,
    parse_credential_provider_config,
)
from kubelet_sim.credentials.plugins import EXEC_TIMEOUT, PluginProvider
from kubelet_sim.credentials.resolver import (
    CredentialResolver,
    NodeCredentials,
    build_node_credentials,
    load_plugins,
)
from kubelet_sim.credentials.secrets import PodSecrets, SecretGetter, docker_config_of, pod_secrets
from kubelet_sim.credentials.verify import (
    ImageAccessVerifier,
    MustPullResult,
    PullRecordStore,
    allowlisted,
    identity_of,
    requires_verification,
)

__all__ = [
    "CACHE_LIFETIME",
    "EXEC_TIMEOUT",
    "BasicKeyring",
    "CredentialMetrics",
    "CredentialProvider",
    "CredentialProviderConfig",
    "CredentialResolver",
    "DockerConfig",
    "DockerConfigEntry",
    "DockerConfigSearch",
    "ExecEnvVar",
    "ImageAccessVerifier",
    "Keyring",
    "MustPullResult",
    "NodeCredentials",
    "NodeDockerConfig",
    "PluginProvider",
    "PodSecrets",
    "PullRecordStore",
    "SecretGetter",
    "SecretSource",
    "SourcedCredentials",
    "UnionKeyring",
    "allowlisted",
    "build_node_credentials",
    "decode_auth_field",
    "docker_config_of",
    "identity_of",
    "is_default_registry_match",
    "load_credential_provider_config",
    "load_plugins",
    "parse_config_json",
    "parse_credential_provider_config",
    "parse_dockercfg",
    "pod_secrets",
    "read_docker_config_file",
    "requires_verification",
    "urls_match",
]
