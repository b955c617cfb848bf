"""The three PATCH bodies: RFC 6902 and RFC 7386 appendix A, strategic merge patch vectors from
apimachinery's ``strategicpatch/patch_test.go`` (moved onto Pod, ServiceAccount and Service
paths), the kinds' list strategies, the 400/422 split of errors, Secret values kept out of
messages, and inputs never mutated."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kubelet_sim.errors import PatchError
from kubelet_sim.k8s.patch import (
    LIST_STRATEGIES,
    ListStrategy,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)


def y(text: str) -> Any:
    """A YAML flow document: the strategic vectors stay one line each."""
    return yaml.safe_load(text)


# -- RFC 6902 appendix A --------------------------------------------------------------------

RFC6902_OK = [
    pytest.param(
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux"}],
        {"baz": "qux", "foo": "bar"},
        id="A.1-add-object-member",
    ),
    pytest.param(
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
        id="A.2-add-array-element",
    ),
    pytest.param(
        {"baz": "qux", "foo": "bar"},
        [{"op": "remove", "path": "/baz"}],
        {"foo": "bar"},
        id="A.3-remove-object-member",
    ),
    pytest.param(
        {"foo": ["bar", "qux", "baz"]},
        [{"op": "remove", "path": "/foo/1"}],
        {"foo": ["bar", "baz"]},
        id="A.4-remove-array-element",
    ),
    pytest.param(
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
        id="A.5-replace-value",
    ),
    pytest.param(
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
        id="A.6-move-value",
    ),
    pytest.param(
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
        id="A.7-move-array-element",
    ),
    pytest.param(
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [
            {"op": "test", "path": "/baz", "value": "qux"},
            {"op": "test", "path": "/foo/1", "value": 2},
        ],
        {"baz": "qux", "foo": ["a", 2, "c"]},
        id="A.8-test-success",
    ),
    pytest.param(
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
        id="A.10-add-nested-member-object",
    ),
    pytest.param(
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
        {"foo": "bar", "baz": "qux"},
        id="A.11-ignore-unrecognized-elements",
    ),
    pytest.param(
        {"/": 9, "~1": 10},
        [{"op": "test", "path": "/~01", "value": 10}],
        {"/": 9, "~1": 10},
        id="A.14-escape-ordering",
    ),
    pytest.param(
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
        id="A.16-add-array-value",
    ),
    pytest.param(
        {"a": 1},
        [{"op": "copy", "from": "/a", "path": "/b"}, {"op": "replace", "path": "", "value": [1]}],
        [1],
        id="copy-then-replace-whole-document",
    ),
    pytest.param(
        {"a": [1]},
        [{"op": "move", "from": "/a", "path": "/a"}, {"op": "test", "path": "/a/0", "value": 1.0}],
        {"a": [1]},
        id="move-onto-itself-and-numbers-equal-by-value",
    ),
    pytest.param(
        {"metadata": {"annotations": {"a/b": "x", "m~n": "y"}}},
        [{"op": "remove", "path": "/metadata/annotations/a~1b"}],
        {"metadata": {"annotations": {"m~n": "y"}}},
        id="escaped-annotation-key",
    ),
]


@pytest.mark.parametrize(("document", "operations", "expected"), RFC6902_OK)
def test_json_patch_applies_rfc6902_examples(
    document: Any, operations: list[dict[str, Any]], expected: Any
) -> None:
    before = copy.deepcopy(document)
    assert json_patch(document, operations) == expected
    assert document == before


# (document, operations, field, invalid, words in the message)
JSON_PATCH_ERRORS = [
    pytest.param(
        {"baz": "qux"},
        [{"op": "test", "path": "/baz", "value": "bar"}],
        "/baz",
        True,
        'operation 0 (test): value at /baz is "qux", not "bar"',
        id="A.9-test-error",
    ),
    pytest.param(
        {"foo": "bar"},
        [{"op": "add", "path": "/baz/bat", "value": "qux"}],
        "/baz/bat",
        True,
        "operation 0 (add): no member",
        id="A.12-add-to-nonexistent-target",
    ),
    pytest.param(
        {"foo": "bar"},
        # A.13's document names "op" twice; a JSON reader keeps the last one (remove).
        json.loads('[{"op": "add", "path": "/baz", "value": "qux", "op": "remove"}]'),
        "/baz",
        True,
        "operation 0 (remove)",
        id="A.13-invalid-patch-document",
    ),
    pytest.param(
        {"/": 9, "~1": 10},
        [{"op": "test", "path": "/~01", "value": "10"}],
        "/~01",
        True,
        'value at /~01 is 10, not "10"',
        id="A.15-strings-and-numbers-differ",
    ),
    pytest.param({}, {"op": "add"}, None, False, "list of operations", id="not-a-list"),
    pytest.param({}, ["add"], None, False, "operation 0", id="operation-not-an-object"),
    pytest.param(
        {}, [{"op": "frobnicate", "path": "/a"}], None, False, '"frobnicate"', id="unknown-op"
    ),
    pytest.param({}, [{"op": "remove"}], None, False, "missing path", id="missing-path"),
    pytest.param({}, [{"op": "add", "path": "/a"}], "/a", False, "missing value", id="no-value"),
    pytest.param({}, [{"op": "copy", "path": "/a"}], None, False, "missing from", id="no-from"),
    pytest.param(
        {}, [{"op": "add", "path": "a", "value": 1}], "a", False, "start with /", id="relative"
    ),
    pytest.param(
        {}, [{"op": "add", "path": "/a~2", "value": 1}], "/a~2", False, "~0 or ~1", id="escape"
    ),
    pytest.param(
        {"a": {"b": 1}},
        [{"op": "move", "from": "/a", "path": "/a/b/c"}],
        "/a/b/c",
        False,
        "own child",
        id="move-into-own-child",
    ),
    pytest.param(
        {"a": 1},
        [{"op": "test", "path": "/a", "value": 1}, {"op": "remove", "path": "/b"}],
        "/b",
        True,
        "operation 1 (remove): no member",
        id="remove-missing",
    ),
    pytest.param(
        {"a": 1},
        [{"op": "replace", "path": "/b", "value": 2}],
        "/b",
        True,
        "operation 0 (replace)",
        id="replace-missing",
    ),
    pytest.param(
        {"a": [1, 2]},
        [{"op": "add", "path": "/a/3", "value": 0}],
        "/a/3",
        True,
        "out of range",
        id="add-index-past-end",
    ),
    pytest.param(
        {"a": [1, 2]},
        [{"op": "replace", "path": "/a/2", "value": 0}],
        "/a/2",
        True,
        "out of range",
        id="replace-index-past-end",
    ),
    pytest.param(
        {"a": [1, 2]},
        [{"op": "remove", "path": "/a/-"}],
        "/a/-",
        True,
        "not an array index",
        id="remove-dash",
    ),
    pytest.param(
        {"a": [1, 2]},
        [{"op": "remove", "path": "/a/01"}],
        "/a/01",
        True,
        "not an array index",
        id="leading-zero-index",
    ),
    pytest.param(
        {"a": "text"},
        [{"op": "add", "path": "/a/b", "value": 1}],
        "/a/b",
        True,
        "cannot add into a string",
        id="add-into-scalar",
    ),
    pytest.param(
        {"a": 1},
        [{"op": "copy", "from": "/nope", "path": "/b"}],
        "/nope",
        True,
        "operation 0 (copy): no member",
        id="copy-from-missing",
    ),
    pytest.param(
        {"a": True},
        [{"op": "test", "path": "/a", "value": 1}],
        "/a",
        True,
        "is true, not 1",
        id="true-is-not-1",
    ),
    pytest.param(
        {"a": 1},
        [{"op": "remove", "path": ""}],
        "",
        True,
        "whole document",
        id="remove-root",
    ),
]


@pytest.mark.parametrize(("document", "operations", "field", "invalid", "words"), JSON_PATCH_ERRORS)
def test_json_patch_errors_say_which_operation_and_split_400_from_422(
    document: Any, operations: Any, field: str | None, invalid: bool, words: str
) -> None:
    with pytest.raises(PatchError) as caught:
        json_patch(document, operations)
    assert caught.value.field == field
    assert caught.value.invalid is invalid
    assert words in caught.value.message


def test_a_failed_test_names_the_operation_and_both_values() -> None:
    pod = {"kind": "Pod", "metadata": {"name": "web", "namespace": "default"}}
    operations = [
        {"op": "test", "path": "/kind", "value": "Pod"},
        {"op": "add", "path": "/metadata/labels", "value": {"app": "web"}},
        {"op": "test", "path": "/metadata/name", "value": "db"},
    ]
    with pytest.raises(PatchError) as caught:
        json_patch(pod, operations)
    assert caught.value.message == 'operation 2 (test): value at /metadata/name is "web", not "db"'
    assert "labels" not in pod["metadata"]


SECRET = {
    "kind": "Secret",
    "metadata": {"name": "db", "annotations": {"last-applied": "hunter2-in-plain-text"}},
    "data": {"password": "aHVudGVyMg=="},
    "stringData": {"token": "s3cr3t-token"},
}


@pytest.mark.parametrize(
    ("path", "wrong"),
    [
        pytest.param("/data/password", "d3Jvbmc=", id="data"),
        pytest.param("/stringData/token", "guess", id="stringData"),
        pytest.param("/data", {"password": "eA=="}, id="whole-data-map"),
        pytest.param("/metadata/annotations/last-applied", "guess", id="annotation-of-a-secret"),
        pytest.param("", {}, id="whole-secret"),
    ],
)
def test_a_failed_test_on_a_secret_never_shows_either_value(path: str, wrong: Any) -> None:
    with pytest.raises(PatchError) as caught:
        json_patch(SECRET, [{"op": "test", "path": path, "value": wrong}])
    text = str(caught.value)
    assert "value differs" in text
    for secret in ("aHVudGVyMg==", "s3cr3t-token", "hunter2", json.dumps(wrong)[1:-1] or "{}"):
        assert secret not in text


def test_data_of_any_kind_is_not_quoted() -> None:
    config = {"kind": "ConfigMap", "data": {"key": "one"}}
    with pytest.raises(PatchError) as caught:
        json_patch(config, [{"op": "test", "path": "/data/key", "value": "two"}])
    assert "one" not in str(caught.value)
    assert "two" not in str(caught.value)


def test_values_added_are_copies() -> None:
    value = {"app": "web"}
    operations = [{"op": "add", "path": "/labels", "value": value}]
    patched = json_patch({}, operations)
    patched["labels"]["app"] = "changed"
    assert value == {"app": "web"}
    assert operations[0]["value"] == {"app": "web"}


# -- RFC 7386 appendix A ---------------------------------------------------------------------

RFC7386 = [
    pytest.param({"a": "b"}, {"a": "c"}, {"a": "c"}, id="1-replace"),
    pytest.param({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}, id="2-add"),
    pytest.param({"a": "b"}, {"a": None}, {}, id="3-delete"),
    pytest.param({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}, id="4-delete-one"),
    pytest.param({"a": ["b"]}, {"a": "c"}, {"a": "c"}, id="5-array-to-string"),
    pytest.param({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}, id="6-string-to-array"),
    pytest.param({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}, id="7-nested"),
    pytest.param({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}, id="8-arrays-replace"),
    pytest.param(["a", "b"], ["c", "d"], ["c", "d"], id="9-array-document"),
    pytest.param({"a": "b"}, ["c"], ["c"], id="10-object-to-array"),
    pytest.param({"a": "foo"}, None, None, id="11-null-patch"),
    pytest.param({"a": "foo"}, "bar", "bar", id="12-string-patch"),
    pytest.param({"e": None}, {"a": 1}, {"e": None, "a": 1}, id="13-null-in-target-kept"),
    pytest.param([1, 2], {"a": "b", "c": None}, {"a": "b"}, id="14-array-target"),
    pytest.param({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}, id="15-deep-null"),
    pytest.param(
        y(
            "{title: Goodbye!, author: {givenName: John, familyName: Doe},"
            " tags: [example, sample], content: This will be unchanged}"
        ),
        y(
            "{title: Hello!, phoneNumber: '+01-123-456-7890', author: {familyName: null}, tags: [example]}"
        ),
        y(
            "{title: Hello!, author: {givenName: John}, tags: [example],"
            " content: This will be unchanged, phoneNumber: '+01-123-456-7890'}"
        ),
        id="section-3-example",
    ),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7386)
def test_merge_patch_applies_rfc7386_examples(target: Any, patch: Any, expected: Any) -> None:
    before = copy.deepcopy(target)
    assert merge_patch(target, patch) == expected
    assert target == before


# -- strategic merge patch: upstream's vectors on Pod paths ----------------------------------
# patch_test.go's mergingList is spec.containers here (value -> image, other -> workingDir), its
# nested mergingList a container's env, mergingIntList metadata.finalizers, simpleMap the labels,
# nonMergingList the tolerations and retainKeysMergingList spec.volumes. "3-way" cases apply the
# three-way patch to the current object, as the API server does for kubectl apply.

UPSTREAM = [
    # customStrategicMergePatchTestCaseData
    pytest.param(
        "{metadata: {finalizers: [f1, f2]}}",
        "{metadata: {finalizers: [f2, f3]}}",
        "{metadata: {finalizers: [f1, f2, f3]}}",
        id="unique-scalars-when-merging-lists",
    ),
    pytest.param(
        "{metadata: {labels: {a: '1', b: '1'}}}",
        "{metadata: {labels: {$patch: delete}}}",
        "{metadata: {labels: {}}}",
        id="delete-map-from-nested-map",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1}, {name: c2}]}}",
        "{spec: {containers: [{$patch: replace}]}}",
        "{spec: {containers: []}}",
        id="delete-all-items-from-merging-list",
    ),
    pytest.param(
        "{spec: {containers: []}}",
        "{spec: {containers: []}}",
        "{spec: {containers: []}}",
        id="merge-empty-merging-lists",
    ),
    pytest.param(
        "{metadata: {labels: {a: '1', b: '1'}}}",
        "{metadata: {labels: {$patch: replace}}}",
        "{metadata: {labels: {}}}",
        id="delete-all-keys-from-map",
    ),
    pytest.param(
        "{metadata: {labels: {a: '1', b: '1'}}}",
        "{metadata: {labels: {c: x, $patch: replace}}}",
        "{metadata: {labels: {c: x}}}",
        id="add-key-and-delete-all-keys-from-map",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1}, {name: c1}, {name: c2, image: a}, {name: c3}, {name: c3}]}}",
        "{spec: {containers: [{name: c1, $patch: delete}, {name: c3, $patch: delete}]}}",
        "{spec: {containers: [{name: c2, image: a}]}}",
        id="delete-all-duplicate-entries-in-a-merging-list",
    ),
    pytest.param(
        "{spec: {volumes: [{name: bar}, {name: foo}]}}",
        "{spec: {volumes: [{name: foo, emptyDir: {}}]}}",
        "{spec: {volumes: [{name: bar}, {name: foo, emptyDir: {}}]}}",
        id="retainKeys-list-can-add-a-field-when-no-retainKeys-directive-present",
    ),
    pytest.param(
        "{spec: {volumes: [{name: bar}, {name: foo, emptyDir: {}}]}}",
        "{spec: {volumes: [{name: foo, emptyDir: null}]}}",
        "{spec: {volumes: [{name: bar}, {name: foo}]}}",
        id="retainKeys-list-can-delete-a-field-when-no-retainKeys-directive-present",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1}, {name: c2, image: b}, {name: c3}]}}",
        "{spec: {containers: [{name: c3, image: c}, {name: c1, image: a}, {name: c2, workingDir: x}]}}",
        "{spec: {containers: [{name: c3, image: c}, {name: c1, image: a},"
        " {name: c2, image: b, workingDir: x}]}}",
        id="preserve-the-order-from-the-patch-in-a-merging-list",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1}, {name: c2, image: b}, {name: c3}]}}",
        "{spec: {containers: [{name: c3, image: c}, {name: c1, image: a}]}}",
        "{spec: {containers: [{name: c2, image: b}, {name: c3, image: c}, {name: c1, image: a}]}}",
        id="preserve-the-order-from-the-patch-in-a-merging-list-2",
    ),
    pytest.param(
        "{metadata: {finalizers: [f1, f2, f3]}}",
        "{metadata: {finalizers: [f3, f1]}}",
        "{metadata: {finalizers: [f2, f3, f1]}}",
        id="preserve-the-order-from-the-patch-in-a-merging-int-list",
    ),
    # customStrategicMergePatchRawTestCases
    pytest.param(
        "{spec: {containers: [{name: c1}, {name: c3}]}}",
        "{spec: {$setElementOrder/containers: [{name: c3}, {name: c2}, {name: c1}],"
        " containers: [{name: c3, image: i3}, {name: c1, image: i1}]}}",
        "{spec: {containers: [{name: c3, image: i3}, {name: c1, image: i1}]}}",
        id="setElementOrder-contains-item-not-in-the-list-to-be-merged",
    ),
    pytest.param(
        "{metadata: {finalizers: [f1, f3]}}",
        "{metadata: {$setElementOrder/finalizers: [f3, f2, f1]}}",
        "{metadata: {finalizers: [f3, f1]}}",
        id="setElementOrder-contains-item-not-in-the-int-list",
    ),
    # strategicMergePatchRawTestCases
    pytest.param(
        "{metadata: {finalizers: [f1, f2, f3, f4]}}",
        "{metadata: {$setElementOrder/finalizers: [f1, f2], $deleteFromPrimitiveList/finalizers: [f3]}}",
        "{metadata: {finalizers: [f1, f2, f4]}}",
        id="delete-items-in-lists-of-scalars-3-way",
    ),
    pytest.param(
        "{metadata: {finalizers: [f1, f2, f3, f3, f4]}}",
        "{metadata: {$setElementOrder/finalizers: [f1, f2], $deleteFromPrimitiveList/finalizers: [f3]}}",
        "{metadata: {finalizers: [f1, f2, f4]}}",
        id="delete-all-duplicate-items-in-lists-of-scalars-3-way",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1, workingDir: a}, {name: c2, image: i2, workingDir: b}]}}",
        "{spec: {$setElementOrder/containers: [{name: c4}, {name: c1}, {name: c2}, {name: c3}],"
        " containers: [{name: c4, image: i4}, {name: c3, image: i3}]}}",
        "{spec: {containers: [{name: c4, image: i4}, {name: c1, workingDir: a},"
        " {name: c2, image: i2, workingDir: b}, {name: c3, image: i3}]}}",
        id="merge-lists-of-maps-3-way",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1, workingDir: a}, {name: c2, image: i3, workingDir: b}]}}",
        "{spec: {$setElementOrder/containers: [{name: c1}, {name: c2}, {name: c3}],"
        " containers: [{name: c2, image: i2}, {name: c3, image: i3}]}}",
        "{spec: {containers: [{name: c1, workingDir: a}, {name: c2, image: i2, workingDir: b},"
        " {name: c3, image: i3}]}}",
        id="merge-lists-of-maps-with-conflict-3-way",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1}, {name: c1}]}}",
        "{spec: {$setElementOrder/containers: [{name: c1}], containers: [{$patch: delete, name: c1}]}}",
        "{spec: {containers: []}}",
        id="de-duplicate-field-in-merging-list",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1}, {name: c2, workingDir: b}]}}",
        "{spec: {$setElementOrder/containers: [{name: c2}], containers: [{name: c1, $patch: delete}]}}",
        "{spec: {containers: [{name: c2, workingDir: b}]}}",
        id="delete-map-from-merging-list-3-way",
    ),
    pytest.param(
        "{spec: {containers: [{name: c3, workingDir: a}]}}",
        "{spec: {$setElementOrder/containers: [{name: c2}],"
        " containers: [{name: c2}, {name: c1, $patch: delete}]}}",
        "{spec: {containers: [{name: c2}, {name: c3, workingDir: a}]}}",
        id="delete-missing-map-from-merging-list-with-conflict-3-way",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1}, {name: c2, workingDir: b}, {name: c4, workingDir: c}]}}",
        "{spec: {$setElementOrder/containers: [{name: c2}, {name: c3}],"
        " containers: [{name: c3}, {name: c1, $patch: delete}]}}",
        "{spec: {containers: [{name: c2, workingDir: b}, {name: c4, workingDir: c}, {name: c3}]}}",
        id="add-map-and-delete-map-from-merging-list-3-way",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1, workingDir: a}, {name: c4, workingDir: c}]}}",
        "{spec: {$setElementOrder/containers: [{name: c2}, {name: c3}],"
        " containers: [{name: c2}, {name: c3}, {name: c1, $patch: delete}]}}",
        "{spec: {containers: [{name: c4, workingDir: c}, {name: c2}, {name: c3}]}}",
        id="add-map-and-delete-map-from-merging-list-with-conflict-3-way",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1, workingDir: a, env: [{name: E1}, {name: E2, value: '2'}]},"
        " {name: c2, workingDir: b}]}}",
        "{spec: {$setElementOrder/containers: [{name: c1}, {name: c2}],"
        " containers: [{name: c1, $setElementOrder/env: [{name: E1}, {name: E2}],"
        " env: [{name: E1, value: '1'}]}]}}",
        "{spec: {containers: [{name: c1, workingDir: a,"
        " env: [{name: E1, value: '1'}, {name: E2, value: '2'}]}, {name: c2, workingDir: b}]}}",
        id="add-field-to-map-in-merging-list-nested-in-merging-list-3-way",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1, workingDir: a, env: [{name: E2, value: '2'}]}]}}",
        "{spec: {containers: [{name: c1, $setElementOrder/env: [{name: E2}, {name: E1}],"
        " env: [{name: E1, value: '1'}]}]}}",
        "{spec: {containers: [{name: c1, workingDir: a,"
        " env: [{name: E2, value: '2'}, {name: E1, value: '1'}]}]}}",
        id="nested-setElementOrder-puts-the-new-env-last",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1, workingDir: a, envFrom: [{prefix: p1}, {prefix: p2}]}]}}",
        "{spec: {containers: [{name: c1, envFrom: [{prefix: p1, configMapRef: {name: m}}]}]}}",
        "{spec: {containers: [{name: c1, workingDir: a,"
        " envFrom: [{prefix: p1, configMapRef: {name: m}}]}]}}",
        id="replace-non-merging-list-nested-in-merging-list",
    ),
    pytest.param(
        "{metadata: {finalizers: [f1, f2, f4]}}",
        "{metadata: {$setElementOrder/finalizers: [f1, f2, f3], finalizers: [f3]}}",
        "{metadata: {finalizers: [f1, f2, f3, f4]}}",
        id="merge-lists-of-scalars-3-way",
    ),
    pytest.param(
        "{metadata: {finalizers: [f1, f4, f2]}}",
        "{metadata: {$setElementOrder/finalizers: [f3, f1, f2], finalizers: [f3]}}",
        "{metadata: {finalizers: [f3, f1, f4, f2]}}",
        id="add-an-item-in-a-list-of-primitives-and-preserve-order-3-way",
    ),
    pytest.param(
        "{metadata: {finalizers: [f1, f3, f2]}}",
        "{metadata: {$setElementOrder/finalizers: [f4, f2, f1], finalizers: [f4],"
        " $deleteFromPrimitiveList/finalizers: [f3]}}",
        "{metadata: {finalizers: [f4, f2, f1]}}",
        id="add-and-delete-an-item-in-a-int-list-and-preserve-order",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1, workingDir: a}, {name: c2, image: i2}, {name: c3, image: i3}]}}",
        "{spec: {$setElementOrder/containers: [{name: c4}, {name: c2}, {name: c1}],"
        " containers: [{name: c4, image: i4}, {name: c3, $patch: delete}]}}",
        "{spec: {containers: [{name: c4, image: i4}, {name: c2, image: i2}, {name: c1, workingDir: a}]}}",
        id="add-and-delete-an-item-in-a-list-and-preserve-order-3-way",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1, workingDir: a}, {name: c2, image: i2}, {name: c9},"
        " {name: c3, image: i3}, {name: c4, image: i4}]}}",
        "{spec: {$setElementOrder/containers: [{name: c2}, {name: c1}, {name: c4}, {name: c3}]}}",
        "{spec: {containers: [{name: c2, image: i2}, {name: c1, workingDir: a}, {name: c9},"
        " {name: c4, image: i4}, {name: c3, image: i3}]}}",
        id="set-elements-order-in-a-list-with-server-only-items-2",
    ),
    pytest.param(
        "{metadata: {finalizers: [f1, f2, f7, f9, f8, f3, f4]}}",
        "{metadata: {$setElementOrder/finalizers: [f2, f1, f4, f3]}}",
        "{metadata: {finalizers: [f2, f1, f7, f9, f8, f4, f3]}}",
        id="set-elements-order-in-a-int-list-with-server-only-items-3",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1}, {name: c2, image: dup1}, {name: c3}, {name: c2, image: dup2},"
        " {name: c4}]}}",
        "{spec: {$setElementOrder/containers: [{name: c2}, {name: c1}, {name: c4}, {name: c3},"
        " {name: c2}]}}",
        "{spec: {containers: [{name: c2, image: dup1}, {name: c2, image: dup2}, {name: c1},"
        " {name: c4}, {name: c3}]}}",
        id="behavior-of-set-element-order-for-a-merging-list-with-duplicate",
    ),
    pytest.param(
        "{spec: {volumes: [{name: data, emptyDir: {}}]}}",
        "{spec: {volumes: [{name: data, $retainKeys: [name, hostPath], hostPath: {path: /srv}}]}}",
        "{spec: {volumes: [{name: data, hostPath: {path: /srv}}]}}",
        id="retainKeys-map-should-clear-defaulted-field",
    ),
    pytest.param(
        "{spec: {volumes: [{name: bar}, {name: foo, emptyDir: {}, hostPath: {path: /x}}]}}",
        "{spec: {$setElementOrder/volumes: [{name: bar}, {name: foo}],"
        " volumes: [{$retainKeys: [name, emptyDir], name: foo, emptyDir: {medium: Memory}}]}}",
        "{spec: {volumes: [{name: bar}, {name: foo, emptyDir: {medium: Memory}}]}}",
        id="retainKeys-list-of-maps-changes-a-field-and-clears-a-field",
    ),
    pytest.param(
        "{metadata: {name: foo, finalizers: [f1, f2, f3]}}",
        "{metadata: {$setElementOrder/finalizers: [f1, f2, f4], $retainKeys: [finalizers, name],"
        " finalizers: [f4]}}",
        "{metadata: {name: foo, finalizers: [f1, f2, f4, f3]}}",
        id="retainKeys-map-adds-an-item-in-nested-merging-int-list",
    ),
    pytest.param(
        "{spec: {hostname: a, subdomain: b, containers: [{name: c1}]}}",
        "{spec: {$retainKeys: [hostname, containers], containers: null}}",
        "{spec: {hostname: a}}",
        id="retainKeys-map-deletes-nested-merging-list",
    ),
    pytest.param(
        "{spec: {containers: [{name: a, image: a}, {name: b, image: b}],"
        " initContainers: [{name: c, image: c}, {name: d, image: d}]}}",
        "{spec: {$setElementOrder/containers: [{name: b}],"
        " $setElementOrder/initContainers: [{name: d}, {name: c}],"
        " containers: [{$patch: delete, name: a}]}}",
        "{spec: {containers: [{name: b, image: b}],"
        " initContainers: [{name: d, image: d}, {name: c, image: c}]}}",
        id="delete-and-reorder-in-one-list-reorder-in-another",
    ),
    # createStrategicMergePatchTestCaseData
    pytest.param(
        "{spec: {hostname: '1', subdomain: a}}",
        "{spec: {hostname: null, schedulerName: '1'}}",
        "{spec: {subdomain: a, schedulerName: '1'}}",
        id="add-field-and-delete-field-from-map-3-way",
    ),
    pytest.param(
        "{metadata: {labels: {key1: '1', key2: '1', other: a}}}",
        "{metadata: {labels: {key2: null}}}",
        "{metadata: {labels: {key1: '1', other: a}}}",
        id="delete-field-from-nested-map-3-way",
    ),
    pytest.param(
        "{spec: {tolerations: [{key: t1}, {key: t4}]}}",
        "{spec: {tolerations: [{key: t2}, {key: t3}]}}",
        "{spec: {tolerations: [{key: t2}, {key: t3}]}}",
        id="replace-list-with-conflict-3-way",
    ),
    pytest.param(
        "{metadata: {name: a}, spec: {hostname: b}}",
        "{spec: {hostname: c, subdomain: null}}",
        "{metadata: {name: a}, spec: {hostname: c}}",
        id="defined-null-values-should-propagate-overwrite-current-fields",
    ),
]


@pytest.mark.parametrize(("original", "patch", "expected"), UPSTREAM)
def test_strategic_merge_patch_matches_upstream_vectors(
    original: str, patch: str, expected: str
) -> None:
    assert strategic_merge_patch("Pod", y(original), y(patch)) == y(expected)


# -- strategic merge patch: the kinds' list strategies ----------------------------------------

KINDS = [
    pytest.param(
        "ServiceAccount",
        "{metadata: {name: default}, imagePullSecrets: [{name: old}], secrets: [{name: tok}]}",
        "{imagePullSecrets: [{name: myregistrykey}]}",
        "{metadata: {name: default}, imagePullSecrets: [{name: myregistrykey}],"
        " secrets: [{name: tok}]}",
        id="serviceaccount-imagePullSecrets-replaced",
    ),
    pytest.param(
        "ServiceAccount",
        "{secrets: [{name: tok}]}",
        "{secrets: [{name: other}]}",
        "{secrets: [{name: other}, {name: tok}]}",
        id="serviceaccount-secrets-merged-by-name",
    ),
    pytest.param(
        "Pod",
        "{spec: {imagePullSecrets: [{name: a}, {name: b}]}}",
        "{spec: {imagePullSecrets: [{name: myregistrykey}, {name: b, $patch: delete}]}}",
        "{spec: {imagePullSecrets: [{name: myregistrykey}, {name: a}]}}",
        id="pod-imagePullSecrets-merged-by-name-new-items-first",
    ),
    pytest.param(
        "Pod",
        "{spec: {containers: [{name: app, image: nginx}]}}",
        "{spec: {containers: [{name: sidecar, image: busybox}]}}",
        "{spec: {containers: [{name: sidecar, image: busybox}, {name: app, image: nginx}]}}",
        id="pod-new-container-without-order-goes-first",
    ),
    pytest.param(
        "Pod",
        "{spec: {containers: [{name: app, image: nginx}]}}",
        "{spec: {$setElementOrder/containers: [{name: app}, {name: sidecar}],"
        " containers: [{name: sidecar, image: busybox}]}}",
        "{spec: {containers: [{name: app, image: nginx}, {name: sidecar, image: busybox}]}}",
        id="pod-setElementOrder-containers-as-kubectl-apply-sends-it",
    ),
    pytest.param(
        "Pod",
        "{spec: {containers: [{name: app, env: [{name: A, value: '1'}, {name: B, value: '2'},"
        " {name: C, value: '3'}]}]}}",
        "{spec: {containers: [{name: app, env: [{name: B, value: two}, {name: C, $patch: delete},"
        " {name: A, value: null}]}]}}",
        "{spec: {containers: [{name: app, env: [{name: B, value: two}, {name: A}]}]}}",
        id="pod-container-env-merged-and-deleted-by-name",
    ),
    pytest.param(
        "Pod",
        "{spec: {containers: [{name: app, ports: [{containerPort: 80, name: http}],"
        " volumeMounts: [{mountPath: /a, name: v}]}]}}",
        "{spec: {containers: [{name: app, ports: [{containerPort: 80, protocol: TCP}],"
        " volumeMounts: [{mountPath: /b, name: w}]}]}}",
        "{spec: {containers: [{name: app, ports: [{containerPort: 80, name: http, protocol: TCP}],"
        " volumeMounts: [{mountPath: /b, name: w}, {mountPath: /a, name: v}]}]}}",
        id="pod-ports-by-containerPort-volumeMounts-by-mountPath",
    ),
    pytest.param(
        "Pod",
        "{spec: {initContainers: [{name: init, env: [{name: A, value: '1'}]}]}}",
        "{spec: {initContainers: [{name: init, env: [{name: B, value: '2'}]}]}}",
        "{spec: {initContainers: [{name: init, env: [{name: B, value: '2'}, {name: A, value: '1'}]}]}}",
        id="pod-initContainers-env-merged",
    ),
    pytest.param(
        "Pod",
        "{spec: {tolerations: [{key: a}], readinessGates: [{conditionType: x}]}}",
        "{spec: {tolerations: [{key: b}], readinessGates: [{conditionType: y}]}}",
        "{spec: {tolerations: [{key: b}], readinessGates: [{conditionType: y}]}}",
        id="pod-tolerations-and-readinessGates-replaced",
    ),
    pytest.param(
        "Pod",
        "{status: {conditions: [{type: Ready, status: 'False'}, {type: PodScheduled, status: 'True'}]}}",
        "{status: {conditions: [{type: Ready, status: 'True'}]}}",
        "{status: {conditions: [{type: Ready, status: 'True'}, {type: PodScheduled, status: 'True'}]}}",
        id="pod-status-conditions-merged-by-type",
    ),
    pytest.param(
        "Pod",
        "{metadata: {ownerReferences: [{uid: u1, name: rs}], finalizers: [a, b]}}",
        "{metadata: {ownerReferences: [{uid: u1, controller: true}], finalizers: [c, a]}}",
        "{metadata: {ownerReferences: [{uid: u1, name: rs, controller: true}], finalizers: [c, a, b]}}",
        id="pod-ownerReferences-by-uid-finalizers-as-a-set",
    ),
    pytest.param(
        "Pod",
        "{metadata: {finalizers: [a, b, c]}}",
        "{metadata: {$deleteFromPrimitiveList/finalizers: [b, z]}}",
        "{metadata: {finalizers: [a, c]}}",
        id="deleteFromPrimitiveList-finalizers",
    ),
    pytest.param(
        "Pod",
        "{metadata: {name: p}}",
        "{metadata: {$deleteFromPrimitiveList/finalizers: [b]}}",
        "{metadata: {name: p}}",
        id="deleteFromPrimitiveList-of-an-absent-list-adds-nothing",
    ),
    pytest.param(
        "Pod",
        "{metadata: {finalizers: [a]}}",
        "{metadata: {finalizers: [b], $deleteFromPrimitiveList/finalizers: [b]}}",
        "{metadata: {finalizers: [a]}}",
        id="a-value-added-and-deleted-is-deleted",
    ),
    pytest.param(
        "Service",
        "{spec: {ports: [{port: 80, targetPort: 8080}, {port: 443}], externalIPs: [1.1.1.1]}}",
        "{spec: {ports: [{port: 80, targetPort: 9090}], externalIPs: [2.2.2.2]}}",
        "{spec: {ports: [{port: 80, targetPort: 9090}, {port: 443}], externalIPs: [2.2.2.2]}}",
        id="service-ports-merged-by-port-externalIPs-replaced",
    ),
    pytest.param(
        "Service",
        "{spec: {ports: [{port: 80}]}}",
        "{spec: {ports: [{port: 80.0, name: web}]}}",
        "{spec: {ports: [{port: 80.0, name: web}, {port: 80}]}}",
        id="merge-keys-compare-as-go-does-80-is-not-80.0",
    ),
    pytest.param(
        "Pod",
        "{spec: {containers: [{name: a}, {name: b}]}}",
        "{spec: {containers: [{$patch: replace}, {name: c, image: x}]}}",
        "{spec: {containers: [{name: c, image: x}]}}",
        id="patch-replace-in-a-list",
    ),
    pytest.param(
        "Pod",
        "{spec: {nodeSelector: {a: '1', b: '2'}, hostname: h}}",
        "{spec: {nodeSelector: {$patch: replace, c: '3'}}}",
        "{spec: {nodeSelector: {c: '3'}, hostname: h}}",
        id="patch-replace-in-a-map",
    ),
    pytest.param(
        "Pod",
        "{metadata: {name: p}, spec: {hostname: h}}",
        "{$patch: replace, metadata: {name: q}}",
        "{metadata: {name: q}}",
        id="patch-replace-of-the-whole-object",
    ),
    pytest.param(
        "Pod",
        "{spec: {securityContext: {runAsUser: 1, fsGroup: 2}}}",
        "{spec: {securityContext: {$retainKeys: [runAsUser, runAsGroup], runAsGroup: 3}}}",
        "{spec: {securityContext: {runAsUser: 1, runAsGroup: 3}}}",
        id="retainKeys-in-a-map",
    ),
    pytest.param(
        "Pod",
        "{spec: {containers: [{name: a}]}}",
        "{spec: {containers: [{name: b, env: [{name: X, $patch: delete}, {name: Y, value: null}],"
        " securityContext: {$patch: delete}}], affinity: {$patch: replace, nodeAffinity: {}}}}",
        "{spec: {containers: [{name: b, env: [{name: Y}]}, {name: a}]}}",
        id="values-with-no-original-lose-nulls-and-maps-holding-patch",
    ),
    pytest.param(
        "Widget",
        "{metadata: {finalizers: [a]}, spec: {containers: [{name: a}]}}",
        "{metadata: {finalizers: [b]}, spec: {containers: [{name: b}], x: {y: 1}}}",
        "{metadata: {finalizers: [b]}, spec: {containers: [{name: b}], x: {y: 1}}}",
        id="unknown-kind-maps-merge-lists-replace",
    ),
    pytest.param(
        "Secret",
        "{data: {a: YQ==, b: Yg==}, stringData: {c: x}}",
        "{data: {a: null, d: ZA==}}",
        "{data: {b: Yg==, d: ZA==}, stringData: {c: x}}",
        id="secret-data-merges-key-by-key",
    ),
    pytest.param(
        "ConfigMap",
        "{data: {a: '1'}, binaryData: {b: Yg==}}",
        "{data: {a: '2'}}",
        "{data: {a: '2'}, binaryData: {b: Yg==}}",
        id="configmap",
    ),
    pytest.param(
        "RuntimeClass",
        "{handler: runc, scheduling: {tolerations: [{key: a}], nodeSelector: {x: y}}}",
        "{scheduling: {tolerations: [{key: b}]}}",
        "{handler: runc, scheduling: {tolerations: [{key: b}], nodeSelector: {x: y}}}",
        id="runtimeclass-tolerations-replaced",
    ),
    pytest.param(
        "Event",
        "{reason: Pulled, count: 1, series: {count: 2}, metadata: {finalizers: [a]}}",
        "{count: 2, series: {count: 3}, metadata: {finalizers: [b]}}",
        "{reason: Pulled, count: 2, series: {count: 3}, metadata: {finalizers: [b, a]}}",
        id="event",
    ),
    pytest.param(
        "Pod",
        "{metadata: {labels: {a: b}}}",
        "{$patch: delete}",
        "{}",
        id="patch-delete-of-the-whole-object",
    ),
    pytest.param(
        "Pod",
        "{metadata: {name: p}, spec: {containers: [{name: a}]}}",
        "{spec: {containers: [{name: a, $patch: merge, image: x}]},"
        " metadata: {$patch: merge, labels: {a: b}}}",
        "{metadata: {name: p, labels: {a: b}}, spec: {containers: [{name: a, image: x}]}}",
        id="patch-merge-is-the-default",
    ),
]


@pytest.mark.parametrize(("kind", "original", "patch", "expected"), KINDS)
def test_strategic_merge_patch_follows_the_kinds_tags(
    kind: str, original: str, patch: str, expected: str
) -> None:
    assert strategic_merge_patch(kind, y(original), y(patch)) == y(expected)


@pytest.mark.parametrize(
    ("kind", "path", "strategy"),
    [
        pytest.param("Pod", "spec.containers", ListStrategy("name"), id="containers"),
        pytest.param("Pod", "spec.initContainers", ListStrategy("name"), id="initContainers"),
        pytest.param("Pod", "spec.ephemeralContainers[].env", ListStrategy("name"), id="eph-env"),
        pytest.param("Pod", "spec.containers[].ports", ListStrategy("containerPort"), id="ports"),
        pytest.param(
            "Pod", "spec.containers[].volumeDevices", ListStrategy("devicePath"), id="devices"
        ),
        pytest.param(
            "Pod", "spec.volumes", ListStrategy("name", retain_keys=True), id="volumes-retainKeys"
        ),
        pytest.param("Pod", "spec.hostAliases", ListStrategy("ip"), id="hostAliases"),
        pytest.param("Pod", "status.podIPs", ListStrategy("ip"), id="podIPs"),
        pytest.param("Pod", "metadata.finalizers", ListStrategy(), id="finalizers"),
        pytest.param("Secret", "metadata.ownerReferences", ListStrategy("uid"), id="ownerRefs"),
        pytest.param("Service", "spec.ports", ListStrategy("port"), id="service-ports"),
        pytest.param("ServiceAccount", "secrets", ListStrategy("name"), id="sa-secrets"),
        pytest.param("Pod", "spec.tolerations", None, id="tolerations-none"),
        pytest.param("Pod", "spec.readinessGates", None, id="readinessGates-none"),
        pytest.param("Pod", "spec.containers[].envFrom", None, id="envFrom-none"),
        pytest.param("Pod", "spec.containers[].resizePolicy", None, id="resizePolicy-none"),
        pytest.param("Pod", "status.containerStatuses", None, id="containerStatuses-none"),
        pytest.param("ServiceAccount", "imagePullSecrets", None, id="sa-imagePullSecrets-none"),
        pytest.param("Widget", "metadata.finalizers", None, id="unknown-kind-none"),
    ],
)
def test_list_strategies_table(kind: str, path: str, strategy: ListStrategy | None) -> None:
    assert LIST_STRATEGIES.get((kind, path)) == strategy


# (original, patch, field, invalid, words)
STRATEGIC_ERRORS = [
    pytest.param("{}", "[]", None, False, "JSON object", id="patch-not-an-object"),
    pytest.param(
        "{spec: {}}", "{spec: {$patch: frob}}", "spec", False, "$patch", id="unknown-directive"
    ),
    pytest.param(
        "{spec: {containers: []}}",
        "{spec: {containers: [{name: a, $patch: frob}]}}",
        "spec.containers[0]",
        False,
        "$patch",
        id="unknown-directive-in-list",
    ),
    pytest.param(
        "{spec: {}}", "{spec: {$retainKeys: hostname}}", "spec", False, "list", id="retainKeys-type"
    ),
    pytest.param(
        "{spec: {}}",
        "{spec: {$retainKeys: [hostname], subdomain: x}}",
        "spec",
        False,
        "not in $retainKeys",
        id="key-outside-retainKeys",
    ),
    pytest.param(
        "{spec: {containers: []}}",
        "{spec: {$setElementOrder/containers: {name: a}}}",
        "spec.containers",
        False,
        "must be a list",
        id="setElementOrder-not-a-list",
    ),
    pytest.param(
        "{spec: {}}", "{spec: {$setElementOrder: []}}", "spec", False, "/<field>", id="no-slash"
    ),
    pytest.param(
        "{metadata: {}}",
        "{metadata: {$deleteFromPrimitiveList/finalizers: a}}",
        "metadata.finalizers",
        False,
        "must be a list",
        id="deleteFromPrimitiveList-not-a-list",
    ),
    pytest.param(
        "{spec: {containers: [{name: c1}, {name: c3}, {name: c2}]}}",
        "{spec: {$setElementOrder/containers: [{name: c1}, {name: c2}, {name: c3}],"
        " containers: [{name: c3, image: x}, {name: c1, image: y}]}}",
        "spec.containers",
        False,
        "does not match",
        id="setElementOrder-and-patch-list-disagree",
    ),
    pytest.param(
        "{spec: {containers: [{name: a, image: x}]}}",
        "{spec: {containers: [{image: y}]}}",
        "spec.containers[0]",
        False,
        "merge key name",
        id="missing-merge-key",
    ),
    pytest.param(
        "{spec: {containers: []}}",
        "{spec: {containers: [x]}}",
        "spec.containers[0]",
        False,
        "object",
        id="merge-list-item-not-an-object",
    ),
    pytest.param(
        "{spec: {containers: [{name: a}]}}",
        "{spec: {$deleteFromPrimitiveList/containers: [a]}}",
        "spec.containers",
        False,
        "lists of scalars",
        id="deleteFromPrimitiveList-on-a-list-of-objects",
    ),
    pytest.param(
        "{metadata: {finalizers: [a]}}",
        "{metadata: {finalizers: [[b]]}}",
        "metadata.finalizers",
        True,
        "list of scalars",
        id="list-of-lists",
    ),
    pytest.param(
        "{spec: {containers: [web]}}",
        "{spec: {containers: [{name: a}]}}",
        "spec.containers",
        True,
        "not objects",
        id="object-list-item-not-an-object",
    ),
    pytest.param(
        "{spec: {containers: {name: a}}}",
        "{spec: {$setElementOrder/containers: [{name: a}]}}",
        "spec.containers",
        True,
        "not a list",
        id="setElementOrder-of-a-field-that-is-not-a-list",
    ),
]


@pytest.mark.parametrize(("original", "patch", "field", "invalid", "words"), STRATEGIC_ERRORS)
def test_strategic_merge_patch_errors(
    original: str, patch: str, field: str | None, invalid: bool, words: str
) -> None:
    with pytest.raises(PatchError) as caught:
        strategic_merge_patch("Pod", y(original), y(patch))
    assert caught.value.field == field
    assert caught.value.invalid is invalid
    assert words in caught.value.message


def test_strategic_errors_do_not_show_secret_values() -> None:
    secret = {"data": {"password": "aHVudGVyMg=="}}
    with pytest.raises(PatchError) as caught:
        strategic_merge_patch(
            "Secret", secret, {"data": {"$retainKeys": ["x"], "password": "eQ=="}}
        )
    assert "aHVudGVyMg==" not in str(caught.value)
    assert "eQ==" not in str(caught.value)


# -- properties -----------------------------------------------------------------------------

_SCALARS = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-2, 2) | st.text(max_size=4)
_FIELDS = sorted(
    {part for _, path in LIST_STRATEGIES for part in path.replace("[]", "").split(".")}
)
_DIRECTIVES = ["$patch", "$retainKeys", "$setElementOrder/containers"]
_KEYS = st.sampled_from(
    [*_FIELDS, *_DIRECTIVES, "$deleteFromPrimitiveList/finalizers", "name", "labels"]
) | st.text(max_size=3)
JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=25,
)
OBJECTS = st.dictionaries(_KEYS, JSON, max_size=5)
ALL_KINDS = [*sorted({kind for kind, _ in LIST_STRATEGIES}), "Widget"]


@given(OBJECTS)
def test_an_empty_merge_patch_changes_nothing(document: dict[str, Any]) -> None:
    assert merge_patch(document, {}) == document


@given(JSON)
def test_an_empty_json_patch_changes_nothing(document: Any) -> None:
    assert json_patch(document, []) == document


@given(st.sampled_from(ALL_KINDS), OBJECTS)
def test_an_empty_strategic_patch_changes_nothing(kind: str, document: dict[str, Any]) -> None:
    assert strategic_merge_patch(kind, document, {}) == document


@given(OBJECTS, OBJECTS)
def test_merge_patch_is_idempotent_and_mutates_nothing(
    target: dict[str, Any], patch: dict[str, Any]
) -> None:
    before = copy.deepcopy((target, patch))
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once
    assert (target, patch) == before


@settings(max_examples=300)
@given(st.sampled_from(ALL_KINDS), OBJECTS, OBJECTS)
def test_strategic_merge_patch_mutates_nothing_and_fails_only_with_patch_error(
    kind: str, original: dict[str, Any], patch: dict[str, Any]
) -> None:
    before = copy.deepcopy((original, patch))
    try:
        result = strategic_merge_patch(kind, original, patch)
    except PatchError:
        result = None
    assert (original, patch) == before
    if result is not None:
        result["added"] = 1
        assert (original, patch) == before


_POINTERS = st.lists(st.sampled_from(["a", "b", "0", "1", "-", "~0", "~1", ""]), max_size=3).map(
    lambda parts: "".join(f"/{p}" for p in parts)
)
_OPERATIONS = st.lists(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test"])},
        optional={"path": _POINTERS, "from": _POINTERS, "value": JSON},
    ),
    max_size=4,
)


@settings(max_examples=300)
@given(JSON, _OPERATIONS)
def test_json_patch_mutates_nothing_and_fails_only_with_patch_error(
    document: Any, operations: list[dict[str, Any]]
) -> None:
    before = copy.deepcopy((document, operations))
    with contextlib.suppress(PatchError):
        json_patch(document, operations)
    assert (document, operations) == before


@given(st.dictionaries(st.text(max_size=5), JSON, max_size=4), st.text(max_size=5), JSON)
def test_adding_then_removing_a_new_member_restores_the_document(
    document: dict[str, Any], key: str, value: Any
) -> None:
    pointer = "/" + key.replace("~", "~0").replace("/", "~1")
    operations = [{"op": "add", "path": pointer, "value": value}, {"op": "remove", "path": pointer}]
    expected = {k: v for k, v in document.items() if k != key}
    assert json_patch(document, operations) == expected
