"""The pull engine: pods arrive on a queue, a worker per pod syncs it until its images are ready.

Models the kubelet's pod workers (``pkg/kubelet/pod_workers.go``) as far as images go: a sync walks
the init containers in order, stopping at the first that is not ready, then every app container in
order, one ``EnsureImageExists`` at a time (a pod never pulls two images at once). A sync that leaves
a container waiting is retried after ``backOffPeriod`` (10 s, optionally jittered by 0.5 as upstream),
so a container in ``ImagePullBackOff`` is retried automatically once its backoff has expired, with a
``BackOff`` event on each sync in between. A failed start also emits ``Failed`` ``Error: <reason>``
as ``kuberuntime`` does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import anyio
import anyio.abc
import structlog

from kubelet_sim.core.pods import (
    ContainerKind,
    ContainerPhase,
    ContainerState,
    PodSpec,
    PullRequest,
)
from kubelet_sim.engine.manager import EnsureResult, ImageManager
from kubelet_sim.engine.ports import EventSink, PodSyncHook
from kubelet_sim.errors import KubeletSimError, PullReason
from kubelet_sim.telemetry.events import EventReason, EventType, ObjectRef

log = structlog.get_logger(__name__)

POD_INITIALIZING = "PodInitializing"
CONTAINER_CREATING = "ContainerCreating"


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Pod-worker timing: ``backOffPeriod`` and its jitter factor (upstream 10 s and 0.5)."""

    resync_period: float = 10.0
    resync_jitter: float = 0.0
    seed: int = 0


@dataclass(slots=True)
class PodState:
    """The engine's view of one pod."""

    spec: PodSpec
    containers: dict[str, ContainerState]
    submitted_at: float
    ready_at: float | None = None
    syncs: int = 0
    started: bool = False
    ready: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    in_use: set[tuple[str, str]] = field(default_factory=set)

    @property
    def is_ready(self) -> bool:
        return self.ready_at is not None


class PullEngine:
    """Owns the pod intake queue and the pod workers; run it with :meth:`run` in a task group."""

    def __init__(
        self,
        manager: ImageManager,
        recorder: EventSink,
        *,
        settings: EngineSettings | None = None,
        clock: Callable[[], float] = anyio.current_time,
        queue_size: int = 10_000,
        on_sync: PodSyncHook | None = None,
    ) -> None:
        self.manager = manager
        self.on_sync = on_sync
        self.service = manager.service
        self.recorder = recorder
        self.settings = settings or EngineSettings()
        self.clock = clock
        self._random = random.Random(self.settings.seed)  # noqa: S311 - jitter, not security
        self._send, self._receive = anyio.create_memory_object_stream[PodState](queue_size)
        self._pods: dict[str, PodState] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    # -- intake --------------------------------------------------------------------------

    async def submit(self, spec: PodSpec) -> PodState:
        """Queue a pod (a new one, or a changed spec for a known UID); its state is visible at once
        with every container waiting."""
        state = self._register(spec)
        await self._send.send(state)
        return state

    def submit_nowait(self, spec: PodSpec) -> PodState:
        state = self._register(spec)
        self._send.send_nowait(state)
        return state

    def _register(self, spec: PodSpec) -> PodState:
        old = self._pods.get(spec.ref.uid)
        if old is not None:
            if old.spec == spec:
                return old
            self._retire(old)
        containers = {
            r.container: ContainerState(
                container=r.container,
                image=r.image,
                phase=ContainerPhase.WAITING,
                reason=POD_INITIALIZING
                if spec.init_containers and r.kind is ContainerKind.APP
                else CONTAINER_CREATING,
            )
            for r in spec.requests()
        }
        state = PodState(spec=spec, containers=containers, submitted_at=self.clock())
        self._pods[spec.ref.uid] = state
        return state

    @property
    def queue_depth(self) -> int:
        return self._send.statistics().current_buffer_used

    async def remove(self, uid: str) -> bool:
        """Stop syncing a pod and release its images for GC; False if unknown."""
        state = self._pods.pop(uid, None)
        if state is None:
            return False
        self._retire(state)
        self.manager.forget_pod(uid)
        return True

    def _retire(self, state: PodState) -> None:
        """Stop a pod state's worker and release the images its containers held."""
        state.scope.cancel()
        for image_id, handler in state.in_use:
            self.service.release(image_id, handler)
        state.in_use.clear()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Dispatch queued pods to workers until cancelled or :meth:`close` is called."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            async with self._receive:
                async for state in self._receive:
                    self._start(state, tg)
            # Intake closed: let running workers finish.
        self._tg = None

    async def close(self) -> None:
        """Stop intake; workers already running go on until their pods are ready or removed."""
        await self._send.aclose()

    def _start(self, state: PodState, tg: anyio.abc.TaskGroup) -> None:
        if self._pods.get(state.spec.ref.uid) is not state or state.started:
            return  # removed or replaced while queued, or a duplicate submission
        state.started = True
        tg.start_soon(self._worker, state, name=f"pod {state.spec.ref}")

    # -- pod workers ---------------------------------------------------------------------

    async def _worker(self, state: PodState) -> None:
        with state.scope:
            structlog.contextvars.bind_contextvars(pod=str(state.spec.ref))
            while True:
                state.syncs += 1
                if await self._sync(state):
                    state.ready_at = self.clock()
                    state.ready.set()
                    log.info("pod.images_ready", seconds=state.ready_at - state.submitted_at)
                    return
                await anyio.sleep(self._resync_delay())

    def _resync_delay(self) -> float:
        period = self.settings.resync_period
        if self.settings.resync_jitter > 0:
            period += period * self.settings.resync_jitter * self._random.random()
        return period

    async def _sync(self, state: PodState) -> bool:
        if self.on_sync is not None:
            await self.on_sync(state.spec)
        for request in state.spec.init_containers:
            if not await self._ensure(state, request):
                return False
        all_ready = True
        for request in state.spec.containers:
            if not await self._ensure(state, request):
                all_ready = False
        return all_ready

    async def _ensure(self, state: PodState, request: PullRequest) -> bool:
        current = state.containers[request.container]
        if current.ready:
            return True
        # bind/reset by token: what bound_contextvars does, without copying the whole context
        tokens = structlog.contextvars.bind_contextvars(
            container=request.container, image=request.image, attempt=current.attempts + 1
        )
        try:
            result = await self.manager.ensure_image(request)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
        attempts = current.attempts + (1 if result.pulled is not None or _attempted(result) else 0)
        if result.ok:
            state.containers[request.container] = replace(
                current,
                phase=ContainerPhase.READY,
                reason="",
                message="",
                image_id=result.image_ref,
                repo_digest=result.repo_digest,
                attempts=attempts,
                backoff_until=None,
            )
            handler = request.runtime_handler
            if (result.image_ref, handler) not in state.in_use:
                try:
                    await self.service.mark_in_use(result.image_ref, handler)
                except KubeletSimError as exc:
                    # The image vanished (or the store failed) between the check and now: the
                    # container cannot start; the next sync tries again.
                    state.containers[request.container] = replace(
                        current,
                        reason=PullReason.ERR_IMAGE_INSPECT,
                        message=f'Failed to inspect image "{request.image}": {exc}',
                    )
                    return False
                state.in_use.add((result.image_ref, handler))
            return True
        assert result.reason is not None
        obj = ObjectRef(
            namespace=request.pod.namespace,
            name=request.pod.name,
            uid=request.pod.uid,
            field_path=request.field_path,
        )
        self.recorder.event(obj, EventType.WARNING, EventReason.FAILED, f"Error: {result.reason}")
        remaining = self.manager.backoff.remaining((request.pod.uid, request.image), self.clock())
        state.containers[request.container] = replace(
            current,
            reason=str(result.reason),
            message=result.message,
            attempts=attempts,
            backoff_until=self.clock() + remaining if remaining > 0 else None,
        )
        return False

    # -- queries -------------------------------------------------------------------------

    def pod(self, uid: str) -> PodState | None:
        return self._pods.get(uid)

    def pods(self) -> Iterable[PodState]:
        return self._pods.values()

    async def wait_ready(self, uid: str) -> PodState:
        """Wait until the submitted pod ``uid`` has all its images."""
        state = self._pods[uid]
        await state.ready.wait()
        return state


def _attempted(result: EnsureResult) -> bool:
    return result.reason is PullReason.ERR_IMAGE_PULL
