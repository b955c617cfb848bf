"""CLI commands given something that is not what they expect: a clear error naming it, never a
traceback (``describe pod`` against servers that are not the daemon, ``bench --compare`` with
files that are not reports)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kubelet_sim.cli.main import main
from kubelet_sim.workloads.report import SCHEMA

ANSWERS: dict[str, tuple[int, str, bytes]] = {
    "html": (200, "text/html", b"<html>hello</html>"),
    "text-404": (404, "text/plain", b"nothing here"),
    "json-list": (200, "application/json", b"[1, 2, 3]"),
    "json-missing": (200, "application/json", b'{"name": "p"}'),
    "json-deep": (200, "application/json", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    "huge": (200, "application/json", b" " * (17 * 1024 * 1024)),
    "500": (500, "text/plain", b"boom"),
}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            kind = self.path.split("/")[1] if self.path.count("/") > 1 else "html"
            status, content_type, body = ANSWERS.get(kind, ANSWERS["html"])
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.mark.parametrize("kind", sorted(ANSWERS))
def test_describe_against_a_server_that_is_not_the_daemon(
    server: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["describe", "pod", "ns/name", "--server", f"{server}/{kind}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kubelet-sim: error: ")
    assert "Traceback" not in err
    assert len(err) < 1000


@pytest.mark.parametrize("url", ["http://[::1", "ftp://example.invalid/", "not a url"])
def test_describe_with_a_url_that_is_not_one(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", "pod", "ns/name", "--server", url]) == 1
    assert capsys.readouterr().err.startswith("kubelet-sim: error: ")


@pytest.mark.parametrize(
    ("content", "names"),
    [
        pytest.param('{"a":' * 100_000 + "1" + "}" * 100_000, "nested too deeply", id="deep"),
        pytest.param("[1, 2]", "not a kubelet-sim bench report", id="list"),
        pytest.param(json.dumps({"schema": SCHEMA}), "summary", id="no-summary"),
        pytest.param(
            json.dumps({"schema": SCHEMA, "summary": {"nodes": [1]}}), "summary (nodes)", id="types"
        ),
        pytest.param("\xff\xfe", "not a readable JSON report", id="not-json"),
    ],
)
def test_compare_with_files_that_are_not_reports(
    tmp_path: Path, content: str, names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "report.json"
    path.write_text(content, encoding="utf-8", errors="surrogateescape")
    assert main(["bench", "--compare", str(path), str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"kubelet-sim: error: {path}")
    assert names in err
