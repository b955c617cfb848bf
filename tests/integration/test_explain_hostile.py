"""Hostile tests of ``explain pod``: verdicts in the corners, what it must never show,
and what its route and CLI must survive.

Each daemon runs in-process on a loopback port (as in ``test_explain_pod.py``); private images
are in the htpasswd registry reached as ``myregistry.io``; stuck registries are hostile loopback
servers. Each test that pinned a bug (found by a hostile review) now passes with its fix.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
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
    Node,
    daemon,
    failed,
    pulled,
)

import kubelet_sim.node.daemon as daemon_module
import kubelet_sim.node.explain as explain_module
from kubelet_sim.cli.main import main
from kubelet_sim.core.trace import HOST_TRIES
from kubelet_sim.engine.workers import EngineSettings
from kubelet_sim.node.builder import NodeOptions
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.sim.images import build_image
from kubelet_sim.sim.registry import HTPASSWD_USERS, RegistryProcess
from kubelet_sim.sim.seed import push_image
from kubelet_sim.testing.hostile import (
    HostileRequest,
    answer,
    never_answer,
    refusing_port,
    serve,
)

pytestmark = [pytest.mark.anyio, pytest.mark.registry]

private = explain_world.private  # the fixture, where pytest looks for it

NO_KEP2535 = "featureGates: {KubeletEnsureSecretPulledImages: false}\n"


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pod workers that resync every 0.2 s and an image backoff of 0.2 s (the daemon's are 10 s),
    and a pull called stuck after 1 s without an answer instead of 10 s."""
    real = NodeOptions

    def options(**kwargs: Any) -> NodeOptions:
        kwargs["engine"] = EngineSettings(resync_period=0.2, resync_jitter=0.0)
        return real(**kwargs, backoff=(0.2, 0.4))

    monkeypatch.setattr(daemon_module, "NodeOptions", options)
    monkeypatch.setattr(explain_module, "STALLED", 1.0)


def running(c: Doc) -> bool:
    return bool(c.get("state", {}).get("phase") == "running")


def secret(name: str, server: str, password: str = HTPASSWD_USERS["alice"]) -> str:
    return kubectl_secret(name, server, "alice", password, "a@b.c", namespace="default")


def opaque(name: str) -> str:
    return (
        "apiVersion: v1\nkind: Secret\ntype: Opaque\nmetadata:\n"
        f"  name: {name}\n  namespace: default\ndata:\n  password: aHVudGVyMg==\n"
    )


def raw_secret(name: str, auths: dict[str, Any]) -> str:
    encoded = base64.b64encode(json.dumps({"auths": auths}).encode()).decode()
    return (
        "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/dockerconfigjson\nmetadata:\n"
        f"  name: {name}\n  namespace: default\ndata:\n  .dockerconfigjson: {encoded}\n"
    )


# -- the route ----------------------------------------------------------------------------


async def test_the_route_answers_bad_paths_and_methods_without_a_500(tmp_path: Path) -> None:
    with refusing_port() as dead:
        async with daemon(tmp_path) as node:
            await node.apply(pod_manifest("web", f"127.0.0.1:{dead}/app:1.0"))
            api = node.api
            assert (await api.get("/pods/default/web/explain/x")).status_code == 400
            assert (await api.post("/pods/default/web/explain")).status_code == 405
            assert (await api.delete("/pods/default/web/explain")).status_code == 405
            assert (await api.get("/pods/default/web/explain")).status_code == 200
            assert (await api.get("/pods/default/web/explain/")).status_code == 200
            missing = await api.get("/pods/default/nosuch/explain")
            assert missing.status_code == 404
            assert missing.json()["error"] == "pod default/nosuch not found"
            for bad in ("/pods/d%C3%A9/web/explain", "/pods/DEFAULT/web/explain", "/pods//explain"):
                assert (await api.get(bad)).status_code in (400, 404), bad
            assert (await api.get("/pods/default/explain")).status_code == 404  # a pod "explain"
            huge = "a" * 5000
            assert (await api.get(f"/pods/default/{huge}/explain")).status_code in (400, 404, 414)


async def test_a_malformed_hosts_toml_is_explained_not_a_500(tmp_path: Path) -> None:
    with refusing_port() as dead:
        folder = tmp_path / "certs.d" / f"127.0.0.1:{dead}"
        folder.mkdir(parents=True)
        (folder / "hosts.toml").write_text('server = "http://127.0.0.1:1"\n[host.\n')
        async with daemon(tmp_path, hosts_dir=tmp_path / "certs.d") as node:
            await node.apply(pod_manifest("web", f"127.0.0.1:{dead}/app:1.0"))
            response = await node.api.get("/pods/default/web/explain")
    assert response.status_code == 200, response.text


# -- verdicts -----------------------------------------------------------------------------


async def test_a_pod_rejected_by_node_affinity(tmp_path: Path) -> None:
    manifest = pod_manifest("web", "registry.test/app:1.0") + "  nodeSelector:\n    disk: ssd\n"
    async with daemon(tmp_path) as node:
        await node.apply(manifest)
        (c,) = (await node.explain("default", "web"))["containers"]
    assert c["ok"] is False
    assert "NodeAffinity" in c["verdict"] or "NodeAffinity" in c["reason"]


async def test_a_failed_pull_then_the_image_present(
    tmp_path: Path, private: tuple[str, Path], quick: None
) -> None:
    image, hosts = private
    async with daemon(tmp_path, NO_KEP2535, hosts_dir=hosts) as node:
        await node.apply(pod_manifest("first", image))
        await node.wait("default", "first", failed)
        await node.apply(
            secret("regcred", ALIAS), pod_manifest("second", image, secrets=("regcred",))
        )
        await node.wait("default", "second", pulled)
        c = await node.wait("default", "first", running)
    assert c["pulls"][-1]["cause"] == "auth"  # its own pull failed, the image came later
    assert c["ok"] is True, c["verdict"]


async def test_never_on_a_present_image_the_pod_may_not_use(
    tmp_path: Path, private: tuple[str, Path]
) -> None:
    image, hosts = private
    async with daemon(tmp_path, hosts_dir=hosts) as node:
        await node.apply(
            secret("regcred", ALIAS), pod_manifest("owner", image, secrets=("regcred",))
        )
        await node.wait("default", "owner", pulled)
        await node.apply(pod_manifest("never", image, policy="Never"))
        c = await node.wait("default", "never", lambda c: c["reason"] == "ErrImageNeverPull")
    assert "no pull has started" not in c["verdict"]
    assert "Never" in c["verdict"]


async def test_a_pull_secret_of_the_wrong_type(tmp_path: Path, private: tuple[str, Path]) -> None:
    image, hosts = private
    async with daemon(tmp_path, hosts_dir=hosts) as node:
        await node.apply(opaque("regcred"), pod_manifest("web", image, secrets=("regcred",)))
        c = await node.wait("default", "web", failed)
    assert any("not a docker-registry secret" in s["text"] for s in c["steps"])
    assert "regcred" in c["verdict"]


async def test_a_secret_whose_key_has_the_wrong_port(
    tmp_path: Path, private: tuple[str, Path]
) -> None:
    image, hosts = private
    async with daemon(tmp_path, hosts_dir=hosts) as node:
        await node.apply(
            secret("regcred", f"{ALIAS}:5000"), pod_manifest("web", image, secrets=("regcred",))
        )
        c = await node.wait("default", "web", failed)
    assert c["pulls"][-1]["cause"] == "auth"
    assert "none under a key for myregistry.io" in c["verdict"]
    assert "with its port" in c["fix"]
    assert HTPASSWD_USERS["alice"] not in json.dumps(c)


# -- what is never shown ------------------------------------------------------------------

LEAKED = "hunter2-leak"


async def test_a_secret_key_with_a_password_in_it_is_not_shown(tmp_path: Path) -> None:
    entry = {"username": "alice", "password": "x", "auth": base64.b64encode(b"alice:x").decode()}
    key = f"https://alice:{LEAKED}/x@{ALIAS}"
    with refusing_port() as dead:
        async with daemon(tmp_path) as node:
            await node.apply(
                raw_secret("regcred", {key: entry}),
                pod_manifest("web", f"127.0.0.1:{dead}/app:1.0", secrets=("regcred",)),
            )
            doc = await node.explain("default", "web")
            status = await anyio.to_thread.run_sync(
                main, ["explain", "pod", "default/web", "--server", node.url]
            )
    assert status == 1
    assert any("is not a registry key" in s["text"] for s in doc["containers"][0]["steps"])
    assert LEAKED not in json.dumps(doc)


def echo_authorization() -> Any:
    """A registry that challenges for Basic auth and quotes the Authorization it got back."""

    async def behaviour(request: HostileRequest, stream: anyio.abc.SocketStream) -> None:
        given = request.headers.get("authorization", "")
        if not given:
            await answer(401, b"", {"WWW-Authenticate": 'Basic realm="hostile"'})(request, stream)
            return
        body = json.dumps(
            {"errors": [{"code": "UNAUTHORIZED", "message": f"refused {given}", "detail": None}]}
        ).encode()
        headers = {"Content-Type": "application/json", "WWW-Authenticate": 'Basic realm="x"'}
        await answer(401, body, headers)(request, stream)

    return behaviour


async def test_a_registry_that_quotes_the_authorization_header(tmp_path: Path) -> None:
    password = "s3cret-" + LEAKED
    basic = base64.b64encode(f"alice:{password}".encode()).decode()
    async with serve(echo_authorization()) as hostile, daemon(tmp_path) as node:
        await node.apply(
            secret("regcred", hostile.host, password),
            pod_manifest("web", f"{hostile.host}/app:1.0", secrets=("regcred",)),
        )
        c = await node.wait("default", "web", failed)
    assert c["pulls"][-1]["hosts"][-1]["withCredentials"] is True
    assert password not in json.dumps(c)
    assert basic not in json.dumps(c)


# -- the CLI against what is not a daemon ---------------------------------------------------


def account(**pull: Any) -> bytes:
    attempt = {
        "startedAt": 1.0,
        "waitedSeconds": 0.0,
        "seconds": 0.1,
        "result": "ErrImagePull",
        "message": "",
        "cause": "",
        "step": "",
        "hosts": [],
        **pull,
    }
    container = {
        "container": "c",
        "kind": "containers",
        "image": "i",
        "ok": False,
        "reason": "ErrImagePull",
        "verdict": "v",
        "fix": "",
        "steps": [],
        "pulls": [attempt],
    }
    doc = {"namespace": "a", "name": "b", "uid": "u", "ok": False, "containers": [container]}
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "pull",
    [
        pytest.param({"startedAt": 1e300}, id="a-time-out-of-range"),
        pytest.param({"waitedSeconds": "soon"}, id="a-string-for-seconds"),
        pytest.param(
            {
                "hosts": [
                    {
                        "what": "x",
                        "role": "r",
                        "host": "h",
                        "error": "",
                        "status": None,
                        "withCredentials": False,
                        "seconds": "1",
                    }
                ]
            },
            id="a-string-for-a-host-time",
        ),
    ],
)
async def test_the_cli_against_a_server_that_is_not_a_daemon(
    pull: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    headers = {"Content-Type": "application/json"}
    async with serve(answer(200, account(**pull), headers)) as fake:
        status = await anyio.to_thread.run_sync(
            main, ["explain", "pod", "a/b", "--server", fake.url]
        )
    assert status == 1  # an error naming the server, not an exception
    assert fake.url in capsys.readouterr().err


async def test_the_cli_against_a_server_answering_garbage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for body, status in ((b"<html>hi</html>", 200), (b"{}", 200), (b'{"error": "x"}', 500)):
        async with serve(answer(status, body)) as fake:
            code = await anyio.to_thread.run_sync(
                main, ["explain", "pod", "a/b", "--server", fake.url]
            )
        assert code == 1, body
        assert fake.url in capsys.readouterr().err
    with refusing_port() as dead:
        code = await anyio.to_thread.run_sync(
            main, ["explain", "pod", "a/b", "--server", f"http://127.0.0.1:{dead}"]
        )
    assert code == 1
    assert "cannot reach the daemon" in capsys.readouterr().err


# -- one pull shared by two pods (single-flight) --------------------------------------------

PARALLEL = "serializeImagePulls: false\nmaxParallelImagePulls: 2\n"
SHARING = "waiting for an identical pull in flight"


def stuck(c: Doc) -> bool:
    return "no answer from" in c["verdict"]


def sharing(c: Doc) -> bool:
    return str(c.get("pullInProgress", {}).get("step", "")).startswith(SHARING)


@asynccontextmanager
async def two_pods_on_a_stuck_registry(tmp_path: Path) -> AsyncIterator[tuple[Node, str]]:
    """Pods ``one`` and ``two`` pull the same image from a registry that never answers: ``one``
    leads the pull, ``two`` waits for it; both hold a parallel slot."""
    async with serve(never_answer(), lifetime=30) as hostile, daemon(tmp_path, PARALLEL) as node:
        image = f"{hostile.host}/app:1.0"
        await node.apply(pod_manifest("one", image))
        await node.wait("default", "one", stuck)
        await node.apply(pod_manifest("two", image))
        await node.wait("default", "two", sharing)
        yield node, hostile.host


async def test_a_pod_sharing_a_stuck_pull_is_stuck_too(tmp_path: Path, quick: None) -> None:
    async with two_pods_on_a_stuck_registry(tmp_path) as (node, host):
        await anyio.sleep(1.2)  # past STALLED (1 s here) for both
        (one,) = (await node.explain("default", "one"))["containers"]
        (two,) = (await node.explain("default", "two"))["containers"]
    assert one["ok"] is False
    assert host in one["verdict"]
    assert two["ok"] is False, two["verdict"]
    assert host in two["verdict"]


async def test_a_pod_queued_behind_slots_held_by_one_stuck_pull(
    tmp_path: Path, registry: RegistryProcess, quick: None
) -> None:
    good = f"{registry.host}/{unique('behind')}:1.0"
    async with RegistryClient() as client:
        await push_image(client, good, build_image("behind", "linux/amd64", (100,)))
    async with two_pods_on_a_stuck_registry(tmp_path) as (node, _):
        await node.apply(pod_manifest("queued", good))
        await anyio.sleep(1.2)
        c = await node.wait("default", "queued", lambda c: c["queue"].get("position") == 1)
    assert c["reason"] == "ContainerCreating"
    assert c["ok"] is False, c["verdict"]
    assert "every slot (2)" in c["verdict"]


async def test_a_sharer_whose_leader_is_deleted(tmp_path: Path, quick: None) -> None:
    async with two_pods_on_a_stuck_registry(tmp_path) as (node, _):
        response = await node.api.delete("/pods/default/one")
        assert response.status_code == 200, response.text
        assert node.daemon.node is not None
        manager = node.daemon.node.manager
        with anyio.fail_after(10):
            while len(manager.pulls_in_progress()) > 1:  # noqa: ASYNC110 - engine state, polled
                await anyio.sleep(0.05)
        c = await node.wait(
            "default", "two", lambda c: c["pullInProgress"].get("waitingOn") is not None
        )
        (holder,) = c["queue"]["pulling"]
        assert holder["pod"] == "default/two"  # the only pull in flight is its own
    assert not c["pullInProgress"]["step"].startswith(SHARING)


# -- other kinds of pods ------------------------------------------------------------------


async def test_a_static_pod_with_a_pull_secret(
    tmp_path: Path, private: tuple[str, Path], quick: None
) -> None:
    image, hosts = private
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "web.yaml").write_text(pod_manifest("web", image, secrets=("regcred",)))
    config = f"staticPodPath: {manifests}\n"
    async with daemon(tmp_path, config, hosts_dir=hosts, static_poll_interval=0.1) as node:
        await node.apply(secret("regcred", ALIAS))
        c = await node.wait("default", "web-node-1", failed)
    assert any("a static pod cannot use pull secrets" in s["text"] for s in c["steps"])
    assert c["pulls"][-1]["cause"] == "auth"
    assert "imagePullSecrets" not in c["fix"], c["fix"]
    assert "static" in c["verdict"] + c["fix"]


async def test_always_pull_images_is_explained_as_the_node_runs_it(
    tmp_path: Path, registry: RegistryProcess
) -> None:
    ref = f"{registry.host}/{unique('always')}:1.0"
    async with RegistryClient() as client:
        await push_image(client, ref, build_image("always", "linux/amd64", (100,)))
    plugins = frozenset({"AlwaysPullImages"})
    async with daemon(tmp_path, admission_plugins=plugins) as node:
        await node.apply(pod_manifest("web", ref, policy="IfNotPresent"))
        c = await node.wait("default", "web", pulled)
    (reference,) = [s["text"] for s in c["steps"] if s["step"] == "reference"]
    assert "imagePullPolicy Always" in reference
    assert any("policy Always" in s["text"] for s in c["steps"] if s["step"] == "presence")


async def test_init_and_app_containers_of_one_image(
    tmp_path: Path, registry: RegistryProcess
) -> None:
    ref = f"{registry.host}/{unique('shared')}:1.0"
    async with RegistryClient() as client:
        await push_image(client, ref, build_image("shared", "linux/amd64", (100,)))
    manifest = (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: default\nspec:\n"
        f"  initContainers:\n  - name: init\n    image: {ref}\n"
        f"  containers:\n  - name: a\n    image: {ref}\n  - name: b\n    image: {ref}\n"
        "    imagePullPolicy: Never\n"
    )
    async with daemon(tmp_path) as node:
        await node.apply(manifest)
        await node.wait("default", "web", lambda c: running(c), index=2)
        doc = await node.explain("default", "web")
    kinds = [(c["container"], c["kind"], c["ok"]) for c in doc["containers"]]
    assert kinds == [
        ("init", "initContainers", True),
        ("a", "containers", True),
        ("b", "containers", True),
    ]
    assert doc["ok"] is True


async def test_a_pod_deleted_and_recreated_while_it_is_explained(tmp_path: Path) -> None:
    statuses: set[int] = set()
    with refusing_port() as dead:
        manifest = pod_manifest("web", f"127.0.0.1:{dead}/app:1.0")
        async with daemon(tmp_path) as node:

            async def churn() -> None:
                for _ in range(15):
                    await node.apply(manifest)
                    await node.api.delete("/pods/default/web")

            async with anyio.create_task_group() as tg:
                tg.start_soon(churn)
                for _ in range(60):
                    statuses.add((await node.api.get("/pods/default/web/explain")).status_code)
    assert statuses <= {200, 404}, statuses


async def test_the_cli_with_a_name_the_daemon_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with daemon(tmp_path) as node:
        for target in ("default/Web", "default/web/explain"):
            status = await anyio.to_thread.run_sync(
                main, ["explain", "pod", target, "--server", node.url]
            )
            err = capsys.readouterr().err
            assert status == 1
            assert "not a kubelet-sim answer" not in err, err
            assert "bad pod path" in err


async def test_kep2535_for_a_pod_whose_secret_pulled_the_image(
    tmp_path: Path, private: tuple[str, Path]
) -> None:
    image, hosts = private
    async with daemon(tmp_path, hosts_dir=hosts) as node:
        await node.apply(secret("regcred", ALIAS), pod_manifest("one", image, secrets=("regcred",)))
        await node.wait("default", "one", pulled)
        await node.apply(pod_manifest("two", image, secrets=("regcred",)))
        c = await node.wait("default", "two", lambda c: running(c))
    assert c["pulls"] == []  # the record matched: no pull
    kep = [s["text"] for s in c["steps"] if "KubeletEnsureSecretPulledImages" in s["text"]]
    assert kep, c["steps"]
    assert "pulls again" not in kep[0], kep[0]


async def test_the_cli_names_the_url_it_asked(capsys: pytest.CaptureFixture[str]) -> None:
    async with serve(answer(200, b"<html>hi</html>")) as fake:
        status = await anyio.to_thread.run_sync(
            main, ["explain", "pod", "a/b", "--server", fake.url]
        )
    err = capsys.readouterr().err
    assert status == 1
    assert f"{fake.url}/pods/a/b/explain" in err, err


async def test_a_pull_of_many_layers_through_a_dead_mirror_keeps_few_hosts(
    tmp_path: Path, registry: RegistryProcess
) -> None:
    name = unique("layers")
    ref = f"{registry.host}/{name}:1.0"
    async with RegistryClient() as client:
        await push_image(client, ref, build_image(name, "linux/amd64", (64,) * 40))
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
    hosts = c["pulls"][-1]["hosts"]
    assert len(hosts) == HOST_TRIES  # over 80 requests asked: the first HOST_TRIES kept
    assert f"mirror 127.0.0.1:{dead}" in c["verdict"]


@pytest.mark.parametrize(
    ("status", "cause", "words"),
    [
        (429, "rate-limited", "too many requests (429)"),
        (503, "server-error", "failed to answer (5xx)"),
    ],
)
async def test_a_registry_that_refuses_with_a_status_gets_its_own_verdict(
    tmp_path: Path, quick: None, status: int, cause: str, words: str
) -> None:
    body = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "go away"}]}).encode()
    headers = {"Content-Type": "application/json"}
    async with serve(answer(status, body, headers)) as hostile, daemon(tmp_path) as node:
        await node.apply(pod_manifest("web", f"{hostile.host}/app:1.0"))
        c = await node.wait("default", "web", failed)
    assert c["pulls"][-1]["cause"] == cause
    assert words in c["verdict"]
    assert "retried after its backoff" in c["fix"]
