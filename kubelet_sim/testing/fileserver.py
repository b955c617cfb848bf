"""A loopback static file server that records request headers: the "blob storage" origin that a
registry's ``redirect`` storage middleware sends clients to, so tests can check what crossed over."""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Handler(SimpleHTTPRequestHandler):
    server: _RecordingServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.record(self.command, self.path, dict(self.headers.items()))
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes="):
            self._send_range(range_header)
            return
        super().do_GET()

    def do_HEAD(self) -> None:
        self.server.record(self.command, self.path, dict(self.headers.items()))
        super().do_HEAD()

    def _send_range(self, header: str) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start_text, _, end_text = header[len("bytes=") :].partition("-")
        start = int(start_text)
        end = int(end_text) if end_text else len(data) - 1
        if start >= len(data):
            self.send_error(416)
            return
        body = data[start : end + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()

    def record(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((method, path, headers))


class RecordingFileServer:
    """Serves ``root`` on ``127.0.0.1`` and keeps every request's method, path and headers."""

    def __init__(self, root: Path) -> None:
        handler = partial(_Handler, directory=str(root))
        self._server = _RecordingServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[tuple[str, str, dict[str, str]]]:
        return list(self._server.requests)

    def start(self) -> RecordingFileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
