"""The container half of a pod as the API reads it: command, env, resources, ports, lifecycle, the
pod-level fields, quantities, and the fields kubelet-sim reports instead of dropping."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from kubelet_sim.core.pods import ContainerKind
from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s import Pod, field_warnings, parse_manifests, parse_quantity
from kubelet_sim.k8s.podspec import (
    ConfigMapEnvSource,
    ContainerPort,
    EnvFromSource,
    EnvVar,
    EnvVarSource,
    ExecAction,
    HTTPGetAction,
    HTTPHeader,
    KeySelector,
    Lifecycle,
    LifecycleHandler,
    ObjectFieldSelector,
    ResourceFieldSelector,
    SecretEnvSource,
    SleepAction,
    TCPSocketAction,
)
from kubelet_sim.node.static import StaticPods

# -- helpers --------------------------------------------------------------------------------


def pod_text(container: dict[str, Any] | None = None, **spec: Any) -> str:
    """A Pod ``p`` with one app container ``app`` (plus ``container``'s fields) and ``spec``."""
    app: dict[str, Any] = {"name": "app", "image": "nginx:1"}
    app.update(container or {})
    body: dict[str, Any] = {"containers": [app]}
    body.update(spec)
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": body})


def parse_pod(text: str) -> Pod:
    (manifest,) = parse_manifests(text, source="pod.yaml")
    pod = manifest.object
    assert isinstance(pod, Pod)
    return pod


def refusal(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_manifests(text, source="pod.yaml")
    return info.value


# -- quantities -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param("1", Fraction(1), id="plain"),
        pytest.param("500m", Fraction(1, 2), id="milli"),
        pytest.param("0.5", Fraction(1, 2), id="decimal"),
        pytest.param(".5", Fraction(1, 2), id="leading-dot"),
        pytest.param("5.", Fraction(5), id="trailing-dot"),
        pytest.param("+2", Fraction(2), id="plus-sign"),
        pytest.param("-1", Fraction(-1), id="negative"),
        pytest.param("100n", Fraction(1, 10_000_000), id="nano"),
        pytest.param("3u", Fraction(3, 1_000_000), id="micro"),
        pytest.param("1k", Fraction(1000), id="kilo"),
        pytest.param("1M", Fraction(10**6), id="mega"),
        pytest.param("2G", Fraction(2 * 10**9), id="giga"),
        pytest.param("1T", Fraction(10**12), id="tera"),
        pytest.param("1P", Fraction(10**15), id="peta"),
        pytest.param("1E", Fraction(10**18), id="exa"),
        pytest.param("1Ki", Fraction(1024), id="kibi"),
        pytest.param("1.5Gi", Fraction(3 * 2**29), id="gibi-fraction"),
        pytest.param("1Mi", Fraction(2**20), id="mebi"),
        pytest.param("1Ti", Fraction(2**40), id="tebi"),
        pytest.param("1Pi", Fraction(2**50), id="pebi"),
        pytest.param("1Ei", Fraction(2**60), id="exbi"),
        pytest.param("2e3", Fraction(2000), id="exponent"),
        pytest.param("1E3", Fraction(1000), id="upper-exponent"),
        pytest.param("1e-3", Fraction(1, 1000), id="negative-exponent"),
        pytest.param("1E+2", Fraction(100), id="signed-exponent"),
    ],
)
def test_quantities_parse_to_their_exact_value(text: str, value: Fraction) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("Mi", id="no-number"),
        pytest.param("1.2.3", id="two-dots"),
        pytest.param("1e", id="bare-e"),
        pytest.param("1x", id="unknown-suffix"),
        pytest.param("1 ", id="space"),
        pytest.param("1m3", id="suffix-then-digits"),
        pytest.param("1KI", id="wrong-case-binary"),
        pytest.param("1e99999", id="huge-exponent"),
        pytest.param("1" * 200, id="too-long"),
    ],
)
def test_non_quantities_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_quantity(text)


# -- container fields -------------------------------------------------------------------------

FULL_CONTAINER: dict[str, Any] = {
    "command": ["/bin/sh", "-c"],
    "args": ["echo $(GREETING)"],
    "workingDir": "/srv",
    "env": [
        {"name": "GREETING", "value": "hello"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {
            "name": "MEM",
            "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
        },
        {
            "name": "CPU",
            "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1000m"}},
        },
        {
            "name": "MODE",
            "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode", "optional": True}},
        },
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "my.dotted-name with space", "value": "relaxed"},
    ],
    "envFrom": [{"configMapRef": {"name": "cfg"}}, {"prefix": "S_", "secretRef": {"name": "s"}}],
    "resources": {"limits": {"cpu": "1", "memory": "128Mi"}, "requests": {"cpu": 0.5}},
    "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 53, "protocol": "UDP"}],
    "lifecycle": {
        "postStart": {"exec": {"command": ["touch", "/ready"]}},
        "preStop": {"httpGet": {"port": "http", "httpHeaders": [{"name": "X-A", "value": "1"}]}},
    },
}


def test_every_container_field_is_parsed_and_defaulted() -> None:
    pod = parse_pod(pod_text(FULL_CONTAINER))
    (app,) = pod.containers
    assert app.command == ("/bin/sh", "-c")
    assert app.args == ("echo $(GREETING)",)
    assert app.working_dir == "/srv"
    assert app.env == (
        EnvVar("GREETING", "hello"),
        EnvVar("POD", value_from=EnvVarSource(field_ref=ObjectFieldSelector("metadata.name"))),
        EnvVar(
            "APP",
            value_from=EnvVarSource(field_ref=ObjectFieldSelector("metadata.labels['app']")),
        ),
        EnvVar(
            "MEM",
            value_from=EnvVarSource(
                resource_field_ref=ResourceFieldSelector("limits.memory", "", "1Mi")
            ),
        ),
        EnvVar(
            "CPU",
            value_from=EnvVarSource(
                resource_field_ref=ResourceFieldSelector("requests.cpu", "", "1000m")
            ),
        ),
        EnvVar(
            "MODE",
            value_from=EnvVarSource(config_map_key_ref=KeySelector("cfg", "mode", optional=True)),
        ),
        EnvVar("TOKEN", value_from=EnvVarSource(secret_key_ref=KeySelector("creds", "token"))),
        EnvVar("my.dotted-name with space", "relaxed"),
    )
    assert app.env_from == (
        EnvFromSource(config_map_ref=ConfigMapEnvSource("cfg")),
        EnvFromSource("S_", secret_ref=SecretEnvSource("s")),
    )
    assert dict(app.resources.limits) == {"cpu": "1", "memory": "128Mi"}
    assert dict(app.resources.requests) == {"cpu": "0.5"}
    assert app.ports == (ContainerPort(80, "http", "TCP"), ContainerPort(53, "", "UDP"))
    assert app.lifecycle == Lifecycle(
        post_start=LifecycleHandler(exec=ExecAction(("touch", "/ready"))),
        pre_stop=LifecycleHandler(
            http_get=HTTPGetAction("http", "/", "", "HTTP", (HTTPHeader("X-A", "1"),))
        ),
    )
    assert pod.unsupported_fields == ()


def test_absent_fields_keep_their_defaults() -> None:
    (app,) = parse_pod(pod_text()).containers
    assert (app.command, app.args, app.working_dir, app.env, app.env_from, app.ports) == (
        None,
        None,
        "",
        (),
        (),
        (),
    )
    assert app.lifecycle == Lifecycle()
    assert dict(app.resources.limits) == dict(app.resources.requests) == {}


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        pytest.param({"sleep": {"seconds": 5}}, LifecycleHandler(sleep=SleepAction(5)), id="sleep"),
        pytest.param(
            {"sleep": {"seconds": 0}}, LifecycleHandler(sleep=SleepAction(0)), id="sleep-zero"
        ),
        pytest.param(
            {"sleep": {"seconds": 30}},
            LifecycleHandler(sleep=SleepAction(30)),
            id="sleep-grace-period",
        ),
        pytest.param(
            {"httpGet": {"port": 8080, "path": "/quit", "scheme": "HTTPS", "host": "10.0.0.1"}},
            LifecycleHandler(http_get=HTTPGetAction(8080, "/quit", "10.0.0.1", "HTTPS")),
            id="http-get",
        ),
        pytest.param(
            {"tcpSocket": {"port": 9000}},
            LifecycleHandler(tcp_socket=TCPSocketAction(9000)),
            id="deprecated-tcp-socket-accepted",
        ),
    ],
)
def test_lifecycle_handlers(handler: dict[str, Any], expected: LifecycleHandler) -> None:
    (app,) = parse_pod(pod_text({"lifecycle": {"preStop": handler}})).containers
    assert app.lifecycle.pre_stop == expected


def test_a_zero_divisor_reads_as_unset() -> None:
    ref = {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "0"}}
    (app,) = parse_pod(pod_text({"env": [{"name": "C", "valueFrom": ref}]})).containers
    assert app.env[0].value_from == EnvVarSource(
        resource_field_ref=ResourceFieldSelector("limits.cpu")
    )


def test_extended_and_hugepage_resources() -> None:
    resources = {
        "limits": {"example.com/gpu": 2, "hugepages-2Mi": "64Mi", "memory": "1Gi"},
        "requests": {"example.com/gpu": "2", "hugepages-2Mi": "64Mi"},
    }
    (app,) = parse_pod(pod_text({"resources": resources})).containers
    assert dict(app.resources.limits) == {
        "example.com/gpu": "2",
        "hugepages-2Mi": "64Mi",
        "memory": "1Gi",
    }


# -- container validation -------------------------------------------------------------------

C = "spec.containers[0]"


def env(entry: dict[str, Any]) -> dict[str, Any]:
    return {"env": [{"name": "OK", "value": "1"}, {"name": "X", "value": "2"}, entry]}


def value_from(source: dict[str, Any]) -> dict[str, Any]:
    return env({"name": "V", "valueFrom": source})


def lifecycle(handler: Any, hook: str = "preStop") -> dict[str, Any]:
    return {"lifecycle": {hook: handler}}


@pytest.mark.parametrize(
    ("container", "field"),
    [
        pytest.param({"command": "sh"}, f"{C}.command", id="command-not-a-list"),
        pytest.param({"args": ["a", 1]}, f"{C}.args[1]", id="arg-not-a-string"),
        pytest.param({"workingDir": 7}, f"{C}.workingDir", id="working-dir-not-a-string"),
        pytest.param(env({"value": "x"}), f"{C}.env[2].name", id="env-name-required"),
        pytest.param(env({"name": "A=B"}), f"{C}.env[2].name", id="env-name-equals"),
        pytest.param(env({"name": "tab\there"}), f"{C}.env[2].name", id="env-name-control"),
        pytest.param(env({"name": "é"}), f"{C}.env[2].name", id="env-name-non-ascii"),
        pytest.param(env({"name": "N", "value": 5}), f"{C}.env[2].value", id="env-value-number"),
        pytest.param(value_from({}), f"{C}.env[2].valueFrom", id="value-from-empty"),
        pytest.param(
            value_from(
                {
                    "fieldRef": {"fieldPath": "metadata.name"},
                    "secretKeyRef": {"name": "s", "key": "k"},
                }
            ),
            f"{C}.env[2].valueFrom",
            id="value-from-two-sources",
        ),
        pytest.param(
            env(
                {
                    "name": "V",
                    "value": "x",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                }
            ),
            f"{C}.env[2].valueFrom",
            id="value-and-value-from",
        ),
        pytest.param(
            value_from({"fieldRef": {"fieldPath": "status.phase"}}),
            f"{C}.env[2].valueFrom.fieldRef.fieldPath",
            id="field-path-unsupported",
        ),
        pytest.param(
            value_from({"fieldRef": {"fieldPath": "metadata.labels"}}),
            f"{C}.env[2].valueFrom.fieldRef.fieldPath",
            id="field-path-whole-labels",
        ),
        pytest.param(
            value_from({"fieldRef": {}}),
            f"{C}.env[2].valueFrom.fieldRef.fieldPath",
            id="field-path-required",
        ),
        pytest.param(
            value_from({"fieldRef": {"apiVersion": "v2", "fieldPath": "metadata.name"}}),
            f"{C}.env[2].valueFrom.fieldRef.fieldPath",
            id="field-ref-api-version",
        ),
        pytest.param(
            value_from({"fieldRef": {"fieldPath": "spec.nodeName['x']"}}),
            f"{C}.env[2].valueFrom.fieldRef.fieldPath",
            id="field-path-subscript-unsupported",
        ),
        pytest.param(
            value_from({"fieldRef": {"fieldPath": "metadata.labels['-bad-']"}}),
            f"{C}.env[2].valueFrom.fieldRef",
            id="field-path-bad-label-key",
        ),
        pytest.param(
            value_from({"resourceFieldRef": {"resource": "limits.gpu"}}),
            f"{C}.env[2].valueFrom.resourceFieldRef.resource",
            id="resource-unsupported",
        ),
        pytest.param(
            value_from({"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1k"}}),
            f"{C}.env[2].valueFrom.resourceFieldRef.divisor",
            id="cpu-divisor",
        ),
        pytest.param(
            value_from({"resourceFieldRef": {"resource": "limits.memory", "divisor": "1m"}}),
            f"{C}.env[2].valueFrom.resourceFieldRef.divisor",
            id="memory-divisor",
        ),
        pytest.param(
            value_from({"resourceFieldRef": {"resource": "limits.memory", "divisor": "lots"}}),
            f"{C}.env[2].valueFrom.resourceFieldRef.divisor",
            id="divisor-not-a-quantity",
        ),
        pytest.param(
            value_from({"configMapKeyRef": {"name": "cfg"}}),
            f"{C}.env[2].valueFrom.configMapKeyRef.key",
            id="config-map-key-required",
        ),
        pytest.param(
            value_from({"secretKeyRef": {"name": "s", "key": "a/b"}}),
            f"{C}.env[2].valueFrom.secretKeyRef.key",
            id="secret-key-invalid",
        ),
        pytest.param(
            value_from({"secretKeyRef": {"name": "Bad_Name", "key": "k"}}),
            f"{C}.env[2].valueFrom.secretKeyRef.name",
            id="secret-name-invalid",
        ),
        pytest.param({"envFrom": [{}]}, f"{C}.envFrom[0]", id="env-from-no-source"),
        pytest.param(
            {"envFrom": [{"configMapRef": {"name": "a"}, "secretRef": {"name": "b"}}]},
            f"{C}.envFrom[0]",
            id="env-from-two-sources",
        ),
        pytest.param(
            {"envFrom": [{"prefix": "A=", "configMapRef": {"name": "a"}}]},
            f"{C}.envFrom[0].prefix",
            id="env-from-prefix",
        ),
        pytest.param(
            {"envFrom": [{"configMapRef": {}}]},
            f"{C}.envFrom[0].configMapRef.name",
            id="env-from-name-required",
        ),
        pytest.param(
            {"resources": {"limits": {"cpu": "lots"}}},
            f"{C}.resources.limits[cpu]",
            id="limit-not-a-quantity",
        ),
        pytest.param(
            {"resources": {"requests": {"memory": "-1Mi"}}},
            f"{C}.resources.requests[memory]",
            id="negative-request",
        ),
        pytest.param(
            {"resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}},
            f"{C}.resources.requests[cpu]",
            id="request-over-limit",
        ),
        pytest.param(
            {"resources": {"limits": {"gpus": "1"}}},
            f"{C}.resources.limits[gpus]",
            id="non-standard-resource",
        ),
        pytest.param(
            {"resources": {"limits": {"example.com/gpu": "0.5"}}},
            f"{C}.resources.limits[example.com/gpu]",
            id="extended-resource-fraction",
        ),
        pytest.param(
            {"resources": {"requests": {"example.com/gpu": "1"}}},
            f"{C}.resources.limits",
            id="extended-resource-needs-limit",
        ),
        pytest.param(
            {"resources": {"limits": {"cpu": True}}},
            f"{C}.resources.limits[cpu]",
            id="quantity-boolean",
        ),
        pytest.param({"ports": [{}]}, f"{C}.ports[0].containerPort", id="port-required"),
        pytest.param(
            {"ports": [{"containerPort": 70000}]}, f"{C}.ports[0].containerPort", id="port-range"
        ),
        pytest.param(
            {"ports": [{"containerPort": 80, "hostPort": -1}]},
            f"{C}.ports[0].hostPort",
            id="host-port-range",
        ),
        pytest.param(
            {"ports": [{"containerPort": 80, "protocol": "ICMP"}]},
            f"{C}.ports[0].protocol",
            id="port-protocol",
        ),
        pytest.param(
            {"ports": [{"containerPort": 80, "name": "web--1"}]},
            f"{C}.ports[0].name",
            id="port-name-double-hyphen",
        ),
        pytest.param(
            {"ports": [{"containerPort": 80, "name": "12345"}]},
            f"{C}.ports[0].name",
            id="port-name-no-letter",
        ),
        pytest.param(
            {"ports": [{"containerPort": 80, "name": "a" * 16}]},
            f"{C}.ports[0].name",
            id="port-name-too-long",
        ),
        pytest.param(
            {"ports": [{"containerPort": 80, "name": "w"}, {"containerPort": 81, "name": "w"}]},
            f"{C}.ports[1].name",
            id="port-name-duplicate",
        ),
        pytest.param(lifecycle({}), f"{C}.lifecycle.preStop", id="handler-required"),
        pytest.param(
            lifecycle({"exec": {"command": ["a"]}, "sleep": {"seconds": 1}}),
            f"{C}.lifecycle.preStop.sleep",
            id="handler-two-actions",
        ),
        pytest.param(
            lifecycle({"exec": {}}, "postStart"),
            f"{C}.lifecycle.postStart.exec.command",
            id="exec-command-required",
        ),
        pytest.param(
            lifecycle({"httpGet": {"path": "/"}}),
            f"{C}.lifecycle.preStop.httpGet.port",
            id="http-get-port-required",
        ),
        pytest.param(
            lifecycle({"httpGet": {"port": 0}}),
            f"{C}.lifecycle.preStop.httpGet.port",
            id="http-get-port-zero",
        ),
        pytest.param(
            lifecycle({"httpGet": {"port": "8080"}}),
            f"{C}.lifecycle.preStop.httpGet.port",
            id="http-get-port-digits-string",
        ),
        pytest.param(
            lifecycle({"httpGet": {"port": 80, "scheme": "FTP"}}),
            f"{C}.lifecycle.preStop.httpGet.scheme",
            id="http-get-scheme",
        ),
        pytest.param(
            lifecycle({"httpGet": {"port": 80, "httpHeaders": [{"name": "a b", "value": "1"}]}}),
            f"{C}.lifecycle.preStop.httpGet.httpHeaders[0].name",
            id="http-header-name",
        ),
        pytest.param(
            lifecycle({"sleep": {"seconds": -1}}),
            f"{C}.lifecycle.preStop.sleep.seconds",
            id="sleep-negative",
        ),
        pytest.param(
            lifecycle({"sleep": {"seconds": 31}}),
            f"{C}.lifecycle.preStop.sleep.seconds",
            id="sleep-over-grace-period",
        ),
        pytest.param(
            lifecycle({"sleep": {"seconds": "5"}}),
            f"{C}.lifecycle.preStop.sleep.seconds",
            id="sleep-seconds-string",
        ),
        pytest.param(
            lifecycle({"tcpSocket": {"port": 0}}),
            f"{C}.lifecycle.preStop.tcpSocket.port",
            id="tcp-socket-port",
        ),
        pytest.param({"restartPolicy": "Always"}, f"{C}.restartPolicy", id="app-restart-policy"),
    ],
)
def test_invalid_container_fields_name_the_field(container: dict[str, Any], field: str) -> None:
    error = refusal(pod_text(container))
    assert error.field == field
    assert error.file == "pod.yaml (document 1) Pod default/p"


def test_errors_inside_a_list_carry_the_item_prefix() -> None:
    item = json.loads(pod_text(env({"name": "A=B"})))
    error = refusal(json.dumps({"apiVersion": "v1", "kind": "List", "items": [item]}))
    assert error.field == f"items[0].{C}.env[2].name"


# -- pod fields -----------------------------------------------------------------------------


def test_pod_fields_are_parsed() -> None:
    text = pod_text(
        nodeName="node-1",
        hostname="web-0",
        subdomain="web",
        setHostnameAsFQDN=True,
        enableServiceLinks=False,
        restartPolicy="OnFailure",
        terminationGracePeriodSeconds=5,
        overhead={"cpu": "250m", "memory": "120Mi"},
        runtimeClassName="kata.v2",
        ephemeralContainers=[
            {
                "name": "debugger",
                "image": "busybox",
                "command": ["sh"],
                "targetContainerName": "app",
                "stdin": True,
                "tty": True,
            }
        ],
    )
    doc = json.loads(text)
    doc["metadata"]["labels"] = {"app": "web", "example.com/tier": ""}
    doc["spec"]["nodeSelector"] = {"disk": "ssd"}
    pod = parse_pod(json.dumps(doc))
    assert (pod.node_name, pod.hostname, pod.subdomain) == ("node-1", "web-0", "web")
    assert dict(pod.node_selector) == {"disk": "ssd"}
    assert (pod.set_hostname_as_fqdn, pod.enable_service_links) == (True, False)
    assert (pod.restart_policy, pod.termination_grace_period_seconds) == ("OnFailure", 5)
    assert dict(pod.overhead) == {"cpu": "250m", "memory": "120Mi"}
    assert pod.runtime_class_name == "kata.v2"
    assert dict(pod.labels) == {"app": "web", "example.com/tier": ""}
    (debugger,) = pod.ephemeral_containers
    assert (debugger.name, debugger.kind, debugger.command) == (
        "debugger",
        ContainerKind.EPHEMERAL,
        ("sh",),
    )
    assert [c.name for c in pod.all_containers()] == ["app", "debugger"]
    assert pod.unsupported_fields == (
        "spec.ephemeralContainers[0].targetContainerName",
        "spec.ephemeralContainers[0].stdin",
        "spec.ephemeralContainers[0].tty",
    )


def test_pod_defaults() -> None:
    pod = parse_pod(pod_text())
    assert (pod.restart_policy, pod.termination_grace_period_seconds) == ("Always", 30)
    assert (pod.enable_service_links, pod.set_hostname_as_fqdn) == (True, False)
    assert (pod.node_name, pod.hostname, pod.subdomain, pod.runtime_class_name) == (
        "",
        "",
        "",
        None,
    )
    assert dict(pod.labels) == dict(pod.overhead) == {}


def test_a_sidecar_init_container_may_have_lifecycle_hooks() -> None:
    sidecar = {
        "name": "proxy",
        "image": "envoy",
        "restartPolicy": "Always",
        "lifecycle": {"preStop": {"sleep": {"seconds": 2}}},
    }
    pod = parse_pod(pod_text(initContainers=[sidecar]))
    (init,) = pod.init_containers
    assert init.lifecycle.pre_stop == LifecycleHandler(sleep=SleepAction(2))
    assert pod.unsupported_fields == ("spec.initContainers[0].restartPolicy",)


E = "spec.ephemeralContainers[0]"


def ephemeral(**fields: Any) -> str:
    return pod_text(ephemeralContainers=[{"name": "debug", "image": "busybox", **fields}])


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param(
            pod_text(runtimeClassName="Not_A_Valid_Name"),
            "spec.runtimeClassName",
            id="runtime-class-name",
        ),
        pytest.param(pod_text(hostname="Web_0"), "spec.hostname", id="hostname"),
        pytest.param(pod_text(hostname="a.b"), "spec.hostname", id="hostname-dotted"),
        pytest.param(pod_text(subdomain="-web"), "spec.subdomain", id="subdomain"),
        pytest.param(pod_text(nodeName="Node 1"), "spec.nodeName", id="node-name"),
        pytest.param(pod_text(restartPolicy="Sometimes"), "spec.restartPolicy", id="restart"),
        pytest.param(
            pod_text(terminationGracePeriodSeconds=-1),
            "spec.terminationGracePeriodSeconds",
            id="grace-negative",
        ),
        pytest.param(
            pod_text(terminationGracePeriodSeconds="30"),
            "spec.terminationGracePeriodSeconds",
            id="grace-string",
        ),
        pytest.param(
            pod_text(enableServiceLinks="yes"), "spec.enableServiceLinks", id="service-links"
        ),
        pytest.param(
            pod_text(setHostnameAsFQDN=1), "spec.setHostnameAsFQDN", id="hostname-as-fqdn"
        ),
        pytest.param(pod_text(overhead={"cpu": "x"}), "spec.overhead[cpu]", id="overhead"),
        pytest.param(
            pod_text(nodeSelector={"disk": "s s d"}), "spec.nodeSelector[disk]", id="node-selector"
        ),
        pytest.param(
            pod_text(
                {"lifecycle": {"preStop": {"sleep": {"seconds": 10}}}},
                terminationGracePeriodSeconds=5,
            ),
            f"{C}.lifecycle.preStop.sleep.seconds",
            id="sleep-over-custom-grace-period",
        ),
        pytest.param(
            pod_text(
                initContainers=[
                    {"name": "i", "image": "x", "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}
                ]
            ),
            "spec.initContainers[0].lifecycle",
            id="init-lifecycle-without-sidecar",
        ),
        pytest.param(
            pod_text(initContainers=[{"name": "i", "image": "x", "restartPolicy": "Never"}]),
            "spec.initContainers[0].restartPolicy",
            id="init-restart-policy-value",
        ),
        pytest.param(ephemeral(ports=[{"containerPort": 80}]), f"{E}.ports", id="ephemeral-ports"),
        pytest.param(
            ephemeral(resources={"limits": {"cpu": "1"}}),
            f"{E}.resources",
            id="ephemeral-resources",
        ),
        pytest.param(
            ephemeral(lifecycle={"preStop": {"exec": {"command": ["a"]}}}),
            f"{E}.lifecycle",
            id="ephemeral-lifecycle",
        ),
        pytest.param(
            ephemeral(livenessProbe={"exec": {"command": ["a"]}}),
            f"{E}.livenessProbe",
            id="ephemeral-probe",
        ),
        pytest.param(ephemeral(name="app"), f"{E}.name", id="ephemeral-duplicate-name"),
        pytest.param(
            ephemeral(targetContainerName="nope"),
            f"{E}.targetContainerName",
            id="ephemeral-target-not-found",
        ),
    ],
)
def test_invalid_pod_fields_name_the_field(text: str, field: str) -> None:
    error = refusal(text)
    assert error.field == field
    assert error.file == "pod.yaml (document 1) Pod default/p"


def test_invalid_labels_name_the_label() -> None:
    doc = json.loads(pod_text())
    doc["metadata"]["labels"] = {"app": "not a label value"}
    error = refusal(json.dumps(doc))
    assert error.field == "metadata.labels[app]"


# -- unsupported fields ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("container", "spec", "top", "unsupported", "unknown"),
    [
        pytest.param({}, {}, {}, (), (), id="nothing"),
        pytest.param(
            {},
            {"volumes": [{"name": "v", "emptyDir": {}}], "nodeSelector": {"disk": "ssd"}},
            {},
            ("spec.volumes",),
            (),
            id="pod-fields",
        ),
        pytest.param(
            {
                "livenessProbe": {"exec": {"command": ["true"]}},
                "volumeMounts": [{"name": "v", "mountPath": "/v"}],
                "securityContext": {"runAsUser": 1000},
            },
            {},
            {},
            (f"{C}.livenessProbe", f"{C}.volumeMounts", f"{C}.securityContext"),
            (),
            id="container-fields",
        ),
        pytest.param(
            {"ports": [{"containerPort": 80, "hostPort": 8080}]},
            {},
            {},
            (f"{C}.ports[0].hostPort",),
            (),
            id="host-port",
        ),
        pytest.param(
            {"resources": {"claims": [{"name": "gpu"}]}},
            {},
            {},
            (f"{C}.resources.claims",),
            (),
            id="resource-claims",
        ),
        pytest.param(
            {"livenesProbe": {}},
            {"spce": 1},
            {"extra": True},
            ("extra", "spec.spce", f"{C}.livenesProbe"),
            ("extra", "spec.spce", f"{C}.livenesProbe"),
            id="unknown-keys",
        ),
        pytest.param(
            {"env": [{"name": "A", "valu": "x"}]},
            {},
            {},
            (f"{C}.env[0].valu",),
            (f"{C}.env[0].valu",),
            id="unknown-nested-key",
        ),
        pytest.param(
            {
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "securityContext": {},
                "volumeMounts": [],
                "stdin": False,
            },
            {
                "dnsPolicy": "ClusterFirst",
                "schedulerName": "default-scheduler",
                "securityContext": {},
                "hostNetwork": False,
                "priority": 0,
                "hostUsers": True,
                "tolerations": [],
            },
            {"status": {"phase": "Running"}},
            (),
            (),
            id="defaults-and-empties-are-not-reported",
        ),
        pytest.param(
            {"terminationMessagePolicy": "FallbackToLogsOnError"},
            {"dnsPolicy": "Default", "hostUsers": False},
            {},
            ("spec.dnsPolicy", "spec.hostUsers", f"{C}.terminationMessagePolicy"),
            (),
            id="non-defaults-are-reported",
        ),
    ],
)
def test_unsupported_fields_are_listed(
    container: dict[str, Any],
    spec: dict[str, Any],
    top: dict[str, Any],
    unsupported: tuple[str, ...],
    unknown: tuple[str, ...],
) -> None:
    doc = json.loads(pod_text(container, **spec))
    doc.update(top)
    pod = parse_pod(json.dumps(doc))
    assert pod.unsupported_fields == unsupported
    assert pod.unknown_fields == unknown


def test_field_warnings_are_worded_as_the_api_server_would() -> None:
    text = pod_text({"livenessProbe": {"exec": {"command": ["true"]}}}, foo=1)
    assert field_warnings(parse_pod(text)) == (
        'unknown field "spec.foo"',
        f"field not modelled by kubelet-sim: {C}.livenessProbe",
    )


def test_a_hostile_number_of_unknown_keys_is_reported_briefly() -> None:
    doc = json.loads(pod_text())
    doc["spec"].update({f"junk{i}": i for i in range(5000)})
    doc["spec"]["k" * 10_000] = 1
    pod = parse_pod(json.dumps(doc))
    assert len(pod.unsupported_fields) == 100
    assert max(len(path) for path in pod.unsupported_fields) < 200


# -- static pods ----------------------------------------------------------------------------

STATIC = (
    "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: kube-system}}\n"
    "spec:\n  volumes: [{{name: data, hostPath: {{path: /data}}}}]\n"
    "  containers: [{{name: app, image: '{image}', livenessProbe: {{exec: {{command: [x]}}}}}}]\n"
)


def test_static_pods_log_each_unsupported_field_once_per_file() -> None:
    source = StaticPods("node-1")
    file = Path("/m/web.yaml")
    two = STATIC.format(name="a", image="nginx:1") + "---\n" + STATIC.format(name="b", image="x")
    with capture_logs() as logs:
        source.update({file: two.encode()})
        source.update({file: two.encode()})  # unchanged: nothing logged again
        source.update({file: two.replace("nginx:1", "nginx:2").encode()})  # an edit: same fields
    warned = [e for e in logs if e["event"] == "static.unsupported_field"]
    assert [(e["warning"], e["pods"], e["file"]) for e in warned] == [
        (
            "field not modelled by kubelet-sim: spec.volumes",
            ["kube-system/a-node-1", "kube-system/b-node-1"],
            str(file),
        ),
        (
            f"field not modelled by kubelet-sim: {C}.livenessProbe",
            ["kube-system/a-node-1", "kube-system/b-node-1"],
            str(file),
        ),
    ]
    assert {e["log_level"] for e in warned} == {"warning"}
    pod = source.get("kube-system", "a-node-1")
    assert pod is not None
    assert pod.node_name == "node-1"
