"""Values the engine passes around: pull requests, container states and pull results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from kubelet_sim.core.policy import PullPolicy


class ContainerKind(StrEnum):
    """Which list of the pod spec a container comes from (init containers start first)."""

    INIT = "initContainers"
    APP = "containers"
    EPHEMERAL = "ephemeralContainers"


@dataclass(frozen=True, slots=True)
class PodRef:
    """The pod a request belongs to."""

    namespace: str
    name: str
    uid: str
    static: bool = False
    """A static pod (the node's ``staticPodPath``): its mirror pod may not reference Secrets or
    ServiceAccounts, so the kubelet cannot read the pull secrets it names."""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class PullRequest:
    """One container's image, as the kubelet's pod worker hands it to ``EnsureImageExists``."""

    pod: PodRef
    container: str
    image: str
    policy: PullPolicy
    kind: ContainerKind = ContainerKind.APP
    pull_secrets: tuple[str, ...] = ()
    runtime_handler: str = ""
    service_account: str = "default"

    @property
    def field_path(self) -> str:
        """The event's ``involvedObject.fieldPath``, e.g. ``spec.containers{app}``."""
        return f"spec.{self.kind}{{{self.container}}}"


@dataclass(frozen=True, slots=True)
class PodSpec:
    """What the engine needs of a pod: its identity and its containers' pull requests."""

    ref: PodRef
    init_containers: tuple[PullRequest, ...] = ()
    containers: tuple[PullRequest, ...] = ()

    def requests(self) -> tuple[PullRequest, ...]:
        return self.init_containers + self.containers


class ContainerPhase(StrEnum):
    WAITING = "waiting"
    READY = "ready"


@dataclass(frozen=True, slots=True)
class ContainerState:
    """What ``kubectl get pod -o yaml`` would show for the container's image."""

    container: str
    image: str
    phase: ContainerPhase
    reason: str = ""
    message: str = ""
    image_id: str = ""
    repo_digest: str = ""
    attempts: int = 0
    backoff_until: float | None = None

    @property
    def ready(self) -> bool:
        return self.phase is ContainerPhase.READY


@dataclass(frozen=True, slots=True)
class PulledImage:
    """What a successful runtime pull produced (the CRI ``PullImage`` answer plus size)."""

    image_ref: str
    repo_digest: str
    manifest_digest: str
    platform: str
    size: int
    bytes_downloaded: int = 0
    credential_fingerprint: str = ""
    layers: tuple[str, ...] = field(default=())
