"""The pod workers: pods arrive on a queue, a worker per pod syncs it as long as it exists.

Models the kubelet's pod workers (``pkg/kubelet/pod_workers.go``) and ``kuberuntime``'s
``SyncPod``: a sync makes the pod's sandbox, then walks the init containers in order (each must
run to completion, exit 0, before the next starts), then every app container in order. For each
container it first ensures the image (``EnsureImageExists``, one at a time: a pod never pulls two
images at once), then asks the container runtime to create and start it and run its postStart
hook. A sync that leaves something to do is retried after ``backOffPeriod`` (10 s, optionally
jittered by 0.5 as upstream), or at once when a container exits (the PLEG's event).

Restarts follow ``restartPolicy`` (init containers restart only on failure, never under
``Never``) with the kubelet's crash-loop backoff (``doBackOff``: one ``flowcontrol.Backoff`` of
10 s doubling to 300 s per node, keyed by pod and container, measured from when the container
finished; an entry untouched for 600 s expires, so a container that ran for ten minutes restarts at
once): ``CrashLoopBackOff`` as the waiting reason and a ``BackOff`` Warning on each sync in
between. A failed pull emits ``Failed`` ``Error: <reason>`` as ``kuberuntime`` does.

Without a container runtime (``kubelet-sim pull``, image-only tests) a container counts as
running once its image is ready, and the worker ends when every image is.

A pod that is removed, or replaced by a changed spec, is terminated in the background: its worker
stops, every running container gets its preStop hook and a stop within the grace period, and its
sandbox is removed; a replacing spec starts once that is done.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import anyio
import anyio.abc
import structlog

from kubelet_sim.core.backoff import DEFAULT_INITIAL, DEFAULT_MAX, Backoff
from kubelet_sim.core.durations import format_go_duration
from kubelet_sim.core.pods import (
    ContainerKind,
    ContainerPhase,
    ContainerState,
    PodRef,
    PodSpec,
    PullRequest,
    RestartPolicy,
    StartOutcome,
    Termination,
)
from kubelet_sim.engine.manager import EnsureResult, ImageManager
from kubelet_sim.engine.ports import ContainerRuntime, EventSink, PodSyncHook
from kubelet_sim.errors import KubeletSimError, PullReason
from kubelet_sim.telemetry.events import EventReason, EventType, ObjectRef

log = structlog.get_logger(__name__)

POD_INITIALIZING = "PodInitializing"
CONTAINER_CREATING = "ContainerCreating"
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"


def format_pod(ref: PodRef) -> str:
    """``format.Pod``: ``name_namespace(uid)``, how kubelet messages name a pod."""
    return f"{ref.name}_{ref.namespace}({ref.uid})"


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Pod-worker timing: ``backOffPeriod`` and its jitter factor (upstream 10 s and 0.5)."""

    resync_period: float = 10.0
    resync_jitter: float = 0.0
    seed: int = 0
    crash_backoff: tuple[float, float] = (DEFAULT_INITIAL, DEFAULT_MAX)
    """Container restart backoff: ``backOffPeriod`` and ``MaxContainerBackOff`` (10 s, 300 s)."""


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
    sandbox: bool = False
    changed: anyio.Event = field(default_factory=anyio.Event)
    """Set when a container exits (the PLEG's event): the worker syncs at once."""
    poked: bool = False
    """``changed`` is set (checked on every sync, cheaper than asking the event)."""
    watchers: anyio.abc.TaskGroup | None = None
    watching: int = 0
    unwatched: list[tuple[PullRequest, str]] = field(default_factory=list)
    settled: bool = False
    """What the last sync found (nothing to do until a container exits)."""
    """Containers started before the worker had a watcher task group."""
    finished_at: float | None = None
    """Every container has terminated for good (``restartPolicy`` allows no restart)."""
    terminated: anyio.Event = field(default_factory=anyio.Event)
    """Set once the pod's containers are stopped after removal or replacement."""
    after: PodState | None = None
    """The state this one replaces; its termination finishes before this one starts."""
    exited: anyio.Event = field(default_factory=anyio.Event)
    """Set once the worker (and its exit watchers, and their shielded cleanups) has returned."""

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
        runtime: ContainerRuntime | None = None,
    ) -> None:
        self.manager = manager
        self.on_sync = on_sync
        self.service = manager.service
        self.recorder = recorder
        self.runtime = runtime
        self.settings = settings or EngineSettings()
        self.clock = clock
        self.crash_backoff = Backoff(*self.settings.crash_backoff)
        self._random = random.Random(self.settings.seed)  # noqa: S311 - jitter, not security
        self._send, self._receive = anyio.create_memory_object_stream[PodState](queue_size)
        self._pods: dict[str, PodState] = {}
        self._terminating: dict[str, PodState] = {}
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
        if old is not None and old.spec == spec:
            return old
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
        if old is not None:
            state.after = old
            self._retire(old)
            kept = set(old.spec.requests()) & set(spec.requests())
            for request in (*old.spec.requests(), *spec.requests()):
                if request not in kept:
                    # getStableKey hashes the container: a changed one backs off afresh, and a
                    # gone one's entry goes with it
                    self.crash_backoff.reset((spec.ref.uid, request.container))
        self._pods[spec.ref.uid] = state
        return state

    @property
    def queue_depth(self) -> int:
        return self._send.statistics().current_buffer_used

    async def remove(self, uid: str, *, grace_period: float | None = None) -> bool:
        """Stop syncing a pod, stop its containers (in the background, within its grace period,
        or ``grace_period`` when a deletion gave one) and release its images for GC; False if
        unknown."""
        state = self._pods.pop(uid, None)
        if state is None:
            return False
        if grace_period is not None:
            state.spec = replace(state.spec, grace_period=grace_period)
        self._retire(state)
        self.manager.forget_pod(uid)
        # Its own containers' entries (older specs' were dropped when they were replaced), not a
        # scan of the node's whole backoff table on every removal.
        for request in state.spec.requests():
            self.crash_backoff.reset((uid, request.container))
        return True

    def _retire(self, state: PodState) -> None:
        """Stop a pod state's worker; terminate its containers, then release its images."""
        state.scope.cancel()
        if self.runtime is None or (not state.started and state.after is None):
            self._release(state)
            state.terminated.set()
            return
        self._terminating[state.spec.ref.uid] = state
        if self._tg is not None:
            self._tg.start_soon(self._terminate, state, name=f"terminate {state.spec.ref}")
        # Without a running engine, run() terminates what is left when it starts.

    def _release(self, state: PodState) -> None:
        for image_id, handler in state.in_use:
            self.service.release(image_id, handler)
        state.in_use.clear()

    async def _terminate(self, state: PodState) -> None:
        """``KillPod``: every running container stopped in parallel, then the sandbox removed."""
        runtime = self.runtime
        assert runtime is not None
        try:
            if state.started:
                # The cancelled worker's own shielded cleanups (a container it was starting, an
                # exited one it was removing) finish first: two removals of one container race.
                await state.exited.wait()
            if state.after is not None:
                # The state it replaced still holds the pod's sandbox (kept by UID) until it is
                # stopped: removing ours first would take that sandbox, or a newer state's.
                await state.after.terminated.wait()
            async with anyio.create_task_group() as tg:
                for request in state.spec.requests():
                    current = state.containers[request.container]
                    if current.running and current.container_id:
                        tg.start_soon(
                            runtime.kill_container,
                            state.spec,
                            request,
                            current.container_id,
                            state.spec.grace_period,
                        )
            await runtime.remove_pod(state.spec)
        finally:
            state.sandbox = False
            self._release(state)
            if self._terminating.get(state.spec.ref.uid) is state:
                del self._terminating[state.spec.ref.uid]
            state.terminated.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Dispatch queued pods to workers until cancelled or :meth:`close` is called.

        Stopping the engine stops no container, as a kubelet restart leaves its pods running;
        the runtime handlers clean up what they made when the node closes them.
        """
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for state in list(self._terminating.values()):
                tg.start_soon(self._terminate, state)
            task_status.started()
            try:
                async with self._receive:
                    async for state in self._receive:
                        self._start(state, tg)
                # Intake closed: let running workers finish.
            finally:
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
        try:
            with state.scope:
                structlog.contextvars.bind_contextvars(pod=str(state.spec.ref))
                if state.after is not None:
                    await state.after.terminated.wait()
                    state.after = None
                # Until a container runs, no watcher task group: a pod still waiting for its
                # images (the bulk of a fleet's syncs) keeps one cancel scope less under every
                # checkpoint of its pulls.
                if not await self._loop(state):
                    return
                async with anyio.create_task_group() as watchers:
                    state.watchers = watchers
                    try:
                        for request, container_id in state.unwatched:
                            watchers.start_soon(self._wait_exit, state, request, container_id)
                        state.unwatched.clear()
                        await self._loop(state, resumed=True)
                    finally:
                        state.watchers = None
        finally:
            state.exited.set()

    async def _loop(self, state: PodState, *, resumed: bool = False) -> bool:
        """Sync until the pod is done (False), or until a started container needs its exit
        watched and there is no task group for it yet (True); ``resumed``: go on from there,
        waiting first as that sync would have."""
        settled = state.settled
        while True:
            if not resumed:
                state.syncs += 1
                if state.poked:  # a plain flag: this runs on every sync of every pod
                    state.poked = False
                    state.changed = anyio.Event()
                settled = state.settled = await self._sync(state)
                # Every container ready implies settled: the scan runs only then.
                if settled and state.ready_at is None and self._all_ready(state):
                    state.ready_at = self.clock()
                    state.ready.set()
                    log.info("pod.ready", seconds=state.ready_at - state.submitted_at)
                if state.unwatched:
                    return True
                if settled and state.watching == 0:
                    if state.finished_at is None:
                        state.finished_at = self.clock()
                    return False  # nothing runs and nothing will: the worker is done
            resumed = False
            if settled:
                await state.changed.wait()
            elif state.watching == 0 and not state.poked:
                await anyio.sleep(self._resync_delay())
            else:
                with anyio.move_on_after(self._resync_delay()):
                    await state.changed.wait()

    def _all_ready(self, state: PodState) -> bool:
        return all(c.ready for c in state.containers.values())

    def _resync_delay(self) -> float:
        period = self.settings.resync_period
        if self.settings.resync_jitter > 0:
            period += period * self.settings.resync_jitter * self._random.random()
        return period

    async def _sync(self, state: PodState) -> bool:
        """One ``SyncPod``; True when nothing is left to do until a container exits."""
        if self.on_sync is not None:
            await self.on_sync(state.spec)
        if self.runtime is not None and not state.sandbox:
            outcome = await self.runtime.run_sandbox(state.spec)
            if not outcome.ok:
                for name, current in state.containers.items():
                    state.containers[name] = replace(current, message=outcome.message)
                return False
            state.sandbox = True
        for request in state.spec.init_containers:
            if state.containers[request.container].succeeded:
                continue
            settled = await self._container(state, request)
            after = state.containers[request.container]
            if not after.succeeded:
                # A running, waiting or failed init container holds back everything after it;
                # one that failed for good (``Never``) leaves the pod with nothing to do.
                return settled and not after.running
        all_settled = True
        for request in state.spec.containers:
            if not await self._container(state, request):
                all_settled = False
        return all_settled

    # -- one container -----------------------------------------------------------------------

    def _will_restart(self, spec: PodSpec, request: PullRequest, current: ContainerState) -> bool:
        """Whether an exited container is started again (``ShouldContainerBeRestarted``)."""
        term = current.last_termination
        if term is None:
            return True
        if spec.restart_policy is RestartPolicy.NEVER:
            return False
        if request.kind is ContainerKind.INIT or spec.restart_policy is RestartPolicy.ON_FAILURE:
            return term.exit_code != 0
        return True

    async def _container(self, state: PodState, request: PullRequest) -> bool:
        """Bring one container towards running; True when it needs nothing until it exits."""
        current = state.containers[request.container]
        if current.running:
            return True
        exited = current.last_termination is not None
        if exited and not self._will_restart(state.spec, request, current):
            return True
        if exited and self._in_crash_backoff(state, request):
            return False
        if not await self._ensure(state, request):
            return False
        if self.runtime is None:
            # Image-only: a container runs once its image is ready; an init container is done.
            current, now = state.containers[request.container], self.clock()
            if request.kind is ContainerKind.INIT:
                done = Termination(exit_code=0, reason="Completed", started_at=now, finished_at=now)
                current = replace(current, phase=ContainerPhase.TERMINATED, last_termination=done)
            else:
                current = replace(current, phase=ContainerPhase.RUNNING)
            state.containers[request.container] = replace(
                current, reason="", message="", started_at=now
            )
            return True
        return await self._start_container(state, request)

    def _in_crash_backoff(self, state: PodState, request: PullRequest) -> bool:
        """``doBackOff``: a container that exited waits out its backoff; otherwise the restart
        is stamped (``Next`` at the time it finished) and goes ahead."""
        current = state.containers[request.container]
        term = current.last_termination
        assert term is not None
        key = (state.spec.ref.uid, request.container)
        now = self.clock()
        if self.crash_backoff.is_in_backoff_since(key, term.finished_at, now):
            delay = self.crash_backoff.get(key)
            pod = format_pod(state.spec.ref)
            self.recorder.event(
                _object(request),
                EventType.WARNING,
                EventReason.BACK_OFF,
                f"Back-off restarting failed container {request.container} in pod {pod}",
            )
            state.containers[request.container] = replace(
                current,
                phase=ContainerPhase.WAITING,
                reason=CRASH_LOOP_BACK_OFF,
                message=f"back-off {format_go_duration(delay)} restarting failed "
                f"container={request.container} pod={pod}",
                backoff_until=term.finished_at + delay,
            )
            return True
        self.crash_backoff.next(key, term.finished_at)
        return False

    async def _start_container(self, state: PodState, request: PullRequest) -> bool:
        runtime = self.runtime
        assert runtime is not None
        current = state.containers[request.container]
        exited = current.last_termination is not None
        attempt = current.restart_count + (1 if exited else 0)
        try:
            outcome = await runtime.start_container(state.spec, request, current.image_id, attempt)
        except Exception as exc:
            # One pod's surprise must not stop the node (cancellation is no Exception and passes).
            # The message names the error's type only: its text could quote the container's env.
            log.exception("container.start_crashed", container=request.container)
            outcome = StartOutcome(
                reason="RunContainerError", message=f"start failed: {type(exc).__name__}"
            )
        now = self.clock()
        current = state.containers[request.container]
        if outcome.ok:
            state.containers[request.container] = replace(
                current,
                phase=ContainerPhase.RUNNING,
                reason="",
                message="",
                container_id=outcome.container_id,
                started_at=now,
                restart_count=attempt,
                backoff_until=None,
            )
            self._watch(state, request, outcome.container_id)
            return True
        if outcome.container_id:
            # postStart failed: the runtime has killed the container; it exited just now.
            state.containers[request.container] = replace(
                current,
                phase=ContainerPhase.WAITING,
                reason=outcome.reason,
                message=outcome.message,
                container_id=outcome.container_id,
                restart_count=attempt,
                last_termination=Termination(
                    exit_code=137 if outcome.exit_code is None else outcome.exit_code,
                    reason="Error",
                    started_at=now,
                    finished_at=now,
                ),
            )
            _poke(state)  # the PLEG sees it die (ContainerDied): sync again at once
            return False
        state.containers[request.container] = replace(
            current, phase=ContainerPhase.WAITING, reason=outcome.reason, message=outcome.message
        )
        return False

    def _watch(self, state: PodState, request: PullRequest, container_id: str) -> None:
        state.watching += 1
        if state.watchers is None:
            state.unwatched.append((request, container_id))  # the worker opens the group next
        else:
            state.watchers.start_soon(self._wait_exit, state, request, container_id)

    async def _wait_exit(self, state: PodState, request: PullRequest, container_id: str) -> None:
        runtime = self.runtime
        assert runtime is not None
        try:
            code = await runtime.wait_container(state.spec, request, container_id)
        finally:
            state.watching -= 1
        current = state.containers[request.container]
        if current.container_id != container_id or not current.running:
            return
        now = self.clock()
        state.containers[request.container] = replace(
            current,
            phase=ContainerPhase.TERMINATED,
            reason="",
            message="",
            last_termination=Termination(
                exit_code=code,
                reason="Completed" if code == 0 else "Error",
                started_at=current.started_at if current.started_at is not None else now,
                finished_at=now,
            ),
        )
        log.info("container.exited", container=request.container, exit_code=code)
        _poke(state)

    async def _ensure(self, state: PodState, request: PullRequest) -> bool:
        """``EnsureImageExists`` for the container; True when its image is present."""
        current = state.containers[request.container]
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
            # The waiting reason stays until the start's outcome replaces it: upstream's status
            # shows the last sync's error (reasonCache) while the next start is under way.
            state.containers[request.container] = replace(
                current,
                image_id=result.image_ref,
                repo_digest=result.repo_digest,
                attempts=attempts,
                backoff_until=None,
                image_ready=True,
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
        self.recorder.event(
            _object(request), EventType.WARNING, EventReason.FAILED, f"Error: {result.reason}"
        )
        remaining = self.manager.backoff.remaining((request.pod.uid, request.image), self.clock())
        state.containers[request.container] = replace(
            current,
            phase=ContainerPhase.WAITING,
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
        """Wait until the submitted pod ``uid`` has all its containers running."""
        state = self._pods[uid]
        await state.ready.wait()
        return state

    async def wait_terminated(self, uid: str) -> None:
        """Wait until a removed pod's containers are stopped (at once when it has none)."""
        state = self._terminating.get(uid)
        if state is not None:
            await state.terminated.wait()


def _poke(state: PodState) -> None:
    """A container of the pod changed on its own (it exited): the worker syncs at once."""
    state.poked = True
    state.changed.set()


def _object(request: PullRequest) -> ObjectRef:
    return ObjectRef(
        namespace=request.pod.namespace,
        name=request.pod.name,
        uid=request.pod.uid,
        field_path=request.field_path,
    )


def _attempted(result: EnsureResult) -> bool:
    return result.reason is PullReason.ERR_IMAGE_PULL
