"""KubeletConfiguration loading: upstream defaults, validation messages, strictness, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from structlog.testing import capture_logs

from kubelet_sim.cli.main import main
from kubelet_sim.config.kubelet import (
    CAMEL_TO_SNAKE,
    FEATURE_GATE_DEFAULTS,
    FIELD_TABLE,
    SNAKE_TO_CAMEL,
    FeatureGate,
    ImagePullCredentialsVerificationPolicy,
    KubeletConfiguration,
    load_kubelet_config,
    parse_kubelet_config,
)
from kubelet_sim.config.tables import UPSTREAM_FIELDS
from kubelet_sim.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "kubelet.yaml"
KUBEADM = REPO / "tests" / "data" / "kubeadm-kubelet-config.yaml"
HEADER = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
Policy = ImagePullCredentialsVerificationPolicy


def parse(body: str) -> KubeletConfiguration:
    return parse_kubelet_config(HEADER + body, "node.yaml")


def refused(body: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(body)
    assert info.value.file == "node.yaml"
    assert "node.yaml" in str(info.value)
    return info.value


# --- defaults ------------------------------------------------------------------------------------


def test_defaults_are_upstream_defaults() -> None:
    config = KubeletConfiguration.default()
    assert config.serialize_image_pulls is True
    assert config.max_parallel_image_pulls is None
    assert config.registry_pull_qps == 5.0
    assert config.registry_burst == 10
    assert config.image_gc_high_threshold_percent == 85
    assert config.image_gc_low_threshold_percent == 80
    assert config.image_minimum_gc_age == 120.0
    assert config.image_maximum_gc_age == 0.0
    assert config.image_pull_credentials_verification_policy is Policy.NEVER_VERIFY_PRELOADED_IMAGES
    assert config.preloaded_images_verification_allowlist == ()
    assert config.static_pod_path is None
    assert dict(config.feature_gates) == {}
    assert config.runtime_request_timeout == 120.0
    assert config.container_runtime_endpoint == "unix:///run/containerd/containerd.sock"
    assert config.source is None
    assert config.ignored_fields == ()


def test_an_empty_config_file_means_the_defaults() -> None:
    config = parse("")
    assert config == dataclasses.replace(KubeletConfiguration.default(), source="node.yaml")


@pytest.mark.parametrize(
    ("gate", "default"),
    [
        pytest.param(FeatureGate.KUBELET_ENSURE_SECRET_PULLED_IMAGES, True, id="kep-2535-beta"),
        pytest.param(FeatureGate.RUNTIME_CLASS_IN_IMAGE_CRI_API, False, id="kep-4216-alpha"),
        pytest.param(
            FeatureGate.KUBELET_SERVICE_ACCOUNT_TOKEN_FOR_CREDENTIAL_PROVIDERS,
            True,
            id="sa-tokens-beta",
        ),
        pytest.param(FeatureGate.IMAGE_MAXIMUM_GC_AGE, True, id="max-gc-age-ga"),
    ],
)
def test_feature_gate_defaults(gate: FeatureGate, default: bool) -> None:
    assert FEATURE_GATE_DEFAULTS[gate] is default
    assert KubeletConfiguration.default().feature_enabled(gate) is default
    assert parse(f"featureGates: {{{gate}: {str(not default).lower()}}}").feature_enabled(gate) is (
        not default
    )


def test_runtime_class_gate_uses_the_upstream_spelling() -> None:
    # The Go constant is RuntimeClassInImageCriAPI, the gate string "RuntimeClassInImageCriApi".
    assert parse("featureGates: {RuntimeClassInImageCriApi: true}").feature_enabled(
        "RuntimeClassInImageCriApi"
    )
    assert refused("featureGates: {RuntimeClassInImageCriAPI: true}").field == (
        "featureGates.RuntimeClassInImageCriAPI"
    )


def test_feature_enabled_refuses_a_name_nobody_knows() -> None:
    with pytest.raises(KeyError, match="NoSuchGate"):
        KubeletConfiguration.default().feature_enabled("NoSuchGate")


def test_gates_the_engine_does_not_consult_are_off_unless_set() -> None:
    config = parse("featureGates: {NodeSwap: true}")
    assert config.feature_enabled("NodeSwap") is True
    assert KubeletConfiguration.default().feature_enabled("NodeSwap") is False


# --- accepted values and defaulting ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("serializeImagePulls: false", {"serialize_image_pulls": False}, id="parallel"),
        pytest.param("serializeImagePulls: no", {"serialize_image_pulls": False}, id="yaml11-no"),
        pytest.param(
            "serializeImagePulls: false\nmaxParallelImagePulls: 3",
            {"serialize_image_pulls": False, "max_parallel_image_pulls": 3},
            id="capped",
        ),
        pytest.param(
            "maxParallelImagePulls: 4",
            {"serialize_image_pulls": False, "max_parallel_image_pulls": 4},
            id="max-alone-defaults-serialize-false",
        ),
        pytest.param(
            "maxParallelImagePulls: 1",
            {"serialize_image_pulls": True, "max_parallel_image_pulls": 1},
            id="max-one-keeps-serial",
        ),
        pytest.param(
            "serializeImagePulls: true\nmaxParallelImagePulls: 1",
            {"serialize_image_pulls": True, "max_parallel_image_pulls": 1},
            id="serial-with-one",
        ),
        pytest.param(
            "maxParallelImagePulls: null", {"max_parallel_image_pulls": None}, id="null-is-unset"
        ),
        pytest.param("registryPullQPS: 0", {"registry_pull_qps": 0.0}, id="qps-zero-unlimited"),
        pytest.param("registryPullQPS: 20", {"registry_pull_qps": 20.0}, id="qps"),
        pytest.param("registryBurst: 0", {"registry_burst": 10}, id="burst-zero-is-unset"),
        pytest.param("registryBurst: 3", {"registry_burst": 3}, id="burst"),
        pytest.param("registryBurst: 0x10", {"registry_burst": 16}, id="yaml-hex-int"),
        pytest.param(
            "imageGCHighThresholdPercent: 100\nimageGCLowThresholdPercent: 0",
            {"image_gc_high_threshold_percent": 100, "image_gc_low_threshold_percent": 0},
            id="gc-extremes",
        ),
        pytest.param(
            "imageMinimumGCAge: 0s", {"image_minimum_gc_age": 120.0}, id="min-age-zero-is-unset"
        ),
        pytest.param(
            "imageMinimumGCAge: '0'", {"image_minimum_gc_age": 120.0}, id="min-age-go-zero"
        ),
        pytest.param("imageMinimumGCAge: 300ms", {"image_minimum_gc_age": 0.3}, id="min-age-ms"),
        pytest.param("imageMaximumGCAge: 1h30m", {"image_maximum_gc_age": 5400.0}, id="max-age"),
        pytest.param(
            "imageMaximumGCAge: 1.5h", {"image_maximum_gc_age": 5400.0}, id="max-age-fractional"
        ),
        pytest.param(
            "imageMinimumGCAge: 1m\nimageMaximumGCAge: 1m0.001s",
            {"image_maximum_gc_age": 60.001},
            id="max-just-above-min",
        ),
        pytest.param(
            "runtimeRequestTimeout: 0s",
            {"runtime_request_timeout": 120.0},
            id="timeout-zero-is-unset",
        ),
        pytest.param(
            "runtimeRequestTimeout: 10m", {"runtime_request_timeout": 600.0}, id="timeout"
        ),
        pytest.param(
            "containerRuntimeEndpoint: ''",
            {"container_runtime_endpoint": "unix:///run/containerd/containerd.sock"},
            id="kubeadm-empty-endpoint",
        ),
        pytest.param(
            "imageServiceEndpoint: unix:///run/crio/crio.sock",
            {"image_service_endpoint": "unix:///run/crio/crio.sock"},
            id="image-endpoint",
        ),
        pytest.param(
            "staticPodPath: /etc/kubernetes/manifests",
            {"static_pod_path": "/etc/kubernetes/manifests"},
            id="static-pods",
        ),
        pytest.param("staticPodPath: ''", {"static_pod_path": None}, id="static-pods-empty"),
        pytest.param(
            "imagePullCredentialsVerificationPolicy: AlwaysVerify",
            {"image_pull_credentials_verification_policy": Policy.ALWAYS_VERIFY},
            id="always-verify",
        ),
        pytest.param(
            "imagePullCredentialsVerificationPolicy: ''",
            {"image_pull_credentials_verification_policy": Policy.NEVER_VERIFY_PRELOADED_IMAGES},
            id="empty-policy-defaulted",
        ),
        pytest.param(
            "featureGates: {KubeletEnsureSecretPulledImages: false}",
            {"image_pull_credentials_verification_policy": None},
            id="gate-off-no-policy",
        ),
        pytest.param(
            "imagePullCredentialsVerificationPolicy: NeverVerifyAllowlistedImages\n"
            "preloadedImagesVerificationAllowlist:\n- registry.k8s.io/pause\n"
            "- docker.io/library/*\n- localhost:5000/team/app\n- Registry.Local/x\n"
            "- '[::1]:5000/*'",
            {
                "preloaded_images_verification_allowlist": (
                    "registry.k8s.io/pause",
                    "docker.io/library/*",
                    "localhost:5000/team/app",
                    "Registry.Local/x",
                    "[::1]:5000/*",
                )
            },
            id="allowlist",
        ),
    ],
)
def test_accepted_values(body: str, expected: dict[str, Any]) -> None:
    config = parse(body)
    for name, value in expected.items():
        assert getattr(config, name) == value, name


def test_gate_off_means_never_verify() -> None:
    config = parse("featureGates: {KubeletEnsureSecretPulledImages: false}")
    assert config.effective_verification_policy is Policy.NEVER_VERIFY
    assert "imagePullCredentialsVerificationPolicy" not in config.to_dict()


# --- refused values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        pytest.param(
            "serializeImagePulls: yes-please",
            "serializeImagePulls",
            "must be a boolean (true or false), got string 'yes-please'",
            id="bool-str",
        ),
        pytest.param(
            "serializeImagePulls: 1", "serializeImagePulls", "must be a boolean", id="bool-int"
        ),
        pytest.param(
            "maxParallelImagePulls: three",
            "maxParallelImagePulls",
            "must be an integer, got string 'three'",
            id="int-str",
        ),
        pytest.param(
            "maxParallelImagePulls: 2.0",
            "maxParallelImagePulls",
            "must be an integer, got number 2.0",
            id="int-float",
        ),
        pytest.param(
            "maxParallelImagePulls: true",
            "maxParallelImagePulls",
            "must be an integer, got boolean",
            id="int-bool",
        ),
        pytest.param(
            "maxParallelImagePulls: 0",
            "maxParallelImagePulls",
            "maxParallelImagePulls 0 must be a positive number",
            id="max-zero",
        ),
        pytest.param(
            "maxParallelImagePulls: -2",
            "maxParallelImagePulls",
            "maxParallelImagePulls -2 must be a positive number",
            id="max-negative",
        ),
        pytest.param(
            "maxParallelImagePulls: 2147483648",
            "maxParallelImagePulls",
            "does not fit in a 32-bit integer",
            id="max-int32-overflow",
        ),
        pytest.param("registryPullQPS: '5'", "registryPullQPS", "must be an integer", id="qps-str"),
        pytest.param(
            "registryPullQPS: 2.5",
            "registryPullQPS",
            "must be an integer, got number 2.5",
            id="qps-float-is-int32-upstream",
        ),
        pytest.param(
            "registryPullQPS: -1",
            "registryPullQPS",
            "registryPullQPS (--registry-qps) -1 must not be a negative number",
            id="qps-negative",
        ),
        pytest.param(
            "registryBurst: -1",
            "registryBurst",
            "registryBurst (--registry-burst) -1 must not be a negative number",
            id="burst-negative",
        ),
        pytest.param(
            "registryBurst: [10]", "registryBurst", "must be an integer, got list", id="burst-list"
        ),
        pytest.param(
            "imageGCHighThresholdPercent: 101",
            "imageGCHighThresholdPercent",
            "imageGCHighThresholdPercent (--image-gc-high-threshold) 101 must be between "
            "0 and 100, inclusive",
            id="high-over",
        ),
        pytest.param(
            "imageGCHighThresholdPercent: -1",
            "imageGCHighThresholdPercent",
            "must be between 0 and 100, inclusive",
            id="high-under",
        ),
        pytest.param(
            "imageGCLowThresholdPercent: 101",
            "imageGCLowThresholdPercent",
            "imageGCLowThresholdPercent (--image-gc-low-threshold) 101 must be between "
            "0 and 100, inclusive",
            id="low-over",
        ),
        pytest.param(
            "imageGCLowThresholdPercent: 85",
            "imageGCLowThresholdPercent",
            "imageGCLowThresholdPercent (--image-gc-low-threshold) 85 must be less than "
            "imageGCHighThresholdPercent (--image-gc-high-threshold) 85",
            id="low-eq-high",
        ),
        pytest.param(
            "imageGCHighThresholdPercent: 50",
            "imageGCLowThresholdPercent",
            "80 must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) 50",
            id="default-low-above-high",
        ),
        pytest.param(
            "imageMinimumGCAge: 2",
            "imageMinimumGCAge",
            'must be a Go duration string such as "2m0s", got integer 2',
            id="age-int",
        ),
        pytest.param(
            "imageMinimumGCAge: 2 minutes",
            "imageMinimumGCAge",
            'time: unknown unit " minutes" in duration "2 minutes"',
            id="age-prose",
        ),
        pytest.param(
            "imageMinimumGCAge: 3", "imageMinimumGCAge", "got integer 3", id="age-no-unit"
        ),
        pytest.param(
            "imageMinimumGCAge: '3'",
            "imageMinimumGCAge",
            'time: missing unit in duration "3"',
            id="age-str-no-unit",
        ),
        pytest.param(
            "imageMinimumGCAge: -1s",
            "imageMinimumGCAge",
            "imageMinimumGCAge -1s must not be negative",
            id="min-age-negative",
        ),
        pytest.param(
            "imageMaximumGCAge: -1s",
            "imageMaximumGCAge",
            "imageMaximumGCAge -1s must not be negative",
            id="max-age-negative",
        ),
        pytest.param(
            "imageMaximumGCAge: 1d",
            "imageMaximumGCAge",
            'time: unknown unit "d" in duration "1d"',
            id="max-age-days",
        ),
        pytest.param(
            "imageMaximumGCAge: 1m",
            "imageMaximumGCAge",
            "imageMaximumGCAge 1m0s must be greater than imageMinimumGCAge 2m0s",
            id="max-below-default-min",
        ),
        pytest.param(
            "imageMinimumGCAge: 5m\nimageMaximumGCAge: 5m",
            "imageMaximumGCAge",
            "imageMaximumGCAge 5m0s must be greater than imageMinimumGCAge 5m0s",
            id="max-equal-min",
        ),
        pytest.param(
            "imageMaximumGCAge: 1h\nfeatureGates: {ImageMaximumGCAge: false}",
            "imageMaximumGCAge",
            "ImageMaximumGCAge feature gate is required for Kubelet "
            "configuration option imageMaximumGCAge",
            id="max-age-gate-off",
        ),
        pytest.param(
            "runtimeRequestTimeout: -5s",
            "runtimeRequestTimeout",
            "must not be negative",
            id="timeout-negative",
        ),
        pytest.param(
            "runtimeRequestTimeout: 10",
            "runtimeRequestTimeout",
            "must be a Go duration string",
            id="timeout-int",
        ),
        pytest.param(
            "staticPodPath: 42",
            "staticPodPath",
            "must be a string, got integer 42",
            id="static-path-int",
        ),
        pytest.param(
            "containerRuntimeEndpoint: {unix: x}",
            "containerRuntimeEndpoint",
            "must be a string, got mapping",
            id="endpoint-map",
        ),
        pytest.param(
            "imageServiceEndpoint: [a]",
            "imageServiceEndpoint",
            "must be a string",
            id="image-endpoint-list",
        ),
        pytest.param(
            "imagePullCredentialsVerificationPolicy: Sometimes",
            "imagePullCredentialsVerificationPolicy",
            'option "Sometimes" specified for imagePullCredentialsVerificationPolicy. '
            'Valid options are "NeverVerify", "NeverVerifyPreloadedImages", '
            '"NeverVerifyAllowlistedImages" or "AlwaysVerify"',
            id="policy-unknown",
        ),
        pytest.param(
            "imagePullCredentialsVerificationPolicy: alwaysverify",
            "imagePullCredentialsVerificationPolicy",
            'option "alwaysverify"',
            id="policy-case-sensitive",
        ),
        pytest.param(
            "imagePullCredentialsVerificationPolicy: AlwaysVerify\n"
            "featureGates: {KubeletEnsureSecretPulledImages: false}",
            "imagePullCredentialsVerificationPolicy",
            "`imagePullCredentialsVerificationPolicy` must not be set if "
            "KubeletEnsureSecretPulledImages feature gate is not enabled",
            id="policy-without-gate",
        ),
        pytest.param(
            "preloadedImagesVerificationAllowlist: [docker.io/library/*]\n"
            "featureGates: {KubeletEnsureSecretPulledImages: false}",
            "preloadedImagesVerificationAllowlist",
            "`preloadedImagesVerificationAllowlist` must not be set if "
            "KubeletEnsureSecretPulledImages feature gate is not enabled",
            id="allowlist-without-gate",
        ),
        pytest.param(
            "preloadedImagesVerificationAllowlist: [registry.k8s.io/pause]",
            "preloadedImagesVerificationAllowlist",
            "can't set `preloadedImagesVerificationAllowlist` if "
            '`imagePullCredentialsVerificationPolicy` is not "NeverVerifyAllowlistedImages"',
            id="allowlist-wrong-policy",
        ),
        pytest.param(
            "preloadedImagesVerificationAllowlist: registry.k8s.io/pause",
            "preloadedImagesVerificationAllowlist",
            "must be a list of strings, got string",
            id="allowlist-not-list",
        ),
        pytest.param(
            "imagePullCredentialsVerificationPolicy: NeverVerifyAllowlistedImages\n"
            "preloadedImagesVerificationAllowlist: [registry.k8s.io/pause, 7]",
            "preloadedImagesVerificationAllowlist[1]",
            "must be a string, got 7",
            id="allowlist-item-int",
        ),
        pytest.param(
            "featureGates: {NoSuchGate: true}",
            "featureGates.NoSuchGate",
            "unrecognized feature gate: NoSuchGate",
            id="gate-unknown",
        ),
        pytest.param(
            "featureGates: {kubeletEnsureSecretPulledImages: true}",
            "featureGates.kubeletEnsureSecretPulledImages",
            "unrecognized feature gate",
            id="gate-case-sensitive",
        ),
        pytest.param(
            "featureGates: {NodeSwap: 'true'}",
            "featureGates.NodeSwap",
            "must be a boolean, got 'true'",
            id="gate-string-value",
        ),
        pytest.param(
            "featureGates: [NodeSwap]",
            "featureGates",
            "must be a mapping of feature gate names to booleans, got list",
            id="gates-list",
        ),
    ],
)
def test_refused_values_name_file_and_field(body: str, field: str, message: str) -> None:
    # Every validation error is reported (high-under and low-over break two rules each): the
    # first names this field and carries this message.
    error = refused(body)
    first_field, first_message = error.problems[0]
    assert first_field == field
    assert message in first_message
    assert str(error).startswith("node.yaml: ")
    assert field in str(error)


ALLOWLIST = "imagePullCredentialsVerificationPolicy: NeverVerifyAllowlistedImages\n"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        pytest.param(
            "' docker.io/library/nginx'",
            "leading/trailing spaces are not allowed",
            id="leading-space",
        ),
        pytest.param("'docker.io/library/*'", None, id="wildcard-ok"),
        pytest.param(
            "'docker.io/*/nginx'",
            "not a valid wildcard pattern, only patterns ending "
            "with '/*' are allowed: docker.io/*/nginx",
            id="inner-wildcard",
        ),
        pytest.param(
            "'docker.io/library/ngi*'",
            "not a valid wildcard pattern",
            id="partial-segment-wildcard",
        ),
        pytest.param("'*'", "not a valid wildcard pattern", id="bare-star"),
        pytest.param("'/*'", "at least registry hostname is required", id="no-host"),
        pytest.param("''", "the supplied pattern is too short", id="empty"),
        pytest.param(
            "registry.k8s.io/pause:3.9",
            "neither tag nor digest is accepted in an image reference: registry.k8s.io/pause:3.9",
            id="tag",
        ),
        pytest.param(
            "registry.k8s.io/pause@sha256:" + "a" * 64, "neither tag nor digest", id="digest"
        ),
        pytest.param("nginx", "entries must be fully qualified", id="familiar-name"),
        pytest.param("library/nginx", "entries must be fully qualified", id="no-domain"),
        pytest.param("docker.io/nginx", "entries must be fully qualified", id="docker-no-library"),
        pytest.param(
            "index.docker.io/library/nginx", "entries must be fully qualified", id="index-docker-io"
        ),
        pytest.param("docker.io/library/nginx", None, id="normalised-ok"),
        pytest.param(
            "registry.example/Team/app", "repository name must be lowercase", id="uppercase-path"
        ),
        pytest.param("registry.example/a//b", "invalid reference format", id="empty-segment"),
        pytest.param(
            "registry.example/" + "a" * 256,
            "repository name must not be more than 255 characters",
            id="too-long",
        ),
        # The checks below are reference.parse_normalized's (ParseNormalizedNamed) own.
        pytest.param("a" * 64, "cannot specify 64-byte hexadecimal strings", id="hex-identifier"),
        pytest.param(
            "registry.k8s.io/pause@sha256:" + "a" * 32,
            "failed to parse as an image name: invalid checksum digest length",
            id="short-digest",
        ),
        pytest.param("localhost/app", None, id="localhost-domain-ok"),
        pytest.param("localhost:5000/team/app", None, id="port-ok"),
        pytest.param("'[::1]:5000/app'", None, id="ipv6-ok"),
        pytest.param("Registry/app", None, id="uppercase-first-component-is-a-domain"),
    ],
)
def test_allowlist_entries(entry: str, message: str | None) -> None:
    body = (
        f"{ALLOWLIST}preloadedImagesVerificationAllowlist:\n- docker.io/library/busybox\n- {entry}"
    )
    if message is None:
        assert len(parse(body).preloaded_images_verification_allowlist) == 2
        return
    error = refused(body)
    assert error.field == "preloadedImagesVerificationAllowlist[1]"
    assert error.message.startswith(
        "invalid configuration: invalid image pattern in `preloadedImagesVerificationAllowlist`"
    )
    assert message in error.message


# --- strictness, document shape, broken files ----------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        pytest.param("imagePullProgressDeadline", id="dockershim-flag-not-in-v1beta1"),
        pytest.param("serialiseImagePulls", id="british-typo"),
        pytest.param("SerializeImagePulls", id="go-field-name"),
        pytest.param("metadata", id="metadata"),
    ],
)
def test_unknown_fields_are_strict_errors_named_by_field(field: str) -> None:
    # The kubelet decodes leniently after a strict failure: the field is dropped and reported.
    config = parse(f"{field}: 1m")
    assert config == parse("")
    (strict_error,) = config.strict_errors
    assert strict_error.startswith(f"node.yaml: {field}: unknown field")
    with pytest.raises(ConfigError) as info:
        parse_kubelet_config(HEADER + f"{field}: 1m", "node.yaml", strict=True)
    assert info.value.field == field
    assert "unknown field" in info.value.message


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        pytest.param("", None, "empty file", id="empty"),
        pytest.param("# only a comment\n---\n", None, "empty file", id="comments-only"),
        pytest.param(HEADER + "---\n" + HEADER, None, "2 YAML documents", id="two-documents"),
        pytest.param(
            "- a\n- b\n", None, "expected a mapping at the top level, got list", id="list"
        ),
        pytest.param("just text\n", None, "got string", id="scalar"),
        pytest.param(HEADER + "featureGates: {a: b\n", None, "invalid YAML", id="syntax"),
        pytest.param(
            HEADER + "x: !!python/object:os.system ls\n", None, "invalid YAML", id="unsafe-tag"
        ),
        pytest.param("kind: KubeletConfiguration\n", "apiVersion", "missing", id="no-apiversion"),
        pytest.param(
            "apiVersion: kubelet.config.k8s.io/v1beta1\n", "kind", "missing", id="no-kind"
        ),
        pytest.param(
            "apiVersion: kubelet.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n",
            "apiVersion",
            "'kubelet.config.k8s.io/v1alpha1' is not supported",
            id="old-apiversion",
        ),
        pytest.param(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: CredentialProviderConfig\n",
            "kind",
            "'CredentialProviderConfig' is not supported",
            id="wrong-kind",
        ),
        pytest.param(
            HEADER + "registryBurst: 1\nregistryBurst: 2\n",
            "registryBurst",
            "duplicate key (line 4)",
            id="duplicate-key",
        ),
        # One bracket a line: as deep, but PyYAML's scanner, which keeps a possible simple key for
        # every open flow level on the current line (1024 characters' worth), stays linear, so the
        # test costs ms rather than a second; the composer still recurses once per level.
        pytest.param(
            HEADER + "featureGates: " + "[\n" * 30_000 + "]" * 30_000 + "\n",
            None,
            "invalid YAML: nested too deeply",
            id="deeply-nested",
        ),
    ],
)
def test_broken_documents(text: str, field: str | None, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_kubelet_config(text, "broken.yaml", strict=True)
    assert info.value.file == "broken.yaml"
    assert info.value.field == field
    assert message in info.value.message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="file does not exist") as info:
        load_kubelet_config(path)
    assert info.value.file == str(path)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: p.mkdir(), id="directory"),
        pytest.param(lambda p: p.write_bytes(b"\xff\xfe kind"), id="not-utf8"),
    ],
)
def test_unreadable_files(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "kubelet.yaml"
    make(path)
    with pytest.raises(ConfigError, match="cannot read file") as info:
        load_kubelet_config(path)
    assert info.value.file == str(path)


# --- ignored upstream fields --------------------------------------------------------------------

KUBEADM_IGNORED = (
    "authentication",
    "authorization",
    "cgroupDriver",
    "clusterDNS",
    "containerLogMaxFiles",
    "containerLogMaxSize",
    "cpuManagerReconcilePeriod",
    "crashLoopBackOff",
    "enforceNodeAllocatable",
    "evictionHard",
    "evictionPressureTransitionPeriod",
    "failSwapOn",
    "fileCheckFrequency",
    "healthzBindAddress",
    "healthzPort",
    "httpCheckFrequency",
    "kubeReserved",
    "logging",
    "maxPods",
    "memorySwap",
    "nodeStatusReportFrequency",
    "nodeStatusUpdateFrequency",
    "podPidsLimit",
    "protectKernelDefaults",
    "readOnlyPort",
    "registerWithTaints",
    "resolvConf",
    "rotateCertificates",
    "serverTLSBootstrap",
    "shutdownGracePeriod",
    "shutdownGracePeriodCriticalPods",
    "streamingConnectionIdleTimeout",
    "syncFrequency",
    "systemReserved",
    "tlsCipherSuites",
    "tlsMinVersion",
    "volumeStatsAggPeriod",
)


def test_kubeadm_config_loads_unchanged() -> None:
    with capture_logs() as logs:
        config = load_kubelet_config(KUBEADM)
    assert config.source == str(KUBEADM)
    assert config.serialize_image_pulls is False
    assert config.max_parallel_image_pulls == 4
    assert (config.image_gc_high_threshold_percent, config.image_gc_low_threshold_percent) == (
        90,
        75,
    )
    assert config.image_minimum_gc_age == 120.0  # kubeadm writes "0s": the default applies
    assert config.runtime_request_timeout == 120.0
    assert config.container_runtime_endpoint == "unix:///run/containerd/containerd.sock"
    assert config.static_pod_path == "/etc/kubernetes/manifests"
    assert config.cluster_domain == "cluster.local"  # modelled: pods' FQDN hostnames
    assert config.feature_enabled("NodeSwap") is False
    assert config.ignored_fields == KUBEADM_IGNORED
    ignored_events = [e for e in logs if e["event"] == "kubelet_config_field_ignored"]
    assert [e["field"] for e in ignored_events] == list(KUBEADM_IGNORED)  # once each
    assert all(e["file"] == str(KUBEADM) and e["log_level"] == "info" for e in ignored_events)


def test_every_upstream_field_is_accepted() -> None:
    body = "".join(f"{name}: null\n" for name in sorted(UPSTREAM_FIELDS))
    with capture_logs() as logs:
        config = parse(body)
    expected = sorted(UPSTREAM_FIELDS - set(CAMEL_TO_SNAKE))
    assert list(config.ignored_fields) == expected
    assert len(logs) == len(expected)


def test_the_field_table_is_one_consistent_mapping() -> None:
    assert len(CAMEL_TO_SNAKE) == len(SNAKE_TO_CAMEL) == len(FIELD_TABLE)
    assert set(CAMEL_TO_SNAKE) <= UPSTREAM_FIELDS
    data_fields = {f.name for f in dataclasses.fields(KubeletConfiguration)}
    assert set(SNAKE_TO_CAMEL) == data_fields - {"source", "ignored_fields", "strict_errors"}


# --- files on disk ------------------------------------------------------------------------------


def test_shipped_example_loads() -> None:
    config = load_kubelet_config(SHIPPED)
    assert config == dataclasses.replace(
        KubeletConfiguration.default(),
        feature_gates={"KubeletEnsureSecretPulledImages": True, "RuntimeClassInImageCriApi": False},
        static_pod_path=str(REPO / "config" / "pods"),
        source=str(SHIPPED),
    )


@pytest.mark.parametrize(
    ("written", "resolved"),
    [
        pytest.param("pods", "{dir}/pods", id="relative"),
        pytest.param("./static/../pods", "{dir}/pods", id="relative-cleaned"),
        pytest.param("../manifests", "{parent}/manifests", id="parent"),
        pytest.param("/etc/kubernetes/manifests", "/etc/kubernetes/manifests", id="absolute"),
    ],
)
def test_relative_static_pod_path_is_resolved_against_the_file(
    tmp_path: Path, written: str, resolved: str
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "kubelet.yaml"
    path.write_text(HEADER + f"staticPodPath: {written}\n", encoding="utf-8")
    expected = resolved.format(dir=folder, parent=tmp_path)
    assert load_kubelet_config(path).static_pod_path == expected
    relative_path = os.path.relpath(path)
    assert load_kubelet_config(relative_path).static_pod_path == expected


def test_parse_without_base_dir_keeps_relative_paths() -> None:
    assert parse("staticPodPath: pods").static_pod_path == "pods"
    config = parse_kubelet_config(HEADER + "staticPodPath: pods", base_dir="/srv/node")
    assert config.static_pod_path == "/srv/node/pods"
    assert config.source == "<string>"


# --- values, overrides, round trips ---------------------------------------------------------------


def test_configuration_is_immutable_and_hashable() -> None:
    config = parse("featureGates: {NodeSwap: true}")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.registry_burst = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.feature_gates["NodeSwap"] = False  # type: ignore[index]
    assert hash(config) == hash(parse("featureGates: {NodeSwap: true}"))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param(
            {"serialize_image_pulls": False, "max_parallel_image_pulls": 8},
            {"serialize_image_pulls": False, "max_parallel_image_pulls": 8},
            id="parallel",
        ),
        pytest.param({"registry_pull_qps": 0}, {"registry_pull_qps": 0.0}, id="qps-int"),
        pytest.param(
            {"image_maximum_gc_age": "1h"}, {"image_maximum_gc_age": 3600.0}, id="duration-string"
        ),
        pytest.param(
            {"image_maximum_gc_age": 600}, {"image_maximum_gc_age": 600.0}, id="duration-seconds"
        ),
        pytest.param(
            {
                "preloaded_images_verification_allowlist": ("docker.io/library/*",),
                "image_pull_credentials_verification_policy": Policy.NEVER_VERIFY_ALLOWLISTED_IMAGES,
            },
            {"preloaded_images_verification_allowlist": ("docker.io/library/*",)},
            id="allowlist-tuple",
        ),
        pytest.param(
            {"image_pull_credentials_verification_policy": "AlwaysVerify"},
            {"image_pull_credentials_verification_policy": Policy.ALWAYS_VERIFY},
            id="policy-string",
        ),
        pytest.param(
            {"feature_gates": {"KubeletEnsureSecretPulledImages": False}},
            {"image_pull_credentials_verification_policy": None},
            id="gate-off-drops-policy",
        ),
        pytest.param({"static_pod_path": None}, {"static_pod_path": None}, id="none-nullable"),
    ],
)
def test_with_overrides(overrides: dict[str, Any], expected: dict[str, Any]) -> None:
    base = load_kubelet_config(SHIPPED)
    changed = base.with_overrides(**overrides)
    for name, value in expected.items():
        assert getattr(changed, name) == value, name
    assert changed.source == base.source
    assert base == load_kubelet_config(SHIPPED)  # the original is untouched


def test_turning_the_gate_back_on_redefaults_the_policy() -> None:
    off = parse("featureGates: {KubeletEnsureSecretPulledImages: false}")
    on = off.with_overrides(feature_gates={})
    assert on.image_pull_credentials_verification_policy is Policy.NEVER_VERIFY_PRELOADED_IMAGES


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        pytest.param(
            {"max_parallel_image_pulls": 3},
            "maxParallelImagePulls",
            "cannot be larger than 1 unless SerializeImagePulls",
            id="serial-rule",
        ),
        pytest.param(
            {"max_parallel_image_pulls": "3"},
            "maxParallelImagePulls",
            "must be an integer",
            id="wrong-type",
        ),
        pytest.param(
            {"registry_pull_qps": 2.5}, "registryPullQPS", "must be an integer", id="qps-float"
        ),
        pytest.param(
            {"serialize_image_pulls": None},
            "serializeImagePulls",
            "must be a boolean",
            id="none-not-nullable",
        ),
        pytest.param(
            {"image_minimum_gc_age": "2 minutes"},
            "imageMinimumGCAge",
            "time: unknown unit",
            id="bad-duration-string",
        ),
        pytest.param(
            {"image_minimum_gc_age": True},
            "imageMinimumGCAge",
            "must be a Go duration string",
            id="bool-duration",
        ),
        pytest.param(
            {"image_gc_low_threshold_percent": 90},
            "imageGCLowThresholdPercent",
            "must be less than",
            id="gc-order",
        ),
        pytest.param(
            {"feature_gates": {"Bogus": True}},
            "featureGates.Bogus",
            "unrecognized feature gate: Bogus",
            id="unknown-gate",
        ),
        pytest.param(
            {"maxParallelImagePulls": 3},
            "maxParallelImagePulls",
            "unknown KubeletConfiguration field",
            id="camel-case-name",
        ),
    ],
)
def test_with_overrides_refuses(overrides: dict[str, Any], field: str, message: str) -> None:
    base = load_kubelet_config(SHIPPED)
    with pytest.raises(ConfigError) as info:
        base.with_overrides(**overrides)
    assert info.value.file == str(SHIPPED)
    assert info.value.field == field
    assert message in info.value.message


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("", id="defaults"),
        pytest.param(
            "maxParallelImagePulls: 5\nregistryPullQPS: 0\nimageMaximumGCAge: 90m", id="parallel"
        ),
        pytest.param(
            "featureGates: {KubeletEnsureSecretPulledImages: false, NodeSwap: true}", id="gate-off"
        ),
        pytest.param(
            ALLOWLIST + "preloadedImagesVerificationAllowlist: [docker.io/library/*]\n"
            "imageMinimumGCAge: 1.5s\nstaticPodPath: /srv/pods",
            id="allowlist",
        ),
    ],
)
def test_to_dict_is_a_loadable_effective_config(body: str) -> None:
    config = parse(body)
    document = config.to_dict()
    assert document["apiVersion"] == "kubelet.config.k8s.io/v1beta1"
    assert set(document) - {"apiVersion", "kind"} <= set(CAMEL_TO_SNAKE)
    assert parse_kubelet_config(yaml.safe_dump(document), "node.yaml") == config
    assert json.loads(json.dumps(document)) == document


# --- command line ---------------------------------------------------------------------------------


@pytest.fixture
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()  # cli.main configures structlog globally


@pytest.mark.usefixtures("_reset_logging")
def test_cli_validate_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", str(KUBEADM), "--output", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == load_kubelet_config(KUBEADM).to_dict()
    assert printed["maxParallelImagePulls"] == 4
    assert printed["imageMinimumGCAge"] == "2m0s"


@pytest.mark.usefixtures("_reset_logging")
def test_cli_validate_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{SHIPPED}: valid KubeletConfiguration")
    assert "serializeImagePulls" in out
    assert "NeverVerifyPreloadedImages" in out
    assert "ignored upstream fields" not in out


@pytest.mark.usefixtures("_reset_logging")
def test_cli_validate_refuses_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(HEADER + "serializeImagePulls: yes-please\n", encoding="utf-8")
    assert main(["config", "validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path}: serializeImagePulls: must be a boolean" in captured.err
