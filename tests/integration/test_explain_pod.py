"""``kubelet-sim explain pod``: the verdict for each cause of a pod without its image.

A daemon runs in-process on a loopback port, as ``kubelet-sim run`` would; pods and secrets are
applied through its API and ``GET /pods/NS/NAME/explain`` (and the CLI over it) is read once
the pod has got where the cause puts it. Private images are in the htpasswd registry (Basic
over TLS) reached as ``myregistry.io``; a never-answering registry is a hostile loopback
server; a dead mirror a loopback port nobody listens on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import explain_world
import pytest
from credential_world import (
    ALIAS,
    kubectl_secret,
    pod_manifest,
    unique,
)
from explain_world import (
    Doc,
    daemon,
    failed,
    pulled,
)

from kubelet_sim.cli.main import main
from kubelet_sim.core.platforms import parse_platform
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.sim.images import build_image, build_multiarch
from kubelet_sim.sim.registry import HTPASSWD_USERS, RegistryProcess
from kubelet_sim.sim.seed import push_image, push_index
from kubelet_sim.testing.hostile import (
    by_path,
    drip,
    never_answer,
    refusing_port,
    registry_of,
    serve,
)

pytestmark = [pytest.mark.anyio, pytest.mark.registry]

private = explain_world.private  # the fixture, where pytest looks for it


async def push(registry: RegistryProcess, name: str, *, platforms: tuple[str, ...] = ()) -> str:
    ref = f"{registry.host}/{name}:1.0"
    async with RegistryClient() as client:
        if platforms:
            await push_index(client, ref, build_multiarch(name, platforms, (1000, 2000)))
        else:
            await push_image(client, ref, build_image(name, "linux/amd64", (1000, 2000)))
    return ref


def secret(name: str, server: str, password: str, namespace: str) -> str:
    return kubectl_secret(name, server, "alice", password, "a@b.c", namespace=namespace)


def steps(c: Doc, name: str) -> list[str]:
    return [s["text"] for s in c["steps"] if s["step"] == name]


def no_secret_values(doc: Doc) -> None:
    text = json.dumps(doc)
    assert HTPASSWD_USERS["alice"] not in text
    assert "wrong-password" not in text


async def test_a_secret_in_another_namespace(tmp_path: Path, private: tuple[str, Path]) -> None:
    image, hosts = private
    async with daemon(tmp_path, hosts_dir=hosts) as node:
        await node.apply(
            secret("regcred", ALIAS, HTPASSWD_USERS["alice"], "team-a"),
            pod_manifest("web", image, namespace="team-b", secrets=("regcred",)),
        )
        c = await node.wait("team-b", "web", failed)
    assert c["reason"] == c["state"]["reason"]
    assert c["reason"] in ("ErrImagePull", "ImagePullBackOff")
    assert (
        "the secret regcred is in namespace team-a; pods can only use secrets of their own "
        "namespace" in c["verdict"]
    )
    assert "in namespace team-b" in c["fix"]
    assert c["pulls"][-1]["cause"] == "auth"
    assert any("not in namespace team-b but in team-a" in t for t in steps(c, "credentials"))
    no_secret_values(c)


async def test_a_secret_that_does_not_exist(tmp_path: Path, private: tuple[str, Path]) -> None:
    image, hosts = private
    async with daemon(tmp_path, hosts_dir=hosts) as node:
        await node.apply(pod_manifest("web", image, secrets=("regcred",)))
        c = await node.wait("default", "web", failed)
    assert "the pull secret regcred does not exist in namespace default" in c["verdict"]
    assert "kubectl create secret docker-registry regcred" in c["fix"]


async def test_a_wrong_password(tmp_path: Path, private: tuple[str, Path]) -> None:
    image, hosts = private
    async with daemon(tmp_path, hosts_dir=hosts) as node:
        await node.apply(
            secret("regcred", ALIAS, "wrong-password", "default"),
            pod_manifest("web", image, secrets=("regcred",)),
        )
        c = await node.wait("default", "web", failed)
    assert c["verdict"].startswith(f"{ALIAS} refused the credentials tried")
    assert f"secret default/regcred key {ALIAS}" in c["verdict"]
    assert "password is wrong" in c["fix"]
    (resolve, *_) = c["pulls"][-1]["hosts"]
    assert resolve["withCredentials"] is True
    assert resolve["status"] == 401
    no_secret_values(c)


async def test_no_credentials_for_a_private_image(
    tmp_path: Path, private: tuple[str, Path]
) -> None:
    image, hosts = private
    async with daemon(tmp_path, hosts_dir=hosts) as node:
        await node.apply(pod_manifest("web", image))
        c = await node.wait("default", "web", failed)
    assert c["verdict"] == f"{ALIAS} wants credentials and none match it: the pull was anonymous"
    assert "create a docker-registry secret for myregistry.io" in c["fix"]
    assert c["pulls"][-1]["hosts"][0]["withCredentials"] is False


async def test_a_credential_under_the_wrong_registry_key(
    tmp_path: Path, private: tuple[str, Path]
) -> None:
    image, hosts = private
    async with daemon(tmp_path, hosts_dir=hosts) as node:
        await node.apply(
            secret("regcred", "https://index.docker.io/v1/", HTPASSWD_USERS["alice"], "default"),
            pod_manifest("web", image, secrets=("regcred",)),
        )
        c = await node.wait("default", "web", failed)
    assert (
        "secret default/regcred has credentials, but none under a key for myregistry.io"
        in (c["verdict"])
    )
    assert "--docker-server=myregistry.io" in c["fix"]
    assert any("key index.docker.io does not match" in t for t in steps(c, "credentials"))
    no_secret_values(c)


async def test_a_tag_that_does_not_exist(tmp_path: Path, registry: RegistryProcess) -> None:
    ref = (await push(registry, unique("tag"))).replace(":1.0", ":1.O")
    async with daemon(tmp_path) as node:
        await node.apply(pod_manifest("web", ref))
        c = await node.wait("default", "web", failed)
    assert c["verdict"].endswith(
        "does not exist: the registry has no 1.O in " + ref.split("/")[1].split(":")[0]
    )
    assert c["pulls"][-1]["cause"] == "not-found"


async def test_an_index_without_the_nodes_platform(
    tmp_path: Path, registry: RegistryProcess
) -> None:
    ref = await push(registry, unique("multi"), platforms=("linux/amd64", "linux/arm64"))
    async with daemon(tmp_path, node_platform=parse_platform("linux/s390x")) as node:
        await node.apply(pod_manifest("web", ref))
        c = await node.wait("default", "web", failed)
    assert c["verdict"].startswith("the image has no manifest for this node's platform")
    assert "linux/s390x" in c["verdict"]
    assert c["pulls"][-1]["cause"] == "platform"


async def test_a_dead_mirror_before_a_good_upstream(
    tmp_path: Path, registry: RegistryProcess
) -> None:
    ref = await push(registry, unique("mirrored"))
    with refusing_port() as dead:
        folder = tmp_path / "certs.d" / registry.host
        folder.mkdir(parents=True)
        (folder / "hosts.toml").write_text(
            f'server = "http://{registry.host}"\n\n[host."http://127.0.0.1:{dead}"]\n'
            'capabilities = ["pull", "resolve"]\n'
        )
        async with daemon(tmp_path, hosts_dir=tmp_path / "certs.d") as node:
            await node.apply(pod_manifest("web", ref))
            c = await node.wait("default", "web", pulled)
    assert c["ok"] is True
    assert f"mirror 127.0.0.1:{dead} (" in c["verdict"]
    assert "connection refused" in c["verdict"]  # containerd's wording, not httpx's
    assert "remove that mirror in hosts.toml" in c["fix"]
    roles = [(h["role"], bool(h["error"])) for h in c["pulls"][-1]["hosts"]]
    assert roles[:2] == [("mirror", True), ("upstream", False)]


async def test_a_never_answering_registry_holds_the_slots(
    tmp_path: Path, registry: RegistryProcess
) -> None:
    good = await push(registry, unique("queued"))
    config = "serializeImagePulls: false\nmaxParallelImagePulls: 1\n"
    async with serve(never_answer(), lifetime=60) as stuck, daemon(tmp_path, config) as node:
        await node.apply(pod_manifest("stuck", f"127.0.0.1:{stuck.port}/app:1.0"))
        await node.wait("default", "stuck", lambda c: "pullInProgress" in c)
        await node.apply(pod_manifest("queued", good))
        c = await node.wait(
            "default",
            "queued",
            lambda c: "every slot" in c["verdict"],
            timeout=40,
        )
        assert c["reason"] == "ContainerCreating"
        assert f"no answer from 127.0.0.1:{stuck.port}" in c["verdict"]
        assert c["queue"]["position"] == 1
        (holder,) = c["queue"]["pulling"]
        assert holder["pod"] == "default/stuck"
        assert holder["waitingOn"]["host"] == f"127.0.0.1:{stuck.port}"
        held = await node.explain("default", "stuck")
        (stuck_c,) = held["containers"]
        assert "no answer from" in stuck_c["verdict"]


async def test_qps_exhaustion(tmp_path: Path, registry: RegistryProcess) -> None:
    refs = [await push(registry, unique("qps")) for _ in range(3)]
    config = "serializeImagePulls: false\nregistryPullQPS: 1\nregistryBurst: 1\n"
    async with daemon(tmp_path, config) as node:
        await node.apply(*(pod_manifest(f"p{i}", ref) for i, ref in enumerate(refs)))
        refused: list[Doc] = []
        with anyio.fail_after(30):
            while not refused:
                for i in range(3):
                    (c,) = (await node.explain("default", f"p{i}"))["containers"]
                    if any(p["cause"] == "qps" for p in c["pulls"]):
                        refused.append(c)
                await anyio.sleep(0.05)
    c = refused[0]
    assert c["pulls"][0]["message"] == "pull QPS exceeded"
    assert c["pulls"][0]["hosts"] == []  # never sent to a registry
    assert any("registryPullQPS 1, registryBurst 1" in t for t in steps(c, "throttle"))
    if c["pulls"][-1]["cause"] == "qps":
        assert "pull throttle refused the pull" in c["verdict"]
        assert "raise registryPullQPS" in c["fix"]


async def test_never_with_the_image_absent(tmp_path: Path, registry: RegistryProcess) -> None:
    ref = await push(registry, unique("never"))
    async with daemon(tmp_path) as node:
        await node.apply(pod_manifest("web", ref, policy="Never"))
        c = await node.wait("default", "web", lambda c: c["reason"] == "ErrImageNeverPull")
    assert c["verdict"] == f'Container image "{ref}" is not present with pull policy of Never'
    assert "IfNotPresent" in c["fix"]
    assert c["pulls"] == []


async def test_an_invalid_reference(tmp_path: Path) -> None:
    async with daemon(tmp_path) as node:
        await node.apply(pod_manifest("web", "registry.test/UPPER:1.0"))
        c = await node.wait("default", "web", lambda c: c["reason"] == "InvalidImageName")
    assert "repository name (UPPER) must be lowercase" in c["verdict"]
    assert c["fix"].startswith("fix the image name in the pod spec")


async def test_the_cli_prints_the_account_and_exits_1_for_a_failing_pod(
    tmp_path: Path, private: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    image, hosts = private
    async with daemon(tmp_path, hosts_dir=hosts) as node:
        await node.apply(pod_manifest("web", image))
        await node.wait("default", "web", failed)
        status = await anyio.to_thread.run_sync(
            main, ["explain", "pod", "default/web", "--server", node.url]
        )
        text = capsys.readouterr().out
        assert status == 1
        assert "verdict: " in text
        assert "wants credentials and none match it" in text
        assert f"resolve  upstream {ALIAS}" not in text  # hosts are the registry's real address
        assert "HTTP 401" in text
        status = await anyio.to_thread.run_sync(
            main, ["explain", "pod", "default/web", "--server", node.url, "-o", "json"]
        )
        doc = json.loads(capsys.readouterr().out)
        assert status == 1
        assert doc["ok"] is False
        status = await anyio.to_thread.run_sync(
            main, ["explain", "pod", "default/nosuch", "--server", node.url]
        )
        assert status != 0
        assert "pod default/nosuch not found" in capsys.readouterr().err


async def test_a_pull_in_progress_shows_its_layer_and_bytes(tmp_path: Path) -> None:
    # One layer drips (1 kB every 50 ms of 200 kB): the pull is caught downloading it.
    image = build_image("dripping", "linux/amd64", (1000, 200_000, 1000))
    slow = image.layers[1]
    behaviour = registry_of(image)
    dripping = drip(slow.data, interval=0.05, chunk=1000)
    routes = by_path([("GET", str(slow.digest), dripping)], behaviour)
    async with serve(routes, lifetime=60) as server, daemon(tmp_path) as node:
        await node.apply(pod_manifest("web", f"{server.host}/team/app:1.0"))
        c = await node.wait(
            "default",
            "web",
            lambda c: c.get("pullInProgress", {}).get("bytes", {}).get("done", 0) > 10_000,
        )
        current = c["pullInProgress"]
        assert current["step"].startswith("downloading layer 3/3 (")
        assert current["layers"] == {"done": 2, "total": 3}
        assert current["bytes"]["total"] == sum(len(layer.data) for layer in image.layers)
        assert current["sinceLastByteSeconds"] < 5
        assert c["ok"] is True
        assert c["verdict"].startswith("downloading layer 3/3")
        assert c["fix"] == "nothing is wrong: the pull is moving"
        pod = (await node.api.get("/pods/default/web")).json()
        (container,) = pod["containers"]
        assert container["pullInProgress"]["step"].startswith("downloading layer")
        text = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [sys.executable, "-m", "kubelet_sim", "describe", "pod", "default/web",
                 "--server", node.url],
                capture_output=True, text=True, check=True, timeout=30,
            ).stdout
        )  # fmt: skip
        assert "Pulling:            downloading layer 3/3" in text
