"""Services, ConfigMaps and RuntimeClasses: parsing and validation, the object store (apply,
unchanged, configured, delete, the implicit ``kubernetes`` Service), apply warnings, the API's
list endpoints, and static files refusing these kinds."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s import (
    KUBERNETES_SERVICE,
    ApplyAction,
    ConfigMap,
    Kind,
    ObjectStore,
    RuntimeClass,
    Service,
    ServicePort,
    parse_manifests,
    stable_uid,
)
from kubelet_sim.k8s.objects import Object
from kubelet_sim.node.api import API
from kubelet_sim.node.httpserver import Request, Response
from kubelet_sim.node.static import StaticPods

# -- helpers --------------------------------------------------------------------------------


def service(spec: dict[str, Any] | None = None, name: str = "web", **meta: Any) -> str:
    body: dict[str, Any] = {"ports": [{"port": 80}]} if spec is None else spec
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, **meta}, "spec": body}
    return json.dumps(doc)


def config_map(name: str = "cfg", **fields: Any) -> str:
    return json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **fields}
    )


def runtime_class(name: str = "gvisor", api_version: str = "node.k8s.io/v1", **fields: Any) -> str:
    doc: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": "RuntimeClass",
        "metadata": {"name": name},
        "handler": "runsc",
    }
    doc.update(fields)
    return json.dumps(doc)


def parse_one(text: str, namespace: str = "default") -> Object:
    (manifest,) = parse_manifests(text, source="objects.yaml", namespace=namespace)
    return manifest.object


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- parsing --------------------------------------------------------------------------------


def test_a_service_is_parsed_with_its_defaults() -> None:
    spec = {
        "type": "ClusterIP",
        "clusterIP": "10.96.12.7",
        "selector": {"app": "web"},
        "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
        ],
        "sessionAffinity": "None",
    }
    obj = parse_one(service(spec), namespace="shop")
    assert obj == Service(
        "shop",
        "web",
        stable_uid("Service", "shop", "web"),
        "10.96.12.7",
        (ServicePort(80, "http", "TCP"), ServicePort(53, "dns", "UDP")),
        "ClusterIP",
    )
    assert isinstance(obj, Service)
    assert obj.kind is Kind.SERVICE
    assert obj.has_cluster_ip


@pytest.mark.parametrize(
    ("spec", "cluster_ip", "has_ip"),
    [
        pytest.param({"ports": [{"port": 80}]}, "", False, id="no-cluster-ip"),
        pytest.param({"clusterIP": "None"}, "None", False, id="headless-without-ports"),
        pytest.param(
            {"clusterIPs": ["fd00::10"], "ports": [{"port": 80}]}, "fd00::10", True, id="v6"
        ),
        pytest.param(
            {"clusterIPs": ["10.0.0.9", "fd00::9"], "ports": [{"port": 80}]},
            "10.0.0.9",
            True,
            id="dual-stack",
        ),
        pytest.param(
            {"type": "ExternalName", "externalName": "db.example.com."}, "", False, id="external"
        ),
    ],
)
def test_service_cluster_ips(spec: dict[str, Any], cluster_ip: str, has_ip: bool) -> None:
    obj = parse_one(service(spec))
    assert isinstance(obj, Service)
    assert (obj.cluster_ip, obj.has_cluster_ip) == (cluster_ip, has_ip)


def test_a_config_map_holds_data_and_decoded_binary_data() -> None:
    obj = parse_one(
        config_map(data={"mode": "fast", "empty": None}, binaryData={"blob": b64(b"\x00\xff")})
    )
    assert isinstance(obj, ConfigMap)
    assert obj.kind is Kind.CONFIG_MAP
    assert dict(obj.data) == {"mode": "fast", "empty": ""}
    assert dict(obj.binary_data) == {"blob": b"\x00\xff"}


def test_a_runtime_class_is_cluster_scoped_and_its_namespace_is_dropped() -> None:
    text = runtime_class(
        overhead={"podFixed": {"cpu": "250m", "memory": "120Mi"}},
        scheduling={"nodeSelector": {"sandbox": "gvisor"}, "tolerations": []},
    )
    doc = json.loads(text)
    doc["metadata"]["namespace"] = "ignored-namespace"
    obj = parse_one(json.dumps(doc), namespace="team")
    assert obj == RuntimeClass(
        "gvisor",
        stable_uid("RuntimeClass", "", "gvisor"),
        "runsc",
        {"cpu": "250m", "memory": "120Mi"},
        {"sandbox": "gvisor"},
    )
    assert isinstance(obj, RuntimeClass)
    assert (obj.namespace, obj.kind) == ("", Kind.RUNTIME_CLASS)


@pytest.mark.parametrize(
    ("text", "field", "where"),
    [
        pytest.param(runtime_class(api_version="v1"), "apiVersion", "", id="runtime-class-v1"),
        pytest.param(
            runtime_class(api_version="node.k8s.io/v1beta1"),
            "apiVersion",
            "",
            id="runtime-class-v1beta1",
        ),
        pytest.param(
            service().replace('"v1"', '"node.k8s.io/v1"'), "apiVersion", "", id="service-node-api"
        ),
        pytest.param(
            config_map().replace('"v1"', '"apps/v1"'), "apiVersion", "", id="config-map-apps"
        ),
        pytest.param(service(name="9web"), "metadata.name", "Service default/9web", id="svc-1035"),
        pytest.param(service({}), "spec.ports", "Service default/web", id="ports-required"),
        pytest.param(
            service({"ports": [{"port": 0}]}),
            "spec.ports[0].port",
            "Service default/web",
            id="port-0",
        ),
        pytest.param(
            service({"ports": [{"port": 65536}]}),
            "spec.ports[0].port",
            "Service default/web",
            id="port-range",
        ),
        pytest.param(
            service({"ports": [{"port": 80, "protocol": "HTTP"}]}),
            "spec.ports[0].protocol",
            "Service default/web",
            id="protocol",
        ),
        pytest.param(
            service({"ports": [{"port": 80}, {"name": "b", "port": 81}]}),
            "spec.ports[0].name",
            "Service default/web",
            id="name-required-with-two-ports",
        ),
        pytest.param(
            service({"ports": [{"port": 80, "name": "Web"}]}),
            "spec.ports[0].name",
            "Service default/web",
            id="port-name-label",
        ),
        pytest.param(
            service({"ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]}),
            "spec.ports[1].name",
            "Service default/web",
            id="port-name-duplicate",
        ),
        pytest.param(
            service({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]}),
            "spec.ports[1]",
            "Service default/web",
            id="port-duplicate",
        ),
        pytest.param(
            service({"ports": [{"port": 80, "targetPort": "8080"}]}),
            "spec.ports[0].targetPort",
            "Service default/web",
            id="target-port",
        ),
        pytest.param(
            service({"ports": [{"port": 80, "nodePort": 30080}]}),
            "spec.ports[0].nodePort",
            "Service default/web",
            id="node-port-on-cluster-ip",
        ),
        pytest.param(
            service({"clusterIP": "10.0.0.300", "ports": [{"port": 80}]}),
            "spec.clusterIP",
            "Service default/web",
            id="cluster-ip",
        ),
        pytest.param(
            service({"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.2"], "ports": [{"port": 1}]}),
            "spec.clusterIPs[0]",
            "Service default/web",
            id="cluster-ips-mismatch",
        ),
        pytest.param(
            service({"clusterIPs": ["10.0.0.1", "10.0.0.2"], "ports": [{"port": 1}]}),
            "spec.clusterIPs",
            "Service default/web",
            id="cluster-ips-same-family",
        ),
        pytest.param(
            service({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 1}]}),
            "spec.clusterIP",
            "Service default/web",
            id="headless-node-port",
        ),
        pytest.param(
            service({"type": "Magic", "ports": [{"port": 1}]}),
            "spec.type",
            "Service default/web",
            id="type",
        ),
        pytest.param(
            service({"type": "ExternalName"}),
            "spec.externalName",
            "Service default/web",
            id="external-name-required",
        ),
        pytest.param(
            service({"ports": [{"port": 1}], "selector": {"app": "a b"}}),
            "spec.selector[app]",
            "Service default/web",
            id="selector",
        ),
        pytest.param(
            config_map(data={"a/b": "x"}), "data[a/b]", "ConfigMap default/cfg", id="data-key"
        ),
        pytest.param(
            config_map(data={"n": 1}), "data[n]", "ConfigMap default/cfg", id="data-not-string"
        ),
        pytest.param(
            config_map(binaryData={"b": "not base64!"}),
            "binaryData[b]",
            "ConfigMap default/cfg",
            id="binary-not-base64",
        ),
        pytest.param(
            config_map(data={"k": "x"}, binaryData={"k": b64(b"y")}),
            "binaryData[k]",
            "ConfigMap default/cfg",
            id="key-in-both",
        ),
        pytest.param(
            config_map(data={"a": "x" * (1024 * 1024)}, binaryData={"b": b64(b"y")}),
            "data",
            "ConfigMap default/cfg",
            id="over-1MiB",
        ),
        pytest.param(
            config_map(name="Cfg"), "metadata.name", "ConfigMap default/Cfg", id="cm-name"
        ),
        pytest.param(
            runtime_class(name="Not_A_Valid_Name"),
            "metadata.name",
            "RuntimeClass Not_A_Valid_Name",
            id="runtime-class-name",
        ),
        pytest.param(
            runtime_class(handler=""), "handler", "RuntimeClass gvisor", id="handler-required"
        ),
        pytest.param(
            runtime_class(handler="run.sc"), "handler", "RuntimeClass gvisor", id="handler-label"
        ),
        pytest.param(
            runtime_class(overhead={"podFixed": {"cpu": "much"}}),
            "overhead.podFixed[cpu]",
            "RuntimeClass gvisor",
            id="overhead-quantity",
        ),
        pytest.param(
            runtime_class(overhead={"podFixed": {"memory": "-1"}}),
            "overhead.podFixed[memory]",
            "RuntimeClass gvisor",
            id="overhead-negative",
        ),
        pytest.param(
            runtime_class(scheduling={"nodeSelector": {"-bad": "x"}}),
            "scheduling.nodeSelector[-bad]",
            "RuntimeClass gvisor",
            id="node-selector",
        ),
    ],
)
def test_invalid_objects_name_the_object_and_the_field(text: str, field: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_manifests(text, source="objects.yaml")
    assert info.value.field == field
    assert info.value.file == " ".join(filter(None, ["objects.yaml (document 1)", where]))


@pytest.mark.parametrize(
    ("text", "unknown"),
    [
        pytest.param(
            service({"ports": [{"port": 80, "prot": "TCP"}], "foo": 1}),
            ("spec.foo", "spec.ports[0].prot"),
            id="service",
        ),
        pytest.param(config_map(dat={"a": "b"}), ("dat",), id="config-map"),
        pytest.param(
            runtime_class(handlr="x", overhead={"pod": {}}),
            ("handlr", "overhead.pod"),
            id="runtime-class",
        ),
        pytest.param(config_map(immutable=True), (), id="known-fields-are-not-reported"),
    ],
)
def test_unknown_keys_of_the_new_kinds_are_reported(text: str, unknown: tuple[str, ...]) -> None:
    obj = parse_one(text)
    assert isinstance(obj, Service | ConfigMap | RuntimeClass)
    assert obj.unknown_fields == unknown


# -- the store ------------------------------------------------------------------------------

KINDS = [
    pytest.param(
        service(),
        service({"ports": [{"port": 8080}]}),
        Kind.SERVICE,
        "default",
        "web",
        id="service",
    ),
    pytest.param(
        config_map(data={"a": "1"}),
        config_map(data={"a": "2"}),
        Kind.CONFIG_MAP,
        "default",
        "cfg",
        id="config-map",
    ),
    pytest.param(
        runtime_class(), runtime_class(handler="kata"), Kind.RUNTIME_CLASS, "", "gvisor", id="rc"
    ),
]


@pytest.mark.parametrize(("first", "changed", "kind", "namespace", "name"), KINDS)
def test_apply_unchanged_configured_and_delete(
    first: str, changed: str, kind: Kind, namespace: str, name: str
) -> None:
    store = ObjectStore()
    assert [r.action for r in store.apply_text(first)] == [ApplyAction.CREATED]
    stored = store.get(kind, namespace, name)
    assert stored is not None
    assert store.apply_text(first)[0].action is ApplyAction.UNCHANGED
    assert store.apply_text(changed)[0].action is ApplyAction.CONFIGURED
    updated = store.get(kind, namespace, name)
    assert updated is not None
    assert updated.uid == stored.uid
    assert updated != stored
    assert store.delete(kind, namespace, name)
    assert not store.delete(kind, namespace, name)
    assert store.get(kind, namespace, name) is None
    assert store.apply_text(first)[0].action is ApplyAction.CREATED


def test_typed_getters_and_listings() -> None:
    store = ObjectStore()
    store.apply_text(service(), namespace="shop")
    store.apply_text(config_map(data={"a": "1"}), namespace="shop")
    store.apply_text(config_map(name="other"))
    store.apply_text(runtime_class() + "\n---\n" + runtime_class(name="kata", handler="kata"))
    web = store.get_service("shop", "web")
    assert web is not None
    assert web.ports == (ServicePort(80),)
    assert store.get_service("default", "web") is None
    cfg = store.get_config_map("shop", "cfg")
    assert cfg is not None
    assert dict(cfg.data) == {"a": "1"}
    assert store.get_config_map("default", "cfg") is None
    assert [c.name for c in store.config_maps()] == ["cfg", "other"]
    assert [c.name for c in store.config_maps("shop")] == ["cfg"]
    gvisor = store.get_runtime_class("gvisor")
    assert gvisor is not None
    assert gvisor.handler == "runsc"
    assert store.get_runtime_class("nope") is None
    assert [r.name for r in store.runtime_classes()] == ["gvisor", "kata"]
    # A cluster-scoped object ignores any namespace it is asked for with.
    assert store.get(Kind.RUNTIME_CLASS, "shop", "kata") is not None
    assert store.delete(Kind.RUNTIME_CLASS, "shop", "kata")
    assert [r.name for r in store.runtime_classes()] == ["gvisor"]


def test_the_kubernetes_service_is_implicit_until_one_is_applied() -> None:
    store = ObjectStore()
    implicit = store.get_service("default", "kubernetes")
    assert implicit == KUBERNETES_SERVICE
    assert (implicit.cluster_ip, implicit.ports) == ("10.96.0.1", (ServicePort(443, "https"),))
    assert implicit.uid == stable_uid("Service", "default", "kubernetes")
    assert store.services() == [KUBERNETES_SERVICE]
    assert store.services("default") == [KUBERNETES_SERVICE]
    assert store.services("shop") == []
    assert not store.delete(Kind.SERVICE, "default", "kubernetes")  # nothing applied to delete
    store.apply_text(service(), namespace="shop")
    assert [s.name for s in store.services()] == ["kubernetes", "web"]
    own = service(
        {"clusterIP": "10.0.0.1", "ports": [{"name": "https", "port": 443}]}, "kubernetes"
    )
    store.apply_text(own)
    applied = store.get_service("default", "kubernetes")
    assert applied is not None
    assert applied.cluster_ip == "10.0.0.1"
    assert applied.uid == implicit.uid  # an update of the existing object
    assert [s.name for s in store.services()] == ["web", "kubernetes"]
    assert store.delete(Kind.SERVICE, "default", "kubernetes")
    assert store.get_service("default", "kubernetes") == KUBERNETES_SERVICE  # recreated


def test_patching_the_implicit_kubernetes_service() -> None:
    store = ObjectStore()
    result = store.patch(Kind.SERVICE, "default", "kubernetes", {"spec": {"clusterIP": "10.0.0.1"}})
    assert result.action is ApplyAction.PATCHED
    patched = store.get_service("default", "kubernetes")
    assert patched is not None
    assert (patched.cluster_ip, patched.uid) == ("10.0.0.1", KUBERNETES_SERVICE.uid)
    assert patched.ports == KUBERNETES_SERVICE.ports


def test_patching_a_runtime_class() -> None:
    store = ObjectStore()
    doc = json.loads(runtime_class())
    doc["metadata"]["namespace"] = "dropped"
    store.apply_text(json.dumps(doc))
    result = store.patch(Kind.RUNTIME_CLASS, "", "gvisor", {"handler": "runsc-debug"})
    assert result.action is ApplyAction.PATCHED
    rc = store.get_runtime_class("gvisor")
    assert rc is not None
    assert rc.handler == "runsc-debug"
    with pytest.raises(ConfigError, match="not found"):
        store.patch(Kind.RUNTIME_CLASS, "", "missing", {"handler": "x"})


def test_apply_results_print_as_kubectl_and_carry_warnings() -> None:
    store = ObjectStore()
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "nginx"}], "volumes": [{"name": "v"}]},
        "extra": 1,
    }
    text = "\n---\n".join([runtime_class(), config_map(dat={}), json.dumps(pod)])
    results = store.apply_text(text)
    assert [str(r) for r in results] == [
        "runtimeclass.node.k8s.io/gvisor created",
        "configmap/cfg created",
        "pod/p created",
    ]
    assert [r.warnings for r in results] == [
        (),
        ('unknown field "dat"',),
        ('unknown field "extra"', "field not modelled by kubelet-sim: spec.volumes"),
    ]
    again = store.apply_text(json.dumps(pod))[0]
    assert again.action is ApplyAction.UNCHANGED
    assert again.warnings == results[2].warnings  # warned on every apply, as the API server


# -- the API --------------------------------------------------------------------------------


class FakeNode:
    """The daemon's apply path and object store; no registry, no engine."""

    ready = True

    def __init__(self, store: ObjectStore) -> None:
        self.objects = store

    def metrics_text(self) -> bytes:
        return b""

    async def apply(self, body: bytes, content_type: str) -> list[dict[str, Any]]:
        results = self.objects.apply_text(body, source="request body")
        return [
            {"kind": str(r.kind), "namespace": r.namespace, "name": r.name, "result": r.action}
            for r in results
        ]

    async def delete_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def pods(self) -> list[dict[str, Any]]:
        return []

    def pod(self, namespace: str, name: str, *, reveal: bool = False) -> dict[str, Any] | None:
        return None

    async def explain(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    async def images(self) -> list[dict[str, Any]]:
        return []

    def events(self, namespace: str | None, name: str | None) -> list[dict[str, Any]]:
        return []


def populated() -> ObjectStore:
    store = ObjectStore()
    texts = [
        ("shop", service({"ports": [{"port": 80, "name": "http"}]})),
        ("shop", config_map(data={"mode": "fast"}, binaryData={"b": b64(b"\x01")})),
        ("default", runtime_class(overhead={"podFixed": {"cpu": "250m"}})),
        (
            "shop",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\n"
            "stringData: {password: SuperSecret-Pa55}\n",
        ),
    ]
    for namespace, text in texts:
        store.apply_text(text, namespace=namespace, new_uid=stable_uid)
    return store


async def call(
    node: FakeNode, method: str, path: str, query: str = "", body: bytes = b""
) -> Response:
    params = {query.partition("=")[0]: [query.partition("=")[2]]} if query else {}
    return await API(node)(Request(method, path, params, {}, body))


@pytest.mark.anyio
async def test_get_services_lists_the_implicit_and_applied_services() -> None:
    response = await call(FakeNode(populated()), "GET", "/services")
    assert response.status == 200
    assert json.loads(response.body)["items"] == [
        {
            "namespace": "default",
            "name": "kubernetes",
            "uid": KUBERNETES_SERVICE.uid,
            "type": "ClusterIP",
            "clusterIP": "10.96.0.1",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP"}],
        },
        {
            "namespace": "shop",
            "name": "web",
            "uid": stable_uid("Service", "shop", "web"),
            "type": "ClusterIP",
            "clusterIP": "",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        },
    ]
    narrowed = await call(FakeNode(populated()), "GET", "/services", "namespace=shop")
    assert [s["name"] for s in json.loads(narrowed.body)["items"]] == ["web"]


@pytest.mark.anyio
async def test_get_configmaps_shows_keys_and_values_but_never_secrets() -> None:
    response = await call(FakeNode(populated()), "GET", "/configmaps")
    assert response.status == 200
    (row,) = json.loads(response.body)["items"]
    assert (row["namespace"], row["name"], row["data"], row["binaryData"]) == (
        "shop",
        "cfg",
        {"mode": "fast"},
        {"b": b64(b"\x01")},
    )
    assert b"SuperSecret" not in response.body
    assert b"creds" not in response.body


@pytest.mark.anyio
async def test_get_runtimeclasses() -> None:
    response = await call(FakeNode(populated()), "GET", "/runtimeclasses")
    assert response.status == 200
    assert json.loads(response.body)["items"] == [
        {
            "name": "gvisor",
            "uid": stable_uid("RuntimeClass", "", "gvisor"),
            "handler": "runsc",
            "overhead": {"podFixed": {"cpu": "250m"}},
            "scheduling": {"nodeSelector": {}},
        }
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "query", "status"),
    [
        pytest.param("POST", "/services", "", 405, id="post-services"),
        pytest.param("DELETE", "/configmaps", "", 405, id="delete-configmaps"),
        pytest.param("PUT", "/runtimeclasses", "", 405, id="put-runtimeclasses"),
        pytest.param("GET", "/services", "namespace=Not_A_Namespace", 400, id="bad-namespace"),
        pytest.param("GET", "/configmaps", "namespace=" + "x" * 5000, 400, id="long-namespace"),
        pytest.param("GET", "/services/", "", 200, id="trailing-slash"),
    ],
)
async def test_list_endpoints_answer_bad_requests_without_crashing(
    method: str, path: str, query: str, status: int
) -> None:
    response = await call(FakeNode(populated()), method, path, query)
    assert response.status == status
    assert len(response.body) < 4096
    json.loads(response.body)


@pytest.mark.anyio
async def test_post_apply_answers_warnings_per_object_and_in_all() -> None:
    pod = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n"
        "  volumes: [{name: v, emptyDir: {}}]\n  containers: [{name: a, image: nginx, foo: 1}]\n"
    )
    body = (pod + "---\n" + config_map()).encode()
    response = await call(FakeNode(ObjectStore()), "POST", "/apply", body=body)
    assert response.status == 200
    answer = json.loads(response.body)
    assert [(i["kind"], i["name"], i["result"], i["warnings"]) for i in answer["items"]] == [
        (
            "Pod",
            "web",
            "created",
            [
                "field not modelled by kubelet-sim: spec.volumes",
                'unknown field "spec.containers[0].foo"',
            ],
        ),
        ("ConfigMap", "cfg", "created", []),
    ]
    assert answer["warnings"] == [
        "pod/web: field not modelled by kubelet-sim: spec.volumes",
        'pod/web: unknown field "spec.containers[0].foo"',
    ]


@pytest.mark.anyio
async def test_post_apply_refusals_name_the_field() -> None:
    response = await call(
        FakeNode(ObjectStore()), "POST", "/apply", body=runtime_class(name="A_B").encode()
    )
    assert response.status == 422
    answer = json.loads(response.body)
    assert answer["field"] == "metadata.name"
    assert answer["source"] == "request body (document 1) RuntimeClass A_B"


# -- static pods ----------------------------------------------------------------------------


def test_static_files_refuse_the_new_kinds() -> None:
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: a, image: x}]\n"
    text = "\n---\n".join([service(), config_map(), runtime_class(), pod])
    source = StaticPods("node-1")
    with capture_logs() as logs:
        source.update({Path("/m/mixed.yaml"): text.encode()})
    assert list(source.pods()) == [("default", "web-node-1")]
    refused = [(e["kind"], e["name"]) for e in logs if e["event"] == "static.not_a_pod"]
    assert refused == [("Service", "web"), ("ConfigMap", "cfg"), ("RuntimeClass", "gvisor")]
