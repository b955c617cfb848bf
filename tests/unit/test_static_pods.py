"""The kubelet's file source: Pods only, NAME-NODENAME, content-hash UIDs, no Secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from kubelet_sim.node.static import StaticPods, read_folder, static_uid

POD = (
    "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: kube-system}}\n"
    "spec:\n  containers: [{{name: app, image: '{image}'}}]\n"
)
SECRET = (
    "apiVersion: v1\nkind: Secret\nmetadata: {name: regcred, namespace: kube-system}\n"
    "stringData: {token: SuperSecret}\n"
)


def test_static_pods_are_named_after_the_node_in_their_namespace() -> None:
    source = StaticPods("node-1")
    assert source.update({Path("/m/etcd.yaml"): POD.format(name="etcd", image="etcd:3.5").encode()})
    (key,) = source.pods()
    assert key == ("kube-system", "etcd-node-1")
    assert source.get("kube-system", "etcd-node-1") is not None
    assert source.get("kube-system", "etcd") is None


def test_the_uid_hashes_node_file_and_content_so_an_edit_is_a_new_pod() -> None:
    file = Path("/m/web.yaml")
    source = StaticPods("node-1")
    source.update({file: POD.format(name="web", image="nginx:1.26").encode()})
    first = source.get("kube-system", "web-node-1")
    assert first is not None
    # An unchanged file keeps its UID, across a new source too (a daemon restart).
    again = StaticPods("node-1")
    again.update({file: POD.format(name="web", image="nginx:1.26").encode()})
    assert again.get("kube-system", "web-node-1") == first
    # An edit is a new pod; another node or another file gives another UID.
    assert source.update({file: POD.format(name="web", image="nginx:1.27").encode()})
    edited = source.get("kube-system", "web-node-1")
    assert edited is not None
    assert edited.uid != first.uid
    other_node = StaticPods("node-2")
    other_node.update({file: POD.format(name="web", image="nginx:1.26").encode()})
    pod = other_node.get("kube-system", "web-node-2")
    assert pod is not None
    assert pod.uid != first.uid
    assert len({first.uid, edited.uid, pod.uid}) == 3
    doc = {"a": 1}
    assert static_uid("n", Path("/f"), doc) != static_uid("n", Path("/g"), doc)


def test_a_static_file_never_carries_secrets_or_other_kinds() -> None:
    source = StaticPods("node-1")
    text = SECRET + "---\n" + POD.format(name="web", image="nginx")
    with capture_logs() as logs:
        source.update({Path("/m/mixed.yaml"): text.encode()})
    assert list(source.pods()) == [("kube-system", "web-node-1")]
    refused = [e for e in logs if e["event"] == "static.not_a_pod"]
    assert refused == [
        {
            "event": "static.not_a_pod",
            "file": "/m/mixed.yaml",
            "kind": "Secret",
            "name": "regcred",
            "log_level": "warning",
        }
    ]
    assert "SuperSecret" not in repr(logs)


def test_a_static_pod_inherits_nothing_and_its_secret_references_are_logged() -> None:
    text = POD.format(name="web", image="nginx") + "  imagePullSecrets: [{name: regcred}]\n"
    source = StaticPods("node-1")
    with capture_logs() as logs:
        source.update({Path("/m/web.yaml"): text.encode()})
    pod = source.get("kube-system", "web-node-1")
    assert pod is not None
    assert pod.image_pull_secrets == ("regcred",)  # kept: the lookup fails at pull time
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "static.mirror_pod_forbidden"
    ]


def test_removing_or_breaking_a_file() -> None:
    source = StaticPods("node-1")
    web = POD.format(name="web", image="nginx").encode()
    source.update({Path("/m/web.yaml"): web})
    # A file that stops parsing keeps its pods (a half-written edit does not stop them).
    assert not source.update({Path("/m/web.yaml"): b"spec: [unclosed\n"})
    assert list(source.pods()) == [("kube-system", "web-node-1")]
    assert source.update({})
    assert source.pods() == {}


def test_two_files_with_the_same_pod_keep_the_first_by_file_name() -> None:
    source = StaticPods("node-1")
    with capture_logs() as logs:
        source.update(
            {
                Path("/m/b.yaml"): POD.format(name="web", image="b").encode(),
                Path("/m/a.yaml"): POD.format(name="web", image="a").encode(),
            }
        )
        pods = source.pods()
    assert pods[("kube-system", "web-node-1")].containers[0].image == "a"
    assert any(e["event"] == "static.duplicate" for e in logs)


@pytest.mark.parametrize("name", [".web.yaml.swp", ".hidden.yaml", "notes.txt", "web.yaml~"])
def test_read_folder_skips_dotfiles_and_other_suffixes(tmp_path: Path, name: str) -> None:
    (tmp_path / "web.yaml").write_text("x")
    (tmp_path / name).write_text("y")
    assert list(read_folder(tmp_path)) == [tmp_path / "web.yaml"]


@pytest.mark.anyio
async def test_deleting_a_static_pod_through_the_api_is_a_conflict_naming_its_file() -> None:
    from kubelet_sim.errors import ConfigError
    from kubelet_sim.node.api import API
    from kubelet_sim.node.httpserver import Request

    class Node:
        ready = True

        async def delete_pod(self, namespace: str, name: str) -> bool:
            raise ConfigError(f"pod {namespace}/{name}", None, "is a static pod: remove its file")

    response = await API(Node())(Request("DELETE", "/pods/kube-system/etcd-node-1", {}, {}))  # type: ignore[arg-type]
    assert response.status == 409
    assert b"static pod" in response.body
