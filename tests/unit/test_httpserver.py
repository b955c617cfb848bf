"""The daemon's HTTP server: protocol edge cases over a real loopback socket."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import pytest

from kubelet_sim.node.httpserver import HTTPServer, Request, Response

pytestmark = pytest.mark.anyio

# Short, so a keep-alive connection the client leaves open (after a 500, say) is closed by the
# server at once instead of after the daemon's 30 s; still far longer than a loopback request.
READ_TIMEOUT = 0.3


async def echo(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    return Response.json(
        200, {"method": request.method, "path": request.path, "size": len(request.body)}
    )


@pytest.fixture
async def server() -> AsyncIterator[int]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
    async with anyio.create_task_group() as tg:
        tg.start_soon(HTTPServer(echo, max_body=1024, read_timeout=READ_TIMEOUT).serve, listener)
        yield port
        tg.cancel_scope.cancel()


async def exchange(port: int, raw: bytes) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(raw)
        chunks = []
        with anyio.move_on_after(5):
            try:
                while True:
                    chunks.append(await stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
        return b"".join(chunks)


async def test_keep_alive_serves_two_requests_on_one_connection(server: int) -> None:
    raw = (
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answer = await exchange(server, raw)
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert b'"/a"' in answer
    assert b'"/b"' in answer


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(b"NOT HTTP AT ALL\r\n\r\n", b"400 Bad Request", id="garbage"),
        pytest.param(
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
            b"413",
            id="declared-too-large",
        ),
        pytest.param(
            b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n"
            + b"y" * 2048
            + b"\r\n0\r\n\r\n",
            b"413",
            id="chunked-too-large",
        ),
        pytest.param(
            b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n",
            b"500 Internal Server Error",
            id="handler-raises",
        ),
    ],
)
async def test_bad_requests_get_an_answer_and_the_server_survives(
    server: int, raw: bytes, status: bytes
) -> None:
    answer = await exchange(server, raw)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    ok = await exchange(server, b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 OK")


async def test_an_idle_keep_alive_connection_is_closed_at_the_read_timeout(server: int) -> None:
    async with await anyio.connect_tcp("127.0.0.1", server) as stream:
        await stream.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        with anyio.fail_after(5):
            try:
                while True:
                    answer += await stream.receive()
            except anyio.EndOfStream:
                pass  # the server hung up on the idle connection
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" not in answer  # it was kept alive, then timed out


async def test_expect_100_continue_is_answered(server: int) -> None:
    async with await anyio.connect_tcp("127.0.0.1", server) as stream:
        await stream.send(
            b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n"
        )
        with anyio.fail_after(2):
            first = await stream.receive()
        assert first.startswith(b"HTTP/1.1 100")
        await stream.send(b"abc")
        rest = b""
        with anyio.move_on_after(2):
            try:
                while True:
                    rest += await stream.receive()
            except anyio.EndOfStream:
                pass
    assert b"HTTP/1.1 200 OK" in first + rest
    assert b'"size": 3' in first + rest


async def _get(port: int, path: str = "/ok") -> bytes:
    raw = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    return await exchange(port, raw)


async def test_past_max_connections_the_oldest_idle_connection_makes_room() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
    server = HTTPServer(echo, read_timeout=30, max_connections=4)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, listener)
        idle = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(6)]
        with anyio.fail_after(5):
            while server.statistics().closed_idle < 2:  # noqa: ASYNC110 - polls the server
                await anyio.sleep(0.01)
        # The two oldest were closed (they see end of stream); the newest four stay open.
        for stream in idle[:2]:
            with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await stream.receive()
        assert server.statistics().connections == 4
        # A request still gets through: it takes the place of another idle connection.
        assert b"HTTP/1.1 200 OK" in await _get(port)
        for stream in idle:
            await stream.aclose()
        tg.cancel_scope.cancel()


async def test_with_every_connection_busy_a_new_one_is_refused_with_503() -> None:
    release = anyio.Event()

    async def slow(request: Request) -> Response:
        await release.wait()
        return Response.text(200, "done")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
    server = HTTPServer(slow, max_connections=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, listener)
        busy = await anyio.connect_tcp("127.0.0.1", port)
        await busy.send(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        with anyio.fail_after(5):
            while server.statistics().connections < 1 or server.statistics().idle:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        answer = await _get(port)
        assert answer.startswith(b"HTTP/1.1 503")
        assert b"too many connections" in answer
        assert server.statistics().refused == 1
        release.set()
        assert b"200 OK" in await busy.receive()
        await busy.aclose()
        tg.cancel_scope.cancel()


class _Exhausted(anyio.abc.SocketListener):
    """A real listener whose first ``failures`` accepts fail as a process out of descriptors."""

    def __init__(self, inner: anyio.abc.SocketListener, failures: int, code: int) -> None:
        self.inner, self.failures, self.code = inner, failures, code

    async def accept(self) -> anyio.abc.SocketStream:
        if self.failures:
            self.failures -= 1
            raise OSError(self.code, os.strerror(self.code))
        return await self.inner.accept()

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def _raw_socket(self) -> socket.socket:
        return self.inner._raw_socket


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
async def test_accept_out_of_resources_backs_off_and_keeps_serving(code: int) -> None:
    multi = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    inner = multi.listeners[0]
    assert isinstance(inner, anyio.abc.SocketListener)
    port = int(inner.extra(anyio.abc.SocketAttribute.local_port))
    server = HTTPServer(echo)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, _Exhausted(inner, failures=3, code=code))
        assert b"HTTP/1.1 200 OK" in await _get(port)
        assert server.statistics().accept_errors == 3
        tg.cancel_scope.cancel()


async def test_other_accept_errors_still_end_the_server() -> None:
    multi = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    inner = multi.listeners[0]
    assert isinstance(inner, anyio.abc.SocketListener)
    with pytest.raises(ExceptionGroup) as info:
        await HTTPServer(echo).serve(_Exhausted(inner, failures=1, code=errno.EBADF))
    assert info.group_contains(OSError)
