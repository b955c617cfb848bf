"""Private-registry scenarios of the user's documents, end to end against real registries with auth.

Each runs against the htpasswd (Basic over TLS) registry and, where the flow differs, the token-auth
registry (Bearer tokens from :class:`~kubelet_sim.sim.tokenserver.TokenServer`).
"""

from __future__ import annotations

import base64
import json
import re
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import yaml
from credential_world import (
    ALIAS,
    ALICE,
    alias_hosts_dir,
    cluster,
    kubectl_secret,
    pod_manifest,
    seed_private,
    unique,
)
from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

from kubelet_sim.cli.main import main
from kubelet_sim.config.kubelet import KubeletConfiguration
from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.credentials import DockerConfigSearch, parse_config_json
from kubelet_sim.errors import ConfigError, RegistryAuthError
from kubelet_sim.k8s import Kind, ObjectStore, pod_spec
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.sim.registry import HTPASSWD_USERS, RegistryConfig, RegistryProcess
from kubelet_sim.sim.tls import TLSMaterial
from kubelet_sim.sim.tokenserver import TokenServer
from kubelet_sim.store import CredentialKind
from kubelet_sim.telemetry.events import EventRecorder

pytestmark = [pytest.mark.anyio, pytest.mark.registry]

DATA = Path(__file__).parent.parent / "data"
KUBECTL_SECRET = DATA / "kubectl-secret-myregistrykey.yaml"
PASSWORD = HTPASSWD_USERS["alice"]
REFRESH_TOKEN = "refresh-TOKEN-for-alice-7f3e"
SECRET_WARNING = (
    "Warning FailedToRetrieveImagePullSecret: Unable to retrieve some image pull secrets "
    "(myregistrykey); attempting to pull the image may not succeed."
)


@dataclass(frozen=True)
class Private:
    kind: str
    registry: RegistryProcess
    hosts_dir: Path


@pytest.fixture(scope="module")
def token_server() -> Iterator[TokenServer]:
    with TokenServer(HTPASSWD_USERS, refresh_tokens={REFRESH_TOKEN: "alice"}) as server:
        yield server


@pytest.fixture(scope="module")
def token_registry(
    token_server: TokenServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryProcess]:
    work = tmp_path_factory.mktemp("token-registry")
    config = RegistryConfig(
        storage_dir=work / "storage", token=token_server.token_auth_config(work)
    )
    with RegistryProcess(config, work) as process:
        yield process


@pytest.fixture(params=["htpasswd", "token"])
def private(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Private:
    if request.param == "htpasswd":
        registry: RegistryProcess = request.getfixturevalue("htpasswd_registry")
        tls: TLSMaterial = request.getfixturevalue("tls_material")
        ca: Path | None = tls.ca_cert
    else:
        registry = request.getfixturevalue("token_registry")
        ca = None
    hosts = alias_hosts_dir(tmp_path_factory.mktemp("certs.d"), registry, ca)
    return Private(request.param, registry, hosts)


@pytest.mark.parametrize("source", ["checked-in", "generated"])
async def test_kubectl_secret_pulls_the_private_image(
    private: Private, tmp_path: Path, source: str
) -> None:
    repository = unique("myapp")
    image = await seed_private(private.registry, repository, creds=ALICE)
    ref = f"{ALIAS}/{repository}:1.0"
    secret = (
        KUBECTL_SECRET.read_text()
        if source == "checked-in"
        else kubectl_secret("myregistrykey", ALIAS, "alice", PASSWORD, "alice@example.com")
    )
    async with cluster(tmp_path, private.hosts_dir) as c:
        await c.apply(secret)
        await c.apply(pod_manifest("private-registry-pod", ref, secrets=("myregistrykey",)))
        state = await c.ready("default", "private-registry-pod")
        (container,) = state.containers.values()
        assert container.image_id == str(image.config.digest)
        events = c.events("private-registry-pod")
        assert events[0] == f'Normal Pulling: Pulling image "{ref}"'
        assert events[1].startswith(f'Normal Pulled: Successfully pulled image "{ref}" in ')
        (record,) = await c.store.pull_records(container.image_id)
        assert (record.kind, record.namespace, record.name) == (
            CredentialKind.SECRET,
            "default",
            "myregistrykey",
        )


async def test_pod_in_another_namespace_cannot_use_the_secret(
    private: Private, tmp_path: Path
) -> None:
    repository = unique("awesomeapp")
    await seed_private(private.registry, repository, creds=ALICE)
    ref = f"{ALIAS}/{repository}:1.0"
    async with cluster(tmp_path, private.hosts_dir) as c:
        await c.apply(KUBECTL_SECRET.read_text())  # in "default"
        await c.apply(pod_manifest("foo", ref, namespace="awesomeapps", secrets=("myregistrykey",)))
        container = await c.waiting("awesomeapps", "foo", "ErrImagePull")
        assert "pull access denied" in container.message
        assert "401" in container.message
        assert SECRET_WARNING in c.events("foo")
        assert PASSWORD not in container.message
        # the secret created in the pod's own namespace is picked up by the next attempt
        await c.apply(
            kubectl_secret(
                "myregistrykey", ALIAS, "alice", PASSWORD, "a@x", namespace="awesomeapps"
            )
        )
        await c.ready("awesomeapps", "foo")


async def test_service_account_inheritance_before_and_after_the_patch(
    private: Private, tmp_path: Path
) -> None:
    repository = unique("sa-app")
    await seed_private(private.registry, repository, creds=ALICE)
    ref = f"{ALIAS}/{repository}:1.0"
    async with cluster(tmp_path, private.hosts_dir) as c:
        await c.apply(KUBECTL_SECRET.read_text())
        await c.apply(pod_manifest("before", ref))
        await c.waiting("default", "before", "ErrImagePull")
        # kubectl patch serviceaccount default -p '{"imagePullSecrets": [{"name": "myregistrykey"}]}'
        c.objects.patch(
            Kind.SERVICE_ACCOUNT,
            "default",
            "default",
            {"imagePullSecrets": [{"name": "myregistrykey"}]},
        )
        await c.apply(pod_manifest("after", ref))
        await c.ready("default", "after")
        before = c.objects.get_pod("default", "before")
        assert before is not None
        assert before.image_pull_secrets == ()
        assert not c.state("default", "before").is_ready
        # the documents' named ServiceAccount
        await c.apply(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: private-registry-sa\n"
            "imagePullSecrets:\n- name: myregistrykey\n"
        )
        await c.apply(pod_manifest("my-pod-with-sa", ref, account="private-registry-sa"))
        await c.ready("default", "my-pod-with-sa")


def node_config_entry(kind: str) -> dict[str, str]:
    if kind == "token":  # docker login to an OAuth registry stores a refresh token
        return {"identitytoken": REFRESH_TOKEN}
    return {"auth": base64.b64encode(f"alice:{PASSWORD}".encode()).decode()}


async def test_node_docker_config_in_the_kubelet_root_dir(private: Private, tmp_path: Path) -> None:
    repository = unique("node-app")
    await seed_private(private.registry, repository, creds=ALICE)
    ref = f"{ALIAS}/{repository}:1.0"
    root = tmp_path / "var-lib-kubelet"
    root.mkdir()
    (root / "config.json").write_text(
        json.dumps({"auths": {ALIAS: node_config_entry(private.kind)}})
    )
    search = DockerConfigSearch(
        preferred=root,
        working_dir=tmp_path / "cwd",
        home=tmp_path / "home",
        root=tmp_path / "slash",
    )
    async with cluster(tmp_path, private.hosts_dir, docker_config=search) as c:
        await c.apply(pod_manifest("node-creds", ref))
        state = await c.ready("default", "node-creds")
        (container,) = state.containers.values()
        (record,) = await c.store.pull_records(container.image_id)
        assert record.kind is CredentialKind.NODE


def test_pull_cli_with_docker_config(
    htpasswd_registry: RegistryProcess,
    tls_material: TLSMaterial,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repository = unique("cli-app")
    anyio.run(lambda: seed_private(htpasswd_registry, repository, creds=ALICE))
    hosts = alias_hosts_dir(tmp_path / "certs.d", htpasswd_registry, tls_material.ca_cert)
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    config.write_text(
        json.dumps({"auths": {f"https://{ALIAS}/v1/": node_config_entry("htpasswd")}})
    )
    argv = [
        "pull", f"{ALIAS}/{repository}:1.0", "--root", str(tmp_path / "store"),
        "--hosts-dir", str(hosts), "--platform", "linux/amd64", "--output", "json",
    ]  # fmt: skip
    assert main(argv) == 1
    denied = json.loads(capsys.readouterr().out)
    assert denied["reason"] == "ErrImagePull"
    assert main([*argv, "--docker-config", str(config)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pulled"] is True
    assert PASSWORD not in json.dumps(doc) + json.dumps(denied)


def write_plugin(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text(
        f"#!{sys.executable}\nimport json, os, sys, time\nrequest = json.load(sys.stdin)\n{body}"
    )
    path.chmod(0o755)


GOOD_PLUGIN = """
print(json.dumps({
    "kind": "CredentialProviderResponse",
    "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
    "cacheKeyType": "Registry",
    "cacheDuration": "5m",
    "auth": {"myregistry.io": {"username": "alice", "password": os.environ["ALICE_PASSWORD"]}},
}))
"""
PLUGINS = {
    "good": GOOD_PLUGIN,
    "slow": "time.sleep(30)\n" + GOOD_PLUGIN,
    "garbage": "print('this is not a CredentialProviderResponse')\n",
}


def provider_config(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "credential-provider.yaml"
    path.write_text(
        "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n"
        f"- name: {name}\n  matchImages: ['*.io']\n  defaultCacheDuration: 1m\n"
        "  apiVersion: credentialprovider.kubelet.k8s.io/v1\n"
        f"  env: [{{name: ALICE_PASSWORD, value: {PASSWORD}}}]\n"
    )
    return path


@pytest.mark.parametrize(("plugin", "works"), [("good", True), ("slow", False), ("garbage", False)])
async def test_credential_provider_plugin(
    private: Private, tmp_path: Path, plugin: str, works: bool
) -> None:
    repository = unique("plugin-app")
    await seed_private(private.registry, repository, creds=ALICE)
    ref = f"{ALIAS}/{repository}:1.0"
    write_plugin(tmp_path / "bin", plugin, PLUGINS[plugin])
    with capture_logs() as logs:
        async with cluster(
            tmp_path,
            private.hosts_dir,
            provider_config=provider_config(tmp_path, plugin),
            provider_bin_dir=tmp_path / "bin",
            # 1 s only where the timeout is the point; a loaded CI machine may take longer than
            # that just to start the interpreter of a plugin that works.
            plugin_timeout=1.0 if plugin == "slow" else 30.0,
        ) as c:
            await c.apply(pod_manifest("plugin-pod", ref))
            if works:
                state = await c.ready("default", "plugin-pod")
                (container,) = state.containers.values()
                (record,) = await c.store.pull_records(container.image_id)
                assert record.kind is CredentialKind.NODE
            else:
                await c.waiting("default", "plugin-pod", "ErrImagePull")
                failures = [e for e in logs if e["event"] == "credential_provider.failed"]
                assert failures
                assert failures[0]["plugin"] == plugin
    assert PASSWORD not in repr(logs)


async def test_kep_2535_second_pod_without_credentials(private: Private, tmp_path: Path) -> None:
    repository = unique("kep-app")
    await seed_private(private.registry, repository, creds=ALICE)
    ref = f"{ALIAS}/{repository}:1.0"
    async with cluster(tmp_path, private.hosts_dir) as c:
        await c.apply(KUBECTL_SECRET.read_text())
        await c.apply(pod_manifest("owner", ref, secrets=("myregistrykey",)))
        await c.ready("default", "owner")
        await c.apply(pod_manifest("intruder", ref))
        container = await c.waiting("default", "intruder", "ErrImagePull")
        assert "pull access denied" in container.message
        assert "401" in container.message
        events = c.events("intruder")
        assert f'Normal Pulling: Pulling image "{ref}"' in events  # it had to ask the registry
        assert not any("already present" in e for e in events)
        await c.apply(pod_manifest("never", ref, policy="Never"))
        await c.waiting("default", "never", "ErrImageNeverPull")


async def test_kep_2535_never_verify_shares_the_cached_image(
    private: Private, tmp_path: Path
) -> None:
    repository = unique("kep-never")
    await seed_private(private.registry, repository, creds=ALICE)
    ref = f"{ALIAS}/{repository}:1.0"
    config = KubeletConfiguration.default().with_overrides(
        image_pull_credentials_verification_policy="NeverVerify"
    )
    async with cluster(tmp_path, private.hosts_dir, config=config) as c:
        await c.apply(KUBECTL_SECRET.read_text())
        await c.apply(pod_manifest("owner", ref, secrets=("myregistrykey",)))
        await c.ready("default", "owner")
        await c.apply(pod_manifest("intruder", ref))
        await c.ready("default", "intruder")
        assert c.events("intruder") == [
            f'Normal Pulled: Container image "{ref}" already present on machine and can be '
            "accessed by the pod",
            "Normal Created: Created container intruder-app",
            "Normal Started: Started container intruder-app",
        ]


WRONG_PASSWORD = "wrong-Pa55-guess-91c"
AUTH_HEADER = re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9+/=._\-]{12,}")


def forbidden_strings() -> list[str]:
    """Every form a credential of the leak scenario could take."""
    values = [PASSWORD, WRONG_PASSWORD, REFRESH_TOKEN]
    for user, password in (("alice", PASSWORD), ("alice", WRONG_PASSWORD)):
        values.append(base64.b64encode(f"{user}:{password}".encode()).decode())
        values.append(base64.b64encode(f"{user}:{password}".encode()).decode().rstrip("="))
    secret = yaml.safe_load(KUBECTL_SECRET.read_text())
    values.append(secret["data"][".dockerconfigjson"])
    return values


async def test_no_credential_leaks_in_logs_events_metrics_errors_or_reprs(
    private: Private, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    repository = unique("leak-app")
    await seed_private(private.registry, repository, creds=ALICE)
    ref = f"{ALIAS}/{repository}:1.0"
    recorder = EventRecorder(spam_filter=False)
    metrics = CollectorRegistry()
    texts: list[str] = []
    write_plugin(tmp_path / "bin", "good", GOOD_PLUGIN)
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    (node_dir / "config.json").write_text(
        json.dumps({"auths": {"unused.example.com": {"identitytoken": REFRESH_TOKEN}}})
    )
    with capture_logs() as logs:
        async with cluster(
            tmp_path / "one",
            private.hosts_dir,
            recorder=recorder,
            metrics=metrics,
            docker_config=DockerConfigSearch.only(node_dir),
        ) as c:
            await c.apply(KUBECTL_SECRET.read_text())
            c.objects.patch(
                Kind.SERVICE_ACCOUNT,
                "default",
                "default",
                {"imagePullSecrets": [{"name": "myregistrykey"}]},
            )
            await c.apply(pod_manifest("good", ref))
            await c.apply(kubectl_secret("wrong", ALIAS, "alice", WRONG_PASSWORD, "a@x"))
            await c.apply(pod_manifest("wrong", ref, secrets=("wrong",), policy="Always"))
            await c.apply(
                pod_manifest("elsewhere", ref, namespace="other", secrets=("myregistrykey",))
            )
            await c.ready("default", "good")
            texts.append(repr(await c.waiting("default", "wrong", "ErrImagePull")))
            texts.append(repr(await c.waiting("other", "elsewhere", "ErrImagePull")))
            for state in c.node.engine.pods():
                texts.append(repr(state.spec))
                texts += [repr(s) + s.message for s in state.containers.values()]
            texts.append(
                repr([c.objects.get(Kind.SECRET, "default", n) for n in ("myregistrykey", "wrong")])
            )
            texts.append(repr(c.objects.pods()))
            request = pod_spec(c.objects.pods()[0]).containers[0]
            texts.append(repr(await c.node.manager.credentials(request, parse_normalized(ref))))
            texts.append(
                repr(
                    await c.store.pull_records(
                        c.state("default", "good").containers["good-app"].image_id
                    )
                )
            )
        async with cluster(
            tmp_path / "two",
            private.hosts_dir,
            recorder=recorder,
            metrics=CollectorRegistry(),
            provider_config=provider_config(tmp_path, "good"),
            provider_bin_dir=tmp_path / "bin",
        ) as c:
            await c.apply(pod_manifest("plugin", ref))
            await c.ready("default", "plugin")
        async with RegistryClient(hosts_dir=private.hosts_dir) as client:
            with pytest.raises(RegistryAuthError) as denied:
                await client.resolve(parse_normalized(ref), Credentials("alice", WRONG_PASSWORD))
        texts += [
            str(denied.value),
            repr(denied.value),
            "".join(traceback.format_exception(denied.value)),
        ]
        bad_auth = KUBECTL_SECRET.read_text().replace(
            "type: kubernetes.io/dockerconfigjson", "type: kubernetes.io/dockercfg"
        )
        for broken in (
            bad_auth,
            KUBECTL_SECRET.read_text().replace(".dockerconfigjson: ", ".dockerconfigjson: x"),
        ):
            with pytest.raises(ConfigError) as invalid:
                ObjectStore().apply_text(broken)
            texts += [str(invalid.value), repr(invalid.value)]
        with pytest.raises(ConfigError) as bad_entry:
            parse_config_json(
                json.dumps(
                    {"auths": {ALIAS: {"auth": base64.b64encode(PASSWORD.encode()).decode()}}}
                ).encode()
            )
        texts += [str(bad_entry.value), repr(bad_entry.value)]
    texts.append(repr(logs))
    texts += [f"{e!r} {e.message}" for e in recorder.events()]
    texts.append(generate_latest(metrics).decode())
    out, err = capfd.readouterr()
    texts += [out, err]
    everything = "\n".join(texts)
    assert "Successfully pulled image" in everything  # the scenario ran
    assert "FailedToRetrieveImagePullSecret" in everything
    assert "kubelet_imagemanager_image_mustpull_checks_total" in everything
    for value in forbidden_strings():
        assert value not in everything, f"a credential ({len(value)} chars) leaked"
    assert AUTH_HEADER.search(everything) is None
