"""``kubelet-sim run`` as a subprocess against the real registry: static pods, API, metrics,
signals, restarts, outages and 1,000 pods."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from kubelet_sim.cli.main import main
from kubelet_sim.node.paths import NodePaths
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.sim.images import build_image, build_multiarch
from kubelet_sim.sim.registry import RegistryFactory, RegistryProcess, free_port
from kubelet_sim.sim.seed import push_image, push_index

pytestmark = pytest.mark.registry

NODE = "node-1"
"""The daemons' node name: a static pod NAME runs as NAME-node-1, as the kubelet names it."""


@dataclass
class DaemonProc:
    proc: subprocess.Popen[bytes]
    url: str
    root: Path
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)

    def get(self, path: str, **params: str) -> Any:
        with self.client() as c:
            response = c.get(path, params=params)
            response.raise_for_status()
            return response.json()

    def wait_pod_ready(self, ns: str, name: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.client() as c:
                response = c.get(f"/pods/{ns}/{name}")
            if response.status_code == 200 and response.json()["imagesReady"]:
                return response.json()  # type: ignore[no-any-return]
            time.sleep(0.1)
        raise AssertionError(
            f"pod {ns}/{name} not ready: {response.text}\n{self.log.read_text()[-3000:]}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def write_config(folder: Path, static: Path, **extra: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "apiVersion: kubelet.config.k8s.io/v1beta1",
        "kind: KubeletConfiguration",
        f"staticPodPath: {static}",
        "serializeImagePulls: false",
        "maxParallelImagePulls: 4",
        "registryPullQPS: 0",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    path = folder / "kubelet.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_daemon(
    tmp: Path,
    config: Path,
    root: Path | None = None,
    *,
    preexec: Callable[[], None] | None = None,
) -> DaemonProc:
    root = root or tmp / "root"
    port = free_port()
    log = tmp / f"daemon-{port}.log"
    handle = log.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubelet_sim",
            "--log-level",
            "info",
            "run",
            "--config",
            str(config),
            "--root",
            str(root),
            "--listen",
            f"127.0.0.1:{port}",
            "--hostname-override",
            NODE,
        ],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=preexec,
    )
    handle.close()
    daemon = DaemonProc(proc, f"http://127.0.0.1:{port}", root, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with daemon.client() as c:
                if c.get("/readyz").status_code == 200:
                    return daemon
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"daemon not ready: {log.read_text()[-3000:]}")


@pytest.fixture
def daemons() -> Iterator[list[DaemonProc]]:
    started: list[DaemonProc] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def seed(ref: str, image: Any) -> None:
    async def go() -> None:
        async with RegistryClient() as client:
            if hasattr(image, "index"):
                await push_index(client, ref, image)
            else:
                await push_image(client, ref, image)

    anyio.run(go)


def pod_yaml(name: str, image: str, namespace: str = "default", policy: str = "") -> str:
    policy_line = f"\n      imagePullPolicy: {policy}" if policy else ""
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
        f"spec:\n  containers:\n    - name: app\n      image: {image}{policy_line}\n"
    )


def test_static_pods_api_metrics_and_clean_sigterm(
    registry: RegistryProcess, tmp_path: Path, daemons: list[DaemonProc]
) -> None:
    web = f"{registry.host}/daemon/web:1.0"
    api = f"{registry.host}/daemon/api:2.0"
    seed(web, build_multiarch("daemon-web"))
    seed(api, build_image("daemon-api", "linux/amd64", (30_000,)))
    static = tmp_path / "static"
    static.mkdir()
    (static / "web.yaml").write_text(pod_yaml("web", web))
    daemon = start_daemon(tmp_path, write_config(tmp_path / "cfg", static))
    daemons.append(daemon)
    pod = daemon.wait_pod_ready("default", f"web-{NODE}")
    assert pod["containers"][0]["imageID"].startswith("sha256:")

    with daemon.client() as c:
        applied = c.post("/apply", content=pod_yaml("api", api, namespace="team"))
        assert applied.status_code == 200, applied.text
        assert applied.json()["items"] == [
            {"kind": "Pod", "namespace": "team", "name": "api", "result": "created", "warnings": []}
        ]
        again = c.post("/apply", content=pod_yaml("api", api, namespace="team"))
        assert again.json()["items"][0]["result"] == "unchanged"
        bad = c.post(
            "/apply",
            content="apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a}]}\n",
        )
        assert bad.status_code == 422
        assert "image" in bad.json()["field"]
        assert c.post("/apply", content=b"\x00\xff not yaml").status_code in (400, 422)
        assert c.post("/apply", content=b"x" * (5 * 1024 * 1024)).status_code == 413
        assert c.get("/nope").status_code == 404
        assert c.put("/pods").status_code == 405
    daemon.wait_pod_ready("team", "api")
    events = daemon.get("/events", pod="team/api")["items"]
    assert [e["reason"] for e in events][:2] == ["Pulling", "Pulled"]
    described = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubelet_sim",
            "describe",
            "pod",
            "team/api",
            "--server",
            daemon.url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert described.returncode == 0, described.stderr
    for expected in (
        "Name:             api",
        "Namespace:        team",
        "State:              Running",
        "Events:",
        "Pulling",
        f'Successfully pulled image "{api}"',
    ):
        assert expected in described.stdout, expected
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubelet_sim",
            "describe",
            "pod",
            "team/nope",
            "--server",
            daemon.url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1
    assert "team/nope not found" in missing.stderr
    images = daemon.get("/images")["items"]
    assert {i["repository"] for i in images} >= {
        f"{registry.host}/daemon/web",
        f"{registry.host}/daemon/api",
    }

    with daemon.client() as c:
        metrics = c.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    for name in (
        "kubelet_image_pull_duration_seconds_bucket",
        "kubelet_image_manager_ensure_image_requests_total",
        "kubelet_runtime_operations_total",
        "kubelet_runtime_operations_duration_seconds_bucket",
        "kubelet_sim_registry_requests_total",
    ):
        assert name in text, name
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install -y prometheus (scripts/bootstrap.sh does)"
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # Removing the static file removes its pod; DELETE removes an API pod.
    (static / "web.yaml").unlink()
    deadline = time.monotonic() + 10
    with daemon.client() as c:
        while c.get(f"/pods/default/web-{NODE}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # A graceful deletion: the pod stays (terminating) until its containers stopped.
        assert c.delete("/pods/team/api").status_code == 200
        while c.get("/pods/team/api").status_code != 404:
            assert time.monotonic() < deadline + 10
            time.sleep(0.1)
        assert c.delete("/pods/team/api").status_code == 404

    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    # Only resumable layer ingests stay (a restart continues them with Range, as containerd's).
    left = [f.name for f in (daemon.root / "store" / "tmp").iterdir()]
    assert all(n.endswith((".ingest.part", ".ingest.json")) for n in left), left
    log_lines = [
        json.loads(line) for line in daemon.log.read_text().splitlines() if line.startswith("{")
    ]
    pull_lines = [line for line in log_lines if line["event"] == "pull.start"]
    assert pull_lines
    assert all({"pod", "container", "image", "attempt"} <= line.keys() for line in pull_lines)


def test_restart_keeps_images_and_sigkill_mid_pull_recovers(
    registry: RegistryProcess, tmp_path: Path, daemons: list[DaemonProc]
) -> None:
    big = f"{registry.host}/daemon/big:1.0"
    small = f"{registry.host}/daemon/small:1.0"
    seed(big, build_image("daemon-big", "linux/amd64", (40_000_000, 40_000_000), compress=False))
    seed(small, build_image("daemon-small", "linux/amd64", (10_000,)))
    static = tmp_path / "static"
    static.mkdir()
    (static / "small.yaml").write_text(pod_yaml("small", small))
    config = write_config(tmp_path / "cfg", static)
    first = start_daemon(tmp_path, config)
    daemons.append(first)
    first.wait_pod_ready("default", f"small-{NODE}")
    # Kill -9 while the big image is being pulled.
    (static / "big.yaml").write_text(pod_yaml("big", big))
    deadline = time.monotonic() + 20
    while not any(
        e["reason"] == "Pulling" for e in first.get("/events", pod=f"default/big-{NODE}")["items"]
    ):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first.stop(signal.SIGKILL)

    second = start_daemon(tmp_path, config, root=first.root)
    daemons.append(second)
    second.wait_pod_ready("default", f"big-{NODE}")
    second.wait_pod_ready("default", f"small-{NODE}")
    reasons = [e["message"] for e in second.get("/events", pod=f"default/small-{NODE}")["items"]]
    assert reasons == [
        f'Container image "{small}" already present on machine and can be accessed by the pod',
        "Created container app",
        "Started container app",
    ]
    assert second.stop() == 0
    fsck = subprocess.run(
        [sys.executable, "-m", "kubelet_sim", "fsck", "--root", str(first.root)],
        capture_output=True,
        text=True,
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_sigterm_during_a_large_pull_leaves_a_clean_store(
    registry: RegistryProcess, tmp_path: Path, daemons: list[DaemonProc]
) -> None:
    big = f"{registry.host}/daemon/term:1.0"
    seed(big, build_image("daemon-term", "linux/amd64", (60_000_000, 60_000_000), compress=False))
    static = tmp_path / "static"
    static.mkdir()
    (static / "big.yaml").write_text(pod_yaml("big", big))
    daemon = start_daemon(tmp_path, write_config(tmp_path / "cfg", static))
    daemons.append(daemon)
    deadline = time.monotonic() + 20
    while not list((daemon.root / "store" / "tmp").glob("*.part")):
        assert time.monotonic() < deadline, "no download started"
        time.sleep(0.005)
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    # Only resumable layer ingests stay (a restart continues them with Range, as containerd's).
    left = [f.name for f in (daemon.root / "store" / "tmp").iterdir()]
    assert all(n.endswith((".ingest.part", ".ingest.json")) for n in left), left
    fsck = subprocess.run(
        [sys.executable, "-m", "kubelet_sim", "fsck", "--root", str(daemon.root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    images = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubelet_sim",
            "images",
            "--root",
            str(daemon.root),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert big not in images.stdout  # never reported present when it is not whole


def test_registry_down_then_back_while_pods_pending(
    registry_factory: RegistryFactory, tmp_path: Path, daemons: list[DaemonProc]
) -> None:
    reg = registry_factory()
    image = f"{reg.host}/daemon/late:1.0"
    seed(image, build_image("daemon-late", "linux/amd64", (20_000,)))
    reg.kill()
    static = tmp_path / "static"
    static.mkdir()
    (static / "late.yaml").write_text(pod_yaml("late", image))
    daemon = start_daemon(tmp_path, write_config(tmp_path / "cfg", static))
    daemons.append(daemon)
    deadline = time.monotonic() + 20
    while True:
        pod = daemon.get(f"/pods/default/late-{NODE}")
        reason = pod["containers"][0]["state"].get("waiting", {}).get("reason")
        if reason in ("ErrImagePull", "ImagePullBackOff"):
            break
        assert time.monotonic() < deadline, pod
        time.sleep(0.1)
    assert daemon.proc.poll() is None
    reg.start()
    pod = daemon.wait_pod_ready("default", f"late-{NODE}", timeout=40)
    assert pod["containers"][0]["pullAttempts"] >= 2
    assert daemon.stop() == 0


def test_thousand_pods_through_the_api_with_bounded_memory(
    registry: RegistryProcess, tmp_path: Path, daemons: list[DaemonProc]
) -> None:
    images = [f"{registry.host}/daemon/many{i}:1.0" for i in range(5)]
    for i, ref in enumerate(images):
        seed(ref, build_image(f"daemon-many-{i}", "linux/amd64", (5_000,)))
    static = tmp_path / "static"
    static.mkdir()
    daemon = start_daemon(tmp_path, write_config(tmp_path / "cfg", static))
    daemons.append(daemon)
    rss_before = _rss_kib(daemon.proc.pid)
    docs = "---\n".join(
        pod_yaml(f"p{i}", images[i % len(images)], namespace="load") for i in range(1000)
    )
    with daemon.client() as c:
        response = c.post("/apply", content=docs, timeout=60)
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["items"]) == 1000
    deadline = time.monotonic() + 120
    while True:
        pods = daemon.get("/pods")["items"]
        if sum(1 for p in pods if p["status"] == "Running") == 1000:
            break
        assert time.monotonic() < deadline, [p for p in pods if p["status"] != "Running"][:3]
        time.sleep(0.5)
    rss_after = _rss_kib(daemon.proc.pid)
    growth_mib = (rss_after - rss_before) / 1024
    print(f"RSS before {rss_before // 1024} MiB, after 1000 pods {rss_after // 1024} MiB")
    assert growth_mib < 150, f"RSS grew {growth_mib:.0f} MiB for 1000 pods"
    assert daemon.stop() == 0


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> object:
    capsys.readouterr()
    status = main(argv)
    out = capsys.readouterr().out
    assert status == 0, out
    return json.loads(out)


def test_images_pulled_by_run_are_seen_by_every_command_with_the_same_root(
    registry: RegistryProcess,
    tmp_path: Path,
    daemons: list[DaemonProc],
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref = f"{registry.host}/root/web:1.0"
    image = build_image("root-web", "linux/amd64", (20_000, 7_000))
    seed(ref, image)
    static = tmp_path / "static"
    static.mkdir()
    (static / "web.yaml").write_text(pod_yaml("web", ref))
    root = tmp_path / "node"
    daemon = start_daemon(tmp_path, write_config(tmp_path / "cfg", static), root=root)
    daemons.append(daemon)
    pod = daemon.wait_pod_ready("default", f"web-{NODE}")
    image_id = pod["containers"][0]["imageID"]
    assert daemon.stop(signal.SIGTERM) == 0

    # The daemon kept its images where NodePaths says, and nowhere else under the root.
    assert NodePaths(root).store.is_dir()
    listed = _json(capsys, ["images", "--root", str(root), "-o", "json"])
    assert isinstance(listed, dict)
    rows = listed["images"]
    assert [row["id"] for row in rows] == [image_id]
    assert ref in rows[0]["repoTags"]

    pulled = _json(
        capsys,
        ["pull", ref, "--root", str(root), "--platform", "linux/amd64", "--output", "json"],
    )
    assert isinstance(pulled, dict)
    assert pulled["pulled"] is False, "the pull command must find the daemon's image"
    assert pulled["image_id"] == image_id

    checked = _json(capsys, ["fsck", "--root", str(root), "-o", "json"])
    assert isinstance(checked, dict)
    # The daemon's four blobs (manifest, config, two layers) are checked; nothing is damaged.
    assert checked["checked"] == 4, checked
    assert checked["damaged"] is False, checked

    assert main(["rmi", ref, "--root", str(root)]) == 0
    listed = _json(capsys, ["images", "--root", str(root), "-o", "json"])
    assert isinstance(listed, dict)
    assert listed["images"] == []


def test_lenient_config_and_a_missing_static_pod_folder_start_the_daemon_with_warnings(
    registry: RegistryProcess, tmp_path: Path, daemons: list[DaemonProc]
) -> None:
    # The kubelet logs strict decoding errors and decodes leniently; a missing staticPodPath is
    # a warning, and the folder is picked up once it appears.
    ref = f"{registry.host}/lenient/web:1.0"
    seed(ref, build_image("lenient-web", "linux/amd64", (5_000,)))
    static = tmp_path / "later"
    config = write_config(tmp_path / "cfg", static, fooBar="1", imagePullProgressDeadline="1m")
    daemon = start_daemon(tmp_path, config)
    daemons.append(daemon)
    static.mkdir()
    (static / "web.yaml").write_text(pod_yaml("web", ref))
    daemon.wait_pod_ready("default", f"web-{NODE}")
    assert daemon.stop() == 0
    lines = [json.loads(line) for line in daemon.log.read_text().splitlines() if line[:1] == "{"]
    by_event = {line["event"]: line for line in lines}
    lenient = by_event["kubelet_config.lenient_decoding"]
    assert lenient["level"] == "warning"
    assert [e.split(": ")[1] for e in lenient["errors"]] == [
        "fooBar",
        "imagePullProgressDeadline",
    ]
    assert by_event["static.path_missing"]["static_pod_path"] == str(static)


def test_the_daemon_survives_more_idle_connections_than_it_has_file_descriptors(
    tmp_path: Path, daemons: list[DaemonProc]
) -> None:
    # A hard limit of 300 descriptors, 1,100 idle connections: accept() hits EMFILE. The daemon
    # used to exit ("Too many open files"); it now closes the oldest idle ones and keeps serving.
    static = tmp_path / "static"
    static.mkdir()
    limit = 300

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    daemon = start_daemon(tmp_path, write_config(tmp_path / "cfg", static), preexec=low_limit)
    daemons.append(daemon)
    host, port = daemon.url.removeprefix("http://").split(":")
    idle: list[socket.socket] = []
    try:
        for _ in range(1_100):
            idle.append(socket.create_connection((host, int(port)), timeout=10))
        deadline = time.monotonic() + 30
        while True:
            try:
                with daemon.client() as c:
                    if c.get("/healthz").text == "ok":
                        break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, daemon.log.read_text()[-2000:]
            time.sleep(0.1)
        assert daemon.proc.poll() is None
    finally:
        for conn in idle:
            conn.close()
    assert daemon.stop() == 0
    log = daemon.log.read_text()
    assert '"api.accept_failed"' in log
    assert "Too many open files" in log
