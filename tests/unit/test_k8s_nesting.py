"""Deeply nested manifests fail as ConfigError naming the source; they never crash the parser."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
import yaml

from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s import ObjectStore, parse_manifests
from kubelet_sim.k8s import manifests as manifests_module
from kubelet_sim.k8s.manifests import MAX_DOCUMENT_DEPTH, MAX_NESTING_DEPTH

DEEP = 30_000  # 60 KB of brackets; far past the recursion limit and libyaml's C stack


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a: " + "[" * DEEP + "]" * DEEP, id="yaml-flow"),
        pytest.param("- " * DEEP + "x\n", id="yaml-block-sequences"),
        pytest.param("{" + '"a": {' * DEEP + "}" * (DEEP + 1), id="json-objects"),
        pytest.param("[" * DEEP + "]" * DEEP, id="json-arrays"),
        pytest.param(
            "kind: Pod\n---\n" + "a:\n" + "".join("  " * i + "a:\n" for i in range(1, 1100)),
            id="yaml-block-mappings-second-document",
        ),
    ],
)
def test_deep_nesting_is_a_config_error_naming_the_source_and_position(text: str) -> None:
    # Our contract, whichever layer refuses first (our depth scan or the parser's own limit):
    # a ConfigError that names the source and where in it, never a crash.
    assert len(text) >= 60_000 or "kind: Pod" in text
    with pytest.raises(ConfigError) as info:
        parse_manifests(text, source="deep.yaml")
    assert info.value.file == "deep.yaml"
    position = re.search(r"line (\d+), column (\d+)", str(info.value))
    assert position is not None, str(info.value)
    line, column = int(position[1]), int(position[2])
    # The refusal is deep inside the document, not at its start.
    assert line > 1 or column > MAX_NESTING_DEPTH // 2


def test_deep_nesting_through_the_store_applies_nothing() -> None:
    store = ObjectStore()
    with pytest.raises(ConfigError, match="request body"):
        store.apply_text(("a: " + "[" * DEEP + "]" * DEEP).encode(), source="request body")
    assert len(store) == 0


def deep_pod(depth: int) -> str:
    text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
    return text + "  - {name: a, image: nginx}\n  extra: " + "[" * depth + "]" * depth + "\n"


def test_nesting_up_to_the_stored_limit_still_parses() -> None:
    # Under the top-level and spec mappings: the document is MAX_DOCUMENT_DEPTH deep.
    (manifest,) = parse_manifests(deep_pod(MAX_DOCUMENT_DEPTH - 2))
    assert manifest.object.name == "p"


def test_a_document_deeper_than_is_stored_and_served_is_refused() -> None:
    # YAML parses it (MAX_NESTING_DEPTH), but serving it would copy and encode it recursively.
    assert MAX_DOCUMENT_DEPTH < MAX_NESTING_DEPTH
    with pytest.raises(ConfigError, match=f"nests deeper than {MAX_DOCUMENT_DEPTH} levels"):
        parse_manifests(deep_pod(MAX_DOCUMENT_DEPTH - 1), source="deep.yaml")


def test_the_pure_python_loader_recursion_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without libyaml the SafeLoader's composer recurses and runs out of stack below the limit.
    monkeypatch.setattr(manifests_module, "_LOADER", yaml.SafeLoader)
    with pytest.raises(ConfigError) as info:
        parse_manifests("a: " + "[" * 900 + "]" * 900, source="deep.yaml")
    assert info.value.file == "deep.yaml"


def test_out_of_memory_while_parsing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(manifests_module, "_load_all", exhausted)
    with pytest.raises(ConfigError, match="out of memory") as info:
        parse_manifests("a: b\n", source="big.yaml")
    assert info.value.file == "big.yaml"


def test_libyaml_is_used_when_available() -> None:
    loader = manifests_module._LOADER("a: b\n")
    assert isinstance(loader, getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def test_deeply_nested_docker_config_secret_is_redacted() -> None:
    secret = "[" * DEEP + '"SENSITIVE"' + "]" * DEEP
    doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(secret.encode()).decode()},
    }
    with pytest.raises(ConfigError, match="nested too deeply") as info:
        parse_manifests(json.dumps(doc), source="secret.json")
    assert info.value.field == "data[.dockerconfigjson]"
    assert "SENSITIVE" not in str(info.value)
