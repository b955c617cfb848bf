"""A container's environment, command line and hostname, against upstream's test vectors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import pytest

from kubelet_sim.core.policy import PullPolicy
from kubelet_sim.errors import ContainerConfigError, ContainerRuntimeError
from kubelet_sim.k8s.cluster import ConfigMap, Service, ServicePort
from kubelet_sim.k8s.envvars import (
    INVALID_ENV_NAMES_REASON,
    Environment,
    EnvObjects,
    EnvValue,
    PodNetwork,
    command_and_args,
    expand,
    make_environment,
    runtime_environment,
    service_environment,
)
from kubelet_sim.k8s.hostname import is_dns1123_label, kernel_hostname, pod_hostname
from kubelet_sim.k8s.objects import Container, Pod, Secret
from kubelet_sim.k8s.podspec import (
    ConfigMapEnvSource,
    EnvFromSource,
    EnvVar,
    EnvVarSource,
    KeySelector,
    ObjectFieldSelector,
    ResourceFieldSelector,
    Resources,
    SecretEnvSource,
)
from kubelet_sim.k8s.store import ObjectStore

Pairs = tuple[tuple[str, str], ...]
HOST_IPS = ("127.0.0.1", "::1")  # testKubeletHostIP, testKubeletHostIPv6


class FakeObjects:
    """The object store's side of :class:`EnvObjects`."""

    def __init__(
        self,
        *,
        config_maps: Sequence[ConfigMap] = (),
        secrets: Sequence[Secret] = (),
        services: Sequence[Service] = (),
    ) -> None:
        self._config_maps = {(c.namespace, c.name): c for c in config_maps}
        self._secrets = {(s.namespace, s.name): s for s in secrets}
        self._services = list(services)

    def get_config_map(self, namespace: str, name: str) -> ConfigMap | None:
        return self._config_maps.get((namespace, name))

    def get_secret(self, namespace: str, name: str) -> Secret | None:
        return self._secrets.get((namespace, name))

    def services(self, namespace: str | None = None) -> list[Service]:
        return [s for s in self._services if namespace in (None, s.namespace)]


def svc(name: str, namespace: str, cluster_ip: str, port: int, protocol: str = "TCP") -> Service:
    """``buildService`` in kubelet_pods_test.go."""
    return Service(namespace, name, f"uid-{name}", cluster_ip, (ServicePort(port, "", protocol),))


def config_map(namespace: str, name: str, data: Mapping[str, str]) -> ConfigMap:
    return ConfigMap(namespace, name, f"uid-{name}", MappingProxyType(dict(data)))


def secret(namespace: str, name: str, data: Mapping[str, bytes]) -> Secret:
    return Secret(namespace, name, f"uid-{name}", data=MappingProxyType(dict(data)))


def ctr(
    env: Sequence[EnvVar] = (),
    env_from: Sequence[EnvFromSource] = (),
    *,
    name: str = "c",
    resources: Resources | None = None,
    command: tuple[str, ...] | None = None,
    args: tuple[str, ...] | None = None,
) -> Container:
    return Container(
        name,
        "busybox",
        PullPolicy.IF_NOT_PRESENT,
        command=command,
        args=args,
        env=tuple(env),
        env_from=tuple(env_from),
        resources=resources or Resources(),
    )


def upstream_pod(namespace: str, container: Container, *, links: bool = False) -> Pod:
    """The pod TestMakeEnvironmentVariables builds."""
    return Pod(
        namespace=namespace,
        name="dapi-test-pod-name",
        uid="dapi-test-pod-uid",
        containers=(container,),
        service_account_name="special",
        node_name="node-name",
        enable_service_links=links,
    )


def field(name: str, path: str) -> EnvVar:
    return EnvVar(name, value_from=EnvVarSource(field_ref=ObjectFieldSelector(path)))


def cm_key(name: str, ref: str, key: str, optional: bool = False) -> EnvVar:
    source = EnvVarSource(config_map_key_ref=KeySelector(ref, key, optional))
    return EnvVar(name, value_from=source)


def secret_key(name: str, ref: str, key: str, optional: bool = False) -> EnvVar:
    return EnvVar(name, value_from=EnvVarSource(secret_key_ref=KeySelector(ref, key, optional)))


def from_cm(name: str, prefix: str = "", optional: bool = False) -> EnvFromSource:
    return EnvFromSource(prefix, config_map_ref=ConfigMapEnvSource(name, optional))


def from_secret(name: str, prefix: str = "", optional: bool = False) -> EnvFromSource:
    return EnvFromSource(prefix, secret_ref=SecretEnvSource(name, optional))


def links(prefix: str, ip: str, port: int) -> Pairs:
    """The seven variables FromServices makes for a one-port TCP service."""
    url, base = f"tcp://{ip}:{port}", f"{prefix}_PORT_{port}_TCP"
    return (
        (f"{prefix}_SERVICE_HOST", ip),
        (f"{prefix}_SERVICE_PORT", str(port)),
        (f"{prefix}_PORT", url),
        (base, url),
        (f"{base}_PROTO", "tcp"),
        (f"{base}_PORT", str(port)),
        (f"{base}_ADDR", ip),
    )


def pairs(environment: Environment) -> Pairs:
    return tuple((value.name, value.value) for value in environment.values)


def run(
    pod: Pod,
    objects: EnvObjects,
    *,
    network: PodNetwork | None = None,
    allocatable: Mapping[str, str] | None = None,
    strict: bool = False,
) -> Environment:
    return make_environment(
        pod,
        pod.containers[0],
        objects,
        node_name="node-name",
        network=network or PodNetwork(host_ips=HOST_IPS),
        allocatable=allocatable or {},
        strict_env_names=strict,
    )


# --- TestMakeEnvironmentVariables (pkg/kubelet/kubelet_pods_test.go) ---------------------------

UPSTREAM_SERVICES = (
    svc("kubernetes", "default", "1.2.3.1", 8081),
    svc("test", "test1", "1.2.3.3", 8083),
    svc("kubernetes", "test2", "1.2.3.4", 8084),
    svc("test", "test2", "1.2.3.5", 8085),
    svc("test", "test2", "None", 8085),
    svc("test", "test2", "", 8085),
    svc("not-special", "default", "1.2.3.8", 8088),
    svc("not-special", "default", "None", 8088),
    svc("not-special", "default", "", 8088),
)
KUBERNETES = links("KUBERNETES", "1.2.3.1", 8081)
TEST1 = links("TEST", "1.2.3.3", 8083)
TEST_LINKS_ENV = tuple(EnvVar(name, value) for name, value in TEST1)
EXPANSION_ENV = (
    EnvVar("TEST_LITERAL", "test-test-test"),
    field("POD_NAME", "metadata.name"),
    EnvVar("OUT_OF_ORDER_TEST", "$(OUT_OF_ORDER_TARGET)"),
    EnvVar("OUT_OF_ORDER_TARGET", "FOO"),
    EnvVar("EMPTY_VAR"),
    EnvVar("EMPTY_TEST", "foo-$(EMPTY_VAR)"),
    EnvVar("POD_NAME_TEST2", "test2-$(POD_NAME)"),
    EnvVar("POD_NAME_TEST3", "$(POD_NAME_TEST2)-3"),
    EnvVar("LITERAL_TEST", "literal-$(TEST_LITERAL)"),
)
EXPANDED = (
    ("TEST_LITERAL", "test-test-test"),
    ("POD_NAME", "dapi-test-pod-name"),
    ("POD_NAME_TEST2", "test2-dapi-test-pod-name"),
    ("POD_NAME_TEST3", "test2-dapi-test-pod-name-3"),
    ("LITERAL_TEST", "literal-test-test-test"),
    ("OUT_OF_ORDER_TEST", "$(OUT_OF_ORDER_TARGET)"),
    ("OUT_OF_ORDER_TARGET", "FOO"),
    ("TEST_UNDEFINED", "$(UNDEFINED_VAR)"),
    ("EMPTY_VAR", ""),
    ("EMPTY_TEST", "foo-"),
)
DOWNWARD_ENV = (
    field("POD_NAME", "metadata.name"),
    field("POD_NAMESPACE", "metadata.namespace"),
    field("POD_NODE_NAME", "spec.nodeName"),
    field("POD_SERVICE_ACCOUNT_NAME", "spec.serviceAccountName"),
    field("POD_IP", "status.podIP"),
    field("POD_IPS", "status.podIPs"),
    field("HOST_IP", "status.hostIP"),
    field("HOST_IPS", "status.hostIPs"),
)
IP_ENV = DOWNWARD_ENV[4:]
IPS_EXPECTED = (
    ("POD_IP", "1.2.3.4"),
    ("POD_IPS", "1.2.3.4,fd00::6"),
    ("HOST_IP", "127.0.0.1"),
    ("HOST_IPS", "127.0.0.1,::1"),
)
ENVFROM_ENV = (
    EnvVar("TEST_LITERAL", "test-test-test"),
    EnvVar("EXPANSION_TEST", "$(REPLACE_ME)"),
    EnvVar("DUPE_TEST", "ENV_VAR"),
)
CM_DATA = {"REPLACE_ME": "FROM_CONFIG_MAP", "DUPE_TEST": "CONFIG_MAP"}
SECRET_DATA = {"REPLACE_ME": b"FROM_SECRET", "DUPE_TEST": b"SECRET"}


def envfrom_expected(source: str, prefix: str = "p_") -> Pairs:
    value = "FROM_CONFIG_MAP" if source == "cm" else "FROM_SECRET"
    dupe = "CONFIG_MAP" if source == "cm" else "SECRET"
    return (
        ("TEST_LITERAL", "test-test-test"),
        ("REPLACE_ME", value),
        ("EXPANSION_TEST", value),
        ("DUPE_TEST", "ENV_VAR"),
        (f"{prefix}REPLACE_ME", value),
        (f"{prefix}DUPE_TEST", dupe),
    )


@dataclass(frozen=True)
class EnvCase:
    id: str
    ns: str
    container: Container
    expected: Pairs = ()
    error: str = ""
    links: bool = False
    services: tuple[Service, ...] = UPSTREAM_SERVICES  # () models nilLister
    config_map: ConfigMap | None = None
    secret: Secret | None = None
    pod_ips: tuple[str, ...] = ()
    strict: bool = False
    warning: str = ""


# Ported case by case from TestMakeEnvironmentVariables. Not ported: "if services aren't synced"
# (no informer here) and "nil_enableServiceLinks" (the field is a defaulted bool).
UPSTREAM_CASES = [
    EnvCase(
        "api server = Y, kubelet = Y",
        "test1",
        ctr([EnvVar("FOO", "BAR"), *TEST_LINKS_ENV]),
        (("FOO", "BAR"), *TEST1, *KUBERNETES),
    ),
    EnvCase(
        "api server = Y, kubelet = N",
        "test1",
        ctr([EnvVar("FOO", "BAR"), *TEST_LINKS_ENV]),
        (("FOO", "BAR"), *TEST1),
        services=(),
    ),
    EnvCase(
        "api server = N; kubelet = Y",
        "test1",
        ctr([EnvVar("FOO", "BAZ")]),
        (("FOO", "BAZ"), *KUBERNETES),
    ),
    EnvCase(
        "api server = N; kubelet = Y; service env vars",
        "test1",
        ctr([EnvVar("FOO", "BAZ")]),
        (("FOO", "BAZ"), *TEST1, *KUBERNETES),
        links=True,
    ),
    EnvCase(
        "master service in pod ns",
        "test2",
        ctr([EnvVar("FOO", "ZAP")]),
        (("FOO", "ZAP"), *KUBERNETES),
    ),
    EnvCase(
        "master service in pod ns, service env vars",
        "test2",
        ctr([EnvVar("FOO", "ZAP")]),
        (
            ("FOO", "ZAP"),
            *links("TEST", "1.2.3.5", 8085),
            *links("KUBERNETES", "1.2.3.4", 8084),
        ),
        links=True,
    ),
    EnvCase("pod in master service ns", "default", ctr(), KUBERNETES),
    EnvCase(
        "pod in master service ns, service env vars",
        "default",
        ctr(),
        (*links("NOT_SPECIAL", "1.2.3.8", 8088), *KUBERNETES),
        links=True,
    ),
    EnvCase(
        "downward api pod",
        "downward-api",
        ctr(DOWNWARD_ENV),
        (
            ("POD_NAME", "dapi-test-pod-name"),
            ("POD_NAMESPACE", "downward-api"),
            ("POD_NODE_NAME", "node-name"),
            ("POD_SERVICE_ACCOUNT_NAME", "special"),
            *IPS_EXPECTED,
        ),
        services=(),
        pod_ips=("1.2.3.4", "fd00::6"),
    ),
    EnvCase(
        "downward api pod ips reverse order",
        "downward-api",
        ctr(IP_ENV),
        IPS_EXPECTED,
        services=(),
        pod_ips=("fd00::6", "1.2.3.4"),
    ),
    EnvCase(
        "downward api pod ips multiple ips",
        "downward-api",
        ctr(IP_ENV),
        IPS_EXPECTED,
        services=(),
        pod_ips=("1.2.3.4", "192.168.1.1.", "fd00::6"),
    ),
    EnvCase(
        "env expansion",
        "test1",
        ctr([*EXPANSION_ENV, EnvVar("TEST_UNDEFINED", "$(UNDEFINED_VAR)")]),
        (*EXPANDED, *KUBERNETES),
    ),
    EnvCase(
        "env expansion, service env vars",
        "test1",
        ctr(
            [
                *EXPANSION_ENV,
                EnvVar("SERVICE_VAR_TEST", "$(TEST_SERVICE_HOST):$(TEST_SERVICE_PORT)"),
                EnvVar("TEST_UNDEFINED", "$(UNDEFINED_VAR)"),
            ]
        ),
        (*EXPANDED, ("SERVICE_VAR_TEST", "1.2.3.3:8083"), *TEST1, *KUBERNETES),
        links=True,
    ),
    EnvCase(
        "configmapkeyref_missing_optional",
        "test",
        ctr([cm_key("POD_NAME", "missing-config-map", "key", optional=True)]),
        KUBERNETES,
    ),
    EnvCase(
        "configmapkeyref_missing_key_optional",
        "test",
        ctr([cm_key("POD_NAME", "test-config-map", "key", optional=True)]),
        services=(),
        config_map=config_map("test", "test-config-map", {"a": "b"}),
    ),
    EnvCase(
        "secretkeyref_missing_optional",
        "test",
        ctr([secret_key("POD_NAME", "missing-secret", "key", optional=True)]),
        KUBERNETES,
    ),
    EnvCase(
        "secretkeyref_missing_key_optional",
        "test",
        ctr([secret_key("POD_NAME", "test-secret", "key", optional=True)]),
        services=(),
        secret=secret("test", "test-secret", {"a": b"b"}),
    ),
    EnvCase(
        "configmap",
        "test1",
        ctr(ENVFROM_ENV, [from_cm("test-config-map"), from_cm("test-config-map", "p_")]),
        (*envfrom_expected("cm"), *KUBERNETES),
        config_map=config_map("test1", "test-config-map", CM_DATA),
    ),
    EnvCase(
        "configmap allow prefix to start with a digital",
        "test1",
        ctr(ENVFROM_ENV, [from_cm("test-config-map"), from_cm("test-config-map", "1_")]),
        (*envfrom_expected("cm", "1_"), *KUBERNETES),
        config_map=config_map("test1", "test-config-map", CM_DATA),
    ),
    EnvCase(
        "configmap, service env vars",
        "test1",
        ctr(ENVFROM_ENV, [from_cm("test-config-map"), from_cm("test-config-map", "p_")]),
        (*envfrom_expected("cm"), *TEST1, *KUBERNETES),
        links=True,
        config_map=config_map("test1", "test-config-map", CM_DATA),
    ),
    EnvCase(
        "configmap_missing",
        "test1",
        ctr([], [from_cm("test-config-map")]),
        error='configmap "test-config-map" not found',
    ),
    EnvCase(
        "configmap_missing_optional",
        "test",
        ctr([], [from_cm("missing-config-map", optional=True)]),
        KUBERNETES,
    ),
    EnvCase(
        "configmap_invalid_keys_valid",
        "test",
        ctr([], [from_cm("test-config-map", "p_")]),
        (("p_1234", "abc"), *KUBERNETES),
        config_map=config_map("test", "test-config-map", {"1234": "abc"}),
    ),
    EnvCase(
        "secret",
        "test1",
        ctr(ENVFROM_ENV, [from_secret("test-secret"), from_secret("test-secret", "p_")]),
        (*envfrom_expected("secret"), *KUBERNETES),
        secret=secret("test1", "test-secret", SECRET_DATA),
    ),
    EnvCase(
        "secret, service env vars",
        "test1",
        ctr(ENVFROM_ENV, [from_secret("test-secret"), from_secret("test-secret", "p_")]),
        (*envfrom_expected("secret"), *TEST1, *KUBERNETES),
        links=True,
        secret=secret("test1", "test-secret", SECRET_DATA),
    ),
    EnvCase(
        "secret_missing",
        "test1",
        ctr([], [from_secret("test-secret")]),
        error='secret "test-secret" not found',
    ),
    EnvCase(
        "secret_missing_optional",
        "test",
        ctr([], [from_secret("missing-secret", optional=True)]),
        KUBERNETES,
    ),
    EnvCase(
        "secret_invalid_keys_valid",
        "test",
        ctr([], [from_secret("test-secret", "p_")]),
        (("p_1234.name", "abc"), *KUBERNETES),
        secret=secret("test", "test-secret", {"1234.name": b"abc"}),
    ),
    # Kubelets before 1.30 (KEP-4369) skipped invalid envFrom keys with an event; the same
    # table then (its masterServiceNs "nothing" made no kubernetes service).
    EnvCase(
        "configmap_invalid_keys (before 1.30)",
        "test",
        ctr([], [from_cm("test-config-map")]),
        (("key", "value"),),
        services=(),
        config_map=config_map(
            "test", "test-config-map", {"1234": "abc", "1z": "abc", "key": "value"}
        ),
        strict=True,
        warning="Keys [1234, 1z] from the EnvFrom configMap test/test-config-map were skipped "
        "since they are considered invalid environment variable names.",
    ),
    EnvCase(
        "secret_invalid_keys (before 1.30)",
        "test",
        ctr([], [from_secret("test-secret")]),
        (("key.1", "value"),),
        services=(),
        secret=secret("test", "test-secret", {"1234": b"abc", "1z": b"abc", "key.1": b"value"}),
        strict=True,
        warning="Keys [1234, 1z] from the EnvFrom secret test/test-secret were skipped "
        "since they are considered invalid environment variable names.",
    ),
    EnvCase(
        "configmap_invalid_keys_valid (before 1.30)",
        "test",
        ctr([], [from_cm("test-config-map", "p_")]),
        (("p_1234", "abc"),),
        services=(),
        config_map=config_map("test", "test-config-map", {"1234": "abc"}),
        strict=True,
    ),
]


@pytest.mark.parametrize("case", UPSTREAM_CASES, ids=[c.id for c in UPSTREAM_CASES])
def test_make_environment_upstream_table(case: EnvCase) -> None:
    objects = FakeObjects(
        config_maps=[case.config_map] if case.config_map else [],
        secrets=[case.secret] if case.secret else [],
        services=case.services,
    )
    pod = upstream_pod(case.ns, case.container, links=case.links)
    network = PodNetwork(pod_ips=case.pod_ips, host_ips=HOST_IPS)
    if case.error:
        with pytest.raises(ContainerConfigError) as raised:
            run(pod, objects, network=network, strict=case.strict)
        assert raised.value.message == case.error
        assert raised.value.reason == "CreateContainerConfigError"
        return
    environment = run(pod, objects, network=network, strict=case.strict)
    # Upstream sorts both sides: its order comes from Go maps.
    assert sorted(pairs(environment)) == sorted(case.expected)
    assert environment.warnings == ((case.warning,) if case.warning else ())


def test_invalid_keys_pass_without_strict_names() -> None:
    data = {"1234": "abc", "1z": "abc", "key": "value", "app.invalid": "x"}
    objects = FakeObjects(config_maps=[config_map("test", "cm", data)])
    environment = run(upstream_pod("test", ctr([], [from_cm("cm")])), objects)
    assert pairs(environment) == (
        ("1234", "abc"),
        ("1z", "abc"),
        ("app.invalid", "x"),
        ("key", "value"),
    )
    assert environment.warnings == ()
    assert INVALID_ENV_NAMES_REASON == "InvalidEnvironmentVariableNames"


def test_values_are_sorted_per_group_container_then_services() -> None:
    container = ctr([EnvVar("ZED", "1"), EnvVar("ALPHA", "2"), EnvVar("TEST_SERVICE_HOST", "mine")])
    pod = upstream_pod("test1", container, links=True)
    names = [value.name for value in run(pod, FakeObjects(services=UPSTREAM_SERVICES)).values]
    services = sorted(name for name, _ in (*TEST1, *KUBERNETES) if name != "TEST_SERVICE_HOST")
    assert names == ["ALPHA", "TEST_SERVICE_HOST", "ZED", *services]


def test_env_overrides_env_from_and_later_env_from_wins() -> None:
    objects = FakeObjects(
        config_maps=[
            config_map("ns", "one", {"A": "one", "B": "one"}),
            config_map("ns", "two", {"B": "two"}),
        ],
        secrets=[secret("ns", "s", {"C": b"secret"})],
    )
    container = ctr(
        [EnvVar("A", "env"), EnvVar("C", "$(C)-and-more"), cm_key("D", "missing", "k", True)],
        [from_cm("one"), from_cm("two"), from_secret("s")],
    )
    environment = run(upstream_pod("ns", container), objects)
    assert pairs(environment) == (("A", "env"), ("B", "two"), ("C", "secret-and-more"))


def test_optional_miss_keeps_env_from_value() -> None:
    # A skipped optional valueFrom leaves the name as envFrom set it (upstream `continue`s).
    objects = FakeObjects(config_maps=[config_map("ns", "cm", {"X": "from-env-from"})])
    container = ctr([secret_key("X", "nope", "k", optional=True)], [from_cm("cm")])
    assert pairs(run(upstream_pod("ns", container), objects)) == (("X", "from-env-from"),)


def test_secret_flag_follows_the_value() -> None:
    objects = FakeObjects(
        config_maps=[config_map("ns", "cm", {"PLAIN": "p"})],
        secrets=[secret("ns", "s", {"TOKEN": b"t0k", "OTHER": b"o"})],
    )
    container = ctr(
        [
            secret_key("KEY", "s", "TOKEN"),
            EnvVar("USES_TOKEN", "Bearer $(TOKEN)"),
            EnvVar("USES_PLAIN", "$(PLAIN)"),
            EnvVar("OTHER", "literal"),
        ],
        [from_cm("cm"), from_secret("s")],
    )
    flags = {v.name: v.secret for v in run(upstream_pod("ns", container), objects).values}
    assert flags == {
        "KEY": True,
        "TOKEN": True,
        "USES_TOKEN": True,
        "PLAIN": False,
        "USES_PLAIN": False,
        "OTHER": False,  # a literal replaced the Secret's value
    }


def test_env_value_repr_hides_secret_values() -> None:
    assert "t0k" not in repr(EnvValue("KEY", "t0k", secret=True))
    assert repr(EnvValue("A", "b")) == "EnvValue(name='A', value='b', secret=False)"


# --- TestFromServices (pkg/kubelet/envvars/envvars_test.go) -------------------------------------

FOO_BAR = links("FOO_BAR", "1.2.3.4", 8080)
ABC_123 = (
    ("ABC_123_SERVICE_HOST", "5.6.7.8"),
    ("ABC_123_SERVICE_PORT", "8081"),
    ("ABC_123_SERVICE_PORT_U_D_P", "8081"),
    ("ABC_123_SERVICE_PORT_T_C_P", "8081"),
    ("ABC_123_PORT", "udp://5.6.7.8:8081"),
    ("ABC_123_PORT_8081_UDP", "udp://5.6.7.8:8081"),
    ("ABC_123_PORT_8081_UDP_PROTO", "udp"),
    ("ABC_123_PORT_8081_UDP_PORT", "8081"),
    ("ABC_123_PORT_8081_UDP_ADDR", "5.6.7.8"),
    ("ABC_123_PORT_8081_TCP", "tcp://5.6.7.8:8081"),
    ("ABC_123_PORT_8081_TCP_PROTO", "tcp"),
    ("ABC_123_PORT_8081_TCP_PORT", "8081"),
    ("ABC_123_PORT_8081_TCP_ADDR", "5.6.7.8"),
)
Q_U_U_X = (
    ("Q_U_U_X_SERVICE_HOST", "9.8.7.6"),
    ("Q_U_U_X_SERVICE_PORT", "8082"),
    ("Q_U_U_X_SERVICE_PORT_8083", "8083"),
    ("Q_U_U_X_PORT", "tcp://9.8.7.6:8082"),
    ("Q_U_U_X_PORT_8082_TCP", "tcp://9.8.7.6:8082"),
    ("Q_U_U_X_PORT_8082_TCP_PROTO", "tcp"),
    ("Q_U_U_X_PORT_8082_TCP_PORT", "8082"),
    ("Q_U_U_X_PORT_8082_TCP_ADDR", "9.8.7.6"),
    ("Q_U_U_X_PORT_8083_TCP", "tcp://9.8.7.6:8083"),
    ("Q_U_U_X_PORT_8083_TCP_PROTO", "tcp"),
    ("Q_U_U_X_PORT_8083_TCP_PORT", "8083"),
    ("Q_U_U_X_PORT_8083_TCP_ADDR", "9.8.7.6"),
)


def test_from_services_upstream_vector() -> None:
    services = [
        Service("ns", "foo-bar", "u1", "1.2.3.4", (ServicePort(8080, "", "TCP"),)),
        Service(
            "ns",
            "abc-123",
            "u2",
            "5.6.7.8",
            (ServicePort(8081, "u-d-p", "UDP"), ServicePort(8081, "t-c-p", "TCP")),
        ),
        Service(
            "ns", "q-u-u-x", "u3", "9.8.7.6", (ServicePort(8082, ""), ServicePort(8083, "8083"))
        ),
        Service("ns", "svrc-clusterip-none", "u4", "None", (ServicePort(8082),)),
        Service("ns", "svrc-clusterip-empty", "u5", "", (ServicePort(8082),)),
    ]
    values = service_environment(services, "ns", enable_service_links=True)
    # Each service's variables in FromServices order; services by name (upstream: a Go map).
    assert tuple((v.name, v.value) for v in values) == (*ABC_123, *FOO_BAR, *Q_U_U_X)


@pytest.mark.parametrize(
    ("namespace", "enable", "expected"),
    [
        pytest.param("default", False, KUBERNETES, id="default-ns-links-off"),
        pytest.param("test2", False, KUBERNETES, id="master-only-when-links-off"),
        pytest.param(
            "test2",
            True,
            (*links("KUBERNETES", "1.2.3.4", 8084), *links("TEST", "1.2.3.5", 8085)),
            id="pod-namespace-kubernetes-wins",
        ),
        pytest.param("empty", True, KUBERNETES, id="namespace-without-services"),
    ],
)
def test_service_environment_precedence(namespace: str, enable: bool, expected: Pairs) -> None:
    for services in (UPSTREAM_SERVICES, tuple(reversed(UPSTREAM_SERVICES))):
        values = service_environment(services, namespace, enable)
        assert tuple((v.name, v.value) for v in values) == expected


# --- expand_test.go (third_party/forked/golang/expansion) ---------------------------------------

EXPANSION_VECTORS = [
    ("whole string", "$(VAR_A)", "A"),
    ("repeat", "$(VAR_A)-$(VAR_A)", "A-A"),
    ("beginning", "$(VAR_A)-1", "A-1"),
    ("middle", "___$(VAR_B)___", "___B___"),
    ("end", "___$(VAR_C)", "___C"),
    ("compound", "$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
    ("escape & expand", "$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
    ("compound escape", "$$(VAR_A)_$$(VAR_B)", "$(VAR_A)_$(VAR_B)"),
    ("mixed in escapes", "f000-$$VAR_A", "f000-$VAR_A"),
    ("backslash escape ignored", "foo\\$(VAR_C)bar", "foo\\Cbar"),
    ("backslash escape ignored 2", "foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
    ("lots of backslashes", "foo\\\\\\\\$(VAR_A)bar", "foo\\\\\\\\Abar"),
    ("nested var references", "$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
    ("nested var references second type", "$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),
    ("value is a reference", "$(VAR_REF)", "$(VAR_A)"),
    ("value is a reference x 2", "%%$(VAR_REF)--$(VAR_REF)%%", "%%$(VAR_A)--$(VAR_A)%%"),
    ("empty var", "foo$(VAR_EMPTY)bar", "foobar"),
    ("unterminated expression", "foo$(VAR_Awhoops!", "foo$(VAR_Awhoops!"),
    ("expression without operator", "f00__(VAR_A)__", "f00__(VAR_A)__"),
    ("shell special vars pass through", "$?_boo_$!", "$?_boo_$!"),
    ("bare operators are ignored", "$VAR_A", "$VAR_A"),
    ("undefined vars are passed through", "$(VAR_DNE)", "$(VAR_DNE)"),
    ("multiple (even) operators, var undefined", "$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
    ("multiple (even) operators, var defined", "$$$$$$(VAR_A)", "$$$(VAR_A)"),
    ("multiple (odd) operators, var undefined", "$$$$$$$(GOOD_ODDS)", "$$$$(GOOD_ODDS)"),
    ("multiple (odd) operators, var defined", "$$$$$$$(VAR_A)", "$$$A"),
    ("missing open expression", "$VAR_A)", "$VAR_A)"),
    ("shell syntax ignored", "${VAR_A}", "${VAR_A}"),
    ("trailing incomplete expression not consumed", "$(VAR_B)_______$(A", "B_______$(A"),
    ("trailing incomplete expression, no content", "$(VAR_C)_______$(", "C_______$("),
    ("operator at end of input string is preserved", "$(VAR_A)foobarzab$", "Afoobarzab$"),
    ("shell escaped incomplete expr", "foo-\\$(VAR_A", "foo-\\$(VAR_A"),
    ("lots of $( in middle", "--$($($($($--", "--$($($($($--"),
    ("lots of $( in beginning", "$($($($($--foo$(", "$($($($($--foo$("),
    ("lots of $( at end", "foo0--$($($($(", "foo0--$($($($("),
    ("escaped operators in variable names are not escaped", "$(foo$$var)", "$(foo$$var)"),
    ("newline not expanded", "\n", "\n"),
    # Not upstream's table: the rune-aware fork keeps a multi-byte character after "$" whole.
    ("operator before a multi-byte rune", "$é$(VAR_A)", "$éA"),
]
SINGLE = {"VAR_A": "A", "VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)", "VAR_EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [pytest.param(text, expected, id=name) for name, text, expected in EXPANSION_VECTORS],
)
@pytest.mark.parametrize(
    "mappings",
    [
        pytest.param((SINGLE,), id="TestMapping"),
        pytest.param(
            (
                {"VAR_A": "A", "VAR_EMPTY": ""},
                {"VAR_B": "B", "VAR_C": "C", "VAR_REF": "$(VAR_A)"},
            ),
            id="TestMappingDual",
        ),
    ],
)
def test_expand_upstream_vectors(
    text: str, expected: str, mappings: tuple[Mapping[str, str], ...]
) -> None:
    assert expand(text, *mappings) == expected


def test_expand_map_reference() -> None:
    # TestMapReference: each value expands against the ones declared before it.
    declared = {"FOO": "bar", "ZOO": "$(FOO)-1", "BLU": "$(ZOO)-2"}
    for name in ("FOO", "ZOO", "BLU"):
        declared[name] = expand(declared[name], declared, {})
    assert declared == {"FOO": "bar", "ZOO": "bar-1", "BLU": "bar-1-2"}


def test_expand_first_mapping_wins() -> None:
    assert expand("$(X)", {"X": "first"}, {"X": "second"}) == "first"


# --- fieldRef: ConvertDownwardAPIFieldLabel, ExtractFieldPathAsString ----------------------------


def labelled_pod(container: Container) -> Pod:
    return Pod(
        namespace="ns",
        name="web-0",
        uid="1234-uid",
        containers=(container,),
        labels=MappingProxyType({"app": "web", "tier": 'front "end"'}),
        annotations=MappingProxyType({"b": "two\nlines", "a": "x\ty", "example.com/Key": "v"}),
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("metadata.uid", "1234-uid", id="uid"),
        pytest.param("metadata.labels", 'app="web"\ntier="front \\"end\\""', id="labels"),
        pytest.param(
            "metadata.annotations",
            'a="x\\ty"\nb="two\\nlines"\nexample.com/Key="v"',
            id="annotations-go-quoted-in-key-order",
        ),
        pytest.param("metadata.labels['app']", "web", id="label-subscript"),
        pytest.param("metadata.labels['absent']", "", id="absent-label-is-empty"),
        pytest.param("metadata.annotations['example.com/Key']", "v", id="annotation-subscript"),
        pytest.param("spec.host", "node-name", id="spec-host-is-node-name"),
        pytest.param("spec.nodeName", "node-name", id="node-name-from-kubelet"),
        pytest.param("spec.serviceAccountName", "default", id="service-account"),
        pytest.param("status.podIP", "", id="no-pod-ip-yet"),
    ],
)
def test_field_ref_values(path: str, expected: str) -> None:
    pod = labelled_pod(ctr([field("V", path)]))
    assert pairs(run(pod, FakeObjects())) == (("V", expected),)


@pytest.mark.parametrize(
    ("pod_ips", "host_ips", "pod_ip", "pod_ips_text", "host_ips_text"),
    [
        pytest.param(("fd00::6",), HOST_IPS, "fd00::6", "fd00::6", "127.0.0.1,::1", id="v6-only"),
        pytest.param(
            ("1.2.3.4", "fd00::6"),
            ("::1", "127.0.0.1"),
            "fd00::6",
            "fd00::6,1.2.3.4",
            "::1,127.0.0.1",
            id="ipv6-node-prefers-ipv6",
        ),
        pytest.param(
            ("1.2.3.4",),
            ("bogus", "10.0.0.1", "10.0.0.2"),
            "1.2.3.4",
            "1.2.3.4",
            "10.0.0.1",
            id="invalid-node-ip-skipped-one-per-family",
        ),
    ],
)
def test_ip_fields_follow_the_node_family(
    pod_ips: tuple[str, ...],
    host_ips: tuple[str, ...],
    pod_ip: str,
    pod_ips_text: str,
    host_ips_text: str,
) -> None:
    pod = upstream_pod("ns", ctr(IP_ENV))
    env = dict(pairs(run(pod, FakeObjects(), network=PodNetwork(pod_ips, host_ips))))
    assert (env["POD_IP"], env["POD_IPS"], env["HOST_IPS"]) == (pod_ip, pod_ips_text, host_ips_text)


# --- resourceFieldRef: TestExtractResourceValue (pkg/api/v1/resource/helpers_test.go) -----------


def resources(
    cpu_request: str = "", cpu_limit: str = "", memory_request: str = "", memory_limit: str = ""
) -> Resources:
    """``defineResources`` in helpers_test.go."""
    limits = {k: v for k, v in (("cpu", cpu_limit), ("memory", memory_limit)) if v}
    requests = {k: v for k, v in (("cpu", cpu_request), ("memory", memory_request)) if v}
    return Resources(MappingProxyType(limits), MappingProxyType(requests))


def resource_pod(reference: ResourceFieldSelector, container_resources: Resources) -> Pod:
    """``getPod``: an app container ``foo`` and an init container ``init-foo``, same resources."""
    app = ctr(
        [EnvVar("V", value_from=EnvVarSource(resource_field_ref=reference))],
        name="foo",
        resources=container_resources,
    )
    init = ctr(name="init-foo", resources=container_resources)
    return Pod("ns", "p", "uid", containers=(app,), init_containers=(init,))


RESOURCE_VECTORS = [
    ("limits.cpu", "", "foo", resources(cpu_limit="9"), "9"),
    ("requests.cpu", "", "foo", resources(), "0"),
    ("requests.cpu", "", "foo", resources(cpu_request="8"), "8"),
    ("requests.cpu", "", "foo", resources(cpu_request="100m"), "1"),
    ("requests.cpu", "100m", "foo", resources(cpu_request="1200m"), "12"),
    ("requests.memory", "", "foo", resources(memory_request="100Mi"), "104857600"),
    ("requests.memory", "1Mi", "foo", resources(memory_request="100Mi", memory_limit="1Gi"), "100"),
    (
        "limits.memory",
        "",
        "foo",
        resources(memory_request="10Mi", memory_limit="100Mi"),
        "104857600",
    ),
    ("limits.cpu", "", "init-foo", resources(cpu_limit="9"), "9"),
    ("requests.cpu", "", "init-foo", resources(), "0"),
    ("requests.cpu", "", "init-foo", resources(cpu_request="8"), "8"),
    ("requests.cpu", "", "init-foo", resources(cpu_request="100m"), "1"),
    ("requests.cpu", "100m", "init-foo", resources(cpu_request="1200m"), "12"),
    ("requests.memory", "", "init-foo", resources(memory_request="100Mi"), "104857600"),
    (
        "requests.memory",
        "1Mi",
        "init-foo",
        resources(memory_request="100Mi", memory_limit="1Gi"),
        "100",
    ),
    (
        "limits.memory",
        "",
        "init-foo",
        resources(memory_request="10Mi", memory_limit="100Mi"),
        "104857600",
    ),
    ("requests.cpu", "1n", "foo", resources(cpu_request="1m"), "1000000"),
    ("requests.cpu", "1u", "foo", resources(cpu_request="1m"), "1000"),
    ("requests.memory", "0", "foo", resources(memory_request="100Mi"), "104857600"),
]


@pytest.mark.parametrize(
    ("resource", "divisor", "container_name", "container_resources", "expected"),
    [
        pytest.param(*vector, id=f"{i}-{vector[0]}-{vector[2]}")
        for i, vector in enumerate(RESOURCE_VECTORS)
    ],
)
def test_resource_field_ref_upstream_vectors(
    resource: str, divisor: str, container_name: str, container_resources: Resources, expected: str
) -> None:
    reference = ResourceFieldSelector(resource, container_name, divisor)
    assert pairs(run(resource_pod(reference, container_resources), FakeObjects())) == (
        ("V", expected),
    )


# TestConvertQuantityToStringBounds, the cases a Fraction can hold (not 1e1000000 or 8e2147483647).
@pytest.mark.parametrize(
    ("quantity", "divisor", "expected"),
    [
        pytest.param("100E", "1", str(2**63 - 1), id="value just past int64 saturates"),
        pytest.param("100Mi", "1Mi", "100", id="ordinary ratio is unaffected"),
        pytest.param("1500m", "1", "2", id="ordinary ceiling is unaffected"),
        pytest.param("9223372036854775808", "1", str(2**63 - 1), id="one past int64 saturates"),
        pytest.param("10E", "1", str(2**63 - 1), id="10E saturates"),
        pytest.param("7e19", "1", str(2**63 - 1), id="below the shortcut but past int64"),
        pytest.param("8e19", "1", str(2**63 - 1), id="above the shortcut and past int64"),
    ],
)
def test_resource_quantity_bounds(quantity: str, divisor: str, expected: str) -> None:
    reference = ResourceFieldSelector("limits.memory", "", divisor)
    pod = resource_pod(reference, resources(memory_limit=quantity))
    assert pairs(run(pod, FakeObjects())) == (("V", expected),)


ALLOCATABLE = {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi"}


@pytest.mark.parametrize(
    ("resource", "divisor", "container_name", "container_resources", "expected"),
    [
        pytest.param("limits.cpu", "", "", resources(cpu_limit="500m"), "1", id="500m-rounds-up"),
        pytest.param("limits.cpu", "1m", "", resources(cpu_limit="500m"), "500", id="millicores"),
        pytest.param("limits.cpu", "", "", resources(), "4", id="no-limit-is-allocatable"),
        pytest.param(
            "limits.cpu", "", "", resources(cpu_limit="0"), "4", id="zero-limit-is-allocatable"
        ),
        pytest.param("limits.memory", "1Mi", "", resources(), "8192", id="memory-from-allocatable"),
        pytest.param(
            "limits.ephemeral-storage", "1Gi", "", resources(), "100", id="ephemeral-storage"
        ),
        pytest.param("requests.cpu", "", "", resources(), "0", id="requests-never-allocatable"),
        pytest.param(
            "requests.cpu",
            "1m",
            "",
            resources(cpu_limit="2"),
            "2000",
            id="request-defaults-to-limit",
        ),
        pytest.param("limits.cpu", "", "foo", resources(), "4", id="named-app-container-merged"),
        pytest.param(
            "limits.cpu", "", "init-foo", resources(), "0", id="named-init-container-not-merged"
        ),
        pytest.param(
            "limits.memory", "", "", resources(memory_limit="1.5"), "2", id="fractional-bytes-ceil"
        ),
    ],
)
def test_resource_field_ref_allocatable(
    resource: str, divisor: str, container_name: str, container_resources: Resources, expected: str
) -> None:
    reference = ResourceFieldSelector(resource, container_name, divisor)
    pod = resource_pod(reference, container_resources)
    assert pairs(run(pod, FakeObjects(), allocatable=ALLOCATABLE)) == (("V", expected),)


def test_hugepages_resource() -> None:
    limits = MappingProxyType({"hugepages-2Mi": "4Mi"})
    reference = ResourceFieldSelector("limits.hugepages-2Mi", "", "1Mi")
    pod = resource_pod(reference, Resources(limits, MappingProxyType({})))
    assert pairs(run(pod, FakeObjects(), allocatable=ALLOCATABLE)) == (("V", "4"),)


# --- errors: upstream's messages, and never a value --------------------------------------------

SECRET_VALUE = "hunter2-DO-NOT-LEAK"
ERROR_OBJECTS = FakeObjects(
    config_maps=[config_map("ns", "cm", {"present": "v"})],
    secrets=[secret("ns", "db", {"password": SECRET_VALUE.encode()})],
)


@pytest.mark.parametrize(
    ("env", "env_from", "message"),
    [
        pytest.param([], [from_cm("x")], 'configmap "x" not found', id="env-from-configmap"),
        pytest.param([], [from_secret("x")], 'secret "x" not found', id="env-from-secret"),
        pytest.param([cm_key("V", "x", "k")], [], 'configmap "x" not found', id="configmap-ref"),
        pytest.param(
            [cm_key("V", "cm", "k")],
            [],
            "couldn't find key k in ConfigMap ns/cm",
            id="configmap-key",
        ),
        pytest.param([secret_key("V", "x", "k")], [], 'secret "x" not found', id="secret-ref"),
        pytest.param(
            [secret_key("V", "db", "user")],
            [],
            "couldn't find key user in Secret ns/db",
            id="secret-key",
        ),
        pytest.param(
            [field("V", "spec.restartPolicy")],
            [],
            "unsupported fieldPath: spec.restartPolicy",
            id="known-label-kubelet-cannot-resolve",
        ),
        pytest.param(
            [field("V", "status.phase")],
            [],
            "unsupported fieldPath: status.phase",
            id="status-phase",
        ),
        pytest.param(
            [field("V", "spec.containers")],
            [],
            "field label not supported: spec.containers",
            id="unknown-label",
        ),
        pytest.param(
            [field("V", "metadata.name['x']")],
            [],
            "field label does not support subscript: metadata.name['x']",
            id="bad-subscript-path",
        ),
        pytest.param(
            [
                EnvVar(
                    "V",
                    value_from=EnvVarSource(field_ref=ObjectFieldSelector("metadata.name", "v2")),
                )
            ],
            [],
            "unsupported pod version: v2",
            id="api-version",
        ),
        pytest.param(
            [field("V", "status.hostIP")],
            [],
            "host IP unknown; known addresses: []",
            id="no-host-ip",
        ),
        pytest.param(
            [
                EnvVar(
                    "V",
                    value_from=EnvVarSource(resource_field_ref=ResourceFieldSelector("limits.gpu")),
                )
            ],
            [],
            "unsupported container resource : limits.gpu",
            id="unsupported-resource",
        ),
        pytest.param(
            [
                EnvVar(
                    "V",
                    value_from=EnvVarSource(
                        resource_field_ref=ResourceFieldSelector("limits.cpu", "nope")
                    ),
                )
            ],
            [],
            "container nope not found",
            id="unknown-container",
        ),
    ],
)
def test_errors_carry_upstream_messages(
    env: list[EnvVar], env_from: list[EnvFromSource], message: str
) -> None:
    # The Secret is read first, so its value is in hand when the error is raised.
    pod = upstream_pod("ns", ctr([secret_key("PW", "db", "password"), *env], env_from))
    with pytest.raises(ContainerConfigError) as raised:
        make_environment(
            pod,
            pod.containers[0],
            ERROR_OBJECTS,
            node_name="n",
            network=PodNetwork(),
            allocatable={},
        )
    assert raised.value.message == message
    assert SECRET_VALUE not in str(raised.value)
    assert SECRET_VALUE not in repr(raised.value)


def test_bad_quantity_names_the_field() -> None:
    reference = ResourceFieldSelector("limits.cpu", "", "")
    pod = resource_pod(reference, resources(cpu_limit="lots"))
    with pytest.raises(ContainerConfigError) as raised:
        run(pod, FakeObjects())
    assert raised.value.message.startswith("limits.cpu: quantities must match")


def test_object_store_provides_env_objects() -> None:
    store = ObjectStore()
    objects: EnvObjects = store
    (kubernetes,) = [
        s for s in objects.services() if (s.namespace, s.name) == ("default", "kubernetes")
    ]
    env = dict(pairs(run(upstream_pod("ns", ctr()), objects)))
    assert env["KUBERNETES_SERVICE_HOST"] == kubernetes.cluster_ip
    assert objects.get_config_map("ns", "cm") is None


def test_invalid_label_subscript_names_the_path() -> None:
    pod = labelled_pod(ctr([field("V", "metadata.labels['-bad']")]))
    with pytest.raises(ContainerConfigError) as raised:
        run(pod, FakeObjects())
    assert raised.value.message.startswith(
        "invalid key subscript in metadata.labels['-bad']: name part"
    )


def test_secret_values_only_in_values() -> None:
    pod = upstream_pod("ns", ctr([secret_key("PW", "db", "password")], [from_secret("db")]))
    environment = run(pod, ERROR_OBJECTS)
    assert SECRET_VALUE not in repr(environment)
    assert all(value.secret for value in environment.values)
    assert {value.value for value in environment.values} == {SECRET_VALUE}


# --- command and args: ExpandContainerCommandAndArgs + containerd WithProcessArgs ---------------

ENV = (EnvValue("GREETING", "hello"), EnvValue("WHO", "world"))


@pytest.mark.parametrize(
    ("command", "args", "entrypoint", "cmd", "expected"),
    [
        pytest.param(
            None, None, ("/ep",), ("cmd1", "cmd2"), ("/ep", "cmd1", "cmd2"), id="image-both"
        ),
        pytest.param(
            ("/bin/sh", "-c"), None, ("/ep",), ("cmd1",), ("/bin/sh", "-c"), id="command-drops-cmd"
        ),
        pytest.param(
            ("/bin/echo",),
            ("$(GREETING)",),
            ("/ep",),
            ("c",),
            ("/bin/echo", "hello"),
            id="command-and-args",
        ),
        pytest.param(
            None,
            ("$(WHO)", "$$(WHO)"),
            ("/ep",),
            ("c",),
            ("/ep", "world", "$(WHO)"),
            id="args-after-entrypoint",
        ),
        pytest.param(None, None, (), ("/bin/true",), ("/bin/true",), id="cmd-only-image"),
        pytest.param(
            None, None, ("",), ("/bin/true",), ("/bin/true",), id="empty-string-entrypoint"
        ),
        pytest.param((), (), ("/ep",), ("c",), ("/ep", "c"), id="empty-lists-are-unset"),
        pytest.param(("$(UNDEFINED)",), None, (), (), ("$(UNDEFINED)",), id="undefined-stays"),
    ],
)
def test_command_and_args(
    command: tuple[str, ...] | None,
    args: tuple[str, ...] | None,
    entrypoint: tuple[str, ...],
    cmd: tuple[str, ...],
    expected: tuple[str, ...],
) -> None:
    assert command_and_args(ctr(command=command, args=args), entrypoint, cmd, ENV) == expected


def test_command_expansion_uses_last_duplicate() -> None:
    env = (EnvValue("X", "first"), EnvValue("X", "last"))
    assert command_and_args(ctr(command=("$(X)",)), (), (), env) == ("last",)


def test_nothing_to_run() -> None:
    with pytest.raises(ContainerRuntimeError) as raised:
        command_and_args(ctr(name="app"), ("",), (), ENV)
    assert raised.value.container == "app"
    assert raised.value.message == "no command specified"


# --- runtime env: containerd container_create.go + oci.WithEnv, runc prepareEnv -----------------

DEFAULT_PATH = ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


@pytest.mark.parametrize(
    ("image_env", "values", "expected"),
    [
        pytest.param((), (), (DEFAULT_PATH, ("HOSTNAME", "pod-0")), id="defaults"),
        pytest.param(
            ("PATH=/image/bin", "LANG=C"),
            (EnvValue("A", "1"),),
            (("PATH", "/image/bin"), ("HOSTNAME", "pod-0"), ("LANG", "C"), ("A", "1")),
            id="image-path-replaces-default-in-place",
        ),
        pytest.param(
            ("FOO=image", "BAR=x"),
            (EnvValue("FOO", "container"),),
            (DEFAULT_PATH, ("HOSTNAME", "pod-0"), ("BAR", "x"), ("FOO", "container")),
            id="container-wins-at-its-position",
        ),
        pytest.param(
            ("HOSTNAME=from-image",),
            (EnvValue("HOSTNAME", "mine"),),
            (DEFAULT_PATH, ("HOSTNAME", "mine")),
            id="container-hostname-wins",
        ),
        pytest.param(
            ("HOSTNAME=from-image",),
            (),
            (DEFAULT_PATH, ("HOSTNAME", "from-image")),
            id="image-hostname",
        ),
        pytest.param(("PATH",), (), (("HOSTNAME", "pod-0"),), id="bare-key-unsets-default"),
        pytest.param(
            ("NOPE",), (), (DEFAULT_PATH, ("HOSTNAME", "pod-0")), id="bare-unknown-key-ignored"
        ),
        pytest.param(
            ("EQ=a=b",),
            (EnvValue("EMPTY", ""),),
            (DEFAULT_PATH, ("HOSTNAME", "pod-0"), ("EQ", "a=b"), ("EMPTY", "")),
            id="values-keep-equals-and-empty",
        ),
    ],
)
def test_runtime_environment(
    image_env: tuple[str, ...], values: tuple[EnvValue, ...], expected: Pairs
) -> None:
    assert runtime_environment(image_env, values, "pod-0") == expected


# --- hostname: GeneratePodHostNameAndDomain, truncatePodHostnameIfNeeded, GetNodenameForKernel ---


def host_pod(
    name: str, hostname: str = "", subdomain: str = "", fqdn: bool = False, namespace: str = "ns"
) -> Pod:
    return Pod(
        namespace=namespace,
        name=name,
        uid="u",
        containers=(ctr(),),
        hostname=hostname,
        subdomain=subdomain,
        set_hostname_as_fqdn=fqdn,
    )


# TestTruncatePodHostname (kubelet_pods_test.go), through a pod of that name.
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("test.pod.hostname", "test.pod.hostname", id="valid hostname"),
        pytest.param("1234567." * 9, "1234567." * 7 + "1234567", id="too long hostname"),
        pytest.param(
            "1234567." * 7 + "123456.1234567.", "1234567." * 7 + "123456", id="hostname end with ."
        ),
        pytest.param(
            "1234567." * 7 + "123456-1234567.", "1234567." * 7 + "123456", id="hostname end with -"
        ),
    ],
)
def test_truncate_pod_hostname(name: str, expected: str) -> None:
    assert pod_hostname(host_pod(name), "cluster.local") == (expected, "")


# TestGetNodenameForKernel (pkg/kubelet/util/util_test.go).
@pytest.mark.parametrize(
    ("hostname", "domain", "fqdn", "expected"),
    [
        pytest.param(
            "test.pod.hostname", "", False, "test.pod.hostname", id="no hostDomain, false"
        ),
        pytest.param("test.pod.hostname", "", True, "test.pod.hostname", id="no hostDomain, true"),
        pytest.param(
            "test.pod.hostname",
            "svc.subdomain.local",
            False,
            "test.pod.hostname",
            id="valid hostDomain, false",
        ),
        pytest.param(
            "test.pod.hostname",
            "svc.subdomain.local",
            True,
            "test.pod.hostname.svc.subdomain.local",
            id="valid hostDomain, true",
        ),
        pytest.param(
            "1234567.1234567",
            "1234567." * 6 + "1234567",
            False,
            "1234567.1234567",
            id="FQDN is too long, false",
        ),
    ],
)
def test_kernel_hostname(hostname: str, domain: str, fqdn: bool, expected: str) -> None:
    assert kernel_hostname(hostname, domain, fqdn) == expected


def test_kernel_hostname_too_long() -> None:
    with pytest.raises(ContainerConfigError) as raised:
        kernel_hostname("1234567.1234567", "1234567." * 6 + "1234567", True)
    assert raised.value.message == (
        "failed to construct FQDN from pod hostname and cluster domain, FQDN "
        "1234567.1234567.1234567.1234567.1234567.1234567.1234567.1234567.1234567 is too long "
        "(64 characters is the max, 71 characters requested)"
    )


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(host_pod("web-0"), ("web-0", ""), id="pod-name"),
        pytest.param(host_pod("web-0", hostname="db"), ("db", ""), id="spec-hostname"),
        pytest.param(
            host_pod("web-0", subdomain="nginx"),
            ("web-0", "nginx.ns.svc.cluster.local"),
            id="subdomain",
        ),
        pytest.param(
            host_pod("web-0", hostname="db", subdomain="nginx", fqdn=True),
            ("db.nginx.ns.svc.cluster.local", "nginx.ns.svc.cluster.local"),
            id="set-hostname-as-fqdn",
        ),
        pytest.param(host_pod("web-0", fqdn=True), ("web-0", ""), id="fqdn-needs-a-subdomain"),
    ],
)
def test_pod_hostname(pod: Pod, expected: tuple[str, str]) -> None:
    assert pod_hostname(pod, "cluster.local") == expected


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        pytest.param(
            host_pod("p", hostname="Bad_Host"),
            'pod Hostname "Bad_Host" is not a valid DNS label: a lowercase RFC 1123 label must '
            "consist of lower case alphanumeric characters or '-', and must start and end with an "
            "alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            id="bad-hostname",
        ),
        pytest.param(
            host_pod("p", subdomain="a.b"),
            'pod Subdomain "a.b" is not a valid DNS label: must not contain dots',
            id="dotted-subdomain",
        ),
        pytest.param(
            host_pod("p" * 40, subdomain="s" * 10, fqdn=True, namespace="n" * 10),
            "failed to construct FQDN from pod hostname and cluster domain, FQDN "
            f"{'p' * 40}.{'s' * 10}.{'n' * 10}.svc.cluster.local is too long (64 characters is the "
            "max, 80 characters requested)",
            id="fqdn-too-long",
        ),
    ],
)
def test_pod_hostname_errors(pod: Pod, message: str) -> None:
    with pytest.raises(ContainerConfigError) as raised:
        pod_hostname(pod, "cluster.local")
    assert raised.value.message == message


def test_dns_label_length_message() -> None:
    assert is_dns1123_label("a" * 64) == ["must be no more than 63 characters"]
