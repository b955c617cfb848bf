"""The simulator's own health: is the latency a report shows the registry's, or ours?

A bench run measures time-to-ready through the simulator's own event loop. When that loop is busy
(thousands of nodes hashing, parsing and scheduling in one process), every request waits for the
loop before it is sent and again before its answer is read, and the figures describe the
simulator, not the registry. These measurements make that visible:

- **event-loop lag**: a heartbeat sleeps :data:`HEARTBEAT` seconds and records how late it woke
  (:class:`LoopLagMonitor`); on an idle loop this is well under a millisecond;
- **dispatch delay**: per runtime pull, the time from the puller starting it to the first
  registry request it sent (:class:`PullTrace`, carried to the transport's observer in a context
  variable, so no layer of the engine has to know); this is pure client-side time;
- **CPU**: process CPU seconds over wall seconds; one event loop cannot use more than one core;
- **client-side share**: the part of the pulls' time no registry request covered
  (:func:`client_wait`).

:func:`assess` turns them into warnings, written into the report and printed on the terminal.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

HEARTBEAT = 0.02
"""Seconds between heartbeats of the loop-lag monitor."""

CLIENT_SHARE_LIMIT = 0.10
"""Client-side wait above this share of the pulls' time (or loop lag p99 above this share of the
median time-to-ready) makes the run suspect."""

CPU_LIMIT = 0.90
"""CPU seconds per wall second (one event loop's core) above which the process is saturated."""


@dataclass(slots=True)
class PullTrace:
    """One runtime pull as the transport saw it: when it started and its first request."""

    start: float
    first_request: float | None = None
    requests: int = 0
    request_seconds: float = 0.0
    image: str = ""

    @property
    def dispatch(self) -> float | None:
        """Seconds from the pull's start to its first registry request (None: no request)."""
        if self.first_request is None:
            return None
        return max(0.0, self.first_request - self.start)


CURRENT_PULL: contextvars.ContextVar[PullTrace | None] = contextvars.ContextVar(
    "kubelet_sim_current_pull", default=None
)
"""The pull the current task is making (set by the bench's metrics sink when a pull starts)."""


@dataclass(slots=True)
class LoopLagMonitor:
    """Records how late a periodic sleep wakes up, in seconds, for the whole run."""

    interval: float = HEARTBEAT
    samples: list[float] = field(default_factory=list)

    async def run(self) -> None:
        """Until cancelled: sleep ``interval``, record the overshoot."""
        while True:
            expected = anyio.current_time() + self.interval
            await anyio.sleep(self.interval)
            self.samples.append(max(0.0, anyio.current_time() - expected))


def quantile(data: Sequence[float], p: float, total: int | None = None) -> float | None:
    """The ``p`` quantile of sorted ``data``, interpolating linearly between order statistics.

    ``total`` counts values slower than all of ``data`` too (pods that never became ready):
    a quantile whose rank falls among those is None.
    """
    pos = ((len(data) if total is None else total) - 1) * p
    lo, hi = math.floor(pos), math.ceil(pos)
    if hi >= len(data):
        return None
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _ms(data: Sequence[float], p: float) -> float | None:
    value = quantile(data, p)
    return None if value is None else round(value * 1000, 3)


def summarize(values: list[float]) -> dict[str, float | int | None]:
    """count, p50, p99 and max of ``values`` in milliseconds (None when empty)."""
    data = sorted(values)
    if not data:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "count": len(data),
        "p50_ms": _ms(data, 0.5),
        "p99_ms": _ms(data, 0.99),
        "max_ms": round(data[-1] * 1000, 3),
    }


def client_wait(pulls: list[tuple[float, int, float]], loop_lag_p50: float) -> tuple[float, float]:
    """(client-side seconds, pull seconds) summed over ``pulls`` of (duration, requests, seconds
    spent in requests).

    A pull's client-side wait is the part of its duration that no registry request covered
    (hashing, parsing, bookkeeping, waiting for the loop before sending), plus the loop lag a
    request pays after its answer arrived and before its task resumed (counted once per
    request, at the run's median lag). Requests of one pull that overlap (parallel layers)
    count their overlap twice, so this underestimates the wait rather than inventing it.
    """
    waited = total = 0.0
    for duration, requests, in_requests in pulls:
        total += duration
        waited += min(duration, max(0.0, duration - in_requests) + requests * loop_lag_p50)
    return waited, total


def assess(
    *,
    loop_lag: list[float],
    dispatch: list[float],
    arrival_lag: list[float],
    ttr_p50: float | None,
    cpu_seconds: float,
    wall_seconds: float,
    processes: int = 1,
    pulls: list[tuple[float, int, float]] | None = None,
) -> dict[str, Any]:
    """The simulator-health section of a report: figures, the client-side share, warnings.

    The client-side share is the fraction of the pulls' time that the simulator spent itself
    (:func:`client_wait`); above :data:`CLIENT_SHARE_LIMIT` the run measured this process more
    than the registry. Without pull records it falls back to the median arrival lag, dispatch
    delay and loop lag over the median time-to-ready.
    """
    lag = summarize(loop_lag)
    disp = summarize(dispatch)
    arrival = summarize(arrival_lag)
    cpu_share = cpu_seconds / wall_seconds / processes if wall_seconds > 0 else 0.0
    lag_p50 = (lag["p50_ms"] or 0.0) / 1000
    if pulls:
        client, pull_seconds = client_wait(pulls, lag_p50)
        share = client / pull_seconds if pull_seconds > 0 else None
        basis = f"of the pulls' {pull_seconds:.1f} s"
    else:
        medians = (s["p50_ms"] for s in (lag, disp, arrival))
        client = sum(m for m in medians if isinstance(m, float)) / 1000
        share = client / ttr_p50 if ttr_p50 else None
        basis = "of the median time-to-ready"
    warnings = []
    if share is not None and share > CLIENT_SHARE_LIMIT:
        warnings.append(
            f"the simulator dominated the latency: client-side wait {client:.2f} s is "
            f"{share:.0%} {basis}; the figures describe this process, not the registry "
            "(use --shards or fewer nodes per process)"
        )
    if cpu_share >= CPU_LIMIT:
        warnings.append(
            f"the simulator was CPU-bound: {cpu_share:.0%} of a core per process "
            "(use --shards to spread the nodes over more processes)"
        )
    p99 = lag["p99_ms"]
    if isinstance(p99, float) and ttr_p50 and p99 / 1000 > CLIENT_SHARE_LIMIT * ttr_p50:
        warnings.append(
            f"event-loop lag p99 {p99:.0f} ms is over {CLIENT_SHARE_LIMIT:.0%} of the median "
            f"time-to-ready ({ttr_p50:.3f} s)"
        )
    return {
        "loop_lag": lag,
        "dispatch_delay": disp,
        "arrival_lag": arrival,
        "cpu_per_process": round(cpu_share, 3),
        "client_wait_seconds": round(client, 4),
        "client_wait_share": None if share is None else round(share, 4),
        "dominated_by_simulator": bool(warnings),
        "warnings": warnings,
    }
