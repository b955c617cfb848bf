"""Bench runs against the real registry: the report agrees with the nodes' own metrics and events."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from kubelet_sim.cli.main import configure_logging, main
from kubelet_sim.errors import ConfigError
from kubelet_sim.sim.registry import HTPASSWD_USERS, RegistryProcess
from kubelet_sim.sim.tls import TLSMaterial
from kubelet_sim.testing.hostile import refusing_port
from kubelet_sim.workloads import (
    BenchResult,
    ImageBuilder,
    build_report,
    load_workload,
    parse_workload,
    render_markdown,
    run_workload,
    seed_workload,
)
from kubelet_sim.workloads.plots import write_plots

pytestmark = pytest.mark.registry

WORKLOAD = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: {name}
seed: 21
bases:
  - {{name: base, layers: [300KiB]}}
images:
  - repository: {prefix}/web
    tags: ["1.0"]
    base: base
    platforms: [linux/amd64, linux/arm64]
    layers: [{{count: 2, size: {{uniform: [100KiB, 200KiB]}}}}]
  - {{repository: {prefix}/init, tags: ["1.0"], layers: [50KiB]}}
  - {{repository: "{prefix}/job-{{i}}", count: 3, tags: ["1"], base: base, layers: [80KiB]}}
nodes:
  - name: serial
    kubelet: {{registryPullQPS: 0}}
    timing: {{resyncPeriod: 200ms, backoffInitial: 300ms, backoffMax: 600ms}}
    transport: {{maxAttempts: 1}}
  - name: parallel
    platform: linux/arm64
    kubelet: {{serializeImagePulls: false, maxParallelImagePulls: 3, registryPullQPS: 0}}
    timing: {{resyncPeriod: 200ms, backoffInitial: 300ms, backoffMax: 600ms}}
    transport: {{maxAttempts: 1}}
pods:
  - name: web
    count: 4
    spec:
      initContainers: [{{name: init, image: "{prefix}/init:1.0"}}]
      containers: [{{name: web, image: "{prefix}/web:1.0"}}]
    arrival: {{rate: 20}}
  - name: jobs
    count: 6
    spec: {{containers: [{{name: job, image: "{prefix}/job-{{i%3}}:1"}}]}}
    placement: {{kind: random, seed: 2}}
  - name: missing
    count: 2
    spec: {{containers: [{{name: app, image: "{prefix}/web:no-such-tag"}}]}}
    placement: every-node
{extra}
run: {{timeout: {timeout}}}
"""


def _workload(name: str, prefix: str, timeout: str = "2.5s", extra: str = "") -> Any:
    text = WORKLOAD.format(name=name, prefix=prefix, timeout=timeout, extra=extra)
    return parse_workload(text, f"{name}.yaml")


async def _bench(workload: Any, host: str, root: Path) -> BenchResult:
    seed = await seed_workload(workload, host)
    return await run_workload(workload, host, root, seed=seed, tick=0.05)


def test_report_agrees_with_the_nodes_metrics_and_events(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    configure_logging("warning")
    workload = _workload("agree", "bench-agree")
    result = anyio.run(_bench, workload, registry.host, tmp_path / "stores")
    report = json.loads(json.dumps(build_report(result)))  # what report.json holds
    s = report["summary"]

    # The report's own observations against each node's Prometheus samples and event recorder.
    for node, sim in zip(report["nodes"], result.nodes, strict=True):
        m = node["metrics"]
        assert node["pulls"] == m["pull_image_operations"] > 0
        assert node["pull_errors"] == m["pull_image_errors"] > 0  # the missing tag
        assert node["bytes_pulled"] == m["pull_bytes"]
        assert node["cache_hits"] == m["cache_hits"]
        assert node["ensure_image_requests"] == m["ensure_image_requests"]
        assert node["pulls"] - node["pull_errors"] == m["image_pull_duration_count"]
        statuses: Counter[str] = Counter()
        for key, n in node["registry_responses"].items():
            statuses[key.split(" ")[1]] += n
        assert statuses == m["registry_requests_by_code"]
        assert statuses["404"] > 0
        # The kubelet's spam filter (25 per pod) thins the looping missing-tag pods' events:
        # every emitted event is stored (with its count) unless it was filtered.
        emitted, stored = node["events_emitted"], node["events_stored"]
        filtered = sim.recorder.statistics().spam_filtered
        assert filtered == node["events_spam_filtered"]
        assert all(stored.get(reason, 0) <= n for reason, n in emitted.items())
        assert sum(emitted.values()) - filtered <= sum(stored.values()) <= sum(emitted.values())
        events = sim.recorder.events()
        assert all(
            e.involved_object.name.startswith("missing") for e in events if e.reason == "BackOff"
        )
        assert node["events_emitted"]["Pulling"] == node["pulls"]
        present = [e for e in events if "already present on machine" in e.message]
        assert sum(e.count for e in present) == node["cache_hits"]
        assert node["events_emitted"].get("BackOff", 0) > 0
        # Bytes: exactly the distinct layers of the images this node pulled, for its platform.
        platform = sim.group.platform
        pulled = {
            c.image.split("/", 1)[1]
            for st in sim.node.engine.pods()
            for c in st.containers.values()
            if c.ready
        }
        layers = {
            str(layer.digest): layer.size
            for built in ImageBuilder(workload)
            if built.reference in pulled
            for image in built.images
            if image.platform_string == platform or len(built.images) == 1
            for layer in image.layers
        }
        assert node["bytes_pulled"] == sum(layers.values())
    assert report["nodes"][0]["peak_pulls_in_flight"] == 1  # serial
    assert 1 <= report["nodes"][1]["peak_pulls_in_flight"] <= 3

    # Pods: ready times are the engine's own, relative to time zero.
    ready = [p for p in report["pods"] if p["ready"] is not None]
    assert s["pods"] == 12
    assert s["pods_ready"] == len(ready) == 10
    assert s["pods_not_ready"] == 2
    assert s["waiting_reasons"] in (
        {"ErrImagePull": 2},
        {"ImagePullBackOff": 2},
        {"ErrImagePull": 1, "ImagePullBackOff": 1},
    )
    assert report["run"]["timed_out"] is True
    for sim in result.nodes:
        for state in sim.node.engine.pods():
            pod = next(p for p in report["pods"] if p["name"] == state.spec.ref.name)
            if state.ready_at is not None:
                assert pod["seconds"] == pytest.approx(
                    state.ready_at - state.submitted_at, abs=1e-3
                )
    # The 2 pods that never became ready stay in the denominator: p90 (rank 9.9 of 12) and
    # the maximum are unknown, and there is no makespan, rather than optimistic figures.
    seconds = sorted(p["seconds"] for p in ready)
    ttr = s["time_to_ready"]
    assert (ttr["count"], ttr["not_ready"]) == (10, 2)
    assert ttr["p50"] == pytest.approx((seconds[5] + seconds[6]) / 2, abs=1e-3)  # rank 5.5
    assert ttr["p90"] is None
    assert ttr["max"] is None
    assert s["makespan"] is None
    assert s["last_ready"] == pytest.approx(max(p["ready"] for p in ready), abs=1e-3)
    assert s["pulls"] == sum(n["pulls"] for n in report["nodes"]) == len(report["pulls"])
    assert s["backoffs"] == sum(n["events_emitted"].get("BackOff", 0) for n in report["nodes"])
    assert s["events_by_reason"]["Pulling"] == s["pulls"]
    assert report["images"]["pod_images_not_seeded"] == ["bench-agree/web:no-such-tag"]
    assert s["arrival_lag"]["count"] == 12
    assert s["arrival_lag"]["max"] < 0.5  # pods were submitted when planned
    assert s["resources"]["cpu_seconds"] > 0
    assert s["resources"]["peak_rss_mib"] > 10

    # Plots and the markdown report are written and not empty.
    files = write_plots(report, tmp_path / "out")
    assert sorted(f.name for f in files) == [
        "bytes-over-time.png",
        "pull-latency-cdf.png",
        "pull-timeline.png",
        "registry-requests.png",
        "time-to-ready-cdf.png",
    ]
    for f in files:
        data = f.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) > 10_000
    report["plots"] = [f.name for f in files]  # as bench's _save records them
    text = render_markdown(report)
    for expected in ("# Bench report: agree", "| pods ready | 10 of 12 |", "![Pull timeline",
                     "## How to read this report", "| serial | 1 | linux/amd64 |"):  # fmt: skip
        assert expected in text


def test_outage_through_the_fault_proxy_ends_in_backoff_then_ready(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    configure_logging("warning")
    extra = "faults:\n  windows:\n    - {kind: outage, start: 0s, end: 0.8s}\n"
    text = WORKLOAD.format(name="outage", prefix="bench-outage", timeout="8s", extra=extra)
    # Without the missing-tag pods: every pod must get ready once the outage is over.
    text = text.split("  - name: missing")[0] + text.split("placement: every-node\n")[-1]
    workload = parse_workload(text, "outage.yaml")
    result = anyio.run(_bench, workload, registry.host, tmp_path)
    report = build_report(result)
    s = report["summary"]
    assert report["run"]["via_fault_proxy"] is True
    assert report["run"]["nodes_pulled_from"] != registry.host
    assert report["run"]["timed_out"] is False
    assert s["pods_ready"] == s["pods"] == 10
    assert s["pull_errors"] > 0
    assert s["backoffs"] > 0
    assert report["faults"]["proxy"]["outage_resets"] > 0
    assert report["faults"]["plan"] == [{"kind": "outage", "start": 0.0, "end": 0.8}]
    assert s["time_to_ready"]["min"] >= 0.0
    first_ready = min(p["ready"] for p in report["pods"])
    assert first_ready >= 0.8  # nothing got through during the outage
    served = sum(n for _, n in report["faults"]["served_timeline"])
    assert served == report["faults"]["proxy"]["bytes_to_client"] >= s["bytes_pulled"]


def test_seed_and_bench_commands_and_compare(
    registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = []
    for name, kubelet in (("cli-serial", "{registryPullQPS: 0}"),
                          ("cli-parallel", "{maxParallelImagePulls: 4, registryPullQPS: 0}")):  # fmt: skip
        text = WORKLOAD.format(name=name, prefix="bench-cli", timeout="5s", extra="")
        text = text.split("  - name: missing")[0]
        text = text.replace("{registryPullQPS: 0}", kubelet, 1)
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        files.append(path)
    assert main(["seed", str(files[0]), "--registry", registry.host, "--output", "json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["seed", str(files[0]), "--registry", registry.host, "--output", "json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert first["images"] == again["images"] == 5
    assert first["blobs_uploaded"] > 0
    assert again["blobs_uploaded"] == 0  # idempotent: every blob was already there
    assert again["blobs_skipped"] >= first["blobs_uploaded"]
    outs = []
    for path in files:
        out = tmp_path / path.stem
        argv = ["bench", str(path), "--registry", registry.host, "--out", str(out), "--quiet"]
        assert main(argv) == 0
        for name in ("report.json", "report.md", "pull-timeline.png", "time-to-ready-cdf.png",
                     "bytes-over-time.png"):  # fmt: skip
            assert (out / name).stat().st_size > 1000, name
        outs.append(out / "report.json")
    capsys.readouterr()
    assert main(["bench", "--compare", str(outs[0]), str(outs[1]), "--output", "json"]) == 0
    rows = {r["figure"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["pods ready"]["a"] == rows["pods ready"]["b"] == 10
    assert rows["serial: makespan"]["a"] > 0
    a, b = (json.loads(path.read_text())["groups"]["serial"]["kubelet"] for path in outs)
    assert (a["serializeImagePulls"], b["serializeImagePulls"]) == (True, False)
    assert b["maxParallelImagePulls"] == 4
    assert main(["bench", "--compare", str(outs[0]), str(outs[1])]) == 0
    assert "time to ready p50" in capsys.readouterr().out


def test_ctrl_c_writes_a_partial_report_marked_as_such(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    # The missing tag keeps two pods in backoff: without Ctrl-C the run would wait 60 s.
    path = tmp_path / "interrupted.yaml"
    path.write_text(
        WORKLOAD.format(name="interrupted", prefix="bench-int", timeout="60s", extra="")
    )
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "kubelet_sim", "bench", str(path), "--registry", registry.host,
            "--out", str(out), "--quiet", "--no-plots"]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            deadline = time.monotonic() + 60
            while "run started" not in (proc.stdout.readline() if proc.stdout else ""):
                assert time.monotonic() < deadline, "bench never started"
            time.sleep(3)  # pulling, the missing tag backing off
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "partial report (interrupted)" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["interrupted"] is True
    assert report["run"]["partial"] is True
    assert report["run"]["timed_out"] is False
    assert report["run"]["stopped_at"] < 40
    assert report["summary"]["waiting_reasons"]  # the missing tag's pods, still not ready
    assert "**interrupted**" in (out / "report.md").read_text()


def test_output_json_is_the_only_thing_on_stdout(
    registry: RegistryProcess, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    text = WORKLOAD.format(name="json-out", prefix="bench-json", timeout="5s", extra="")
    path = tmp_path / "w.yaml"
    path.write_text(text.split("  - name: missing")[0])
    argv = ["bench", str(path), "--registry", registry.host, "--out", str(tmp_path / "out"),
            "--no-plots", "--output", "json"]  # fmt: skip
    assert main(argv) == 0
    captured = capfd.readouterr()
    summary = json.loads(captured.out)  # seeding and progress went to stderr
    assert summary["pods_ready"] == 10
    assert "seeded" in captured.err or captured.err


def test_no_seed_checks_every_image_is_there_before_the_run(
    registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = WORKLOAD.format(name="no-seed", prefix="bench-noseed", timeout="5s", extra="")
    path = tmp_path / "w.yaml"
    path.write_text(text.split("  - name: missing")[0])
    out = tmp_path / "out"
    argv = ["bench", str(path), "--registry", registry.host, "--out", str(out), "--quiet",
            "--no-plots", "--no-seed"]  # fmt: skip
    assert main(argv) == 1  # nothing was pushed: every image is named as missing
    err = capsys.readouterr().err
    assert f"--no-seed: registry {registry.host} lacks 5 of the workload's 5 images:" in err
    assert "bench-noseed/job-0:1, bench-noseed/job-1:1" in err
    assert "kubelet-sim seed WORKLOAD" in err
    assert not (out / "report.json").exists()  # refused before any node started
    assert main(["seed", str(path), "--registry", registry.host]) == 0
    capsys.readouterr()
    assert main(argv) == 0
    assert (
        f"--no-seed: {registry.host} has all 5 of the workload's images" in capsys.readouterr().out
    )
    assert json.loads((out / "report.json").read_text())["summary"]["pods_ready"] == 10


def test_an_unreachable_registry_is_named_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(WORKLOAD.format(name="nowhere", prefix="x", timeout="5s", extra=""))
    with refusing_port() as dead:
        for flags in ([], ["--no-seed"]):
            argv = ["bench", str(path), "--registry", f"127.0.0.1:{dead}", "--quiet",
                    "--out", str(tmp_path / "out"), *flags]  # fmt: skip
            assert main(argv) == 1
            err = capsys.readouterr().err
            assert f"registry 127.0.0.1:{dead} is not reachable: " in err
            assert "connect: connection refused" in err
            assert "Traceback" not in err


def test_listen_serves_the_fleets_metrics_during_the_run(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    path = tmp_path / "live.yaml"
    path.write_text(WORKLOAD.format(name="live", prefix="bench-live", timeout="60s", extra=""))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "kubelet_sim", "bench", str(path), "--registry", registry.host,
            "--out", str(tmp_path / "out"), "--quiet", "--no-plots",
            "--listen", f"127.0.0.1:{port}"]  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            deadline = time.monotonic() + 60
            text = ""
            while 'kubelet_sim_bench_pods{state="ready"} 10.0' not in text:  # all but 2 ready
                assert time.monotonic() < deadline, text[-2000:]
                time.sleep(0.2)  # a run behind its exposition: polled, as Prometheus does
                try:
                    text = httpx.get(url, timeout=5).text
                except httpx.TransportError:
                    continue
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
        finally:
            proc.kill()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples["kubelet_sim_bench_nodes"] == 2
    assert samples['kubelet_sim_bench_pods{state="planned"}'] == 12
    # The kubelet's own series, summed over both nodes: 10 pods pulled their images.
    pulls = [
        v for k, v in samples.items() if k.startswith("kubelet_image_pull_duration_seconds_count")
    ]
    assert sum(pulls) >= 10
    assert any(k.startswith("kubelet_sim_registry_requests_total") for k in samples)
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install -y prometheus (scripts/bootstrap.sh does)"
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


PRIVATE = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: private
images:
  - {repository: priv/app, tags: ["1.0"], layers: [64KiB, 32KiB]}
nodes:
  - {name: pool, count: 2, hostsDir: certs.d}
secrets:
  - {name: regcred, username: alice, passwordEnv: BENCH_REGISTRY_PASSWORD}
pods:
  - name: web
    count: 3
    spec:
      containers: [{name: web, image: "priv/app:1.0"}]
      imagePullSecrets: [{name: regcred}]
thresholds: ["pods_not_ready == 0"]
run: {timeout: 30s}
"""


def test_a_private_tls_registry_seeded_then_checked_and_pulled_with_the_pull_secret(
    htpasswd_registry: RegistryProcess,
    tls_material: TLSMaterial,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host = htpasswd_registry.host
    folder = tmp_path / "certs.d" / host
    folder.mkdir(parents=True)
    (folder / "hosts.toml").write_text(
        f'server = "https://{host}"\nca = "{tls_material.ca_cert}"\n'
    )
    path = tmp_path / "private.yaml"
    path.write_text(PRIVATE)
    monkeypatch.setenv("BENCH_REGISTRY_PASSWORD", HTPASSWD_USERS["alice"])
    common = ["--registry", host, "--quiet", "--no-plots"]
    # Seeded with the pull secret's login through the group's hostsDir (its CA), then pulled.
    assert main(["bench", str(path), "--out", str(tmp_path / "one"), *common]) == 0
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    assert report["summary"]["pods_ready"] == 3
    assert report["summary"]["registry_requests_by_status"].get("401", 0) > 0  # auth was asked
    capsys.readouterr()
    assert main(["bench", str(path), "--out", str(tmp_path / "two"), "--no-seed", *common]) == 0
    assert f"--no-seed: {host} has all 1 of the workload's images" in capsys.readouterr().out
    monkeypatch.setenv("BENCH_REGISTRY_PASSWORD", "not-the-password")
    assert main(["bench", str(path), "--out", str(tmp_path / "three"), "--no-seed", *common]) == 1
    err = capsys.readouterr().err
    assert f"registry {host} refused the workload's credentials for priv/app:1.0" in err
    assert "not-the-password" not in err


def test_a_bad_hosts_dir_is_refused_when_the_workload_loads(tmp_path: Path) -> None:
    (tmp_path / "certs.d" / "registry.test").mkdir(parents=True)
    (tmp_path / "certs.d" / "registry.test" / "hosts.toml").write_text('server = "nope\n')
    path = tmp_path / "w.yaml"
    path.write_text(PRIVATE.replace("passwordEnv: BENCH_REGISTRY_PASSWORD", "password: x"))
    with pytest.raises(ConfigError) as caught:
        load_workload(path)
    assert "nodes[0].hostsDir" in str(caught.value)
    path.write_text(PRIVATE.replace("hostsDir: certs.d", "hostsDir: missing"))
    with pytest.raises(ConfigError, match="is not a folder"):
        load_workload(path)


MIRRORED = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: mirrored
images:
  - {repository: mirrored/app, tags: ["1.0"], layers: [64KiB]}
nodes:
  - {name: pool, count: 2, hostsDir: certs.d}
pods:
  - name: web
    count: 4
    spec: {containers: [{name: web, image: "mirrored/app:1.0"}]}
thresholds: ["pods_not_ready == 0"]
run: {timeout: 30s}
"""


def test_the_mirror_recipe_load_tests_a_mirror_in_front_of_a_dead_upstream(
    registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's recipe: nodes ask for the upstream's images, hosts.toml sends them to the
    mirror (the only thing answering), --no-seed checks the images through it."""
    path = tmp_path / "mirrored.yaml"
    path.write_text(MIRRORED)
    (tmp_path / "certs.d").mkdir()
    assert main(["seed", str(path), "--registry", registry.host]) == 0  # the mirror's content
    with refusing_port() as port:
        upstream = f"127.0.0.1:{port}"
        folder = tmp_path / "certs.d" / upstream
        folder.mkdir(parents=True)
        (folder / "hosts.toml").write_text(
            f'server = "http://{upstream}"\n\n'
            f'[host."http://{registry.host}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        capsys.readouterr()
        code = main(["bench", str(path), "--registry", upstream, "--no-seed", "--quiet",
                     "--no-plots", "--out", str(tmp_path / "out")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert f"--no-seed: {upstream} has all 1 of the workload's images" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["summary"]["pods_ready"] == 4
    assert report["summary"]["failure_causes"] == {}


def test_sigterm_before_the_run_stops_the_local_registry_and_keeps_the_earlier_report(
    tmp_path: Path,
) -> None:
    """SIGTERM while the bench seeds its own registry is Ctrl-C: the registry process and its
    storage go with the bench (exit 130, no traceback), and the report folder is as it was."""
    path = tmp_path / "w.yaml"
    path.write_text(WORKLOAD.format(name="term", prefix="bench-term", timeout="60s", extra=""))
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text('{"earlier": true}')
    argv = [sys.executable, "-m", "kubelet_sim", "bench", str(path), "--out", str(out), "--quiet",
            "--no-plots"]  # fmt: skip
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        try:
            deadline = time.monotonic() + 60
            line = ""
            while "local distribution registry on" not in line:
                line = proc.stdout.readline() if proc.stdout else ""
                assert line or proc.poll() is None, "bench ended before it started a registry"
                assert time.monotonic() < deadline, "bench never started a registry"
            storage = line.rsplit("(storage ", 1)[1].rstrip(")\n")
            proc.send_signal(signal.SIGTERM)  # seeding now
            said, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 130, said
    assert "Traceback" not in said
    assert not Path(storage).exists()
    leftover = subprocess.run(["pgrep", "-f", storage], capture_output=True, check=False)
    assert leftover.returncode == 1, leftover.stdout  # no process serving that storage
    assert json.loads((out / "report.json").read_text()) == {"earlier": True}
