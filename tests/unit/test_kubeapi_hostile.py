"""Hostile input against the Kubernetes REST paths: odd bodies, patches, paths, query parameters,
secrets in errors, watches that misbehave, and concurrent writes.

Twelve bugs were found here and fixed (a non-ASCII field name or a failing watch ending the
server, deep or non-finite bodies stored unreadable, a remote patch reading a Secret, patches
conflicting with status writes, Secret values in errors, ...); their tests stay as guards with the
attacks that held from the start. Most drive :class:`KubeAPI` in process
over a real :class:`ObjectStore` (the daemon faked, as in ``test_kubeapi.py``); the few that need
the HTTP server or the daemon run them on a free loopback port.
"""

from __future__ import annotations

import base64
import json
import random
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
import anyio.abc
import h11
import httpx
import pytest

from kubelet_sim.config.kubelet import parse_kubelet_config
from kubelet_sim.k8s.store import ObjectStore
from kubelet_sim.node.daemon import Daemon, DaemonOptions
from kubelet_sim.node.httpserver import ChunkSender, HTTPServer, Request, Response
from kubelet_sim.node.kubeapi import KubeAPI
from kubelet_sim.node.kubeapi.watch import BUFFER
from kubelet_sim.testing.kubeapi import NOW, FakeKubeNode, body_of, call, drain

pytestmark = pytest.mark.anyio

T = TypeVar("T")
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
PODS = "/api/v1/namespaces/default/pods"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
SECRETS = "/api/v1/namespaces/default/secrets"
SERVICES = "/api/v1/namespaces/default/services"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PASSWORD = "s3cret-Pa55"  # a test value that must never show in an error
ENCODED = base64.b64encode(PASSWORD.encode()).decode()
REMOTE = "10.0.0.5"


FakeNode = FakeKubeNode


class RacyNode(FakeNode):
    """The status manager writes every pod's status while a write waits for the node's lock (the
    daemon's ``sync_statuses`` runs every 0.5 s and after every other write)."""

    async def write(self, change: Callable[[ObjectStore], T]) -> T:
        for p in self.objects.pods():
            status = {"phase": "Running", "observed": self.objects.revision}
            self.objects.set_pod_status(p.namespace, p.name, status)
        return change(self.objects)


@pytest.fixture
def node() -> FakeNode:
    return FakeNode()


@pytest.fixture
def api(node: FakeNode) -> KubeAPI:
    return KubeAPI(node, clock=lambda: NOW)


doc = body_of


def strict_json(data: bytes) -> Any:
    """JSON as Go's decoder (kubectl's) reads it: no NaN or Infinity."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(data, parse_constant=refuse)


def status_of(response: Response) -> dict[str, Any]:
    """The ``metav1.Status`` of an error answer."""
    assert 400 <= response.status < 500, (response.status, response.body[:300])
    body: dict[str, Any] = doc(response)
    assert (body["kind"], body["status"], body["code"]) == ("Status", "Failure", response.status)
    return body


def pod(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}], **spec},
    }


def config_map(name: str = "cfg", **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **fields}


def secret(name: str = "reg") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"password": PASSWORD},
    }


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def no_secret(response: Response) -> None:
    text = response.body.decode(errors="replace") + repr(response.headers)
    assert PASSWORD not in text
    assert ENCODED[:12] not in text


# -- bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b"[]", b'"x"', b"null", b"1", b"true", b"[1,2]", b"NaN", b"---\n"]
)
async def test_a_body_that_is_no_object_is_a_400_for_create_and_update(
    api: KubeAPI, body: bytes
) -> None:
    await call(api, "POST", PODS, pod())
    for method, target in (("POST", PODS), ("PUT", f"{PODS}/web")):
        answer = status_of(await call(api, method, target, body))
        assert (answer["reason"], answer["message"]) == (
            "BadRequest",
            "the object must be a JSON object",
        )


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        (STRATEGIC, b"[]", "a strategic merge patch must be a JSON object"),
        (MERGE, b"null", "a merge patch must be a JSON object"),
        (JSON_PATCH, b"{}", "a JSON patch must be a list of operations"),
        (JSON_PATCH, b"[1]", "operation 0: not an object with a known op"),
        (JSON_PATCH, b'[{"op": "frobnicate", "path": "/a"}]', 'known op "frobnicate"'),
        (JSON_PATCH, b'[{"op": "add", "path": "spec"}]', "path must be empty or start with /"),
        (JSON_PATCH, b'[{"op": "add", "path": "/a~2", "value": 1}]', "not ~0 or ~1"),
        (STRATEGIC, b'{"spec": {"$patch": "explode"}}', 'unknown $patch directive "explode"'),
        (STRATEGIC, b'{"spec": {"containers": [{"image": "x"}]}}', "merge key name"),
        (STRATEGIC, b'{"$retainKeys": "spec"}', "$retainKeys must be a list"),
        (MERGE, b'{"kind": ', "not valid JSON at line 1 column 10"),
        (JSON_PATCH, b'[{"op": "move", "from": "/spec", "path": "/spec/x"}]', "its own child"),
    ],
)
async def test_malformed_patches_are_a_400_naming_the_problem(
    api: KubeAPI, content_type: str, body: bytes, message: str
) -> None:
    await call(api, "POST", PODS, pod())
    before = doc(await call(api, "GET", f"{PODS}/web"))
    answer = status_of(await call(api, "PATCH", f"{PODS}/web", body, content_type=content_type))
    assert answer["reason"] == "BadRequest"
    assert message in answer["message"]
    assert doc(await call(api, "GET", f"{PODS}/web")) == before  # nothing written


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "remove", "path": "/spec/containers/5"}],
        [{"op": "add", "path": "/spec/containers/01", "value": {}}],
        [{"op": "replace", "path": "/spec/nope/deeper", "value": 1}],
        [{"op": "add", "path": "/metadata/name/x", "value": 1}],
        [{"op": "remove", "path": ""}],
        [{"op": "test", "path": "/metadata/labels/app", "value": "db"}],
    ],
)
async def test_json_patches_that_cannot_apply_are_422_and_write_nothing(
    api: KubeAPI, ops: list[dict[str, Any]]
) -> None:
    await call(api, "POST", PODS, pod())
    before = doc(await call(api, "GET", f"{PODS}/web"))
    answer = status_of(await call(api, "PATCH", f"{PODS}/web", ops, content_type=JSON_PATCH))
    assert answer["reason"] == "Invalid"
    assert answer["details"]["causes"]
    assert doc(await call(api, "GET", f"{PODS}/web")) == before


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"kind": "Secret"}, 'the kind in the body ("Secret") is not Pod'),
        ({"apiVersion": "v2"}, "the API version in the data (v2)"),
        ({"metadata": {"name": "db"}}, "the name of the object does not match"),
        ({"metadata": {"namespace": "other"}}, "the namespace of the provided object"),
    ],
)
async def test_a_patch_may_not_change_what_the_object_is(
    api: KubeAPI, patch: dict[str, Any], message: str
) -> None:
    await call(api, "POST", PODS, pod())
    answer = status_of(await call(api, "PATCH", f"{PODS}/web", patch, content_type=MERGE))
    assert message in answer["message"]


async def test_server_owned_metadata_in_a_patch_is_ignored_or_a_conflict(api: KubeAPI) -> None:
    created = doc(await call(api, "POST", PODS, pod()))
    uid = created["metadata"]["uid"]
    moved = {"metadata": {"uid": "00000000-0000-0000-0000-000000000000"}}
    refused = status_of(await call(api, "PATCH", f"{PODS}/web", moved, content_type=MERGE))
    assert (refused["reason"], refused["code"]) == ("Conflict", 409)  # upstream's precondition
    assert refused["message"].startswith("Precondition failed: UID in precondition: 0000")
    generation = {"metadata": {"generation": 9}}
    patched = doc(await call(api, "PATCH", f"{PODS}/web", generation, content_type=MERGE))
    assert patched["metadata"]["uid"] == uid
    assert "generation" not in patched["metadata"]
    stale = {"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}}
    conflict = status_of(await call(api, "PATCH", f"{PODS}/web", stale, content_type=MERGE))
    assert (conflict["reason"], conflict["code"]) == ("Conflict", 409)


async def test_put_without_metadata_or_kind_is_refused(api: KubeAPI) -> None:
    await call(api, "POST", PODS, pod())
    bare = {"apiVersion": "v1", "kind": "Pod", "spec": pod()["spec"]}
    assert (
        "does not match the name"
        in status_of(await call(api, "PUT", f"{PODS}/web", bare))["message"]
    )
    kindless = {"metadata": {"name": "web"}, "spec": pod()["spec"]}
    assert status_of(await call(api, "PUT", f"{PODS}/web", kindless))["reason"] == "Invalid"
    odd_metadata = {**pod(), "metadata": "web"}
    assert status_of(await call(api, "PUT", f"{PODS}/web", odd_metadata))["message"] == (
        "metadata must be a JSON object"
    )


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"a: 1\n---\nb: 2\n", "application/yaml", "holds 2 documents, not one"),
        (b'{"kind": "\xe9"}', "application/json", "not valid UTF-8"),
        (b"   ", "application/json", "the request body is empty"),
        (b"k: 2001-13-01\n", "application/yaml", "invalid !!timestamp value"),
        (b"k: 99999999999999999999999\n", "application/yaml", "wider than 64 bits"),
        (
            b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
            b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
            b"e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
            "application/yaml",
            "excessive aliasing",
        ),
    ],
)
async def test_bodies_that_do_not_decode_are_a_400(
    api: KubeAPI, body: bytes, content_type: str, message: str
) -> None:
    answer = status_of(await call(api, "POST", CONFIGMAPS, body, content_type=content_type))
    assert answer["reason"] == "BadRequest"
    assert message in answer["message"]
    assert doc(await call(api, "GET", CONFIGMAPS))["items"] == []


@pytest.mark.parametrize(
    "content_type",
    ["text/csv", "application/x-www-form-urlencoded", "application/json-patch+json"],
)
async def test_a_create_in_a_media_type_not_served_is_415(api: KubeAPI, content_type: str) -> None:
    answer = status_of(await call(api, "POST", CONFIGMAPS, config_map(), content_type=content_type))
    assert (answer["reason"], answer["code"]) == ("UnsupportedMediaType", 415)


async def test_mutated_protobuf_bodies_never_raise(api: KubeAPI) -> None:
    # kubectl's ``create configmap x --from-literal=a=b``, mutated byte by byte.
    seed = (
        b'k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\x12\x1b\n\x11\n\x01x\x12\x00\x1a\x00"\x00*\x002'
        b'\x008\x00B\x00\x12\x06\n\x01a\x12\x01b\x1a\x00"\x00'
    )
    rng = random.Random(7)
    for _ in range(300):
        body = bytearray(seed)
        for _ in range(rng.randint(1, 3)):
            body[rng.randrange(4, len(body))] = rng.randrange(256)
        answer = await call(
            api, "POST", CONFIGMAPS, bytes(body), content_type="application/vnd.kubernetes.protobuf"
        )
        assert answer.status in (201, 400, 409, 422), answer.body[:200]


async def test_a_deeply_nested_body_is_refused_or_stays_readable(api: KubeAPI) -> None:
    answer = await call(api, "POST", CONFIGMAPS, config_map("deep", foo=nested(600)))
    assert answer.status in (201, 400, 422)
    assert (await call(api, "GET", CONFIGMAPS)).status == 200
    assert (await call(api, "GET", CONFIGMAPS, accept=TABLE)).status == 200


@pytest.mark.parametrize("content_type", [STRATEGIC, JSON_PATCH])
async def test_a_deeply_nested_patch_is_a_400(api: KubeAPI, content_type: str) -> None:
    await call(api, "POST", CONFIGMAPS, config_map())
    value = nested(600)
    patch: object = (
        [{"op": "add", "path": "/foo", "value": value}]
        if content_type == JSON_PATCH
        else {"foo": value}
    )
    answer = await call(api, "PATCH", f"{CONFIGMAPS}/cfg", patch, content_type=content_type)
    assert answer.status in (200, 400, 422)
    assert (await call(api, "GET", CONFIGMAPS)).status == 200


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"n"},"foo":NaN}', "json"),
        (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"n"},"foo":1e400}', "json"),
        (b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: n}\nfoo: .inf\n", "yaml"),
    ],
)
async def test_non_finite_numbers_never_reach_the_wire(
    api: KubeAPI, body: bytes, content_type: str
) -> None:
    answer = await call(api, "POST", CONFIGMAPS, body, content_type=f"application/{content_type}")
    strict_json(answer.body)
    strict_json((await call(api, "GET", CONFIGMAPS)).body)
    await call(api, "POST", CONFIGMAPS, config_map("p"))
    patched = await call(api, "PATCH", f"{CONFIGMAPS}/p", b'{"foo": -Infinity}', content_type=MERGE)
    strict_json(patched.body)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            CONFIGMAPS,
            b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"u"},'
            b'"data":{"k":"\\ud800"}}',
        ),
        (
            SECRETS,
            b'{"apiVersion":"v1","kind":"Secret","metadata":{"name":"u"},'
            b'"stringData":{"k":"\\ud800"}}',
        ),
    ],
)
async def test_a_lone_surrogate_is_a_400(api: KubeAPI, path: str, body: bytes) -> None:
    answer = await call(api, "POST", path, body)
    assert answer.status == 400


# -- names, namespaces, paths ------------------------------------------------------------------


async def test_an_invalid_namespace_in_the_url_names_it(api: KubeAPI) -> None:
    answer = status_of(await call(api, "POST", "/api/v1/namespaces/UPPER/pods", pod()))
    assert answer["reason"] == "Invalid"
    assert 'metadata.namespace: Invalid value: "UPPER"' in answer["message"]
    assert doc(await call(api, "GET", "/api/v1/namespaces/UPPER/pods"))["items"] == []


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"name": "Web_1"}, "metadata.name"),
        ({"name": ".."}, "metadata.name"),
        ({"name": "a" * 254}, "metadata.name"),
        ({"generateName": "UP-"}, "metadata.name"),
        ({"generateName": "a" * 300}, "metadata.name"),
        ({"generateName": "a/"}, "metadata.name"),
        ({"generateName": 5}, "metadata.name"),
        ({}, "metadata.name"),
    ],
)
async def test_names_that_are_no_dns_names_are_422(
    api: KubeAPI, metadata: dict[str, Any], field: str
) -> None:
    answer = status_of(await call(api, "POST", CONFIGMAPS, {**config_map(), "metadata": metadata}))
    assert answer["reason"] == "Invalid"
    assert answer["details"]["causes"][0]["field"] == field
    assert doc(await call(api, "GET", CONFIGMAPS))["items"] == []


@pytest.mark.parametrize(
    ("method", "target", "body", "code"),
    [
        ("POST", CONFIGMAPS, pod(), 400),  # a Pod at the configmaps path
        ("POST", "/api/v1/pods", pod(), 404),  # a namespaced kind at the cluster path
        ("POST", "/apis/node.k8s.io/v1/namespaces/default/runtimeclasses", None, 404),
        ("POST", "/api/v1/runtimeclasses", None, 404),  # the wrong group
        (
            "GET",
            "/api/v1/namespaces/default/pods/web/status",
            None,
            405,
        ),  # a subresource: "not served"
        ("GET", "/api/v1/namespaces/default/pods/a/b/c", None, 405),
        ("GET", "/apis/node.k8s.io/v2/runtimeclasses", None, 404),
        ("GET", "/apis/example.com/v1/widgets", None, 404),
        ("POST", f"{PODS}/web", pod(), 405),
        ("DELETE", "/api/v1/namespaces/default", None, 405),
        ("PUT", "/api", None, 405),
        ("PATCH", "/api/v1/namespaces/default/events/x", {}, 405),
    ],
)
async def test_objects_at_the_wrong_path_are_refused(
    api: KubeAPI, method: str, target: str, body: object, code: int
) -> None:
    runtime_class = {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": "gvisor"},
        "handler": "runsc",
    }
    answer = status_of(await call(api, method, target, runtime_class if body is None else body))
    assert answer["code"] == code


async def test_a_runtime_class_is_cluster_scoped_whatever_its_body_says(api: KubeAPI) -> None:
    body = {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": "gvisor", "namespace": "kube-system"},
        "handler": "runsc",
    }
    made = doc(await call(api, "POST", "/apis/node.k8s.io/v1/runtimeclasses", body))
    assert "namespace" not in made["metadata"]
    again = status_of(await call(api, "POST", "/apis/node.k8s.io/v1/runtimeclasses", body))
    assert again["reason"] == "AlreadyExists"


async def test_creating_an_event_is_method_not_allowed(api: KubeAPI) -> None:
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}}
    answer = await call(api, "POST", "/api/v1/namespaces/default/events", event)
    assert answer.status == 405


async def test_deleting_implicit_objects_leaves_them_listed(api: KubeAPI) -> None:
    gone = await call(api, "DELETE", "/api/v1/namespaces/default/serviceaccounts/default")
    assert doc(gone)["status"] == "Success"
    accounts = doc(await call(api, "GET", "/api/v1/namespaces/default/serviceaccounts"))
    assert [a["metadata"]["name"] for a in accounts["items"]] == ["default"]
    await call(api, "DELETE", f"{SERVICES}/kubernetes")
    services = doc(await call(api, "GET", SERVICES, accept=TABLE))
    assert [r["cells"][0] for r in services["rows"]] == ["kubernetes"]
    # an applied default ServiceAccount, deleted, gives the implicit one back
    patch = {"imagePullSecrets": [{"name": "reg"}]}
    target = "/api/v1/namespaces/default/serviceaccounts/default"
    await call(api, "PATCH", target, patch, content_type=STRATEGIC)
    await call(api, "DELETE", target)
    assert "imagePullSecrets" not in doc(await call(api, "GET", target))


# -- query parameters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("labelSelector=(((", "found '('"),
        ("labelSelector=a b", "unable to parse requirement: found 'b'"),
        ("labelSelector=a in (x", "unable to parse requirement"),
        ("labelSelector=" + "K" * 64 + "=v", "invalid label key"),
        ("fieldSelector=metadata.name=a=b", "invalid field selector: unescaped '='"),
        ("fieldSelector=metadata.name=a\\", "invalid escape sequence"),
        ("fieldSelector=spec.containers=x", "field label not supported: spec.containers"),
        ("fieldSelector=" + "x" * 5000 + "=1", "field label not supported: " + "x" * 100),
        ("watch=true&resourceVersion=abc", "resourceVersion must be a number"),
        ("watch=true&resourceVersion=-1", "resourceVersion must be a number"),
        ("watch=true&timeoutSeconds=1.5", "timeoutSeconds must be a number"),
        ("watch=true&timeoutSeconds=-3", "timeoutSeconds must be a number"),
    ],
)
async def test_bad_list_parameters_are_a_400_naming_them(
    api: KubeAPI, query: str, message: str
) -> None:
    answer = status_of(await call(api, "GET", f"{PODS}?{quote(query, safe='=&')}"))
    assert answer["reason"] == "BadRequest"
    assert message in answer["message"]
    assert len(answer["message"]) < 400  # a hostile query stays one short answer


async def test_limit_and_continue_are_ignored_and_everything_is_listed(api: KubeAPI) -> None:
    for name in ("a", "b", "c"):
        await call(api, "POST", PODS, pod(name))
    listed = doc(await call(api, "GET", f"{PODS}?limit=1&continue=garbage"))
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a", "b", "c"]
    assert "continue" not in listed["metadata"]


@pytest.mark.parametrize("param", ["resourceVersion", "timeoutSeconds"])
async def test_a_superscript_digit_in_a_watch_parameter_is_a_400(api: KubeAPI, param: str) -> None:
    answer = await call(api, "GET", f"{PODS}?watch=true&{param}=%C2%B2")
    assert answer.status == 400
    assert answer.stream is None


# -- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "patch"),
    [
        (JSON_PATCH, [{"op": "test", "path": "/data/password", "value": "bm9wZQ=="}]),
        (JSON_PATCH, [{"op": "test", "path": "/data", "value": {"password": "x"}}]),
        (JSON_PATCH, [{"op": "test", "path": "", "value": {}}]),
        (JSON_PATCH, [{"op": "replace", "path": "/data/password/0", "value": 1}]),
        (
            JSON_PATCH,
            [{"op": "test", "path": "/metadata/annotations", "value": {"a": "b"}}],
        ),
        (MERGE, {"data": {"password": 5}}),
        (MERGE, {"data": [ENCODED]}),
        (MERGE, {"data": {"password": ENCODED + "!"}}),
        (MERGE, {"type": "kubernetes.io/dockerconfigjson"}),
        (STRATEGIC, {"data": {"password": ["x"]}}),
        (STRATEGIC, {"$setElementOrder/data": [{"password": ENCODED}]}),
    ],
)
async def test_failed_secret_patches_never_quote_its_data(
    api: KubeAPI, content_type: str, patch: object
) -> None:
    annotations = {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(secret())}
    body = {**secret(), "metadata": {"name": "reg", "annotations": annotations}}
    assert (await call(api, "POST", SECRETS, body)).status == 201
    answer = await call(api, "PATCH", f"{SECRETS}/reg", patch, content_type=content_type)
    status_of(answer)
    no_secret(answer)


@pytest.mark.parametrize(
    "data",
    [
        {".dockerconfigjson": base64.b64encode(PASSWORD.encode()).decode()},
        {".dockerconfigjson": base64.b64encode(f'["{PASSWORD}"]'.encode()).decode()},
        {".dockerconfigjson": base64.b64encode(b"[" * 5000 + PASSWORD.encode()).decode()},
        {".dockerconfigjson": base64.b64encode(b"\xff" + PASSWORD.encode()).decode()},
    ],
)
async def test_invalid_docker_secrets_are_redacted(api: KubeAPI, data: dict[str, str]) -> None:
    body = {**secret(), "type": "kubernetes.io/dockerconfigjson", "data": data}
    del body["stringData"]
    answer = await call(api, "POST", f"{SECRETS}?fieldValidation=Strict", body)
    assert status_of(answer)["reason"] == "Invalid"
    no_secret(answer)


async def test_remote_clients_cannot_read_or_watch_secrets(api: KubeAPI) -> None:
    await call(api, "POST", SECRETS, secret())
    for target in (f"{SECRETS}/reg", SECRETS, f"{SECRETS}?watch=true", "/api/v1/secrets"):
        answer = await call(api, "GET", target, peer=REMOTE)
        assert status_of(answer)["reason"] == "Forbidden"
        assert answer.stream is None
    assert (await call(api, "GET", f"{SECRETS}/reg", peer="::ffff:127.0.0.1")).status == 200


async def test_a_remote_client_cannot_read_a_secret_through_a_patch(api: KubeAPI) -> None:
    await call(api, "POST", SECRETS, secret())
    empty = await call(api, "PATCH", f"{SECRETS}/reg", {}, content_type=MERGE, peer=REMOTE)
    no_secret(empty)
    guess = [{"op": "test", "path": "/data/password", "value": ENCODED}]
    probe = await call(api, "PATCH", f"{SECRETS}/reg", guess, content_type=JSON_PATCH, peer=REMOTE)
    assert probe.status == 403


@pytest.mark.parametrize("path", ["/kind", "/apiVersion", "/metadata/labels"])
async def test_secret_data_moved_elsewhere_is_not_quoted_in_the_error(
    api: KubeAPI, path: str
) -> None:
    await call(api, "POST", SECRETS, secret())
    source = "/data" if path == "/metadata/labels" else "/data/password"
    ops = [{"op": "copy", "from": source, "path": path}]
    answer = await call(api, "PATCH", f"{SECRETS}/reg", ops, content_type=JSON_PATCH)
    status_of(answer)
    no_secret(answer)


# -- tables ------------------------------------------------------------------------------------


async def test_a_service_with_odd_external_ips_does_not_break_the_table(api: KubeAPI) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "odd"},
        "spec": {"ports": [{"port": 80}], "externalIPs": [1, {"ip": "x"}]},
    }
    created = await call(api, "POST", SERVICES, body)
    assert created.status in (201, 422)
    assert (await call(api, "GET", SERVICES, accept=TABLE)).status == 200


# -- watches -----------------------------------------------------------------------------------


async def test_a_watcher_that_stops_reading_is_ended_and_unsubscribed(
    node: FakeNode, api: KubeAPI
) -> None:
    await call(api, "POST", PODS, pod())
    watch = await call(api, "GET", f"{PODS}?watch=true")
    assert watch.stream is not None
    stream = watch.stream
    release = anyio.Event()
    lines: list[dict[str, Any]] = []

    async def stuck(chunk: bytes) -> None:
        lines.extend(json.loads(line) for line in chunk.splitlines())
        if len(lines) == 1:
            await release.wait()  # the client stops reading after the first event

    async def run() -> None:
        await stream(stuck)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await anyio.sleep(0.01)
            subscribers = node.objects.watchers
            assert subscribers == 1
            for i in range(BUFFER + 50):  # more changes than one watcher may queue
                await call(api, "POST", CONFIGMAPS, config_map(f"c{i}"))
            # the writes were not held up by the stuck watcher
            assert len(doc(await call(api, "GET", CONFIGMAPS))["items"]) == BUFFER + 50
            release.set()
    assert lines[0]["type"] == "ADDED"
    assert lines[-1]["type"] == "ERROR"
    assert lines[-1]["object"]["reason"] == "Expired"
    assert node.objects.watchers == 0


async def test_a_watch_from_the_future_waits_and_a_table_watch_has_rows(api: KubeAPI) -> None:
    watch = await call(api, "GET", f"{PODS}?watch=true&resourceVersion=999&timeoutSeconds=0")
    with anyio.fail_after(5):
        assert await drain(watch) == []
    await call(api, "POST", PODS, pod())
    tables = await call(api, "GET", f"{PODS}?watch=1&timeoutSeconds=0", accept=TABLE)
    assert tables.stream is not None


@pytest.mark.parametrize(
    ("content_type", "patch"),
    [
        (MERGE, {"metadata": {"labels": {"tier": "a"}}}),
        (STRATEGIC, {"metadata": {"labels": {"tier": "a"}}}),
        (JSON_PATCH, [{"op": "add", "path": "/metadata/labels/tier", "value": "a"}]),
    ],
)
async def test_a_patch_racing_a_status_update_is_not_a_conflict(
    content_type: str, patch: object
) -> None:
    racy = KubeAPI(RacyNode(), clock=lambda: NOW)
    await call(racy, "POST", PODS, pod())
    answer = await call(racy, "PATCH", f"{PODS}/web", patch, content_type=content_type)
    assert answer.status == 200, answer.body
    assert doc(answer)["metadata"]["labels"]["tier"] == "a"


# -- the HTTP server and the daemon ------------------------------------------------------------


@pytest.mark.parametrize("key", ["föö", "a\r\nX-Injected: 1"])
async def test_warning_headers_are_valid_http_whatever_the_field_name(
    api: KubeAPI, key: str
) -> None:
    answer = await call(api, "POST", CONFIGMAPS, {**config_map(), key: 1})
    assert answer.status == 201
    assert answer.headers
    h11.Response(status_code=answer.status, headers=list(answer.headers))  # as _send builds it


async def _serve(
    handler: Callable[[Request], Awaitable[Response]],
    client: Callable[[httpx.AsyncClient], Awaitable[None]],
) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(HTTPServer(handler).serve, listener)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
                await client(http)
            tg.cancel_scope.cancel()


async def test_a_failing_watch_stream_does_not_take_the_server_down() -> None:
    async def handler(request: Request) -> Response:
        if request.path == "/broken":

            async def writer(send: ChunkSender) -> None:
                await send(b'{"type":"ADDED"}\n')
                raise ValueError("a bug in a watch")

            return Response(200, stream=writer)
        return Response.json(200, {"ok": True})

    async def client(http: httpx.AsyncClient) -> None:
        async def read_broken() -> None:
            async with http.stream("GET", "/broken") as response:
                async for _ in response.aiter_bytes():
                    pass

        with pytest.raises(httpx.HTTPError):
            await read_broken()
        await anyio.sleep(0.1)
        assert (await http.get("/fine")).status_code == 200

    await _serve(handler, client)


async def test_a_slow_watch_client_does_not_block_other_requests(node: FakeNode) -> None:
    api = KubeAPI(node, clock=lambda: NOW)
    await call(api, "POST", PODS, pod())

    async def handler(request: Request) -> Response:
        return await api(request)

    async def client(http: httpx.AsyncClient) -> None:
        async with http.stream("GET", f"{PODS}?watch=true") as watching:
            assert watching.status_code == 200
            # never read the watch; meanwhile other clients are answered
            for i in range(20):
                created = await http.post(CONFIGMAPS, json=config_map(f"c{i}"))
                assert created.status_code == 201
            assert (await http.get("/version")).status_code == 200

    await _serve(handler, client)


async def test_a_non_ascii_field_name_does_not_stop_the_daemon() -> None:
    config = parse_kubelet_config(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
    )
    with tempfile.TemporaryDirectory(prefix="hostile-") as root:
        daemon = Daemon(
            DaemonOptions(config=config, root=Path(root), listen_port=0, node_name="node-1")
        )
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                port = await tg.start(daemon.run)
                base = f"http://127.0.0.1:{port}"
                async with httpx.AsyncClient(base_url=base, timeout=5) as http:
                    body = {**config_map("typo"), "sp\u0435c": {"a": 1}}  # a Cyrillic е
                    created = await http.post(CONFIGMAPS, json=body)
                    assert created.status_code == 201
                    await anyio.sleep(0.1)
                    assert (await http.get("/version")).status_code == 200
                tg.cancel_scope.cancel()
