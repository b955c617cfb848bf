"""Pull secrets: a pod's ``imagePullSecrets`` read from its own namespace into one keyring.

Models ``pkg/kubelet/kubelet_pods.go`` ``getPullSecretsForPod`` and
``pkg/credentialprovider/secrets/secrets.go`` ``MakeDockerKeyring``:

- each name is looked up in the pod's namespace only; empty names are skipped silently; a missing
  Secret is reported (``FailedToRetrieveImagePullSecret``) and the rest are used;
- a Secret counts when it has type ``kubernetes.io/dockerconfigjson`` with a non-empty
  ``.dockerconfigjson`` (``{"auths": {...}}``) or ``kubernetes.io/dockercfg`` with a non-empty
  ``.dockercfg`` (the bare map); other Secrets are ignored;
- all counted Secrets go into one keyring in ``imagePullSecrets`` order, each credential tagged
  with the Secret's namespace, name and UID.

Upstream fails the whole lookup when a counted Secret does not parse. kubelet-sim reports such a
Secret like a missing one and goes on with the others (the API already refuses malformed JSON in
these types, so only a bad ``auth`` field can get here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

from kubelet_sim.credentials.dockerconfig import (
    DockerConfigEntry,
    parse_config_json,
    parse_dockercfg,
)
from kubelet_sim.credentials.keyring import BasicKeyring, SecretSource
from kubelet_sim.errors import ConfigError

if TYPE_CHECKING:
    from kubelet_sim.k8s.objects import Secret

__all__ = ["PodSecrets", "SecretGetter", "docker_config_of", "pod_secrets"]

log = structlog.get_logger(__name__)


class SecretGetter(Protocol):
    """The kubelet's secret manager (:class:`~kubelet_sim.k8s.store.ObjectStore`)."""

    def get_secret(self, namespace: str, name: str) -> Secret | None: ...


@dataclass(frozen=True, slots=True)
class PodSecrets:
    """The keyring built from a pod's pull secrets, and the names that could not be used."""

    keyring: BasicKeyring | None
    failed: tuple[str, ...] = ()
    used: tuple[str, ...] = ()


def docker_config_of(secret: Secret) -> dict[str, DockerConfigEntry] | None:
    """The registries of a docker-config Secret; None for any other Secret.

    Raises:
        ConfigError: the Secret's config does not parse (never quoting it).
    """
    # Imported here: a node without pull secrets (``kubelet-sim pull``) never loads the object
    # model, and wherever a Secret exists it is loaded already.
    from kubelet_sim.k8s.objects import DOCKER_CONFIG_JSON_KEY, DOCKERCFG_KEY, SecretType

    source = f"secret {secret.namespace}/{secret.name}"
    if secret.type == SecretType.DOCKER_CONFIG_JSON:
        data = secret.data.get(DOCKER_CONFIG_JSON_KEY, b"")
        return parse_config_json(data, source=source) if data else None
    if secret.type == SecretType.DOCKERCFG:
        data = secret.data.get(DOCKERCFG_KEY, b"")
        return parse_dockercfg(data, source=source) if data else None
    return None


def pod_secrets(getter: SecretGetter, namespace: str, names: Sequence[str]) -> PodSecrets:
    """Read ``names`` from ``namespace`` into one keyring (``MakeDockerKeyring``)."""
    keyring = BasicKeyring()
    failed: list[str] = []
    used: list[str] = []
    for name in names:
        if not name:
            continue
        secret = getter.get_secret(namespace, name)
        if secret is None:
            failed.append(name)
            continue
        try:
            config = docker_config_of(secret)
        except ConfigError as exc:
            log.warning(
                "pull_secret.invalid",
                secret=f"{namespace}/{name}",
                field=exc.field,
                error=exc.message,
            )
            failed.append(name)
            continue
        if config is None:
            log.debug(
                "pull_secret.not_docker_config", secret=f"{namespace}/{name}", type=secret.type
            )
            continue
        keyring.add(SecretSource(namespace, name, secret.uid), config)
        used.append(name)
    return PodSecrets(keyring if used else None, tuple(failed), tuple(used))
