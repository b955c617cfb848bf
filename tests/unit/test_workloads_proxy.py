"""The fault proxy on loopback: latency, injected errors, resets mid-answer, outages, passthrough."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import httpx
import pytest

from kubelet_sim.errors import ConfigError
from kubelet_sim.sim.faultproxy import FaultKind, FaultPlan, FaultProxy, FaultWindow

pytestmark = pytest.mark.anyio


async def _serve_http(stream: anyio.abc.SocketStream) -> None:
    """A tiny keep-alive HTTP/1.1 server: ``/bytes/N`` answers N bytes, ``/echo`` the body."""
    buffer = b""
    async with stream:
        while True:
            try:
                while b"\r\n\r\n" not in buffer:
                    buffer += await stream.receive()
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                    await stream.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    return
                method, path = parts[0], parts[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                while len(buffer) < length:
                    buffer += await stream.receive()
                body, buffer = buffer[:length], buffer[length:]
                payload = b"ok"
                if path.startswith("/bytes/"):
                    payload = b"x" * int(path.removeprefix("/bytes/"))
                elif path == "/echo":
                    payload = body
                head_out = f"HTTP/1.1 200 OK\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                await stream.send(head_out + (b"" if method == "HEAD" else payload))
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return


@asynccontextmanager
async def proxied(
    *windows: FaultWindow, seed: int = 0, now: list[float] | None = None
) -> AsyncIterator[tuple[FaultProxy, httpx.AsyncClient]]:
    """An upstream server and a proxy in front of it (a fake clock when ``now`` is given)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.listeners[0].extra(anyio.abc.SocketAttribute.local_port)
    clock = (lambda: now[0]) if now is not None else anyio.current_time
    proxy = FaultProxy(f"127.0.0.1:{port}", FaultPlan(windows, seed=seed), clock=clock)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, _serve_http)
        await tg.start(proxy.run)
        async with httpx.AsyncClient(base_url=f"http://{proxy.host}", timeout=5) as client:
            yield proxy, client
        tg.cancel_scope.cancel()


async def test_plain_forwarding_counts_requests_and_bytes() -> None:
    async with proxied() as (proxy, client):
        answer = await client.get("/bytes/300000")
        assert answer.content == b"x" * 300000
        echo = await client.post("/echo", content=b"hello" * 1000)
        assert echo.content == b"hello" * 1000
        assert (await client.head("/bytes/10")).status_code == 200
    assert proxy.stats.requests == 3
    assert proxy.stats.connections == 1  # keep-alive: one connection for all three
    assert proxy.stats.bytes_to_client > 300000
    assert proxy.stats.bytes_to_upstream > 5000
    assert sum(n for _, n in proxy.served_series()) == proxy.stats.bytes_to_client


async def test_latency_holds_every_request() -> None:
    async with proxied(FaultWindow(FaultKind.LATENCY, delay=0.2)) as (proxy, client):
        for _ in range(2):
            started = time.perf_counter()
            assert (await client.get("/")).status_code == 200
            assert time.perf_counter() - started >= 0.2
    assert proxy.stats.delayed == 2


async def test_errors_window_answers_503_with_an_oci_body_and_keeps_the_connection() -> None:
    now = [0.5]
    window = FaultWindow(FaultKind.ERRORS, start=0.0, end=1.0, share=1.0, status=503)
    async with proxied(window, now=now) as (proxy, client):
        proxy.start_schedule(0.0)
        failed = await client.post("/echo", content=b"body that must be skipped")
        assert failed.status_code == 503
        assert json.loads(failed.content)["errors"][0]["code"] == "UNAVAILABLE"
        head = await client.head("/")
        assert (head.status_code, head.content) == (503, b"")
        now[0] = 1.5  # the window is over: the same connection carries on
        ok = await client.post("/echo", content=b"next request")
        assert (ok.status_code, ok.content) == (200, b"next request")
    assert proxy.stats.injected_errors[503] == 2
    assert proxy.stats.connections == 1


async def test_error_share_is_drawn_from_the_seed() -> None:
    def window() -> FaultWindow:
        return FaultWindow(FaultKind.ERRORS, share=0.5, status=429)

    runs = []
    for _ in range(2):
        async with proxied(window(), seed=7) as (_proxy, client):
            runs.append([(await client.get("/")).status_code for _ in range(40)])
    assert runs[0] == runs[1]
    assert 8 <= runs[0].count(429) <= 32
    assert set(runs[0]) == {200, 429}


async def test_reset_after_bytes_cuts_the_answer() -> None:
    window = FaultWindow(FaultKind.RESETS, share=1.0, after_bytes=100_000)
    async with proxied(window) as (proxy, client):
        with pytest.raises(httpx.TransportError):
            await client.get("/bytes/2000000")
    assert proxy.stats.resets == 1
    assert proxy.stats.bytes_to_client == 100_000


async def test_reset_at_once_and_short_answers_escape_a_late_reset() -> None:
    async with proxied(FaultWindow(FaultKind.RESETS, share=1.0)) as (proxy, client):
        with pytest.raises(httpx.TransportError):
            await client.get("/")
    assert proxy.stats.bytes_to_client == 0
    window = FaultWindow(FaultKind.RESETS, share=1.0, after_bytes=10_000)
    async with proxied(window) as (proxy, client):
        assert (await client.get("/bytes/100")).status_code == 200
    assert proxy.stats.resets == 0


async def test_outage_resets_new_and_open_connections_until_it_ends() -> None:
    now = [0.0]
    async with proxied(FaultWindow(FaultKind.OUTAGE, start=1.0, end=2.0), now=now) as (
        proxy,
        client,
    ):
        proxy.start_schedule(0.0)
        assert (await client.get("/")).status_code == 200  # opens a keep-alive connection
        now[0] = 1.5
        with pytest.raises(httpx.TransportError):
            await client.get("/")  # the open connection is reset when used
        async with httpx.AsyncClient(base_url=f"http://{proxy.host}") as fresh:
            with pytest.raises(httpx.TransportError):
                await fresh.get("/")  # and new connections are reset at once
        now[0] = 2.5
        assert (await client.get("/bytes/5")).content == b"xxxxx"
    assert proxy.stats.outage_resets >= 2


async def test_non_http_bytes_pass_through_untouched() -> None:
    async with proxied(FaultWindow(FaultKind.ERRORS, share=1.0)) as (proxy, _client):
        stream = await anyio.connect_tcp("127.0.0.1", proxy.port)
        async with stream:
            await stream.send(b"\x16\x03\x01\x00\x05hello\r\n\r\n")
            answer = await stream.receive()
    assert answer.startswith(b"HTTP/1.1 400")  # the upstream's answer, not an injected 503
    assert proxy.stats.requests == 0
    assert not proxy.stats.injected_errors


@pytest.mark.parametrize(
    ("upstream", "listen"),
    [
        pytest.param("10.0.0.1:5000", "127.0.0.1", id="private-upstream"),
        pytest.param("example.com:443", "127.0.0.1", id="named-upstream"),
        pytest.param("127.0.0.1:5000", "0.0.0.0", id="wildcard-listen"),
        pytest.param("127.0.0.1", "127.0.0.1", id="no-port"),
    ],
)
def test_only_loopback_addresses(upstream: str, listen: str) -> None:
    with pytest.raises(ConfigError):
        FaultProxy(upstream, listen_host=listen)


def test_loopback_spellings_are_accepted() -> None:
    assert FaultProxy("localhost:5000").upstream_host == "127.0.0.1"
    assert FaultProxy("[::1]:5000").upstream_host == "::1"
    assert FaultProxy("127.0.0.2:80", listen_host="127.0.0.3").listen_host == "127.0.0.3"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"share": 1.5}, id="share"),
        pytest.param({"start": 3.0, "end": 1.0}, id="end-before-start"),
        pytest.param({"status": 200}, id="not-an-error-status"),
        pytest.param({"delay": 0.1, "jitter": 0.5}, id="jitter-above-delay"),
    ],
)
def test_invalid_windows(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="fault"):
        FaultWindow(FaultKind.ERRORS, **fields)  # type: ignore[arg-type]


def test_plan_lists_only_the_relevant_fields() -> None:
    plan = FaultPlan(
        (
            FaultWindow(FaultKind.LATENCY, delay=0.05),
            FaultWindow(FaultKind.OUTAGE, start=1, end=2),
            FaultWindow(FaultKind.RESETS, share=0.1, after_bytes=10),
        )
    )
    assert plan.to_list() == [
        {"kind": "latency", "start": 0.0, "end": None, "delay": 0.05, "jitter": 0.0},
        {"kind": "outage", "start": 1, "end": 2},
        {"kind": "resets", "start": 0.0, "end": None, "share": 0.1, "after_bytes": 10},
    ]
