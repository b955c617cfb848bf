"""The ``churn`` section of a workload file: timed deletes, rollouts, kubelet restarts, tag moves.

Part of :mod:`kubelet_sim.workloads.parse`; errors are ConfigErrors naming ``FILE:LINE`` and the
field, e.g. ``churn[1].maxSurge: maxSurge and maxUnavailable must not both be 0``.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

from kubelet_sim.config import yamlsafe
from kubelet_sim.workloads.limits import placeholder_problem
from kubelet_sim.workloads.parse_pods import dns_label
from kubelet_sim.workloads.source import Fields, Located, type_name
from kubelet_sim.workloads.spec import Amount, ChurnAction, ChurnKind, ImageSpec, PodTemplate

_COMMON = ("name", "kind", "at")
_FIELDS: dict[ChurnKind, tuple[str, ...]] = {
    ChurnKind.DELETE: ("pods", "count"),
    ChurnKind.ROLLOUT: ("pods", "image", "container", "maxSurge", "maxUnavailable"),
    ChurnKind.RESTART: ("nodes", "count", "downtime"),
    ChurnKind.RETAG: ("repository", "tag", "to"),
}
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")


def parse_churn(
    doc: Located,
    top: Fields,
    templates: tuple[PodTemplate, ...],
    groups: dict[str, int],
    images: tuple[ImageSpec, ...],
    timeout: float,
) -> tuple[ChurnAction, ...]:
    """Every entry of ``churn:``, checked against the workload's templates, groups, images and
    ``run.timeout`` (an action after it would never happen)."""
    by_template = {t.name: t for t in templates}
    tags: dict[str, tuple[str, ...]] = {}
    for spec in images:
        for repository in spec.repositories():
            tags[repository] = spec.tags
    every = tuple(dict.fromkeys(k for keys in _FIELDS.values() for k in keys))
    actions: list[ChurnAction] = []
    names: set[str] = set()
    for i, (path, item) in enumerate(top.items("churn")):
        f = doc.fields(path, item, (*_COMMON, *every))
        raw_kind = f.string("kind", required=True)
        if raw_kind not in tuple(ChurnKind):
            f.fail("kind", f"expected one of {', '.join(ChurnKind)}, got {raw_kind!r}")
        kind = ChurnKind(raw_kind)
        for key in every:
            if f.has(key) and key not in _FIELDS[kind]:
                f.fail(key, f"not a field of a {kind} action ({', '.join(_FIELDS[kind])})")
        name = dns_label(f, "name") if f.has("name") else f"{kind}-{i}"
        if name in names:
            f.fail("name", f"duplicate churn action name {name!r}")
        names.add(name)
        at = f.duration("at", None)
        if at is None:
            f.fail("at", "at: required (when the action happens, since t=0)")
        if not at < timeout:
            f.fail("at", f"{at:g} s is not before run.timeout ({timeout:g} s): it would never run")
        action = ChurnAction(name=name, kind=kind, at=at)
        if kind is ChurnKind.DELETE:
            actions.append(_delete(f, action, by_template))
        elif kind is ChurnKind.ROLLOUT:
            actions.append(_rollout(f, action, by_template))
        elif kind is ChurnKind.RESTART:
            actions.append(_restart(f, action, groups))
        else:
            actions.append(_retag(f, action, tags))
    return tuple(actions)


def _template(f: Fields, by_template: dict[str, PodTemplate]) -> PodTemplate:
    name = f.string("pods", required=True)
    if name not in by_template:
        known = ", ".join(sorted(by_template))
        f.fail("pods", f"no pod template named {name!r} (the workload has: {known})")
    return by_template[name]


def _amount(f: Fields, key: str, default: Amount, *, minimum: int) -> Amount:
    """A non-negative count (at least ``minimum``) or a percentage ``N%`` (at most 100%)."""
    value = f.raw(key)
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        if value < minimum:
            f.fail(key, f"must be at least {minimum}, got {value}")
        return Amount(value)
    if isinstance(value, str):
        match = _PERCENT.fullmatch(value.strip())
        if match:
            percent = float(match.group(1))
            if not (minimum <= percent <= 100) or (minimum and percent == 0):
                f.fail(key, f"a percentage must be between {minimum}% and 100%, got {value}")
            return Amount(percent, percent=True)
    shown = yamlsafe.preview(value) if isinstance(value, str) else type_name(value)
    f.fail(key, f"expected a count or a percentage such as 25%, got {shown}")


def _delete(f: Fields, action: ChurnAction, by_template: dict[str, PodTemplate]) -> ChurnAction:
    template = _template(f, by_template)
    count = _amount(f, "count", action.count, minimum=1)
    return replace(action, template=template.name, count=count)


def _rollout(f: Fields, action: ChurnAction, by_template: dict[str, PodTemplate]) -> ChurnAction:
    template = _template(f, by_template)
    image = f.string("image", required=True)
    problem = placeholder_problem(image)
    if problem:
        f.fail("image", problem)
    names = [c.name for c in template.init_containers + template.containers]
    container = f.string("container", "")
    if not container:
        if len(names) != 1:
            f.fail("container", f"required: template {template.name!r} has {', '.join(names)}")
        container = names[0]
    elif container not in names:
        f.fail("container", f"template {template.name!r} has no container {container!r}")
    surge = _amount(f, "maxSurge", action.max_surge, minimum=0)
    unavailable = _amount(f, "maxUnavailable", action.max_unavailable, minimum=0)
    if surge.value == 0 and unavailable.value == 0:
        # ValidateRollingUpdateDeployment's rule
        key = "maxSurge" if f.has("maxSurge") else "maxUnavailable"
        f.fail(key, "maxSurge and maxUnavailable must not both be 0")
    return replace(
        action,
        template=template.name,
        image=image,
        container=container,
        max_surge=surge,
        max_unavailable=unavailable,
    )


def _restart(f: Fields, action: ChurnAction, groups: dict[str, int]) -> ChurnAction:
    group = f.string("nodes", required=True)
    if group not in groups:
        f.fail("nodes", f"no node group named {group!r} (the workload has: {', '.join(groups)})")
    count = _amount(f, "count", action.count, minimum=1)
    if not count.percent and count.value > groups[group]:
        f.fail("count", f"group {group!r} has {groups[group]} nodes, got {int(count.value)}")
    downtime = f.duration("downtime", action.downtime)
    assert downtime is not None
    if not math.isfinite(downtime):
        f.fail("downtime", "must be a finite duration")
    return replace(action, group=group, count=count, downtime=downtime)


def _retag(f: Fields, action: ChurnAction, tags: dict[str, tuple[str, ...]]) -> ChurnAction:
    repository = f.string("repository", required=True)
    if repository not in tags:
        f.fail("repository", f"{repository!r} is not one of the workload's images")
    tag, to = f.string("tag", required=True), f.string("to", required=True)
    for key, value in (("tag", tag), ("to", to)):
        if value not in tags[repository]:
            known = ", ".join(tags[repository])
            f.fail(key, f"{repository} has no tag {value!r} in the workload (it has: {known})")
    if tag == to:
        f.fail("to", f"moves {repository}:{tag} onto itself")
    return replace(action, repository=repository, tag=tag, to=to)
