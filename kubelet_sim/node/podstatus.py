"""A pod's ``status`` as the kubelet's status manager writes it to the API server.

``kubectl get pods`` computes its STATUS column from this (``containerStatuses[].state``), and
``kubectl describe pod`` prints it: each container's ``state`` (``waiting`` with the pull
reason and message, ``running`` since, ``terminated`` with its exit code), ``lastState``,
``ready``, ``restartCount``, ``image``/``imageID`` (the repo digest the image was pulled as),
``containerID``; the pod's ``phase``, conditions, ``podIP``/``podIPs``, ``hostIP`` and
``startTime``. Timestamps come from the engine's monotonic clock plus a fixed offset taken once,
so a status that did not change renders the same on every sync (and takes no new
resourceVersion).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubelet_sim.core.pods import ContainerPhase, ContainerState, Termination
from kubelet_sim.engine.workers import PodState
from kubelet_sim.k8s.objects import Container, Pod
from kubelet_sim.k8s.served import rfc3339
from kubelet_sim.k8s.store import ObjectStore
from kubelet_sim.runtime.containers import ContainerManager

__all__ = ["StatusWriter", "pod_phase", "pod_status"]


def pod_phase(pod: Pod, state: PodState | None, rejected: tuple[str, str] | None) -> str:
    """``status.phase``: Pending, Running, Succeeded or Failed."""
    if rejected is not None:
        return "Failed"
    if state is None:
        return "Pending"
    apps = [state.containers[c.name] for c in pod.containers if c.name in state.containers]
    if apps and all(c.running for c in apps):
        return "Running"
    if state.finished_at is not None:
        codes = [c.last_termination.exit_code for c in apps if c.last_termination is not None]
        return "Succeeded" if codes and all(code == 0 for code in codes) else "Failed"
    return "Running" if any(c.running for c in apps) else "Pending"


def _time(monotonic: float | None, offset: float) -> str | None:
    return None if monotonic is None else rfc3339(monotonic + offset)


def _terminated(term: Termination, offset: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "exitCode": term.exit_code,
        "reason": term.reason,
        "startedAt": _time(term.started_at, offset),
        "finishedAt": _time(term.finished_at, offset),
    }
    if term.message:
        out["message"] = term.message
    return out


def _container_status(
    c: Container, state: ContainerState | None, offset: float, waiting_reason: str
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": c.name, "image": c.image, "imageID": ""}
    if state is None:
        out.update(
            state={"waiting": {"reason": waiting_reason}},
            lastState={},
            ready=False,
            restartCount=0,
            started=False,
        )
        return out
    if state.phase is ContainerPhase.RUNNING:
        current: dict[str, Any] = {"running": {"startedAt": _time(state.started_at, offset)}}
    elif state.phase is ContainerPhase.TERMINATED and state.last_termination is not None:
        current = {"terminated": _terminated(state.last_termination, offset)}
    else:
        waiting: dict[str, Any] = {"reason": state.reason or waiting_reason}
        if state.message:
            waiting["message"] = state.message
        current = {"waiting": waiting}
    last: dict[str, Any] = {}
    if state.phase is not ContainerPhase.TERMINATED and state.last_termination is not None:
        last = {"terminated": _terminated(state.last_termination, offset)}
    out.update(
        state=current,
        lastState=last,
        ready=state.running,
        restartCount=state.restart_count,
        started=state.running,
        imageID=state.repo_digest or state.image_id,
    )
    if state.container_id:
        out["containerID"] = state.container_id
    return out


def _condition(kind: str, value: bool, reason: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": kind,
        "status": "True" if value else "False",
        "lastProbeTime": None,
        "lastTransitionTime": None,
    }
    if not value and reason:
        out["reason"] = reason
    return out


def pod_status(
    pod: Pod,
    state: PodState | None,
    *,
    offset: float,
    containers: ContainerManager | None,
    host_ip: str,
    rejected: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The pod's ``status`` (``offset``: wall clock minus the engine's monotonic clock)."""
    phase = pod_phase(pod, state, rejected)
    if rejected is not None:
        reason, message = rejected
        return {"phase": phase, "reason": reason, "message": message, "qosClass": "BestEffort"}
    table = state.containers if state is not None else {}
    inits = [table.get(c.name) for c in pod.init_containers]
    initialized = all(s is not None and s.succeeded for s in inits)
    apps = [table.get(c.name) for c in pod.containers]
    ready = bool(apps) and all(s is not None and s.running for s in apps)
    app_waiting = "ContainerCreating" if initialized else "PodInitializing"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [
            _condition("PodReadyToStartContainers", bool(state and state.sandbox)),
            _condition("Initialized", initialized, "ContainersNotInitialized"),
            _condition("Ready", ready, "ContainersNotReady"),
            _condition("ContainersReady", ready, "ContainersNotReady"),
            _condition("PodScheduled", True),
        ],
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "qosClass": "BestEffort",
    }
    pod_ip = containers.pod_ip(pod.uid) if containers is not None else ""
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if state is not None:
        status["startTime"] = _time(state.submitted_at, offset)
    if pod.init_containers:
        status["initContainerStatuses"] = [
            _container_status(c, table.get(c.name), offset, "PodInitializing")
            for c in pod.init_containers
        ]
    status["containerStatuses"] = [
        _container_status(c, table.get(c.name), offset, app_waiting) for c in pod.containers
    ]
    return status


class StatusWriter:
    """The kubelet's status manager: each pod's status written to the store when it changed.

    The engine replaces a ContainerState on every change (they are frozen): when a pod's
    state is made of the same objects as last time, its status is the same and is not made
    again, so a pass over a thousand settled pods costs a few milliseconds.
    """

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self._seen: dict[str, tuple[object, ...]] = {}

    def sync(
        self,
        pods: Iterable[Pod],
        state_of: Callable[[Pod], PodState | None],
        rejected: Mapping[str, tuple[str, str]],
        *,
        containers: ContainerManager | None,
        offset: float,
        host_ip: str,
    ) -> None:
        seen: dict[str, tuple[object, ...]] = {}
        for pod in pods:
            state = state_of(pod)
            refusal = rejected.get(pod.uid)
            fingerprint = (
                pod,
                state,
                state.sandbox if state is not None else None,
                state.finished_at if state is not None else None,
                refusal,
                containers.pod_ip(pod.uid) if containers is not None else "",
                *(state.containers.values() if state is not None else ()),
            )
            seen[pod.uid] = fingerprint
            last = self._seen.get(pod.uid)
            if last is not None and _same(last, fingerprint):
                continue
            status = pod_status(
                pod,
                state,
                offset=offset,
                containers=containers,
                host_ip=host_ip,
                rejected=refusal,
            )
            self.objects.set_pod_status(pod.namespace, pod.name, status)
        self._seen = seen


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    """The same objects, one by one (identity, not equality: cheap, and exact for frozen ones)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
