"""Pod workers running containers (``engine/workers.py`` over ``runtime/containers.py`` and the
sim handler) in virtual time: crash-loop backoff, restart policies, init containers, lifecycle
hooks, removal and replacement, container config errors, sandboxes and the environment a
container starts with.

Every pod is a real Pod parsed from a manifest and admitted by the ObjectStore, so the
ContainerManager reads env, hooks and annotations from it. Images are present in the fake image
service (engine_fakes) with configs served by a small fake store. Times are exact: trio's
MockClock, resync 10 s without jitter, the crash-loop backoff of ``doBackOff`` (10 s doubling to
300 s, counted from when the container finished, an entry expiring after 600 s untouched). The
upstream texts asserted come from ``pkg/kubelet/kuberuntime`` (``kuberuntime_manager.go``
``doBackOff``, ``kuberuntime_container.go`` ``startContainer``/``killContainer``) and
``pkg/kubelet/lifecycle/handlers.go``.

The last tests pin bugs found while writing these (postStart kills that waited a resync, the 2 s
minimum grace, crash-loop entries of removed or changed containers, and termination of quickly
replaced specs), fixed since.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest
import trio.testing
from engine_fakes import FakeRuntime, make_node, pod
from prometheus_client import CollectorRegistry

from kubelet_sim.config.kubelet import KubeletConfiguration
from kubelet_sim.core.digest import Digest
from kubelet_sim.core.pods import (
    ContainerPhase,
    ContainerState,
    PodSpec,
    PullRequest,
    StartOutcome,
    Termination,
)
from kubelet_sim.engine.workers import EngineSettings, PodState, PullEngine
from kubelet_sim.k8s import ObjectStore, pod_spec
from kubelet_sim.node.builder import Node
from kubelet_sim.runtime.containers import ContainerManager, NodeInfo
from kubelet_sim.runtime.hooks import HookRunner, lifecycle_http_client
from kubelet_sim.runtime.sim import ANNOTATION_PREFIX, SimHandler, SimStatistics
from kubelet_sim.store.records import ImageRecord
from kubelet_sim.telemetry.events import Event, EventRecorder
from kubelet_sim.telemetry.metrics import PullMetrics

pytestmark = pytest.mark.anyio

NAME = "web"
UID = "uid-web"
POD = f"{NAME}_default({UID})"  # format.Pod
IMAGE = "registry.test/app:1"
IMAGE2 = "registry.test/app:2"
ABSENT = "registry.test/absent:1"
IMAGE_IDS = {IMAGE: "sha256:" + "1" * 64, IMAGE2: "sha256:" + "2" * 64}
SLEEP = ["sleep", "infinity"]
IGNORE_SIGTERM = {f"{ANNOTATION_PREFIX}ignore-sigterm.c": "true"}
C = "spec.containers{c}"


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


# -- the world: a node with the container half over the sim handler ----------------------------


class FakeImageConfigs:
    """``ImageConfigSource`` over the fake image service's present images: one config each."""

    def __init__(self, images: FakeRuntime, configs: Mapping[str, Mapping[str, object]]) -> None:
        self.images = images
        self.configs = configs
        self.blobs: dict[Digest, bytes] = {}

    async def lookup(self, ref: str, runtime_handler: str = "") -> ImageRecord | None:
        for (name, handler), status in self.images.images.items():
            if status.image_id != ref or handler != runtime_handler:
                continue
            blob = json.dumps({"config": dict(self.configs.get(name, {"Cmd": SLEEP}))}).encode()
            digest = Digest.from_bytes(blob)
            self.blobs[digest] = blob
            return ImageRecord(
                image_id=ref,
                repo_tags=(name,),
                repo_digests=status.repo_digests,
                manifest_digest=digest,
                config_digest=digest,
                layers=(),
                platform="linux/amd64",
                size=status.size,
                runtime_handler=handler,
                first_used=0.0,
                last_used=0.0,
                pinned=False,
            )
        return None

    async def read_blob(self, digest: Digest, *, max_size: int = 1 << 20) -> bytes:
        return self.blobs[digest]


class RecordingRuntime:
    """The engine's ContainerRuntime port over the ContainerManager, recording each answer of
    ``start_container`` (when, which container, what) so a test can wait for one."""

    def __init__(self, inner: ContainerManager, t0: float) -> None:
        self.inner = inner
        self.t0 = t0
        self.answers: list[tuple[float, str, StartOutcome]] = []
        self._answered = anyio.Event()

    async def wait_answer(self) -> StartOutcome:
        """Wait for the next answer; the engine has stored its state by the time this returns."""
        await self._answered.wait()
        return self.answers[-1][2]

    async def run_sandbox(self, pod: PodSpec) -> StartOutcome:
        return await self.inner.run_sandbox(pod)

    async def start_container(
        self, pod: PodSpec, request: PullRequest, image_ref: str, attempt: int
    ) -> StartOutcome:
        outcome = await self.inner.start_container(pod, request, image_ref, attempt)
        self.answers.append((anyio.current_time() - self.t0, request.container, outcome))
        self._answered.set()
        self._answered = anyio.Event()
        return outcome

    async def wait_container(self, pod: PodSpec, request: PullRequest, container_id: str) -> int:
        return await self.inner.wait_container(pod, request, container_id)

    async def kill_container(
        self,
        pod: PodSpec,
        request: PullRequest,
        container_id: str,
        grace: float,
        *,
        message: str = "",
    ) -> None:
        await self.inner.kill_container(pod, request, container_id, grace, message=message)

    async def remove_pod(self, pod: PodSpec) -> None:
        await self.inner.remove_pod(pod)


@dataclass(frozen=True, slots=True)
class Seen:
    """One recorded event: when (from the world's start), field path, type, reason, message."""

    at: float
    path: str
    type: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Sync:
    """A pod's container states as a sync found them (``on_sync`` runs first in every sync)."""

    at: float
    uid: str
    containers: dict[str, ContainerState]


@dataclass
class World:
    node: Node
    images: FakeRuntime
    containers: ContainerManager
    runtime: RecordingRuntime
    sim: SimHandler
    objects: ObjectStore
    t0: float
    seen: list[Seen] = field(default_factory=list)
    syncs: list[Sync] = field(default_factory=list)

    @property
    def engine(self) -> PullEngine:
        return self.node.engine

    def now(self) -> float:
        return anyio.current_time() - self.t0

    async def until(self, t: float) -> None:
        await anyio.sleep_until(self.t0 + t)

    def apply(self, text: str, *, runtime_handler: str | None = None) -> PodSpec:
        """``kubectl apply`` the manifest; the engine's view of the admitted pod."""
        self.objects.apply_text(text)
        admitted = self.objects.get_pod("default", NAME)
        assert admitted is not None
        return pod_spec(admitted, runtime_handler=runtime_handler)

    async def submit(self, text: str, *, runtime_handler: str | None = None) -> PodSpec:
        spec = self.apply(text, runtime_handler=runtime_handler)
        await self.engine.submit(spec)
        return spec

    def pod(self, uid: str = UID) -> PodState:
        state = self.engine.pod(uid)
        assert state is not None
        return state

    def state(self, container: str = "c", uid: str = UID) -> ContainerState:
        return self.pod(uid).containers[container]

    def events(self, reason: str) -> list[Seen]:
        return [e for e in self.seen if e.reason == reason]

    def times(self, reason: str, path: str = C) -> list[float]:
        return [e.at for e in self.seen if e.reason == reason and e.path == path]

    def in_use(self, image: str) -> int:
        return self.images.in_use.get((IMAGE_IDS[image], ""), 0)


@asynccontextmanager
async def running_world(
    configs: Mapping[str, Mapping[str, object]] | None = None,
) -> AsyncIterator[World]:
    """A running node whose engine runs containers on one sim handler (``sim``, the default)."""
    t0 = anyio.current_time()
    images = FakeRuntime(pull_seconds=0)
    for ref, image_id in IMAGE_IDS.items():
        images.add(ref, image_id=image_id)
    objects = ObjectStore()
    recorder = EventRecorder(clock=anyio.current_time, spam_filter=False)
    sim = SimHandler()
    worlds: list[World] = []

    def on_event(event: Event) -> None:
        worlds[0].seen.append(
            Seen(
                anyio.current_time() - t0,
                event.involved_object.field_path,
                str(event.type),
                str(event.reason),
                event.message,
            )
        )

    async def on_sync(spec: PodSpec) -> None:
        state = worlds[0].engine.pod(spec.ref.uid)
        if state is not None and state.spec is spec:
            worlds[0].syncs.append(
                Sync(anyio.current_time() - t0, spec.ref.uid, dict(state.containers))
            )

    recorder.subscribe(on_event)
    async with lifecycle_http_client() as http:
        manager = ContainerManager(
            {"sim": sim},
            default_handler="sim",
            images=FakeImageConfigs(images, configs or {}),
            objects=objects,
            hooks=HookRunner(http),
            recorder=recorder,
            node=NodeInfo(name="node-1"),
        )
        runtime = RecordingRuntime(manager, t0)
        node = Node.build(
            KubeletConfiguration.default(),
            images,
            recorder,
            PullMetrics(CollectorRegistry()),
            settings=EngineSettings(),
            on_sync=on_sync,
            containers=manager,
            runtime=runtime,
        )
        worlds.append(World(node, images, manager, runtime, sim, objects, t0))
        async with node.running():
            yield worlds[0]


def ctr(
    name: str = "c", command: Sequence[str] | None = SLEEP, *, image: str = IMAGE, **spec: object
) -> dict[str, object]:
    """A container of a manifest; ``spec`` holds further fields by their manifest names."""
    out: dict[str, object] = {"name": name, "image": image}
    if command is not None:
        out["command"] = list(command)
    out.update(spec)
    return out


def manifest(
    *containers: dict[str, object],
    init: Sequence[dict[str, object]] = (),
    policy: str = "Always",
    grace: int = 30,
    annotations: Mapping[str, str] | None = None,
    **spec: object,
) -> str:
    """The Pod ``web`` in ``default`` with UID ``uid-web``, as JSON (which is YAML)."""
    body: dict[str, object] = {
        "restartPolicy": policy,
        "terminationGracePeriodSeconds": grace,
        "containers": list(containers),
        **spec,
    }
    if init:
        body["initContainers"] = list(init)
    meta = {
        "name": NAME,
        "namespace": "default",
        "uid": UID,
        "annotations": dict(annotations or {}),
    }
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body})


def exits(code: int, after: float, container: str = "c") -> dict[str, str]:
    """The sim annotation: the container's process exits with ``code`` after ``after`` seconds."""
    return {f"{ANNOTATION_PREFIX}exit.{container}": f"code={code},after={after:g}"}


def gaps(times: Sequence[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def exec_handler(*command: str) -> dict[str, object]:
    """An exec lifecycle handler."""
    return {"exec": {"command": list(command)}}


def hook(kind: str, handler: Mapping[str, object]) -> dict[str, object]:
    """A container's ``lifecycle`` with one hook (``postStart`` or ``preStop``)."""
    return {kind: dict(handler)}


# -- 1. crash loop ------------------------------------------------------------------------------

# After each restart: (sample time, restart count, back-off shown, when the last run finished).
CRASH_LOOP = [
    (5, 1, "10s", 0.0),
    (15, 2, "20s", 10.0),
    (35, 3, "40s", 30.0),
    (75, 4, "1m20s", 70.0),
    (155, 5, "2m40s", 150.0),
    (315, 6, "5m0s", 310.0),
    (615, 7, "5m0s", 610.0),
    (915, 8, "5m0s", 910.0),
]


@pytest.mark.parametrize(
    ("command", "code"),
    [
        pytest.param(["false"], 1, id="false-exits-1"),
        pytest.param(["sh", "-c", "exit 3"], 3, id="sh-exit-3"),
    ],
)
async def test_crash_loop_restarts_on_the_kubelet_backoff_schedule(
    command: list[str], code: int
) -> None:
    async with running_world() as w:
        await w.submit(manifest(ctr("c", command)))
        shown = []
        for t, _, _, _ in CRASH_LOOP:
            await w.until(t)
            s = w.state()
            shown.append(
                (s.phase, s.reason, s.message, s.restart_count, s.last_termination, s.backoff_until)
            )
        delay_now = w.engine.crash_backoff.get((UID, "c"))
    assert delay_now == 300
    assert shown == [
        (
            ContainerPhase.WAITING,
            "CrashLoopBackOff",
            f"back-off {delay} restarting failed container=c pod={POD}",
            restarts,
            Termination(exit_code=code, reason="Error", started_at=finished, finished_at=finished),
            finished + min(10 * 2 ** (restarts - 1), 300),
        )
        for _, restarts, delay, finished in CRASH_LOOP
    ]
    starts = w.times("Started")
    assert starts[0] == 0
    # doBackOff: the first restart at once at the next sync, then 10 s doubling to 300 s, each
    # counted from when the container finished (here: the moment it started).
    assert gaps(starts) == [0, 10, 20, 40, 80, 160, 300, 300]
    assert w.times("Created") == starts
    # One BackOff per sync in between: every resync period from the first crash on.
    back_offs = w.events("BackOff")
    assert [e.at for e in back_offs] == [float(t) for t in range(0, 911, 10)]
    assert {(e.path, e.type, e.message) for e in back_offs} == {
        (C, "Warning", f"Back-off restarting failed container c in pod {POD}")
    }
    assert {e.reason for e in w.seen} == {"Pulled", "Created", "Started", "BackOff"}


# -- 2. the backoff entry expires after 600 s ----------------------------------------------------


@pytest.mark.parametrize(
    ("after", "until", "starts", "back_offs", "delay", "last"),
    [
        pytest.param(
            700, 2150, [0, 700, 1400, 2100], [], 10, (1400, 2100), id="ran-700s-restarts-at-once"
        ),
        pytest.param(
            100,
            700,
            [0, 100, 210, 330, 470, 650],
            [200, 310, 320, 430, 440, 450, 460, *range(570, 641, 10)],
            160,
            (470, 570),
            id="ran-100s-keeps-doubling",
        ),
    ],
)
async def test_crash_backoff_entry_expires_after_ten_minutes(
    after: float,
    until: float,
    starts: list[float],
    back_offs: list[float],
    delay: float,
    last: tuple[float, float],
) -> None:
    async with running_world() as w:
        await w.submit(manifest(ctr(), annotations=exits(1, after)))
        await w.until(until)
        s = w.state()
        delay_now = w.engine.crash_backoff.get((UID, "c"))
    assert delay_now == delay
    assert w.times("Started") == starts
    assert w.times("BackOff") == back_offs
    assert s.phase is ContainerPhase.RUNNING
    assert s.restart_count == len(starts) - 1
    assert s.last_termination == Termination(1, "Error", *last)


# -- 3. restartPolicy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "command", "starts", "phase", "reason", "code", "finished_at"),
    [
        pytest.param(
            "Always", ["true"], [0, 0, 10, 30], "waiting", "CrashLoopBackOff", 0, None,
            id="always-restarts-after-exit-0",
        ),
        pytest.param(
            "OnFailure", ["true"], [0], "terminated", "", 0, 0.0, id="on-failure-exit-0-settles"
        ),
        pytest.param(
            "OnFailure", ["false"], [0, 0, 10, 30], "waiting", "CrashLoopBackOff", 1, None,
            id="on-failure-exit-1-restarts",
        ),
        pytest.param(
            "Never", ["sh", "-c", "exit 7"], [0], "terminated", "", 7, 0.0,
            id="never-exit-7-not-restarted",
        ),
        pytest.param("Never", ["true"], [0], "terminated", "", 0, 0.0, id="never-exit-0"),
    ],
)  # fmt: skip
async def test_restart_policy_decides_what_is_restarted(
    policy: str,
    command: list[str],
    starts: list[float],
    phase: str,
    reason: str,
    code: int,
    finished_at: float | None,
) -> None:
    async with running_world() as w:
        await w.submit(manifest(ctr("c", command), policy=policy))
        await w.until(35)
        s = w.state()
        state = w.pod()
    assert w.times("Started") == starts
    last = starts[-1]
    assert (s.phase, s.reason, s.restart_count) == (phase, reason, len(starts) - 1)
    term_reason = "Completed" if code == 0 else "Error"
    assert s.last_termination == Termination(code, term_reason, last, last)
    # A container that is not restarted leaves the worker nothing to do: it ends after the sync
    # that saw the exit.
    assert state.finished_at == finished_at
    if finished_at is not None:
        assert state.syncs == 2
        assert w.events("BackOff") == []


# -- 4. init containers ---------------------------------------------------------------------------


async def test_init_containers_run_in_order_to_completion_before_app_containers() -> None:
    text = manifest(
        ctr("c"),
        ctr("side"),
        init=[ctr("i0", ["sleep", "5"]), ctr("i1", ["sh", "-c", "sleep 3"])],
    )
    async with running_world() as w:
        await w.submit(text)
        waiting: list[tuple[str, str]] = []
        for t in (2, 6):
            await w.until(t)
            waiting += [(w.state(n).phase, w.state(n).reason) for n in ("c", "side")]
        i0_at_6 = w.state("i0")
        await w.until(10)
        i1 = w.state("i1")
        ready_at = w.pod().ready_at
    assert waiting == [(ContainerPhase.WAITING, "PodInitializing")] * 4
    assert [(e.at, e.path) for e in w.events("Started")] == [
        (0.0, "spec.initContainers{i0}"),
        (5.0, "spec.initContainers{i1}"),
        (8.0, "spec.containers{c}"),
        (8.0, "spec.containers{side}"),
    ]
    assert (i0_at_6.phase, i0_at_6.last_termination) == (
        ContainerPhase.TERMINATED,
        Termination(0, "Completed", 0.0, 5.0),
    )
    assert (i1.phase, i1.last_termination) == (
        ContainerPhase.TERMINATED,
        Termination(0, "Completed", 5.0, 8.0),
    )
    assert ready_at == 8.0


@pytest.mark.parametrize(
    ("policy", "starts", "phase", "reason", "finished_at"),
    [
        pytest.param(
            "Always", [0, 0, 10, 30], "waiting", "CrashLoopBackOff", None, id="always-restarts"
        ),
        pytest.param(
            "OnFailure", [0, 0, 10, 30], "waiting", "CrashLoopBackOff", None,
            id="on-failure-restarts",
        ),
        pytest.param("Never", [0], "terminated", "", 0.0, id="never-fails-the-pod"),
    ],
)  # fmt: skip
async def test_a_failing_init_container_restarts_unless_never_and_blocks_the_app(
    policy: str, starts: list[float], phase: str, reason: str, finished_at: float | None
) -> None:
    text = manifest(ctr("c"), init=[ctr("i0", ["false"])], policy=policy)
    async with running_world() as w:
        await w.submit(text)
        await w.until(35)
        init, app, state = w.state("i0"), w.state("c"), w.pod()
    path = "spec.initContainers{i0}"
    assert w.times("Started", path) == starts
    assert w.times("Started") == []
    assert (init.phase, init.reason, init.restart_count) == (phase, reason, len(starts) - 1)
    assert init.last_termination == Termination(1, "Error", starts[-1], starts[-1])
    assert (app.phase, app.reason) == (ContainerPhase.WAITING, "PodInitializing")
    assert state.finished_at == finished_at
    if reason:
        assert init.message == f"back-off 40s restarting failed container=i0 pod={POD}"
        assert {e.message for e in w.seen if e.reason == "BackOff" and e.path == path} == {
            f"Back-off restarting failed container i0 in pod {POD}"
        }


# -- 5. postStart ----------------------------------------------------------------------------------

POST_START_FALSE = (
    'Exec lifecycle hook ([/bin/false]) for Container "c" in Pod "web_default(uid-web)" failed'
    " - error: command '/bin/false' exited with 1: , message: \"\""
)


async def test_a_failed_post_start_hook_kills_the_container_which_then_crash_loops() -> None:
    async with running_world() as w:
        await w.submit(manifest(ctr(lifecycle=hook("postStart", exec_handler("/bin/false")))))
        await w.until(100)
        s = w.state()
    first = [(e.at, e.type, e.reason, e.message) for e in w.seen[:5]]
    assert first == [
        (0.0, "Normal", "Pulled", f'Container image "{IMAGE}" already present on machine'),
        (0.0, "Normal", "Created", "Created container c"),
        (0.0, "Normal", "Started", "Started container c"),
        (0.0, "Warning", "FailedPostStartHook", "PostStartHook failed"),  # fixed text upstream
        (0.0, "Normal", "Killing", "FailedPostStartHook"),
    ]
    # The runtime's answer: the hook's message, the exit code of the stop (SIGTERM honoured).
    at, name, outcome = w.runtime.answers[0]
    assert (at, name, outcome.reason, outcome.message, outcome.exit_code) == (
        0.0,
        "c",
        "PostStartHookError",
        POST_START_FALSE,
        143,
    )
    # What the next sync found: waiting with the hook's error, the killed run as last state.
    found = w.syncs[1].containers["c"]
    assert (found.phase, found.reason, found.message, found.restart_count) == (
        ContainerPhase.WAITING,
        "PostStartHookError",
        POST_START_FALSE,
        0,
    )
    assert found.last_termination == Termination(143, "Error", 0.0, 0.0)
    # Every attempt fails the same way; between them the crash-loop backoff holds it.
    starts = w.times("Started")
    assert len(starts) == 5
    for reason in ("Created", "FailedPostStartHook", "Killing"):
        assert w.times(reason) == starts
    assert (s.reason, s.restart_count, s.last_termination) == (
        "CrashLoopBackOff",
        4,
        Termination(143, "Error", starts[-1], starts[-1]),
    )
    assert {e.message for e in w.events("BackOff")} == {
        f"Back-off restarting failed container c in pod {POD}"
    }


async def test_a_post_start_kill_restarts_like_a_crash_at_once_then_on_the_backoff() -> None:
    # Upstream the killed container is a ContainerDied event for the PLEG, which syncs the pod at
    # once; doBackOff then finds no entry and restarts it, exactly as after a crash.
    async with running_world() as w:
        await w.submit(manifest(ctr(lifecycle=hook("postStart", exec_handler("/bin/false")))))
        await w.until(100)
    assert w.times("Started") == [0, 0, 10, 30, 70]


async def test_a_sleeping_post_start_hook_delays_running_by_its_seconds() -> None:
    async with running_world() as w:
        await w.submit(manifest(ctr(lifecycle=hook("postStart", {"sleep": {"seconds": 5}}))))
        await w.until(3)
        during = w.state()
        await w.until(6)
        after, state = w.state(), w.pod()
    assert w.times("Started") == [0.0]  # StartContainer returned; the hook then held the worker
    assert during.phase is ContainerPhase.WAITING
    assert w.runtime.answers[0][0] == 5.0
    assert after.phase is ContainerPhase.RUNNING
    assert state.ready_at == 5.0
    assert w.events("FailedPostStartHook") == []


class _Hooked(BaseHTTPRequestHandler):
    server: _HookServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


class _HookServer(ThreadingHTTPServer):
    daemon_threads = True
    paths: list[str]


@pytest.fixture
def hook_server() -> Iterator[_HookServer]:
    httpd = _HookServer(("127.0.0.1", 0), _Hooked)
    httpd.paths = []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(
    "answered", [pytest.param(True, id="answered"), pytest.param(False, id="refused")]
)
async def test_http_get_post_start_against_a_loopback_server(
    hook_server: _HookServer, answered: bool
) -> None:
    port = int(hook_server.server_address[1]) if answered else closed_port()
    action = {"host": "127.0.0.1", "port": port, "path": "/started"}
    async with running_world() as w:
        await w.submit(manifest(ctr(lifecycle=hook("postStart", {"httpGet": action}))))
        with anyio.fail_after(5):
            outcome = await w.runtime.wait_answer()
        s = w.state()
    reasons = [e.reason for e in w.seen]
    if answered:
        assert outcome.ok
        assert hook_server.paths == ["/started"]
        assert s.phase is ContainerPhase.RUNNING
        assert reasons == ["Pulled", "Created", "Started"]
        return
    assert hook_server.paths == []
    prefix = (
        f'HTTP lifecycle hook (/started) for Container "c" in Pod "{POD}" failed - error: '
        f'Get "http://127.0.0.1:{port}/started": '
    )
    assert outcome.message.startswith(prefix)
    assert (s.phase, s.reason, s.message) == (
        ContainerPhase.WAITING,
        "PostStartHookError",
        outcome.message,
    )
    assert reasons == ["Pulled", "Created", "Started", "FailedPostStartHook", "Killing"]
    assert [e.message for e in w.seen[3:]] == ["PostStartHook failed", "FailedPostStartHook"]


# -- 6. pod removal ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pre_stop", "grace", "annotations", "terminated_at", "pre_stop_failed"),
    [
        pytest.param(
            exec_handler("sleep", "3"), 30, {}, 103.0, False, id="pre-stop-3s-then-sigterm",
        ),
        pytest.param(
            exec_handler("sleep", "3"), 30, IGNORE_SIGTERM, 130.0, False,
            id="pre-stop-3s-then-sigkill-at-the-grace-period",
        ),
        pytest.param(None, 10, IGNORE_SIGTERM, 110.0, False, id="sigkill-after-10s-grace"),
        pytest.param(None, 30, {}, 100.0, False, id="sigterm-honoured"),
        pytest.param(exec_handler("/bin/false"), 30, {}, 100.0, True, id="pre-stop-fails"),
        pytest.param(
            exec_handler("sleep", "40"), 30, IGNORE_SIGTERM, 132.0, False,
            id="pre-stop-outlasting-the-grace-period-leaves-2s",
        ),
        pytest.param({"sleep": {"seconds": 5}}, 30, {}, 105.0, False, id="sleep-pre-stop"),
    ],
)  # fmt: skip
async def test_removal_runs_pre_stop_then_stops_within_the_grace_period(
    pre_stop: dict[str, object] | None,
    grace: int,
    annotations: dict[str, str],
    terminated_at: float,
    pre_stop_failed: bool,
) -> None:
    async with running_world() as w:
        c = ctr() if pre_stop is None else ctr(lifecycle=hook("preStop", pre_stop))
        await w.submit(manifest(c, grace=grace, annotations=annotations))
        await w.until(100)
        assert await w.engine.remove(UID)
        assert w.engine.pod(UID) is None
        during = None
        if terminated_at > 100:
            await w.until(100.5)
            during = w.in_use(IMAGE)  # still in use while the container stops
        await w.engine.wait_terminated(UID)
        stopped = w.now()
    assert stopped == terminated_at
    assert during == (1 if terminated_at > 100 else None)
    assert [(e.at, e.type, e.message) for e in w.events("Killing")] == [
        (100.0, "Normal", "Stopping container c")
    ]
    failed = [(e.at, e.path, e.type, e.message) for e in w.events("FailedPreStopHook")]
    assert failed == ([(100.0, C, "Warning", "PreStopHook failed")] if pre_stop_failed else [])
    assert w.in_use(IMAGE) == 0
    assert w.sim.statistics() == SimStatistics(sandboxes=0, containers=0)
    assert w.containers.started(UID, "c") is None


async def test_removal_stops_every_container_in_parallel() -> None:
    annotations = {**IGNORE_SIGTERM, f"{ANNOTATION_PREFIX}ignore-sigterm.side": "true"}
    async with running_world() as w:
        await w.submit(manifest(ctr("c"), ctr("side"), grace=20, annotations=annotations))
        await w.until(10)
        await w.engine.remove(UID)
        await w.engine.wait_terminated(UID)
        stopped = w.now()
    assert stopped == 30.0  # not 50: each stop has its own 20 s
    # KillPod: one goroutine per container (their order is the scheduler's).
    assert sorted((e.at, e.path) for e in w.events("Killing")) == [
        (10.0, C),
        (10.0, "spec.containers{side}"),
    ]


@pytest.mark.parametrize("grace", [pytest.param(1, id="grace-1"), pytest.param(0, id="grace-0")])
async def test_removal_gives_at_least_the_minimum_grace_period(grace: int) -> None:
    async with running_world() as w:
        await w.submit(manifest(ctr(), grace=grace, annotations=IGNORE_SIGTERM))
        await w.until(100)
        await w.engine.remove(UID)
        await w.engine.wait_terminated(UID)
        stopped = w.now()
    assert stopped == 102.0


async def test_removing_a_pod_forgets_its_crash_loop_backoff() -> None:
    async with running_world() as w:
        await w.submit(manifest(ctr("c", ["false"])))
        await w.until(35)
        assert (UID, "c") in w.engine.crash_backoff
        await w.engine.remove(UID)
        await w.engine.wait_terminated(UID)
    assert (UID, "c") not in w.engine.crash_backoff


# -- 7. a changed spec for the same UID -----------------------------------------------------------


async def test_a_changed_spec_terminates_the_old_containers_before_starting_the_new() -> None:
    old = manifest(ctr(image=IMAGE), grace=5, annotations=IGNORE_SIGTERM)
    new = manifest(ctr(image=IMAGE2), grace=5, annotations=IGNORE_SIGTERM)
    async with running_world() as w:
        await w.submit(old)
        await w.until(50)
        await w.submit(new)
        await w.until(52)
        meanwhile = (w.state(), w.sim.statistics(), w.in_use(IMAGE))
        await w.until(60)
        s = w.state()
        started = w.containers.started(UID, "c")
    assert [(e.at, e.message) for e in w.events("Killing")] == [(50.0, "Stopping container c")]
    assert meanwhile[0].phase is ContainerPhase.WAITING
    assert meanwhile[1:] == (SimStatistics(sandboxes=1, containers=1), 1)  # the old one, stopping
    assert w.times("Started") == [0.0, 55.0]
    assert [(e.at, e.message) for e in w.events("Pulled")] == [
        (0.0, f'Container image "{IMAGE}" already present on machine'),
        (55.0, f'Container image "{IMAGE2}" already present on machine'),
    ]
    assert (s.phase, s.image_id, s.restart_count) == (
        ContainerPhase.RUNNING,
        IMAGE_IDS[IMAGE2],
        0,
    )
    assert started is not None
    assert started.container_id == s.container_id
    assert w.sim.statistics() == SimStatistics(sandboxes=1, containers=1)
    assert (w.in_use(IMAGE), w.in_use(IMAGE2)) == (0, 1)


async def test_a_changed_container_backs_off_afresh() -> None:
    async with running_world() as w:
        await w.submit(manifest(ctr("c", ["false"], image=IMAGE)))
        await w.until(405)
        assert w.state().message.startswith("back-off 5m0s ")
        await w.submit(manifest(ctr("c", ["false"], image=IMAGE2)))
        await w.until(410)
        s = w.state()
    assert [t for t in w.times("Started") if t >= 405] == [405.0, 405.0]
    assert (s.reason, s.message, s.restart_count) == (
        "CrashLoopBackOff",
        f"back-off 10s restarting failed container=c pod={POD}",
        1,
    )


async def test_two_quick_spec_changes_leave_the_newest_running() -> None:
    async with running_world() as w:
        await w.submit(manifest(ctr(image=IMAGE), annotations=IGNORE_SIGTERM))
        await w.until(50)
        await w.submit(manifest(ctr(image=IMAGE2), annotations=IGNORE_SIGTERM))
        await w.until(51)
        await w.submit(manifest(ctr(image=IMAGE), annotations=IGNORE_SIGTERM))
        await w.until(100)
        s = w.state()
    assert (s.phase, s.image_id) == (ContainerPhase.RUNNING, IMAGE_IDS[IMAGE])
    assert w.times("Started") == [0.0, 80.0]  # the first pod had its 30 s grace period
    assert w.sim.statistics() == SimStatistics(sandboxes=1, containers=1)


async def test_removal_right_after_a_spec_change_keeps_the_grace_period() -> None:
    async with running_world() as w:
        await w.submit(manifest(ctr(image=IMAGE), annotations=IGNORE_SIGTERM))
        await w.until(50)
        await w.submit(manifest(ctr(image=IMAGE2), annotations=IGNORE_SIGTERM))
        await w.until(51)
        await w.engine.remove(UID)
        await w.engine.wait_terminated(UID)
        stopped, in_use = w.now(), w.in_use(IMAGE)
    assert (stopped, in_use) == (80.0, 0)


# -- 8. CreateContainerConfigError -------------------------------------------------------------------


async def test_a_missing_secret_is_create_container_config_error_until_applied() -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "x", "key": "token"}}}]
    async with running_world() as w:
        await w.submit(manifest(ctr(env=env)))
        await w.until(5)
        before = w.state()
        await w.until(25)
        w.objects.apply_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "x", "namespace": "default"},
                    "stringData": {"token": "s3cr3t"},
                }
            )
        )
        await w.until(35)
        after = w.state()
        started = w.containers.started(UID, "c")
    assert (before.phase, before.reason, before.message) == (
        ContainerPhase.WAITING,
        "CreateContainerConfigError",
        'secret "x" not found',
    )
    assert before.last_termination is None
    assert [(e.at, e.type, e.message) for e in w.events("Failed")] == [
        (t, "Warning", 'Error: secret "x" not found') for t in (0.0, 10.0, 20.0)
    ]  # retried each sync, with no crash-loop backoff (the container never ran)
    assert w.times("Started") == [30.0]
    assert (after.phase, after.restart_count) == (ContainerPhase.RUNNING, 0)
    assert started is not None
    assert ("TOKEN", "s3cr3t") in started.env
    assert started.secret_names == frozenset({"TOKEN"})


# -- 9. sandbox ------------------------------------------------------------------------------------


async def test_a_handler_without_runtime_fails_the_sandbox_before_any_pull() -> None:
    text = manifest(ctr(image=ABSENT), init=[ctr("i0", ["true"], image=ABSENT)])
    async with running_world() as w:
        await w.submit(text, runtime_handler="gvisor")
        await w.until(25)
        states = {name: (s.phase, s.reason) for name, s in w.pod().containers.items()}
    message = (
        "Failed to create pod sandbox: rpc error: code = Unknown desc = "
        'failed to get sandbox runtime: no runtime for "gvisor" is configured'
    )
    assert [(e.at, e.path, e.type, e.reason, e.message) for e in w.seen] == [
        (t, "", "Warning", "FailedCreatePodSandBox", message) for t in (0.0, 10.0, 20.0)
    ]
    assert w.images.calls == []  # the sandbox comes first: nothing pulled
    assert w.runtime.answers == []
    assert states == {
        "i0": (ContainerPhase.WAITING, "ContainerCreating"),
        "c": (ContainerPhase.WAITING, "PodInitializing"),
    }
    assert w.sim.statistics() == SimStatistics(sandboxes=0, containers=0)


# -- 10. the environment a container starts with --------------------------------------------------


async def test_started_container_has_the_final_env_hostname_and_argv() -> None:
    configs = {
        IMAGE: {
            "Entrypoint": ["/entry"],
            "Cmd": ["serve"],
            "Env": ["PATH=/custom/bin", "FROM_IMAGE=yes", "SHARED=image"],
        }
    }
    env = [
        {"name": "SHARED", "value": "container"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
    ]
    env_from = [{"prefix": "S_", "secretRef": {"name": "s"}}]
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": "default"},
        "stringData": {"token": "t0k3n"},
    }
    async with running_world(configs) as w:
        w.objects.apply_text(json.dumps(secret))
        await w.submit(
            manifest(ctr("c", None, env=env, envFrom=env_from), enableServiceLinks=False)
        )
        await w.until(1)
        started = w.containers.started(UID, "c")
        s = w.state()
    assert started is not None
    assert started.container_id == s.container_id
    assert started.hostname == NAME
    assert started.argv == ("/entry", "serve")  # no command or args: the image's Entrypoint+Cmd
    # containerd's order: PATH and HOSTNAME, the image's Env, then the kubelet's variables, a
    # later one replacing an earlier one in place; the kubernetes Service is always there.
    assert started.env == (
        ("PATH", "/custom/bin"),
        ("HOSTNAME", NAME),
        ("FROM_IMAGE", "yes"),
        ("SHARED", "container"),
        ("S_token", "t0k3n"),
        ("TOKEN", "t0k3n"),
        ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
        ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
        ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
        ("KUBERNETES_PORT_443_TCP_PORT", "443"),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
    )
    assert started.secret_names == frozenset({"S_token", "TOKEN"})


# -- 11. image-only mode ---------------------------------------------------------------------------


async def test_without_a_runtime_the_worker_ends_once_images_are_ready() -> None:
    h = make_node(FakeRuntime(pull_seconds=2))
    start = anyio.current_time()
    async with h.node.running():
        await h.node.engine.submit(pod("p", "registry.test/app:1", init=["registry.test/init:1"]))
        state = await h.node.engine.wait_ready("uid-p")
        await anyio.sleep(100)
    assert state.ready_at is not None
    assert state.ready_at - start == 4.0
    assert state.finished_at == state.ready_at
    assert state.syncs == 1  # nothing left to do: no resync, no watcher
    init, app = state.containers["init0"], state.containers["c0"]
    assert init.phase is ContainerPhase.TERMINATED
    assert init.last_termination is not None
    assert (init.last_termination.exit_code, init.last_termination.reason) == (0, "Completed")
    assert app.phase is ContainerPhase.RUNNING
    assert app.container_id == ""
