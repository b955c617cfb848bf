"""SingleFlight: shared values and errors, take-over after a cancelled leader, no caching, stats."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import trio.testing

from kubelet_sim.core.singleflight import Outcome, SingleFlight, SingleFlightStatistics

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param(("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


class Boom(Exception):
    """The leader's failure."""


class Gated:
    """A function whose runs block until released; counts its runs."""

    def __init__(self, value: str = "value") -> None:
        self.value = value
        self.runs = 0
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.error: Exception | None = None

    async def __call__(self) -> str:
        self.runs += 1
        self.started.set()
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return f"{self.value}-{self.runs}"


async def gather(
    flight: SingleFlight[str, str], key: str, fn: Callable[[], Awaitable[str]], count: int
) -> list[Outcome[str] | BaseException]:
    """Start ``count`` callers of ``key`` (the first leads) and collect their outcomes."""
    results: list[Outcome[str] | BaseException] = []

    async def one() -> None:
        try:
            results.append(await flight.run_shared(key, fn))
        except Exception as exc:
            results.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        assert flight.statistics().waiting == count - 1
        if isinstance(fn, Gated):
            fn.release.set()
    return results


async def test_concurrent_callers_share_one_run() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    fn = Gated()
    results = await gather(flight, "k", fn, 5)
    assert fn.runs == 1
    assert all(isinstance(r, Outcome) for r in results)
    assert {r.value for r in results if isinstance(r, Outcome)} == {"value-1"}
    assert sorted(r.shared for r in results if isinstance(r, Outcome)) == [False] + [True] * 4
    assert flight.statistics() == SingleFlightStatistics(in_flight=0, waiting=0, led=1, joined=4)


async def test_statistics_and_views_while_running() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    fn = Gated()
    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(flight.run, "k", fn)
        await anyio.wait_all_tasks_blocked()
        assert "k" in flight
        assert "other" not in flight
        assert flight.keys() == frozenset({"k"})
        assert flight.waiters() == {"k": 2}
        assert flight.statistics() == SingleFlightStatistics(
            in_flight=1, waiting=2, led=1, joined=2
        )
        fn.release.set()
    assert "k" not in flight
    assert flight.keys() == frozenset()
    assert flight.waiters() == {}


async def test_waiters_get_the_leaders_exception_object() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    fn = Gated()
    fn.error = Boom("registry down")
    results = await gather(flight, "k", fn, 4)
    assert fn.runs == 1
    assert len(results) == 4
    assert all(r is fn.error for r in results)
    assert "k" not in flight


async def test_a_failure_is_not_remembered() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Boom("first")
        return "second"

    with pytest.raises(Boom, match="first"):
        await flight.run("k", flaky)
    assert await flight.run("k", flaky) == "second"
    assert calls == 2


async def test_the_entry_is_removed_when_done_so_a_later_call_runs_anew() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    runs = 0

    async def fn() -> str:
        nonlocal runs
        runs += 1
        return f"run-{runs}"

    assert await flight.run("k", fn) == "run-1"
    assert await flight.run("k", fn) == "run-2"
    assert (await flight.run_shared("k", fn)) == Outcome("run-3", shared=False)
    assert flight.statistics() == SingleFlightStatistics(in_flight=0, waiting=0, led=3, joined=0)


async def test_different_keys_run_concurrently() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    a, b = Gated("a"), Gated("b")
    results: dict[str, str] = {}

    async def one(key: str, fn: Gated) -> None:
        results[key] = await flight.run(key, fn)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "a", a)
        tg.start_soon(one, "b", b)
        await anyio.wait_all_tasks_blocked()
        assert flight.keys() == frozenset({"a", "b"})
        assert flight.statistics().waiting == 0
        b.release.set()
        a.release.set()
    assert results == {"a": "a-1", "b": "b-1"}


async def test_a_cancelled_leader_hands_over_to_one_waiter() -> None:
    """The leader's caller gives up: a waiter runs the call itself and the others share it."""
    flight: SingleFlight[str, str] = SingleFlight()
    fn = Gated()
    outcomes: list[Outcome[str]] = []

    async def waiter() -> None:
        outcomes.append(await flight.run_shared("k", fn))

    async with anyio.create_task_group() as tg:
        leader = anyio.CancelScope()

        async def lead() -> None:
            with leader:
                await flight.run("k", fn)
            outcomes.append(Outcome("leader was cancelled", shared=False))

        tg.start_soon(lead)
        await fn.started.wait()
        for _ in range(3):
            tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert flight.waiters() == {"k": 3}
        leader.cancel()
        await anyio.wait_all_tasks_blocked()
        # one waiter took over: it runs fn, the other two wait for it
        assert fn.runs == 2
        assert flight.waiters() == {"k": 2}
        fn.release.set()
    assert Outcome("leader was cancelled", shared=False) in outcomes
    shared = [o for o in outcomes if o.value == "value-2"]
    assert sorted(o.shared for o in shared) == [False, True, True]
    assert flight.statistics() == SingleFlightStatistics(in_flight=0, waiting=0, led=2, joined=3)


async def test_a_leader_that_times_out_poisons_no_one() -> None:
    """``fail_after`` around the leader's call cancels it inside: waiters must not see that."""
    flight: SingleFlight[str, str] = SingleFlight()
    runs = 0

    async def slow_then_fast() -> str:
        nonlocal runs
        runs += 1
        if runs == 1:
            await anyio.sleep(3600)
        return f"run-{runs}"

    results: list[str] = []

    async def impatient() -> None:
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.05):
                await flight.run("k", slow_then_fast)

    async def patient() -> None:
        results.append(await flight.run("k", slow_then_fast))

    async with anyio.create_task_group() as tg:
        tg.start_soon(impatient)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(patient)
    assert results == ["run-2"]
    assert runs == 2


async def test_a_cancelled_leader_without_waiters_leaves_nothing_behind() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    fn = Gated()
    with anyio.move_on_after(0.01) as scope:
        await flight.run("k", fn)
    assert scope.cancelled_caught
    assert "k" not in flight
    fn.release.set()
    assert await flight.run("k", fn) == "value-2"


async def test_a_cancelled_waiter_only_stops_waiting() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    fn = Gated()
    results: list[str] = []

    async def one() -> None:
        results.append(await flight.run("k", fn))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        await fn.started.wait()
        waiter = anyio.CancelScope()

        async def cancelled_waiter() -> None:
            with waiter:
                await flight.run("k", fn)
            results.append("waiter gave up")

        tg.start_soon(cancelled_waiter)
        tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        assert flight.waiters() == {"k": 2}
        waiter.cancel()
        await anyio.wait_all_tasks_blocked()
        assert flight.waiters() == {"k": 1}
        fn.release.set()
    assert sorted(results) == ["value-1", "value-1", "waiter gave up"]
    assert fn.runs == 1


async def test_an_exception_group_of_errors_is_shared() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    release = anyio.Event()

    async def fails_in_a_task_group() -> str:
        await release.wait()
        raise ExceptionGroup("layers", [Boom("a"), Boom("b")])

    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await flight.run("k", fails_in_a_task_group)
        except ExceptionGroup as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert len(errors) == 3
    assert errors[0] is errors[1] is errors[2]


async def test_the_function_runs_in_the_leaders_context() -> None:
    """Context variables (such as the store's lease) are the leader's inside the function."""
    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")
    flight: SingleFlight[str, str] = SingleFlight()
    release = anyio.Event()

    async def whose() -> str:
        await release.wait()
        return who.get()

    results: dict[str, str] = {}

    async def call(name: str) -> None:
        who.set(name)
        results[name] = await flight.run("k", whose)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "leader")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(call, "waiter")
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert results == {"leader": "leader", "waiter": "leader"}


async def test_tuple_keys_and_other_result_types() -> None:
    flight: SingleFlight[tuple[str, str], int] = SingleFlight()

    async def answer() -> int:
        return 42

    assert await flight.run(("image", "handler"), answer) == 42
    assert ("image", "handler") not in flight
