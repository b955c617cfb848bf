"""A loopback TCP proxy that injects registry faults on a schedule: latency, errors, resets, outages.

Placed between simulated nodes and a registry (the nodes pull ``PROXY_HOST:PORT/repo:tag``), it
forwards bytes both ways and, while a :class:`FaultWindow` is active (times in seconds since the
proxy's schedule started; the dice are :class:`~kubelet_sim.sim.faults.FaultDraws`, shared
with the modelled registry of virtual runs):

- ``latency``: holds each HTTP request for ``delay`` (± ``jitter``) before forwarding it;
- ``errors``: answers a ``share`` of HTTP requests itself with ``status`` (503 by default), an
  OCI error body and ``Retry-After`` when the window sets ``retry_after``, without forwarding
  them: the registry's own answer for an overloaded backend (or a rate limit, with 429);
- ``resets``: resets (TCP RST) the connection of a ``share`` of requests, at once or after
  ``after_bytes`` bytes of the answer, as a broken network path does mid-blob;
- ``outage``: resets every connection, new ones at once and open ones as soon as a byte moves,
  as a registry that went away.

The client-to-registry direction is parsed as HTTP/1.x request framing (request line, headers,
``Content-Length`` body) so faults act per request on keep-alive connections; anything that does not
look like HTTP/1.x (a TLS hello) is forwarded untouched. It only ever binds and connects loopback
addresses: it is a test instrument, not a network tool.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import anyio.abc
import structlog
from anyio.abc import SocketAttribute

from kubelet_sim.errors import ConfigError
from kubelet_sim.sim.faults import FaultDraws, FaultKind, FaultPlan, FaultWindow

__all__ = [
    "FaultKind",
    "FaultPlan",
    "FaultProxy",
    "FaultWindow",
    "ProxyStatistics",
    "loopback_address",
    "split_host_port",
]

log = structlog.get_logger(__name__)

MAX_HEAD = 64 * 1024
READ_SIZE = 256 * 1024
_REQUEST_LINE = re.compile(rb"^[A-Z]{3,10} \S+ HTTP/1\.[01]\r\n")
_ERROR_BODY = (
    b'{"errors":[{"code":"UNAVAILABLE","message":"service unavailable '
    b'(injected by the kubelet-sim fault proxy)"}]}'
)
_REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip


@dataclass(slots=True)
class ProxyStatistics:
    """What the proxy saw and did since it started."""

    connections: int = 0
    requests: int = 0
    delayed: int = 0
    injected_errors: Counter[int] = field(default_factory=Counter)
    resets: int = 0
    outage_resets: int = 0
    bytes_to_client: int = 0
    bytes_to_upstream: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "connections": self.connections,
            "requests": self.requests,
            "delayed": self.delayed,
            "injected_errors": {str(k): v for k, v in sorted(self.injected_errors.items())},
            "resets": self.resets,
            "outage_resets": self.outage_resets,
            "bytes_to_client": self.bytes_to_client,
            "bytes_to_upstream": self.bytes_to_upstream,
        }


def loopback_address(host: str, what: str = "address") -> str:
    """``host`` as a loopback IP literal (``localhost`` is 127.0.0.1).

    Raises:
        ConfigError: ``host`` is not a loopback address.
    """
    literal = "127.0.0.1" if host == "localhost" else host.strip("[]")
    try:
        is_loopback = ipaddress.ip_address(literal).is_loopback
    except ValueError:
        is_loopback = False
    if not is_loopback:
        raise ConfigError(None, what, f"{host!r} is not a loopback address (127.0.0.0/8 or ::1)")
    return literal


def split_host_port(value: str, what: str = "registry") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a pair.

    Raises:
        ConfigError: not ``HOST:PORT`` with a port in 1-65535.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(None, what, f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class _Reset(Exception):
    """Internal: this connection is to be reset."""


@dataclass(slots=True)
class _Connection:
    client: anyio.abc.SocketStream
    upstream: anyio.abc.SocketStream | None = None
    reset_after: int | None = None  # answer bytes still allowed before a reset
    closed: bool = False


class FaultProxy:
    """Forwards a loopback port to a loopback upstream, injecting the plan's faults.

    Run it with :meth:`run` in a task group (``await tg.start(proxy.run)`` returns once it
    listens); the schedule's time zero is then, unless :meth:`start_schedule` moves it.
    """

    def __init__(
        self,
        upstream: str,
        plan: FaultPlan | None = None,
        *,
        listen_host: str = "127.0.0.1",
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        host, port = split_host_port(upstream, "upstream")
        self.upstream_host = loopback_address(host, "upstream")
        self.upstream_port = port
        self.listen_host = loopback_address(listen_host, "listen_host")
        self.plan = plan or FaultPlan()
        self.clock = clock
        self.stats = ProxyStatistics()
        self.port = 0
        self._draws = FaultDraws(self.plan, clock)
        self._scheduled = False
        self._served: Counter[int] = Counter()  # bytes to clients per 100 ms since t0

    @property
    def host(self) -> str:
        """``HOST:PORT`` to use in image references."""
        if ":" in self.listen_host:
            return f"[{self.listen_host}]:{self.port}"
        return f"{self.listen_host}:{self.port}"

    def start_schedule(self, t0: float | None = None) -> None:
        """Make ``t0`` (default: now) time zero of the fault schedule."""
        self._draws.start_schedule(t0)
        self._scheduled = True

    def elapsed(self) -> float:
        return self._draws.elapsed()

    def served_series(self, step: float = 0.1) -> list[tuple[float, int]]:
        """Bytes sent to clients per ``step`` seconds (a multiple of 0.1) since time zero, every
        step up to the last one with bytes."""
        factor = max(1, round(step / 0.1))
        out: Counter[int] = Counter()
        for slot, n in self._served.items():
            out[max(slot, 0) // factor] += n
        last = max(out, default=-1)
        return [(round(i * factor * 0.1, 3), out.get(i, 0)) for i in range(last + 1)]

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled."""
        listener = await anyio.create_tcp_listener(local_host=self.listen_host, local_port=0)
        self.port = listener.listeners[0].extra(SocketAttribute.local_port)
        if not self._scheduled:
            self.start_schedule()
        log.info("faultproxy.listening", host=self.host, upstream=self.upstream_port)
        async with listener:
            task_status.started()
            await listener.serve(self._handle)

    # -- one connection ------------------------------------------------------------------

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        self.stats.connections += 1
        conn = _Connection(client)
        try:
            if self._draws.outage():
                raise _Reset("outage")
            try:
                conn.upstream = await anyio.connect_tcp(self.upstream_host, self.upstream_port)
            except OSError:
                raise _Reset("upstream unreachable") from None
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._answers, conn, tg.cancel_scope)
                await self._requests(conn)
                tg.cancel_scope.cancel()
        except* _Reset as group:
            reason = str(group.exceptions[0])
            if reason == "outage":
                self.stats.outage_resets += 1
            else:
                self.stats.resets += 1
            _abort(conn.client)
            if conn.upstream is not None:
                _abort(conn.upstream)
        except* (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # either side went away: nothing left to forward
        except* Exception:
            log.exception("faultproxy.connection_failed")  # one broken connection, not the proxy
        finally:
            conn.closed = True
            with anyio.CancelScope(shield=True):
                await client.aclose()
                if conn.upstream is not None:
                    await conn.upstream.aclose()

    def _check_outage(self) -> None:
        if self._draws.outage():
            raise _Reset("outage")

    async def _answers(self, conn: _Connection, scope: anyio.CancelScope) -> None:
        """Registry to client, counting bytes and cutting answers marked for a reset."""
        assert conn.upstream is not None
        try:
            async for chunk in conn.upstream:
                self._check_outage()
                if conn.reset_after is not None:
                    allowed = conn.reset_after
                    if len(chunk) >= allowed:
                        if allowed:
                            await self._to_client(conn, chunk[:allowed])
                        raise _Reset("injected")
                    conn.reset_after -= len(chunk)
                await self._to_client(conn, chunk)
        except anyio.EndOfStream:
            pass
        # The registry closed its side: so do we (after what it sent).
        with anyio.CancelScope(shield=True):
            await conn.client.aclose()
        scope.cancel()

    async def _to_client(self, conn: _Connection, data: bytes) -> None:
        await conn.client.send(data)
        self.stats.bytes_to_client += len(data)
        self._served[int(self.elapsed() * 10)] += len(data)

    async def _to_upstream(self, conn: _Connection, data: bytes) -> None:
        assert conn.upstream is not None
        await conn.upstream.send(data)
        self.stats.bytes_to_upstream += len(data)

    async def _requests(self, conn: _Connection) -> None:
        """Client to registry, one HTTP request at a time; raw passthrough for non-HTTP bytes."""
        buffer = bytearray()
        while True:
            end = buffer.find(b"\r\n\r\n")
            while end < 0:
                if len(buffer) > MAX_HEAD or (buffer and not _maybe_http(buffer)):
                    await self._passthrough(conn, buffer)
                    return
                try:
                    chunk = await conn.client.receive(READ_SIZE)
                except anyio.EndOfStream:
                    return
                self._check_outage()
                buffer += chunk
                end = buffer.find(b"\r\n\r\n")
            head = bytes(buffer[: end + 4])
            del buffer[: end + 4]
            if not _REQUEST_LINE.match(head):
                await self._passthrough(conn, bytearray(head) + buffer)
                return
            method, length, chunked = _parse_head(head)
            self.stats.requests += 1
            conn.reset_after = None
            await self._apply_latency()
            self._check_outage()
            error = self._draws.draw(FaultKind.ERRORS)
            if error is not None and not chunked:
                buffer = await self._discard_body(conn, buffer, length)
                await self._answer_error(conn, method, error)
                continue
            reset = self._draws.draw(FaultKind.RESETS)
            if reset is not None:
                if reset.after_bytes == 0:
                    raise _Reset("injected")
                conn.reset_after = reset.after_bytes
            await self._to_upstream(conn, head)
            if chunked:
                await self._passthrough(conn, buffer)
                return
            buffer = await self._forward_body(conn, buffer, length)

    async def _apply_latency(self) -> None:
        delay = self._draws.latency()
        if delay > 0:
            self.stats.delayed += 1
            await anyio.sleep(delay)

    async def _answer_error(self, conn: _Connection, method: str, window: FaultWindow) -> None:
        status = window.status
        self.stats.injected_errors[status] += 1
        body = b"" if method == "HEAD" else _ERROR_BODY
        retry_after = ""
        if window.retry_after is not None:
            retry_after = f"Retry-After: {round(window.retry_after)}\r\n"
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(_ERROR_BODY)}\r\n{retry_after}"
            "Docker-Distribution-Api-Version: registry/2.0\r\n\r\n"
        ).encode()
        await self._to_client(conn, head + body)

    async def _forward_body(self, conn: _Connection, buffer: bytearray, length: int) -> bytearray:
        while length > 0:
            if not buffer:
                buffer += await conn.client.receive(READ_SIZE)
                self._check_outage()
            part = bytes(buffer[:length])
            del buffer[: len(part)]
            length -= len(part)
            await self._to_upstream(conn, part)
        return buffer

    async def _discard_body(self, conn: _Connection, buffer: bytearray, length: int) -> bytearray:
        while length > len(buffer):
            length -= len(buffer)
            buffer = bytearray(await conn.client.receive(READ_SIZE))
        del buffer[:length]
        return buffer

    async def _passthrough(self, conn: _Connection, pending: bytearray) -> None:
        if pending:
            await self._to_upstream(conn, bytes(pending))
        try:
            async for chunk in conn.client:
                self._check_outage()
                await self._to_upstream(conn, chunk)
        except anyio.EndOfStream:
            pass


def _maybe_http(buffer: bytearray) -> bool:
    """False once the first bytes cannot start an HTTP/1.x request line (e.g. a TLS hello)."""
    first = bytes(buffer[:10])
    token = first.split(b" ", 1)[0]
    return token.isalpha() and token.isupper() if token else False


def _parse_head(head: bytes) -> tuple[str, int, bool]:
    """(method, Content-Length, chunked?) of a request head."""
    lines = head.decode("latin-1").split("\r\n")
    method = lines[0].split(" ", 1)[0]
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length" and value.strip().isdigit():
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    return method, length, chunked


def _abort(stream: anyio.abc.SocketStream) -> None:
    """Make the next close send a TCP RST instead of a FIN (``SO_LINGER`` 0)."""
    try:
        sock: socket.socket = stream.extra(SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, anyio.TypedAttributeLookupError):
        pass
