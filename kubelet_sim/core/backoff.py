"""Per-key exponential backoff where every query takes ``now``: the kubelet's image-pull backoff.

Models ``flowcontrol.Backoff`` from k8s.io/client-go ``util/flowcontrol/backoff.go``, which the
kubelet builds once as ``NewBackOff(10s, 300s)`` without jitter (``pkg/kubelet/kubelet.go``) and
keys by ``"<podUID>_<container.Image>"`` (``pkg/kubelet/images/image_manager.go``); here keys are
tuples such as ``(pod_uid, image)``.

Per key the state is ``(backoff, last_update)``. Upstream semantics, kept exactly:

- an entry *expires* when ``event_time - last_update > 2 * max_duration`` (strictly greater; 600 s
  for the kubelet), and an expired entry behaves as absent for :meth:`Backoff.next` and both
  ``is_in_backoff_*`` queries, but stays stored (and :meth:`Backoff.get` still reports its delay)
  until :meth:`Backoff.gc` or :meth:`Backoff.reset` removes it;
- :meth:`Backoff.next` on an absent or expired entry sets the delay to ``initial`` (plus jitter),
  otherwise to ``min(2 * delay + jitter, max_duration)``; either way ``last_update = now``. So the
  ladder is 10, 20, 40, 80, 160, 300, 300, ... seconds;
- :meth:`Backoff.is_in_backoff_since_update` is ``now - last_update < delay`` (strictly less), so
  at exactly ``last_update + delay`` the next attempt is allowed;
- :meth:`Backoff.gc` deletes every expired entry; the image manager calls it after each successful
  pull, and a success does not reset its own key.

Durations are kept as whole nanoseconds, like Go's ``time.Duration``; ``now`` values are monotonic
seconds (``anyio.current_time()``) passed in by the caller: there is no hidden clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_INITIAL",
    "DEFAULT_MAX",
    "Backoff",
    "BackoffStatistics",
]

DEFAULT_INITIAL = 10.0
"""``imageBackOffPeriod`` in ``pkg/kubelet/kubelet.go``."""
DEFAULT_MAX = 300.0
"""``MaxImageBackOff`` in ``pkg/kubelet/kubelet.go``."""

_NS = 1_000_000_000


def _to_ns(field: str, seconds: float) -> int:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f"backoff {field} must be a finite, non-negative number of seconds, got {seconds!r}"
        )
    return round(seconds * _NS)


@dataclass(slots=True)
class _Entry:
    backoff_ns: int
    last_update: float


@dataclass(frozen=True, slots=True)
class BackoffStatistics:
    """A snapshot of a :class:`Backoff` (trio's ``statistics()`` convention)."""

    entries: int
    """Stored keys, expired ones included until :meth:`Backoff.gc` runs."""
    at_max: int
    """Stored keys whose delay has reached ``max_duration``."""
    initial: float
    max_duration: float
    jitter: float


class Backoff:
    """Per-key exponential backoff with upstream ``flowcontrol.Backoff`` semantics.

    Args:
        initial: first delay in seconds (``defaultDuration``), 10 s for image pulls.
        max_duration: the cap in seconds (``maxDuration``); an entry expires after twice this
            long without an update, 600 s for image pulls.
        jitter: ``maxJitterFactor``; each step adds ``rng() * jitter * delay`` (truncated to whole
            nanoseconds). 0, the default and what the kubelet uses, adds none.
        rng: returns floats in ``[0, 1)``; only consulted when ``jitter > 0``. Defaults to a fresh
            ``random.Random().random`` (upstream seeds one from the clock).

    Raises:
        ValueError: a negative or non-finite ``initial``, ``max_duration`` or ``jitter``.
    """

    __slots__ = ("_entries", "_initial_ns", "_jitter", "_max_ns", "_rng")

    def __init__(
        self,
        initial: float = DEFAULT_INITIAL,
        max_duration: float = DEFAULT_MAX,
        *,
        jitter: float = 0.0,
        rng: Callable[[], float] | None = None,
    ) -> None:
        self._initial_ns = _to_ns("initial", initial)
        self._max_ns = _to_ns("max_duration", max_duration)
        if not math.isfinite(jitter) or jitter < 0:
            raise ValueError(
                f"backoff jitter must be a finite, non-negative factor, got {jitter!r}"
            )
        self._jitter = jitter
        self._rng: Callable[[], float] | None = None
        if jitter > 0:
            self._rng = rng if rng is not None else random.Random().random  # noqa: S311 - not crypto
        self._entries: dict[Hashable, _Entry] = {}

    @property
    def initial(self) -> float:
        """The first delay, in seconds."""
        return self._initial_ns / _NS

    @property
    def max_duration(self) -> float:
        """The cap on the delay, in seconds."""
        return self._max_ns / _NS

    def _has_expired(self, event_time: float, last_update: float) -> bool:
        # hasExpired: "consider stable if it's ok for twice the maxDuration".
        return event_time - last_update > 2 * self._max_ns / _NS

    def _jitter_ns(self, delay_ns: int) -> int:
        if self._rng is None:
            return 0
        return int(self._rng() * self._jitter * delay_ns)

    def next(self, key: Hashable, now: float) -> float:
        """Move ``key`` to its next delay (``Next``) and stamp it with ``now``.

        Returns:
            The new delay in seconds (upstream returns nothing; this saves a :meth:`get`).
        """
        entry = self._entries.get(key)
        if entry is None or self._has_expired(now, entry.last_update):
            delay = self._initial_ns
            delay += self._jitter_ns(delay)  # upstream does not cap the first step
            entry = _Entry(delay, now)
            self._entries[key] = entry
        else:
            delay = entry.backoff_ns * 2 + self._jitter_ns(entry.backoff_ns)
            entry.backoff_ns = min(delay, self._max_ns)
            entry.last_update = now
        return entry.backoff_ns / _NS

    def get(self, key: Hashable) -> float:
        """The stored delay of ``key`` in seconds, 0 when absent (``Get``; expiry is not checked)."""
        entry = self._entries.get(key)
        return 0.0 if entry is None else entry.backoff_ns / _NS

    def is_in_backoff_since_update(self, key: Hashable, now: float) -> bool:
        """True iff ``key`` is stored, not expired at ``now``, and ``now - last_update < delay``."""
        entry = self._entries.get(key)
        if entry is None or self._has_expired(now, entry.last_update):
            return False
        return now - entry.last_update < entry.backoff_ns / _NS

    def is_in_backoff_since(self, key: Hashable, event_time: float, now: float) -> bool:
        """``IsInBackOffSince``: True iff ``now - event_time < delay``.

        Expiry is judged at ``event_time`` (not ``now``), exactly as upstream does; upstream reads
        ``now`` from its clock, here the caller passes it.
        """
        entry = self._entries.get(key)
        if entry is None or self._has_expired(event_time, entry.last_update):
            return False
        return now - event_time < entry.backoff_ns / _NS

    def remaining(self, key: Hashable, now: float) -> float:
        """Seconds until :meth:`is_in_backoff_since_update` turns false for ``key``; 0 if it is."""
        if not self.is_in_backoff_since_update(key, now):
            return 0.0
        entry = self._entries[key]
        return max(0.0, entry.last_update + entry.backoff_ns / _NS - now)

    def last_update(self, key: Hashable) -> float | None:
        """When :meth:`next` last stamped ``key``, or None when absent."""
        entry = self._entries.get(key)
        return None if entry is None else entry.last_update

    def reset(self, key: Hashable) -> None:
        """Forget ``key`` (``Reset`` and ``DeleteEntry`` are the same upstream); absent is fine."""
        self._entries.pop(key, None)

    def gc(self, now: float) -> int:
        """Delete every entry not updated for more than ``2 * max_duration`` (``GC``).

        Returns:
            How many entries were deleted.
        """
        expired = [k for k, e in self._entries.items() if self._has_expired(now, e.last_update)]
        for key in expired:
            del self._entries[key]
        return len(expired)

    def __len__(self) -> int:
        return len(self._entries)

    def held_keys(self) -> list[Hashable]:
        """The keys held now (a copy: safe to reset while iterating)."""
        return list(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def statistics(self) -> BackoffStatistics:
        """Counts for metrics and the daemon's status endpoint."""
        return BackoffStatistics(
            entries=len(self._entries),
            at_max=sum(1 for e in self._entries.values() if e.backoff_ns >= self._max_ns),
            initial=self.initial,
            max_duration=self.max_duration,
            jitter=self._jitter,
        )

    def __repr__(self) -> str:
        return (
            f"Backoff(initial={self.initial!r}, max_duration={self.max_duration!r}, "
            f"jitter={self._jitter!r}, entries={len(self._entries)})"
        )
