"""Values the engine passes around: pull requests, container states and pull results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from kubelet_sim.core.policy import PullPolicy
from kubelet_sim.core.trace import HostTry


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


class RestartPolicy(StrEnum):
    """``spec.restartPolicy``."""

    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


@dataclass(frozen=True, slots=True)
class PodSpec:
    """What the engine needs of a pod: its identity, its containers' pull requests and how its
    containers are restarted and stopped.

    ``source`` is the object the spec was made from (the admitted Kubernetes Pod), opaque to the
    engine and handed back to the container runtime, which reads env, hooks and ports from it.
    """

    ref: PodRef
    init_containers: tuple[PullRequest, ...] = ()
    containers: tuple[PullRequest, ...] = ()
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    grace_period: float = 30.0
    """``terminationGracePeriodSeconds``."""
    source: object = field(default=None, hash=False, repr=False)

    def requests(self) -> tuple[PullRequest, ...]:
        return self.init_containers + self.containers


class ContainerPhase(StrEnum):
    """The container state ``kubectl get pod -o yaml`` shows: waiting, running or terminated."""

    WAITING = "waiting"
    RUNNING = "running"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class Termination:
    """How a container's last run ended (``state.terminated`` / ``lastState.terminated``)."""

    exit_code: int
    reason: str
    started_at: float
    finished_at: float
    message: str = ""


@dataclass(frozen=True, slots=True)
class ContainerState:
    """What ``kubectl get pod -o yaml`` would show for one container (and its image)."""

    container: str
    image: str
    phase: ContainerPhase
    reason: str = ""
    message: str = ""
    image_id: str = ""
    repo_digest: str = ""
    attempts: int = 0
    """Pull attempts (ErrImagePull counts as one)."""
    backoff_until: float | None = None
    """When the image pull backoff, or the crash-loop backoff, lets the next attempt go."""
    image_ready: bool = False
    container_id: str = ""
    started_at: float | None = None
    restart_count: int = 0
    last_termination: Termination | None = None
    """The latest run that ended: the current state when terminated, else ``lastState``."""

    @property
    def running(self) -> bool:
        return self.phase is ContainerPhase.RUNNING

    @property
    def succeeded(self) -> bool:
        """Terminated with exit code 0 (an init container that is done)."""
        term = self.last_termination
        return self.phase is ContainerPhase.TERMINATED and term is not None and term.exit_code == 0

    @property
    def ready(self) -> bool:
        """Running (an app container; no readiness probes are modelled) or, for an init
        container, done."""
        return self.running or self.succeeded


@dataclass(frozen=True, slots=True)
class StartOutcome:
    """What the container runtime answered to "create and start this container".

    ``reason`` is empty on success, else the waiting reason the container shows
    (``CreateContainerConfigError``, ``CreateContainerError``, ``RunContainerError``,
    ``PostStartHookError``, or for a sandbox ``FailedCreatePodSandBox``); ``container_id`` is set
    when a container was created (after a failed postStart it has already been killed, and
    ``exit_code`` says how it ended).
    """

    container_id: str = ""
    reason: str = ""
    message: str = ""
    exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return not self.reason


@dataclass(frozen=True, slots=True)
class PullAttempt:
    """One pull of a container's image, as ``describe`` and ``explain`` show it: when it was
    asked for (the engine's clock), how long it waited for the puller (the serial queue or a
    parallel slot) and how long the pull itself took, and how it ended: ``reason`` empty when
    it pulled, else the kubelet's reason, the runtime's error text and ``cause`` (what kind of
    failure, :func:`kubelet_sim.errors.failure_cause`). ``step`` is where it ended (``resolving``,
    ``downloading layer 2/3 ...``), ``hosts`` every request it made, ``credentials`` how many
    matching credentials it had to try."""

    started: float
    waited: float
    seconds: float
    reason: str = ""
    message: str = ""
    cause: str = ""
    step: str = ""
    credentials: int = 0
    hosts: tuple[HostTry, ...] = ()


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
