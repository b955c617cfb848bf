"""The per-request credential lookup, in the kubelet's order: pod secrets, node config, plugins.

Models ``makeLookupPullCredentialsFunc`` (``pkg/kubelet/images/image_manager.go``): the keyring is
``MakeDockerKeyring(podPullSecrets, Union{nodeKeyring, pluginKeyring})`` looked up with the
normalised repository (``docker.io/library/nginx``), so the pod's secrets come first, then the
node's docker config, then every plugin's answer (all plugins share one keyring, as
``providersDockerKeyring`` builds it). The result goes to the runtime's credential loop, which
tries each in turn and never falls back to anonymous once one matched.

Secrets are read from the pod's own namespace at lookup time; names that cannot be used give the
``FailedToRetrieveImagePullSecret`` warning on the pod and the lookup goes on without them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from kubelet_sim.config.kubelet import KubeletConfiguration
from kubelet_sim.core.pods import PodSpec, PullRequest
from kubelet_sim.core.reference import ImageReference
from kubelet_sim.credentials.dockerconfig import DockerConfigSearch, NodeDockerConfig
from kubelet_sim.credentials.keyring import BasicKeyring, SourcedCredentials
from kubelet_sim.credentials.metrics import CredentialMetrics
from kubelet_sim.credentials.plugin_config import load_credential_provider_config
from kubelet_sim.credentials.plugins import EXEC_TIMEOUT, PluginProvider
from kubelet_sim.credentials.secrets import SecretGetter, pod_secrets
from kubelet_sim.credentials.verify import ImageAccessVerifier, PullRecordStore
from kubelet_sim.errors import ConfigError
from kubelet_sim.telemetry.events import EventReason, EventType, ObjectRef, messages

__all__ = [
    "CredentialResolver",
    "EventSink",
    "NodeCredentials",
    "build_node_credentials",
    "load_plugins",
]

log = structlog.get_logger(__name__)


class EventSink(Protocol):
    """Where the pull-secret warning goes (:class:`kubelet_sim.telemetry.events.EventRecorder`)."""

    def event(
        self, obj: ObjectRef, type_: EventType, reason: EventReason, message: str
    ) -> object: ...


def load_plugins(
    config_path: Path,
    bin_dir: Path,
    *,
    metrics: CredentialMetrics | None = None,
    timeout: float = EXEC_TIMEOUT,
) -> list[PluginProvider]:
    """Plugins from ``--image-credential-provider-config`` and ``-bin-dir``.

    Raises:
        ConfigError: the config is invalid or a plugin executable is missing.
    """
    config = load_credential_provider_config(config_path)
    if metrics is not None:
        metrics.config_info(config.config_hash)
    plugins = [
        PluginProvider(p, bin_dir, timeout=timeout, metrics=metrics) for p in config.providers
    ]
    log.info(
        "credential_provider.loaded", plugins=[p.name for p in plugins], hash=config.config_hash
    )
    return plugins


class CredentialResolver:
    """Builds each request's keyring and looks the image up (a ``CredentialLookup``).

    Args:
        secrets: the secret source (``ObjectStore``); None when the node has no pods' secrets.
        node: the node's docker config provider; None for none.
        plugins: credential provider plugins, in config order.
        recorder: receives ``FailedToRetrieveImagePullSecret``.
    """

    def __init__(
        self,
        *,
        secrets: SecretGetter | None = None,
        node: NodeDockerConfig | None = None,
        plugins: Sequence[PluginProvider] = (),
        recorder: EventSink | None = None,
    ) -> None:
        self.secrets = secrets
        self.node = node
        self.plugins = tuple(plugins)
        self.recorder = recorder

    @classmethod
    def for_node(
        cls,
        *,
        secrets: SecretGetter | None = None,
        docker_config: DockerConfigSearch | None = None,
        plugins: Sequence[PluginProvider] = (),
        recorder: EventSink | None = None,
    ) -> CredentialResolver:
        """A resolver reading node credentials from ``docker_config`` (the kubelet's paths if None)."""
        return cls(
            secrets=secrets,
            node=NodeDockerConfig(docker_config),
            plugins=plugins,
            recorder=recorder,
        )

    async def lookup(self, request: PullRequest, ref: ImageReference) -> list[SourcedCredentials]:
        """The credentials to try for ``request``'s image, in order; empty means anonymous."""
        image = ref.name
        found: list[SourcedCredentials] = []
        if request.pull_secrets:
            found.extend(self._secret_credentials(request, image))
        from_secrets = len(found)
        if self.node is not None:
            node = BasicKeyring()
            node.add(None, await self.node.provide())
            found.extend(node.lookup(image))
        from_node = len(found) - from_secrets
        if self.plugins:
            keyring = BasicKeyring()
            for plugin in self.plugins:
                keyring.add(None, await plugin.provide(image))
            found.extend(keyring.lookup(image))
        log.debug(
            "credentials.lookup",
            pod=str(request.pod),
            image=image,
            from_secrets=from_secrets,
            from_node=from_node,
            from_plugins=len(found) - from_secrets - from_node,
        )
        return found

    __call__ = lookup

    async def pod_synced(self, spec: PodSpec) -> None:
        """Once per pod sync, as ``getPullSecretsForPod``: warn (log and a
        ``FailedToRetrieveImagePullSecret`` event on the pod) about every pull secret that cannot
        be read, whether or not an image is then pulled."""
        requests = spec.requests()
        if not requests:
            return
        request = requests[0]  # the pod's pull secrets, the same for all its containers
        names = [n for n in request.pull_secrets if n]
        if names:
            _, failed = self._read_secrets(request, names)
            if failed:
                self._warn(request, failed)

    def _secret_credentials(self, request: PullRequest, image: str) -> list[SourcedCredentials]:
        # The sync already warned about unreadable secrets (pod_synced); the rest are used.
        keyring, _ = self._read_secrets(request, [n for n in request.pull_secrets if n])
        return keyring.lookup(image) if keyring is not None else []

    def _read_secrets(
        self, request: PullRequest, names: Sequence[str]
    ) -> tuple[BasicKeyring | None, tuple[str, ...]]:
        if self.secrets is None or request.pod.static:
            # A static pod's mirror pod may not reference secrets (the API server refuses it), so
            # the node is never allowed to read them: each one fails to be retrieved.
            return None, tuple(names)
        result = pod_secrets(self.secrets, request.pod.namespace, names)
        return result.keyring, tuple(result.failed)

    def _warn(self, request: PullRequest, failed: Sequence[str]) -> None:
        log.warning("pull_secrets.unavailable", pod=str(request.pod), secrets=list(failed))
        if self.recorder is not None:
            pod = ObjectRef(request.pod.namespace, request.pod.name, request.pod.uid)
            self.recorder.event(
                pod,
                EventType.WARNING,
                EventReason.FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET,
                messages.failed_to_retrieve_pull_secrets(failed),
            )


@dataclass(frozen=True, slots=True)
class NodeCredentials:
    """What :meth:`kubelet_sim.node.builder.Node.build` takes: ``credentials=resolver.lookup``
    and ``verifier=verifier`` (None when KubeletEnsureSecretPulledImages is off)."""

    resolver: CredentialResolver
    verifier: ImageAccessVerifier | None


def build_node_credentials(
    config: KubeletConfiguration,
    *,
    pull_records: PullRecordStore,
    secrets: SecretGetter | None = None,
    recorder: EventSink | None = None,
    docker_config: DockerConfigSearch | None = None,
    node_docker_config: bool = True,
    provider_config: Path | None = None,
    provider_bin_dir: Path | None = None,
    metrics: CredentialMetrics | None = None,
    plugin_timeout: float = EXEC_TIMEOUT,
) -> NodeCredentials:
    """Wire a node's credential sources and its KEP-2535 verifier from the kubelet's settings.

    ``docker_config`` is where the node's ``config.json`` is searched (None: the kubelet's paths);
    ``node_docker_config=False`` leaves node docker config out (a bench node, an anonymous pull).

    Raises:
        ConfigError: the provider config is invalid, or one of the two provider flags is missing.
    """
    plugins: list[PluginProvider] = []
    if (provider_config is None) != (provider_bin_dir is None):
        raise ConfigError(
            None,
            "--image-credential-provider-config",
            "--image-credential-provider-config and --image-credential-provider-bin-dir "
            "go together",
        )
    if provider_config is not None and provider_bin_dir is not None:
        plugins = load_plugins(
            provider_config, provider_bin_dir, metrics=metrics, timeout=plugin_timeout
        )
    resolver = CredentialResolver(
        secrets=secrets,
        node=NodeDockerConfig(docker_config) if node_docker_config else None,
        plugins=plugins,
        recorder=recorder,
    )
    verifier = ImageAccessVerifier.from_config(config, pull_records, metrics=metrics)
    return NodeCredentials(resolver, verifier)
