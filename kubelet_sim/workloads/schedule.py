"""Turn pod templates into a timed plan: which pod arrives when, on which node.

Placement is deterministic: ``round-robin`` walks the eligible nodes in declaration order with one
cursor per set of node groups (so several templates spread over the nodes together), ``random``
draws from ``random.Random(<seed>/<template>)``, ``every-node`` puts pod ``i`` on node ``i``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from kubelet_sim.core.pods import PodSpec
from kubelet_sim.core.policy import apply_always_pull_images
from kubelet_sim.k8s.admission import pod_spec
from kubelet_sim.k8s.objects import Container, Pod, stable_uid
from kubelet_sim.workloads.limits import INDEX_PLACEHOLDER
from kubelet_sim.workloads.spec import PlacementKind, PodTemplate, Workload


@dataclass(frozen=True, slots=True)
class PlannedPod:
    """One pod of the run."""

    template: PodTemplate
    index: int
    name: str
    uid: str
    node: str
    at: float

    def spec(self, registry: str, *, always_pull_images: bool = False) -> PodSpec:
        """The engine's pod, its images prefixed with ``registry`` (``HOST:PORT``);
        ``always_pull_images``: the AlwaysPullImages admission plugin is on."""

        t = self.template
        base = t.pod or Pod(namespace=t.namespace, name=t.name, uid="", containers=())
        pod = replace(
            base,
            name=self.name,
            uid=self.uid,
            containers=tuple(self._prefixed(c, registry, always_pull_images) for c in t.containers),
            init_containers=tuple(
                self._prefixed(c, registry, always_pull_images) for c in t.init_containers
            ),
            ephemeral_containers=(),
            image_pull_secrets=t.pull_secrets,
        )
        return pod_spec(pod)

    def _prefixed(self, container: Container, registry: str, always: bool) -> Container:
        image = f"{registry}/{expand_image(container.image, self.index)}"
        if always:
            return replace(container, image=image, image_pull_policy=apply_always_pull_images())
        return replace(container, image=image)


_INDEX = INDEX_PLACEHOLDER


def expand_image(image: str, index: int) -> str:
    """``{i}`` in a template's image becomes the pod's index, ``{i%N}`` the index modulo N."""
    return _INDEX.sub(lambda m: str(index % int(m.group(1)) if m.group(1) else index), image)


def template_images(template: PodTemplate) -> set[str]:
    """Every image the template's pods use, placeholders expanded."""
    return {expand_image(i, n) for i in template.images() for n in range(template.count)}


def node_names(workload: Workload) -> dict[str, list[str]]:
    """Node names per group, in declaration order."""
    return {group.name: group.node_names() for group in workload.nodes}


def plan_pods(workload: Workload) -> list[PlannedPod]:
    """Every pod of ``workload`` with its node and arrival time, in arrival order."""
    names = node_names(workload)
    cursors: dict[tuple[str, ...], int] = {}
    planned: list[PlannedPod] = []
    for template in workload.pods:
        groups = template.placement.groups or tuple(names)
        eligible = [node for group in groups for node in names[group]]
        times = template.arrival.times(template.count)
        rng = random.Random(f"{template.placement.seed}/{template.name}")  # noqa: S311
        width = max(3, len(str(template.count - 1)))
        for i in range(template.count):
            kind = template.placement.kind
            if kind is PlacementKind.EVERY_NODE:
                node = eligible[i]
            elif kind is PlacementKind.RANDOM:
                node = rng.choice(eligible)
            else:
                cursor = cursors.get(groups, 0)
                node = eligible[cursor % len(eligible)]
                cursors[groups] = cursor + 1
            name = f"{template.name}-{i:0{width}d}"
            uid = stable_uid("Pod", template.namespace, f"{workload.name}/{name}")
            planned.append(PlannedPod(template, i, name, uid, node, times[i]))
    order = {t.name: n for n, t in enumerate(workload.pods)}
    planned.sort(key=lambda p: (p.at, order[p.template.name], p.index))
    return planned
