"""Hostile manifests (as POST /apply and static pod files receive them) are ConfigErrors naming
the source, never tracebacks, and never quote a Secret's value; the API answers them with 422."""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import anyio
import pytest

from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s import ObjectStore, parse_manifests
from kubelet_sim.k8s.manifests import MAX_OBJECTS
from kubelet_sim.node.api import API
from kubelet_sim.node.httpserver import Request

POD = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: nginx}]\n"
SECRET = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"
LAUGHS = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
)
HOSTILE = [
    pytest.param(POD + "  priority: " + "9" * 5000 + "\n", "line 6", id="5000-digit-int"),
    pytest.param(
        json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})[:-1]
        + ', "spec": {"x": '
        + "9" * 5000
        + "}}",
        "line 1",
        id="5000-digit-int-json",
    ),
    pytest.param(SECRET + "data:\n  1: YQ==\n", "data[1]", id="secret-int-key"),
    pytest.param(SECRET + "stringData:\n  true: b\n", "stringData[True]", id="secret-bool-key"),
    pytest.param(SECRET + "stringData:\n  ~: b\n", "stringData[None]", id="secret-null-key"),
    pytest.param(SECRET + "stringData:\n  ? [a]\n  : b\n", "line 5", id="secret-sequence-key"),
    pytest.param(
        "a: &a [x]\nitems: [" + ",".join(["*a"] * 800_000) + "]\n",  # 3.2 MB, as the red team sent
        "excessive aliasing",
        id="alias-repeated-800k",
    ),
    pytest.param(LAUGHS, "excessive aliasing", id="billion-laughs"),
    pytest.param("a: &a [*a]\n", "refers to itself", id="recursive-alias"),
    pytest.param(
        "apiVersion: v1\nkind: List\nitems: [" + ",".join(["{}"] * (MAX_OBJECTS + 1)) + "]\n",
        f"at most {MAX_OBJECTS}",
        id="too-many-objects",
    ),
]


@pytest.mark.parametrize(("text", "names"), HOSTILE)
def test_hostile_manifests_are_config_errors_naming_the_source(text: str, names: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        ObjectStore().apply_all(parse_manifests(text, source="request body"))
    assert str(info.value).startswith("request body")
    assert names in str(info.value)
    assert time.perf_counter() - started < 5, "refused without expanding the document"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("!SuperSecret-Pa55", id="tag"),
        pytest.param("*SuperSecret-Pa55", id="alias"),
        pytest.param('"SuperSecret-Pa55', id="unterminated-quote"),
        pytest.param("'SuperSecret-Pa55", id="unterminated-single-quote"),
        pytest.param("SuperSecret-Pa55\n  : x", id="bad-indent"),
        pytest.param('"SuperSecret-Pa55\\q"', id="bad-escape"),
    ],
)
def test_parse_errors_never_quote_what_was_written(value: str) -> None:
    text = SECRET + f"stringData:\n  password: {value}\n"
    with pytest.raises(ConfigError) as info:
        parse_manifests(text, source="secret.yaml")
    assert info.value.file == "secret.yaml"
    assert "line " in str(info.value)
    assert "SuperSecret" not in str(info.value)


def test_a_few_aliases_in_a_real_manifest_still_parse() -> None:
    text = POD.replace("metadata: {name: p}", "metadata: {name: p, labels: &l {app: web}}")
    text += "  nodeSelector: *l\n"
    (manifest,) = parse_manifests(text)
    assert manifest.raw["spec"]["nodeSelector"] == {"app": "web"}


def test_the_object_limit_counts_list_items_and_documents() -> None:
    documents = "---\n".join(POD.replace("name: p", f"name: p{i}") for i in range(3))
    assert len(parse_manifests(documents)) == 3


class _Node:
    """The daemon's apply path (parse off the loop, then the object store) and nothing else."""

    ready = True

    def __init__(self) -> None:
        self.objects = ObjectStore()

    def metrics_text(self) -> bytes:
        return b""

    async def apply(self, body: bytes, content_type: str) -> list[dict[str, str]]:
        parse = functools.partial(parse_manifests, body, source="request body")
        manifests = await anyio.to_thread.run_sync(parse)
        return [{"name": r.name} for r in self.objects.apply_all(manifests)]

    async def delete_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def pods(self) -> list[dict[str, Any]]:
        return []

    def pod(self, namespace: str, name: str, *, reveal: bool = False) -> dict[str, Any] | None:
        return None

    async def explain(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    async def images(self) -> list[dict[str, Any]]:
        return []

    def events(self, namespace: str | None, name: str | None) -> list[dict[str, Any]]:
        return []


@pytest.mark.anyio
@pytest.mark.parametrize(("text", "names"), HOSTILE)
async def test_the_api_answers_hostile_bodies_with_422_and_a_small_answer(
    text: str, names: str
) -> None:
    request = Request("POST", "/apply", {}, {}, text.encode())
    response = await API(_Node())(request)
    assert response.status == 422, response.body[:500]
    assert len(response.body) < 4096
    answer = json.loads(response.body)
    assert answer["source"].startswith("request body")
    assert names in json.dumps(answer)
