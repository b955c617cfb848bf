"""The values a workload file describes: images to seed, node groups, pod templates, faults.

Everything here is frozen and validated by :mod:`kubelet_sim.workloads.parse`; the only behaviour is
deterministic sampling (layer sizes, arrival times) from explicit ``random.Random`` instances.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kubelet_sim.config.kubelet import KubeletConfiguration
from kubelet_sim.k8s.objects import Container, Pod
from kubelet_sim.registry.transport import TransportSettings
from kubelet_sim.sim.faults import FaultPlan
from kubelet_sim.sim.model import RegistryModel
from kubelet_sim.workloads.thresholds import Threshold

API_VERSION = "kubelet-sim.dev/v1alpha1"
KIND = "Workload"


class SizeKind(StrEnum):
    FIXED = "fixed"
    UNIFORM = "uniform"
    LOGNORMAL = "lognormal"
    CHOICE = "choice"


@dataclass(frozen=True, slots=True)
class SizeDistribution:
    """Layer sizes in bytes: a fixed size, uniform in [low, high], log-normal around ``median``
    (clamped to [low, high] when set), or a choice among sizes."""

    @property
    def largest(self) -> int:
        """The largest size this distribution can draw (a log-normal one without ``max`` has
        none: 0)."""
        if self.kind is SizeKind.FIXED:
            return self.value
        if self.kind is SizeKind.CHOICE:
            return max(self.choices)
        return self.high

    kind: SizeKind
    value: int = 0
    low: int = 0
    high: int = 0
    median: int = 0
    sigma: float = 0.0
    choices: tuple[int, ...] = ()

    def sample(self, rng: random.Random) -> int:
        if self.kind is SizeKind.FIXED:
            return self.value
        if self.kind is SizeKind.UNIFORM:
            return rng.randint(self.low, self.high)
        if self.kind is SizeKind.CHOICE:
            return rng.choice(self.choices)
        drawn = int(self.median * math.exp(rng.gauss(0.0, self.sigma)))
        if self.low:
            drawn = max(self.low, drawn)
        if self.high:
            drawn = min(self.high, drawn)
        return max(drawn, 1)

    def describe(self) -> str:
        if self.kind is SizeKind.FIXED:
            return human_bytes(self.value)
        if self.kind is SizeKind.UNIFORM:
            return f"uniform {human_bytes(self.low)}-{human_bytes(self.high)}"
        if self.kind is SizeKind.CHOICE:
            return "one of " + ", ".join(human_bytes(c) for c in self.choices)
        return f"log-normal median {human_bytes(self.median)} sigma {self.sigma:g}"


@dataclass(frozen=True, slots=True)
class LayerGroup:
    """``count`` layers whose sizes are drawn from ``size``."""

    count: int
    size: SizeDistribution


@dataclass(frozen=True, slots=True)
class BaseImage:
    """Layers shared by every image built on this base (per platform)."""

    name: str
    layers: tuple[LayerGroup, ...]


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """Images to build and push: ``count`` repositories (``{i}`` in the name) x ``tags``."""

    repository: str
    tags: tuple[str, ...] = ("latest",)
    count: int = 1
    platforms: tuple[str, ...] = ("linux/amd64",)
    base: str | None = None
    layers: tuple[LayerGroup, ...] = ()
    compress: bool = False
    docker: bool = False

    def repositories(self) -> list[str]:
        if self.count == 1 and "{i}" not in self.repository:
            return [self.repository]
        return [self.repository.replace("{i}", str(i)) for i in range(self.count)]

    def references(self) -> list[str]:
        """``repository:tag`` of every image, relative to the registry."""
        return [f"{repo}:{tag}" for repo in self.repositories() for tag in self.tags]


class CacheState(StrEnum):
    COLD = "cold"  # empty store
    WARM = "warm"  # every seeded image present before the run


@dataclass(frozen=True, slots=True)
class EngineTiming:
    """Pod-worker and backoff timing; the kubelet's values by default (shorten to run faster)."""

    resync_period: float = 10.0
    resync_jitter: float = 0.0
    backoff_initial: float = 10.0
    backoff_max: float = 300.0


@dataclass(frozen=True, slots=True)
class NodeGroup:
    """``count`` identical nodes named ``<name>-<index>``."""

    name: str
    count: int = 1
    platform: str = "linux/amd64"
    kubelet: KubeletConfiguration = field(default_factory=KubeletConfiguration.default)
    kubelet_fields: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    cache: CacheState = CacheState.COLD
    pre_pulled: tuple[str, ...] = ()
    max_concurrent_downloads: int = 3
    transport: TransportSettings = field(default_factory=TransportSettings)
    timing: EngineTiming = field(default_factory=EngineTiming)
    hosts_dir: Path | None = None
    """containerd's ``certs.d`` folder (``hostsDir``): the group's mirrors, CA, client
    certificates and ``skip_verify`` for the registry under test."""

    def node_names(self) -> list[str]:
        width = max(3, len(str(self.count - 1)))
        return [f"{self.name}-{i:0{width}d}" for i in range(self.count)]


class ArrivalKind(StrEnum):
    ONCE = "once"  # every pod at ``start``
    RATE = "rate"  # evenly spaced, ``rate`` pods per second
    BURSTS = "bursts"  # ``size`` pods every ``interval``
    TRACE = "trace"  # recorded offsets


@dataclass(frozen=True, slots=True)
class Arrival:
    kind: ArrivalKind = ArrivalKind.ONCE
    start: float = 0.0
    rate: float = 0.0
    burst_size: int = 0
    interval: float = 0.0
    trace: tuple[float, ...] = ()

    def times(self, count: int) -> list[float]:
        """Arrival times (seconds since the run started) of ``count`` pods, in order."""
        if self.kind is ArrivalKind.ONCE:
            return [self.start] * count
        if self.kind is ArrivalKind.RATE:
            return [self.start + i / self.rate for i in range(count)]
        if self.kind is ArrivalKind.BURSTS:
            return [self.start + (i // self.burst_size) * self.interval for i in range(count)]
        return [self.start + t for t in self.trace[:count]]

    def describe(self) -> str:
        if self.kind is ArrivalKind.ONCE:
            return f"all at {self.start:g}s"
        if self.kind is ArrivalKind.RATE:
            return f"{self.rate:g}/s from {self.start:g}s"
        if self.kind is ArrivalKind.BURSTS:
            return f"bursts of {self.burst_size} every {self.interval:g}s from {self.start:g}s"
        return f"trace of {len(self.trace)} arrivals over {self.trace[-1]:g}s"


class PlacementKind(StrEnum):
    ROUND_ROBIN = "round-robin"
    RANDOM = "random"
    EVERY_NODE = "every-node"  # one pod per node (a DaemonSet)


@dataclass(frozen=True, slots=True)
class Placement:
    kind: PlacementKind = PlacementKind.ROUND_ROBIN
    groups: tuple[str, ...] = ()  # empty: every node group
    seed: int = 0


@dataclass(frozen=True, slots=True)
class PodTemplate:
    """``count`` pods named ``<name>-<index>`` with these containers (images relative to the
    registry), arriving and placed as described."""

    name: str
    count: int
    namespace: str = "default"
    init_containers: tuple[Container, ...] = ()
    containers: tuple[Container, ...] = ()
    pull_secrets: tuple[str, ...] = ()
    arrival: Arrival = field(default_factory=Arrival)
    placement: Placement = field(default_factory=Placement)
    pod: Pod | None = field(default=None, compare=False, repr=False)
    """The template's pod as parsed: its annotations, restart policy, grace period, hostname and
    containers' env and hooks go to every pod made from it."""

    def images(self) -> tuple[str, ...]:
        return tuple(c.image for c in self.init_containers + self.containers)


@dataclass(frozen=True, slots=True)
class PullSecretSpec:
    """A ``kubernetes.io/dockerconfigjson`` Secret for the registry under test."""

    name: str
    namespace: str = "default"
    username: str = ""
    password: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class RunSettings:
    """``timeout``: stop waiting for pods after this long; ``proxy``: route through the fault
    proxy even without faults (to measure what the registry served)."""

    timeout: float = 600.0
    proxy: bool = False


class ChurnKind(StrEnum):
    """What a churn action does to the run (``churn:`` in the workload)."""

    DELETE = "delete"  # delete pods of a template
    ROLLOUT = "rollout"  # a Deployment's rolling update to a new image
    RESTART = "restart"  # a kubelet restart: store kept, waiting pods re-applied
    RETAG = "retag"  # move a tag in the registry to another tag's image


@dataclass(frozen=True, slots=True)
class Amount:
    """An absolute count, or a percentage of a total (a Deployment's ``maxSurge`` style)."""

    value: float
    percent: bool = False

    def of(self, total: int, *, round_up: bool) -> int:
        """The count for ``total``: a percentage rounds up (``maxSurge``) or down
        (``maxUnavailable``), as ``intstr.GetScaledValueFromIntOrPercent``."""
        if not self.percent:
            return int(self.value)
        scaled = self.value * total / 100
        return math.ceil(scaled - 1e-9) if round_up else math.floor(scaled + 1e-9)

    def describe(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{int(self.value)}"


@dataclass(frozen=True, slots=True)
class ChurnAction:
    """One timed change to the run: see :class:`ChurnKind` and the workload README."""

    name: str
    kind: ChurnKind
    at: float
    template: str = ""
    """``pods``: the pod template deleted from or rolled (delete, rollout)."""
    group: str = ""
    """``nodes``: the node group restarted (restart)."""
    count: Amount = Amount(100, percent=True)
    """How many pods (delete) or nodes (restart): a count or a percentage, the lowest first."""
    image: str = ""
    """The rollout's new image (relative to the registry, ``{i}`` allowed)."""
    container: str = ""
    """The container whose image the rollout changes (default: the template's only one)."""
    max_surge: Amount = Amount(25, percent=True)
    max_unavailable: Amount = Amount(25, percent=True)
    downtime: float = 1.0
    """Seconds a restarted kubelet is down before it comes back (restart)."""
    repository: str = ""
    tag: str = ""
    to: str = ""
    """retag: ``repository:tag`` now names the image of ``repository:to``."""


@dataclass(frozen=True, slots=True)
class Workload:
    """A validated workload file."""

    name: str
    seed: int
    source: str
    description: str = ""
    bases: tuple[BaseImage, ...] = ()
    images: tuple[ImageSpec, ...] = ()
    nodes: tuple[NodeGroup, ...] = ()
    pods: tuple[PodTemplate, ...] = ()
    secrets: tuple[PullSecretSpec, ...] = ()
    faults: FaultPlan = field(default_factory=FaultPlan)
    run: RunSettings = field(default_factory=RunSettings)
    admission_plugins: frozenset[str] = frozenset()
    """``admission.enablePlugins`` (AlwaysPullImages), as ``run --enable-admission-plugins``."""
    virtual: RegistryModel = field(default_factory=RegistryModel)
    """How the modelled registry of ``bench --virtual`` behaves (ignored by real runs)."""
    thresholds: tuple[Threshold, ...] = ()
    """Pass/fail criteria on the report (:mod:`kubelet_sim.workloads.thresholds`)."""
    churn: tuple[ChurnAction, ...] = ()
    """Timed deletes, rolling updates, kubelet restarts and tag moves (:mod:`.churn`)."""
    digest: str = ""

    @property
    def node_count(self) -> int:
        return sum(g.count for g in self.nodes)

    def references(self) -> list[str]:
        return [ref for spec in self.images for ref in spec.references()]

    @property
    def hosts_dir(self) -> Path | None:
        """The ``hostsDir`` seeding and checks reach the registry with: the first group's."""
        return next((g.hosts_dir for g in self.nodes if g.hosts_dir is not None), None)

    @property
    def uses_proxy(self) -> bool:
        return self.run.proxy or bool(self.faults.windows)


def human_bytes(n: float) -> str:
    """``1.5 MiB`` style."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
