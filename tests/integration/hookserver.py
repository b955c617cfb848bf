"""A loopback HTTP server for lifecycle hooks' ``httpGet``: answers 200 and records each request.

Shared by the daemon tests that check a hook reached it (its requests arrive on a thread).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio

TLS_HANDSHAKE = b"\x16"  # a TLS record of type handshake: a ClientHello
HTTPS_TO_HTTP_ANSWER = (
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the hook server answered."""

    method: str
    path: str
    headers: dict[str, str]


class HookServer:
    """An HTTP server on 127.0.0.1 (in a thread) that answers 200 and records each request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        record = self._record

        class Handler(BaseHTTPRequestHandler):
            def handle(self) -> None:
                # As Go's net/http server: a TLS handshake on a plain HTTP port gets an HTTP 400.
                if self.connection.recv(1, socket.MSG_PEEK) == TLS_HANDSHAKE:
                    self.connection.sendall(HTTPS_TO_HTTP_ANSWER)
                    return
                super().handle()

            def do_GET(self) -> None:
                record(Seen("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
                body = b"ok\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test reads what was seen, not a log

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def seen(self, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self._seen if path is None or s.path == path]

    async def wait_for(self, path: str, timeout: float = 15) -> Seen:  # noqa: ASYNC109
        with anyio.fail_after(timeout):
            while not self.seen(path):  # noqa: ASYNC110 - requests arrive on another thread
                await anyio.sleep(0.02)
        return self.seen(path)[0]

    def __enter__(self) -> HookServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
