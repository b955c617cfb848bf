"""The one token bucket: pull throttle semantics, and parity with the event spam filter's."""

from __future__ import annotations

import pytest

from kubelet_sim.core.ratelimit import TokenBucket
from kubelet_sim.telemetry import events


def test_starts_full_and_refuses_once_empty() -> None:
    bucket = TokenBucket(qps=1.0, burst=3)
    assert [bucket.try_accept(0.0) for _ in range(4)] == [True, True, True, False]
    assert (bucket.accepted, bucket.rejected) == (3, 1)


def test_refills_at_qps_up_to_burst() -> None:
    bucket = TokenBucket(qps=2.0, burst=2)
    assert bucket.try_accept(0.0)
    assert bucket.try_accept(0.0)
    assert not bucket.try_accept(0.1)  # 0.2 tokens
    assert bucket.tokens(0.5) == pytest.approx(1.0)
    assert bucket.try_accept(0.5)
    assert bucket.tokens(100.0) == 2.0  # capped at burst


def test_a_refused_attempt_leaves_the_bucket_as_it_was() -> None:
    bucket = TokenBucket(qps=1.0, burst=1)
    assert bucket.try_accept(0.0)
    for now in (0.2, 0.4, 0.6, 0.8):
        assert not bucket.try_accept(now)
    assert bucket.tokens(1.0) == pytest.approx(1.0)
    assert bucket.try_accept(1.0)


def test_a_clock_that_steps_back_refills_nothing() -> None:
    bucket = TokenBucket(qps=1.0, burst=2)
    assert bucket.try_accept(100.0)
    assert bucket.try_accept(100.0)
    assert not bucket.try_accept(50.0)
    assert bucket.tokens(50.0) == 0.0


def test_qps_zero_is_no_throttle() -> None:
    bucket = TokenBucket(qps=0, burst=0)
    assert bucket.unlimited
    assert all(bucket.try_accept(0.0) for _ in range(100))
    assert bucket.tokens(0.0) == float("inf")


@pytest.mark.parametrize(("qps", "burst"), [(-1.0, 1), (1.0, -1)])
def test_negative_settings_are_refused(qps: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        TokenBucket(qps, burst)


def test_the_event_spam_filter_uses_this_bucket() -> None:
    """One bucket: the recorder's per-object spam filter (client-go's 25 burst, 1/300 s) is it."""
    recorder = events.EventRecorder(clock=lambda: 1_700_000_000.0, spam_burst=2)
    obj = events.ObjectRef("default", "p", "uid-p")
    for i in range(4):
        recorder.event(obj, events.EventType.NORMAL, events.EventReason.PULLING, f"m{i}")
    assert recorder.statistics().spam_filtered == 2
    assert all(isinstance(b, TokenBucket) for b in recorder._buckets._data.values())


def test_a_spam_filter_without_refill_is_refused() -> None:
    with pytest.raises(ValueError, match="spam_qps must be positive"):
        events.EventRecorder(spam_qps=0)
