"""What a pod's containers learn about the pod: its hostname and domain, and its ``fieldRef`` values.

:func:`pod_hostname` models ``GeneratePodHostNameAndDomain`` and ``truncatePodHostnameIfNeeded``
(``pkg/kubelet/kubelet_pods.go``) followed by ``GetNodenameForKernel``
(``pkg/kubelet/util/util.go``), which ``generatePodSandboxConfig``
(``pkg/kubelet/kuberuntime/kuberuntime_sandbox.go``) applies for ``setHostnameAsFQDN``. The
validators return apimachinery's messages (``k8s.io/apimachinery/pkg/util/validation``), since the
kubelet quotes them in its errors.

:func:`field_value` models ``podFieldSelectorRuntimeValue`` and ``sortPodIPs``
(``pkg/kubelet/kubelet_pods.go``) after ``ConvertDownwardAPIFieldLabel``
(``pkg/apis/core/pods/helpers.go``), with ``ExtractFieldPathAsString`` and ``FormatMap``
(``pkg/fieldpath/fieldpath.go``) for the ``metadata`` paths and ``GetNodeHostIPs``
(``component-helpers/node/util``) for the node's addresses.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from kubelet_sim.core.reference import go_quote
from kubelet_sim.errors import ContainerConfigError
from kubelet_sim.k8s.objects import Pod
from kubelet_sim.k8s.podspec import ObjectFieldSelector

__all__ = [
    "PodNetwork",
    "field_value",
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "is_qualified_name",
    "kernel_hostname",
    "pod_hostname",
]

_HOSTNAME_MAX = 63  # the kernel's 64-byte nodename field, minus the terminating NUL
_FQDN_MAX = 64
_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_FMT = _LABEL_FMT + "(\\." + _LABEL_FMT + ")*"
_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_FIELD_LABELS = frozenset(
    [
        "metadata.annotations",
        "metadata.labels",
        "metadata.name",
        "metadata.namespace",
        "metadata.uid",
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.serviceAccountName",
        "spec.schedulerName",
        "status.phase",
        "status.hostIP",
        "status.hostIPs",
        "status.podIP",
        "status.podIPs",
    ]
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character"
)
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character"
)
_QNAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)


@dataclass(frozen=True, slots=True)
class PodNetwork:
    """The sandbox's IPs and the node's, as the runtime and the node status report them."""

    pod_ips: tuple[str, ...] = ()
    host_ips: tuple[str, ...] = ()


def _regex_error(message: str, fmt: str, *examples: str) -> str:
    """``validation.RegexError``: the message, its examples and the pattern (two spaces before or)."""
    shown = " or ".join(f"'{example}', " for example in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{fmt}')"


def is_dns1123_label(value: str) -> list[str]:
    """``IsDNS1123Label``: the problems with ``value`` as a DNS label, empty when it is one."""
    errors = ["must be no more than 63 characters"] if len(value) > 63 else []
    if not re.fullmatch(_LABEL_FMT, value):
        if re.fullmatch(_SUBDOMAIN_FMT, value):
            errors.append("must not contain dots")
        else:
            errors.append(_regex_error(_LABEL_MSG, _LABEL_FMT, "my-name", "123-abc"))
    return errors


def is_dns1123_subdomain(value: str) -> list[str]:
    """``IsDNS1123Subdomain``: the problems with ``value`` as a DNS subdomain."""
    errors = ["must be no more than 253 characters"] if len(value) > 253 else []
    if not re.fullmatch(_SUBDOMAIN_FMT, value):
        errors.append(_regex_error(_SUBDOMAIN_MSG, _SUBDOMAIN_FMT, "example.com"))
    return errors


def is_qualified_name(value: str) -> list[str]:
    """``IsQualifiedName``: ``[prefix/]name`` as label and annotation keys are written."""
    parts = value.split("/")
    name_error = _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
    if len(parts) > 2:
        return [
            f"a qualified name {name_error} with an optional DNS subdomain prefix and '/' "
            "(e.g. 'example.com/MyName')"
        ]
    errors: list[str] = []
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors.extend(f"prefix part {message}" for message in is_dns1123_subdomain(prefix))
    name = parts[-1]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    if not re.fullmatch(_QNAME_FMT, name):
        errors.append(f"name part {name_error}")
    return errors


def _truncate(pod_name: str, hostname: str) -> str:
    """``truncatePodHostnameIfNeeded``: cut at 63 and trim trailing ``-`` and ``.``."""
    if len(hostname) <= _HOSTNAME_MAX:
        return hostname
    truncated = hostname[:_HOSTNAME_MAX].rstrip("-.")
    if not truncated:
        raise ContainerConfigError(f'hostname for pod "{pod_name}" was invalid: "{hostname}"')
    return truncated


def pod_hostname(pod: Pod, cluster_domain: str) -> tuple[str, str]:
    """The pod's kernel hostname and its domain (``""`` without ``spec.subdomain``).

    The hostname is ``spec.hostname`` or the pod name, at most 63 characters; the domain is
    ``<subdomain>.<namespace>.svc.<cluster_domain>``. With ``setHostnameAsFQDN`` and a domain the
    hostname is ``<hostname>.<domain>``, which must fit the kernel's 64 characters.

    Raises:
        ContainerConfigError: an invalid ``spec.hostname`` or ``spec.subdomain`` (upstream's
            message), or an FQDN longer than 64 characters. Upstream fails the sandbox
            (``FailedCreatePodSandBox``) with the same message.
    """
    hostname = pod.name
    if pod.hostname:
        if problems := is_dns1123_label(pod.hostname):
            raise ContainerConfigError(
                f'pod Hostname "{pod.hostname}" is not a valid DNS label: {";".join(problems)}'
            )
        hostname = pod.hostname
    hostname = _truncate(pod.name, hostname)
    domain = ""
    if pod.subdomain:
        if problems := is_dns1123_label(pod.subdomain):
            raise ContainerConfigError(
                f'pod Subdomain "{pod.subdomain}" is not a valid DNS label: {";".join(problems)}'
            )
        domain = f"{pod.subdomain}.{pod.namespace}.svc.{cluster_domain}"
    return kernel_hostname(hostname, domain, pod.set_hostname_as_fqdn), domain


def kernel_hostname(hostname: str, domain: str, set_hostname_as_fqdn: bool) -> str:
    """``GetNodenameForKernel``: ``<hostname>.<domain>`` with ``setHostnameAsFQDN`` and a domain.

    Raises:
        ContainerConfigError: the FQDN does not fit the kernel's 64 characters.
    """
    if not (domain and set_hostname_as_fqdn):
        return hostname
    fqdn = f"{hostname}.{domain}"
    if len(fqdn) > _FQDN_MAX:
        raise ContainerConfigError(
            "failed to construct FQDN from pod hostname and cluster domain, FQDN "
            f"{fqdn} is too long ({_FQDN_MAX} characters is the max, {len(fqdn)} characters "
            "requested)"
        )
    return fqdn


def _ip_is_v4(text: str) -> bool | None:
    """``IsIPv4String``/``IsIPv6String`` in one: None for text that is not an IP."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if "%" in text:  # Go's ParseIP takes no zone
        return None
    mapped = isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None
    return ip.version == 4 or mapped


def _host_ips(host_ips: Sequence[str]) -> list[str]:
    """``GetNodeHostIPs``: the first node IP and the first of the other family."""
    valid = [ip for ip in host_ips if _ip_is_v4(ip) is not None]
    if not valid:
        raise ContainerConfigError("host IP unknown; known addresses: []")
    other = [ip for ip in valid if _ip_is_v4(ip) != _ip_is_v4(valid[0])]
    return valid[:1] + other[:1]


def _pod_ips(network: PodNetwork) -> list[str]:
    """``sortPodIPs``: the first pod IP of the node's family, then the first of the other."""
    primary_v4 = not network.host_ips or _ip_is_v4(network.host_ips[0]) is not False
    out = []
    for want_v4 in (primary_v4, not primary_v4):
        out += [ip for ip in network.pod_ips if _ip_is_v4(ip) is want_v4][:1]
    return out


def _format_map(items: Mapping[str, str]) -> str:
    """``fieldpath.FormatMap``: ``key="value"`` lines in key order."""
    return "\n".join(f"{key}={go_quote(items[key])}" for key in sorted(items))


def _split_subscript(path: str) -> tuple[str, str] | None:
    """``SplitMaybeSubscriptedPath``: ``metadata.labels['app']`` to its path and key."""
    if not path.endswith("']"):
        return None
    base, found, key = path[:-2].partition("['")
    return (base, key) if found and base else None


def field_value(
    selector: ObjectFieldSelector, pod: Pod, *, node_name: str, network: PodNetwork
) -> str:
    """The value of a ``valueFrom.fieldRef`` for ``pod`` on this node.

    Raises:
        ContainerConfigError: a path the kubelet does not support, a bad label or annotation
            subscript, or ``status.hostIP(s)`` on a node without addresses (upstream's message).
    """
    path, version = selector.field_path, selector.api_version or "v1"
    if version != "v1":
        raise ContainerConfigError(f"unsupported pod version: {version}")
    if (split := _split_subscript(path)) is not None:
        base, key = split
        if base not in ("metadata.annotations", "metadata.labels"):
            raise ContainerConfigError(f"field label does not support subscript: {path}")
        annotations = base == "metadata.annotations"
        if problems := is_qualified_name(key.lower() if annotations else key):
            raise ContainerConfigError(f"invalid key subscript in {path}: {';'.join(problems)}")
        return (pod.annotations if annotations else pod.labels).get(key, "")
    path = "spec.nodeName" if path == "spec.host" else path
    if path not in _FIELD_LABELS:
        raise ContainerConfigError(f"field label not supported: {path}")
    known: dict[str, Callable[[], str]] = {
        "spec.nodeName": lambda: pod.node_name or node_name,
        "spec.serviceAccountName": lambda: pod.service_account_name,
        "status.hostIP": lambda: _host_ips(network.host_ips)[0],
        "status.hostIPs": lambda: ",".join(_host_ips(network.host_ips)),
        "status.podIP": lambda: next(iter(_pod_ips(network)), ""),
        "status.podIPs": lambda: ",".join(_pod_ips(network)),
        "metadata.annotations": lambda: _format_map(pod.annotations),
        "metadata.labels": lambda: _format_map(pod.labels),
        "metadata.name": lambda: pod.name,
        "metadata.namespace": lambda: pod.namespace,
        "metadata.uid": lambda: pod.uid,
    }
    if path not in known:  # spec.restartPolicy, spec.schedulerName, status.phase
        raise ContainerConfigError(f"unsupported fieldPath: {path}")
    return known[path]()
