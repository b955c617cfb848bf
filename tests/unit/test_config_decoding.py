"""KubeletConfiguration decoding as the kubelet does it: strict, then lenient; all validation
errors at once; hostile YAML refused with the file and position, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubelet_sim.cli.main import main
from kubelet_sim.config.kubelet import INVALID, load_kubelet_config, parse_kubelet_config
from kubelet_sim.errors import ConfigError

HEADER = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"


def test_unknown_fields_and_duplicates_decode_leniently_and_are_kept_as_strict_errors() -> None:
    text = HEADER + "fooBar: 1\nregistryBurst: 3\nregistryBurst: 7\nserializeImagePulls: false\n"
    config = parse_kubelet_config(text, "node.yaml")
    assert config.registry_burst == 7, "the last duplicate wins, as Go's JSON decoding keeps it"
    assert config.serialize_image_pulls is False
    assert config.strict_errors == (
        "node.yaml: registryBurst: duplicate key (line 5)",
        "node.yaml: fooBar: unknown field: not a kubelet.config.k8s.io/v1beta1 "
        "KubeletConfiguration field",
    )


def test_strict_mode_refuses_every_strict_error_together() -> None:
    text = HEADER + "fooBar: 1\nregistryBurst: 3\nregistryBurst: 7\n"
    with pytest.raises(ConfigError) as info:
        parse_kubelet_config(text, "node.yaml", strict=True)
    assert info.value.file == "node.yaml"
    assert [field for field, _ in info.value.problems] == ["registryBurst", "fooBar"]


def test_a_clean_file_has_no_strict_errors() -> None:
    assert parse_kubelet_config(HEADER + "registryBurst: 3\n").strict_errors == ()


def test_lenient_decoding_does_not_excuse_a_wrong_type_or_version() -> None:
    # Only strict errors (unknown fields, duplicates) fall back; a type error fails as upstream.
    with pytest.raises(ConfigError) as info:
        parse_kubelet_config(HEADER + "fooBar: 1\nregistryBurst: many\n", "node.yaml")
    assert info.value.field == "registryBurst"
    with pytest.raises(ConfigError) as info:
        parse_kubelet_config(HEADER.replace("v1beta1", "v1alpha1") + "fooBar: 1\n", "node.yaml")
    assert info.value.field == "apiVersion"


def test_every_validation_error_is_reported_at_once_with_the_upstream_prefix() -> None:
    text = HEADER + (
        "imageGCHighThresholdPercent: 101\nimageGCLowThresholdPercent: 102\n"
        "registryBurst: -1\nserializeImagePulls: true\nmaxParallelImagePulls: 4\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_kubelet_config(text, "node.yaml")
    error = info.value
    assert error.file == "node.yaml"
    assert [field for field, _ in error.problems] == [
        "imageGCHighThresholdPercent",
        "imageGCLowThresholdPercent",
        "imageGCLowThresholdPercent",
        "registryBurst",
        "maxParallelImagePulls",
    ]
    assert all(message.startswith(INVALID) for _, message in error.problems)
    # utilerrors.NewAggregate: "[m1, m2, ...]"
    assert error.message.startswith(f"[{INVALID} imageGCHighThresholdPercent ")
    assert error.message.endswith("is set to false]")


def test_a_single_validation_error_names_its_field() -> None:
    with pytest.raises(ConfigError) as info:
        parse_kubelet_config(HEADER + "registryBurst: -1\n", "node.yaml")
    assert info.value.field == "registryBurst"
    assert info.value.message == (
        f"{INVALID} registryBurst (--registry-burst) -1 must not be a negative number"
    )
    assert info.value.problems == (("registryBurst", info.value.message),)


@pytest.mark.parametrize(
    ("body", "line"),
    [
        pytest.param("? [a, b]\n: 1\n", 3, id="sequence-key"),
        pytest.param("? {a: 1}\n: 1\n", 3, id="mapping-key"),
        pytest.param("featureGates:\n  ? [x]\n  : true\n", 4, id="nested-sequence-key"),
        pytest.param("registryBurst: " + "9" * 5000 + "\n", 3, id="5000-digit-integer"),
        pytest.param("featureGates: {a: " + "1" * 4400 + "}\n", 3, id="huge-int-in-mapping"),
    ],
)
def test_yaml_python_cannot_hold_is_a_config_error_with_its_position(body: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_kubelet_config(HEADER + body, "node.yaml")
    assert info.value.file == "node.yaml"
    assert f"at line {line}, column " in info.value.message


def test_config_validate_prints_strict_errors_and_a_missing_static_pod_path_as_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "kubelet.yaml"
    path.write_text(HEADER + "fooBar: 1\nstaticPodPath: manifests\n")
    assert main(["config", "validate", str(path), "-o", "json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert "fooBar" not in doc, "the JSON is the effective, loadable document"
    assert parse_kubelet_config(json.dumps(doc)).strict_errors == ()
    missing = f"{path}: staticPodPath: {tmp_path / 'manifests'} does not exist (yet)"
    assert captured.err.splitlines() == [
        f"warning: {path}: fooBar: unknown field: not a kubelet.config.k8s.io/v1beta1 "
        "KubeletConfiguration field",
        f"warning: {missing}",
    ]
    assert main(["config", "validate", "--strict", str(path)]) == 1
    assert f"{path}: fooBar: unknown field" in capsys.readouterr().err


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("? [a, b]\n: 1\n", id="complex-key"),
        pytest.param("registryBurst: " + "9" * 5000 + "\n", id="5000-digits"),
        pytest.param("imageGCHighThresholdPercent: 101\nregistryBurst: -1\n", id="two-invalid"),
    ],
)
def test_config_validate_never_shows_a_traceback(
    tmp_path: Path, body: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "kubelet.yaml"
    path.write_text(HEADER + body)
    assert main(["config", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"kubelet-sim: error: {path}: ")
    assert "Traceback" not in err


def test_load_kubelet_config_passes_strict_through(tmp_path: Path) -> None:
    path = tmp_path / "kubelet.yaml"
    path.write_text(HEADER + "fooBar: 1\n")
    assert load_kubelet_config(path).strict_errors
    with pytest.raises(ConfigError):
        load_kubelet_config(path, strict=True)
