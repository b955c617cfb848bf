"""The daemon's HTTP server: protocol edge cases over a real loopback socket."""

from __future__ import annotations

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
