"""The real kubectl (v1.32) against a running daemon: the user's documents, command by command.

The daemon runs in this process on a free loopback port; kubectl runs as a subprocess with the
kubeconfig ``kubelet-sim kubeconfig`` prints, and its own discovery cache in the test's folder.
The private image is in the real htpasswd registry (Basic auth over TLS), reached as
``myregistry.io`` through a ``hosts.toml``, as in the credential tests. kubectl missing FAILS
naming ``.ci/run``, which installs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from credential_world import ALIAS, ALICE, alias_hosts_dir, seed_private, unique
from hookserver import HookServer

from kubelet_sim.cli.commands.kubeconfig import kubeconfig
from kubelet_sim.config.kubelet import parse_kubelet_config
from kubelet_sim.node.daemon import Daemon, DaemonOptions
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.sim.registry import HTPASSWD_USERS, RegistryProcess
from kubelet_sim.sim.runnable import push_busybox_image
from kubelet_sim.sim.tls import TLSMaterial

pytestmark = [pytest.mark.anyio, pytest.mark.registry]

CONFIG = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
PASSWORD = HTPASSWD_USERS["alice"]
WAIT = 60.0


def kubectl_binary() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed: .ci/run installs it (kubectl v1.32)", pytrace=False)
    return found


@dataclass(frozen=True)
class Kubectl:
    """kubectl pointed at one daemon."""

    binary: str
    env: dict[str, str]
    daemon: Daemon

    def argv(self, *args: str) -> list[str]:
        return [self.binary, *args]

    async def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        with anyio.fail_after(WAIT):
            done = await anyio.run_process(
                self.argv(*args),
                input=stdin.encode() if stdin is not None else None,
                env=self.env,
                check=False,
            )
        return subprocess.CompletedProcess(
            done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
        )

    async def ok(self, *args: str, stdin: str | None = None) -> str:
        done = await self.run(*args, stdin=stdin)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        assert "error" not in done.stderr.lower(), done.stderr
        return done.stdout

    async def fails(self, *args: str, stdin: str | None = None) -> str:
        done = await self.run(*args, stdin=stdin)
        assert done.returncode != 0, f"kubectl {' '.join(args)} succeeded: {done.stdout}"
        return done.stderr

    async def until(self, check: Callable[[str], bool], *args: str, what: str) -> str:
        """Run ``kubectl ARGS`` until its output passes ``check``."""
        out = ""
        try:
            with anyio.fail_after(WAIT):
                while not check(out := await self.ok(*args)):  # noqa: ASYNC110
                    await anyio.sleep(0.2)  # what a user does with `watch kubectl get pods`
        except TimeoutError:
            pytest.fail(f"{what} never happened; last output:\n{out}")
        return out


@asynccontextmanager
async def running(
    tmp_path: Path, hosts_dir: Path, *, config_text: str = CONFIG
) -> AsyncIterator[Kubectl]:
    daemon = Daemon(
        DaemonOptions(
            config=parse_kubelet_config(config_text),
            root=tmp_path / "root",
            listen_port=0,
            node_name="node-1",
            hosts_dir=hosts_dir,
            static_poll_interval=0.1,
        )
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(daemon.run)
        config = tmp_path / "kubeconfig"
        config.write_text(kubeconfig(f"http://127.0.0.1:{port}"))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),  # kubectl's discovery cache goes to $HOME/.kube/cache
            "KUBECONFIG": str(config),
        }
        yield Kubectl(kubectl_binary(), env, daemon)
        tg.cancel_scope.cancel()


@pytest.fixture
def hosts_dir(
    htpasswd_registry: RegistryProcess, tls_material: TLSMaterial, tmp_path: Path
) -> Path:
    return alias_hosts_dir(tmp_path / "certs.d", htpasswd_registry, tls_material.ca_cert)


def pod_yaml(name: str, image: str, **container: Any) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "app", "image": image, **container}],
        },
    }
    return json.dumps(doc)


def row(table: str, name: str) -> list[str]:
    """The cells of ``name``'s row in kubectl's table output."""
    for line in table.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            return cells
    return []


async def test_the_seed_walkthrough_with_kubectl(
    htpasswd_registry: RegistryProcess, hosts_dir: Path, tmp_path: Path
) -> None:
    repository = unique("myapp")
    await seed_private(htpasswd_registry, repository, creds=ALICE)
    image = f"{ALIAS}/{repository}:1.0"
    with HookServer() as hooks:
        async with running(tmp_path, hosts_dir) as k:
            created = await k.ok(
                "create",
                "secret",
                "docker-registry",
                "myregistrykey",
                f"--docker-server={ALIAS}",
                "--docker-username=alice",
                f"--docker-password={PASSWORD}",
                "--docker-email=alice@example.com",
            )
            assert created.strip() == "secret/myregistrykey created"
            patched = await k.ok(
                "patch",
                "serviceaccount",
                "default",
                "-p",
                '{"imagePullSecrets": [{"name": "myregistrykey"}]}',
            )
            assert patched.strip() == "serviceaccount/default patched"
            account = json.loads(await k.ok("get", "serviceaccount", "default", "-o", "json"))
            assert account["imagePullSecrets"] == [{"name": "myregistrykey"}]

            pre_stop = {"httpGet": {"host": "127.0.0.1", "port": hooks.port, "path": "/prestop"}}
            applied = await k.ok(
                "apply", "-f", "-", stdin=pod_yaml("web", image, lifecycle={"preStop": pre_stop})
            )
            assert applied.strip() == "pod/web created"
            # The pod inherited the ServiceAccount's pull secret at admission.
            secrets = await k.ok("get", "pod", "web", "-o", "jsonpath={.spec.imagePullSecrets}")
            assert json.loads(secrets) == [{"name": "myregistrykey"}]
            await k.ok("wait", "--for=condition=Ready", "pod/web", f"--timeout={int(WAIT)}s")
            pods = await k.ok("get", "pods")
            assert pods.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
            assert row(pods, "web")[1:4] == ["1/1", "Running", "0"]
            status = json.loads(await k.ok("get", "pod", "web", "-o", "json"))["status"]
            (container,) = status["containerStatuses"]
            assert container["ready"] is True
            assert container["imageID"].startswith(f"{ALIAS}/{repository}@sha256:")
            assert "running" in container["state"]

            # A typo'd tag: ErrImagePull, then ImagePullBackOff, with its events in describe.
            await k.ok("apply", "-f", "-", stdin=pod_yaml("typo", f"{ALIAS}/{repository}:1.O"))
            await k.until(
                lambda out: row(out, "typo")[2:3] == ["ImagePullBackOff"],
                "get",
                "pods",
                what="STATUS ImagePullBackOff",
            )
            described = await k.ok("describe", "pod", "typo")
            assert "Reason:       ImagePullBackOff" in described
            assert "Failed to pull image" in described
            assert "Back-off pulling image" in described
            assert f'Pulling image "{ALIAS}/{repository}:1.O"' in described
            assert PASSWORD not in described
            # The node's own view keeps each pull, not only the last error (explain's input).
            url = f"http://127.0.0.1:{k.daemon.port}"
            async with httpx.AsyncClient(base_url=url, trust_env=False) as api:
                detail = (await api.get("/pods/default/typo")).json()
            pulls = detail["containers"][0]["pulls"]
            assert len(pulls) >= 2
            assert {p["result"] for p in pulls} == {"ErrImagePull"}
            assert all("not found" in p["message"] for p in pulls)
            assert all(p["seconds"] >= 0 and p["waitedSeconds"] >= 0 for p in pulls)

            # -w streams the deletion: preStop runs, the pod is Terminating, then gone.
            watch_out = tmp_path / "watch.out"
            async with background(k, watch_out, "get", "pods", "-w", "--output-watch-events"):
                await wait_for_text(watch_out, "typo")
                deleted = await k.ok("delete", "pod", "web")
                assert deleted.strip() == 'pod "web" deleted'
                assert len(hooks.seen("/prestop")) == 1
                await wait_for_text(watch_out, "DELETED")
            lines = [line.split() for line in watch_out.read_text().splitlines()]
            web = [cells for cells in lines if len(cells) > 1 and cells[1] == "web"]
            assert web[0][0] == "ADDED"
            assert any(c[0] == "MODIFIED" and c[3] == "Terminating" for c in web)
            assert web[-1][0] == "DELETED"
            assert "web" not in await k.ok("get", "pods")
            notfound = await k.fails("get", "pod", "web")
            assert 'Error from server (NotFound): pods "web" not found' in notfound


@asynccontextmanager
async def background(k: Kubectl, out: Path, *args: str) -> AsyncIterator[anyio.abc.Process]:
    """``kubectl ARGS`` running (a watch), its output in ``out``; killed when the block ends,
    also when it fails (a watch never exits on its own)."""
    with out.open("wb") as sink:
        process = await anyio.open_process(k.argv(*args), env=k.env, stdout=sink, stderr=sink)
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
                await process.aclose()


async def wait_for_text(path: Path, text: str) -> None:
    with anyio.fail_after(WAIT):
        while text not in await anyio.Path(path).read_text():  # noqa: ASYNC110 - a subprocess writes it
            await anyio.sleep(0.1)


async def test_errors_patches_and_updates_through_kubectl(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    image = await busybox(registry)
    async with running(tmp_path, tmp_path / "no-hosts") as k:
        hook = {"exec": {"command": ["sh", "-c", "exit 3"]}}
        await k.ok(
            "apply", "-f", "-", stdin=pod_yaml("hooked", image, lifecycle={"postStart": hook})
        )
        await k.ok("apply", "-f", "-", stdin=pod_yaml("web", image))
        await k.ok("wait", "--for=condition=Ready", "pod/web", f"--timeout={int(WAIT)}s")

        # The seed's other page: describe shows the failed postStart hook.
        described = await k.until(
            lambda out: "FailedPostStartHook" in out, "describe", "pod", "hooked", what="the hook"
        )
        assert "PostStartHook failed" in described

        # Errors are metav1.Status with upstream's reasons, as kubectl prints them.
        notfound = await k.fails("get", "pod", "nope")
        assert 'Error from server (NotFound): pods "nope" not found' in notfound
        await k.ok("create", "configmap", "cfg", "--from-literal=a=b")
        exists = await k.fails("create", "configmap", "cfg", "--from-literal=a=b")
        assert 'configmaps "cfg" already exists' in exists
        stale = json.loads(await k.ok("get", "pod", "web", "-o", "json"))
        await k.ok("label", "pod", "web", "tier=front")
        conflict = await k.fails("replace", "-f", "-", stdin=json.dumps(stale))
        assert "Error from server (Conflict)" in conflict
        assert "the object has been modified" in conflict
        invalid = await k.fails("apply", "-f", "-", stdin=pod_yaml("bad", ""))
        assert 'The Pod "bad" is invalid: spec.containers[0].image' in invalid
        odd = json.loads(pod_yaml("odd", image))
        odd["spec"]["foo"] = 1
        strict = await k.fails("apply", "-f", "-", stdin=json.dumps(odd))
        assert 'strict decoding error: unknown field "spec.foo"' in strict
        modelled = json.loads(pod_yaml("vols", image))
        modelled["spec"]["volumes"] = [{"name": "v", "emptyDir": {}}]
        warned = await k.run("apply", "-f", "-", stdin=json.dumps(modelled))
        assert warned.returncode == 0, warned.stderr
        assert "Warning: field not modelled by kubelet-sim: spec.volumes" in warned.stderr

        # Patches of the three kinds, and selectors.
        merged = await k.ok(
            "patch",
            "pod",
            "web",
            "--type",
            "merge",
            "-p",
            '{"metadata":{"labels":{"tier":"back"}}}',
        )
        assert merged.strip() == "pod/web patched"
        assert row(await k.ok("get", "pods", "-l", "tier=back"), "web")
        assert not row(await k.ok("get", "pods", "-l", "tier!=back"), "web")
        failed_test = await k.fails(
            "patch",
            "pod",
            "web",
            "--type",
            "json",
            "-p",
            '[{"op": "test", "path": "/metadata/name", "value": "db"}]',
        )
        assert failed_test.startswith('The pods "web" is invalid: /metadata/name: ')
        by_field = await k.ok("get", "pods", "--field-selector", "metadata.name=web")
        assert [line.split()[0] for line in by_field.splitlines()[1:]] == ["web"]

        # kubectl apply of a changed image: client-side apply's strategic merge patch.
        newer = await busybox(registry)
        configured = await k.ok("apply", "-f", "-", stdin=pod_yaml("web", newer))
        assert configured.strip() == "pod/web configured"
        assert (
            await k.ok("get", "pod", "web", "-o", "jsonpath={.spec.containers[0].image}") == newer
        )
        await k.until(
            lambda out: (
                f'Successfully pulled image "{newer}"' in out or f'"{newer}" already present' in out
            ),
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web",
            what="the new image pulled",
        )
        await k.ok("wait", "--for=condition=Ready", "pod/web", f"--timeout={int(WAIT)}s")

        # Cluster-scoped objects and deletes of the other kinds.
        runtime_class = {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": "sandboxed"},
            "handler": "sim",
        }
        await k.ok("create", "-f", "-", stdin=json.dumps(runtime_class))
        assert row(await k.ok("get", "runtimeclass"), "sandboxed")[1:2] == ["sim"]
        assert (await k.ok("delete", "configmap", "cfg")).strip() == 'configmap "cfg" deleted'
        assert "cfg" not in await k.ok("get", "configmaps")


async def busybox(registry: RegistryProcess) -> str:
    """A runnable busybox image, pushed under a fresh tag."""
    ref = f"{registry.host}/kubectl/busybox:{unique('v')}"
    async with RegistryClient() as client:
        await push_busybox_image(client, ref)
    return ref


async def test_static_pods_show_as_mirror_pods_their_files_own(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    image = await busybox(registry)
    static = tmp_path / "manifests"
    static.mkdir()
    (static / "web.yaml").write_text(pod_yaml("static-web", image))
    config = f"{CONFIG}staticPodPath: {static}\n"
    async with running(tmp_path, tmp_path / "no-hosts", config_text=config) as k:
        await k.until(
            lambda out: row(out, "static-web-node-1")[1:3] == ["1/1", "Running"],
            "get",
            "pods",
            what="the mirror pod running",
        )
        mirror = json.loads(await k.ok("get", "pod", "static-web-node-1", "-o", "json"))
        annotations = mirror["metadata"]["annotations"]
        assert annotations["kubernetes.io/config.source"] == "file"
        assert annotations["kubernetes.io/config.mirror"] == mirror["metadata"]["uid"]
        refused = await k.fails("delete", "pod", "static-web-node-1", "--wait=false")
        assert "Error from server (Conflict)" in refused
        assert "is a static pod" in refused
        (static / "web.yaml").unlink()
        await k.until(
            lambda out: not row(out, "static-web-node-1"),
            "get",
            "pods",
            what="the mirror pod gone with its file",
        )
