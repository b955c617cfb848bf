"""A small HTTP/1.1 server on anyio and h11, so the daemon's API shares the engine's event loop.

h11 already comes with httpx, so this adds no dependency, and it runs on asyncio and trio alike.
Each connection serves requests until the client closes or asks to; request bodies are limited,
reading a request has a deadline, and a handler that raises answers 500 without taking the server
down. At most ``max_connections`` connections are open: past that the oldest idle one (waiting
for its next request) is closed to make room, and a new one is refused with 503 when none is
idle. ``accept()`` failing for lack of resources (``EMFILE``, ``ENFILE``, ``ENOBUFS``,
``ENOMEM``) closes the oldest idle connection and backs off (5 ms doubling to 1 s) instead of
ending the server, and the daemon with it.

A response with a ``stream`` (a watch) is sent chunked as the stream yields, without the read
deadline, until the stream ends or the client goes away (a read on the connection ends: every
watch is ended by its client, and must not outlive it); the connection closes after it.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import itertools
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
import anyio.abc
import anyio.streams.stapled
import h11
import structlog

from kubelet_sim.errors import ConfigError

log = structlog.get_logger(__name__)

MAX_BODY = 4 * 1024 * 1024
READ_TIMEOUT = 30.0  # per request, including an idle keep-alive connection's wait for the next
MAX_CONNECTIONS = 512
ACCEPT_BACKOFF = (0.005, 1.0)  # first and longest pause after accept() ran out of resources
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(slots=True)
class _Open:
    """One open connection: its cancel scope, and since when it waits for a request (None: busy)."""

    scope: anyio.CancelScope
    idle_since: float | None = None


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    connections: int
    idle: int
    accept_errors: int
    closed_idle: int
    refused: int


def _peer(stream: anyio.abc.SocketStream) -> str:
    try:
        address = stream.extra(anyio.abc.SocketAttribute.remote_address)
    except (anyio.TypedAttributeLookupError, OSError):
        return ""
    return str(address[0]) if isinstance(address, tuple) else ""


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""
    peer: str = ""
    """The client's IP address."""

    @property
    def from_loopback(self) -> bool:
        """The client is on this machine (127.0.0.0/8 or ::1)."""
        try:
            return ipaddress.ip_address(self.peer.removeprefix("::ffff:")).is_loopback
        except ValueError:
            return False

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


ChunkSender = Callable[[bytes], Awaitable[None]]
StreamWriter = Callable[[ChunkSender], Awaitable[None]]
"""A streaming body: called with a function that sends one chunk, it returns when done."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = field(default=())
    stream: StreamWriter | None = field(default=None, compare=False)
    """Writes the body chunk by chunk (sent chunked after the headers), in place of ``body``."""

    @classmethod
    def json(cls, status: int, doc: object) -> Response:
        return cls(status, json.dumps(doc, indent=2).encode() + b"\n")

    @classmethod
    def error(cls, status: int, message: str, **extra: object) -> Response:
        return cls.json(status, {"error": message, **extra})

    @classmethod
    def text(
        cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8"
    ) -> Response:
        return cls(status, text.encode(), content_type)


Handler = Callable[[Request], Awaitable[Response]]


class HTTPServer:
    """Serves ``handler`` on a TCP listener until cancelled.

    Args:
        handler: answers each request; an exception becomes a 500.
        max_body: the largest request body accepted (413 above it).
        read_timeout: seconds to wait for a whole request, from the end of the previous answer
            on a keep-alive connection; past it the connection is closed.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        max_body: int = MAX_BODY,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.handler = handler
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._open: dict[int, _Open] = {}
        self._ids = itertools.count()
        self._accept_errors = self._closed_idle = self._refused = 0

    def statistics(self) -> ServerStatistics:
        idle = sum(1 for c in self._open.values() if c.idle_since is not None)
        return ServerStatistics(
            len(self._open), idle, self._accept_errors, self._closed_idle, self._refused
        )

    async def serve(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        """Accept and serve connections until cancelled (every address of a multi-listener)."""
        inner = (
            listener.listeners
            if isinstance(listener, anyio.streams.stapled.MultiListener)
            else [listener]
        )
        sockets = [one for one in inner if isinstance(one, anyio.abc.SocketListener)]
        if len(sockets) != len(inner):
            raise TypeError("HTTPServer.serve needs TCP socket listeners")
        async with listener, anyio.create_task_group() as tg:
            for one in sockets:
                tg.start_soon(self._accept_loop, one, tg)

    async def _accept_loop(
        self, listener: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup
    ) -> None:
        pause = ACCEPT_BACKOFF[0]
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                self._accept_errors += 1
                closed = self._close_oldest_idle()
                log.warning(
                    "api.accept_failed",
                    error=exc.strerror or str(exc),
                    connections=len(self._open),
                    closed_idle=closed,
                    retry_in=pause,
                )
                await anyio.sleep(pause)
                pause = min(pause * 2, ACCEPT_BACKOFF[1])
                continue
            pause = ACCEPT_BACKOFF[0]
            if len(self._open) >= self.max_connections and not self._close_oldest_idle():
                self._refused += 1
                tg.start_soon(self._refuse, stream)
                continue
            key = next(self._ids)
            self._open[key] = _Open(anyio.CancelScope())
            tg.start_soon(self._connection, stream, key)

    def _close_oldest_idle(self) -> bool:
        """Close the connection that has waited longest for a request; False if none waits."""
        idle = [(c.idle_since, k) for k, c in self._open.items() if c.idle_since is not None]
        if not idle:
            return False
        _, key = min(idle)
        self._open.pop(key).scope.cancel()
        self._closed_idle += 1
        return True

    async def _refuse(self, stream: anyio.abc.SocketStream) -> None:
        """Answer 503 before any request was read (h11 only answers a request), then close."""
        body = Response.error(503, "too many connections").body
        head = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        )
        async with stream:
            with anyio.move_on_after(1), contextlib.suppress(anyio.BrokenResourceError, OSError):
                await stream.send(head.encode() + body)

    async def _connection(self, stream: anyio.abc.SocketStream, key: int) -> None:
        state = self._open.get(key)
        if state is None:  # closed to make room before it started
            await stream.aclose()
            return
        try:
            with state.scope:
                await self._serve_connection(stream, state)
        except (
            Exception
        ):  # one connection (a watch stream, an unsendable answer) never ends the server
            log.exception("api.connection_failed")
        finally:
            self._open.pop(key, None)
            await stream.aclose()

    async def _serve_connection(self, stream: anyio.abc.SocketStream, state: _Open) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        async with stream:
            while True:
                try:
                    request = await self._read_request(conn, stream, state)
                except _Reject as reject:
                    await self._send(conn, stream, reject.response, close=True)
                    return
                except (anyio.EndOfStream, anyio.BrokenResourceError, TimeoutError, OSError):
                    return
                if request is None:
                    return
                try:
                    response = await self.handler(request)
                except Exception:  # the API must survive a failing handler
                    log.exception("api.handler_failed", method=request.method, path=request.path)
                    response = Response.error(500, "internal error")
                if response.stream is not None:
                    await self._send_stream(conn, stream, response)
                    return
                keep_alive = conn.our_state is h11.SEND_RESPONSE and _keep_alive(request)
                await self._send(conn, stream, response, close=not keep_alive)
                if not keep_alive or conn.our_state is not h11.DONE:
                    return
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return

    async def _read_request(
        self, conn: h11.Connection, stream: anyio.abc.SocketStream, state: _Open
    ) -> Request | None:
        state.idle_since = anyio.current_time()  # until the first bytes of a request arrive
        try:
            return await self._read_request_within_deadline(conn, stream, state)
        finally:
            state.idle_since = None

    async def _read_request_within_deadline(
        self, conn: h11.Connection, stream: anyio.abc.SocketStream, state: _Open
    ) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        with anyio.fail_after(self.read_timeout):
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    raise _Reject(Response.error(400, f"bad request: {exc}")) from exc
                if event is h11.NEED_DATA:
                    if conn.they_are_waiting_for_100_continue:
                        await stream.send(
                            conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
                        )
                    data = await stream.receive(65536)
                    state.idle_since = None
                    conn.receive_data(data)
                    if not data and head is None:
                        return None
                    continue
                if isinstance(event, h11.Request):
                    head = event
                    length = _header(event.headers, b"content-length")
                    if length is not None and length.isdigit() and int(length) > self.max_body:
                        raise _Reject(
                            Response.error(413, f"request body over {self.max_body} bytes")
                        )
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > self.max_body:
                        raise _Reject(
                            Response.error(413, f"request body over {self.max_body} bytes")
                        )
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return None
        assert head is not None
        target = head.target.decode("latin-1")
        parts = urlsplit(target)
        return Request(
            method=head.method.decode("ascii"),
            path=unquote(parts.path),
            query=parse_qs(parts.query),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers},
            body=bytes(body),
            peer=_peer(stream),
        )

    async def _send(
        self,
        conn: h11.Connection,
        stream: anyio.abc.SocketStream,
        response: Response,
        *,
        close: bool,
    ) -> None:
        if conn.our_state is not h11.SEND_RESPONSE:
            if conn.our_state is h11.IDLE and conn.their_state is h11.ERROR:
                pass  # h11 lets us answer a malformed request
            else:
                return
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Server", "kubelet-sim"),
            *response.headers,
        ]
        if close:
            headers.append(("Connection", "close"))
        try:
            reason = _reason(response.status)
            data = conn.send(
                h11.Response(status_code=response.status, headers=headers, reason=reason)
            )
            data += conn.send(h11.Data(data=response.body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
            await stream.send(data)
        except (h11.LocalProtocolError, anyio.BrokenResourceError, OSError):
            return

    async def _send_stream(
        self, conn: h11.Connection, stream: anyio.abc.SocketStream, response: Response
    ) -> None:
        """Headers, then each chunk as the response's stream yields it, until it ends or the
        client closes its side."""
        assert response.stream is not None
        headers = [
            ("Content-Type", response.content_type),
            ("Transfer-Encoding", "chunked"),
            ("Server", "kubelet-sim"),
            ("Connection", "close"),
            *response.headers,
        ]
        writer = response.stream

        async def until_client_leaves(scope: anyio.CancelScope) -> None:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                while await stream.receive(4096):
                    pass  # a client says nothing while it watches
            scope.cancel()

        async def send_chunk(chunk: bytes) -> None:
            if chunk:
                await stream.send(conn.send(h11.Data(data=chunk)) or b"")

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(until_client_leaves, tg.cancel_scope)
                head = h11.Response(
                    status_code=response.status, headers=headers, reason=_reason(response.status)
                )
                await stream.send(conn.send(head) or b"")
                await writer(send_chunk)
                await stream.send(conn.send(h11.EndOfMessage()) or b"")
                tg.cancel_scope.cancel()
        except (h11.LocalProtocolError, anyio.BrokenResourceError, OSError):
            return


class _Reject(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _keep_alive(request: Request) -> bool:
    return request.headers.get("connection", "").lower() != "close"


_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) for ``--listen``.

    Raises:
        ConfigError: naming the flag and value.
    """
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    # ASCII digits only ("²" passes str.isdigit, int() refuses it), at most 5 of them (int() of
    # thousands of digits is refused too).
    if not sep or not host or not _PORT.fullmatch(port) or not 0 <= int(port) <= 65535:
        shown = value if len(value) <= 100 else f"{value[:100]}..."
        raise ConfigError(None, "--listen", f"want HOST:PORT with a port of 0-65535, got {shown!r}")
    return host, int(port)
