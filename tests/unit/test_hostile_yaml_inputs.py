"""Hostile YAML is a ConfigError naming the file and field, refused fast, in every YAML loader.

The reproducers come from ``benchmarks/fuzz_inputs.py``: values PyYAML cannot build, integers
wider than 64 bits, non-string keys, deep nesting, self-referring aliases and alias bombs, for
the manifests (``kubectl apply``, ``POST /apply``, static pods), the KubeletConfiguration and
workload files, which all read YAML through :mod:`kubelet_sim.config.yamlsafe`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kubelet_sim.cli.main import main
from kubelet_sim.config import yamlsafe
from kubelet_sim.config.kubelet import load_kubelet_config, parse_kubelet_config
from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s import ObjectStore, parse_manifests
from kubelet_sim.node.static import StaticPods
from kubelet_sim.workloads.parse import parse_workload

BIG = "0x" + "f" * 4000  # 16,000 bits: hexadecimal has no digit limit, str() of it raises
KC = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
POD = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: a, image: a}]}\n"
WORKLOAD = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: t
images:
  - {repository: a/b, tags: ["1"], layers: [1KiB]}
nodes:
  - {name: n}
pods:
  - name: p
    count: 1
    spec: {containers: [{name: c, image: "a/b:1"}]}
"""
UNCONVERTIBLE = [
    "2001-13-01",
    "0000-01-01",
    "!!bool",
    "!!timestamp",
    "!!int x",
    "!!int",
    "!!float x",
]
DEADLINE = 1.0  # seconds: hostile input is refused before it is expanded or recursed into


def bomb(n: int) -> str:
    """``n`` lines of ``n`` aliases each to the line before: n**n values from ~n*n*4 bytes."""
    return "".join(
        f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * n if i else ["x"] * n) + "]\n"
        for i in range(n)
    )


@contextmanager
def refused() -> Iterator[pytest.ExceptionInfo[ConfigError]]:
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        yield info
    assert time.perf_counter() - started < DEADLINE


def _manifests(text: str) -> object:
    return parse_manifests(text, source="pods.yaml")


def _kubelet(text: str) -> object:
    return parse_kubelet_config(text, "kubelet.yaml")


def _workload(text: str) -> object:
    return parse_workload(text, "w.yaml")


def _static_pods(text: str) -> StaticPods:
    pods = StaticPods("node-1")
    pods.update({Path("/etc/kubernetes/manifests/pod.yaml"): text.encode()})
    return pods


# -- 1. values PyYAML cannot build -------------------------------------------------------------


@pytest.mark.parametrize("value", UNCONVERTIBLE)
def test_unconvertible_values_in_manifests_name_the_field(value: str) -> None:
    text = POD.replace(
        "metadata: {name: a}", f"metadata:\n  name: a\n  annotations:\n    a: {value}"
    )
    with refused() as info:
        _manifests(text)
    assert info.value.file == "pods.yaml"
    assert info.value.field == "metadata.annotations.a"
    assert "line 6" in info.value.message


@pytest.mark.parametrize("value", UNCONVERTIBLE)
def test_unconvertible_values_sent_to_apply_change_nothing(value: str) -> None:
    store = ObjectStore()
    with refused() as info:
        store.apply_text(f"{POD}status: {value}\n".encode(), source="request body")
    assert str(info.value).startswith("request body: status: ")
    assert len(store) == 0


@pytest.mark.parametrize("value", UNCONVERTIBLE)
def test_unconvertible_values_in_a_static_pod_file_leave_no_pod(value: str) -> None:
    assert not _static_pods(f"{POD}status: {value}\n").pods()


@pytest.mark.parametrize("value", UNCONVERTIBLE)
def test_unconvertible_values_in_a_kubelet_config_name_the_field(value: str) -> None:
    with refused() as info:
        _kubelet(f"{KC}imageMinimumGCAge: {value}\n")
    assert (info.value.file, info.value.field) == ("kubelet.yaml", "imageMinimumGCAge")
    assert "invalid YAML at line 3" in info.value.message


@pytest.mark.parametrize("value", UNCONVERTIBLE)
def test_unconvertible_values_in_a_workload_name_line_and_field(value: str) -> None:
    with refused() as info:
        _workload(f"{WORKLOAD}description: {value}\n")
    assert (info.value.file, info.value.field) == ("w.yaml:12", "description")
    assert "invalid value" in info.value.message


# -- 2, 3. the KubeletConfiguration reader and constructor ---------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        pytest.param("\x00", "control characters are not allowed", id="nul"),
        pytest.param(KC + "\uffff", "character #xffff", id="uffff"),
        pytest.param(KC + "t: !!map [1]\n", "line 3, column 4", id="map-tag-on-a-sequence"),
        pytest.param(KC + "t: !!seq a\n", "line 3, column 4", id="seq-tag-on-a-scalar"),
    ],
)
def test_unreadable_kubelet_configs_are_config_errors(text: str, names: str) -> None:
    with refused() as info:
        _kubelet(text)
    assert info.value.file == "kubelet.yaml"
    assert names in info.value.message


@pytest.mark.parametrize("text", ["\x00", KC + "\uffff", KC + "t: !!map [1]\n"])
def test_config_validate_reports_unreadable_files_without_a_traceback(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "kubelet.yaml"
    path.write_text(text, encoding="utf-8")
    with refused():
        load_kubelet_config(path)
    assert main(["config", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"kubelet-sim: error: {path}: invalid YAML")
    assert "Traceback" not in err


# -- 4. integers wider than 64 bits --------------------------------------------------------------

WIDE = [
    pytest.param(_kubelet, KC + "registryBurst: " + BIG, "kubelet.yaml", "registryBurst",
                 id="kubelet-registryBurst"),
    pytest.param(_kubelet, "kind: " + BIG, "kubelet.yaml", "kind", id="kubelet-kind"),
    pytest.param(_kubelet, KC + "serializeImagePulls: " + BIG, "kubelet.yaml",
                 "serializeImagePulls", id="kubelet-serializeImagePulls"),
    pytest.param(_kubelet, KC + "featureGates: {ImageMaximumGCAge: " + BIG + "}", "kubelet.yaml",
                 "featureGates.ImageMaximumGCAge", id="kubelet-feature-gate"),
    pytest.param(_kubelet, KC + "registryBurst: 0" + "7" * 5000, "kubelet.yaml", "registryBurst",
                 id="kubelet-octal"),
    pytest.param(_kubelet, KC + "registryBurst: 0b" + "1" * 65, "kubelet.yaml", "registryBurst",
                 id="kubelet-binary-65-bits"),
    pytest.param(_kubelet, KC + "registryBurst: " + ":".join(["59"] * 100_000), "kubelet.yaml",
                 "registryBurst", id="kubelet-base-60"),
    pytest.param(_kubelet, KC + "registryBurst: 9223372036854775808", "kubelet.yaml",
                 "registryBurst", id="kubelet-int64-max-plus-one"),
    pytest.param(_workload, WORKLOAD.replace("name: t\n", f"name: {BIG}\n"), "w.yaml:3", "name",
                 id="workload-name"),
    pytest.param(_workload, WORKLOAD.replace("count: 1", f"count: {BIG}"), "w.yaml:10",
                 "pods[0].count", id="workload-count"),
    pytest.param(_workload, WORKLOAD.replace("apiVersion: kubelet-sim.dev/v1alpha1",
                                             f"apiVersion: {BIG}"), "w.yaml:1", "apiVersion",
                 id="workload-apiVersion"),
    pytest.param(_manifests, "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nx: 0" + "7" * 4800
                 + "\nspec: {containers: [{name: a, image: a}]}", "pods.yaml", "x",
                 id="static-pod-octal"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "text", "file", "field"), WIDE)
def test_integers_wider_than_64_bits_are_refused_naming_the_field(
    call: Callable[[str], object], text: str, file: str, field: str
) -> None:
    with refused() as info:
        call(text)
    assert (info.value.file, info.value.field) == (file, field)
    assert "integer out of range" in info.value.message


def test_the_widest_int64_values_still_load() -> None:
    loaded = yamlsafe.load_one("a: 9223372036854775807\nb: -9223372036854775808\nc: 0x7fff\n", "x")
    assert loaded == {"a": (1 << 63) - 1, "b": -(1 << 63), "c": 0x7FFF}
    assert yamlsafe.load_one("a: 0b" + "0" * 500 + "1\nb: 1_000\n", "x") == {"a": 1, "b": 1000}


def test_static_pods_with_wide_integers_leave_no_pod() -> None:
    text = POD + "x: 0" + "7" * 4800 + "\n"
    assert not _static_pods(text).pods()


# -- 5. non-string keys --------------------------------------------------------------------------

MIXED_KEYS = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, 1: b}\nspec: {containers: [{name: a, image: a}]}"


def test_manifest_keys_must_be_strings() -> None:
    with refused() as info:
        _manifests(MIXED_KEYS)
    assert info.value.file == "pods.yaml (document 1)"
    assert info.value.field == "metadata[1]"
    assert "keys must be strings" in info.value.message


def test_a_list_item_with_a_non_string_key_names_the_item() -> None:
    item = POD + "spec2: {true: x}\n"
    text = "apiVersion: v1\nkind: List\nitems:\n" + "".join(
        f"  {line}\n" for line in item.splitlines()
    )
    text = text.replace("  apiVersion: v1\n  kind: Pod", "- apiVersion: v1\n  kind: Pod")
    with refused() as info:
        _manifests(text)
    assert info.value.field == "items[0].spec2[True]"


def test_a_static_pod_with_a_non_string_key_is_skipped_without_a_crash() -> None:
    assert not _static_pods(MIXED_KEYS).pods()


# -- 6, 7, 8. workload structure -----------------------------------------------------------------

DEEP_KUBELET = WORKLOAD.replace(
    "  - {name: n}", "  - name: n\n    kubelet:\n      x: " + "[" * 400 + "]" * 400
)

WORKLOAD_STRUCTURE = [
    pytest.param("[" * 485 + "]" * 485, "w.yaml:1", "nested too deeply", id="deep-flow"),
    pytest.param("[" * 485, "w.yaml:1", "nested too deeply", id="deep-unclosed"),
    pytest.param("- " * 20_000 + "x\n", "w.yaml:1", "nested too deeply", id="deep-block"),
    pytest.param("&a [*a]", "w.yaml:1", "an alias refers to itself", id="recursive-sequence"),
    pytest.param("&m {k: *m}", "w.yaml:1", "an alias refers to itself", id="recursive-mapping"),
    pytest.param(DEEP_KUBELET, "w.yaml:9", "nested too deeply", id="deep-kubelet-section"),
    pytest.param(
        "".join(f"a{i}: &a{i} [" * 1 + "[" * 50 + (f"*a{i - 1}" if i else "x") + "]" * 51 + "\n"
                for i in range(10)),
        "w.yaml:2",  # a1: a0's 51 levels inside its own 51
        "once aliases are expanded",
        id="deep-through-aliases",
    ),
    pytest.param("? []:", "w.yaml:1", "keys must be strings", id="collection-key"),
    pytest.param("!x k: v", "w.yaml:1", "could not determine a constructor", id="unknown-tag"),
    pytest.param(WORKLOAD + "x: &a\n  s: {<<: }\n", "w.yaml:13", "invalid merge key",
                 id="merge-of-nothing"),
    pytest.param(bomb(9), "w.yaml", "excessive aliasing", id="alias-bomb"),
    pytest.param(WORKLOAD + "z: " + bomb(9).replace("\n", ", ").join("{}") + "\n", "w.yaml",
                 "excessive aliasing", id="alias-bomb-nested"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "file", "names"), WORKLOAD_STRUCTURE)
def test_hostile_workload_structure_is_refused_naming_the_file(
    text: str, file: str, names: str
) -> None:
    with refused() as info:
        _workload(text)
    assert info.value.file == file
    assert names in info.value.message


def test_a_hostile_kubelet_config_file_of_a_workload_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "kubelet.yaml").write_text(KC + bomb(9), encoding="utf-8")
    text = WORKLOAD.replace("  - {name: n}", "  - {name: n, kubeletConfigFile: kubelet.yaml}")
    with refused() as info:
        parse_workload(text, str(tmp_path / "w.yaml"))
    assert info.value.field == "nodes[0].kubeletConfigFile"
    assert "excessive aliasing" in info.value.message


def test_a_workload_kubelet_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "kubelet.yaml").write_bytes(b"\xff\xfe\x00")
    text = WORKLOAD.replace("  - {name: n}", "  - {name: n, kubeletConfigFile: kubelet.yaml}")
    with refused() as info:
        parse_workload(text, str(tmp_path / "w.yaml"))
    assert info.value.field == "nodes[0].kubeletConfigFile"


def test_workload_sizes_past_int64_are_refused() -> None:
    text = WORKLOAD.replace("layers: [1KiB]", "layers: [" + "9" * 400 + "KiB]")
    with refused() as info:
        _workload(text)
    assert info.value.field == "images[0].layers[0]"


def test_merge_keys_in_workloads_and_kubelet_configs_still_work() -> None:
    text = WORKLOAD.replace("  - {name: n}", "  - <<: &node {name: n}\n    count: 2")
    assert parse_workload(text, "w.yaml").nodes[0].count == 2
    config = parse_kubelet_config(KC + "featureGates:\n  <<: {ImageMaximumGCAge: false}\n")
    assert config.feature_gates == {"ImageMaximumGCAge": False}


# -- 9. the KubeletConfiguration alias bomb, and bounded messages --------------------------------


def test_a_kubelet_config_alias_bomb_is_refused_at_once() -> None:
    with refused() as info:
        _kubelet(KC + bomb(9) + "serializeImagePulls: *a8\n")
    assert info.value.file == "kubelet.yaml"
    assert "excessive aliasing" in info.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("serializeImagePulls", "[" + ",".join(["x" * 1000] * 1000) + "]", id="list"),
        pytest.param("registryBurst", "'" + "9" * 100_000 + "'", id="long-string"),
        pytest.param("featureGates", "{ImageMaximumGCAge: " + "x" * 100_000 + "}", id="gate"),
        pytest.param("staticPodPath", "&a [" + ",".join(["[x,x,x,x,x,x,x,x]"] * 300) + "]",
                     id="many-nodes"),
    ],
)  # fmt: skip
def test_kubelet_messages_quote_values_in_bounded_space(field: str, value: str) -> None:
    with refused() as info:
        _kubelet(f"{KC}{field}: {value}\n")
    assert info.value.field is not None
    assert info.value.field.startswith(field)
    assert len(str(info.value)) < 500


# -- 17. the longest Go duration -----------------------------------------------------------------


def test_the_longest_go_duration_is_kept_not_a_crash() -> None:
    config = parse_kubelet_config(KC + 'imageMinimumGCAge: "9223372036854775807ns"\n')
    assert config.to_dict()["imageMinimumGCAge"] == "2562047h47m16.854775807s"


def test_durations_past_the_go_range_name_the_field() -> None:
    with refused() as info:
        parse_kubelet_config(KC, "kubelet.yaml").with_overrides(image_minimum_gc_age=1e10)
    assert (info.value.file, info.value.field) == ("kubelet.yaml", "imageMinimumGCAge")


# -- secrets are never quoted --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["!!int SuperSecret-Pa55", "!SuperSecret-Pa55", '"SuperSecret-Pa55\\q"', "2001-13-01 #SuperSecret",
     "*SuperSecret-Pa55", "!!binary SuperSecret-Pa55"],
)  # fmt: skip
def test_workload_errors_never_quote_a_password(value: str) -> None:
    text = f"{WORKLOAD}secrets:\n  - name: s\n    username: u\n    password: {value}\n"
    with refused() as info:
        _workload(text)
    assert (info.value.file or "").startswith("w.yaml")
    assert "SuperSecret" not in str(info.value)


# -- the helper ----------------------------------------------------------------------------------


def test_preview_is_bounded_and_never_prints_huge_integers() -> None:
    assert yamlsafe.preview(int(BIG, 16)) == "<integer of 16000 bits>"
    assert yamlsafe.preview("abc") == "'abc'"
    assert len(yamlsafe.preview("x" * 100_000)) < 100
    assert len(yamlsafe.preview([[["x" * 100] * 100] * 100] * 100)) <= 200


def test_load_one_refuses_several_documents() -> None:
    with refused() as info:
        yamlsafe.load_one("a: 1\n---\nb: 2\n", "two.yaml")
    assert info.value.file == "two.yaml"
    assert yamlsafe.load_one("", "empty.yaml") is None


def test_duplicate_keys_are_reported_with_their_line() -> None:
    loaded = yamlsafe.read("a: 1\nb: {c: 1, c: 2}\na: 3\n", "dup.yaml")
    assert loaded.documents == [{"a": 3, "b": {"c": 2}}]
    assert sorted(loaded.duplicate_keys) == [("a", 3), ("c", 2)]


def test_file_line_style_names_the_line_in_the_file_part() -> None:
    with refused() as info:
        yamlsafe.load_all("a: 1\nb: 2001-13-01\n", "f.yaml", file_line=True)
    assert (info.value.file, info.value.field) == ("f.yaml:2", "b")
