"""Single-flight: one call per key at a time; concurrent callers of that key share its outcome.

Models Go's ``golang.org/x/sync/singleflight`` (``Group.Do``, whose ``shared`` result is
:attr:`Outcome.shared` here), which the kubelet's credential-provider plugins and containerd's
authorizer and content store use. Rules:

- the first caller of a key (the *leader*) runs the function; callers arriving while it runs wait
  and share its value, or its exception (the same object is raised in every waiter, as an
  ``asyncio.Future`` does);
- a leader stopped by a ``BaseException`` that is not an ``Exception`` (its caller was cancelled
  or timed out) poisons no one: a waiter takes over and runs the function itself, the others wait
  for that one;
- the entry is removed when the call ends, so a later call runs anew: nothing is cached here.

Cancelling a waiter only stops its wait. The function runs in the leader's task, so its context
(context variables, cancel scopes) is the leader's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio

__all__ = ["Outcome", "SingleFlight", "SingleFlightStatistics"]

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[R]):
    """A call's value and whether it came from another caller's run."""

    value: R
    shared: bool
    """True when this caller waited and got the value another caller's run produced."""


@dataclass(frozen=True, slots=True)
class SingleFlightStatistics:
    """trio-style counters of a :class:`SingleFlight`."""

    in_flight: int
    """Keys whose call is running now."""
    waiting: int
    """Callers waiting for another caller's run now."""
    led: int
    """Runs of the function so far (take-overs included)."""
    joined: int
    """Calls so far that waited for another caller's run (each counted once)."""


class _Flight(Generic[R]):
    """One run in progress; ``shared`` is what its waiters get when it returned."""

    __slots__ = ("done", "error", "shared", "waiters")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.shared: Outcome[R] | None = None
        self.error: Exception | None = None
        self.waiters = 0


class SingleFlight(Generic[K, R]):
    """Deduplicates concurrent calls per key (see the module docstring for the rules)."""

    __slots__ = ("_flights", "_joined", "_led")

    def __init__(self) -> None:
        self._flights: dict[K, _Flight[R]] = {}
        self._led = 0
        self._joined = 0

    async def run(self, key: K, fn: Callable[[], Awaitable[R]]) -> R:
        """``fn()``'s value, shared with every concurrent caller of ``key``.

        Raises:
            Exception: whatever ``fn`` raised in the run this call led or waited for.
        """
        return (await self.run_shared(key, fn)).value

    async def run_shared(self, key: K, fn: Callable[[], Awaitable[R]]) -> Outcome[R]:
        """As :meth:`run`, and tells whether the value came from another caller's run."""
        joined = False
        while (flight := self._flights.get(key)) is not None:
            if not joined:
                joined = True
                self._joined += 1
            flight.waiters += 1
            try:
                await flight.done.wait()
            finally:
                flight.waiters -= 1
            if flight.error is not None:
                raise flight.error
            if flight.shared is not None:
                return flight.shared
            # The leader was cancelled: look again, and lead unless another waiter took over.
        return Outcome(await self._lead(key, fn), shared=False)

    async def _lead(self, key: K, fn: Callable[[], Awaitable[R]]) -> R:
        flight: _Flight[R] = _Flight()
        self._flights[key] = flight
        self._led += 1
        try:
            value = await fn()
            flight.shared = Outcome(value, shared=True)
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            # Cancellation (any BaseException that is not an Exception) leaves both unset: the
            # waiters wake up, find no outcome and one of them takes over.
            del self._flights[key]
            flight.done.set()
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._flights

    def keys(self) -> frozenset[K]:
        """The keys in flight now; safe to call from a worker thread (one atomic ``dict.copy``)."""
        return frozenset(dict.copy(self._flights))

    def waiters(self) -> dict[K, int]:
        """Each key in flight with how many callers wait for its run."""
        return {key: flight.waiters for key, flight in self._flights.items()}

    def statistics(self) -> SingleFlightStatistics:
        return SingleFlightStatistics(
            in_flight=len(self._flights),
            waiting=sum(flight.waiters for flight in self._flights.values()),
            led=self._led,
            joined=self._joined,
        )
