"""JSON views of pods, images and events, shared by the daemon's API and ``kubelet-sim describe``."""

from __future__ import annotations

from typing import Any

from kubelet_sim.core.pods import ContainerState
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.engine.workers import PodState
from kubelet_sim.errors import InvalidImageNameError
from kubelet_sim.k8s.objects import Container, Pod
from kubelet_sim.store import ImageRecord
from kubelet_sim.telemetry.events import Event


def _container(c: Container, state: ContainerState | None, now: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": c.name,
        "image": c.image,
        "imagePullPolicy": str(c.image_pull_policy),
        "kind": str(c.kind),
    }
    if state is None:
        out["state"] = {"waiting": {"reason": "ContainerCreating", "message": ""}}
        out["pullAttempts"] = 0
        return out
    if state.ready:
        out["state"] = {"ready": {"imageID": state.image_id, "repoDigest": state.repo_digest}}
    else:
        out["state"] = {"waiting": {"reason": state.reason, "message": state.message}}
    out["pullAttempts"] = state.attempts
    remaining = (state.backoff_until - now) if state.backoff_until is not None else 0.0
    out["backoffRemainingSeconds"] = round(max(0.0, remaining), 3)
    return out


def pod_detail(pod: Pod, state: PodState | None, now: float) -> dict[str, Any]:
    """One pod with its containers' image states (``GET /pods/NS/NAME``)."""
    containers = state.containers if state is not None else {}
    return {
        "namespace": pod.namespace,
        "name": pod.name,
        "uid": pod.uid,
        "serviceAccountName": pod.service_account_name,
        "imagePullSecrets": list(pod.image_pull_secrets),
        "imagesReady": bool(state and state.is_ready),
        "initContainers": [_container(c, containers.get(c.name), now) for c in pod.init_containers],
        "containers": [_container(c, containers.get(c.name), now) for c in pod.containers],
    }


def pod_summary(pod: Pod, state: PodState | None) -> dict[str, Any]:
    """One line of ``GET /pods``: name, readiness and the first waiting reason."""
    reason = ""
    if state is not None:
        for c in state.containers.values():
            if not c.ready and c.reason:
                reason = c.reason
                break
    total = len(pod.containers) + len(pod.init_containers)
    ready = sum(1 for c in state.containers.values() if c.ready) if state is not None else 0
    return {
        "namespace": pod.namespace,
        "name": pod.name,
        "uid": pod.uid,
        "imagesReady": f"{ready}/{total}",
        "status": "Ready" if state is not None and state.is_ready else (reason or "Pending"),
    }


def image_row(record: ImageRecord) -> dict[str, Any]:
    """An image as ``crictl images`` shows it (``GET /images``)."""
    repository, tag = "<none>", "<none>"
    if record.repo_tags:
        try:
            ref = parse_normalized(record.repo_tags[0])
            repository, tag = ref.name, ref.tag or "<none>"
        except InvalidImageNameError:
            repository, _, tag = record.repo_tags[0].rpartition(":")
    elif record.repo_digests:
        repository = record.repo_digests[0].split("@", 1)[0]
    return {
        "repository": repository,
        "tag": tag,
        "repoTags": list(record.repo_tags),
        "repoDigests": list(record.repo_digests),
        "imageID": record.image_id,
        "size": record.size,
        "platform": record.platform,
        "runtimeHandler": record.runtime_handler,
        "pinned": record.pinned,
    }


def event_row(event: Event) -> dict[str, Any]:
    """An event as ``kubectl get events -o json`` would carry it (``GET /events``)."""
    obj = event.involved_object
    return {
        "type": str(event.type),
        "reason": str(event.reason),
        "message": event.message,
        "count": event.count,
        "firstTimestamp": event.first_timestamp,
        "lastTimestamp": event.last_timestamp,
        "involvedObject": {
            "kind": obj.kind,
            "namespace": obj.namespace,
            "name": obj.name,
            "uid": obj.uid,
            "fieldPath": obj.field_path,
        },
        "source": {"component": event.source_component, "host": event.source_host},
    }
