"""Build a workload's synthetic images deterministically and push them (idempotently).

Every size and byte comes from the workload's ``seed``: layer sizes from ``random.Random`` seeded with
``<seed>/<repository>/<tag>``, layer bytes from :func:`kubelet_sim.sim.images.build_layer`. A base
image's layers are built once per platform and shared by every image on that base, so pushing and
pulling them exercises blob sharing. Images are built one at a time (a large workload never sits
in memory whole); pushing skips blobs the registry has and mounts shared ones across repositories.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import structlog

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.errors import KubeletSimError, first_error
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.push import Pusher
from kubelet_sim.sim.images import Blob, Image, Index, build_image, build_index, build_layer
from kubelet_sim.workloads.spec import BaseImage, ImageSpec, LayerGroup, Workload

log = structlog.get_logger(__name__)

SEED_CONCURRENCY = 4


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """One ``repository:tag`` of a workload: a single image, or an index over several platforms."""

    repository: str
    tag: str
    images: tuple[Image, ...]
    index: Index | None = None

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"

    def size_for(self, platform: str) -> int:
        """Bytes a node of ``platform`` downloads (config + layers); 0 if it has no such image."""
        for image in self.images:
            if image.platform_string == platform or len(self.images) == 1:
                return image.config.size + sum(layer.size for layer in image.layers)
        return 0

    def blobs(self) -> Iterator[Blob]:
        seen: set[str] = set()
        for image in self.images:
            for blob in image.blobs():
                if str(blob.digest) not in seen:
                    seen.add(str(blob.digest))
                    yield blob


def sample_sizes(groups: tuple[LayerGroup, ...], rng: random.Random) -> list[int]:
    return [group.size.sample(rng) for group in groups for _ in range(group.count)]


class ImageBuilder:
    """Builds a workload's images; base layers are built once per (base, platform) and reused.

    ``stub``: layers are described, not built (:meth:`~kubelet_sim.sim.images.Blob.stub`), with
    the sizes the real build draws: what the modelled registry of a virtual run serves.
    """

    def __init__(self, workload: Workload, *, stub: bool = False) -> None:
        self.workload = workload
        self.stub = stub
        self._bases = {base.name: base for base in workload.bases}
        self._base_layers: dict[tuple[str, str, bool, bool], tuple[Blob, ...]] = {}

    def _rng(self, *parts: str) -> random.Random:
        return random.Random("/".join((str(self.workload.seed), *parts)))  # noqa: S311

    def base_layers(self, base: BaseImage, platform: str, spec: ImageSpec) -> tuple[Blob, ...]:
        key = (base.name, platform, spec.compress, spec.docker)
        if key not in self._base_layers:
            sizes = sample_sizes(base.layers, self._rng("base", base.name))
            self._base_layers[key] = tuple(
                build_layer(
                    f"{self.workload.seed}/base/{base.name}/{platform}/{i}",
                    size,
                    compress=spec.compress,
                    docker=spec.docker,
                    stub=self.stub,
                )
                for i, size in enumerate(sizes)
            )
        return self._base_layers[key]

    def build(self, spec: ImageSpec, repository: str, tag: str) -> BuiltImage:
        sizes = sample_sizes(spec.layers, self._rng(repository, tag, "sizes"))
        images = []
        for platform in spec.platforms:
            shared: tuple[Blob, ...] = ()
            if spec.base is not None:
                shared = self.base_layers(self._bases[spec.base], platform, spec)
            images.append(
                build_image(
                    f"{self.workload.seed}/{repository}/{tag}",
                    platform,
                    sizes,
                    shared_layers=shared,
                    docker=spec.docker,
                    compress=spec.compress,
                    labels={"kubelet-sim.workload": self.workload.name},
                    stub=self.stub,
                )
            )
        index = build_index(images, docker=spec.docker) if len(images) > 1 else None
        return BuiltImage(repository, tag, tuple(images), index)

    def __iter__(self) -> Iterator[BuiltImage]:
        for spec in self.workload.images:
            for repository in spec.repositories():
                for tag in spec.tags:
                    yield self.build(spec, repository, tag)


@dataclass(slots=True)
class SeedReport:
    """What seeding pushed and skipped."""

    images: int = 0
    blobs_uploaded: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    bytes_uploaded: int = 0
    seconds: float = 0.0
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)  # ref -> platform -> bytes

    def to_dict(self) -> dict[str, object]:
        return {
            "images": self.images,
            "blobs_uploaded": self.blobs_uploaded,
            "blobs_skipped": self.blobs_skipped,
            "blobs_mounted": self.blobs_mounted,
            "bytes_uploaded": self.bytes_uploaded,
            "seconds": round(self.seconds, 3),
        }


async def seed_workload(
    workload: Workload,
    host: str,
    *,
    client: RegistryClient | None = None,
    on_image: Callable[[BuiltImage, SeedReport], None] | None = None,
    concurrency: int = SEED_CONCURRENCY,
    creds: Credentials | None = None,
) -> SeedReport:
    """Push every image of ``workload`` to the registry at ``host`` (``HOST:PORT``), with
    ``creds`` when it wants them, through the workload's ``hostsDir`` (its CA, mirrors).

    Blobs the repository already has are skipped, so seeding twice uploads nothing the second
    time; layers shared between repositories are mounted from the first one that has them.
    """
    report = SeedReport()
    started = time.monotonic()
    owner: dict[str, str] = {}  # blob digest -> a repository that has it
    slots = anyio.Semaphore(concurrency)
    own_client = client is None
    registry = client or RegistryClient(hosts_dir=workload.hosts_dir)

    async def push(built: BuiltImage) -> None:
        try:
            pusher = Pusher(registry, parse_normalized(f"{host}/{built.reference}"), creds)
            for blob in built.blobs():
                digest = str(blob.digest)
                before = pusher.uploaded
                source = owner.get(digest, "")
                mount = source if source and source != built.repository else ""
                await pusher.push_blob(blob.data, blob.digest, blob.size, mount_from=mount)
                if pusher.uploaded > before:
                    report.bytes_uploaded += blob.size
                owner.setdefault(digest, built.repository)
            if built.index is None:
                manifest = built.images[0].manifest
                await pusher.push_manifest(manifest.data, manifest.media_type, built.tag)
            else:
                for image in built.images:
                    m = image.manifest
                    await pusher.push_manifest(m.data, m.media_type, str(m.digest))
                index = built.index.index
                await pusher.push_manifest(index.data, index.media_type, built.tag)
        finally:
            slots.release()
        report.images += 1
        report.blobs_uploaded += pusher.uploaded
        report.blobs_skipped += pusher.skipped
        report.blobs_mounted += pusher.mounted
        report.sizes[built.reference] = {
            image.platform_string: built.size_for(image.platform_string) for image in built.images
        }
        log.debug("seed.image", image=built.reference, uploaded=pusher.uploaded)
        if on_image is not None:
            on_image(built, report)

    images = iter(ImageBuilder(workload))
    failure: BaseException | None = None
    try:
        await _push_all(images, slots, push)
    except* KubeletSimError as group:
        failure = first_error(group)  # raised below: see registry.client.run_limited
    finally:
        if own_client:
            await registry.aclose()
    if failure is not None:
        raise failure from None
    report.seconds = time.monotonic() - started
    return report


async def _push_all(
    images: Iterator[BuiltImage],
    slots: anyio.Semaphore,
    push: Callable[[BuiltImage], Coroutine[Any, Any, None]],
) -> None:
    """Build lazily, in a thread: at most as many images as ``slots`` allows are held at once."""
    async with anyio.create_task_group() as tg:
        while True:
            await slots.acquire()
            built = await anyio.to_thread.run_sync(next, images, None)
            if built is None:
                slots.release()
                break
            tg.start_soon(push, built)
