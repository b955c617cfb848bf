"""The Kubernetes REST paths over a real object store: discovery, CRUD, patch, selectors, errors
as ``metav1.Status``, tables and watches (the daemon's part is faked: writes go straight to the
store, a pod's delete only marks it)."""

from __future__ import annotations

import base64
import json
from typing import Any, TypeVar

import anyio
import pytest

from kubelet_sim.k8s.objects import Kind
from kubelet_sim.k8s.store import HISTORY
from kubelet_sim.node.httpserver import Response
from kubelet_sim.node.kubeapi import KubeAPI
from kubelet_sim.node.kubeapi.resources import AGGREGATED_CONTENT_TYPE, RESOURCES
from kubelet_sim.testing.kubeapi import NOW, FakeKubeNode, body_of, call, drain

pytestmark = pytest.mark.anyio

T = TypeVar("T")
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
PODS = "/api/v1/namespaces/default/pods"
PASSWORD = "s3cret-Pa55"  # a test value that must never show in an error


EVENTS = [
    {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {"name": "web.1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        "reason": "Pulling",
        "type": "Normal",
        "count": 1,
        "source": {"component": "kubelet", "host": "node-1"},
    }
]
FakeNode = FakeKubeNode
doc = body_of


@pytest.fixture
def node() -> FakeKubeNode:
    return FakeKubeNode(events=EVENTS)


@pytest.fixture
def api(node: FakeKubeNode) -> KubeAPI:
    return KubeAPI(node, clock=lambda: NOW)


def pod(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}], **spec},
    }


def warnings(response: Response) -> list[str]:
    return [value for key, value in response.headers if key == "Warning"]


# -- discovery ----------------------------------------------------------------------------------


async def test_aggregated_discovery_when_asked_for_and_legacy_otherwise(api: KubeAPI) -> None:
    core = await call(api, "GET", "/api", accept=AGGREGATED)
    assert core.content_type == AGGREGATED_CONTENT_TYPE
    (group,) = doc(core)["items"]
    names = {r["resource"] for r in group["versions"][0]["resources"]}
    assert names == {"pods", "secrets", "serviceaccounts", "services", "configmaps", "events"}
    apis = doc(await call(api, "GET", "/apis", accept=AGGREGATED))
    assert [i["metadata"]["name"] for i in apis["items"]] == ["node.k8s.io"]
    assert doc(await call(api, "GET", "/api"))["versions"] == ["v1"]
    listed = doc(await call(api, "GET", "/api/v1"))
    pods = next(r for r in listed["resources"] if r["name"] == "pods")
    assert (pods["kind"], pods["namespaced"], pods["shortNames"]) == ("Pod", True, ["po"])
    node_group = doc(await call(api, "GET", "/apis/node.k8s.io/v1"))
    assert node_group["resources"][0]["namespaced"] is False
    assert doc(await call(api, "GET", "/version"))["minor"] == "32"


async def test_openapi_v3_says_every_kind_takes_field_validation(api: KubeAPI) -> None:
    # What kubectl's queryParamVerifierV3 looks for before it leaves validation to the server.
    index = doc(await call(api, "GET", "/openapi/v3"))["paths"]
    seen = set()
    for entry in index.values():
        url = entry["serverRelativeURL"]
        spec = doc(await call(api, "GET", url))
        for item in spec["paths"].values():
            patch = item["patch"]
            gvk = patch["x-kubernetes-group-version-kind"]
            assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
            seen.add(gvk["kind"])
    assert seen == {r.kind_name for r in RESOURCES if "patch" in r.verbs}
    missing = await call(api, "GET", "/openapi/v2")
    assert missing.status == 404


# -- create, get, update ------------------------------------------------------------------------


async def test_create_answers_the_object_with_what_the_server_owns(api: KubeAPI) -> None:
    created = await call(api, "POST", PODS, pod())
    assert created.status == 201
    body = doc(created)
    meta = body["metadata"]
    assert meta["uid"]
    assert meta["resourceVersion"].isdigit()
    assert meta["creationTimestamp"] == "2027-01-15T08:00:00Z"
    assert body["spec"]["nodeName"] == "node-1"
    assert body["spec"]["serviceAccountName"] == "default"
    assert body["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert body["status"] == {"phase": "Pending"}
    got = doc(await call(api, "GET", f"{PODS}/web"))
    assert got == body


async def test_create_twice_is_already_exists(api: KubeAPI) -> None:
    await call(api, "POST", PODS, pod())
    again = await call(api, "POST", PODS, pod())
    assert again.status == 409
    status = doc(again)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "AlreadyExists", 409)
    assert status["message"] == 'pods "web" already exists'
    assert status["details"] == {"name": "web", "kind": "pods"}


async def test_get_of_nothing_is_not_found(api: KubeAPI) -> None:
    missing = await call(api, "GET", f"{PODS}/nope")
    assert missing.status == 404
    assert doc(missing)["message"] == 'pods "nope" not found'
    assert doc(missing)["reason"] == "NotFound"
    assert (await call(api, "GET", "/api/v1/namespaces/default/widgets")).status == 404


async def test_update_with_a_stale_resource_version_is_a_conflict(api: KubeAPI) -> None:
    first = doc(await call(api, "POST", PODS, pod()))
    changed = {
        **first,
        "spec": {**first["spec"], "containers": [{"name": "app", "image": "busybox:1.37"}]},
    }
    updated = await call(api, "PUT", f"{PODS}/web", changed)
    assert updated.status == 200
    assert int(doc(updated)["metadata"]["resourceVersion"]) > int(
        first["metadata"]["resourceVersion"]
    )
    stale = await call(api, "PUT", f"{PODS}/web", changed)
    assert stale.status == 409
    assert doc(stale)["reason"] == "Conflict"
    assert "the object has been modified" in doc(stale)["message"]


async def test_the_url_and_the_body_must_name_the_same_object(api: KubeAPI) -> None:
    wrong = await call(
        api,
        "POST",
        "/api/v1/namespaces/other/pods",
        {**pod(), "metadata": {"name": "web", "namespace": "default"}},
    )
    assert wrong.status == 400
    assert "namespace" in doc(wrong)["message"]
    kind = await call(api, "POST", PODS, {**pod(), "kind": "Secret"})
    assert kind.status == 400


async def test_generate_name_makes_a_name(api: KubeAPI) -> None:
    made = doc(await call(api, "POST", PODS, {**pod(), "metadata": {"generateName": "web-"}}))
    assert made["metadata"]["name"].startswith("web-")
    assert len(made["metadata"]["name"]) == len("web-") + 5


async def test_invalid_objects_answer_422_with_the_field(api: KubeAPI) -> None:
    bad = await call(api, "POST", PODS, pod(containers=[{"name": "app"}]))
    assert bad.status == 422
    status = doc(bad)
    assert status["reason"] == "Invalid"
    assert status["message"].startswith('Pod "web" is invalid: spec.containers[0].image')
    assert status["details"]["causes"][0]["field"] == "spec.containers[0].image"


async def test_field_validation_strict_refuses_unknown_fields_and_warn_warns(api: KubeAPI) -> None:
    odd = pod(foo=1)
    strict = await call(api, "POST", f"{PODS}?fieldValidation=Strict", odd)
    assert strict.status == 400
    assert 'strict decoding error: unknown field "spec.foo"' in doc(strict)["message"]
    warned = await call(api, "POST", f"{PODS}?fieldValidation=Warn", odd)
    assert warned.status == 201
    assert warnings(warned) == ['299 - "unknown field \\"spec.foo\\""']
    volumes = pod("vols", volumes=[{"name": "v", "emptyDir": {}}])
    modelled = await call(api, "POST", f"{PODS}?fieldValidation=Strict", volumes)
    assert modelled.status == 201
    assert warnings(modelled) == ['299 - "field not modelled by kubelet-sim: spec.volumes"']


async def test_bodies_in_yaml_and_kubectls_protobuf(api: KubeAPI) -> None:
    yaml_body = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: b}\n"
    made = await call(
        api,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        yaml_body,
        content_type="application/yaml",
    )
    assert made.status == 201
    assert doc(made)["data"] == {"a": "b"}
    proto = (
        b'k8s\x00\n\x0f\n\x02v1\x12\tConfigMap\x12\x1b\n\x11\n\x01x\x12\x00\x1a\x00"\x00*\x002'
        b'\x008\x00B\x00\x12\x06\n\x01a\x12\x01b\x1a\x00"\x00'
    )
    made = await call(
        api,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        proto,
        content_type="application/vnd.kubernetes.protobuf",
    )
    assert made.status == 201, made.body
    assert doc(made)["metadata"]["name"] == "x"
    broken = await call(api, "POST", PODS, b'{"kind": ', content_type="application/json")
    assert broken.status == 400
    assert doc(broken)["reason"] == "BadRequest"
    odd = await call(api, "POST", PODS, b"x", content_type="text/csv")
    assert odd.status == 415


async def test_secret_values_never_show_in_errors(api: KubeAPI) -> None:
    bad = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "reg"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(f"not json {PASSWORD}".encode()).decode()},
    }
    answer = await call(api, "POST", "/api/v1/namespaces/default/secrets", bad)
    assert answer.status == 422
    assert PASSWORD not in answer.body.decode()
    assert base64.b64encode(PASSWORD.encode()).decode()[:8] not in answer.body.decode()


async def test_secrets_are_read_from_loopback_only(api: KubeAPI) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "stringData": {"k": "v"},
    }
    assert (await call(api, "POST", "/api/v1/namespaces/default/secrets", secret)).status == 201
    local = doc(await call(api, "GET", "/api/v1/namespaces/default/secrets/s"))
    assert local["data"] == {"k": base64.b64encode(b"v").decode()}
    assert "stringData" not in local
    remote = await call(api, "GET", "/api/v1/namespaces/default/secrets/s", peer="10.0.0.5")
    assert remote.status == 403
    assert doc(remote)["reason"] == "Forbidden"


# -- patch --------------------------------------------------------------------------------------


async def test_the_seeds_strategic_patch_replaces_the_service_accounts_pull_secrets(
    api: KubeAPI,
) -> None:
    target = "/api/v1/namespaces/default/serviceaccounts/default"
    before = doc(await call(api, "GET", target))
    assert "imagePullSecrets" not in before
    patch = {"imagePullSecrets": [{"name": "myregistrykey"}]}
    ct = "application/strategic-merge-patch+json"
    patched = await call(api, "PATCH", target, patch, content_type=ct)
    assert patched.status == 200
    assert doc(patched)["imagePullSecrets"] == [{"name": "myregistrykey"}]
    assert doc(patched)["metadata"]["uid"] == before["metadata"]["uid"]  # an update, not a new one
    again = await call(
        api, "PATCH", target, {"imagePullSecrets": [{"name": "other"}]}, content_type=ct
    )
    assert doc(again)["imagePullSecrets"] == [{"name": "other"}]  # no merge key: replaced


async def test_json_and_merge_patches(api: KubeAPI) -> None:
    await call(api, "POST", PODS, pod())
    merge = await call(
        api,
        "PATCH",
        f"{PODS}/web",
        {"metadata": {"labels": {"tier": "a"}}},
        content_type="application/merge-patch+json",
    )
    assert doc(merge)["metadata"]["labels"] == {"app": "web", "tier": "a"}
    ops = [{"op": "replace", "path": "/spec/containers/0/image", "value": "busybox:1.37"}]
    jsonp = await call(api, "PATCH", f"{PODS}/web", ops, content_type="application/json-patch+json")
    assert doc(jsonp)["spec"]["containers"][0]["image"] == "busybox:1.37"
    failing = [{"op": "test", "path": "/metadata/name", "value": "db"}]
    refused = await call(
        api, "PATCH", f"{PODS}/web", failing, content_type="application/json-patch+json"
    )
    assert refused.status == 422
    malformed = await call(
        api, "PATCH", f"{PODS}/web", {"op": "x"}, content_type="application/json-patch+json"
    )
    assert malformed.status == 400
    apply = await call(
        api, "PATCH", f"{PODS}/web", b"{}", content_type="application/apply-patch+yaml"
    )
    assert apply.status == 415
    rename = await call(
        api,
        "PATCH",
        f"{PODS}/web",
        {"metadata": {"name": "db"}},
        content_type="application/merge-patch+json",
    )
    assert rename.status == 400
    missing = await call(
        api, "PATCH", f"{PODS}/nope", {}, content_type="application/merge-patch+json"
    )
    assert missing.status == 404


# -- list, selectors, tables --------------------------------------------------------------------


async def test_list_with_label_and_field_selectors(api: KubeAPI) -> None:
    for name in ("web", "db"):
        await call(api, "POST", PODS, pod(name))
    listed = doc(await call(api, "GET", PODS))
    assert listed["kind"] == "PodList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["db", "web"]  # name order
    by_label = doc(await call(api, "GET", f"{PODS}?labelSelector=app%20in%20(db)"))
    assert [i["metadata"]["name"] for i in by_label["items"]] == ["db"]
    by_field = doc(
        await call(api, "GET", f"{PODS}?fieldSelector=metadata.name%3Dweb,status.phase%3DPending")
    )
    assert [i["metadata"]["name"] for i in by_field["items"]] == ["web"]
    unsupported = await call(api, "GET", f"{PODS}?fieldSelector=spec.foo%3Dx")
    assert unsupported.status == 400
    assert doc(unsupported)["message"] == "field label not supported: spec.foo"
    bad = await call(api, "GET", f"{PODS}?labelSelector=a%20b")
    assert bad.status == 400
    everywhere = doc(await call(api, "GET", "/api/v1/pods"))
    assert len(everywhere["items"]) == 2
    events = doc(
        await call(
            api, "GET", "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dweb"
        )
    )
    assert [e["reason"] for e in events["items"]] == ["Pulling"]


async def test_tables_when_kubectl_asks_for_them(api: KubeAPI) -> None:
    await call(api, "POST", PODS, pod())
    listed = doc(await call(api, "GET", PODS, accept=TABLE))
    assert listed["kind"] == "Table"
    assert listed["rows"][0]["cells"][:3] == ["web", "0/1", "Pending"]
    one = doc(await call(api, "GET", f"{PODS}/web", accept=TABLE))
    assert one["kind"] == "Table"
    accounts = doc(
        await call(api, "GET", "/api/v1/namespaces/default/serviceaccounts", accept=TABLE)
    )
    assert [r["cells"][0] for r in accounts["rows"]] == ["default"]
    services = doc(await call(api, "GET", "/api/v1/namespaces/default/services", accept=TABLE))
    assert services["rows"][0]["cells"][:5] == [
        "kubernetes",
        "ClusterIP",
        "10.96.0.1",
        "<none>",
        "443/TCP",
    ]


# -- delete -------------------------------------------------------------------------------------


async def test_delete_a_pod_is_graceful_and_others_answer_success(
    node: FakeNode, api: KubeAPI
) -> None:
    await call(api, "POST", PODS, pod())
    deleting = await call(
        api, "DELETE", f"{PODS}/web", {"kind": "DeleteOptions", "gracePeriodSeconds": 3}
    )
    assert deleting.status == 200
    assert doc(deleting)["metadata"]["deletionGracePeriodSeconds"] == 3
    assert node.graces == [3]
    assert (await call(api, "POST", PODS, pod())).status == 409  # still there, terminating
    listed = doc(await call(api, "GET", PODS, accept=TABLE))
    assert listed["rows"][0]["cells"][2] == "Terminating"
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    await call(api, "POST", "/api/v1/namespaces/default/configmaps", config)
    gone = doc(await call(api, "DELETE", "/api/v1/namespaces/default/configmaps/c"))
    assert (gone["status"], gone["details"]["name"]) == ("Success", "c")
    assert (await call(api, "DELETE", "/api/v1/namespaces/default/configmaps/c")).status == 404
    negative = await call(api, "DELETE", f"{PODS}/web?gracePeriodSeconds=-1")
    assert negative.status == 400


# -- watch --------------------------------------------------------------------------------------


async def events(response: Response, count: int) -> list[dict[str, Any]]:
    """The first ``count`` events of a watch stream."""
    assert response.stream is not None
    out: list[dict[str, Any]] = []
    with anyio.fail_after(5), anyio.CancelScope() as scope:

        async def send(chunk: bytes) -> None:
            out.extend(json.loads(line) for line in chunk.splitlines())
            if len(out) >= count:
                scope.cancel()

        await response.stream(send)
    return out


async def test_watch_from_zero_lists_then_streams(node: FakeNode, api: KubeAPI) -> None:
    await call(api, "POST", PODS, pod())
    watch = await call(api, "GET", f"{PODS}?watch=true")
    assert watch.stream is not None

    async def later() -> None:
        await anyio.sleep(0.01)
        node.objects.set_pod_status("default", "web", {"phase": "Running"})
        node.objects.delete(Kind.POD, "default", "web")

    async with anyio.create_task_group() as tg:
        tg.start_soon(later)
        seen = await events(watch, 3)
    assert [e["type"] for e in seen] == ["ADDED", "MODIFIED", "DELETED"]
    assert seen[1]["object"]["status"] == {"phase": "Running"}
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in seen]
    assert versions == sorted(versions)


async def test_watch_from_a_version_replays_and_filters(node: FakeNode, api: KubeAPI) -> None:
    listed = doc(await call(api, "GET", PODS))
    since = listed["metadata"]["resourceVersion"]
    await call(api, "POST", PODS, pod("db"))
    await call(api, "POST", PODS, pod("web"))
    watch = await call(
        api,
        "GET",
        f"{PODS}?watch=1&resourceVersion={since}&fieldSelector=metadata.name%3Dweb",
        accept=TABLE,
    )
    (added,) = await events(watch, 1)
    assert added["type"] == "ADDED"
    assert added["object"]["kind"] == "Table"
    assert added["object"]["rows"][0]["cells"][0] == "web"
    assert added["object"]["columnDefinitions"]  # the first event carries the headers


async def test_watch_too_far_back_is_expired(node: FakeNode, api: KubeAPI) -> None:
    for i in range(HISTORY + 5):
        await call(
            api,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}"}},
        )
    watch = await call(api, "GET", f"{PODS}?watch=true&resourceVersion=2")
    (error,) = await events(watch, 1)
    assert error["type"] == "ERROR"
    assert (error["object"]["code"], error["object"]["reason"]) == (410, "Expired")
    bad = await call(api, "GET", f"{PODS}?watch=true&resourceVersion=abc")
    assert bad.status == 400


async def test_watch_ends_at_its_timeout(api: KubeAPI) -> None:
    watch = await call(api, "GET", f"{PODS}?watch=true&timeoutSeconds=0")
    with anyio.fail_after(5):
        assert await drain(watch) == []


async def test_the_kubernetes_service_is_served_as_the_api_server_allocates_it(
    api: KubeAPI,
) -> None:
    service = doc(await call(api, "GET", "/api/v1/namespaces/default/services/kubernetes"))
    spec = service["spec"]
    assert (spec["clusterIP"], spec["clusterIPs"]) == ("10.96.0.1", ["10.96.0.1"])
    assert (spec["ipFamilies"], spec["ipFamilyPolicy"]) == (["IPv4"], "SingleStack")
    assert service["metadata"]["labels"] == {"component": "apiserver", "provider": "kubernetes"}


async def test_a_watch_from_before_a_deletion_gets_the_deleted_event(
    node: FakeKubeNode, api: KubeAPI
) -> None:
    # kubectl delete waits with a list, then a watch from the list's version: the pod may be
    # gone before the watch starts, and its DELETED must still come (the replay has it).
    await call(api, "POST", PODS, pod())
    since = doc(await call(api, "GET", f"{PODS}?fieldSelector=metadata.name%3Dweb"))
    node.objects.delete(Kind.POD, "default", "web")
    version = since["metadata"]["resourceVersion"]
    target = f"{PODS}?watch=true&resourceVersion={version}&fieldSelector=metadata.name%3Dweb"
    (deleted,) = await events(await call(api, "GET", target), 1)
    assert deleted["type"] == "DELETED"
    assert deleted["object"]["metadata"]["name"] == "web"


async def test_a_selector_watch_adds_what_starts_matching_and_deletes_what_stops(
    node: FakeKubeNode, api: KubeAPI
) -> None:
    await call(api, "POST", PODS, pod("web"))
    watch = await call(api, "GET", f"{PODS}?watch=true&labelSelector=tier%3Dfront")

    async def relabel() -> None:
        await anyio.sleep(0.01)
        for tier in ("front", "back"):
            patch = {"metadata": {"labels": {"tier": tier}}}
            merge = "application/merge-patch+json"
            await call(api, "PATCH", f"{PODS}/web", patch, content_type=merge)

    async with anyio.create_task_group() as tg:
        tg.start_soon(relabel)
        seen = await events(watch, 2)
    assert [e["type"] for e in seen] == ["ADDED", "DELETED"]


async def test_create_namespace_succeeds_and_a_bad_name_is_invalid(api: KubeAPI) -> None:
    made = await call(api, "POST", "/api/v1/namespaces", {"metadata": {"name": "team-a"}})
    assert (made.status, doc(made)["status"]) == (201, {"phase": "Active"})
    bad = await call(api, "POST", "/api/v1/namespaces", {"metadata": {"name": "Team_A"}})
    assert bad.status == 422
    assert doc(bad)["details"]["causes"][0]["field"] == "metadata.name"
    assert "RFC 1123 label" in doc(bad)["message"]
