"""The engine's ports: every Protocol through which the engine sees the world outside it.

The image manager, pullers and pod workers talk to the container runtime, credentials, the KEP-2535
verifier, the event recorder and the metrics only through these types; the real parts
(:mod:`kubelet_sim.runtime`, :mod:`kubelet_sim.credentials`, :mod:`kubelet_sim.telemetry`) satisfy
them structurally, and :mod:`kubelet_sim.node.builder` plugs them in. Import contracts keep the
engine from importing any adapter (registry, store, credentials, k8s, runtime), httpx or sqlite3.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.digest import Digest
from kubelet_sim.core.pods import PodSpec, PulledImage, PullRequest, StartOutcome
from kubelet_sim.core.reference import ImageReference
from kubelet_sim.telemetry.events import EventReason, EventType, ObjectRef

PodSyncHook = Callable[[PodSpec], Awaitable[None]]
"""Run at the start of every pod sync (the kubelet reads the pod's pull secrets then and warns
about unreadable ones, :meth:`kubelet_sim.credentials.CredentialResolver.pod_synced`)."""


class Layer(Protocol):
    """A layer being downloaded, as progress reports name it (an OCI descriptor)."""

    @property
    def digest(self) -> Digest: ...

    @property
    def size(self) -> int: ...


ProgressFn = Callable[[str, Layer, int], None]
"""Called with the image, a layer's descriptor and the bytes of it received so far."""

ResolvedHook = Callable[[str, str], Awaitable[None]]
"""Called with the image ID and the fingerprint of the credentials that resolved it, once the
image config shows an image to run: before anything is stored and before the image can become
present (KEP-2535 pull records), while its layers may be downloading."""


class ImageStatus(Protocol):
    """What CRI ``ImageStatus`` tells about a present image (:class:`~kubelet_sim.store.ImageRecord`)."""

    @property
    def image_id(self) -> str: ...

    @property
    def repo_digests(self) -> tuple[str, ...]: ...

    @property
    def size(self) -> int: ...


class RuntimeImageService(Protocol):
    """The runtime seam the image manager and pod workers talk to (a fake one in unit tests)."""

    async def image_status(self, image: str, runtime_handler: str = "") -> ImageStatus | None: ...

    async def pull_image(
        self,
        ref: ImageReference,
        *,
        runtime_handler: str = "",
        credentials: Sequence[Credentials] = (),
        progress: ProgressFn | None = None,
        on_resolved: ResolvedHook | None = None,
    ) -> PulledImage: ...

    async def mark_in_use(self, image_id: str, runtime_handler: str = "") -> None: ...

    def release(self, image_id: str, runtime_handler: str = "") -> None: ...


class EventSink(Protocol):
    """Where the manager's events go (:class:`kubelet_sim.telemetry.events.EventRecorder`)."""

    def event(
        self, obj: ObjectRef, type_: EventType, reason: EventReason, message: str
    ) -> object: ...


class ManagerMetrics(Protocol):
    """What the manager observes (:class:`kubelet_sim.telemetry.metrics.PullMetrics`)."""

    def ensure_image_request(
        self, policy: str, present: bool | None, pull_required: bool | None
    ) -> None: ...

    def image_pull_duration(self, seconds: float, size: int) -> None: ...

    def cache_hit(self) -> None: ...

    def set_backoff_entries(self, n: int) -> None: ...

    def runtime_operation(self, operation_type: str, duration: float, error: bool) -> None: ...

    def pull_attempted(self, image: str, seconds: float, cause: str) -> None:
        """A pull the manager asked for ended: the pod's image, the puller's seconds (0 when
        the QPS throttle refused it) and its failure cause (``""``: pulled; else a
        :class:`~kubelet_sim.errors.Cause` value, ``qps`` for a refusal)."""
        ...


CredentialLookup = Callable[[PullRequest, ImageReference], Awaitable[Sequence[Credentials]]]
"""Returns the credentials to try for a request, in order (the keyring); empty = anonymous."""

PodCredentials = Callable[[], Awaitable[Sequence[Credentials]]]
"""The request's credential lookup, run at most once per ``EnsureImageExists`` (``OnceValues``)."""


class PulledImageVerifier(Protocol):
    """KEP-2535's pull manager (:class:`kubelet_sim.credentials.ImageAccessVerifier`).

    ``must_attempt_pull`` may call ``credentials`` to see the pod's credentials; the manager
    shares that one lookup with the pull that may follow. ``record_pulled`` runs as soon as a pull
    has resolved the image with the pod's credentials, before the image can become present
    (``RecordImagePulled``; upstream closes the same gap with pull intents).
    """

    async def must_attempt_pull(
        self,
        request: PullRequest,
        ref: ImageReference,
        image_id: str,
        credentials: PodCredentials,
    ) -> bool: ...

    def must_attempt_pull_now(
        self, request: PullRequest, ref: ImageReference, image_id: str
    ) -> bool | None:
        """``must_attempt_pull`` when it can answer without waiting for I/O or the pod's
        credentials; None when it cannot (the manager then awaits ``must_attempt_pull``)."""
        ...

    async def record_pulled(
        self,
        request: PullRequest,
        ref: ImageReference,
        image_id: str,
        credential_fingerprint: str,
        credentials: Sequence[Credentials],
    ) -> None: ...


class PullObserver(Protocol):
    """Metrics the pullers report (:class:`kubelet_sim.telemetry.metrics.PullMetrics`)."""

    def pull_started(self) -> None: ...

    def pull_finished(self, duration: float, size: int, error: bool) -> None: ...

    def set_queue_depth(self, n: int) -> None: ...


class ContainerRuntime(Protocol):
    """The container half of the runtime, as the pod workers use it
    (:class:`kubelet_sim.runtime.containers.ContainerManager`; ``kuberuntime_manager.go``).

    Events of container creation, start, hooks and kills (``Created``, ``Started``, ``Failed``,
    ``FailedPostStartHook``, ``Killing``, ``FailedPreStopHook``, ``FailedCreatePodSandBox``) are
    the runtime's to record, as ``kuberuntime`` records them; the workers record crash-loop
    ``BackOff``.
    """

    async def run_sandbox(self, pod: PodSpec) -> StartOutcome:
        """Make the pod's sandbox (once; again after :meth:`remove_pod`)."""
        ...

    async def start_container(
        self, pod: PodSpec, request: PullRequest, image_ref: str, attempt: int
    ) -> StartOutcome:
        """Create and start the container from its present image, then run its postStart hook;
        returns once the hook has returned (a failed hook has killed the container)."""
        ...

    async def wait_container(self, pod: PodSpec, request: PullRequest, container_id: str) -> int:
        """Wait until the container's process exits; its exit code."""
        ...

    async def kill_container(
        self,
        pod: PodSpec,
        request: PullRequest,
        container_id: str,
        grace: float,
        *,
        message: str = "",
    ) -> None:
        """Run preStop (within ``grace``), then stop the container (SIGTERM, SIGKILL after what
        is left of the grace period) and remove it."""
        ...

    async def remove_pod(self, pod: PodSpec) -> None:
        """Remove the pod's sandbox and what the runtime keeps for it."""
        ...
