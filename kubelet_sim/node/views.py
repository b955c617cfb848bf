"""JSON views of pods, images and events, shared by the daemon's API and ``kubelet-sim describe``."""

from __future__ import annotations

import time
from typing import Any, Protocol

from kubelet_sim.core.pods import (
    ContainerPhase,
    ContainerState,
    PullAttempt,
    Termination,
)
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.core.trace import HostTry, PullTrace
from kubelet_sim.engine.workers import PodState
from kubelet_sim.errors import InvalidImageNameError
from kubelet_sim.k8s.objects import Container, Pod
from kubelet_sim.node.kubeapi.tables import pod_columns
from kubelet_sim.node.podstatus import pod_phase, pod_status
from kubelet_sim.runtime.containers import ContainerManager, StartedContainer
from kubelet_sim.store import ImageRecord
from kubelet_sim.telemetry.events import Event

SECRET_SHOWN = "<secret>"  # noqa: S105 - the mask, not a secret
"""What a Secret-sourced environment value shows as, unless revealed."""


def _wall(monotonic: float | None, now: float) -> float | None:
    """A monotonic instant as a wall-clock timestamp (seconds since the epoch)."""
    return None if monotonic is None else round(time.time() - (now - monotonic), 3)


def _termination(term: Termination, now: float) -> dict[str, Any]:
    return {
        "exitCode": term.exit_code,
        "reason": term.reason,
        "startedAt": _wall(term.started_at, now),
        "finishedAt": _wall(term.finished_at, now),
    }


def _env(started: StartedContainer, reveal: bool) -> list[dict[str, str]]:
    return [
        {
            "name": name,
            "value": value if reveal or name not in started.secret_names else SECRET_SHOWN,
        }
        for name, value in started.env
    ]


def _container(
    c: Container,
    state: ContainerState | None,
    now: float,
    started: StartedContainer | None,
    reveal: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": c.name,
        "image": c.image,
        "imagePullPolicy": str(c.image_pull_policy),
        "kind": str(c.kind),
    }
    if state is None:
        out["state"] = {"waiting": {"reason": "ContainerCreating", "message": ""}}
        out.update(ready=False, restartCount=0, pullAttempts=0, imageID="", repoDigest="")
        return out
    if state.phase is ContainerPhase.RUNNING:
        out["state"] = {"running": {"startedAt": _wall(state.started_at, now)}}
    elif state.phase is ContainerPhase.TERMINATED and state.last_termination is not None:
        out["state"] = {"terminated": _termination(state.last_termination, now)}
    else:
        out["state"] = {"waiting": {"reason": state.reason, "message": state.message}}
    if state.phase is not ContainerPhase.TERMINATED and state.last_termination is not None:
        out["lastState"] = {"terminated": _termination(state.last_termination, now)}
    out["ready"] = state.running
    out["restartCount"] = state.restart_count
    out["imageID"] = state.image_id
    out["repoDigest"] = state.repo_digest
    out["imageReady"] = state.image_ready
    out["pullAttempts"] = state.attempts
    remaining = (state.backoff_until - now) if state.backoff_until is not None else 0.0
    out["backoffRemainingSeconds"] = round(max(0.0, remaining), 3)
    if started is not None:
        out["containerID"] = started.container_id
        hidden = [v for n, v in started.env if n in started.secret_names and v]
        # An argument may embed a Secret through $(VAR): masked whole, as the env value is.
        out["command"] = [
            a if reveal or not any(h in a for h in hidden) else SECRET_SHOWN for a in started.argv
        ]
        out["hostname"] = started.hostname
        out["env"] = _env(started, reveal)
    return out


class PullHistory(Protocol):
    """The image manager's record of a pod's pulls (:class:`~kubelet_sim.engine.manager.ImageManager`)."""

    def pull_history(self, uid: str, image: str) -> tuple[PullAttempt, ...]: ...

    def pull_in_progress(self, uid: str, image: str) -> PullTrace | None: ...


def host_try(h: HostTry) -> dict[str, Any]:
    """One request of a pull: what for, which host, what came back, how long it took."""
    return {
        "what": h.what,
        "host": h.host,
        "role": h.role,
        "withCredentials": h.with_credentials,
        "status": h.status,
        "error": h.error,
        "seconds": round(h.seconds, 3),
    }


def pull_attempt(a: PullAttempt, now: float) -> dict[str, Any]:
    """One finished pull (``pulls`` of ``GET /pods/NS/NAME``)."""
    return {
        "startedAt": _wall(a.started, now),
        "waitedSeconds": round(a.waited, 3),
        "seconds": round(a.seconds, 3),
        "result": a.reason or "Pulled",
        "message": a.message,
        "cause": a.cause,
        "step": a.step,
        "credentials": a.credentials,
        "hosts": [host_try(h) for h in a.hosts],
    }


def pull_in_progress(trace: PullTrace, now: float) -> dict[str, Any]:
    """The pull under way (``pullInProgress``): its step in words, how long it has been in
    it, the request it waits on, and its layers' progress."""
    since = trace.pulling if trace.pulling is not None else trace.since
    out: dict[str, Any] = {
        "step": trace.describe(),
        "forSeconds": round(now - since, 3),
        "queuedSeconds": round((trace.pulling or now) - trace.since, 3),
    }
    if trace.request is not None:
        what, host, started = trace.request
        out["waitingOn"] = {"what": what, "host": host, "forSeconds": round(now - started, 3)}
    if trace.layers:
        out["layers"] = {"done": trace.layers_done, "total": trace.layers}
        out["bytes"] = {"done": trace.bytes_done, "total": trace.bytes_total}
        if trace.last_byte is not None:
            out["sinceLastByteSeconds"] = round(now - trace.last_byte, 3)
    if trace.hosts:
        out["hosts"] = [host_try(h) for h in trace.hosts]
    return out


def _pulls(history: PullHistory, uid: str, image: str, now: float) -> dict[str, Any]:
    """``pulls`` (the last few, oldest first) and ``pullInProgress`` of one container."""
    out: dict[str, Any] = {
        "pulls": [pull_attempt(a, now) for a in history.pull_history(uid, image)]
    }
    current = history.pull_in_progress(uid, image)
    if current is not None:
        out["pullInProgress"] = pull_in_progress(current, now)
    return out


def pod_detail(
    pod: Pod,
    state: PodState | None,
    now: float,
    *,
    containers: ContainerManager | None = None,
    history: PullHistory | None = None,
    reveal: bool = False,
    rejected: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """One pod with its containers' states (``GET /pods/NS/NAME``).

    ``env`` is the environment each container's process got; Secret-sourced values show as
    ``<secret>`` unless ``reveal``. With ``history``, each container has its last pulls (when,
    how long each waited for the puller and took, how it ended) and the one under way.
    """
    table = state.containers if state is not None else {}

    def started(c: Container) -> StartedContainer | None:
        return containers.started(pod.uid, c.name) if containers is not None else None

    def view(c: Container) -> dict[str, Any]:
        out = _container(c, table.get(c.name), now, started(c), reveal)
        if history is not None:
            out.update(_pulls(history, pod.uid, c.image, now))
        return out

    phase = pod_phase(pod, state, rejected)
    out: dict[str, Any] = {
        "namespace": pod.namespace,
        "name": pod.name,
        "uid": pod.uid,
        "phase": phase,
        "serviceAccountName": pod.service_account_name,
        "imagePullSecrets": list(pod.image_pull_secrets),
        "imagesReady": bool(state and all(c.image_ready for c in state.containers.values())),
        "ready": bool(state and state.is_ready and phase == "Running"),
        "restartPolicy": pod.restart_policy,
        "runtimeClassName": pod.runtime_class_name,
        "overhead": dict(pod.overhead),
        "nodeSelector": dict(pod.node_selector),
        "hostname": containers.hostname(pod.uid) if containers is not None else "",
        "podIP": containers.pod_ip(pod.uid) if containers is not None else "",
        "unsupportedFields": list(pod.unsupported_fields),
        "initContainers": [view(c) for c in pod.init_containers],
        "containers": [view(c) for c in pod.containers],
    }
    if rejected is not None:
        out["reason"], out["message"] = rejected
    return out


def pod_summary(
    pod: Pod,
    state: PodState | None,
    rejected: tuple[str, str] | None = None,
    *,
    wall: float,
    offset: float,
) -> dict[str, Any]:
    """One line of ``GET /pods``: READY, STATUS and RESTARTS as ``kubectl get pods`` shows them
    (the same ``printPod`` columns the Kubernetes API's tables print, from the pod's status)."""
    status = pod_status(pod, state, offset=offset, containers=None, host_ip="", rejected=rejected)
    doc = {
        "metadata": {},
        "spec": {
            "containers": [{"name": c.name} for c in pod.containers],
            "initContainers": [{"name": c.name} for c in pod.init_containers],
        },
        "status": status,
    }
    ready, reason, restarts = pod_columns(doc, wall)
    images = state.containers.values() if state is not None else ()
    return {
        "namespace": pod.namespace,
        "name": pod.name,
        "uid": pod.uid,
        "ready": ready,
        "imagesReady": f"{sum(1 for c in images if c.image_ready)}"
        f"/{len(pod.containers) + len(pod.init_containers)}",
        "status": reason,
        "restarts": int(restarts.split(" ", 1)[0]),
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
