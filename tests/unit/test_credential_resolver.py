"""The credential lookup order, pull-secret events, and KEP-2535 through the image manager."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from engine_fakes import FakeRuntime
from prometheus_client import CollectorRegistry

from kubelet_sim.config.kubelet import ImagePullCredentialsVerificationPolicy as Policy
from kubelet_sim.config.kubelet import KubeletConfiguration
from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.pods import PodRef, PodSpec, PulledImage, PullRequest
from kubelet_sim.core.policy import PullPolicy
from kubelet_sim.core.reference import ImageReference, parse_normalized
from kubelet_sim.credentials import (
    CredentialMetrics,
    CredentialResolver,
    DockerConfigEntry,
    DockerConfigSearch,
    ImageAccessVerifier,
    NodeDockerConfig,
    SourcedCredentials,
    allowlisted,
    requires_verification,
)
from kubelet_sim.engine.ports import ProgressFn, ResolvedHook
from kubelet_sim.errors import PullReason, RegistryAuthError
from kubelet_sim.k8s import ObjectStore, pod_spec
from kubelet_sim.node.builder import Node
from kubelet_sim.store import CredentialKind, Store
from kubelet_sim.telemetry.events import EventRecorder
from kubelet_sim.telemetry.metrics import PullMetrics

PRIVATE = "private.example.com/team/app:v1"
PUBLIC = "public.example.com/lib/base:v1"
ALICE = ("alice", "alice-pw")
BOB = ("bob", "bob-pw")


def secret_yaml(
    name: str, server: str, user: tuple[str, str], *, namespace: str = "default"
) -> str:
    auth = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    config = json.dumps(
        {"auths": {server: {"username": user[0], "password": user[1], "auth": auth}}}
    )
    data = base64.b64encode(config.encode()).decode()
    return (
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"type: kubernetes.io/dockerconfigjson\ndata: {{.dockerconfigjson: {data}}}\n"
    )


def pod_yaml(
    name: str,
    image: str = PRIVATE,
    *,
    secrets: Sequence[str] = (),
    namespace: str = "default",
    policy: str = "IfNotPresent",
) -> str:
    refs = ", ".join(f"{{name: {s}}}" for s in secrets)
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  imagePullSecrets: [{refs}]\n"
        f"  containers: [{{name: app, image: '{image}', imagePullPolicy: {policy}}}]\n"
    )


def request_of(objects: ObjectStore, name: str, namespace: str = "default") -> PullRequest:
    pod = objects.get_pod(namespace, name)
    assert pod is not None
    return pod_spec(pod).containers[0]


def fingerprint(user: tuple[str, str]) -> str:
    return Credentials(username=user[0], password=user[1]).fingerprint()


# -- the lookup --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_lookup_order_secrets_then_node_then_plugins_own_namespace_only(
    tmp_path: Path,
) -> None:
    objects = ObjectStore()
    objects.apply_text(secret_yaml("first", "*.example.com", ALICE))
    objects.apply_text(secret_yaml("second", "private.example.com", BOB))
    objects.apply_text(secret_yaml("first", "private.example.com", BOB, namespace="other"))
    objects.apply_text(pod_yaml("web", secrets=["first", "second"]))
    objects.apply_text(pod_yaml("web", secrets=["first"], namespace="other"))
    node_config = tmp_path / "config.json"
    node_config.write_text(
        json.dumps({"auths": {"private.example.com": {"username": "node", "password": "n"}}})
    )
    resolver = CredentialResolver(
        secrets=objects, node=NodeDockerConfig(DockerConfigSearch.only(node_config))
    )
    ref = parse_normalized(PRIVATE)
    found = await resolver.lookup(request_of(objects, "web"), ref)
    # one keyring for all secrets: the literal host sorts before the glob
    assert [(c.username, c.source.name if c.source else None) for c in found] == [
        ("bob", "second"),
        ("alice", "first"),
        ("node", None),
    ]
    other = await resolver.lookup(request_of(objects, "web", "other"), ref)
    assert [(c.username, c.source.namespace if c.source else None) for c in other] == [
        ("bob", "other"),
        ("node", None),
    ]


@pytest.mark.parametrize(
    ("secret_docs", "names", "failed", "users"),
    [
        pytest.param([], ["missing"], ["missing"], [], id="missing"),
        pytest.param(
            [secret_yaml("good", "private.example.com", ALICE)],
            ["missing", "", "good"],
            ["missing"],
            ["alice"],
            id="missing-and-good-empty-skipped",
        ),
        pytest.param(
            [
                "apiVersion: v1\nkind: Secret\nmetadata: {name: bad}\ntype: kubernetes.io/dockercfg\n"
                'stringData: {.dockercfg: \'{"private.example.com": {"auth": "!!"}}\'}\n'
            ],
            ["bad"],
            ["bad"],
            [],
            id="malformed-auth",
        ),
        pytest.param(
            ["apiVersion: v1\nkind: Secret\nmetadata: {name: opaque}\nstringData: {a: b}\n"],
            ["opaque"],
            [],
            [],
            id="not-a-docker-secret-ignored",
        ),
    ],
)
@pytest.mark.anyio
async def test_unusable_secrets_warn_and_the_rest_are_used(
    secret_docs: list[str], names: list[str], failed: list[str], users: list[str]
) -> None:
    objects = ObjectStore()
    for doc in secret_docs:
        objects.apply_text(doc)
    recorder = EventRecorder(spam_filter=False)
    resolver = CredentialResolver(secrets=objects, recorder=recorder)
    request = PullRequest(
        PodRef("default", "p", "uid-p"),
        "app",
        PRIVATE,
        PullPolicy.ALWAYS,
        pull_secrets=tuple(names),
    )
    found = await resolver.lookup(request, parse_normalized(PRIVATE))
    assert [c.username for c in found] == users
    assert recorder.events() == [], "the lookup itself never warns: the pod's sync does"
    await resolver.pod_synced(PodSpec(request.pod, containers=(request,)))
    events = [(e.reason, e.message, e.field_path) for e in recorder.events()]
    if failed:
        assert events == [
            (
                "FailedToRetrieveImagePullSecret",
                f"Unable to retrieve some image pull secrets ({', '.join(failed)}); "
                "attempting to pull the image may not succeed.",
                "",
            )
        ]
    else:
        assert events == []


@pytest.mark.anyio
async def test_a_static_pod_can_never_read_the_secrets_it_names() -> None:
    # Its mirror pod may not reference Secrets, so the node may not read them: every sync warns.
    objects = ObjectStore()
    objects.apply_text(secret_yaml("regcred", "private.example.com", ALICE))
    recorder = EventRecorder(spam_filter=False)
    resolver = CredentialResolver(secrets=objects, recorder=recorder)
    request = PullRequest(
        PodRef("default", "web-node-1", "uid-static", static=True),
        "app",
        PRIVATE,
        PullPolicy.ALWAYS,
        pull_secrets=("regcred",),
    )
    for _ in range(2):
        await resolver.pod_synced(PodSpec(request.pod, containers=(request,)))
        assert await resolver.lookup(request, parse_normalized(PRIVATE)) == []
    assert [(e.reason, e.count) for e in recorder.events()] == [
        ("FailedToRetrieveImagePullSecret", 2)
    ]
    api_pod = PullRequest(
        PodRef("default", "web", "uid-api"),
        "app",
        PRIVATE,
        PullPolicy.ALWAYS,
        pull_secrets=("regcred",),
    )
    assert [c.username for c in await resolver.lookup(api_pod, parse_normalized(PRIVATE))] == [
        "alice"
    ]


# -- the verifier's pure parts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "allowlist", "repository", "pulled_by_kubelet", "expected"),
    [
        (Policy.NEVER_VERIFY, (), "r.io/a", True, False),
        (Policy.NEVER_VERIFY_PRELOADED_IMAGES, (), "r.io/a", True, True),
        (Policy.NEVER_VERIFY_PRELOADED_IMAGES, (), "r.io/a", False, False),
        (Policy.ALWAYS_VERIFY, (), "r.io/a", False, True),
        (Policy.NEVER_VERIFY_ALLOWLISTED_IMAGES, ("r.io/a",), "r.io/a", True, False),
        (Policy.NEVER_VERIFY_ALLOWLISTED_IMAGES, ("r.io/*",), "r.io/team/a", True, False),
        (Policy.NEVER_VERIFY_ALLOWLISTED_IMAGES, ("r.io/a",), "r.io/ab", False, True),
        (Policy.NEVER_VERIFY_ALLOWLISTED_IMAGES, ("r.io/team/*",), "r.io/teamx/a", True, True),
    ],
)
def test_requires_verification(
    policy: Policy,
    allowlist: tuple[str, ...],
    repository: str,
    pulled_by_kubelet: bool,
    expected: bool,
) -> None:
    assert requires_verification(policy, allowlist, repository, pulled_by_kubelet) is expected


@pytest.mark.parametrize(
    ("patterns", "repository", "expected"),
    [
        (("docker.io/library/nginx",), "docker.io/library/nginx", True),
        (("docker.io/library/*",), "docker.io/library/nginx", True),
        (("docker.io/library/*",), "docker.io/libraryx/nginx", False),
        (("docker.io/library/nginx",), "docker.io/library/nginx-extra", False),
        ((), "docker.io/library/nginx", False),
    ],
)
def test_allowlisted(patterns: tuple[str, ...], repository: str, expected: bool) -> None:
    assert allowlisted(patterns, repository) is expected


# -- KEP-2535 through the image manager ------------------------------------------------------


@dataclass
class AuthRuntime(FakeRuntime):
    """A fake runtime whose ``required`` repositories accept only one credential."""

    required: dict[str, str] = field(default_factory=dict)
    tried: list[str] = field(default_factory=list)

    async def pull_image(
        self,
        ref: ImageReference,
        *,
        runtime_handler: str = "",
        credentials: Sequence[Credentials] = (),
        progress: ProgressFn | None = None,
        on_resolved: ResolvedHook | None = None,
    ) -> PulledImage:
        need = self.required.get(ref.name)
        self.tried.extend(c.username for c in credentials)
        if need is None:
            return await super().pull_image(
                ref, runtime_handler=runtime_handler, on_resolved=on_resolved
            )
        for creds in credentials:
            if creds.fingerprint() == need:
                pulled = await super().pull_image(ref, runtime_handler=runtime_handler)
                if on_resolved is not None:
                    await on_resolved(pulled.image_ref, need)
                return replace(pulled, credential_fingerprint=need)
        raise RegistryAuthError(
            "unauthorized: authentication required", code="UNAUTHORIZED", status=401
        )


@dataclass
class World:
    objects: ObjectStore
    runtime: AuthRuntime
    node: Node
    recorder: EventRecorder
    store: Store
    registry: CollectorRegistry

    async def ensure(self, name: str, namespace: str = "default") -> tuple[PullReason | None, str]:
        result = await self.node.manager.ensure_image(request_of(self.objects, name, namespace))
        return result.reason, result.message

    def messages(self, name: str) -> list[str]:
        return [f"{e.reason}: {e.message}" for e in self.recorder.events(name=name)]

    def checks(self, result: str) -> float:
        value = self.registry.get_sample_value(
            "kubelet_imagemanager_image_mustpull_checks_total", {"result": result}
        )
        return value or 0.0


@pytest.fixture
def policy() -> Policy:
    return Policy.NEVER_VERIFY_PRELOADED_IMAGES


@pytest.fixture
async def world(tmp_path: Path, policy: Policy) -> AsyncIterator[World]:
    objects = ObjectStore()
    runtime = AuthRuntime(
        pull_seconds=0.0, required={"private.example.com/team/app": fingerprint(ALICE)}
    )
    recorder = EventRecorder(spam_filter=False)
    registry = CollectorRegistry()
    async with await Store.open(tmp_path / "store") as store:
        resolver = CredentialResolver(secrets=objects, recorder=recorder)
        verifier = ImageAccessVerifier(store, policy, metrics=CredentialMetrics(registry))
        node = Node.build(
            KubeletConfiguration.default(),
            runtime,
            recorder,
            PullMetrics(CollectorRegistry()),
            credentials=resolver.lookup,
            verifier=verifier,
        )
        async with node.running():
            yield World(objects, runtime, node, recorder, store, registry)


ALREADY = 'Pulled: Container image "{}" already present on machine and can be accessed by the pod'


@pytest.mark.anyio
async def test_second_pod_without_credentials_is_refused_the_cached_private_image(
    world: World,
) -> None:
    world.objects.apply_text(secret_yaml("regcred", "private.example.com", ALICE))
    world.objects.apply_text(pod_yaml("owner", secrets=["regcred"]))
    assert await world.ensure("owner") == (None, "")
    image_id = world.runtime.images[(PRIVATE, "")].image_id
    (record,) = await world.store.pull_records(image_id)
    assert (record.kind, record.name) == (CredentialKind.SECRET, "regcred")
    assert "alice-pw" not in repr(record)

    world.objects.apply_text(pod_yaml("intruder"))
    reason, message = await world.ensure("intruder")
    assert reason is PullReason.ERR_IMAGE_PULL
    assert "unauthorized" in message
    assert not any("already present" in m for m in world.messages("intruder"))
    assert world.checks("mustAuthenticate") == 1

    world.objects.apply_text(pod_yaml("never", policy="Never"))
    assert (await world.ensure("never"))[0] is PullReason.ERR_IMAGE_NEVER_PULL


@pytest.mark.anyio
async def test_same_credentials_under_another_secret_are_recognised_and_recorded(
    world: World,
) -> None:
    world.objects.apply_text(secret_yaml("regcred", "private.example.com", ALICE))
    world.objects.apply_text(secret_yaml("copy", "*.example.com", ALICE))
    world.objects.apply_text(pod_yaml("owner", secrets=["regcred"]))
    world.objects.apply_text(pod_yaml("friend", secrets=["copy"]))
    await world.ensure("owner")
    pulls = len(world.runtime.calls)
    assert await world.ensure("friend") == (None, "")
    assert len(world.runtime.calls) == pulls  # no registry round-trip
    assert world.messages("friend") == [ALREADY.format(PRIVATE)]
    assert world.checks("credentialRecordFound") == 1
    image_id = world.runtime.images[(PRIVATE, "")].image_id
    names = sorted(r.name for r in await world.store.pull_records(image_id))
    assert names == ["copy", "regcred"]


@pytest.mark.anyio
async def test_rotated_secret_with_same_coordinates_is_recognised(world: World) -> None:
    world.objects.apply_text(secret_yaml("regcred", "private.example.com", ALICE))
    world.objects.apply_text(pod_yaml("owner", secrets=["regcred"]))
    await world.ensure("owner")
    world.objects.apply_text(secret_yaml("regcred", "private.example.com", ("alice", "rotated")))
    assert await world.ensure("owner") == (None, "")
    image_id = world.runtime.images[(PRIVATE, "")].image_id
    (record,) = await world.store.pull_records(image_id)
    expected = SourcedCredentials(username="alice", password="rotated").credential_hash
    assert record.credential_hash == expected


@pytest.mark.anyio
async def test_anonymous_pulls_are_accessible_to_every_pod(world: World) -> None:
    world.objects.apply_text(pod_yaml("first", PUBLIC))
    world.objects.apply_text(pod_yaml("second", PUBLIC, secrets=["whatever"]))
    await world.ensure("first")
    image_id = world.runtime.images[(PUBLIC, "")].image_id
    (record,) = await world.store.pull_records(image_id)
    assert record.kind is CredentialKind.ANONYMOUS
    assert await world.ensure("second") == (None, "")
    assert world.messages("second") == [ALREADY.format(PUBLIC)]


@pytest.mark.parametrize("policy", [Policy.NEVER_VERIFY])
@pytest.mark.anyio
async def test_never_verify_lets_any_pod_use_the_cached_image(world: World) -> None:
    world.objects.apply_text(secret_yaml("regcred", "private.example.com", ALICE))
    world.objects.apply_text(pod_yaml("owner", secrets=["regcred"]))
    world.objects.apply_text(pod_yaml("intruder"))
    await world.ensure("owner")
    assert await world.ensure("intruder") == (None, "")
    assert world.messages("intruder") == [ALREADY.format(PRIVATE)]
    assert world.checks("credentialPolicyAllowed") == 1


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        pytest.param(Policy.NEVER_VERIFY_PRELOADED_IMAGES, None, id="preloaded-exempt"),
        pytest.param(Policy.ALWAYS_VERIFY, PullReason.ERR_IMAGE_PULL, id="always-verify"),
    ],
)
@pytest.mark.anyio
async def test_preloaded_images(world: World, reason: PullReason | None) -> None:
    world.runtime.add(PRIVATE)  # present without any pull record: preloaded
    world.objects.apply_text(pod_yaml("pod"))
    assert (await world.ensure("pod"))[0] is reason


@pytest.mark.anyio
async def test_pull_secret_lookup_runs_once_per_ensure(world: World) -> None:
    world.objects.apply_text(secret_yaml("regcred", "private.example.com", ALICE))
    world.objects.apply_text(pod_yaml("owner", secrets=["regcred"]))
    await world.ensure("owner")
    lookups: list[str] = []
    inner = world.node.manager.credentials

    async def counting(request: PullRequest, ref: ImageReference) -> Sequence[Credentials]:
        lookups.append(request.pod.name)
        return await inner(request, ref)

    world.node.manager.credentials = counting
    world.objects.apply_text(pod_yaml("other", secrets=["gone"]))
    reason, _ = await world.ensure("other")  # verifier looks up, then the pull reuses it
    assert reason is PullReason.ERR_IMAGE_PULL
    assert lookups == ["other"]


@pytest.mark.anyio
async def test_verifier_is_only_built_with_the_gate_on(tmp_path: Path) -> None:
    async with await Store.open(tmp_path) as store:
        on = ImageAccessVerifier.from_config(KubeletConfiguration.default(), store)
        assert on is not None
        assert on.policy is Policy.NEVER_VERIFY_PRELOADED_IMAGES
        off = KubeletConfiguration.default().with_overrides(
            feature_gates={"KubeletEnsureSecretPulledImages": False}
        )
        assert ImageAccessVerifier.from_config(off, store) is None


def test_docker_config_entry_repr_hides_secrets() -> None:
    entry = DockerConfigEntry("u", "pw-SECRET", "e", "idt-SECRET", "rt-SECRET")
    assert "SECRET" not in repr(entry)


@pytest.mark.anyio
async def test_an_unreadable_pull_secret_warns_on_every_sync_even_when_the_image_is_present() -> (
    None
):
    # getPullSecretsForPod runs on every pod sync, before and whether or not anything is pulled.
    objects = ObjectStore()
    objects.apply_text(pod_yaml("p", PUBLIC, secrets=["gone"]))
    recorder = EventRecorder(spam_filter=False)
    resolver = CredentialResolver(secrets=objects, recorder=recorder)
    runtime = FakeRuntime(pull_seconds=0.0)
    runtime.add(PUBLIC)
    node = Node.build(
        KubeletConfiguration.default(),
        runtime,
        recorder,
        PullMetrics(CollectorRegistry()),
        credentials=resolver.lookup,
        on_sync=resolver.pod_synced,
    )
    pod = objects.get_pod("default", "p")
    assert pod is not None
    async with node.running():
        await node.engine.submit(pod_spec(pod))
        await node.engine.wait_ready(pod.uid)
    assert [(e.reason, e.count) for e in recorder.events()] == [
        ("FailedToRetrieveImagePullSecret", 1),
        ("Pulled", 1),
    ]
    assert runtime.calls == []
