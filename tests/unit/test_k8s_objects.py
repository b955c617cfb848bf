"""Pods, Secrets and ServiceAccounts as kubectl apply would send them; the object store; admission."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from kubelet_sim.core.pods import ContainerKind
from kubelet_sim.core.policy import PullPolicy
from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s import (
    Admission,
    ApplyAction,
    Kind,
    ObjectStore,
    Pod,
    Secret,
    ServiceAccount,
    parse_manifests,
    pod_spec,
    stable_uid,
)

DATA = Path(__file__).parent.parent / "data"
KUBECTL_SECRET = DATA / "kubectl-secret-myregistrykey.yaml"


def kubectl_secret_yaml(name: str, server: str, username: str, password: str, email: str) -> str:
    """What ``kubectl create secret docker-registry ... --dry-run=client -o yaml`` prints."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    entry = {"username": username, "password": password, "email": email, "auth": auth}
    config = json.dumps({"auths": {server: entry}}, separators=(",", ":"))
    encoded = base64.b64encode(config.encode()).decode()
    return (
        f"apiVersion: v1\ndata:\n  .dockerconfigjson: {encoded}\nkind: Secret\nmetadata:\n"
        f"  creationTimestamp: null\n  name: {name}\ntype: kubernetes.io/dockerconfigjson\n"
    )


def test_checked_in_kubectl_secret_matches_the_generator() -> None:
    generated = kubectl_secret_yaml(
        "myregistrykey", "myregistry.io", "alice", "alice-Secret-Pa55", "alice@example.com"
    )
    assert KUBECTL_SECRET.read_text() == generated
    (manifest,) = parse_manifests(generated, source="secret.yaml")
    secret = manifest.object
    assert isinstance(secret, Secret)
    assert (secret.namespace, secret.name, secret.type) == (
        "default",
        "myregistrykey",
        "kubernetes.io/dockerconfigjson",
    )
    assert secret.uid == stable_uid("Secret", "default", "myregistrykey")
    assert json.loads(secret.data[".dockerconfigjson"])["auths"]["myregistry.io"]["username"] == (
        "alice"
    )
    assert "Pa55" not in repr(secret) + str(secret) + repr(manifest)


SEED_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: foo
  namespace: awesomeapps
spec:
  containers:
    - name: foo
      image: janedoe/awesomeapp:v1
  imagePullSecrets:
    - name: myregistrykey
"""


def test_seed_pod_parses_with_defaults() -> None:
    (manifest,) = parse_manifests(SEED_POD)
    pod = manifest.object
    assert isinstance(pod, Pod)
    assert (pod.namespace, pod.name, pod.service_account_name) == ("awesomeapps", "foo", "default")
    assert pod.image_pull_secrets == ("myregistrykey",)
    assert pod.containers[0].image_pull_policy is PullPolicy.IF_NOT_PRESENT


def test_multi_document_yaml_json_and_lists() -> None:
    text = """
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: private-registry-sa}
imagePullSecrets: [{name: myregistrykey}]
---
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a, annotations: {team: x}}
  spec:
    serviceAccountName: private-registry-sa
    runtimeClassName: gvisor
    initContainers: [{name: init, image: busybox}]
    containers:
    - {name: app, image: "nginx@sha256:%s"}
    - {name: side, image: "nginx:latest", imagePullPolicy: Never}
""" % ("a" * 64)
    objects = [m.object for m in parse_manifests(text, namespace="team")]
    account, pod = objects
    assert account == ServiceAccount(
        "team",
        "private-registry-sa",
        stable_uid("ServiceAccount", "team", "private-registry-sa"),
        ("myregistrykey",),
    )
    assert isinstance(pod, Pod)
    assert pod.annotations == {"team": "x"}
    assert [(c.name, c.kind, c.image_pull_policy) for c in pod.all_containers()] == [
        ("init", ContainerKind.INIT, PullPolicy.ALWAYS),
        ("app", ContainerKind.APP, PullPolicy.IF_NOT_PRESENT),
        ("side", ContainerKind.APP, PullPolicy.NEVER),
    ]
    as_json = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s"},
            "stringData": {"token": "x"},
        }
    )
    (secret,) = [m.object for m in parse_manifests(as_json.encode())]
    assert isinstance(secret, Secret)
    assert secret.data == {"token": b"x"}
    assert secret.type == "Opaque"


def pod_doc(**spec: object) -> str:
    base: dict[str, object] = {"containers": [{"name": "app", "image": "nginx:1"}]}
    base.update(spec)
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": base})


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        pytest.param(
            pod_doc(containers=[]), "spec.containers", "Required value", id="no-containers"
        ),
        pytest.param(
            pod_doc(containers=[{"name": "a", "image": "x"}, {"name": "b"}]),
            "spec.containers[1].image",
            "Required value",
            id="missing-image",
        ),
        pytest.param(
            pod_doc(containers=[{"name": "a", "image": "x", "imagePullPolicy": "Sometimes"}]),
            "spec.containers[0].imagePullPolicy",
            'Unsupported value: "Sometimes"',
            id="bad-policy",
        ),
        pytest.param(
            pod_doc(initContainers=[{"name": "app", "image": "x"}]),
            "spec.containers[0].name",
            "Duplicate value",
            id="duplicate-name",
        ),
        pytest.param(
            pod_doc(containers=[{"name": "Bad_Name", "image": "x"}]),
            "spec.containers[0].name",
            "RFC 1123 label",
            id="bad-container-name",
        ),
        pytest.param(
            pod_doc(imagePullSecrets="myregistrykey"),
            "spec.imagePullSecrets",
            "expected a list",
            id="secrets-not-list",
        ),
        pytest.param(
            '{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}',
            "kind",
            'no matches for kind "Deployment" in version "apps/v1"',
            id="unknown-kind",
        ),
        pytest.param(
            '{"apiVersion": "v1", "kind": "Pod", "metadata": {}}',
            "metadata.name",
            "Required value",
            id="no-name",
        ),
        pytest.param(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n"
            "  metadata: {name: p}\n  spec: {containers: [{name: a, image: ' x'}]}\n",
            "items[0].spec.containers[0].image",
            "leading or trailing whitespace",
            id="list-item-field-path",
        ),
    ],
)
def test_invalid_pods_name_the_field(text: str, field: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_manifests(text, source="pods.yaml")
    assert info.value.field == field
    assert str(info.value.file).startswith("pods.yaml (document 1)")


SECRET_VALUE = "c2VjcmV0LVNFTlNJVElWRQ=="  # base64 of "secret-SENSITIVE"


@pytest.mark.parametrize(
    ("type_", "data", "field", "message"),
    [
        pytest.param(
            "kubernetes.io/dockerconfigjson",
            {"other": SECRET_VALUE},
            "data[.dockerconfigjson]",
            "Required value",
            id="missing-key",
        ),
        pytest.param(
            "kubernetes.io/dockerconfigjson",
            {".dockerconfigjson": SECRET_VALUE},
            "data[.dockerconfigjson]",
            "secret contents redacted",
            id="not-json",
        ),
        pytest.param(
            "kubernetes.io/dockercfg",
            {".dockercfg": SECRET_VALUE},
            "data[.dockercfg]",
            "secret contents redacted",
            id="dockercfg-not-json",
        ),
        pytest.param(
            "Opaque", {"key": "not base64!"}, "data[key]", "illegal base64", id="bad-base64"
        ),
        pytest.param(
            "Opaque", {"bad/key": SECRET_VALUE}, "data[bad/key]", "valid config key", id="bad-key"
        ),
    ],
)
def test_invalid_secrets_never_quote_their_data(
    type_: str, data: dict[str, str], field: str, message: str
) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "type": type_,
        "data": data,
    }
    with pytest.raises(ConfigError, match=message) as info:
        parse_manifests(json.dumps(doc))
    assert info.value.field == field
    assert "SENSITIVE" not in str(info.value)
    assert SECRET_VALUE not in str(info.value)


def test_unparsable_yaml_names_the_line() -> None:
    with pytest.raises(ConfigError, match="line 2"):
        parse_manifests("a: b\n  - c: [\n", source="x.yaml")


def test_apply_created_configured_unchanged_and_delete() -> None:
    store = ObjectStore()
    secret = KUBECTL_SECRET.read_text()
    assert [str(r) for r in store.apply_text(secret)] == ["secret/myregistrykey created"]
    assert store.apply_text(secret)[0].action is ApplyAction.UNCHANGED
    changed = secret.replace("creationTimestamp: null\n", "annotations: {rotated: 'yes'}\n")
    assert store.apply_text(changed)[0].action is ApplyAction.CONFIGURED
    assert store.get_secret("default", "myregistrykey") is not None
    assert store.get_secret("other", "myregistrykey") is None
    assert store.delete(Kind.SECRET, "default", "myregistrykey")
    assert not store.delete(Kind.SECRET, "default", "myregistrykey")
    assert store.get_secret("default", "myregistrykey") is None


def test_service_account_admission_and_the_kubectl_patch() -> None:
    store = ObjectStore()
    before = store.apply_text(pod_doc())[0]
    assert before.action is ApplyAction.CREATED
    assert store.pods()[0].image_pull_secrets == ()
    patched = store.patch(
        Kind.SERVICE_ACCOUNT,
        "default",
        "default",
        {"imagePullSecrets": [{"name": "myregistrykey"}]},
    )
    assert patched.action is ApplyAction.PATCHED
    account = store.get_service_account("default", "default")
    assert account is not None
    assert account.image_pull_secrets == ("myregistrykey",)
    store.apply_text(pod_doc().replace('"p"', '"q"'))
    pod_p, pod_q = store.get_pod("default", "p"), store.get_pod("default", "q")
    assert pod_p is not None
    assert pod_q is not None
    assert pod_p.image_pull_secrets == ()  # created before the patch: unchanged
    assert pod_q.image_pull_secrets == ("myregistrykey",)
    # a pod with its own secrets keeps them
    store.apply_text(pod_doc(imagePullSecrets=[{"name": "own"}]).replace('"p"', '"r"'))
    pod_r = store.get_pod("default", "r")
    assert pod_r is not None
    assert pod_r.image_pull_secrets == ("own",)
    # re-applying a pod (new image) keeps the secrets admission gave it
    store.apply_text(
        pod_doc(containers=[{"name": "app", "image": "nginx:2"}]).replace('"p"', '"q"')
    )
    pod_q = store.get_pod("default", "q")
    assert pod_q is not None
    assert pod_q.image_pull_secrets == ("myregistrykey",)
    assert pod_q.containers[0].image == "nginx:2"


def test_named_service_account_must_exist() -> None:
    store = ObjectStore()
    with pytest.raises(ConfigError, match="service account default/private-registry-sa was not"):
        store.apply_text(pod_doc(serviceAccountName="private-registry-sa"))
    store.apply_text(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: private-registry-sa}\n"
        "imagePullSecrets: [{name: myregistrykey}]\n"
    )
    store.apply_text(pod_doc(serviceAccountName="private-registry-sa"))
    pod = store.get_pod("default", "p")
    assert pod is not None
    assert pod.image_pull_secrets == ("myregistrykey",)


def test_patch_of_a_missing_object_fails() -> None:
    with pytest.raises(ConfigError, match="not found"):
        ObjectStore().patch(Kind.SERVICE_ACCOUNT, "default", "builder", {"imagePullSecrets": []})


def test_always_pull_images_admission_and_pod_spec() -> None:
    store = ObjectStore(admission=Admission(always_pull_images=True))
    store.apply_text(
        "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: kata}\nhandler: kata\n"
    )
    store.apply_text(
        pod_doc(
            initContainers=[{"name": "init", "image": "busybox:1", "imagePullPolicy": "Never"}],
            imagePullSecrets=[{"name": ""}, {"name": "regcred"}],
            runtimeClassName="kata",
            serviceAccountName="default",
        ),
        new_uid=stable_uid,
    )
    (pod,) = store.pods()
    spec = pod_spec(pod)
    assert spec.ref.uid == pod.uid == stable_uid("Pod", "default", "p")
    assert [(r.container, r.kind, r.policy) for r in spec.requests()] == [
        ("init", ContainerKind.INIT, PullPolicy.ALWAYS),
        ("app", ContainerKind.APP, PullPolicy.ALWAYS),
    ]
    assert {r.pull_secrets for r in spec.requests()} == {("regcred",)}
    assert {r.runtime_handler for r in spec.requests()} == {"kata"}
