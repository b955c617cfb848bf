"""Hostile loopback HTTP servers: registries that never answer, drip, reset or break the framing.

A real registry cannot misbehave on demand, so the tests (and ``benchmarks/hostile_registry.py``)
start one of these instead. :func:`serve` listens on ``127.0.0.1`` only, on a free port, reads each
request's head (and a declared body) and hands it to a *behaviour*: an async callable that writes
whatever it likes to the raw stream. Every connection lives at most ``lifetime`` seconds and the
whole server stops when the ``async with`` block ends, so a test can never hang on it.

Behaviours: :func:`never_answer`, :func:`answer`, :func:`drip`, :func:`truncate`, :func:`reset`,
:func:`bad_chunking`, :func:`sequence` (one after the other) and :func:`by_path` to route
requests to one of them; :func:`registry_of` is a well-behaved registry serving one image, with
some of its paths replaced by other behaviours. :func:`refusing_port`
holds a bound port that is not listening: connecting to it is refused.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field

import anyio
import anyio.abc

from kubelet_sim.sim.images import Image

__all__ = [
    "Behaviour",
    "HostileRequest",
    "HostileServer",
    "answer",
    "bad_chunking",
    "blob",
    "by_path",
    "drip",
    "manifest_answer",
    "never_answer",
    "refusing_port",
    "registry_of",
    "reset",
    "sequence",
    "serve",
    "truncate",
]

MAX_HEAD = 64 * 1024
_REASONS = {200: "OK", 206: "Partial Content", 401: "Unauthorized", 404: "Not Found"}
_TLS_HANDSHAKE = b"\x16"
_CLOSED = (
    anyio.EndOfStream,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    ConnectionError,
)


@dataclass(frozen=True, slots=True)
class HostileRequest:
    """One request as the server read it."""

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = field(default=b"", repr=False)


Behaviour = Callable[[HostileRequest, anyio.abc.SocketStream], Awaitable[None]]
"""Writes the answer (or nothing) for one request; the connection is read again afterwards."""


@dataclass(slots=True)
class HostileServer:
    """A running hostile server: where it listens and what it was asked."""

    port: int
    requests: list[HostileRequest] = field(default_factory=list)

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as a registry host appears in an image reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def count(self, method: str | None = None, contains: str = "") -> int:
        """How many requests matched ``method`` (any when None) and had ``contains`` in the path."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method) and contains in r.path
        )


@asynccontextmanager
async def serve(behaviour: Behaviour, *, lifetime: float = 30.0) -> AsyncIterator[HostileServer]:
    """Serve ``behaviour`` on a free loopback port until the block ends.

    Args:
        lifetime: the longest any one connection is kept (a never-answering behaviour included).
    """
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    server = HostileServer(port)

    async def connection(stream: anyio.abc.SocketStream) -> None:
        with anyio.move_on_after(lifetime):
            async with stream:
                with suppress(*_CLOSED):
                    await _serve_connection(stream, server, behaviour)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, connection)
            try:
                yield server
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await listener.aclose()


async def _serve_connection(
    stream: anyio.abc.SocketStream, server: HostileServer, behaviour: Behaviour
) -> None:
    buffer = bytearray(await stream.receive())
    if buffer[:1] == _TLS_HANDSHAKE:
        # A plain-HTTP server answers a TLS hello with a 400 (Go's net/http does), so a client
        # probing HTTPS first on a loopback registry falls back to HTTP at once.
        await stream.send(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        return
    while True:
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > MAX_HEAD:
                return
            buffer += await stream.receive()
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest_of_line = lines[0].partition(" ")
        path = rest_of_line.partition(" ")[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        body = bytearray(rest)
        while len(body) < length:
            body += await stream.receive()
        buffer = bytearray(body[length:])
        request = HostileRequest(method, path, headers, bytes(body[:length]))
        server.requests.append(request)
        await behaviour(request, stream)


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def never_answer() -> Behaviour:
    """Accept the request and say nothing, ever (until the connection's lifetime ends)."""

    async def behaviour(request: HostileRequest, stream: anyio.abc.SocketStream) -> None:
        await anyio.sleep_forever()

    return behaviour


def answer(
    status: int = 200, body: bytes = b"", headers: Mapping[str, str] | None = None
) -> Behaviour:
    """A well-formed answer with ``Content-Length`` (no body for ``HEAD``)."""

    async def behaviour(request: HostileRequest, stream: anyio.abc.SocketStream) -> None:
        all_headers = {"Content-Length": str(len(body)), **(headers or {})}
        payload = b"" if request.method == "HEAD" else body
        await stream.send(_head(status, all_headers) + payload)

    return behaviour


def drip(
    body: bytes,
    *,
    interval: float,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    chunk: int = 1,
) -> Behaviour:
    """Headers at once, then ``chunk`` bytes of ``body`` every ``interval`` seconds."""

    async def behaviour(request: HostileRequest, stream: anyio.abc.SocketStream) -> None:
        await stream.send(_head(status, {"Content-Length": str(len(body)), **(headers or {})}))
        if request.method == "HEAD":
            return
        for start in range(0, len(body), chunk):
            await anyio.sleep(interval)
            await stream.send(body[start : start + chunk])

    return behaviour


def truncate(
    body: bytes, *, keep: int, status: int = 200, headers: Mapping[str, str] | None = None
) -> Behaviour:
    """Declare the whole body, send its first ``keep`` bytes, then close the connection."""

    async def behaviour(request: HostileRequest, stream: anyio.abc.SocketStream) -> None:
        head = _head(status, {"Content-Length": str(len(body)), **(headers or {})})
        await stream.send(head + body[:keep])
        await stream.aclose()

    return behaviour


def reset(prefix: bytes = b"") -> Behaviour:
    """Send ``prefix`` (raw bytes, maybe a partial answer) and reset the connection (RST)."""

    async def behaviour(request: HostileRequest, stream: anyio.abc.SocketStream) -> None:
        if prefix:
            await stream.send(prefix)
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()

    return behaviour


def bad_chunking(prefix: bytes = b"{") -> Behaviour:
    """A chunked answer whose second chunk header is not hexadecimal."""

    async def behaviour(request: HostileRequest, stream: anyio.abc.SocketStream) -> None:
        head = _head(200, {"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
        await stream.send(head + b"%x\r\n%s\r\nzz-not-hex\r\n" % (len(prefix), prefix))
        await anyio.sleep_forever()

    return behaviour


def sequence(*behaviours: Behaviour) -> Behaviour:
    """The first request gets the first behaviour, the next the second, ...; the last repeats."""
    served = 0

    async def behaviour(request: HostileRequest, stream: anyio.abc.SocketStream) -> None:
        nonlocal served
        chosen = behaviours[min(served, len(behaviours) - 1)]
        served += 1
        await chosen(request, stream)

    return behaviour


def by_path(routes: Sequence[tuple[str, str, Behaviour]], default: Behaviour) -> Behaviour:
    """The first route whose method (``"*"`` for any) and path fragment match, else ``default``."""

    async def behaviour(request: HostileRequest, stream: anyio.abc.SocketStream) -> None:
        for method, fragment, chosen in routes:
            if method in ("*", request.method) and fragment in request.path:
                await chosen(request, stream)
                return
        await default(request, stream)

    return behaviour


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, not listening) while the block runs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def manifest_answer(image: Image) -> Behaviour:
    """A manifest answer for ``image`` (HEAD or GET)."""
    return answer(
        200,
        image.manifest.data,
        {
            "Content-Type": image.manifest.media_type,
            "Docker-Content-Digest": str(image.manifest.digest),
        },
    )


def registry_of(image: Image, **overrides: Behaviour) -> Behaviour:
    """A well-behaved registry serving ``image``, with some paths replaced by ``overrides``.

    Keys: ``head`` (HEAD of a manifest), ``manifest`` (GET of a manifest), ``config``, ``layer``
    (every layer).
    """
    routes = [
        ("HEAD", "/manifests/", overrides.get("head", manifest_answer(image))),
        ("GET", "/manifests/", overrides.get("manifest", manifest_answer(image))),
    ]
    routes.append(("*", str(image.config.digest), overrides.get("config", blob(image.config.data))))
    for layer in image.layers:
        routes.append(("*", str(layer.digest), overrides.get("layer", blob(layer.data))))
    return by_path(routes, answer(404))


def blob(data: bytes) -> Behaviour:
    """A blob's answer."""
    return answer(200, data, {"Content-Type": "application/octet-stream"})
