"""A registry fault schedule and the one place its dice are rolled (proxy and modelled registry).

A :class:`FaultPlan` is a list of :class:`FaultWindow` s (times in seconds since the schedule's
time zero). :class:`FaultDraws` decides, per request, what the plan does to it: the latency it
adds, an error answer instead of the registry's (with ``Retry-After`` for a 429 or 503 that sets
one), a connection reset (at once or after some answer bytes), or an outage. The fault proxy in
real runs and the modelled registry in virtual runs both ask it, in the same order, so one plan
means the same thing to both.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["FaultDraws", "FaultKind", "FaultPlan", "FaultWindow"]


class FaultKind(StrEnum):
    LATENCY = "latency"
    ERRORS = "errors"
    RESETS = "resets"
    OUTAGE = "outage"


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """One fault, active from ``start`` until ``end`` (None: until the proxy stops)."""

    kind: FaultKind
    start: float = 0.0
    end: float | None = None
    delay: float = 0.0
    jitter: float = 0.0
    share: float = 1.0
    status: int = 503
    after_bytes: int = 0
    retry_after: float | None = None
    """``errors``: the ``Retry-After`` seconds the answer carries (None: no header)."""

    def __post_init__(self) -> None:
        problems = [
            (self.start < 0, "start must not be negative"),
            (self.end is not None and self.end <= self.start, "end must be after start"),
            (self.delay < 0 or self.jitter < 0, "delay and jitter must not be negative"),
            (self.jitter > self.delay, "jitter must not exceed delay"),
            (not 0.0 <= self.share <= 1.0, "share must be between 0 and 1"),
            (not 400 <= self.status <= 599, "status must be an HTTP error status (400-599)"),
            (self.after_bytes < 0, "afterBytes must not be negative"),
            (
                self.retry_after is not None and not 0 <= self.retry_after <= 86_400,
                "retryAfter must be between 0 and 24h",
            ),
        ]
        for failed, message in problems:
            if failed:
                raise ValueError(f"{self.kind} fault: {message}")

    def active(self, t: float) -> bool:
        return self.start <= t and (self.end is None or t < self.end)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The schedule of faults; ``seed`` makes the share draws repeatable."""

    windows: tuple[FaultWindow, ...] = ()
    seed: int = 0

    def active(self, kind: FaultKind, t: float) -> list[FaultWindow]:
        return [w for w in self.windows if w.kind is kind and w.active(t)]

    def to_list(self) -> list[dict[str, object]]:
        """The windows as plain dicts, with only the fields that matter for each kind."""
        relevant = {
            FaultKind.LATENCY: ("delay", "jitter"),
            FaultKind.ERRORS: ("share", "status"),
            FaultKind.RESETS: ("share", "after_bytes"),
            FaultKind.OUTAGE: (),
        }
        return [
            {"kind": str(w.kind), "start": w.start, "end": w.end}
            | {name: getattr(w, name) for name in relevant[w.kind]}
            | ({"retry_after": w.retry_after} if w.retry_after is not None else {})
            for w in self.windows
        ]


class FaultDraws:
    """What the plan does to each request, drawn from one seeded generator on one clock."""

    def __init__(self, plan: FaultPlan, clock: Callable[[], float]) -> None:
        self.plan = plan
        self.clock = clock
        self._t0: float | None = None
        self._random = random.Random(plan.seed)  # noqa: S311 - fault draws, not security

    def start_schedule(self, t0: float | None = None) -> None:
        """Make ``t0`` (default: now) time zero of the schedule."""
        self._t0 = self.clock() if t0 is None else t0

    def elapsed(self) -> float:
        """Seconds since time zero (which is now, if it was never set)."""
        if self._t0 is None:
            self.start_schedule()
        assert self._t0 is not None
        return self.clock() - self._t0

    def outage(self) -> bool:
        """Is the registry away right now?"""
        return bool(self.plan.windows) and bool(self.plan.active(FaultKind.OUTAGE, self.elapsed()))

    def latency(self, rng: random.Random | None = None) -> float:
        """Seconds to hold the request now (the sum of the active latency windows).

        ``rng``: the request's own generator (the modelled registry draws per request, so the
        outcome does not depend on which request the scheduler ran first); default: the plan's.
        """
        if not self.plan.windows:
            return 0.0
        rng = rng or self._random
        delay = 0.0
        for window in self.plan.active(FaultKind.LATENCY, self.elapsed()):
            jitter = window.jitter * (2 * rng.random() - 1) if window.jitter else 0.0
            delay += max(0.0, window.delay + jitter)
        return delay

    def draw(self, kind: FaultKind, rng: random.Random | None = None) -> FaultWindow | None:
        """The first active window of ``kind`` whose ``share`` picks this request, if any
        (``rng``: as for :meth:`latency`)."""
        if not self.plan.windows:
            return None
        rng = rng or self._random
        for window in self.plan.active(kind, self.elapsed()):
            if rng.random() < window.share:
                return window
        return None
