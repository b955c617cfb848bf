"""Hostile checks of bench's recent additions: thresholds, --listen, partial reports, per-pull
auth and containerd's retry policy. Each test that pinned a bug (found by a hostile review)
passes with its fix."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from kubelet_sim.cli.main import main
from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.trace import CURRENT, PullTrace
from kubelet_sim.errors import ConfigError, RegistryError
from kubelet_sim.registry.auth import BASIC_ENTRIES, AuthManager
from kubelet_sim.registry.hosts import RegistryHost
from kubelet_sim.registry.transport import RetryPolicy, Transport, TransportSettings
from kubelet_sim.sim.registry import RegistryProcess
from kubelet_sim.testing.hostile import answer, refusing_port, serve
from kubelet_sim.workloads.live import FleetCollector, parse_listen, serve_fleet_metrics
from kubelet_sim.workloads.thresholds import evaluate, parse_threshold

# --- thresholds ------------------------------------------------------------------------------

REPORT: dict[str, Any] = {
    "summary": {
        "pods": 4,
        "pods_ready": 4,
        "pods_not_ready": 0,
        "time_to_ready": {"p50": 1.0, "p99": None},
        "registry_requests_by_status": {"200": 40, "401": 4},
        "events_by_reason": {"Pulled": 4},
        "resources": {"peak_rss_mib": 80.0},
    },
    "groups": {},
    "templates": {},
}


def _check(text: str, report: dict[str, Any] = REPORT) -> dict[str, Any]:
    (result,) = evaluate([parse_threshold(text)], report)
    return result


@pytest.mark.parametrize(
    ("text", "passed"),
    [
        ("pods_ready <= 4", True),
        ("pods_ready >= 4", True),
        ("pods_ready < 4", False),
        ("pods_ready > 4", False),
        ("pods_ready == 4", True),
        ("pods_ready != 4", False),
        ("pods_ready != 3", True),
        ("time_to_ready.p50 <= 1s", True),
        ("time_to_ready.p50 < 1000ms", False),
        ("time_to_ready.p99 != 1s", False),  # null: no value never passes, even with !=
        ("time_to_ready.p99 < 1h", False),
        ("registry_errors_rate == 0", True),  # the 401 challenges are not errors
    ],
)
def test_threshold_edge_values_and_null(text: str, passed: bool) -> None:
    assert _check(text)["passed"] is passed


@pytest.mark.parametrize("value", ["1e400", "-inf", "nan", "1e99999s"])
def test_huge_or_non_finite_values_are_refused_clearly(value: str) -> None:
    with pytest.raises(ValueError, match="is not"):
        parse_threshold(f"pods_ready < {value}")


@pytest.mark.parametrize(
    "text", ["registry_requests_by_status.429 == 0", "events_by_reason.BackOff == 0"]
)
def test_a_count_the_run_never_saw_is_zero(text: str) -> None:
    result = _check(text)
    assert result["passed"] is True, result


def test_a_size_against_a_mib_metric_compares_like_units() -> None:
    result = _check("resources.peak_rss_mib < 64MiB")  # the run peaked at 80 MiB
    assert result["passed"] is False, result


TINY = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: hostile
images:
  - {repository: a/b, tags: ["1"], layers: [64KiB]}
nodes:
  - {name: pool, count: 2}
pods:
  - name: web
    count: 3
    spec: {containers: [{name: c, image: "a/b:1"}]}
run: {timeout: 60s}
"""


def _virtual(tmp_path: Path, thresholds: list[str], *flags: str) -> int:
    path = tmp_path / "w.yaml"
    path.write_text(TINY + "thresholds:\n" + "".join(f"  - '{t}'\n" for t in thresholds))
    return main(["bench", str(path), "--virtual", "--quiet", "--no-plots",
                 "--out", str(tmp_path / "out"), *flags])  # fmt: skip


def test_group_and_template_thresholds_in_a_virtual_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = _virtual(
        tmp_path,
        ["groups.pool.pods_ready == 3", "templates.web.time_to_ready.p99 < 10m", "ready_rate == 1"],
    )
    out = capsys.readouterr().out
    assert status == 0, out
    assert "threshold pass: groups.pool.pods_ready == 3  (is 3)" in out
    status = _virtual(tmp_path, ["groups.pool.pods_ready != 3"])
    assert status == 99
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["summary"]["thresholds"][0]["passed"] is False


def test_a_bad_threshold_in_a_workload_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in ["groups.nope.pods_ready == 3", "pods_ready < 1e400", "pods_ready ~ 3"]:
        assert _virtual(tmp_path, [bad]) == 1
        err = capsys.readouterr().err
        assert "thresholds[0]" in err
        assert "Traceback" not in err


def test_a_non_utf8_workload_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "w.yaml"
    path.write_bytes(TINY.encode() + b"thresholds: ['pods_ready == \xff']\n")
    status = main(["bench", str(path), "--virtual", "--quiet", "--no-plots",
                   "--out", str(tmp_path / "out")])  # fmt: skip
    assert status == 1
    assert "Traceback" not in capsys.readouterr().err


def test_an_unknown_flag_names_the_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["bench", "w.yaml", "--no-such-flag"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "kubelet-sim bench: error: unrecognized arguments: --no-such-flag" in err


# --- --listen --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["127.0.0.1", "127.0.0.1:", ":9100", "h:70000", "h:-1", "h:x"])
def test_bad_listen_values_are_config_errors(value: str) -> None:
    with pytest.raises(ConfigError, match="--listen"):
        parse_listen(value)


def test_a_port_of_non_ascii_digits_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--listen"):
        parse_listen("127.0.0.1:²")


def test_an_address_in_use_is_a_clear_error_and_the_server_shuts_down() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(ConfigError, match="Address already in use"),
            serve_fleet_metrics(f"127.0.0.1:{port}", FleetCollector()),
        ):
            pass
    with serve_fleet_metrics("127.0.0.1:0", FleetCollector()) as server:
        port = server.server_address[1]
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "kubelet_sim_bench_nodes 0.0" in text
    with pytest.raises(httpx.ConnectError):  # shut down and closed when the block ends
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_bad_listen_value_is_refused_before_the_registry_is_contacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(TINY)
    with refusing_port() as dead:
        status = main(["bench", str(path), "--registry", f"127.0.0.1:{dead}", "--quiet",
                       "--no-plots", "--out", str(tmp_path / "out"),
                       "--listen", "not-an-address"])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1
    assert "--listen" in err, err


@pytest.mark.registry
def test_listen_with_one_shard_is_refused_not_ignored(
    registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(TINY.replace("a/b", "hostile-shard/b"))
    status = main(["bench", str(path), "--registry", registry.host, "--quiet", "--no-plots",
                   "--shard", "0/2", "--out", str(tmp_path / "out"),
                   "--listen", "127.0.0.1:0"])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1
    assert "--listen" in err


# --- partial reports ---------------------------------------------------------------------------

SLOW = TINY.replace(
    "run:",
    "  - name: missing\n    count: 1\n    spec: {containers: [{name: c, image: 'a/b:no'}]}\nrun:",
)


@pytest.mark.registry
def test_sigterm_writes_a_partial_report_with_thresholds(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    path = tmp_path / "w.yaml"
    text = SLOW.replace("a/b", "hostile-term/b") + "thresholds: ['pods_not_ready == 0']\n"
    path.write_text(text)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "kubelet_sim", "bench", str(path), "--registry", registry.host,
            "--out", str(out), "--quiet", "--no-plots"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while "run started" not in (proc.stdout.readline() if proc.stdout else ""):
            assert time.monotonic() < deadline, "bench never started"
            assert proc.poll() is None
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr  # interrupted wins over the failed threshold (99)
    assert "partial report (interrupted)" in stdout
    assert "Traceback" not in stderr
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["interrupted"] is True
    assert report["run"]["partial"] is True
    assert report["summary"]["thresholds"][0]["passed"] is False


# --- per-pull auth -----------------------------------------------------------------------------

CHALLENGE = ['Bearer realm="https://auth.test/token",service="registry.test"']
SCOPE = "repository:team/app:pull"


@pytest.mark.anyio
async def test_one_pull_reuses_its_token_and_the_next_pull_fetches_its_own() -> None:
    served: list[str] = []

    def token_server(request: httpx.Request) -> httpx.Response:
        served.append(str(request.url))
        return httpx.Response(200, json={"token": f"t{len(served)}", "expires_in": 300})

    async with httpx.AsyncClient(transport=httpx.MockTransport(token_server)) as http:
        auth = AuthManager(http, per_pull=True)
        creds = Credentials("alice", "s3cret-password")
        headers = []
        for _pull in range(2):
            token = CURRENT.set(PullTrace(0.0))
            try:
                first = await auth.authorize("registry.test", SCOPE, CHALLENGE, creds)
                assert auth.header_for("registry.test", SCOPE, creds) == first
                again = await auth.authorize("registry.test", SCOPE, CHALLENGE, creds)
                assert again == first  # within one pull: the token is reused
                headers.append(first)
            finally:
                CURRENT.reset(token)
    assert len(served) == 2  # one token request per pull
    assert headers == ["Bearer t1", "Bearer t2"]
    assert "s3cret-password" not in repr(auth.statistics())


@pytest.mark.anyio
async def test_per_pull_registry_tokens_do_not_pile_up() -> None:
    async with httpx.AsyncClient() as http:
        auth = AuthManager(http, per_pull=True)
        creds = Credentials(registry_token="given-token")
        for _pull in range(BASIC_ENTRIES + 1000):
            token = CURRENT.set(PullTrace(0.0))
            try:
                await auth.authorize("registry.test", SCOPE, CHALLENGE, creds)
            finally:
                CURRENT.reset(token)
    assert auth.statistics().cached <= BASIC_ENTRIES


# --- containerd's retry policy -----------------------------------------------------------------

CONTAINERD = TransportSettings(retry_policy=RetryPolicy.CONTAINERD, max_attempts=5)


async def _requests(status: int, *, last_host: bool, headers: dict[str, str] | None = None) -> int:
    async with serve(answer(status, b"", headers)) as server:
        transport = Transport(settings=CONTAINERD)
        try:
            host = RegistryHost(server.host, scheme="http")
            with pytest.raises(RegistryError) as caught:
                async with transport.open(
                    "GET", host, "/team/app/manifests/v1", scope=SCOPE, last_host=last_host
                ):
                    pass
        finally:
            await transport.aclose()
        assert caught.value.status == status
        return server.count("GET")


@pytest.mark.anyio
async def test_containerd_policy_on_a_mirror_and_the_last_host() -> None:
    assert await _requests(503, last_host=False) == 1  # a mirror's 503: next host at once
    assert await _requests(503, last_host=True) == 2  # once more, then the same 503 ends it
    assert await _requests(502, last_host=True) == 1
    started = anyio.current_time()
    assert await _requests(429, last_host=False, headers={"Retry-After": "120"}) == 5
    assert anyio.current_time() - started < 10  # Retry-After is not honoured
