"""KubeletConfiguration: load, default and validate the image-related kubelet settings.

Reads a real ``kubelet.config.k8s.io/v1beta1`` ``KubeletConfiguration`` (as kubeadm, kind or a
distribution writes it) without edits. Image-related fields are decoded, defaulted and
validated as upstream does; every other upstream field is accepted, logged once and ignored;
any other key is refused, as a strict decoder would. Models
``staging/src/k8s.io/kubelet/config/v1beta1/types.go`` (names, types),
``pkg/kubelet/apis/config/v1beta1/defaults.go`` (defaulting) and
``pkg/kubelet/apis/config/validation/validation.go`` (checks and their messages).

Upstream quirks kept on purpose: ``registryBurst: 0``, ``imageMinimumGCAge: 0s`` and
``runtimeRequestTimeout: 0s`` are non-pointer zero values, i.e. "unset", and take their
defaults (10, 2m, 2m); ``serializeImagePulls`` defaults to false when only
``maxParallelImagePulls`` >= 2 is given; durations must be YAML strings; ``registryPullQPS`` is
an integer (int32 upstream) although it is held as a float.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import structlog

from kubelet_sim.config.preview import preview
from kubelet_sim.config.tables import OTHER_FEATURE_GATES, UPSTREAM_FIELDS
from kubelet_sim.core import reference
from kubelet_sim.core.durations import format_go_duration, parse_go_duration, seconds_to_ns
from kubelet_sim.errors import ConfigError, InvalidImageNameError

log = structlog.get_logger(__name__)

API_VERSION: Final = "kubelet.config.k8s.io/v1beta1"
KIND: Final = "KubeletConfiguration"
DEFAULT_CONTAINER_RUNTIME_ENDPOINT: Final = "unix:///run/containerd/containerd.sock"
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
INVALID: Final = "invalid configuration:"


class ImagePullCredentialsVerificationPolicy(StrEnum):
    """KEP-2535 policies for images already on the node (``KL:config/v1beta1/types.go``)."""

    NEVER_VERIFY = "NeverVerify"
    NEVER_VERIFY_PRELOADED_IMAGES = "NeverVerifyPreloadedImages"
    NEVER_VERIFY_ALLOWLISTED_IMAGES = "NeverVerifyAllowlistedImages"
    ALWAYS_VERIFY = "AlwaysVerify"


_POLICY = ImagePullCredentialsVerificationPolicy


class FeatureGate(StrEnum):
    """Gates the image engine consults, spelled as in ``pkg/features/kube_features.go``."""

    KUBELET_ENSURE_SECRET_PULLED_IMAGES = "KubeletEnsureSecretPulledImages"  # noqa: S105
    RUNTIME_CLASS_IN_IMAGE_CRI_API = "RuntimeClassInImageCriApi"
    KUBELET_SERVICE_ACCOUNT_TOKEN_FOR_CREDENTIAL_PROVIDERS = (
        "KubeletServiceAccountTokenForCredentialProviders"  # noqa: S105
    )
    IMAGE_MAXIMUM_GC_AGE = "ImageMaximumGCAge"


# Defaults of the v1.35 line: KEP-2535 beta (on), KEP-4216 alpha (off), service-account tokens
# for credential providers beta (on), ImageMaximumGCAge GA (on).
FEATURE_GATE_DEFAULTS: Final[Mapping[str, bool]] = MappingProxyType(
    {
        FeatureGate.KUBELET_ENSURE_SECRET_PULLED_IMAGES: True,
        FeatureGate.RUNTIME_CLASS_IN_IMAGE_CRI_API: False,
        FeatureGate.KUBELET_SERVICE_ACCOUNT_TOKEN_FOR_CREDENTIAL_PROVIDERS: True,
        FeatureGate.IMAGE_MAXIMUM_GC_AGE: True,
    }
)


_ENSURE_SECRET_PULLED = FeatureGate.KUBELET_ENSURE_SECRET_PULLED_IMAGES


class _Kind(StrEnum):
    """The Go type of an upstream field, which decides how its YAML value is decoded."""

    BOOL = "a boolean (true or false)"
    INT32 = "an integer"
    DURATION = 'a Go duration string such as "2m0s"'
    STRING = "a string"
    STRING_LIST = "a list of strings"
    GATES = "a mapping of feature gate names to booleans"


_B, _I, _D, _S, _L = _Kind.BOOL, _Kind.INT32, _Kind.DURATION, _Kind.STRING, _Kind.STRING_LIST
# The one camelCase <-> snake_case table: (YAML field, dataclass field, Go type).
FIELD_TABLE: Final[tuple[tuple[str, str, _Kind], ...]] = (
    ("serializeImagePulls", "serialize_image_pulls", _B),
    ("maxParallelImagePulls", "max_parallel_image_pulls", _I),
    ("registryPullQPS", "registry_pull_qps", _I),
    ("registryBurst", "registry_burst", _I),
    ("imageGCHighThresholdPercent", "image_gc_high_threshold_percent", _I),
    ("imageGCLowThresholdPercent", "image_gc_low_threshold_percent", _I),
    ("imageMinimumGCAge", "image_minimum_gc_age", _D),
    ("imageMaximumGCAge", "image_maximum_gc_age", _D),
    ("imagePullCredentialsVerificationPolicy", "image_pull_credentials_verification_policy", _S),
    ("preloadedImagesVerificationAllowlist", "preloaded_images_verification_allowlist", _L),
    ("staticPodPath", "static_pod_path", _S),
    ("featureGates", "feature_gates", _Kind.GATES),
    ("runtimeRequestTimeout", "runtime_request_timeout", _D),
    ("containerRuntimeEndpoint", "container_runtime_endpoint", _S),
    ("imageServiceEndpoint", "image_service_endpoint", _S),
    ("podCIDR", "pod_cidr", _S),
    ("clusterDomain", "cluster_domain", _S),
)  # fmt: skip
CAMEL_TO_SNAKE: Final[Mapping[str, str]] = MappingProxyType({c: s for c, s, _ in FIELD_TABLE})
SNAKE_TO_CAMEL: Final[Mapping[str, str]] = MappingProxyType({s: c for c, s, _ in FIELD_TABLE})
_KIND_OF: Final[Mapping[str, _Kind]] = MappingProxyType({c: k for c, _, k in FIELD_TABLE})
_NULLABLE: Final = frozenset(
    {"max_parallel_image_pulls", "static_pod_path", "image_pull_credentials_verification_policy"}
)

_TYPE_NAMES: Final[Mapping[type, str]] = MappingProxyType(
    {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping"}
)


def _is_cidr(text: str) -> bool:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return "/" in text and network.num_addresses >= 4


def _type_name(value: object) -> str:
    return "null" if value is None else _TYPE_NAMES.get(type(value), type(value).__name__)


def _decode(source: str | None, camel: str, value: object, *, python: bool = False) -> Any:
    """One YAML value -> its Python value, type-checked as the upstream Go field would be.

    With ``python=True`` (overrides given in code) durations may also be seconds, lists may
    be tuples and gates any mapping.
    """
    kind = _KIND_OF[camel]
    if kind is _Kind.BOOL and isinstance(value, bool):
        return value
    if kind is _Kind.INT32 and isinstance(value, int) and not isinstance(value, bool):
        if not _INT32_MIN <= value <= _INT32_MAX:
            shown = preview(value)
            raise ConfigError(source, camel, f"{shown} does not fit in a 32-bit integer")
        return value
    if kind is _Kind.DURATION and (
        isinstance(value, str) or (python and isinstance(value, int | float))
    ):
        try:
            if isinstance(value, str):
                seconds = parse_go_duration(value)
                seconds_to_ns(seconds)  # formattable as the Go duration it was parsed from
                return seconds
            if not isinstance(value, bool):
                return seconds_to_ns(value) / 1e9
        except ValueError as exc:
            raise ConfigError(source, camel, _bounded(str(exc))) from None
    if kind is _Kind.STRING and isinstance(value, str):
        return value
    if kind is _Kind.STRING_LIST and isinstance(value, list | tuple if python else list):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                shown = preview(item)
                raise ConfigError(source, f"{camel}[{index}]", f"must be a string, got {shown}")
        return tuple(value)
    if kind is _Kind.GATES and isinstance(value, Mapping if python else dict):
        for name, enabled in value.items():
            if not isinstance(enabled, bool):
                shown = preview(enabled)
                raise ConfigError(source, f"{camel}.{name}", f"must be a boolean, got {shown}")
        return dict(value)
    shown = preview(value)
    raise ConfigError(source, camel, f"must be {kind.value}, got {_type_name(value)} {shown}")


def _bounded(message: str, limit: int = 300) -> str:
    """A message that may quote what was written (Go's duration errors do), cut to ``limit``."""
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _check_gates(source: str | None, gates: Mapping[str, bool]) -> None:
    """Unknown names fail as in ``featuregate.SetFromMap`` (component-base)."""
    for name in gates:
        if name not in FEATURE_GATE_DEFAULTS and name not in OTHER_FEATURE_GATES:
            raise ConfigError(source, f"featureGates.{name}", f"unrecognized feature gate: {name}")


def _allowlist_error(pattern: str) -> str | None:
    """Why an allowlist entry is refused (``getAllowlistImagePattern``, pullmanager), or None."""
    if pattern != pattern.strip():
        return f"leading/trailing spaces are not allowed: {pattern}"
    wildcard = pattern.endswith("/*")
    trimmed = pattern[:-1] if wildcard else pattern
    if not trimmed:
        return f"the supplied pattern is too short: {pattern}"
    if "*" in trimmed:
        return (
            f"not a valid wildcard pattern, only patterns ending with '/*' are allowed: {pattern}"
        )
    if wildcard:
        return "at least registry hostname is required" if len(trimmed) == 1 else None
    try:
        # reference.Parse for the grammar's own messages, then ParseNormalizedNamed as upstream.
        parsed = reference.parse(trimmed)
        normalized = reference.parse_normalized(trimmed)
    except InvalidImageNameError as exc:
        return f"failed to parse as an image name: {exc.message}"
    if parsed.tag is not None or parsed.digest is not None:
        return f"neither tag nor digest is accepted in an image reference: {pattern}"
    # Upstream compares the entry with ParseNormalizedNamed(entry).Name(), so only a fully
    # qualified name passes.
    if normalized.name != trimmed:
        return (
            f"neither tag nor digest is accepted in an image reference: {pattern} "
            "(entries must be fully qualified, e.g. docker.io/library/nginx)"
        )
    return None


def _invalid(source: str | None, problems: list[tuple[str, str]]) -> ConfigError:
    """All validation errors in one ConfigError, as ``ValidateKubeletConfiguration`` aggregates
    them (``utilerrors.NewAggregate``: one message, or ``[m1, m2, ...]``), each message prefixed
    ``invalid configuration:`` as upstream's are."""
    messages = [f"{INVALID} {message}" for _, message in problems]
    if len(problems) == 1:
        ((camel, _),) = problems
        return ConfigError(source, camel, messages[0])
    named = tuple((camel, text) for (camel, _), text in zip(problems, messages, strict=True))
    return ConfigError(source, None, "[" + ", ".join(messages) + "]", problems=named)


@dataclass(frozen=True, slots=True)
class KubeletConfiguration:
    """The effective, validated image-related kubelet settings; durations are in seconds.

    Every instance is validated on construction (raising ConfigError naming ``source`` and
    the camelCase field). ``image_pull_credentials_verification_policy`` is None exactly when
    the KubeletEnsureSecretPulledImages gate is off; with the gate on, None is defaulted.
    """

    serialize_image_pulls: bool = True
    max_parallel_image_pulls: int | None = None
    registry_pull_qps: float = 5.0
    registry_burst: int = 10
    image_gc_high_threshold_percent: int = 85
    image_gc_low_threshold_percent: int = 80
    image_minimum_gc_age: float = 120.0
    image_maximum_gc_age: float = 0.0
    image_pull_credentials_verification_policy: ImagePullCredentialsVerificationPolicy | None = None
    preloaded_images_verification_allowlist: tuple[str, ...] = ()
    static_pod_path: str | None = None
    feature_gates: Mapping[str, bool] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    runtime_request_timeout: float = 120.0
    container_runtime_endpoint: str = DEFAULT_CONTAINER_RUNTIME_ENDPOINT
    image_service_endpoint: str = ""
    pod_cidr: str = ""
    """``podCIDR``: where sim pods' IPs come from (empty: 10.244.0.0/16)."""
    cluster_domain: str = ""
    """``clusterDomain``: the search domain of pods' FQDN hostnames (empty: cluster.local)."""
    source: str | None = None
    ignored_fields: tuple[str, ...] = ()
    strict_errors: tuple[str, ...] = field(default=(), compare=False)
    """What a strict decoder refused (unknown fields, duplicate keys) before lenient decoding."""

    def __post_init__(self) -> None:
        _check_gates(self.source, self.feature_gates)
        gates = MappingProxyType(dict(sorted(self.feature_gates.items())))
        object.__setattr__(self, "feature_gates", gates)
        allowlist = tuple(self.preloaded_images_verification_allowlist)
        object.__setattr__(self, "preloaded_images_verification_allowlist", allowlist)
        object.__setattr__(self, "ignored_fields", tuple(self.ignored_fields))
        problems = self._validate() + self._validate_verification()
        if problems:
            raise _invalid(self.source, problems)

    def _validate(self) -> list[tuple[str, str]]:
        """The image-related checks of ``ValidateKubeletConfiguration``, in upstream order."""
        high, low = self.image_gc_high_threshold_percent, self.image_gc_low_threshold_percent
        high_flag, low_flag = "(--image-gc-high-threshold)", "(--image-gc-low-threshold)"
        min_age, max_age = self.image_minimum_gc_age, self.image_maximum_gc_age
        min_text, max_text = format_go_duration(min_age), format_go_duration(max_age)
        limit, qps, burst = (
            self.max_parallel_image_pulls,
            self.registry_pull_qps,
            self.registry_burst,
        )
        max_age_gate = self.feature_enabled(FeatureGate.IMAGE_MAXIMUM_GC_AGE)
        checks: tuple[tuple[bool, str, str], ...] = (
            (not 0 <= high <= 100, "imageGCHighThresholdPercent", f"imageGCHighThresholdPercent "
             f"{high_flag} {high} must be between 0 and 100, inclusive"),
            (not 0 <= low <= 100, "imageGCLowThresholdPercent", f"imageGCLowThresholdPercent "
             f"{low_flag} {low} must be between 0 and 100, inclusive"),
            (low >= high, "imageGCLowThresholdPercent", f"imageGCLowThresholdPercent {low_flag} "
             f"{low} must be less than imageGCHighThresholdPercent {high_flag} {high}"),
            (max_age != 0 and not max_age_gate, "imageMaximumGCAge", "ImageMaximumGCAge feature "
             "gate is required for Kubelet configuration option imageMaximumGCAge"),
            (min_age < 0, "imageMinimumGCAge",
             f"imageMinimumGCAge {min_text} must not be negative"),
            (max_age < 0, "imageMaximumGCAge",
             f"imageMaximumGCAge {max_text} must not be negative"),
            (0 < max_age <= min_age, "imageMaximumGCAge",
             f"imageMaximumGCAge {max_text} must be greater than imageMinimumGCAge {min_text}"),
            (burst < 0, "registryBurst",
             f"registryBurst (--registry-burst) {burst} must not be a negative number"),
            (qps < 0, "registryPullQPS",
             f"registryPullQPS (--registry-qps) {qps:g} must not be a negative number"),
            (limit is not None and limit < 1, "maxParallelImagePulls",
             f"maxParallelImagePulls {limit} must be a positive number"),
            (self.serialize_image_pulls and limit is not None and limit > 1,
             "maxParallelImagePulls", "maxParallelImagePulls cannot be larger than 1 unless "
             "SerializeImagePulls (--serialize-image-pulls) is set to false"),
            # Not checked upstream, but a negative timeout would fail every CRI call at once.
            (self.runtime_request_timeout < 0, "runtimeRequestTimeout", "must not be negative"),
            (bool(self.pod_cidr) and not _is_cidr(self.pod_cidr), "podCIDR",
             f'invalid CIDR address: "{self.pod_cidr}"'),
        )  # fmt: skip
        return [(camel, message) for failed, camel, message in checks if failed]

    def _validate_verification(self) -> list[tuple[str, str]]:
        """KEP-2535 settings: only with the gate on; the allowlist only for its policy."""
        policy_field = "imagePullCredentialsVerificationPolicy"
        list_field = "preloadedImagesVerificationAllowlist"
        policy = self.image_pull_credentials_verification_policy
        allowlist = self.preloaded_images_verification_allowlist
        problems: list[tuple[str, str]] = []
        if not self.feature_enabled(_ENSURE_SECRET_PULLED):
            for camel, value in ((policy_field, policy), (list_field, allowlist)):
                if value:
                    message = "must not be set if KubeletEnsureSecretPulledImages feature gate"
                    problems.append((camel, f"`{camel}` {message} is not enabled"))
            return problems
        if policy is None:  # SetDefaults_KubeletConfiguration, when the gate is on
            policy = _POLICY.NEVER_VERIFY_PRELOADED_IMAGES
        if policy not in tuple(_POLICY):
            options = ", ".join(f'"{p}"' for p in list(_POLICY)[:-1])
            message = f'Valid options are {options} or "{_POLICY.ALWAYS_VERIFY}"'
            message = f'option "{policy}" specified for {policy_field}. {message}'
            return [(policy_field, message)]
        object.__setattr__(self, "image_pull_credentials_verification_policy", _POLICY(policy))
        if allowlist and policy != _POLICY.NEVER_VERIFY_ALLOWLISTED_IMAGES:
            message = f'`{policy_field}` is not "{_POLICY.NEVER_VERIFY_ALLOWLISTED_IMAGES}"'
            problems.append((list_field, f"can't set `{list_field}` if {message}"))
        for index, pattern in enumerate(allowlist):
            problem = _allowlist_error(pattern)
            if problem:
                message = f"invalid image pattern in `{list_field}`: {problem}"
                problems.append((f"{list_field}[{index}]", message))
        return problems

    @classmethod
    def default(cls) -> KubeletConfiguration:
        """The upstream defaults: what a kubelet with an empty config file runs with."""
        return cls()

    def feature_enabled(self, name: str) -> bool:
        """Whether a gate is on: the configured value, else the modelled upstream default.

        Raises:
            KeyError: ``name`` is not a feature gate kubelet-sim knows (a programming error).
        """
        if name in self.feature_gates:
            return self.feature_gates[name]
        if name in FEATURE_GATE_DEFAULTS:
            return FEATURE_GATE_DEFAULTS[name]
        if name in OTHER_FEATURE_GATES:
            return False  # defaults of gates the engine never consults are not modelled
        raise KeyError(f"unknown feature gate {name!r}")

    @property
    def effective_verification_policy(self) -> ImagePullCredentialsVerificationPolicy:
        """The KEP-2535 policy in force: NeverVerify when the gate is off (no pull records)."""
        return self.image_pull_credentials_verification_policy or _POLICY.NEVER_VERIFY

    def with_overrides(self, **overrides: object) -> KubeletConfiguration:
        """A validated copy with some snake_case fields replaced (per-node overrides).

        Values are type-checked as YAML values are; durations may be seconds or Go duration
        strings; None resets a nullable field. Turning KubeletEnsureSecretPulledImages off
        without overriding the policy drops the (defaulted) policy, as upstream defaulting would.

        Raises:
            ConfigError: an unknown field, a wrong type or an invalid result.
        """
        changes: dict[str, Any] = {}
        for snake, value in overrides.items():
            camel = SNAKE_TO_CAMEL.get(snake)
            if camel is None:
                raise ConfigError(self.source, snake, "unknown KubeletConfiguration field")
            if value is not None or snake not in _NULLABLE:
                value = _decode(self.source, camel, value, python=True)
            changes[snake] = value
        if "registry_pull_qps" in changes:
            changes["registry_pull_qps"] = float(changes["registry_pull_qps"])
        policy = "image_pull_credentials_verification_policy"
        gates = changes.get("feature_gates")
        if (
            gates is not None
            and policy not in changes
            and not gates.get(_ENSURE_SECRET_PULLED, True)
        ):
            changes[policy] = None
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The effective settings as a camelCase KubeletConfiguration document (loadable)."""
        out: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND}
        for camel, snake, kind in FIELD_TABLE:
            value = getattr(self, snake)
            if kind is _Kind.DURATION:
                value = format_go_duration(value)
            elif snake == "registry_pull_qps":
                value = int(value)
            elif kind is _Kind.STRING_LIST:
                value = list(value)
            elif kind is _Kind.GATES:
                value = dict(value)
            elif isinstance(value, StrEnum):
                value = value.value
            if value is not None or snake == "max_parallel_image_pulls":
                out[camel] = value
        return out


def _read_document(text: str, source: str) -> tuple[dict[Any, Any], tuple[tuple[str, int], ...]]:
    """The one document of ``text`` and its duplicate keys (name, line), read with the hardened
    loader (:mod:`kubelet_sim.config.yamlsafe`): a key or value Python cannot take, integers
    wider than 64 bits, alias bombs and deep nesting are errors with their position."""
    from kubelet_sim.config import yamlsafe  # PyYAML only when a file is read: not for defaults

    loaded = yamlsafe.read(text, source)
    documents = [document for document in loaded.documents if document is not None]
    if not documents:
        raise ConfigError(source, None, "empty file: expected a KubeletConfiguration document")
    if len(documents) > 1:
        message = f"{len(documents)} YAML documents; expected exactly one KubeletConfiguration"
        raise ConfigError(source, None, message)
    document = documents[0]
    if not isinstance(document, dict):
        message = f"expected a mapping at the top level, got {_type_name(document)}"
        raise ConfigError(source, None, message)
    return document, loaded.duplicate_keys


def parse_kubelet_config(
    text: str,
    source: str = "<string>",
    *,
    base_dir: str | os.PathLike[str] | None = None,
    strict: bool = False,
) -> KubeletConfiguration:
    """Decode, default and validate one KubeletConfiguration YAML document, as the kubelet does.

    The kubelet decodes strictly first; when that fails only with strict errors (unknown fields,
    duplicate keys) it logs them and decodes leniently: unknown fields are dropped and the last
    of duplicate keys wins (``kubeletconfig/util/codec.DecodeKubeletConfiguration``). The
    strict errors are kept in :attr:`KubeletConfiguration.strict_errors` for the caller to report
    (the daemon logs them, ``config validate`` prints them). With ``strict=True`` they are refused
    instead (``kubelet-sim config validate --strict``).

    Args:
        text: the YAML text (exactly one document).
        source: the name used in errors and logs (usually the file path).
        base_dir: the folder a relative ``staticPodPath`` is resolved against; kept as
            written when None.
        strict: refuse unknown fields and duplicate keys instead of decoding leniently.

    Raises:
        ConfigError: naming ``source`` and the offending field (camelCase, as in the YAML); every
            validation error at once, prefixed ``invalid configuration:``.
    """
    document, duplicates = _read_document(text, source)
    return _from_document(document, source, duplicates, base_dir, strict)


def decode_kubelet_config(
    document: Mapping[Any, Any],
    source: str,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    strict: bool = False,
) -> KubeletConfiguration:
    """Decode, default and validate a KubeletConfiguration already read as a mapping (a workload
    file's ``kubelet`` section), as :func:`parse_kubelet_config` does with a document's.

    Raises:
        ConfigError: as :func:`parse_kubelet_config`.
    """
    return _from_document(document, source, (), base_dir, strict)


def _from_document(
    document: Mapping[Any, Any],
    source: str,
    duplicates: tuple[tuple[str, int], ...],
    base_dir: str | os.PathLike[str] | None,
    strict: bool,
) -> KubeletConfiguration:
    for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        if key not in document:
            raise ConfigError(source, key, f"missing; expected {expected!r}")
        if document[key] != expected:
            shown = preview(document[key])
            raise ConfigError(source, key, f"{shown} is not supported; expected {expected!r}")
    strict_errors = [
        ConfigError(source, key, f"duplicate key (line {line})") for key, line in duplicates
    ]
    values: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in document.items():
        if key in ("apiVersion", "kind"):
            continue
        if key in CAMEL_TO_SNAKE:
            if value is not None:  # null means unset, as for Go's omitempty fields
                values[key] = _decode(source, key, value)
        elif key in UPSTREAM_FIELDS:
            ignored.append(key)
            log.info("kubelet_config_field_ignored", field=key, file=source)
        else:
            message = (
                "unknown field: not a kubelet.config.k8s.io/v1beta1 KubeletConfiguration field"
            )
            strict_errors.append(ConfigError(source, str(key), message))
    if strict_errors and strict:
        if len(strict_errors) == 1:
            raise strict_errors[0]
        problems = tuple((e.field, e.message) for e in strict_errors)
        joined = ", ".join(f"{e.field}: {e.message}" for e in strict_errors)
        raise ConfigError(source, None, f"strict decoding: [{joined}]", problems=problems)
    base = None if base_dir is None else os.fspath(base_dir)
    config = _build(values, source, tuple(ignored), base)
    object.__setattr__(config, "strict_errors", tuple(str(e) for e in strict_errors))
    return config


def _build(
    values: dict[str, Any], source: str, ignored: tuple[str, ...], base_dir: str | None
) -> KubeletConfiguration:
    """Apply ``SetDefaults_KubeletConfiguration`` to the decoded fields and construct."""
    limit = values.get("maxParallelImagePulls")
    values.setdefault("serializeImagePulls", limit is None or limit < 2)
    # Zero values of non-pointer upstream fields mean "unset" and take the default.
    for camel, default in (
        ("registryBurst", 10),
        ("imageMinimumGCAge", 120.0),
        ("runtimeRequestTimeout", 120.0),
        ("containerRuntimeEndpoint", DEFAULT_CONTAINER_RUNTIME_ENDPOINT),
        ("imagePullCredentialsVerificationPolicy", None),
        ("staticPodPath", None),
    ):
        values[camel] = values.get(camel) or default
    if "registryPullQPS" in values:
        values["registryPullQPS"] = float(values["registryPullQPS"])
    # Relative paths in a config file are relative to its folder (kubelet's configfiles loader).
    static_pod_path = values["staticPodPath"]
    if static_pod_path and base_dir is not None and not os.path.isabs(static_pod_path):
        values["staticPodPath"] = os.path.normpath(os.path.join(base_dir, static_pod_path))
    fields = {CAMEL_TO_SNAKE[camel]: value for camel, value in values.items()}
    return KubeletConfiguration(**fields, source=source, ignored_fields=ignored)


def load_kubelet_config(
    path: str | os.PathLike[str], *, strict: bool = False
) -> KubeletConfiguration:
    """Read, default and validate a KubeletConfiguration file (see :func:`parse_kubelet_config`).

    A relative ``staticPodPath`` is resolved against the file's folder.

    Raises:
        ConfigError: the file is missing or unreadable, or its content is refused.
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, None, "file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, None, f"cannot read file: {exc}") from None
    base_dir = os.path.dirname(os.path.abspath(source))
    return parse_kubelet_config(text, source, base_dir=base_dir, strict=strict)
