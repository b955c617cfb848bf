"""The environment the kubelet gives a container, and the process the runtime starts with it.

Models, from kubernetes/kubernetes:

- ``pkg/kubelet/kubelet_pods.go``: ``makeEnvironmentVariables`` (envFrom first, then ``env`` in
  declared order, each ``value`` expanded against the variables so far and the service variables;
  the remaining service variables last), ``getServiceEnvVarMap`` and
  ``containerResourceRuntimeValue`` (``fieldRef`` values are :func:`~kubelet_sim.k8s.hostname.field_value`'s);
- ``pkg/kubelet/envvars/envvars.go`` ``FromServices``: the docker-links variables;
- ``third_party/forked/golang/expansion/expand.go``: ``$(VAR)`` expansion, ``$$`` escaping;
- ``pkg/api/v1/resource/helpers.go``: ``ExtractContainerResourceValue`` (the exact ceiling of
  value/divisor) and ``MergeContainerResourceLimits`` (unset limits fall back to allocatable);
- ``pkg/kubelet/container/helpers.go`` ``ExpandContainerCommandAndArgs``;

and from containerd ``internal/cri/server/container_create.go`` (default ``PATH``, then
``HOSTNAME``, then image env, then container env, each through ``pkg/oci`` ``WithEnv``) and
``internal/cri/opts/spec_opts.go`` ``WithProcessArgs``; runc's ``libcontainer/env.go``
``prepareEnv`` removes duplicates, keeping the last.

Upstream returns the container's variables and then the service variables from Go maps, in no
defined order; here each group is sorted by name. The kubelet before 1.30 skipped envFrom keys
that were not C-identifier-like with an ``InvalidEnvironmentVariableNames`` event; KEP-4369
(``RelaxedEnvironmentVariableValidation``) removed that check, so it runs only with
``strict_env_names``. Error messages are upstream's; they name objects and keys, never values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

from kubelet_sim.errors import ContainerConfigError, ContainerRuntimeError
from kubelet_sim.k8s.cluster import ConfigMap, Service
from kubelet_sim.k8s.hostname import PodNetwork, field_value
from kubelet_sim.k8s.objects import DEFAULT_NAMESPACE, Container, Pod, Secret
from kubelet_sim.k8s.podspec import EnvVarSource, ResourceFieldSelector, parse_quantity

__all__ = [
    "INVALID_ENV_NAMES_REASON",
    "EnvObjects",
    "EnvValue",
    "Environment",
    "PodNetwork",
    "command_and_args",
    "expand",
    "make_environment",
    "runtime_environment",
    "service_environment",
]

INVALID_ENV_NAMES_REASON = "InvalidEnvironmentVariableNames"
"""The event reason for :attr:`Environment.warnings`."""
_MASTER_SERVICES = frozenset({"kubernetes"})
_DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ENV_VAR_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")  # validation.IsEnvVarName, pre-1.30
_MERGED_LIMITS = ("cpu", "memory", "ephemeral-storage")
_MAX_INT64 = 2**63 - 1


@dataclass(frozen=True, slots=True)
class EnvValue:
    """One variable of a container's environment; ``secret`` when its value came from a Secret.

    A literal ``value`` that expands a Secret-backed variable is secret too. The node API shows
    secret values as ``<secret>``, and so does ``repr``.
    """

    name: str
    value: str
    secret: bool = False

    def __repr__(self) -> str:
        shown = "<secret>" if self.secret else repr(self.value)
        return f"EnvValue(name={self.name!r}, value={shown}, secret={self.secret})"


class EnvObjects(Protocol):
    """Where the environment's objects come from (:class:`~kubelet_sim.k8s.store.ObjectStore`)."""

    def get_config_map(self, namespace: str, name: str) -> ConfigMap | None: ...

    def get_secret(self, namespace: str, name: str) -> Secret | None: ...

    def services(self, namespace: str | None = None) -> list[Service]: ...


@dataclass(frozen=True, slots=True)
class Environment:
    """A container's environment and the warning events its envFrom keys raised."""

    values: tuple[EnvValue, ...]
    warnings: tuple[str, ...] = ()
    """``InvalidEnvironmentVariableNames`` event messages (``strict_env_names`` only)."""


def _env_name(text: str) -> str:
    """``makeEnvVariableName``: upper case, ``-`` to ``_``."""
    return text.replace("-", "_").upper()


def _service_variables(service: Service) -> list[tuple[str, str]]:
    """``FromServices`` for one service: host, ports, then the docker-links variables."""
    if not service.ports:  # validation requires a port; upstream would index out of range
        return []
    prefix, ip = _env_name(service.name), service.cluster_ip
    port_var = f"{prefix}_SERVICE_PORT"
    out = [(f"{prefix}_SERVICE_HOST", ip), (port_var, str(service.ports[0].port))]
    out += [(f"{port_var}_{_env_name(p.name)}", str(p.port)) for p in service.ports if p.name]
    for index, port in enumerate(service.ports):
        protocol = port.protocol or "TCP"
        url = f"{protocol.lower()}://{ip}:{port.port}"
        if index == 0:
            out.append((f"{prefix}_PORT", url))
        base = f"{prefix}_PORT_{port.port}_{protocol.upper()}"
        out += [(base, url), (f"{base}_PROTO", protocol.lower())]
        out += [(f"{base}_PORT", str(port.port)), (f"{base}_ADDR", ip)]
    return out


def service_environment(
    services: Iterable[Service], namespace: str, enable_service_links: bool
) -> list[EnvValue]:
    """``getServiceEnvVarMap``: the variables for the services a pod in ``namespace`` sees.

    The ``default`` namespace's ``kubernetes`` service always; the pod namespace's services
    (taking precedence by name) when ``enable_service_links``; services without a cluster IP never.
    """
    chosen: dict[str, Service] = {}
    for service in services:
        if not service.has_cluster_ip:
            continue
        if service.namespace == DEFAULT_NAMESPACE and service.name in _MASTER_SERVICES:
            chosen.setdefault(service.name, service)
        elif service.namespace == namespace and enable_service_links:
            chosen[service.name] = service
    values: dict[str, str] = {}
    for name in sorted(chosen):
        values.update(_service_variables(chosen[name]))
    return [EnvValue(name, value) for name, value in values.items()]


def _expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """``expansion.Expand``: ``$(NAME)`` replaced when ``lookup`` knows it; ``$$`` is ``$``."""
    out: list[str] = []
    checkpoint = cursor = 0
    unclosed = len(text)  # no ")" at or after this index: later "$(" need no search
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            close = -1
            if following == "(" and cursor + 2 < unclosed:
                close = text.find(")", cursor + 2)
                if close < 0:
                    unclosed = cursor + 2
            if following == "$":
                out.append("$")
            elif close >= 0:
                name = text[cursor + 2 : close]
                found = lookup(name)
                out.append(f"$({name})" if found is None else found)
                cursor = close - 1
            else:  # "$(" never closed, or "$" before anything else: kept as written
                out.append("$" + following)
            cursor += 1
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def expand(text: str, *mappings: Mapping[str, str]) -> str:
    """Expand ``$(NAME)`` references in ``text``, looking ``NAME`` up in each mapping in order.

    Undefined references and incomplete ones stay as written; ``$$`` is an escaped ``$``.
    """

    def lookup(name: str) -> str | None:
        for mapping in mappings:
            if name in mapping:
                return mapping[name]
        return None

    return _expand(text, lookup)


def _expand_tracked(
    text: str, env: Mapping[str, str], secret_names: set[str], service_env: Mapping[str, str]
) -> tuple[str, bool]:
    """Expand against the variables so far, then the service ones; True if a Secret's was used."""
    used: list[str] = []

    def lookup(name: str) -> str | None:
        if name in env:
            used.append(name)
            return env[name]
        return service_env.get(name)

    expanded = _expand(text, lookup)
    return expanded, any(name in secret_names for name in used)


def _text(data: bytes) -> str:
    # Go's string([]byte) keeps every byte; surrogateescape keeps invalid UTF-8 round-trippable.
    return data.decode("utf-8", "surrogateescape")


def _is_env_var_name(name: str) -> bool:
    """``IsEnvVarName`` as the kubelet applied it to envFrom keys before 1.30."""
    dots = name in (".", "..") or name.startswith("..")
    return _ENV_VAR_NAME.fullmatch(name) is not None and not dots


class _Lookups:
    """The ConfigMaps and Secrets one container's env reads, each fetched once."""

    def __init__(self, objects: EnvObjects, namespace: str) -> None:
        self.objects = objects
        self.namespace = namespace
        self.config_maps: dict[str, ConfigMap] = {}
        self.secrets: dict[str, Secret] = {}

    def config_map(self, name: str, optional: bool) -> ConfigMap | None:
        if name not in self.config_maps:
            found = self.objects.get_config_map(self.namespace, name)
            if found is None:
                if optional:
                    return None
                raise ContainerConfigError(f'configmap "{name}" not found')
            self.config_maps[name] = found
        return self.config_maps[name]

    def secret(self, name: str, optional: bool) -> Secret | None:
        if name not in self.secrets:
            found = self.objects.get_secret(self.namespace, name)
            if found is None:
                if optional:
                    return None
                raise ContainerConfigError(f'secret "{name}" not found')
            self.secrets[name] = found
        return self.secrets[name]


def make_environment(
    pod: Pod,
    container: Container,
    objects: EnvObjects,
    *,
    node_name: str,
    network: PodNetwork,
    allocatable: Mapping[str, str],
    strict_env_names: bool = False,
) -> Environment:
    """``makeEnvironmentVariables``: the variables the kubelet sends the runtime for ``container``.

    Args:
        node_name: the node's name, for ``spec.nodeName`` when the pod does not carry one.
        network: pod IPs (ordered by the node's IP family) and node IPs for ``status.*IP*``.
        allocatable: the node's allocatable quantities, for ``resourceFieldRef`` limits the
            container does not set.
        strict_env_names: skip envFrom keys that are not valid pre-1.30 variable names, with a
            warning per source, as kubelets before ``RelaxedEnvironmentVariableValidation`` did.

    Raises:
        ContainerConfigError: a required ConfigMap, Secret or key is missing, or a ``fieldRef`` or
            ``resourceFieldRef`` the kubelet cannot resolve (upstream's message).
    """
    services = service_environment(objects.services(), pod.namespace, pod.enable_service_links)
    service_env = {value.name: value.value for value in services}
    lookups = _Lookups(objects, pod.namespace)
    env: dict[str, str] = {}
    secret_names: set[str] = set()
    warnings: list[str] = []

    def put(name: str, value: str, secret: bool) -> None:
        env[name] = value
        (secret_names.add if secret else secret_names.discard)(name)

    for source in container.env_from:
        items: Mapping[str, str] | None = None
        if (cm_ref := source.config_map_ref) is not None:
            kind, name = "configMap", cm_ref.name
            if (config_map := lookups.config_map(name, cm_ref.optional)) is not None:
                items = config_map.data
        elif (secret_ref := source.secret_ref) is not None:
            kind, name = "secret", secret_ref.name
            if (secret := lookups.secret(name, secret_ref.optional)) is not None:
                items = {key: _text(value) for key, value in secret.data.items()}
        if items is None:
            continue
        invalid = []
        for key, value in items.items():
            if strict_env_names and not _is_env_var_name(source.prefix + key):
                invalid.append(source.prefix + key)
            else:
                put(source.prefix + key, value, kind == "secret")
        if invalid:
            warnings.append(
                f"Keys [{', '.join(sorted(invalid))}] from the EnvFrom {kind} "
                f"{pod.namespace}/{name} were skipped since they are considered invalid "
                "environment variable names."
            )

    for var in container.env:
        if var.value:
            put(var.name, *_expand_tracked(var.value, env, secret_names, service_env))
        elif var.value_from is not None:
            resolved = _value_from(
                var.value_from, pod, container, lookups, node_name, network, allocatable
            )
            if resolved is not None:
                put(var.name, *resolved)
        else:
            put(var.name, "", False)

    values = [EnvValue(name, env[name], name in secret_names) for name in sorted(env)]
    values += [EnvValue(n, service_env[n]) for n in sorted(service_env) if n not in env]
    return Environment(tuple(values), tuple(warnings))


def _value_from(
    source: EnvVarSource,
    pod: Pod,
    container: Container,
    lookups: _Lookups,
    node_name: str,
    network: PodNetwork,
    allocatable: Mapping[str, str],
) -> tuple[str, bool] | None:
    """One ``valueFrom``: the value and whether it is a Secret's; None to leave the name unset."""
    if source.field_ref is not None:
        return field_value(source.field_ref, pod, node_name=node_name, network=network), False
    if source.resource_field_ref is not None:
        return _resource_value(source.resource_field_ref, pod, container, allocatable), False
    if (ref := source.config_map_key_ref) is not None:
        config_map = lookups.config_map(ref.name, ref.optional)
        if config_map is None:
            return None
        if ref.key not in config_map.data:
            if ref.optional:
                return None
            raise ContainerConfigError(
                f"couldn't find key {ref.key} in ConfigMap {pod.namespace}/{ref.name}"
            )
        return config_map.data[ref.key], False
    if (ref := source.secret_key_ref) is not None:
        secret = lookups.secret(ref.name, ref.optional)
        if secret is None:
            return None
        if ref.key not in secret.data:
            if ref.optional:
                return None
            raise ContainerConfigError(
                f"couldn't find key {ref.key} in Secret {pod.namespace}/{ref.name}"
            )
        return _text(secret.data[ref.key]), True
    return "", False


def _quantity(text: str, where: str) -> Fraction:
    try:
        return parse_quantity(text)
    except ValueError as exc:  # its messages give the rule, not the text
        raise ContainerConfigError(f"{where}: {exc}") from None


def _resource_value(
    selector: ResourceFieldSelector,
    pod: Pod,
    container: Container,
    allocatable: Mapping[str, str],
) -> str:
    """``containerResourceRuntimeValue`` on the pod as ``defaultPodLimitsForDownwardAPI`` left it.

    Unset (or zero) cpu, memory and ephemeral-storage limits fall back to allocatable for the
    container itself and for the pod's app containers (not its init containers, as upstream);
    an unset request is the container's own limit, as API defaulting (``SetDefaults_Pod``) sets.
    """
    target, merge = container, True
    if selector.container_name:
        named = [c for c in pod.containers if c.name == selector.container_name]
        merge = bool(named)
        named += [c for c in pod.init_containers if c.name == selector.container_name]
        if not named:
            raise ContainerConfigError(f"container {selector.container_name} not found")
        target = named[0]
    limits = dict(target.resources.limits)
    requests = {**limits, **target.resources.requests}
    for name in _MERGED_LIMITS if merge else ():
        unset = name not in limits or _quantity(limits[name], f"limits.{name}") == 0
        if unset and name in allocatable:
            limits[name] = allocatable[name]
    kind, _, name = selector.resource.partition(".")
    pool = {"limits": limits, "requests": requests}.get(kind)
    if pool is None or not (name in _MERGED_LIMITS or name.startswith("hugepages-")):
        raise ContainerConfigError(f"unsupported container resource : {selector.resource}")
    divisor = _quantity(selector.divisor, "divisor") if selector.divisor else Fraction(0)
    value = _quantity(pool[name], selector.resource) if name in pool else Fraction(0)
    divisor = divisor or Fraction(1)
    if value <= 0 or divisor < 0:
        return "0"
    if value > divisor * _MAX_INT64:  # saturates as upstream, without a huge quotient
        return str(_MAX_INT64)
    return str(math.ceil(value / divisor))


def command_and_args(
    container: Container,
    image_entrypoint: Sequence[str],
    image_cmd: Sequence[str],
    env: Sequence[EnvValue],
) -> tuple[str, ...]:
    """The process arguments: the kubelet's ``$(VAR)`` expansion, then containerd's image rule.

    ``command`` replaces the image's Entrypoint and drops its Cmd unless ``args`` are given;
    ``args`` alone follow the Entrypoint; neither runs Entrypoint and Cmd. An Entrypoint of one
    empty string counts as none.

    Raises:
        ContainerRuntimeError: nothing to run (containerd's ``no command specified``).
    """
    mapping = {value.name: value.value for value in env}
    command = [expand(part, mapping) for part in container.command or ()]
    args = [expand(part, mapping) for part in container.args or ()]
    if not command:
        args = args or list(image_cmd)
        if list(image_entrypoint) != [""]:
            command = list(image_entrypoint)
    if not command and not args:
        raise ContainerRuntimeError(container.name, "no command specified")
    return (*command, *args)


def _replace_or_append(defaults: Sequence[str], overrides: Iterable[str]) -> list[str]:
    """containerd's ``replaceOrAppendEnvValues``: set in place, append new, ``KEY`` alone unsets.

    Only keys already in ``defaults`` are replaced; a key appended twice by ``overrides`` appears
    twice (runc keeps the last).
    """
    results = list(defaults)
    where = {entry.partition("=")[0]: index for index, entry in enumerate(defaults)}
    for entry in overrides:
        key, equals, _ = entry.partition("=")
        if key in where:
            results[where[key]] = entry if equals else ""
        elif equals:
            results.append(entry)
    return [entry for entry in results if entry]


def runtime_environment(
    image_env: tuple[str, ...], values: Sequence[EnvValue], hostname: str
) -> tuple[tuple[str, str], ...]:
    """The environment the container's process starts with, as ``(name, value)`` pairs.

    containerd's order: the default ``PATH``, ``HOSTNAME`` (the sandbox's hostname; pass the
    node's for a host-network pod), the image's ``Env``, then the kubelet's variables; an image or
    container variable of the same name replaces ``PATH``/``HOSTNAME`` in place, so a container's
    ``HOSTNAME`` wins. runc then keeps the last of any duplicate, at its position. Names are not
    validated here (runc refuses an empty name or a NUL byte when it starts the process).
    """
    env = _replace_or_append([], [_DEFAULT_PATH])
    env = _replace_or_append(env, [f"HOSTNAME={hostname}"])
    env = _replace_or_append(env, [*image_env, *(f"{v.name}={v.value}" for v in values)])
    seen: set[str] = set()
    kept: list[tuple[str, str]] = []
    for entry in reversed(env):
        name, _, value = entry.partition("=")
        if name not in seen:
            seen.add(name)
            kept.append((name, value))
    return tuple(reversed(kept))
