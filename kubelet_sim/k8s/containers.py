"""A pod's containers read from a manifest: image, command, env, resources, ports, lifecycle hooks.

Validation follows ``pkg/apis/core/validation/validation.go`` (``validateContainerCommon``,
``ValidateEnv``, ``ValidateEnvFrom``, ``validateEnvVarValueFrom``, ``validateLifecycle``,
``validateEphemeralContainers``) after the API's defaulting (``pkg/apis/core/v1/defaults.go``:
``imagePullPolicy`` from the tag, port ``protocol`` ``TCP``, ``httpGet`` ``path`` ``/`` and
``scheme`` ``HTTP``, ``fieldRef.apiVersion`` ``v1``). The rules are current upstream's (1.34):

- env var names and ``envFrom`` prefixes: any printable ASCII but ``=`` (``IsRelaxedEnvVarName``;
  RelaxedEnvironmentVariableValidation is GA and locked on);
- a ``sleep`` hook: ``0 <= seconds <= terminationGracePeriodSeconds`` (zero allowed:
  PodLifecycleSleepActionAllowZero is GA);
- a ``tcpSocket`` hook is accepted, as upstream keeps it for compatibility, and fails when run;
- an init container may have ``lifecycle`` only with ``restartPolicy: Always`` (a sidecar);
  an ephemeral container may not have ports, resources, probes or lifecycle.

Container fields kubelet-sim does not model (probes, ``volumeMounts``, ``securityContext``,
``stdin``/``tty``, an init container's ``restartPolicy``, a port's ``hostPort``, ...) are listed
in the pod's ``unsupported_fields`` when set to anything but their default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kubelet_sim.core.pods import ContainerKind
from kubelet_sim.core.policy import PullPolicy, default_pull_policy, parse_pull_policy
from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s.fields import (
    STANDARD_RESOURCES,
    FieldReader,
    field_names,
    is_unset,
    overcommittable,
)
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
    Resources,
    SecretEnvSource,
    SleepAction,
    TCPSocketAction,
    parse_quantity,
)

__all__ = ["Container", "parse_containers"]

_HEADER_NAME = re.compile(r"[-A-Za-z0-9]+")
_PROTOCOLS = ("TCP", "UDP", "SCTP")
_DOWNWARD_FIELDS = (
    *("metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName"),
    *("spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP"),
    "status.podIPs",
)
_RESOURCE_FIELDS = tuple(f"{k}.{r}" for k in ("limits", "requests") for r in STANDARD_RESOURCES)
_CPU_DIVISORS = ("1m", "1")
_BYTE_DIVISORS = ("1", *(f"1{s}" for s in "kMGTPE"), *(f"1{s}i" for s in "KMGTPE"))

# v1.Container's fields: the ones kubelet-sim models, and the rest (reported when set).
_CONTAINER_MODELLED = field_names(
    "name image imagePullPolicy command args workingDir env envFrom resources ports lifecycle"
)
_CONTAINER_OTHER = field_names(
    "volumeMounts volumeDevices livenessProbe readinessProbe startupProbe securityContext "
    "resizePolicy restartPolicy restartPolicyRules terminationMessagePath "
    "terminationMessagePolicy stdin stdinOnce tty"
)
_EPHEMERAL_OTHER = _CONTAINER_OTHER | {"targetContainerName"}
_CONTAINER_DEFAULTS: Mapping[str, object] = {
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
}
# allowedEphemeralContainerFields: what an ephemeral container may not set.
_NOT_FOR_EPHEMERAL = (
    *("ports", "resources", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle"),
    *("resizePolicy", "restartPolicy", "restartPolicyRules"),
)


@dataclass(frozen=True, slots=True)
class Container:
    """One container: its image settings (the API's defaulted pull policy) and how it runs."""

    name: str
    image: str
    image_pull_policy: PullPolicy
    kind: ContainerKind = ContainerKind.APP
    command: tuple[str, ...] | None = None
    """``command``; None when absent (the image's ``Entrypoint`` is used)."""
    args: tuple[str, ...] | None = None
    """``args``; None when absent (the image's ``Cmd`` is used unless ``command`` is set)."""
    working_dir: str = ""
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFromSource, ...] = ()
    resources: Resources = field(default_factory=Resources)
    ports: tuple[ContainerPort, ...] = ()
    lifecycle: Lifecycle = field(default_factory=Lifecycle)


# -- containers ---------------------------------------------------------------------------


def parse_containers(
    doc: FieldReader,
    value: Any,
    kind: ContainerKind,
    seen: set[str],
    *,
    grace_period: int,
    targets: frozenset[str] = frozenset(),
) -> tuple[Container, ...]:
    """One of the pod's container lists (``spec.initContainers``, ``containers`` or
    ``ephemeralContainers``).

    Args:
        doc: the pod's reader.
        value: the list as the manifest has it.
        kind: which list.
        seen: container names so far (names are unique across the lists); updated.
        grace_period: the pod's ``terminationGracePeriodSeconds`` (bounds ``sleep`` hooks).
        targets: for ephemeral containers, the init and app container names they may target.

    Raises:
        ConfigError: naming the field, e.g. ``spec.containers[0].env[2].valueFrom``.
    """
    out = []
    for index, item in enumerate(doc.sequence(value, f"spec.{kind}")):
        path = f"spec.{kind}[{index}]"
        spec = doc.mapping(item, path)
        other = _EPHEMERAL_OTHER if kind is ContainerKind.EPHEMERAL else _CONTAINER_OTHER
        doc.fields(spec, path, _CONTAINER_MODELLED, other, defaults=_CONTAINER_DEFAULTS)
        name = doc.string(spec.get("name"), f"{path}.name", required=True)
        doc.name(name, f"{path}.name", label=True)
        if name in seen:
            raise doc.fail(f"{path}.name", f'Duplicate value: "{name}"')
        seen.add(name)
        image = doc.string(spec.get("image"), f"{path}.image", required=True)
        if image != image.strip():
            raise doc.fail(
                f"{path}.image", "Invalid value: must not have leading or trailing whitespace"
            )
        policy_text = doc.string(spec.get("imagePullPolicy"), f"{path}.imagePullPolicy")
        try:
            policy = parse_pull_policy(policy_text) if policy_text else default_pull_policy(image)
        except ConfigError as exc:
            raise doc.fail(f"{path}.imagePullPolicy", exc.message) from None
        _check_restart_policy(doc, spec, path, kind, targets)
        out.append(
            Container(
                name,
                image,
                policy,
                kind,
                command=doc.strings(spec.get("command"), f"{path}.command"),
                args=doc.strings(spec.get("args"), f"{path}.args"),
                working_dir=doc.string(spec.get("workingDir"), f"{path}.workingDir"),
                env=_env(doc, spec.get("env"), f"{path}.env"),
                env_from=_env_from(doc, spec.get("envFrom"), f"{path}.envFrom"),
                resources=_resources(doc, spec.get("resources"), f"{path}.resources"),
                ports=_ports(doc, spec.get("ports"), f"{path}.ports"),
                lifecycle=_lifecycle(doc, spec.get("lifecycle"), f"{path}.lifecycle", grace_period),
            )
        )
    return tuple(out)


def _check_restart_policy(
    doc: FieldReader, spec: dict[Any, Any], path: str, kind: ContainerKind, targets: frozenset[str]
) -> None:
    """Where ``restartPolicy`` and ``lifecycle`` may be set (``validateInitContainers``,
    ``validateContainers``, ``validateEphemeralContainers``)."""
    policy = doc.string(spec.get("restartPolicy"), f"{path}.restartPolicy")
    if kind is ContainerKind.EPHEMERAL:
        for key in _NOT_FOR_EPHEMERAL:
            if not is_unset(spec.get(key)):
                raise doc.fail(
                    f"{path}.{key}", "Forbidden: cannot be set for an Ephemeral Container"
                )
        target = doc.string(spec.get("targetContainerName"), f"{path}.targetContainerName")
        if target and target not in targets:
            raise doc.fail(f"{path}.targetContainerName", f'Not found: "{target}"')
    elif kind is ContainerKind.INIT:
        if policy and policy != "Always":
            raise doc.fail(
                f"{path}.restartPolicy",
                f'Unsupported value: "{policy}": supported values: "Always"',
            )
        if spec.get("lifecycle") is not None and policy != "Always":
            raise doc.fail(
                f"{path}.lifecycle",
                "Forbidden: may not be set for init containers without restartPolicy=Always",
            )
    elif policy:
        raise doc.fail(f"{path}.restartPolicy", "Forbidden: may not be set for non-init containers")


def _env_name(doc: FieldReader, value: str, path: str) -> None:
    """``IsRelaxedEnvVarName``: printable ASCII other than '=' (the current upstream rule)."""
    if any(not " " <= ch <= "~" or ch == "=" for ch in value):
        raise doc.fail(
            path,
            f'Invalid value: "{value}": a valid environment variable name must consist only of '
            "printable ASCII characters other than '='",
        )


def _env(doc: FieldReader, value: Any, path: str) -> tuple[EnvVar, ...]:
    out = []
    for index, item in enumerate(doc.sequence(value, path)):
        where = f"{path}[{index}]"
        entry = doc.mapping(item, where)
        doc.fields(entry, where, frozenset({"name", "value", "valueFrom"}))
        name = doc.string(entry.get("name"), f"{where}.name", required=True)
        _env_name(doc, name, f"{where}.name")
        literal = doc.string(entry.get("value"), f"{where}.value")
        source = _value_from(doc, entry.get("valueFrom"), f"{where}.valueFrom", bool(literal))
        out.append(EnvVar(name, literal, source))
    return tuple(out)


def _value_from(doc: FieldReader, value: Any, path: str, has_value: bool) -> EnvVarSource | None:
    """``validateEnvVarValueFrom``: exactly one source, and no ``value`` beside it."""
    if value is None:
        return None
    raw = doc.mapping(value, path)
    sources = ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")
    doc.fields(raw, path, frozenset(sources))
    present = [key for key in sources if raw.get(key) is not None]
    if not present:
        raise doc.fail(
            path,
            "Invalid value: must specify one of: `fieldRef`, `resourceFieldRef`, "
            "`configMapKeyRef` or `secretKeyRef`",
        )
    if has_value:
        raise doc.fail(path, "Invalid value: may not be specified when `value` is not empty")
    if len(present) > 1:
        raise doc.fail(path, "Invalid value: may not have more than one field specified at a time")
    key = present[0]
    where = f"{path}.{key}"
    if key == "fieldRef":
        return EnvVarSource(field_ref=_field_ref(doc, raw[key], where))
    if key == "resourceFieldRef":
        return EnvVarSource(resource_field_ref=_resource_field_ref(doc, raw[key], where))
    selector = _key_selector(doc, raw[key], where)
    if key == "configMapKeyRef":
        return EnvVarSource(config_map_key_ref=selector)
    return EnvVarSource(secret_key_ref=selector)


def _field_ref(doc: FieldReader, value: Any, path: str) -> ObjectFieldSelector:
    """``validateObjectFieldSelector`` with the env var's supported paths."""
    raw = doc.mapping(value, path)
    doc.fields(raw, path, frozenset({"apiVersion", "fieldPath"}))
    api_version = doc.string(raw.get("apiVersion"), f"{path}.apiVersion") or "v1"
    field_path = doc.string(raw.get("fieldPath"), f"{path}.fieldPath", required=True)
    if api_version != "v1":
        raise doc.fail(
            f"{path}.fieldPath",
            f'Invalid value: "{field_path}": error converting fieldPath: unsupported pod version: '
            f"{api_version}",
        )
    base, bracket, rest = field_path.partition("['")
    if bracket and rest.endswith("']") and base:
        subscript = rest[:-2]
        if base not in ("metadata.labels", "metadata.annotations"):
            raise doc.fail(
                f"{path}.fieldPath",
                f'Invalid value: "{field_path}": error converting fieldPath: field label does '
                "not support subscript",
            )
        doc.qualified_name(subscript.lower() if base == "metadata.annotations" else subscript, path)
    elif field_path not in _DOWNWARD_FIELDS:
        raise doc.fail(
            f"{path}.fieldPath",
            f'Unsupported value: "{field_path}": supported values: '
            + ", ".join(f'"{p}"' for p in sorted(_DOWNWARD_FIELDS)),
        )
    return ObjectFieldSelector(field_path, api_version)


def _resource_field_ref(doc: FieldReader, value: Any, path: str) -> ResourceFieldSelector:
    """``validateContainerResourceFieldSelector`` and ``validateContainerResourceDivisor``."""
    raw = doc.mapping(value, path)
    doc.fields(raw, path, frozenset({"containerName", "resource", "divisor"}))
    container = doc.string(raw.get("containerName"), f"{path}.containerName")
    resource = doc.string(raw.get("resource"), f"{path}.resource", required=True)
    hugepages = resource.startswith(("limits.hugepages-", "requests.hugepages-"))
    if resource not in _RESOURCE_FIELDS and not hugepages:
        raise doc.fail(
            f"{path}.resource",
            f'Unsupported value: "{resource}": supported values: '
            + ", ".join(f'"{r}"' for r in _RESOURCE_FIELDS),
        )
    divisor = ""
    if raw.get("divisor") is not None:
        divisor = doc.quantity(raw["divisor"], f"{path}.divisor")
        amount = parse_quantity(divisor)
        allowed = _CPU_DIVISORS if resource.endswith(".cpu") else _BYTE_DIVISORS
        if amount == 0:
            divisor = ""  # unset: the kubelet divides by 1
        elif amount not in {parse_quantity(d) for d in allowed}:
            raise doc.fail(
                f"{path}.divisor",
                f'Invalid value: "{resource}": only divisor\'s values {", ".join(allowed)} are '
                f"supported with the {resource.partition('.')[2]} resource",
            )
    return ResourceFieldSelector(resource, container, divisor)


def _key_selector(doc: FieldReader, value: Any, path: str) -> KeySelector:
    """``validateConfigMapKeySelector`` / ``validateSecretKeySelector``."""
    raw = doc.mapping(value, path)
    doc.fields(raw, path, frozenset({"name", "key", "optional"}))
    name = doc.string(raw.get("name"), f"{path}.name", required=True)
    doc.name(name, f"{path}.name")
    key = doc.config_key(doc.string(raw.get("key"), f"{path}.key", required=True), f"{path}.key")
    return KeySelector(name, key, doc.boolean(raw.get("optional"), f"{path}.optional", False))


def _env_from(doc: FieldReader, value: Any, path: str) -> tuple[EnvFromSource, ...]:
    """``ValidateEnvFrom``: one of ``configMapRef``/``secretRef`` per entry, a valid prefix."""
    out = []
    for index, item in enumerate(doc.sequence(value, path)):
        where = f"{path}[{index}]"
        entry = doc.mapping(item, where)
        doc.fields(entry, where, frozenset({"prefix", "configMapRef", "secretRef"}))
        prefix = doc.string(entry.get("prefix"), f"{where}.prefix")
        if prefix:
            _env_name(doc, prefix, f"{where}.prefix")
        present = [k for k in ("configMapRef", "secretRef") if entry.get(k) is not None]
        if not present:
            raise doc.fail(
                where, "Invalid value: must specify one of: `configMapRef` or `secretRef`"
            )
        if len(present) > 1:
            raise doc.fail(
                where, "Invalid value: may not have more than one field specified at a time"
            )
        ref_path = f"{where}.{present[0]}"
        ref = doc.mapping(entry[present[0]], ref_path)
        doc.fields(ref, ref_path, frozenset({"name", "optional"}))
        name = doc.string(ref.get("name"), f"{ref_path}.name", required=True)
        doc.name(name, f"{ref_path}.name")
        optional = doc.boolean(ref.get("optional"), f"{ref_path}.optional", False)
        if present[0] == "configMapRef":
            out.append(EnvFromSource(prefix, config_map_ref=ConfigMapEnvSource(name, optional)))
        else:
            out.append(EnvFromSource(prefix, secret_ref=SecretEnvSource(name, optional)))
    return tuple(out)


def _resources(doc: FieldReader, value: Any, path: str) -> Resources:
    """``ValidateContainerResourceRequirements``: names, quantities, requests within limits."""
    raw = doc.mapping(value, path)
    doc.fields(raw, path, frozenset({"limits", "requests"}), frozenset({"claims"}))
    limits = doc.resource_list(raw.get("limits"), f"{path}.limits")
    requests = doc.resource_list(raw.get("requests"), f"{path}.requests")
    for name, text in requests.items():
        where = f"{path}.requests[{name}]"
        limit = limits.get(name)
        if limit is None:
            if not overcommittable(name):
                raise doc.fail(
                    f"{path}.limits",
                    f"Required value: Limit must be set for non overcommitable resources ({name})",
                )
            continue
        request, ceiling = parse_quantity(text), parse_quantity(limit)
        if not overcommittable(name) and request != ceiling:
            raise doc.fail(
                where, f'Invalid value: "{text}": must be equal to {name} limit of {limit}'
            )
        if request > ceiling:
            raise doc.fail(
                where,
                f'Invalid value: "{text}": must be less than or equal to {name} limit of {limit}',
            )
    return Resources(MappingProxyType(limits), MappingProxyType(requests))


def _ports(doc: FieldReader, value: Any, path: str) -> tuple[ContainerPort, ...]:
    """``validateContainerPorts``: numbers 1-65535, unique IANA names, TCP/UDP/SCTP."""
    out = []
    names: set[str] = set()
    for index, item in enumerate(doc.sequence(value, path)):
        where = f"{path}[{index}]"
        raw = doc.mapping(item, where)
        doc.fields(
            raw,
            where,
            frozenset({"containerPort", "name", "protocol"}),
            frozenset({"hostPort", "hostIP"}),
        )
        name = doc.string(raw.get("name"), f"{where}.name")
        if name:
            doc.port_name(name, f"{where}.name")
            if name in names:
                raise doc.fail(f"{where}.name", f'Duplicate value: "{name}"')
            names.add(name)
        number = doc.port_number(raw.get("containerPort"), f"{where}.containerPort")
        doc.port_number(raw.get("hostPort") or None, f"{where}.hostPort", required=False)
        doc.string(raw.get("hostIP"), f"{where}.hostIP")
        protocol = _protocol(doc, raw.get("protocol"), f"{where}.protocol")
        out.append(ContainerPort(number, name, protocol))
    return tuple(out)


def _protocol(doc: FieldReader, value: Any, path: str) -> str:
    protocol = doc.string(value, path) or "TCP"
    if protocol not in _PROTOCOLS:
        raise doc.fail(
            path, f'Unsupported value: "{protocol}": supported values: "SCTP", "TCP", "UDP"'
        )
    return protocol


def _lifecycle(doc: FieldReader, value: Any, path: str, grace_period: int) -> Lifecycle:
    raw = doc.mapping(value, path)
    doc.fields(raw, path, frozenset({"postStart", "preStop"}), frozenset({"stopSignal"}))
    return Lifecycle(
        post_start=_handler(doc, raw.get("postStart"), f"{path}.postStart", grace_period),
        pre_stop=_handler(doc, raw.get("preStop"), f"{path}.preStop", grace_period),
    )


def _handler(doc: FieldReader, value: Any, path: str, grace_period: int) -> LifecycleHandler | None:
    """``validateHandler``: exactly one of ``exec``, ``httpGet``, ``tcpSocket``, ``sleep``."""
    if value is None:
        return None
    raw = doc.mapping(value, path)
    actions = ("exec", "httpGet", "tcpSocket", "sleep")
    doc.fields(raw, path, frozenset(actions))
    present = [key for key in actions if raw.get(key) is not None]
    if not present:
        raise doc.fail(path, "Required value: must specify a handler type")
    if len(present) > 1:
        raise doc.fail(
            f"{path}.{present[1]}", "Forbidden: may not specify more than 1 handler type"
        )
    key = present[0]
    where = f"{path}.{key}"
    action = doc.mapping(raw[key], where)
    if key == "exec":
        doc.fields(action, where, frozenset({"command"}))
        command = doc.strings(action.get("command"), f"{where}.command")
        if not command:
            raise doc.fail(f"{where}.command", "Required value")
        return LifecycleHandler(exec=ExecAction(command))
    if key == "sleep":
        doc.fields(action, where, frozenset({"seconds"}))
        seconds = doc.integer(action.get("seconds"), f"{where}.seconds", required=True)
        assert seconds is not None
        if not 0 <= seconds <= grace_period:
            raise doc.fail(
                f"{where}.seconds",
                f"Invalid value: {seconds}: must be non-negative and less than "
                f"terminationGracePeriodSeconds ({grace_period})",
            )
        return LifecycleHandler(sleep=SleepAction(seconds))
    if key == "tcpSocket":
        doc.fields(action, where, frozenset({"port", "host"}))
        port = doc.port_or_name(action.get("port"), f"{where}.port")
        host = doc.string(action.get("host"), f"{where}.host")
        return LifecycleHandler(tcp_socket=TCPSocketAction(port, host))
    return LifecycleHandler(http_get=_http_get(doc, action, where))


def _http_get(doc: FieldReader, action: dict[Any, Any], path: str) -> HTTPGetAction:
    """``validateHTTPGetAction`` after defaulting (``path`` ``/``, ``scheme`` ``HTTP``)."""
    doc.fields(action, path, frozenset({"path", "port", "host", "scheme", "httpHeaders"}))
    port = doc.port_or_name(action.get("port"), f"{path}.port")
    scheme = doc.string(action.get("scheme"), f"{path}.scheme") or "HTTP"
    if scheme not in ("HTTP", "HTTPS"):
        raise doc.fail(
            f"{path}.scheme", f'Unsupported value: "{scheme}": supported values: "HTTP", "HTTPS"'
        )
    headers = []
    for index, item in enumerate(doc.sequence(action.get("httpHeaders"), f"{path}.httpHeaders")):
        where = f"{path}.httpHeaders[{index}]"
        header = doc.mapping(item, where)
        doc.fields(header, where, frozenset({"name", "value"}))
        name = doc.string(header.get("name"), f"{where}.name", required=True)
        if not _HEADER_NAME.fullmatch(name):
            raise doc.fail(
                f"{where}.name",
                f'Invalid value: "{name}": a valid HTTP header must consist of alphanumeric '
                "characters or '-'",
            )
        headers.append(HTTPHeader(name, doc.string(header.get("value"), f"{where}.value")))
    return HTTPGetAction(
        port=port,
        path=doc.string(action.get("path"), f"{path}.path") or "/",
        host=doc.string(action.get("host"), f"{path}.host"),
        scheme=scheme,
        headers=tuple(headers),
    )
