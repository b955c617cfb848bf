"""The pull engine in virtual time (trio's MockClock) over a fake runtime: policy, pullers,
throttle, backoff schedule, events, container states and metrics."""

from __future__ import annotations

import itertools

import anyio
import pytest
import trio.testing
from engine_fakes import FakeRuntime, make_node, pod

from kubelet_sim.config.kubelet import KubeletConfiguration
from kubelet_sim.core.pods import ContainerPhase
from kubelet_sim.core.policy import PullPolicy
from kubelet_sim.engine.manager import PULL_HISTORY
from kubelet_sim.engine.workers import EngineSettings
from kubelet_sim.errors import PullReason

pytestmark = pytest.mark.anyio

BAD = "registry.test/team/missing:1.0"
BAD_REF = "registry.test/team/missing:1.0"


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def parallel(
    max_parallel: int | None = None, qps: float = 0, burst: int = 10
) -> KubeletConfiguration:
    return KubeletConfiguration.default().with_overrides(
        serialize_image_pulls=False,
        max_parallel_image_pulls=max_parallel,
        registry_pull_qps=qps,
        registry_burst=burst,
    )


async def test_backoff_schedule_is_exact_with_events_and_reasons() -> None:
    h = make_node(FakeRuntime(pull_seconds=0, failing={BAD_REF: 10**6}))
    start = anyio.current_time()
    async with h.node.running():
        await h.node.engine.submit(pod("p", BAD))
        states: list[tuple[float, str, str]] = []
        for _ in range(100):
            await anyio.sleep(10)
            c = h.node.engine.pod("uid-p").containers["c0"]  # type: ignore[union-attr]
            states.append((anyio.current_time() - start, c.reason, c.message))
            if anyio.current_time() - start > 920:
                break
    attempts = [t - start for t, _ in h.runtime.calls]
    gaps = [round(b - a) for a, b in itertools.pairwise(attempts)]
    assert gaps[:7] == [10, 20, 40, 80, 160, 300, 300]
    # Between attempts the container shows ImagePullBackOff with the previous error appended.
    backoff_states = [s for s in states if s[1] == PullReason.IMAGE_PULL_BACKOFF]
    assert backoff_states
    assert backoff_states[0][2].startswith(f'Back-off pulling image "{BAD}": ErrImagePull: ')
    assert {s[1] for s in states} == {"ErrImagePull", "ImagePullBackOff"}
    reasons = h.reasons("spec.containers{c0}")
    assert reasons[:3] == ["Pulling", "Failed", "Failed"]  # Failed to pull..., Error: ErrImagePull
    assert "BackOff" in reasons
    back_off_msgs = {m for _, _, r, m in h.emitted if r == "BackOff"}
    assert back_off_msgs == {f'Back-off pulling image "{BAD}"'}
    failed = [m for _, _, r, m in h.emitted if r == "Failed"]
    assert failed[0].startswith(f'Failed to pull image "{BAD}": rpc error: code = Unknown desc =')
    assert failed[1] == "Error: ErrImagePull"
    assert "Error: ImagePullBackOff" in failed


async def test_backoff_resets_after_600s_quiet() -> None:
    h = make_node(FakeRuntime(pull_seconds=0, failing={BAD_REF: 10**6}))
    request = pod("p", BAD).containers[0]
    manager = h.node.manager
    key = (request.pod.uid, request.image)
    async with h.node.running():
        assert (await manager.ensure_image(request)).reason == PullReason.ERR_IMAGE_PULL
        await anyio.sleep(10)
        assert (await manager.ensure_image(request)).reason == PullReason.ERR_IMAGE_PULL
        assert manager.backoff.get(key) == 20
        await anyio.sleep(19.5)
        assert (await manager.ensure_image(request)).reason == PullReason.IMAGE_PULL_BACKOFF
        await anyio.sleep(601)
        assert (await manager.ensure_image(request)).reason == PullReason.ERR_IMAGE_PULL
        assert manager.backoff.get(key) == 10


async def test_retry_after_expiry_succeeds_and_container_becomes_ready() -> None:
    h = make_node(FakeRuntime(pull_seconds=1, failing={BAD_REF: 2}))
    async with h.node.running():
        await h.node.engine.submit(pod("p", BAD))
        with anyio.fail_after(1000):
            state = await h.node.engine.wait_ready("uid-p")
    c = state.containers["c0"]
    assert c.phase is ContainerPhase.RUNNING
    assert c.attempts == 3
    assert c.image_id.startswith("sha256:")
    assert c.repo_digest == f"{BAD_REF}@x"
    assert h.runtime.in_use[(c.image_id, "")] == 1


async def test_serial_puller_is_fifo_one_at_a_time() -> None:
    h = make_node(FakeRuntime(pull_seconds=5))
    images = [f"registry.test/app{i}:1.0" for i in range(6)]
    async with h.node.running():
        for i, image in enumerate(images):
            await h.node.engine.submit(pod(f"p{i}", image))
        with anyio.fail_after(1000):
            for i in range(6):
                await h.node.engine.wait_ready(f"uid-p{i}")
    assert [name for _, name in h.runtime.calls] == images
    assert h.runtime.peak == 1
    assert h.node.peak_in_flight == 1
    # The last pod waited for five pulls: the Pulled event says so.
    pulled = [m for _, _, r, m in h.emitted if r == "Pulled" and "app5" in m]
    assert pulled == [
        'Successfully pulled image "registry.test/app5:1.0" in 5s (30s including waiting). '
        "Image size: 1234 bytes."
    ]


@pytest.mark.parametrize(
    ("max_parallel", "pods", "expected_peak"),
    [
        pytest.param(2, 7, 2, id="max-2"),
        pytest.param(4, 9, 4, id="max-4"),
        pytest.param(None, 6, 6, id="unlimited"),
    ],
)
async def test_parallel_puller_caps_observed_in_flight(
    max_parallel: int | None, pods: int, expected_peak: int
) -> None:
    h = make_node(FakeRuntime(pull_seconds=3), config=parallel(max_parallel))
    async with h.node.running():
        for i in range(pods):
            await h.node.engine.submit(pod(f"p{i}", f"registry.test/app{i}:1.0"))
        with anyio.fail_after(1000):
            for i in range(pods):
                await h.node.engine.wait_ready(f"uid-p{i}")
    assert h.runtime.peak == expected_peak
    assert h.node.peak_in_flight == expected_peak


async def test_one_pod_never_pulls_two_images_at_once_and_init_first() -> None:
    h = make_node(FakeRuntime(pull_seconds=2), config=parallel(None))
    spec = pod(
        "p",
        "registry.test/app:1",
        "registry.test/sidecar:1",
        init=["registry.test/init-a:1", "registry.test/init-b:1"],
    )
    async with h.node.running():
        state = await h.node.engine.submit(spec)
        assert state.containers["c0"].reason == "PodInitializing"
        assert state.containers["init0"].reason == "ContainerCreating"
        await h.node.engine.wait_ready("uid-p")
    assert [n for _, n in h.runtime.calls] == [
        "registry.test/init-a:1",
        "registry.test/init-b:1",
        "registry.test/app:1",
        "registry.test/sidecar:1",
    ]
    assert h.runtime.peak == 1


async def test_failing_init_container_blocks_app_containers() -> None:
    h = make_node(FakeRuntime(pull_seconds=0, failing={BAD_REF: 10**6}))
    async with h.node.running():
        await h.node.engine.submit(pod("p", "registry.test/app:1", init=[BAD]))
        await anyio.sleep(100)
        state = h.node.engine.pod("uid-p")
        assert state is not None
        assert state.containers["c0"].reason == "PodInitializing"
    assert all(name == BAD_REF for _, name in h.runtime.calls)


async def test_qps_throttle_rejects_without_waiting_then_backoff_recovers() -> None:
    h = make_node(FakeRuntime(pull_seconds=1), config=parallel(None, qps=1, burst=2))
    async with h.node.running():
        for i in range(4):
            await h.node.engine.submit(pod(f"p{i}", f"registry.test/app{i}:1.0"))
        await anyio.sleep(0.5)
        reasons = sorted(
            h.node.engine.pod(f"uid-p{i}").containers["c0"].reason  # type: ignore[union-attr]
            for i in range(4)
        )
        assert reasons == ["ContainerCreating", "ContainerCreating", "ErrImagePull", "ErrImagePull"]
        failed = [m for _, _, r, m in h.emitted if r == "Failed" and "QPS" in m]
        assert len(failed) == 2
        assert all(m.endswith(": pull QPS exceeded") for m in failed)
        refused = [
            a
            for i in range(4)
            for a in h.node.manager.pull_history(f"uid-p{i}", f"registry.test/app{i}:1.0")
        ]
        assert [(a.cause, a.step) for a in refused] == [("qps", "not started")] * 2
        with anyio.fail_after(100):
            for i in range(4):
                await h.node.engine.wait_ready(f"uid-p{i}")
    assert len(h.runtime.calls) == 4
    assert h.node.runner.throttle is not None
    assert h.node.runner.throttle.rejected == 2


async def test_never_policy_absent_fails_without_backoff_present_is_used() -> None:
    h = make_node(FakeRuntime(pull_seconds=0))
    h.runtime.add("registry.test/present:1")
    async with h.node.running():
        await h.node.engine.submit(pod("a", "registry.test/absent:1", policy=PullPolicy.NEVER))
        await h.node.engine.submit(pod("b", "registry.test/present:1", policy=PullPolicy.NEVER))
        await h.node.engine.wait_ready("uid-b")
        await anyio.sleep(35)
        absent = h.node.engine.pod("uid-a").containers["c0"]  # type: ignore[union-attr]
    assert absent.reason == "ErrImageNeverPull"
    assert absent.message == (
        'Container image "registry.test/absent:1" is not present with pull policy of Never'
    )
    assert h.runtime.calls == []
    assert len(h.node.manager.backoff) == 0
    never = [m for _, _, r, m in h.emitted if r == "ErrImageNeverPull"]
    assert len(never) == 4  # every sync, no backoff
    present = [m for _, _, r, m in h.emitted if r == "Pulled"]
    assert present == ['Container image "registry.test/present:1" already present on machine']


async def test_if_not_present_hits_cache_always_pulls_again() -> None:
    h = make_node(FakeRuntime(pull_seconds=1))
    image = "registry.test/app:2.0"
    async with h.node.running():
        await h.node.engine.submit(pod("first", image))
        await h.node.engine.wait_ready("uid-first")
        await h.node.engine.submit(pod("second", image))
        await h.node.engine.wait_ready("uid-second")
        await h.node.engine.submit(pod("third", image, policy=PullPolicy.ALWAYS))
        await h.node.engine.wait_ready("uid-third")
    assert len(h.runtime.calls) == 2
    sample = h.registry.get_sample_value
    labels = {"pull_policy": "ifnotpresent", "present_locally": "true", "pull_required": "false"}
    assert sample("kubelet_image_manager_ensure_image_requests_total", labels) == 1
    labels = {"pull_policy": "always", "present_locally": "unknown", "pull_required": "true"}
    assert sample("kubelet_image_manager_ensure_image_requests_total", labels) == 1
    assert sample("kubelet_sim_image_cache_hits_total") == 1
    assert sample("kubelet_runtime_operations_total", {"operation_type": "pull_image"}) == 2


async def test_invalid_image_name_never_pulls_or_backs_off() -> None:
    h = make_node(FakeRuntime(pull_seconds=0))
    async with h.node.running():
        await h.node.engine.submit(pod("p", "Not_A/Valid::Name"))
        await anyio.sleep(25)
        c = h.node.engine.pod("uid-p").containers["c0"]  # type: ignore[union-attr]
    assert c.reason == "InvalidImageName"
    assert "Not_A/Valid::Name" in c.message
    assert h.runtime.calls == []
    assert len(h.node.manager.backoff) == 0
    inspect = [m for _, _, r, m in h.emitted if r == "InspectFailed"]
    assert inspect[0].startswith('Failed to apply default image tag "Not_A/Valid::Name": ')


async def test_remove_pod_stops_syncing_and_releases_images() -> None:
    h = make_node(FakeRuntime(pull_seconds=0, failing={BAD_REF: 10**6}))
    async with h.node.running():
        await h.node.engine.submit(pod("ok", "registry.test/app:1"))
        state = await h.node.engine.wait_ready("uid-ok")
        await h.node.engine.submit(pod("bad", BAD))
        await anyio.sleep(15)
        calls = len(h.runtime.calls)
        assert await h.node.engine.remove("uid-bad")
        assert await h.node.engine.remove("uid-ok")
        await anyio.sleep(100)
    assert len(h.runtime.calls) == calls
    image_id = state.containers["c0"].image_id
    assert h.runtime.in_use[(image_id, "")] == 0


async def test_resync_jitter_stays_within_upstream_bounds() -> None:
    settings = EngineSettings(resync_period=10, resync_jitter=0.5, seed=7)
    h = make_node(FakeRuntime(pull_seconds=0), settings=settings)
    delays = [h.node.engine._resync_delay() for _ in range(200)]
    assert all(10 <= d <= 15 for d in delays)
    assert max(delays) - min(delays) > 3


def _ensure_samples(h: object) -> dict[tuple[str, str, str], float]:
    registry = h.registry  # type: ignore[attr-defined]
    out: dict[tuple[str, str, str], float] = {}
    for metric in registry.collect():
        if metric.name == "kubelet_image_manager_ensure_image_requests":
            for s in metric.samples:
                if s.name.endswith("_total"):
                    key = (
                        s.labels["pull_policy"],
                        s.labels["present_locally"],
                        s.labels["pull_required"],
                    )
                    out[key] = s.value
    return out


async def test_ensure_image_request_labels_follow_record_ensure_image_request() -> None:
    # recordEnsureImageRequest is deferred: a call that ends in the pre-check (an invalid name,
    # Never with the image absent) leaves both labels "unknown".
    runtime = FakeRuntime(pull_seconds=0)
    runtime.add("registry.test/present:1")
    h = make_node(runtime)
    async with h.node.running():
        await h.node.engine.submit(pod("bad", "Not_A/Valid::Name"))
        await h.node.engine.submit(pod("never", "registry.test/absent:1", policy=PullPolicy.NEVER))
        await h.node.engine.submit(pod("hit", "registry.test/present:1"))
        await h.node.engine.wait_ready("uid-hit")
        await h.node.engine.submit(pod("miss", "registry.test/new:1"))
        await h.node.engine.wait_ready("uid-miss")
        await h.node.engine.remove("uid-bad")
        await h.node.engine.remove("uid-never")
    samples = _ensure_samples(h)
    assert samples[("ifnotpresent", "unknown", "unknown")] >= 1  # the invalid name
    assert samples[("never", "unknown", "unknown")] >= 1
    assert samples[("ifnotpresent", "true", "false")] == 1
    assert samples[("ifnotpresent", "false", "true")] == 1
    assert ("never", "false", "false") not in samples
    assert ("ifnotpresent", "false", "false") not in samples


async def test_image_status_calls_are_runtime_operations() -> None:
    runtime = FakeRuntime(pull_seconds=0)
    runtime.add("registry.test/present:1")
    h = make_node(runtime)
    async with h.node.running():
        await h.node.engine.submit(pod("hit", "registry.test/present:1"))
        await h.node.engine.wait_ready("uid-hit")
        await h.node.engine.submit(
            pod("always", "registry.test/present:1", policy=PullPolicy.ALWAYS)
        )
        await h.node.engine.wait_ready("uid-always")
    sample = h.registry.get_sample_value
    # IfNotPresent asks ImageStatus; Always does not (it pulls).
    assert sample("kubelet_runtime_operations_total", {"operation_type": "image_status"}) == 1
    assert sample("kubelet_runtime_operations_total", {"operation_type": "pull_image"}) == 1
    assert (
        sample("kubelet_runtime_operations_errors_total", {"operation_type": "image_status"})
        is None
    )


def test_an_auth_failure_reads_as_containerd_words_it_once() -> None:
    from kubelet_sim.core.reference import parse_normalized
    from kubelet_sim.engine.manager import cri_error_message
    from kubelet_sim.errors import RegistryAuthError

    ref = parse_normalized("registry.test/team/app:1")
    error = RegistryAuthError(
        "registry registry.test refused the credentials for pulling team/app", status=401
    )
    text = cri_error_message(ref, error)
    assert text.startswith("rpc error: code = Unknown desc = failed to pull and unpack image")
    assert text.count("pull access denied") == 1
    assert text.endswith("refused the credentials for pulling team/app (status=401)")


async def test_each_pull_is_kept_with_its_wait_duration_and_outcome() -> None:
    # What describe and explain show: the last five pulls, not only the last error.
    h = make_node(FakeRuntime(pull_seconds=2, failing={BAD_REF: 6}))
    request = pod("p", BAD).containers[0]
    manager = h.node.manager
    async with h.node.running():
        await h.node.engine.submit(pod("p", BAD))
        with anyio.fail_after(5000):
            await h.node.engine.wait_ready("uid-p")
    history = manager.pull_history("uid-p", BAD)
    assert len(history) == PULL_HISTORY  # six failures and a success: the last five kept
    assert [a.reason for a in history] == ["ErrImagePull"] * 4 + [""]
    assert all(a.seconds == pytest.approx(2) for a in history)
    assert all(a.waited == pytest.approx(0) for a in history)
    assert history[0].message.startswith("rpc error: code = Unknown desc =")
    assert [a.cause for a in history] == ["other"] * 4 + [""]  # the fake's untyped error
    assert all(a.step == "resolving" for a in history[:4])
    assert history[-1].message == ""
    gaps = [round(b.started - a.started) for a, b in itertools.pairwise(history)]
    assert gaps == [
        42,
        82,
        162,
        302,
    ]  # attempts 3-7: backoff 40, 80, 160, 300 s, plus each 2 s pull
    assert manager.pull_in_progress("uid-p", BAD) is None
    manager.forget_pod(request.pod.uid)
    assert manager.pull_history("uid-p", BAD) == ()


async def test_a_pull_in_progress_says_whether_it_waits_or_pulls() -> None:
    h = make_node(FakeRuntime(pull_seconds=5))  # serial: one pull at a time
    manager = h.node.manager
    async with h.node.running():
        await h.node.engine.submit(pod("a", "registry.test/a:1.0"))
        await h.node.engine.submit(pod("b", "registry.test/b:1.0"))
        await anyio.sleep(1)
        first = manager.pull_in_progress("uid-a", "registry.test/a:1.0")
        second = manager.pull_in_progress("uid-b", "registry.test/b:1.0")
        assert first is not None
        assert second is not None
        assert (first.step, second.step) == ("resolving", "waiting for a pull slot")
        assert first.pulling is not None
        assert second.pulling is None
        queued = [(uid, image) for uid, image, _ in manager.pulls_in_progress()]
        assert queued == [("uid-a", "registry.test/a:1.0"), ("uid-b", "registry.test/b:1.0")]
        with anyio.fail_after(100):
            await h.node.engine.wait_ready("uid-b")
    (pulled,) = manager.pull_history("uid-b", "registry.test/b:1.0")
    assert pulled.waited == pytest.approx(5)  # behind a's pull in the serial queue
    assert pulled.seconds == pytest.approx(5)
    assert manager.pull_in_progress("uid-b", "registry.test/b:1.0") is None


async def test_a_cache_hit_answers_for_the_image_as_it_is_now() -> None:
    """The manager keeps the "already present" answer per image with the status it came from:
    an image replaced under the same tag (a new status) gets a new answer, never the old one."""
    h = make_node(FakeRuntime(pull_seconds=0))
    image = "registry.test/app:3.0"
    first = h.runtime.add(image, image_id="sha256:" + "1" * 64)
    manager = h.node.manager
    request = pod("p", image).containers[0]
    async with h.node.running():
        answers = [await manager.ensure_image(request) for _ in range(3)]
        assert {a.image_ref for a in answers} == {first.image_id}
        assert answers[0] is answers[1]  # the same answer, made once
        second = h.runtime.add(image, image_id="sha256:" + "2" * 64)
        replaced = await manager.ensure_image(request)
        assert (replaced.image_ref, replaced.present) == (second.image_id, True)
        manager.forget_pod(request.pod.uid)
        assert not [k for k in manager._objects if k[0] == request.pod.uid]
    pulled = [m for _, _, r, m in h.emitted if r == "Pulled"]
    assert pulled == [f'Container image "{image}" already present on machine'] * 4
    assert h.runtime.calls == []


async def test_the_backoff_gauge_follows_each_change_of_the_backoff() -> None:
    h = make_node(FakeRuntime(pull_seconds=0, failing={BAD_REF: 1}))
    manager = h.node.manager
    failing, fine = pod("p", BAD).containers[0], pod("q", "registry.test/ok:1").containers[0]

    def gauge() -> float | None:
        return h.registry.get_sample_value("kubelet_sim_backoff_entries")

    async with h.node.running():
        assert gauge() == 0.0
        assert (await manager.ensure_image(failing)).reason == PullReason.ERR_IMAGE_PULL
        assert gauge() == 1.0
        assert (await manager.ensure_image(fine)).ok
        assert gauge() == 1.0  # a success collects only entries older than twice the maximum
        await anyio.sleep(2 * manager.backoff.max_duration + 1)
        assert (await manager.ensure_image(pod("r", "registry.test/ok:2").containers[0])).ok
        assert gauge() == 0.0
        h.runtime.failing[BAD_REF + "-x"] = 1
        assert not (await manager.ensure_image(pod("t", BAD + "-x").containers[0])).ok
        assert gauge() == 1.0
        manager.forget_pod("uid-t")
        assert gauge() == 0.0
