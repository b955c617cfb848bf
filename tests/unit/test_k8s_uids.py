"""UIDs as the API server assigns them: fresh on create, kept on update, explicit ones respected."""

from __future__ import annotations

import json
import uuid

import pytest

from kubelet_sim.k8s import ApplyAction, Kind, ObjectStore, stable_uid


def pod_doc(image: str = "nginx:1", uid: str | None = None, name: str = "p") -> str:
    meta: dict[str, str] = {"name": name}
    if uid is not None:
        meta["uid"] = uid
    spec = {"containers": [{"name": "app", "image": image}]}
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})


def pod_uid(store: ObjectStore, name: str = "p") -> str:
    pod = store.get_pod("default", name)
    assert pod is not None
    return pod.uid


def test_a_recreated_pod_gets_a_new_uid() -> None:
    store = ObjectStore()
    assert store.apply_text(pod_doc())[0].action is ApplyAction.CREATED
    first = pod_uid(store)
    assert uuid.UUID(first).version == 4
    assert store.delete(Kind.POD, "default", "p")
    assert store.apply_text(pod_doc())[0].action is ApplyAction.CREATED
    assert pod_uid(store) != first


@pytest.mark.parametrize(
    ("second", "action"),
    [
        pytest.param(pod_doc(), ApplyAction.UNCHANGED, id="same-document"),
        pytest.param(pod_doc(image="nginx:2"), ApplyAction.CONFIGURED, id="changed-document"),
    ],
)
def test_an_update_keeps_the_uid(second: str, action: ApplyAction) -> None:
    store = ObjectStore()
    store.apply_text(pod_doc())
    first = pod_uid(store)
    assert store.apply_text(second)[0].action is action
    assert pod_uid(store) == first


def test_every_created_object_gets_its_own_uid() -> None:
    store = ObjectStore()
    store.apply_text(pod_doc(name="a") + "\n---\n" + pod_doc(name="b"))
    assert pod_uid(store, "a") != pod_uid(store, "b")


def test_an_explicit_uid_is_kept() -> None:
    store = ObjectStore()
    store.apply_text(pod_doc(uid="uid-1"))
    assert pod_uid(store) == "uid-1"
    store.delete(Kind.POD, "default", "p")
    store.apply_text(pod_doc(uid="uid-1"))
    assert pod_uid(store) == "uid-1"
    assert store.apply_text(pod_doc(uid="uid-1"))[0].action is ApplyAction.UNCHANGED


def test_a_document_without_uid_updates_an_object_created_with_one() -> None:
    store = ObjectStore()
    store.apply_text(pod_doc(uid="uid-1"))
    assert store.apply_text(pod_doc(image="nginx:2"))[0].action is ApplyAction.CONFIGURED
    assert pod_uid(store) == "uid-1"


def test_callers_can_ask_for_stable_uids() -> None:
    store = ObjectStore()
    store.apply_text(pod_doc(), new_uid=stable_uid)
    assert pod_uid(store) == stable_uid("Pod", "default", "p")
    store.delete(Kind.POD, "default", "p")
    store.apply_text(pod_doc(), new_uid=stable_uid)
    assert pod_uid(store) == stable_uid("Pod", "default", "p")


def test_patching_the_implicit_default_account_keeps_its_uid() -> None:
    store = ObjectStore()
    implicit = store.get_service_account("default", "default")
    assert implicit is not None
    store.patch(Kind.SERVICE_ACCOUNT, "default", "default", {"imagePullSecrets": [{"name": "r"}]})
    patched = store.get_service_account("default", "default")
    assert patched is not None
    assert patched.image_pull_secrets == ("r",)
    assert patched.uid == implicit.uid


def test_patching_a_pod_keeps_its_uid() -> None:
    store = ObjectStore()
    store.apply_text(pod_doc())
    first = pod_uid(store)
    result = store.patch(Kind.POD, "default", "p", {"metadata": {"annotations": {"a": "b"}}})
    assert result.action is ApplyAction.PATCHED
    assert pod_uid(store) == first
