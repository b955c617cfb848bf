"""The ``pods`` and ``secrets`` sections of a workload file: Pod specs, arrivals, placement, traces.

Part of :mod:`kubelet_sim.workloads.parse`; errors are ConfigErrors naming ``FILE:LINE`` and the field.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from kubelet_sim.errors import ConfigError
from kubelet_sim.k8s.objects import Pod, parse_object
from kubelet_sim.workloads.limits import MAX_PODS, MAX_TRACE_BYTES, placeholder_problem
from kubelet_sim.workloads.source import Fields, Located
from kubelet_sim.workloads.spec import (
    Arrival,
    ArrivalKind,
    Placement,
    PlacementKind,
    PodTemplate,
    PullSecretSpec,
)


def dns_label(f: Fields, key: str) -> str:
    """A name usable in node and pod names: lower-case letters, digits and '-'."""
    value = f.string(key, required=True)
    if not value.replace("-", "a").isalnum() or value != value.lower() or len(value) > 40:
        f.fail(key, f"{value!r}: use lower-case letters, digits and '-' (at most 40)")
    return value


def pod_template(
    doc: Located, path: str, value: Any, groups: dict[str, int], seed: int, base: Path
) -> PodTemplate:
    f = doc.fields(path, value, ("name", "count", "namespace", "spec", "arrival", "placement"))
    name = dns_label(f, "name")
    namespace = f.string("namespace", "default")
    raw = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
           "spec": f.raw("spec", required=True)}  # fmt: skip
    try:
        pod = parse_object(raw, where=doc.source, prefix=f"{path}.", namespace=namespace)
    except ConfigError as exc:
        field = (exc.field or path).replace(".metadata.name", ".name")
        doc.fail(field.replace(".metadata.namespace", ".namespace"), exc.message)
    assert isinstance(pod, Pod)
    for list_name, containers in (
        ("initContainers", pod.init_containers),
        ("containers", pod.containers),
    ):
        for index, container in enumerate(containers):
            problem = placeholder_problem(container.image)
            if problem:
                doc.fail(f"{path}.spec.{list_name}[{index}].image", problem)
    placement = _placement(f, groups, seed)
    arrival = _arrival(f, base)
    eligible = sum(groups[g] for g in placement.groups or tuple(groups))
    count = f.integer("count", 0, minimum=1, maximum=MAX_PODS) if f.has("count") else 0
    if placement.kind is PlacementKind.EVERY_NODE:
        if count and count != eligible:
            f.fail("count", f"every-node placement runs one pod per node ({eligible} nodes)")
        count = eligible
    if arrival.kind is ArrivalKind.TRACE:
        if count > len(arrival.trace):
            f.fail("count", f"the trace has only {len(arrival.trace)} arrivals")
        count = count or len(arrival.trace)
    if not count:
        f.fail("count", "count: required (a positive integer)")
    return PodTemplate(
        name=name,
        count=count,
        namespace=namespace,
        init_containers=pod.init_containers,
        containers=pod.containers,
        pull_secrets=tuple(s for s in pod.image_pull_secrets if s),
        arrival=arrival,
        placement=placement,
        pod=pod,
    )


def _placement(f: Fields, groups: dict[str, int], seed: int) -> Placement:
    value = f.raw("placement")
    if value is None:
        return Placement(seed=seed)
    if isinstance(value, str):
        value = {"kind": value}
    p = f.doc.fields(f.at("placement"), value, ("kind", "seed", "nodes"))
    kind = p.string("kind", "round-robin")
    if kind not in tuple(PlacementKind):
        p.fail("kind", f"expected one of {', '.join(PlacementKind)}, got {kind!r}")
    names = p.strings("nodes")
    for i, group in enumerate(names):
        if group not in groups:
            f.doc.fail(f"{p.at('nodes')}[{i}]", f"no node group {group!r}")
    return Placement(PlacementKind(kind), names, p.integer("seed", seed))


def _arrival(f: Fields, base: Path) -> Arrival:
    value = f.raw("arrival")
    if value is None:
        return Arrival()
    a = f.doc.fields(f.at("arrival"), value, ("at", "start", "rate", "bursts", "trace"))
    kinds = [k for k in ("at", "rate", "bursts", "trace") if a.has(k)]
    if len(kinds) != 1:
        a.doc.fail(a.path, "give exactly one of at: TIME, rate: PODS_PER_SECOND, "
                   "bursts: {size, every}, trace: FILE")  # fmt: skip
    start = a.duration("start", 0.0) or 0.0
    if kinds[0] == "at":
        return Arrival(ArrivalKind.ONCE, start=a.duration("at", 0.0) or 0.0)
    if kinds[0] == "rate":
        return Arrival(ArrivalKind.RATE, start=start, rate=a.number("rate", 1.0, minimum=1e-6))
    if kinds[0] == "bursts":
        b = a.doc.fields(a.at("bursts"), a.raw("bursts"), ("size", "every"))
        every = b.duration("every", None)
        if not every:
            b.fail("every", "required, a positive duration")
        return Arrival(ArrivalKind.BURSTS, start=start,
                       burst_size=b.integer("size", 1, minimum=1), interval=every)  # fmt: skip
    where = f"{a.doc.source}:{a.doc.line(a.at('trace'))}"
    trace = read_trace(base / a.string("trace"), where)
    return Arrival(ArrivalKind.TRACE, start=start, trace=trace)


def read_trace(path: Path, where: str = "") -> tuple[float, ...]:
    """Arrival offsets from a trace file, earliest first and relative to the earliest.

    One arrival per line: seconds (``12.5``) or an ISO 8601 timestamp, optionally followed by
    ``,COUNT`` for several pods at that instant; blank lines and ``#`` comments are skipped.

    Raises:
        ConfigError: naming ``TRACE:LINE``.
    """
    lines = _trace_lines(path, where)
    times: list[float] = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        stamp, _, count_text = (part.strip() for part in text.partition(","))
        try:
            count = int(count_text) if count_text else 1
            when = _timestamp(stamp)
        except (ValueError, OverflowError):
            # The line is not quoted: a file given as a trace by mistake may hold anything.
            message = "expected SECONDS or an ISO 8601 time, then optionally ,COUNT"
            raise ConfigError(f"{path}:{number}", "trace", message) from None
        if count < 1:
            raise ConfigError(f"{path}:{number}", "trace", "COUNT must be positive")
        if len(times) + count > MAX_PODS:
            message = f"more than {MAX_PODS:,} arrivals; a workload has at most {MAX_PODS:,} pods"
            raise ConfigError(f"{path}:{number}", "trace", message)
        times.extend([when] * count)
    if not times:
        raise ConfigError(str(path), "trace", "the trace holds no arrivals")
    first = min(times)
    return tuple(sorted(t - first for t in times))


def _trace_lines(path: Path, where: str) -> list[str]:
    """The lines of a trace file, read with a size cap (``/dev/zero`` is not read whole)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TRACE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(where or str(path), "trace", f"cannot read {path}: {reason}") from None
    if len(data) > MAX_TRACE_BYTES:
        message = f"{path} is larger than {MAX_TRACE_BYTES // (1024 * 1024)} MiB"
        raise ConfigError(where or str(path), "trace", message)
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(where or str(path), "trace", f"{path} is not UTF-8 text") from None


def _timestamp(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.timestamp()


def secret(doc: Located, path: str, value: Any) -> PullSecretSpec:
    f = doc.fields(path, value, ("name", "namespace", "username", "password", "passwordEnv"))
    password = f.string("password", "")
    env = f.string("passwordEnv", "")
    if env:
        password = os.environ.get(env, "")
        if not password:
            f.fail("passwordEnv", f"environment variable {env} is not set")
    return PullSecretSpec(
        f.string("name", required=True),
        f.string("namespace", "default"),
        f.string("username", required=True),
        password,
    )
