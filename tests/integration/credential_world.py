"""A simulated cluster for credential tests: objects, a node with real store and registry client.

The private registries are reached under the alias ``myregistry.io`` (the name the user's documents
use) through a containerd ``hosts.toml`` whose ``server`` is the loopback test registry, so a Secret
made by ``kubectl create secret docker-registry --docker-server=myregistry.io`` matches them.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
from prometheus_client import CollectorRegistry

from kubelet_sim.config.kubelet import KubeletConfiguration
from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.platforms import parse_platform
from kubelet_sim.core.pods import ContainerState
from kubelet_sim.credentials import CredentialMetrics, DockerConfigSearch
from kubelet_sim.engine.workers import EngineSettings, PodState
from kubelet_sim.k8s import ApplyAction, Kind, ObjectStore, pod_spec
from kubelet_sim.node.builder import Node, NodeOptions, NodeParts, open_node
from kubelet_sim.node.paths import NodePaths
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.transport import TransportSettings
from kubelet_sim.sim.images import Image, build_image
from kubelet_sim.sim.registry import HTPASSWD_USERS, RegistryProcess
from kubelet_sim.sim.seed import push_image
from kubelet_sim.store import Store
from kubelet_sim.telemetry.events import EventRecorder
from kubelet_sim.telemetry.metrics import PullMetrics

ALIAS = "myregistry.io"
ALICE = Credentials(username="alice", password=HTPASSWD_USERS["alice"])
FAST = TransportSettings(backoff_initial=0.05, backoff_max=0.1, max_attempts=2, stall_timeout=5)
WAIT = 30.0
NO_NODE_CONFIG = DockerConfigSearch(files=())  # never read this machine's ~/.docker
_n = itertools.count()


def unique(name: str) -> str:
    return f"{name}-{next(_n)}"


def alias_hosts_dir(folder: Path, registry: RegistryProcess, ca: Path | None = None) -> Path:
    """A certs.d folder sending ``myregistry.io`` to ``registry`` (upstream: credentials go there)."""
    host_folder = folder / ALIAS
    host_folder.mkdir(parents=True, exist_ok=True)
    text = f'server = "{registry.scheme}://{registry.host}"\n'
    if ca is not None:
        text += f'ca = "{ca}"\n'
    (host_folder / "hosts.toml").write_text(text)
    return folder


def kubectl_secret(
    name: str, server: str, username: str, password: str, email: str, *, namespace: str = ""
) -> str:
    """``kubectl create secret docker-registry NAME --docker-server=... -o yaml --dry-run=client``."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    entry = {"username": username, "password": password, "email": email, "auth": auth}
    config = json.dumps({"auths": {server: entry}}, separators=(",", ":"))
    encoded = base64.b64encode(config.encode()).decode()
    ns = f"  namespace: {namespace}\n" if namespace else ""
    return (
        f"apiVersion: v1\ndata:\n  .dockerconfigjson: {encoded}\nkind: Secret\nmetadata:\n"
        f"  creationTimestamp: null\n  name: {name}\n{ns}type: kubernetes.io/dockerconfigjson\n"
    )


def pod_manifest(
    name: str,
    image: str,
    *,
    namespace: str = "default",
    secrets: tuple[str, ...] = (),
    account: str = "",
    policy: str = "IfNotPresent",
) -> str:
    lines = [
        "apiVersion: v1",
        "kind: Pod",
        "metadata:",
        f"  name: {name}",
        f"  namespace: {namespace}",
        "spec:",
    ]
    if account:
        lines.append(f"  serviceAccountName: {account}")
    lines += [
        "  containers:",
        f"  - name: {name}-app",
        f"    image: {image}",
        f"    imagePullPolicy: {policy}",
    ]
    if secrets:
        lines.append("  imagePullSecrets:")
        lines += [f"  - name: {s}" for s in secrets]
    return "\n".join(lines) + "\n"


async def seed_private(registry: RegistryProcess, repository: str, *, creds: Credentials) -> Image:
    """Push a small image to ``registry`` as ``repository:1.0``; returns it."""
    image = build_image(repository, "linux/amd64", (2048, 1024))
    async with RegistryClient() as client:
        await push_image(client, f"{registry.host}/{repository}:1.0", image, creds=creds)
    return image


@dataclass
class Cluster:
    objects: ObjectStore
    node: Node
    recorder: EventRecorder
    store: Store
    metrics: CollectorRegistry

    async def apply(self, text: str) -> None:
        """``kubectl apply -f``: store the objects and hand new or changed pods to the node."""
        for result in self.objects.apply_text(text):
            if result.kind is Kind.POD and result.action is not ApplyAction.UNCHANGED:
                pod = self.objects.get_pod(result.namespace, result.name)
                assert pod is not None
                await self.node.engine.submit(pod_spec(pod))

    def state(self, namespace: str, name: str) -> PodState:
        pod = self.objects.get_pod(namespace, name)
        assert pod is not None
        state = self.node.engine.pod(pod.uid)
        assert state is not None
        return state

    async def ready(self, namespace: str, name: str) -> PodState:
        with anyio.fail_after(WAIT):
            return await self.node.engine.wait_ready(self.state(namespace, name).spec.ref.uid)

    async def waiting(self, namespace: str, name: str, reason: str) -> ContainerState:
        with anyio.fail_after(WAIT):
            while True:
                (container,) = self.state(namespace, name).containers.values()
                if container.reason == reason:
                    return container
                await anyio.sleep(0.05)

    def events(self, name: str) -> list[str]:
        return [f"{e.type} {e.reason}: {e.message}" for e in self.recorder.events(name=name)]


@asynccontextmanager
async def cluster(
    root: Path,
    hosts_dir: Path,
    *,
    config: KubeletConfiguration | None = None,
    docker_config: DockerConfigSearch = NO_NODE_CONFIG,
    provider_config: Path | None = None,
    provider_bin_dir: Path | None = None,
    plugin_timeout: float = 60.0,
    recorder: EventRecorder | None = None,
    metrics: CollectorRegistry | None = None,
) -> AsyncIterator[Cluster]:
    config = config or KubeletConfiguration.default()
    objects = ObjectStore()
    recorder = EventRecorder(spam_filter=False) if recorder is None else recorder
    metrics = CollectorRegistry() if metrics is None else metrics
    # The production builder, with the test's parts: fast transport, short backoff and resync.
    options = NodeOptions(
        platform=parse_platform("linux/amd64"),
        hosts_dir=hosts_dir,
        docker_config=docker_config,
        image_credential_provider_config=provider_config,
        image_credential_provider_bin_dir=provider_bin_dir,
        credential_plugin_timeout=plugin_timeout,
        engine=EngineSettings(resync_period=0.2),
        backoff=(0.2, 1.0),
        transport=FAST,
    )
    parts = NodeParts(
        recorder=recorder,
        metrics=PullMetrics(metrics),
        metrics_registry=metrics,
        credential_metrics=CredentialMetrics(metrics),
        secrets=objects,
    )
    async with open_node(config, NodePaths(root), options, parts) as node, node.running():
        assert node.store is not None
        yield Cluster(objects, node, recorder, node.store, metrics)
