"""What ``kubelet-sim pull`` leaves unloaded, and that httpcore still works under trio without
having imported it at load (``kubelet_sim._lean_imports``)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

_LOADED_AFTER_A_PULL = """
import contextlib, io, json, sys
from kubelet_sim.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    status = main(["pull", sys.argv[1], "--root", sys.argv[2], "--output", "json"])
print(json.dumps([status, sorted(sys.modules)]))
"""


def test_a_pull_loads_neither_trio_yaml_prometheus_nor_the_container_half(tmp_path: Path) -> None:
    # A whole pull up to the registry: node, store, client, a connection (refused, not retried).
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        image = f"127.0.0.1:{closed.getsockname()[1]}/lean/imports:v1"
    out = subprocess.run(
        [sys.executable, "-c", _LOADED_AFTER_A_PULL, image, str(tmp_path / "root")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    status, modules = json.loads(out.splitlines()[-1])
    loaded = set(modules)
    assert status == 1  # ErrImagePull: connection refused
    assert {"httpx", "httpcore", "structlog", "sqlite3", "kubelet_sim.node.builder"} <= loaded
    unwanted = {
        "prometheus_client",  # nothing scrapes a one-shot pull's metrics
        "trio",
        "yaml",
        "kubelet_sim.config.yamlsafe",
        "kubelet_sim.runtime.containers",
        "kubelet_sim.runtime.runc",
        "kubelet_sim.runtime.hooks",
    }
    assert not unwanted & loaded
    assert not {m for m in loaded if m.startswith("kubelet_sim.k8s")}


_HTTPCORE_UNDER_TRIO = """
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kubelet_sim  # noqa: F401
import httpcore, httpcore._synchronization as sync, httpx

assert "trio" not in sys.modules, "httpcore imported trio at load"

class Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
threading.Thread(target=server.serve_forever, daemon=True).start()

import trio

async def get():
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{server.server_port}/")
        return response.status_code, response.text

assert trio.run(get) == (200, "ok")
assert sync.trio is trio  # the stand-in put trio in its place on first use
from httpcore._backends.trio import TrioBackend
assert httpcore.TrioBackend is TrioBackend
server.shutdown()
print("fine")
"""


def test_httpcore_loaded_without_trio_still_runs_under_trio() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _HTTPCORE_UNDER_TRIO], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fine"


def test_httpcore_trio_backend_is_the_real_class_on_first_access() -> None:
    code = (
        "import sys, kubelet_sim, httpcore\n"
        "assert 'trio' not in sys.modules\n"
        "backend = httpcore.TrioBackend\n"
        "assert backend.__module__ == 'httpcore._backends.trio', backend\n"
        "assert 'trio' in sys.modules\n"
        "from httpcore import TrioBackend\n"
        "assert TrioBackend is backend\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
