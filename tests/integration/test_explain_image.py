"""``kubelet-sim explain image``: the preflight's verdict for each cause, on the real registry.

Public images are in the plain registry; private ones in the htpasswd registry (Basic over TLS),
reached as ``myregistry.io`` through a ``hosts.toml``, as in the credential tests. A dead mirror
is a hosts.toml mirror on a loopback port nobody listens on. Each test runs the command as a
user would (``main([...])``) and reads its JSON.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import anyio
import pytest
from credential_world import ALIAS, ALICE, alias_hosts_dir, kubectl_secret, seed_private, unique

from kubelet_sim.cli.main import main
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.sim.images import build_image, build_multiarch
from kubelet_sim.sim.registry import HTPASSWD_USERS, RegistryProcess
from kubelet_sim.sim.seed import push_image, push_index
from kubelet_sim.sim.tls import TLSMaterial
from kubelet_sim.testing.hostile import never_answer, serve

pytestmark = [pytest.mark.registry]

PASSWORD = HTPASSWD_USERS["alice"]


def explain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    status = main(["explain", "image", *args, "--output", "json"])
    out = capsys.readouterr().out
    report: dict[str, Any] = json.loads(out)
    return status, report


def push(registry: RegistryProcess, name: str, *, platforms: tuple[str, ...] = ()) -> str:
    ref = f"{registry.host}/{name}:1.0"

    async def go() -> None:
        async with RegistryClient() as client:
            if platforms:
                await push_index(client, ref, build_multiarch(name, platforms, (1000, 2000)))
            else:
                await push_image(client, ref, build_image(name, "linux/amd64", (1000, 2000)))

    anyio.run(go)
    return ref


@pytest.fixture
def private(
    htpasswd_registry: RegistryProcess, tls_material: TLSMaterial, tmp_path: Path
) -> tuple[str, Path]:
    repository = unique("explain")
    anyio.run(lambda: seed_private(htpasswd_registry, repository, creds=ALICE))
    hosts = alias_hosts_dir(tmp_path / "certs.d", htpasswd_registry, tls_material.ca_cert)
    return f"{ALIAS}/{repository}:1.0", hosts


def secret_file(tmp_path: Path, server: str, password: str, *, namespace: str = "") -> Path:
    path = tmp_path / f"secret-{unique('s')}.yaml"
    path.write_text(
        kubectl_secret("regcred", server, "alice", password, "a@b.c", namespace=namespace)
    )
    return path


def test_a_public_image_would_pull_with_its_size_and_every_request(
    registry: RegistryProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = push(registry, unique("pub"))
    status, report = explain(capsys, ref, "--platform", "linux/amd64")
    assert status == 0
    assert report["pulls"] is True
    assert report["bytes"] >= 3000
    assert [a["step"] for a in report["attempts"]][:2] == ["resolve", "manifest"]
    assert {a["step"] for a in report["attempts"]} >= {"config", "layer"}
    assert all(a["outcome"] == "ok" for a in report["attempts"])


def test_a_tag_that_does_not_exist(
    registry: RegistryProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = push(registry, unique("tag"))
    status, report = explain(capsys, ref.replace(":1.0", ":1.O"))
    assert status == 1
    assert "does not exist" in report["verdict"]
    assert "has no 1.O" in report["fix"]


def test_an_index_without_the_nodes_platform(
    registry: RegistryProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = push(registry, unique("multi"), platforms=("linux/amd64", "linux/arm64"))
    status, report = explain(capsys, ref, "--platform", "linux/s390x")
    assert status == 1
    assert report["verdict"].startswith("no manifest for platform linux/s390x")
    assert "linux/arm64" in report["verdict"]
    status, report = explain(capsys, ref, "--platform", "linux/arm64")
    assert status == 0
    entries = [s["text"] for s in report["steps"] if s["step"] == "platform"]
    assert any("linux/arm64" in e and e.endswith("chosen") for e in entries)
    assert any("linux/amd64" in e and e.endswith("not linux/arm64") for e in entries)


def test_a_dead_mirror_before_a_good_upstream(
    registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = push(registry, unique("mirrored"))
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    folder = tmp_path / "certs.d" / registry.host
    folder.mkdir(parents=True)
    (folder / "hosts.toml").write_text(
        f'server = "http://{registry.host}"\n\n[host."http://127.0.0.1:{dead}"]\n'
        'capabilities = ["pull", "resolve"]\n'
    )
    status, report = explain(capsys, ref, "--hosts-dir", str(tmp_path / "certs.d"))
    assert status == 0
    first, second = report["attempts"][:2]
    assert (first["role"], first["host"]) == ("mirror", f"127.0.0.1:{dead}")
    assert "connection refused" in first["outcome"]
    assert (second["role"], second["outcome"]) == ("upstream", "ok")


def test_no_credentials_for_a_private_image(
    private: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    image, hosts = private
    status, report = explain(capsys, image, "--hosts-dir", str(hosts))
    assert status == 1
    assert "wants credentials and none match it" in report["verdict"]
    assert "docker-registry secret whose server is myregistry.io" in report["fix"]


def test_a_wrong_password(
    private: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, hosts = private
    wrong = secret_file(tmp_path, ALIAS, "not-the-password")
    status, report = explain(capsys, image, "--hosts-dir", str(hosts), "--secret", str(wrong))
    assert status == 1
    assert "refused every matching credential" in report["verdict"]
    assert "not-the-password" not in json.dumps(report)
    upstream = [a for a in report["attempts"] if a["role"] == "upstream"]
    assert upstream[0]["credential"].startswith("secret default/regcred")


def test_a_credential_under_the_wrong_registry_key(
    private: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, hosts = private
    elsewhere = secret_file(tmp_path, "other.example.com", PASSWORD)
    status, report = explain(capsys, image, "--hosts-dir", str(hosts), "--secret", str(elsewhere))
    assert status == 1
    texts = [s["text"] for s in report["steps"] if s["step"] == "credentials"]
    assert any("key other.example.com does not match myregistry.io" in t for t in texts)
    assert "none match it" in report["verdict"]
    assert PASSWORD not in json.dumps(report)


def test_a_secret_of_another_namespace_is_not_used(
    private: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, hosts = private
    theirs = secret_file(tmp_path, ALIAS, PASSWORD, namespace="team-a")
    status, report = explain(capsys, image, "--hosts-dir", str(hosts), "--secret", str(theirs))
    assert status == 1
    assert report["notes"] == [
        "the secret team-a/regcred is in namespace team-a; a pod in default can only use "
        "secrets of its own namespace"
    ]
    status, report = explain(
        capsys, image, "--hosts-dir", str(hosts), "--secret", str(theirs), "-n", "team-a"
    )
    assert status == 0
    assert report["pulls"] is True


def test_the_right_secret_pulls(
    private: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, hosts = private
    right = secret_file(tmp_path, ALIAS, PASSWORD)
    status, report = explain(capsys, image, "--hosts-dir", str(hosts), "--secret", str(right))
    assert status == 0
    assert "with secret default/regcred" in report["verdict"]
    assert PASSWORD not in json.dumps(report)


def test_an_invalid_reference(capsys: pytest.CaptureFixture[str]) -> None:
    status, report = explain(capsys, "Busybox:latest")
    assert status == 1
    assert report["reason"] == "InvalidImageName"
    assert report["attempts"] == []


def test_a_missing_secret_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["explain", "image", "busybox", "--secret", str(tmp_path / "nope.yaml")])
    assert status == 1
    assert "nope.yaml" in capsys.readouterr().err


def test_a_never_answering_registry_gets_a_verdict_within_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def go() -> tuple[int, dict[str, Any], float, str]:
        async with serve(never_answer(), lifetime=30) as stuck:
            started = anyio.current_time()
            status, report = await anyio.to_thread.run_sync(
                lambda: explain(capsys, f"{stuck.host}/app:1.0", "--timeout", "1.5")
            )
            return status, report, anyio.current_time() - started, stuck.host

    status, report, seconds, host = anyio.run(go)
    assert status == 1
    assert seconds < 10  # not the transport's default 30 s per wait, times its retries
    assert report["verdict"].startswith("no verdict within --timeout 1.5s")
    assert f"{host} had not answered its resolve request" in report["verdict"]
    assert "stalls" in report["fix"]


def test_a_node_config_reports_how_the_pull_would_queue(
    registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = push(registry, unique("config"))
    config = tmp_path / "kubelet.yaml"
    config.write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        "serializeImagePulls: false\nmaxParallelImagePulls: 2\nregistryPullQPS: 1\n"
        "registryBurst: 3\n"
    )
    status, report = explain(capsys, ref, "--config", str(config))
    assert status == 0
    node = [s["text"] for s in report["steps"] if s["step"] == "node"]
    assert node[0] == "parallel pulls, maxParallelImagePulls 2"
    assert node[1].startswith("registryPullQPS 1, registryBurst 3: more than 3 pulls")
    config.write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        "registryPullQPS: lots\n"
    )
    assert main(["explain", "image", ref, "--config", str(config)]) == 1
    assert "registryPullQPS" in capsys.readouterr().err
