"""The image-pull backoff against client-go's flowcontrol.Backoff semantics (util/flowcontrol/backoff.go)."""

from __future__ import annotations

import pytest

from kubelet_sim.core.backoff import DEFAULT_INITIAL, DEFAULT_MAX, Backoff, BackoffStatistics

KEY = ("pod-uid-1", "busybox")
OTHER = ("pod-uid-2", "busybox")


def test_defaults_are_the_kubelet_image_backoff() -> None:
    backoff = Backoff()
    assert (
        (backoff.initial, backoff.max_duration) == (DEFAULT_INITIAL, DEFAULT_MAX) == (10.0, 300.0)
    )


def test_ladder_doubles_and_caps_at_max() -> None:
    backoff = Backoff()
    now = 1000.0
    ladder = []
    for _ in range(8):
        ladder.append(backoff.next(KEY, now))
        assert backoff.get(KEY) == ladder[-1]
        now += 1.0  # well inside 2*max, so the ladder keeps climbing
    assert ladder == [10, 20, 40, 80, 160, 300, 300, 300]


def test_get_is_zero_when_absent() -> None:
    assert Backoff().get(KEY) == 0.0


def test_keys_are_independent() -> None:
    backoff = Backoff()
    backoff.next(KEY, 0.0)
    backoff.next(KEY, 1.0)
    backoff.next(OTHER, 1.0)
    assert (backoff.get(KEY), backoff.get(OTHER)) == (20.0, 10.0)
    assert len(backoff) == 2
    assert KEY in backoff
    assert ("nope", "x") not in backoff


@pytest.mark.parametrize(
    ("elapsed", "in_backoff"),
    [
        pytest.param(0.0, True, id="at-update"),
        pytest.param(9.999, True, id="just-before-window-end"),
        pytest.param(10.0, False, id="exactly-window-end-is-out-strict"),
        pytest.param(10.001, False, id="after-window"),
        pytest.param(600.0, False, id="at-expiry-boundary"),
        pytest.param(601.0, False, id="expired"),
    ],
)
def test_in_backoff_since_update_strict_boundary(elapsed: float, in_backoff: bool) -> None:
    backoff = Backoff()
    backoff.next(KEY, 100.0)
    assert backoff.is_in_backoff_since_update(KEY, 100.0 + elapsed) is in_backoff


def test_not_in_backoff_when_absent() -> None:
    backoff = Backoff()
    assert not backoff.is_in_backoff_since_update(KEY, 0.0)
    assert not backoff.is_in_backoff_since(KEY, 0.0, 0.0)
    assert backoff.remaining(KEY, 0.0) == 0.0


@pytest.mark.parametrize(
    ("quiet", "expected"),
    [
        pytest.param(599.0, 40.0, id="quiet-599s-keeps-climbing"),
        pytest.param(600.0, 40.0, id="quiet-exactly-600s-is-not-expired"),
        pytest.param(600.5, 10.0, id="quiet-over-600s-restarts-at-initial"),
        pytest.param(3600.0, 10.0, id="quiet-an-hour-restarts-at-initial"),
    ],
)
def test_next_restarts_after_twice_max_without_update(quiet: float, expected: float) -> None:
    backoff = Backoff()
    backoff.next(KEY, 0.0)  # 10
    backoff.next(KEY, 5.0)  # 20
    assert backoff.next(KEY, 5.0 + quiet) == expected


def test_expiry_is_measured_from_last_update_not_first_failure() -> None:
    backoff = Backoff()
    now = 0.0
    for _ in range(10):  # a pod that keeps failing every 300 s never expires
        backoff.next(KEY, now)
        now += 300.0
    assert backoff.get(KEY) == 300.0
    assert backoff.next(KEY, now) == 300.0


def test_expired_entry_is_not_in_backoff_but_still_stored_until_gc() -> None:
    backoff = Backoff()
    backoff.next(KEY, 0.0)
    assert not backoff.is_in_backoff_since_update(KEY, 601.0)
    assert backoff.get(KEY) == 10.0  # Get does not check expiry
    assert len(backoff) == 1


def test_remaining_counts_down_to_the_window_end() -> None:
    backoff = Backoff()
    backoff.next(KEY, 50.0)
    backoff.next(KEY, 52.0)  # 20 s from 52
    assert backoff.remaining(KEY, 52.0) == pytest.approx(20.0)
    assert backoff.remaining(KEY, 70.0) == pytest.approx(2.0)
    assert backoff.remaining(KEY, 72.0) == 0.0
    assert backoff.last_update(KEY) == 52.0
    assert backoff.last_update(OTHER) is None


@pytest.mark.parametrize(
    ("event_time", "now", "expected"),
    [
        pytest.param(100.0, 105.0, True, id="5s-since-event-within-10s"),
        pytest.param(100.0, 110.0, False, id="exactly-delay-since-event-strict"),
        pytest.param(95.0, 104.9, True, id="event-before-update-still-measured-from-event"),
        pytest.param(701.0, 705.0, False, id="event-time-past-expiry"),
        pytest.param(700.0, 705.0, True, id="event-time-at-expiry-boundary"),
    ],
)
def test_in_backoff_since_event_time(event_time: float, now: float, expected: bool) -> None:
    backoff = Backoff()
    backoff.next(KEY, 100.0)
    assert backoff.is_in_backoff_since(KEY, event_time, now) is expected


def test_reset_forgets_the_key() -> None:
    backoff = Backoff()
    backoff.next(KEY, 0.0)
    backoff.next(KEY, 1.0)
    backoff.reset(KEY)
    backoff.reset(KEY)  # absent is fine
    assert backoff.get(KEY) == 0.0
    assert backoff.next(KEY, 2.0) == 10.0


def test_gc_deletes_only_entries_quiet_for_more_than_twice_max() -> None:
    backoff = Backoff()
    backoff.next(("a", "x"), 0.0)
    backoff.next(("b", "x"), 100.0)
    backoff.next(("c", "x"), 650.0)
    assert backoff.gc(700.0) == 1  # only "a" (700 s quiet); "b" is exactly 600 s quiet
    assert len(backoff) == 2
    assert ("a", "x") not in backoff
    assert backoff.gc(700.5) == 1
    assert len(backoff) == 1
    assert backoff.gc(700.5) == 0


def test_success_does_not_reset_its_own_key() -> None:
    # The image manager calls GC (not Reset) after a success: a new failure continues the ladder.
    backoff = Backoff()
    backoff.next(KEY, 0.0)
    backoff.next(KEY, 10.0)
    backoff.gc(30.0)
    assert backoff.next(KEY, 100.0) == 40.0


def test_statistics() -> None:
    backoff = Backoff(1.0, 4.0)
    for now in (0.0, 1.0, 2.0, 3.0):
        backoff.next(KEY, now)  # 1, 2, 4, 4
    backoff.next(OTHER, 3.0)
    assert backoff.statistics() == BackoffStatistics(
        entries=2, at_max=1, initial=1.0, max_duration=4.0, jitter=0.0
    )


@pytest.mark.parametrize(
    ("initial", "max_duration", "expected"),
    [
        pytest.param(1.0, 5.0, [1, 2, 4, 5, 5], id="cap-not-a-power-of-two"),
        pytest.param(0.5, 300.0, [0.5, 1, 2, 4, 8], id="sub-second-initial"),
        pytest.param(10.0, 10.0, [10, 10, 10, 10, 10], id="initial-equals-max"),
        pytest.param(0.0, 300.0, [0, 0, 0, 0, 0], id="zero-initial-stays-zero"),
        pytest.param(20.0, 10.0, [20, 10, 10, 10, 10], id="initial-above-max-is-not-capped-first"),
    ],
)
def test_custom_parameters(initial: float, max_duration: float, expected: list[float]) -> None:
    backoff = Backoff(initial, max_duration)
    assert [backoff.next(KEY, float(i)) for i in range(5)] == expected


def test_jitter_adds_a_fraction_of_the_previous_delay() -> None:
    backoff = Backoff(10.0, 300.0, jitter=0.5, rng=lambda: 0.5)
    # first: 10 + 0.5*0.5*10 = 12.5; then 2*12.5 + 0.25*12.5 = 28.125; ...
    assert backoff.next(KEY, 0.0) == 12.5
    assert backoff.next(KEY, 1.0) == 28.125
    assert backoff.next(KEY, 2.0) == 63.28125
    assert backoff.next(KEY, 3.0) == 142.3828125
    assert backoff.next(KEY, 4.0) == 300.0  # capped


def test_jitter_is_truncated_to_whole_nanoseconds() -> None:
    backoff = Backoff(1e-9 * 3, 300.0, jitter=1.0, rng=lambda: 0.5)
    assert backoff.next(KEY, 0.0) == pytest.approx(4e-9)  # 3ns + int(1.5ns) = 4ns


def test_no_jitter_never_calls_rng() -> None:
    def boom() -> float:
        raise AssertionError("rng must not be used without jitter")

    backoff = Backoff(rng=boom)
    assert backoff.next(KEY, 0.0) == 10.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"initial": -1.0}, "initial", id="negative-initial"),
        pytest.param({"max_duration": float("inf")}, "max_duration", id="infinite-max"),
        pytest.param({"initial": float("nan")}, "initial", id="nan-initial"),
        pytest.param({"jitter": -0.1}, "jitter", id="negative-jitter"),
    ],
)
def test_invalid_parameters_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_repr_shows_settings_not_keys() -> None:
    backoff = Backoff()
    backoff.next(("secret-pod", "img"), 0.0)
    text = repr(backoff)
    assert "entries=1" in text
    assert "secret-pod" not in text
