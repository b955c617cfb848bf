"""Read and validate a workload file (``kubelet-sim.dev/v1alpha1`` ``Workload``).

Every error is a :class:`~kubelet_sim.errors.ConfigError` whose file part is ``FILE:LINE`` and whose
field is the path inside the document (``nodes[1].kubelet.maxParallelImagePulls``). Node groups'
``kubelet`` sections are KubeletConfiguration fragments decoded, defaulted and validated exactly as
a kubelet config file is; pod ``spec`` sections are Pod specs read by :mod:`kubelet_sim.k8s`.
The format is described with examples in ``benchmarks/workloads/README.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from pathlib import Path
from types import MappingProxyType
from typing import Any

from kubelet_sim.config import kubelet as kconfig
from kubelet_sim.config import yamlsafe
from kubelet_sim.core.platforms import parse_platform
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.errors import ConfigError, InvalidImageNameError, PlatformError
from kubelet_sim.k8s.admission import parse_admission_plugins
from kubelet_sim.registry.hosts import registry_hosts
from kubelet_sim.registry.transport import RetryPolicy, TransportSettings
from kubelet_sim.sim.faults import FaultKind, FaultPlan, FaultWindow
from kubelet_sim.sim.model import Latency, RegistryModel
from kubelet_sim.workloads.limits import (
    MAX_IMAGE_COUNT,
    MAX_LAYER_BYTES,
    MAX_LAYERS,
    MAX_NODES,
    MAX_PODS,
    MAX_SEED_BYTES,
    human,
)
from kubelet_sim.workloads.parse_churn import parse_churn
from kubelet_sim.workloads.parse_pods import dns_label, pod_template, secret
from kubelet_sim.workloads.source import Fields, Located, load_located, parse_size, type_name
from kubelet_sim.workloads.spec import (
    API_VERSION,
    KIND,
    BaseImage,
    CacheState,
    EngineTiming,
    ImageSpec,
    LayerGroup,
    NodeGroup,
    RunSettings,
    SizeDistribution,
    SizeKind,
    Workload,
)
from kubelet_sim.workloads.thresholds import parse_threshold

_TOP = ("apiVersion", "kind", "name", "description", "seed", "bases", "images", "nodes", "pods",
        "secrets", "faults", "run", "admission", "virtual", "thresholds", "churn")  # fmt: skip
_PROBE_HOST = "registry.invalid:5000"  # only to check repository names against the grammar


def load_workload(path: str | os.PathLike[str]) -> Workload:
    """Read and validate the workload file at ``path``.

    Raises:
        ConfigError: naming ``FILE:LINE`` and the field.
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, None, "workload file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, None, f"cannot read the workload file: {exc}") from None
    return parse_workload(text, source, base_dir=Path(source).parent)


def parse_workload(
    text: str, source: str = "<workload>", *, base_dir: Path | None = None
) -> Workload:
    """Validate a workload document; relative files (traces) are read from ``base_dir``."""
    doc = load_located(text, source)
    top = doc.fields("", doc.value, _TOP)
    for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        if top.raw(key) != expected:
            top.fail(key, f"expected {expected!r}, got {yamlsafe.preview(top.raw(key))}")
    name = top.string("name", required=True)
    seed = top.integer("seed", 0)
    bases = tuple(_base(doc, p, v) for p, v in top.items("bases"))
    _unique(doc, "bases", [b.name for b in bases])
    images = tuple(_image(doc, p, v, {b.name for b in bases}) for p, v in top.items("images"))
    _check_seed_bytes(doc, bases, images)
    repos = [r for spec in images for r in spec.repositories()]
    _unique(doc, "images", repos, what="repository")
    known = {ref for spec in images for ref in spec.references()}
    nodes = tuple(_node_group(doc, p, v, known) for p, v in top.items("nodes", required=True))
    _unique(doc, "nodes", [g.name for g in nodes])
    groups = {g.name: g.count for g in nodes}
    if sum(groups.values()) > MAX_NODES:
        doc.fail("nodes", f"{sum(groups.values()):,} nodes in all; at most {MAX_NODES:,}")
    base = base_dir or Path.cwd()
    pods = tuple(
        pod_template(doc, p, v, groups, seed, base) for p, v in top.items("pods", required=True)
    )
    _unique(doc, "pods", [t.name for t in pods])
    if sum(t.count for t in pods) > MAX_PODS:
        doc.fail("pods", f"{sum(t.count for t in pods):,} pods in all; at most {MAX_PODS:,}")
    secrets = tuple(secret(doc, p, v) for p, v in top.items("secrets"))
    faults = _faults(doc, top.raw("faults"), seed)
    run = RunSettings()
    if top.has("run"):
        f = doc.fields("run", top.raw("run"), ("timeout", "proxy"))
        timeout = f.duration("timeout", 600.0)
        if timeout is None or not (math.isfinite(timeout) and timeout > 0):
            f.fail("timeout", "must be a positive, finite duration")
        run = RunSettings(timeout=timeout, proxy=f.boolean("proxy", False))
    virtual = _virtual(doc, top.raw("virtual"))
    plugins: frozenset[str] = frozenset()
    if top.has("admission"):
        a = doc.fields("admission", top.raw("admission"), ("enablePlugins",))
        names = a.strings("enablePlugins")
        try:
            plugins = parse_admission_plugins(names, field="admission.enablePlugins")
        except ConfigError as exc:
            a.fail("enablePlugins", exc.message)
    churn = parse_churn(doc, top, pods, groups, images, run.timeout)
    thresholds = []
    for path, item in top.items("thresholds"):
        try:
            thresholds.append(
                parse_threshold(
                    item,
                    groups=[g.name for g in nodes],
                    templates=[t.name for t in pods],
                    churn=[a.name for a in churn],
                )
            )
        except ValueError as exc:
            doc.fail(path, str(exc))
    return Workload(
        name=name,
        seed=seed,
        source=source,
        description=top.string("description", ""),
        bases=bases,
        images=images,
        nodes=nodes,
        pods=pods,
        secrets=secrets,
        faults=faults,
        run=run,
        admission_plugins=plugins,
        virtual=virtual,
        thresholds=tuple(thresholds),
        churn=churn,
        digest=hashlib.sha256(text.encode()).hexdigest(),
    )


def _unique(doc: Located, path: str, names: list[str], what: str = "name") -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            doc.fail(f"{path}[{i}]", f"duplicate {what} {name!r}")
        seen.add(name)


# -- images -------------------------------------------------------------------------------------


def _size_distribution(doc: Located, path: str, value: Any) -> SizeDistribution:
    if not isinstance(value, dict):
        return SizeDistribution(SizeKind.FIXED, value=parse_size(value, doc, path))
    f = doc.fields(path, value, ("uniform", "lognormal", "choice", "min", "max"))
    kinds = [k for k in ("uniform", "lognormal", "choice") if f.has(k)]
    if len(kinds) != 1:
        doc.fail(path, "give exactly one of uniform: [MIN, MAX], lognormal: {median, sigma}, "
                 "choice: [SIZES]")  # fmt: skip
    low, high = f.size("min", 0) or 0, f.size("max", 0) or 0
    if kinds[0] == "uniform":
        pair = f.raw("uniform")
        if not isinstance(pair, list) or len(pair) != 2:
            f.fail("uniform", "expected [MIN, MAX]")
        low, high = (parse_size(v, doc, f"{path}.uniform[{i}]") for i, v in enumerate(pair))
        if not 0 < low <= high:
            f.fail("uniform", "expected 0 < MIN <= MAX")
        return SizeDistribution(SizeKind.UNIFORM, low=low, high=high)
    if kinds[0] == "choice":
        choices = tuple(parse_size(v, doc, p) for p, v in f.items("choice", required=True))
        return SizeDistribution(SizeKind.CHOICE, choices=choices)
    ln = doc.fields(f.at("lognormal"), f.raw("lognormal"), ("median", "sigma"))
    median = ln.size("median")
    if not median:
        ln.fail("median", "required, a positive size")
    if high and low > high:
        f.fail("min", "min must not exceed max")
    sigma = ln.number("sigma", 1.0, maximum=5.0)
    return SizeDistribution(SizeKind.LOGNORMAL, median=median, sigma=sigma, low=low, high=high)


def _layers(f: Fields) -> tuple[LayerGroup, ...]:
    groups = []
    for path, item in f.items("layers"):
        if isinstance(item, dict) and "count" in item:
            g = f.doc.fields(path, item, ("count", "size"))
            size = _bounded(f.doc, g.at("size"), g.raw("size", required=True))
            groups.append(LayerGroup(g.integer("count", 1, minimum=1, maximum=MAX_LAYERS), size))
        else:
            groups.append(LayerGroup(1, _bounded(f.doc, path, item)))
    return tuple(groups)


def _bounded(doc: Located, path: str, value: Any) -> SizeDistribution:
    """A layer size distribution whose largest draw is at most MAX_LAYER_BYTES."""
    size = _size_distribution(doc, path, value)
    if size.kind is SizeKind.LOGNORMAL and not size.high:
        # No max: clamp to the largest layer a workload may have instead of drawing 1 TB.
        size = dataclasses.replace(size, high=max(MAX_LAYER_BYTES, size.low))
    if size.largest > MAX_LAYER_BYTES or size.median > MAX_LAYER_BYTES:
        doc.fail(path, f"a layer of up to {human(max(size.largest, size.median))}; "
                 f"at most {human(MAX_LAYER_BYTES)}")  # fmt: skip
    return size


def _seed_estimate(size: SizeDistribution) -> int:
    if size.kind is SizeKind.LOGNORMAL:
        return min(size.high, int(size.median * math.exp(3.1 * size.sigma)))
    return size.largest


def _check_seed_bytes(
    doc: Located, bases: tuple[BaseImage, ...], images: tuple[ImageSpec, ...]
) -> None:
    """Refuse a workload whose images could add up to more than MAX_SEED_BYTES of layers, each
    counted at its largest (a log-normal one at its 99.9th percentile, since its clamp is only a
    safety bound): every repository x tag x platform has its own layers, a base has one
    set per platform (as the generator builds them)."""

    def layer_bytes(groups: tuple[LayerGroup, ...]) -> int:
        return sum(g.count * _seed_estimate(g.size) for g in groups)

    base_bytes = {b.name: layer_bytes(b.layers) for b in bases}
    base_platforms = {(s.base, p) for s in images if s.base is not None for p in s.platforms}
    total = sum(base_bytes[name] for name, _ in base_platforms)
    for spec in images:
        own = layer_bytes(spec.layers)
        total += own * spec.count * len(spec.platforms) * len(spec.tags)
    if total > MAX_SEED_BYTES:
        doc.fail("images", f"seeding could write {human(total)} of layers; at most "
                 f"{human(MAX_SEED_BYTES)}")  # fmt: skip


def _base(doc: Located, path: str, value: Any) -> BaseImage:
    f = doc.fields(path, value, ("name", "layers"))
    layers = _layers(f)
    if not layers:
        f.fail("layers", "a base needs at least one layer")
    return BaseImage(f.string("name", required=True), layers)


def _image(doc: Located, path: str, value: Any, bases: set[str]) -> ImageSpec:
    f = doc.fields(path, value, ("repository", "tags", "count", "platforms", "base", "layers",
                                 "compress", "mediaTypes"))  # fmt: skip
    count = f.integer("count", 1, minimum=1, maximum=MAX_IMAGE_COUNT)
    repository = f.string("repository", required=True)
    if count > 1 and "{i}" not in repository:
        f.fail("repository", "with count > 1 the repository must contain {i}")
    tags = f.strings("tags", ("latest",))
    platforms = f.strings("platforms", ("linux/amd64",))
    for i, platform in enumerate(platforms):
        _check_platform(doc, f"{f.at('platforms')}[{i}]", platform)
    for key, suffix in [("repository", ""), *((f"tags[{i}]", f":{t}") for i, t in enumerate(tags))]:
        try:
            parse_normalized(f"{_PROBE_HOST}/{repository.replace('{i}', '0')}{suffix}")
        except InvalidImageNameError as exc:
            f.fail(key, f"not a valid image: {exc.message}: {repository}{suffix}")
    base = f.string("base", "") or None
    if base is not None and base not in bases:
        f.fail("base", f"unknown base {base!r}; bases: {', '.join(sorted(bases)) or 'none'}")
    layers = _layers(f)
    if not layers and base is None:
        f.fail("layers", "an image needs layers or a base")
    media = f.string("mediaTypes", "oci")
    if media not in ("oci", "docker"):
        f.fail("mediaTypes", f"expected oci or docker, got {media!r}")
    return ImageSpec(repository, tags, count, platforms, base, layers,
                     f.boolean("compress", False), media == "docker")  # fmt: skip


def _check_platform(doc: Located, path: str, value: str) -> None:
    try:
        platform = parse_platform(value)
    except PlatformError as exc:
        doc.fail(path, str(exc))
    if value.count("/") < 1 or not platform.architecture:
        doc.fail(path, f"expected os/arch[/variant], got {value!r}")


# -- nodes --------------------------------------------------------------------------------------

_NODE = ("name", "count", "platform", "kubelet", "kubeletConfigFile", "cache", "prePulled",
         "maxConcurrentDownloads", "transport", "timing", "hostsDir")  # fmt: skip


def _node_group(doc: Located, path: str, value: Any, known: set[str]) -> NodeGroup:
    f = doc.fields(path, value, _NODE)
    platform = f.string("platform", "linux/amd64")
    _check_platform(doc, f.at("platform"), platform)
    kubelet_fields = f.raw("kubelet") or {}
    if not isinstance(kubelet_fields, dict):
        f.fail("kubelet", f"expected a mapping of KubeletConfiguration fields, got "
               f"{type_name(kubelet_fields)}")  # fmt: skip
    cache = f.string("cache", "cold")
    if cache not in tuple(CacheState):
        f.fail("cache", f"expected cold or warm, got {cache!r}")
    pre_pulled = f.strings("prePulled")
    for i, ref in enumerate(pre_pulled):
        if ref not in known:
            doc.fail(f"{f.at('prePulled')}[{i}]", f"{ref!r} is not one of the workload's images")
    return NodeGroup(
        name=dns_label(f, "name"),
        count=f.integer("count", 1, minimum=1, maximum=MAX_NODES),
        platform=platform,
        kubelet=_kubelet(f, kubelet_fields),
        kubelet_fields=MappingProxyType(dict(kubelet_fields)),
        cache=CacheState(cache),
        pre_pulled=pre_pulled,
        max_concurrent_downloads=f.integer("maxConcurrentDownloads", 3, minimum=1),
        transport=_transport(f),
        timing=_timing(f),
        hosts_dir=_hosts_dir(f),
    )


def _hosts_dir(f: Fields) -> Path | None:
    """``hostsDir``, relative to the workload file; every ``hosts.toml`` in it is read now, so a
    bad one is refused before the run, naming its file."""
    text = f.string("hostsDir", "")
    if not text:
        return None
    folder = Path(f.doc.source).parent / text
    if not folder.is_dir():
        f.fail("hostsDir", f"{folder} is not a folder (a containerd certs.d: HOST/hosts.toml)")
    for hosts in sorted(folder.glob("*/hosts.toml")):
        try:
            registry_hosts(hosts.parent.name, folder)
        except ConfigError as exc:
            f.fail("hostsDir", str(exc))
    return folder


def _kubelet(f: Fields, fields: dict[str, Any]) -> kconfig.KubeletConfiguration:
    document: dict[Any, Any] = {}
    base_path = f.string("kubeletConfigFile", "")
    if base_path:
        full = Path(f.doc.source).parent / base_path
        try:
            text = full.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            f.fail("kubeletConfigFile", f"cannot read {full}: {exc}")
        try:
            loaded = yamlsafe.load_one(text, str(full))
        except ConfigError as exc:
            f.fail("kubeletConfigFile", str(exc))
        if not isinstance(loaded, dict):
            f.fail("kubeletConfigFile", f"{full} is not a KubeletConfiguration document")
        document.update(loaded)
    document.update({"apiVersion": kconfig.API_VERSION, "kind": kconfig.KIND, **fields})
    try:
        # A workload is our own format: refuse unknown kubelet fields instead of dropping them.
        return kconfig.decode_kubelet_config(document, f.at("kubelet"), strict=True)
    except ConfigError as exc:
        field = exc.field or ""
        path = f.at(f"kubelet.{field}") if field in fields else f.at("kubelet")
        f.doc.fail(path, exc.message)


BENCH_TRANSPORT = TransportSettings(retry_policy=RetryPolicy.CONTAINERD, max_attempts=5)
"""A bench node's transport unless its group says otherwise: containerd's retry policy and its
``maxAttempts`` of 5, so a load test puts containerd's traffic on the registry under faults."""


def _transport(f: Fields) -> TransportSettings:
    if not f.has("transport"):
        return BENCH_TRANSPORT
    keys = ("maxAttempts", "backoffInitial", "backoffMax", "stallTimeout", "connectTimeout",
            "requestDeadline", "authPerPull", "retryPolicy")  # fmt: skip
    t = f.doc.fields(f.at("transport"), f.raw("transport"), keys)
    policy_text = t.string("retryPolicy", str(RetryPolicy.CONTAINERD))
    if policy_text not in tuple(RetryPolicy):
        t.fail("retryPolicy", f"expected containerd or backoff, got {policy_text!r}")
    policy = RetryPolicy(policy_text)
    d = BENCH_TRANSPORT if policy is RetryPolicy.CONTAINERD else TransportSettings()
    return TransportSettings(
        retry_policy=policy,
        max_attempts=t.integer("maxAttempts", d.max_attempts, minimum=1),
        backoff_initial=t.duration("backoffInitial", d.backoff_initial) or 0.0,
        backoff_max=t.duration("backoffMax", d.backoff_max) or 0.0,
        stall_timeout=t.duration("stallTimeout", d.stall_timeout) or d.stall_timeout,
        connect_timeout=t.duration("connectTimeout", d.connect_timeout) or d.connect_timeout,
        request_deadline=t.duration("requestDeadline", d.request_deadline) or 0.0,
        auth_per_pull=t.boolean("authPerPull", d.auth_per_pull),
    )


def _timing(f: Fields) -> EngineTiming:
    if not f.has("timing"):
        return EngineTiming()
    keys = ("resyncPeriod", "resyncJitter", "backoffInitial", "backoffMax")
    t = f.doc.fields(f.at("timing"), f.raw("timing"), keys)
    d = EngineTiming()
    timing = EngineTiming(
        resync_period=t.duration("resyncPeriod", d.resync_period) or d.resync_period,
        resync_jitter=t.number("resyncJitter", d.resync_jitter, maximum=1.0),
        backoff_initial=t.duration("backoffInitial", d.backoff_initial) or d.backoff_initial,
        backoff_max=t.duration("backoffMax", d.backoff_max) or d.backoff_max,
    )
    if timing.backoff_max < timing.backoff_initial:
        t.fail("backoffMax", "must not be less than backoffInitial")
    return timing


def _faults(doc: Located, value: Any, seed: int) -> FaultPlan:
    if value is None:
        return FaultPlan(seed=seed)
    f = doc.fields("faults", value, ("seed", "windows"))
    windows = []
    keys = ("kind", "start", "end", "delay", "jitter", "share", "status", "afterBytes",
            "retryAfter")  # fmt: skip
    for path, item in f.items("windows"):
        w = doc.fields(path, item, keys)
        kind = w.string("kind", required=True)
        if kind not in tuple(FaultKind):
            w.fail("kind", f"expected one of {', '.join(FaultKind)}, got {kind!r}")
        try:
            windows.append(
                FaultWindow(
                    FaultKind(kind),
                    start=w.duration("start", 0.0) or 0.0,
                    end=w.duration("end", None),
                    delay=w.duration("delay", 0.0) or 0.0,
                    jitter=w.duration("jitter", 0.0) or 0.0,
                    share=w.number("share", 1.0, maximum=1.0),
                    status=w.integer("status", 503),
                    after_bytes=w.size("afterBytes", 0) or 0,
                    retry_after=w.duration("retryAfter", None),
                )
            )
        except ValueError as exc:
            doc.fail(path, str(exc))
    return FaultPlan(tuple(windows), f.integer("seed", seed))


def _virtual(doc: Located, value: Any) -> RegistryModel:
    """``virtual.registry``: how the modelled registry of ``bench --virtual`` behaves."""
    if value is None:
        return RegistryModel()
    v = doc.fields("virtual", value, ("registry",))
    if not v.has("registry"):
        return RegistryModel()
    keys = ("latency", "bandwidth", "concurrency", "auth", "tokenLifetime")
    r = doc.fields(v.at("registry"), v.raw("registry"), keys)
    latency = Latency()
    raw = r.raw("latency")
    if isinstance(raw, dict):
        lat = doc.fields(r.at("latency"), raw, ("median", "p99"))
        median = lat.duration("median", None)
        if median is None:
            lat.fail("median", "required")
        try:
            latency = Latency(median, lat.duration("p99", None))
        except ValueError as exc:
            lat.fail("p99", str(exc))
    elif raw is not None:
        try:
            latency = Latency(r.duration("latency", None) or 0.0)
        except ValueError as exc:
            r.fail("latency", str(exc))
    per_connection = total = 0
    if r.has("bandwidth"):
        b = doc.fields(r.at("bandwidth"), r.raw("bandwidth"), ("perConnection", "total"))
        per_connection = _rate(b, "perConnection")
        total = _rate(b, "total")
    auth = r.string("auth", "none")
    if auth not in ("none", "token"):
        r.fail("auth", f"expected none or token, got {auth!r}")
    lifetime = r.duration("tokenLifetime", 300.0)
    if lifetime is None or not (math.isfinite(lifetime) and lifetime > 0):
        r.fail("tokenLifetime", "must be a positive, finite duration")
    return RegistryModel(
        latency=latency,
        per_connection=float(per_connection),
        total=float(total),
        concurrency=r.integer("concurrency", 0, minimum=0, maximum=1_000_000),
        auth=auth == "token",
        token_lifetime=lifetime,
    )


def _rate(f: Fields, key: str) -> int:
    """Bytes per second: a size, optionally written with ``/s`` (``100MiB/s``); 0 is no limit."""
    value = f.raw(key)
    if isinstance(value, str) and value.strip().endswith("/s"):
        value = value.strip()[:-2]
    if value is None:
        return 0
    return parse_size(value, f.doc, f.at(key))
