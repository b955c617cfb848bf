"""Event reasons, exact upstream message texts, and the EventCorrelator-like recorder."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from kubelet_sim.core.reference import apply_default_image_tag
from kubelet_sim.errors import InvalidImageNameError
from kubelet_sim.telemetry.events import (
    AGGREGATE_PREFIX,
    ContainerSection,
    Event,
    EventReason,
    EventRecorder,
    EventType,
    ObjectRef,
    RecorderStatistics,
    messages,
    redact,
)

T0 = 1_700_000_000.0


class FakeClock:
    """Wall-clock seconds that only move when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


POD = ObjectRef.container("default", "web-1", "uid-1", "app")


def recorder(clock: FakeClock, **kwargs: object) -> EventRecorder:
    return EventRecorder(clock=clock, source_host="node-a", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("member", "value"),
    [
        pytest.param(EventReason.PULLING, "Pulling", id="Pulling"),
        pytest.param(EventReason.PULLED, "Pulled", id="Pulled"),
        pytest.param(EventReason.FAILED, "Failed", id="Failed"),
        pytest.param(EventReason.INSPECT_FAILED, "InspectFailed", id="InspectFailed"),
        pytest.param(EventReason.ERR_IMAGE_NEVER_PULL, "ErrImageNeverPull", id="ErrImageNeverPull"),
        pytest.param(EventReason.BACK_OFF, "BackOff", id="BackOff"),
        pytest.param(
            EventReason.FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET,
            "FailedToRetrieveImagePullSecret",
            id="FailedToRetrieveImagePullSecret",
        ),
        pytest.param(EventReason.IMAGE_GC_FAILED, "ImageGCFailed", id="ImageGCFailed"),
        pytest.param(EventReason.INVALID_DISK_CAPACITY, "InvalidDiskCapacity", id="InvalidDisk"),
        pytest.param(EventReason.FREE_DISK_SPACE_FAILED, "FreeDiskSpaceFailed", id="FreeDisk"),
        pytest.param(EventType.NORMAL, "Normal", id="type-Normal"),
        pytest.param(EventType.WARNING, "Warning", id="type-Warning"),
    ],
)
def test_reason_and_type_spellings(member: str, value: str) -> None:
    assert member == value
    assert str(member) == value


def _invalid(image: str) -> InvalidImageNameError:
    try:
        apply_default_image_tag(image)
    except InvalidImageNameError as exc:
        return exc
    raise AssertionError(f"{image!r} parsed")


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        pytest.param(messages.pulling("busybox"), 'Pulling image "busybox"', id="pulling"),
        pytest.param(
            messages.successfully_pulled("nginx:1.25", 1.234567891, 2.5, 42_000_000),
            'Successfully pulled image "nginx:1.25" in 1.234s (2.5s including waiting). '
            "Image size: 42000000 bytes.",
            id="pulled-truncates-to-ms",
        ),
        pytest.param(
            messages.successfully_pulled(
                "squidfunk/mkdocs-material:latest", 0.6269, 0.6269, 61822408
            ),
            'Successfully pulled image "squidfunk/mkdocs-material:latest" in 626ms '
            "(626ms including waiting). Image size: 61822408 bytes.",
            id="pulled-sub-second-as-seen-in-the-wild",
        ),
        pytest.param(
            messages.successfully_pulled("x", 1.001, 61.5, 0),
            'Successfully pulled image "x" in 1.001s (1m1.5s including waiting). Image size: 0 bytes.',
            id="pulled-no-float-truncation-trap-and-minutes",
        ),
        pytest.param(
            messages.successfully_pulled("x", 0.0009999, 3600.0, 1),
            'Successfully pulled image "x" in 0s (1h0m0s including waiting). Image size: 1 bytes.',
            id="pulled-below-1ms-is-0s-and-hours",
        ),
        pytest.param(
            messages.successfully_pulled("x", 120.0, 125.0004, 7),
            'Successfully pulled image "x" in 2m0s (2m5s including waiting). Image size: 7 bytes.',
            id="pulled-whole-minutes",
        ),
        pytest.param(
            messages.already_present("busybox"),
            'Container image "busybox" already present on machine',
            id="already-present",
        ),
        pytest.param(
            messages.already_present("busybox", accessible=True),
            'Container image "busybox" already present on machine and can be accessed by the pod',
            id="already-present-kep-2535",
        ),
        pytest.param(
            messages.failed_to_pull("gone:1", "manifest unknown"),
            'Failed to pull image "gone:1": manifest unknown',
            id="failed-to-pull",
        ),
        pytest.param(
            messages.failed_to_pull("gone:1", RuntimeError("pull QPS exceeded")),
            'Failed to pull image "gone:1": pull QPS exceeded',
            id="failed-to-pull-exception",
        ),
        pytest.param(
            messages.back_off("busybox:1.36"),
            'Back-off pulling image "busybox:1.36"',
            id="back-off",
        ),
        pytest.param(
            messages.never_pull("local:1"),
            'Container image "local:1" is not present with pull policy of Never',
            id="never-pull",
        ),
        pytest.param(
            messages.failed_to_inspect_image("", "rpc error: code = Unavailable"),
            'Failed to inspect image "": rpc error: code = Unavailable',
            id="inspect-failed-with-upstreams-empty-ref",
        ),
        pytest.param(
            messages.failed_to_apply_default_tag("Busybox", _invalid("Busybox")),
            'Failed to apply default image tag "Busybox": couldn\'t parse image name "Busybox": '
            "invalid reference format: repository name (library/Busybox) must be lowercase",
            id="default-tag-uppercase",
        ),
        pytest.param(
            messages.failed_to_apply_default_tag("busybox:", _invalid("busybox:")),
            'Failed to apply default image tag "busybox:": couldn\'t parse image name "busybox:": '
            "invalid reference format",
            id="default-tag-empty-tag",
        ),
        pytest.param(
            messages.container_error("ErrImagePull"), "Error: ErrImagePull", id="err-pull"
        ),
        pytest.param(
            messages.container_error("ImagePullBackOff"),
            "Error: ImagePullBackOff",
            id="err-backoff",
        ),
        pytest.param(
            messages.container_error("InvalidImageName"),
            "Error: InvalidImageName",
            id="err-invalid",
        ),
        pytest.param(
            messages.failed_to_retrieve_pull_secrets(["regcred", "ghcr-secret"]),
            "Unable to retrieve some image pull secrets (regcred, ghcr-secret); "
            "attempting to pull the image may not succeed.",
            id="pull-secrets",
        ),
        pytest.param(
            messages.invalid_disk_capacity(),
            "invalid capacity 0 on image filesystem",
            id="invalid-disk-capacity",
        ),
        pytest.param(
            messages.free_disk_space_failed(12962711961, 0),
            "Failed to garbage collect required amount of images. Attempted to free 12962711961 "
            "bytes, but only found 0 bytes eligible to free.",
            id="free-disk-space-failed",
        ),
        pytest.param(
            messages.pulling('we"ird\n\tname\x7f'),
            'Pulling image "we\\"ird\\n\\tname\\x7f"',
            id="go-quote-escapes",
        ),
        pytest.param(
            messages.back_off("caf\u00e9\u200b"),
            'Back-off pulling image "caf\u00e9\\u200b"',
            id="go-quote-keeps-printable-unicode-escapes-format-chars",
        ),
    ],
)
def test_message_texts_match_upstream(built: str, expected: str) -> None:
    assert built == expected


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        pytest.param(
            ObjectRef.container("ns", "p", "u", "app"), "spec.containers{app}", id="container"
        ),
        pytest.param(
            ObjectRef.container("ns", "p", "u", "init", ContainerSection.INIT_CONTAINERS),
            "spec.initContainers{init}",
            id="init-container",
        ),
        pytest.param(
            ObjectRef.container("ns", "p", "u", "dbg", ContainerSection.EPHEMERAL_CONTAINERS),
            "spec.ephemeralContainers{dbg}",
            id="ephemeral-container",
        ),
        pytest.param(
            ObjectRef.container("ns", "p", "u", "", index=2), "spec.containers[2]", id="unnamed"
        ),
    ],
)
def test_container_field_paths(ref: ObjectRef, expected: str) -> None:
    assert ref.field_path == expected
    assert (ref.kind, ref.api_version, ref.namespace, ref.name, ref.uid) == (
        "Pod",
        "v1",
        "ns",
        "p",
        "u",
    )


def test_node_ref() -> None:
    assert ObjectRef.node("node-a") == ObjectRef(
        namespace="", name="node-a", uid="node-a", kind="Node", api_version=""
    )


def test_first_event_uses_the_clock() -> None:
    clock = FakeClock()
    rec = recorder(clock)
    event = rec.event(POD, EventType.NORMAL, EventReason.PULLING, messages.pulling("busybox"))
    assert event == Event(
        involved_object=POD,
        type=EventType.NORMAL,
        reason=EventReason.PULLING,
        message='Pulling image "busybox"',
        count=1,
        first_timestamp=T0,
        last_timestamp=T0,
        name=f"web-1.{int(T0 * 1_000_000_000):x}",
        source_component="kubelet",
        source_host="node-a",
    )
    assert rec.events() == [event]
    assert (event.namespace, event.field_path) == ("default", "spec.containers{app}")


def test_identical_events_are_counted_without_a_time_window() -> None:
    clock = FakeClock()
    rec = recorder(clock)
    msg = messages.back_off("busybox")
    first = rec.event(POD, EventType.NORMAL, EventReason.BACK_OFF, msg)
    for step in (10.0, 20.0, 3600.0):  # even an hour later: the logger cache has no window
        clock.advance(step)
        last = rec.event(POD, EventType.NORMAL, EventReason.BACK_OFF, msg)
    assert first is not None
    assert last is not None
    assert (last.count, last.first_timestamp, last.last_timestamp) == (4, T0, T0 + 3630.0)
    assert last.name == first.name
    assert rec.events() == [last]


@pytest.mark.parametrize(
    ("other", "type_", "reason", "message"),
    [
        pytest.param(
            ObjectRef.container("default", "web-1", "uid-1", "sidecar"),
            EventType.NORMAL,
            EventReason.BACK_OFF,
            'Back-off pulling image "busybox"',
            id="other-field-path",
        ),
        pytest.param(
            POD,
            EventType.WARNING,
            EventReason.BACK_OFF,
            'Back-off pulling image "busybox"',
            id="type",
        ),
        pytest.param(POD, EventType.NORMAL, EventReason.PULLING, "x", id="reason"),
        pytest.param(
            POD, EventType.NORMAL, EventReason.BACK_OFF, 'Back-off pulling image "b"', id="message"
        ),
        pytest.param(
            ObjectRef.container("default", "web-1", "uid-2", "app"),
            EventType.NORMAL,
            EventReason.BACK_OFF,
            'Back-off pulling image "busybox"',
            id="pod-uid",
        ),
    ],
)
def test_events_differing_in_any_key_field_are_separate(
    other: ObjectRef, type_: EventType, reason: EventReason, message: str
) -> None:
    rec = recorder(FakeClock())
    rec.event(POD, EventType.NORMAL, EventReason.BACK_OFF, 'Back-off pulling image "busybox"')
    second = rec.event(other, type_, reason, message)
    assert second is not None
    assert second.count == 1
    assert len(rec) == 2


def _pull_failures(rec: EventRecorder, clock: FakeClock, n: int, *, start: int = 0) -> list[Event]:
    out = []
    for i in range(start, start + n):
        event = rec.event(
            POD, EventType.WARNING, EventReason.FAILED, messages.failed_to_pull(f"img:{i}", "boom")
        )
        assert event is not None
        out.append(event)
        clock.advance(1.0)
    return out


def test_tenth_distinct_message_is_aggregated() -> None:
    clock = FakeClock()
    rec = recorder(clock)
    events = _pull_failures(rec, clock, 12)
    assert [e.message.startswith(AGGREGATE_PREFIX) for e in events] == [False] * 9 + [True] * 3
    assert events[9].message == AGGREGATE_PREFIX + 'Failed to pull image "img:9": boom'
    # Later aggregates update the same stored event: count grows, latest message wins.
    assert events[11].message == AGGREGATE_PREFIX + 'Failed to pull image "img:11": boom'
    assert (events[11].count, events[11].first_timestamp, events[11].name) == (
        3,
        events[9].first_timestamp,
        events[9].name,
    )
    assert len(rec) == 10  # 9 individual events + 1 aggregate
    assert rec.statistics().aggregated == 3


def test_aggregation_ignores_the_field_path() -> None:
    clock = FakeClock()
    rec = recorder(clock)
    for i in range(10):
        ref = ObjectRef.container("default", "web-1", "uid-1", f"c{i}")
        event = rec.event(ref, EventType.NORMAL, EventReason.PULLING, messages.pulling(f"img:{i}"))
    assert event is not None
    assert event.message == AGGREGATE_PREFIX + 'Pulling image "img:9"'
    assert event.field_path == "spec.containers{c9}"


def test_aggregation_group_restarts_after_600s_quiet() -> None:
    clock = FakeClock()
    rec = recorder(clock)
    _pull_failures(rec, clock, 9)
    clock.advance(600.0)  # 601 s since the last one: a fresh group
    (event,) = _pull_failures(rec, clock, 1, start=9)
    assert not event.message.startswith(AGGREGATE_PREFIX)


def test_aggregation_window_is_rolling_not_fixed() -> None:
    clock = FakeClock()
    rec = recorder(clock)
    _pull_failures(rec, clock, 9)
    clock.advance(599.0)  # exactly 600 s after the last similar event: not over the interval
    (event,) = _pull_failures(rec, clock, 1, start=9)
    assert event.message.startswith(AGGREGATE_PREFIX)


def test_repeating_a_known_message_after_aggregation_is_counted_normally() -> None:
    clock = FakeClock()
    rec = recorder(clock)
    events = _pull_failures(rec, clock, 10)  # img:0 is dropped from the group at the 10th
    (again,) = _pull_failures(rec, clock, 1, start=5)
    assert again.message == 'Failed to pull image "img:5": boom'
    assert again.count == 2
    assert again.name == events[5].name


def test_spam_filter_allows_a_burst_of_25_then_one_per_5_minutes() -> None:
    clock = FakeClock()
    rec = recorder(clock)
    msg = messages.back_off("busybox")
    accepted = [rec.event(POD, EventType.NORMAL, EventReason.BACK_OFF, msg) for _ in range(25)]
    assert all(e is not None for e in accepted)
    assert rec.event(POD, EventType.NORMAL, EventReason.BACK_OFF, msg) is None
    clock.advance(299.0)
    assert rec.event(POD, EventType.NORMAL, EventReason.BACK_OFF, msg) is None
    clock.advance(1.0)
    event = rec.event(POD, EventType.NORMAL, EventReason.BACK_OFF, msg)
    # The correlator counted the dropped ones too: 25 + 2 dropped + this one.
    assert event is not None
    assert event.count == 28
    assert rec.statistics().spam_filtered == 2
    # The bucket is per object (pod), not per container or reason.
    sidecar = ObjectRef.container("default", "web-1", "uid-1", "sidecar")
    assert rec.event(sidecar, EventType.NORMAL, EventReason.PULLING, "x") is None
    other_pod = ObjectRef.container("default", "web-2", "uid-2", "app")
    assert rec.event(other_pod, EventType.NORMAL, EventReason.BACK_OFF, msg) is not None


def test_spam_filter_can_be_disabled() -> None:
    rec = recorder(FakeClock(), spam_filter=False)
    for _ in range(100):
        last = rec.event(POD, EventType.NORMAL, EventReason.BACK_OFF, "m")
    assert last is not None
    assert last.count == 100


def test_capacity_drops_the_least_recently_updated() -> None:
    clock = FakeClock()
    rec = recorder(clock, capacity=3)
    pods = [ObjectRef("ns", f"p{i}", f"u{i}") for i in range(4)]
    for pod in pods[:3]:
        rec.event(pod, EventType.NORMAL, EventReason.PULLING, "m")
        clock.advance(1.0)
    rec.event(pods[0], EventType.NORMAL, EventReason.PULLING, "m")  # p0 is now the freshest
    rec.event(pods[3], EventType.NORMAL, EventReason.PULLING, "m")
    assert [e.involved_object.name for e in rec.events()] == ["p2", "p0", "p3"]
    assert rec.statistics() == RecorderStatistics(
        stored=3, recorded=5, aggregated=0, spam_filtered=0, evicted=1
    )


def test_thousands_of_pods_stay_bounded() -> None:
    clock = FakeClock()
    rec = recorder(clock, capacity=500, cache_size=1000)
    for i in range(5000):
        pod = ObjectRef.container("ns", f"pod-{i}", f"uid-{i}", "app")
        rec.event(pod, EventType.NORMAL, EventReason.PULLING, messages.pulling("busybox"))
        rec.event(pod, EventType.NORMAL, EventReason.PULLED, messages.already_present("busybox"))
    assert len(rec) == 500
    assert rec.statistics().evicted == 9500
    assert rec.events()[-1].involved_object.name == "pod-4999"


def test_events_filter_by_namespace_and_name() -> None:
    rec = recorder(FakeClock())
    rec.event(ObjectRef("a", "p1", "1"), EventType.NORMAL, EventReason.PULLING, "m")
    rec.event(ObjectRef("a", "p2", "2"), EventType.NORMAL, EventReason.PULLING, "m")
    rec.event(ObjectRef("b", "p1", "3"), EventType.NORMAL, EventReason.PULLING, "m")
    assert [e.involved_object.uid for e in rec.events(namespace="a")] == ["1", "2"]
    assert [e.involved_object.uid for e in rec.events(name="p1")] == ["1", "3"]
    assert [e.involved_object.uid for e in rec.events("b", "p1")] == ["3"]
    assert rec.events("c") == []


def test_subscribers_see_accepted_events_only() -> None:
    seen: list[Event] = []
    rec = recorder(FakeClock(), spam_burst=1, subscribers=[seen.append])
    late: list[Event] = []
    unsubscribe = rec.subscribe(late.append)
    first = rec.event(POD, EventType.NORMAL, EventReason.PULLING, "m")
    assert rec.event(POD, EventType.NORMAL, EventReason.PULLING, "m") is None  # filtered
    assert seen == late == [first]
    unsubscribe()
    unsubscribe()  # twice is fine
    rec.event(POD, EventType.NORMAL, EventReason.PULLED, "other")
    assert late == [first]


def test_a_failing_subscriber_does_not_break_recording() -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("stream closed")

    seen: list[Event] = []
    rec = recorder(FakeClock(), subscribers=[broken, seen.append])
    with capture_logs() as logs:
        event = rec.event(POD, EventType.NORMAL, EventReason.PULLING, "m")
    assert seen == [event]
    assert [entry["event"] for entry in logs] == ["events.subscriber_failed"]


@pytest.mark.parametrize(
    ("message", "secrets", "expected"),
    [
        pytest.param("auth failed for s3cr3t", ["s3cr3t"], "auth failed for <redacted>", id="one"),
        pytest.param("a=pw b=pw", ["pw"], "a=<redacted> b=<redacted>", id="every-occurrence"),
        pytest.param(
            "token abcdef and abc",
            ["abc", "abcdef"],
            "token <redacted> and <redacted>",
            id="longest",
        ),
        pytest.param("nothing here", ["", "zzz"], "nothing here", id="empty-secret-ignored"),
        pytest.param("unchanged", [], "unchanged", id="no-secrets"),
        pytest.param(
            "user:pass dXNlcjpwYXNz",
            ["pass", "dXNlcjpwYXNz"],
            "user:<redacted> <redacted>",
            id="forms",
        ),
    ],
)
def test_redact(message: str, secrets: list[str], expected: str) -> None:
    assert redact(message, secrets) == expected


def test_redactor_hook_keeps_secrets_out_of_stored_events() -> None:
    secret = "hunter2-token"
    seen: list[Event] = []
    scrub: Callable[[str], str] = lambda m: redact(m, [secret])  # noqa: E731
    rec = recorder(FakeClock(), redactor=scrub, subscribers=[seen.append])
    event = rec.event(POD, EventType.WARNING, EventReason.FAILED, f"Failed: bearer {secret}")
    assert event is not None
    assert event.message == "Failed: bearer <redacted>"
    assert secret not in repr(rec.events())
    assert secret not in repr(seen)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"capacity": 0}, id="capacity"),
        pytest.param({"cache_size": 0}, id="cache_size"),
    ],
)
def test_invalid_sizes_name_the_field(kwargs: dict[str, int]) -> None:
    (field,) = kwargs
    with pytest.raises(ValueError, match=field):
        EventRecorder(**kwargs)  # type: ignore[arg-type]
