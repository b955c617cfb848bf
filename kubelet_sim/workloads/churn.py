"""Churn during a run: pods deleted, a Deployment rolled to a new image, kubelets restarted, a tag
moved in the registry (the workload's ``churn:`` list).

:class:`ChurnRunner` carries out each action at its time against a :class:`Fleet` (the runner's
nodes and pods) and keeps a :class:`ChurnRecord` of what it did. A rollout follows the Deployment
controller's rolling update (``pkg/controller/deployment/rolling.go``): with ``R`` replicas, at
most ``R + maxSurge`` pods exist at once and at least ``R - maxUnavailable`` are ready; new pods
are created as room allows, old pods that are not ready go first, then ready ones as new ones
become ready; it is done when ``R`` new pods are ready and no old pod is left. Pods of the
template that have not arrived yet when a rollout starts arrive with the new image.

Under shards each shard rolls, deletes and restarts its own nodes' pods (a count or a percentage
applies to the shard's share); a tag is moved once, by shard 0, in a real registry, and by every
shard in its own modelled one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import anyio
import structlog

from kubelet_sim.errors import KubeletSimError
from kubelet_sim.k8s.objects import stable_uid
from kubelet_sim.workloads.schedule import PlannedPod
from kubelet_sim.workloads.spec import ChurnAction, ChurnKind, PodTemplate, Workload

log = structlog.get_logger(__name__)

CONTROLLER_PERIOD = 0.1
"""Seconds between a rollout's reconciliations (the controller reacts to readiness this fast)."""


class Fleet(Protocol):
    """What churn needs of a run: its clock, its pods and nodes, and the registry."""

    def now(self) -> float:
        """Seconds since time zero."""
        ...

    def live(self, template: str) -> list[PlannedPod]:
        """The template's pods submitted and not deleted, by index then revision."""
        ...

    def ready(self, pod: PlannedPod) -> bool: ...

    def deleted(self, pod: PlannedPod) -> bool: ...

    async def delete(self, pod: PlannedPod) -> None: ...

    async def create(self, pod: PlannedPod) -> None:
        """Add ``pod`` to the run and submit it to its node now (or when its kubelet is back)."""
        ...

    def retemplate(self, template: PodTemplate) -> int:
        """Pods of the template not submitted yet arrive with ``template``; how many."""
        ...

    def nodes_of(self, group: str) -> list[str]: ...

    async def restart(self, node: str, downtime: float) -> tuple[int, int]:
        """Restart the node's kubelet; (pods re-applied, ready pods kept running)."""
        ...

    async def retag(self, repository: str, tag: str, to: str) -> dict[str, Any]:
        """Point ``repository:tag`` at the image of ``repository:to``; what changed."""
        ...


@dataclass(slots=True)
class ChurnRecord:
    """What one action did, in seconds since time zero."""

    name: str
    kind: ChurnKind
    at: float
    started: float | None = None
    finished: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        seconds = None
        if self.started is not None and self.finished is not None:
            seconds = round(self.finished - self.started, 4)
        return {
            "name": self.name,
            "kind": str(self.kind),
            "at": self.at,
            "started": None if self.started is None else round(self.started, 4),
            "finished": None if self.finished is None else round(self.finished, 4),
            "seconds": seconds,
            **self.detail,
        }


class ChurnRunner:
    """Carries out a workload's churn against a fleet; :attr:`done` once every action is."""

    def __init__(
        self, workload: Workload, fleet: Fleet, *, period: float = CONTROLLER_PERIOD
    ) -> None:
        self.fleet = fleet
        self.period = period
        self.actions = tuple(sorted(workload.churn, key=lambda a: a.at))
        self.records = {a.name: ChurnRecord(a.name, a.kind, a.at) for a in self.actions}
        self._templates = {t.name: t for t in workload.pods}
        self._revisions: dict[str, int] = {}
        self._locks: dict[str, anyio.Lock] = {}

    @property
    def done(self) -> bool:
        return all(r.finished is not None for r in self.records.values())

    def to_list(self) -> list[dict[str, Any]]:
        return [self.records[a.name].to_dict() for a in self.actions]

    async def run(self, t0: float) -> None:
        """Carry out every action at ``t0 + at`` (on the run's clock); returns when all are done."""
        async with anyio.create_task_group() as tg:
            for action in self.actions:
                tg.start_soon(self._one, action, t0)

    async def _one(self, action: ChurnAction, t0: float) -> None:
        delay = t0 + action.at - anyio.current_time()
        if delay > 0:
            await anyio.sleep(delay)
        record = self.records[action.name]
        record.started = self.fleet.now()
        try:
            if action.kind is ChurnKind.DELETE:
                await self._delete(action, record)
            elif action.kind is ChurnKind.ROLLOUT:
                await self._rollout(action, record)
            elif action.kind is ChurnKind.RESTART:
                await self._restart(action, record)
            else:
                moved = await self.fleet.retag(action.repository, action.tag, action.to)
                record.detail.update(moved)
        except KubeletSimError as exc:
            # An action the registry or a store refused (a read-only registry's 405 on a tag
            # move) is the run's finding, not its end: the report says so.
            record.detail["error"] = str(exc)
            log.warning("bench.churn_failed", action=action.name, error=str(exc))
        record.finished = self.fleet.now()
        log.info("bench.churn_done", action=action.name, kind=str(action.kind))

    async def _delete(self, action: ChurnAction, record: ChurnRecord) -> None:
        live = self.fleet.live(action.template)
        chosen = live[: min(len(live), action.count.of(len(live), round_up=True))]
        ready = sum(1 for pod in chosen if self.fleet.ready(pod))
        for pod in chosen:
            await self.fleet.delete(pod)
        record.detail.update({"pods": action.template, "deleted": len(chosen), "ready": ready})

    async def _restart(self, action: ChurnAction, record: ChurnRecord) -> None:
        nodes = self.fleet.nodes_of(action.group)
        chosen = nodes[: min(len(nodes), action.count.of(len(nodes), round_up=True))]
        results: list[tuple[int, int]] = []

        async def one(node: str) -> None:
            results.append(await self.fleet.restart(node, action.downtime))

        async with anyio.create_task_group() as tg:
            for node in chosen:
                tg.start_soon(one, node)
        record.detail.update({
            "nodes": len(chosen),
            "downtime": action.downtime,
            "pods_reapplied": sum(r[0] for r in results),
            "pods_kept_running": sum(r[1] for r in results),
        })  # fmt: skip

    async def _rollout(self, action: ChurnAction, record: ChurnRecord) -> None:
        lock = self._locks.setdefault(action.template, anyio.Lock())
        async with lock:  # a second rollout of the template starts when the first is done
            record.started = self.fleet.now()
            await self._roll(action, record)

    async def _roll(self, action: ChurnAction, record: ChurnRecord) -> None:
        fleet = self.fleet
        revision = self._revisions.get(action.template, 0) + 1
        self._revisions[action.template] = revision
        template = self._templates[action.template] = rolled(
            self._templates[action.template], action.container, action.image
        )
        old = fleet.live(action.template)
        replicas = len(old)
        surge = action.max_surge.of(replicas, round_up=True)
        unavailable = action.max_unavailable.of(replicas, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1  # ResolveFenceposts: a rollout must be able to make progress
        pending = fleet.retemplate(template)
        record.detail.update({
            "pods": action.template, "image": action.image, "revision": revision,
            "replicas": replicas, "max_surge": surge, "max_unavailable": unavailable,
            "arrivals_with_new_image": pending,
        })  # fmt: skip
        width = max(3, len(str(max(replicas - 1, 0))))
        slots: dict[int, PlannedPod] = {}  # old pod k -> the new pod standing in for it
        made: dict[int, int] = {}  # old pod k -> new pods made for it (one, unless deleted)
        created = 0
        gone: set[str] = set()  # old pods this rollout deleted
        peak = replicas
        min_ready = sum(1 for p in old if fleet.ready(p))
        record.detail.update(
            {"created": 0, "deleted": 0, "peak_pods": peak, "min_ready": min_ready}
        )
        while True:
            # its own pods only: a scan of the whole plan on every pass would cost a fleet's
            # worth of pods per tick for as long as the rollout lasts
            left = [p for p in old if not fleet.deleted(p)]
            for k in [k for k, p in slots.items() if fleet.deleted(p)]:
                del slots[k]  # a new pod deleted under the rollout is made again
            new = list(slots.values())
            new_ready = sum(1 for p in new if fleet.ready(p))
            old_ready = sum(1 for p in left if fleet.ready(p))
            min_ready = min(min_ready, old_ready + new_ready)
            if new_ready == replicas and not left:
                break
            # scale up the new ReplicaSet as far as the surge allows
            room = replicas + surge - (len(left) + len(new))
            for k in [k for k in range(replicas) if k not in slots][: max(0, room)]:
                before = old[k]
                made[k] = made.get(k, 0) + 1
                again = "" if made[k] == 1 else f"-{made[k]}"  # each pod its own name and uid
                name = f"{action.template}-r{revision}-{before.index:0{width}d}{again}"
                uid = stable_uid("Pod", template.namespace, f"{name}/{record.name}")
                pod = PlannedPod(template, before.index, name, uid, before.node, fleet.now())
                await fleet.create(pod)
                slots[k] = pod
                created += 1
            new = list(slots.values())
            peak = max(peak, len(left) + len(new))
            # scale down the old one: pods that are not ready first, then as many ready ones
            # as the ready total above minAvailable allows
            min_available = replicas - unavailable
            new_unavailable = sum(1 for p in new if not fleet.ready(p))
            budget = len(left) + len(new) - min_available - new_unavailable
            for pod in [p for p in left if not fleet.ready(p)]:
                if budget <= 0:
                    break
                await fleet.delete(pod)
                gone.add(pod.uid)
                budget -= 1
            spare = min(budget, old_ready + new_ready - min_available)
            for pod in [p for p in left if fleet.ready(p)][: max(0, spare)]:
                await fleet.delete(pod)
                gone.add(pod.uid)
            ready_now = sum(1 for p in (*left, *new) if p.uid not in gone and fleet.ready(p))
            min_ready = min(min_ready, ready_now)
            # What it did so far: a run that stops mid-rollout reports it
            record.detail.update({
                "created": created, "deleted": len(gone), "peak_pods": peak,
                "min_ready": min_ready,
            })  # fmt: skip
            await anyio.sleep(self.period)
        record.detail["min_ready"] = min_ready


def rolled(template: PodTemplate, container: str, image: str) -> PodTemplate:
    """``template`` with ``container``'s image changed (the Deployment's new pod template)."""

    def change(containers: Iterable[Any]) -> tuple[Any, ...]:
        return tuple(replace(c, image=image) if c.name == container else c for c in containers)

    return replace(
        template,
        containers=change(template.containers),
        init_containers=change(template.init_containers),
    )


def merge_churn(records: Iterable[list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The run's churn from each shard's records: counts summed, the earliest start and the
    latest finish (None while any shard has not finished), a retag's detail from shard 0."""
    out: dict[str, dict[str, Any]] = {}
    for shard in records:
        for item in shard:
            name = item["name"]
            if name not in out:
                out[name] = dict(item)
                continue
            merged = out[name]
            for key, value in item.items():
                if key in ("started",) and value is not None:
                    merged[key] = value if merged[key] is None else min(merged[key], value)
                elif key == "finished":
                    merged[key] = (
                        None if value is None or merged[key] is None else max(merged[key], value)
                    )
                elif key in _SUMMED and isinstance(value, int):
                    merged[key] = merged.get(key, 0) + value
                elif key in ("peak_pods", "min_ready") and isinstance(value, int):
                    merged[key] = merged.get(key, 0) + value  # per-shard Deployments: summed
    for merged in out.values():
        started, finished = merged.get("started"), merged.get("finished")
        merged["seconds"] = (
            None if started is None or finished is None else round(finished - started, 4)
        )
    return out


_SUMMED = frozenset({
    "deleted", "ready", "nodes", "pods_reapplied", "pods_kept_running", "replicas",
    "created", "arrivals_with_new_image", "max_surge", "max_unavailable",
})  # fmt: skip
