"""Image garbage collection, modelled on ``pkg/kubelet/images/image_gc_manager.go``.

``GarbageCollect``: images not in use and not pinned are candidates, least recently used first
(ties: first detected first). With ``imageMaximumGCAge`` set, candidates unused for longer are
freed (reason ``age``). Then, when usage of the capacity reaches the high threshold, candidates
are freed (reason ``space``) until usage is below the low threshold, skipping images younger
than ``imageMinimumGCAge`` (``freeSpace``). Images used by a running container are never freed.

Differences from upstream, on purpose:

- usage is the bytes of committed blobs plus ``other_bytes``, what else uses the image
  filesystem: the daemon measures the filesystem the store lives on (capacity and used bytes,
  as the kubelet's ``ImageFsInfo``), a test or a simulated imagefs gives a capacity and no other
  usage; usage can then exceed the capacity, and the excess is freed as well;
- freed bytes are the bytes of blobs actually deleted, where upstream credits each image's full
  size, which over-counts shared layers and can stop above the low threshold;
- stale partial downloads (ingests) are removed, as containerd's GC removes expired ingests;
- blobs no image references (a failed pull's leftovers) are pruned first, when older than the
  minimum age and not held by a pull's lease; containerd's own GC does that upstream;
- upstream skips the age pass until ``maximum_gc_age`` has passed since the kubelet started,
  because its last-used times live in memory; ours persist, so ``began`` is optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import structlog

from kubelet_sim.core.durations import format_go_duration
from kubelet_sim.errors import ConfigError, StoreError
from kubelet_sim.store.records import ImageRecord

if TYPE_CHECKING:
    from kubelet_sim.store.store import Store

log = structlog.get_logger(__name__)


class GCReason(StrEnum):
    """``kubelet_image_garbage_collected_total{reason}``."""

    AGE = "age"
    SPACE = "space"


class GCSettings(Protocol):
    """The image-GC fields of a KubeletConfiguration."""

    @property
    def image_gc_high_threshold_percent(self) -> int: ...

    @property
    def image_gc_low_threshold_percent(self) -> int: ...

    @property
    def image_minimum_gc_age(self) -> float: ...

    @property
    def image_maximum_gc_age(self) -> float: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class GCPolicy:
    """Thresholds (percent of ``capacity_bytes``) and ages (seconds) of image GC."""

    capacity_bytes: int
    high_threshold_percent: int = 85
    low_threshold_percent: int = 80
    minimum_gc_age: float = 120.0
    maximum_gc_age: float = 0.0
    other_bytes: int = 0
    """Bytes of the image filesystem used by anything but the store's blobs."""

    def __post_init__(self) -> None:
        high, low = self.high_threshold_percent, self.low_threshold_percent
        high_flag = "imageGCHighThresholdPercent (--image-gc-high-threshold)"
        low_flag = "imageGCLowThresholdPercent (--image-gc-low-threshold)"
        checks = (
            (not 0 <= high <= 100, "imageGCHighThresholdPercent",
             f"invalid configuration: {high_flag} {high} must be between 0 and 100, inclusive"),
            (not 0 <= low <= 100, "imageGCLowThresholdPercent",
             f"invalid configuration: {low_flag} {low} must be between 0 and 100, inclusive"),
            (low >= high, "imageGCLowThresholdPercent",
             f"invalid configuration: {low_flag} {low} must be less than {high_flag} {high}"),
            (self.minimum_gc_age < 0, "imageMinimumGCAge",
             f"imageMinimumGCAge {_duration(self.minimum_gc_age)} must not be negative"),
            (self.maximum_gc_age < 0, "imageMaximumGCAge",
             f"imageMaximumGCAge {_duration(self.maximum_gc_age)} must not be negative"),
            (0 < self.maximum_gc_age <= self.minimum_gc_age, "imageMaximumGCAge",
             f"imageMaximumGCAge {_duration(self.maximum_gc_age)} must be greater than "
             f"imageMinimumGCAge {_duration(self.minimum_gc_age)}"),
            (self.capacity_bytes < 0, "capacityBytes",
             f"capacity {self.capacity_bytes} must not be negative"),
            (self.other_bytes < 0, "otherBytes",
             f"other usage {self.other_bytes} must not be negative"),
        )  # fmt: skip
        for failed, field_name, message in checks:
            if failed:
                raise ConfigError(None, field_name, message)

    @classmethod
    def from_config(cls, config: GCSettings, capacity_bytes: int, other_bytes: int = 0) -> GCPolicy:
        """The policy a KubeletConfiguration describes, for an imagefs of ``capacity_bytes`` of
        which ``other_bytes`` are used by something else."""
        return cls(
            capacity_bytes=capacity_bytes,
            other_bytes=other_bytes,
            high_threshold_percent=config.image_gc_high_threshold_percent,
            low_threshold_percent=config.image_gc_low_threshold_percent,
            minimum_gc_age=config.image_minimum_gc_age,
            maximum_gc_age=config.image_maximum_gc_age,
        )

    @property
    def enabled(self) -> bool:
        """False when the kubelet would not start image GC at all (``StartGarbageCollection``)."""
        return not (self.high_threshold_percent == 100 and self.maximum_gc_age == 0)


def _duration(seconds: float) -> str:
    try:
        return format_go_duration(seconds)
    except ValueError:
        return f"{seconds}s"


@dataclass(frozen=True, slots=True)
class FreedImage:
    """One image GC removed, and the bytes its removal actually freed."""

    image_id: str
    runtime_handler: str
    repo_tags: tuple[str, ...]
    reason: GCReason
    bytes_freed: int


@dataclass(frozen=True, slots=True)
class GCEvent:
    """A Warning event on the Node (``FreeDiskSpaceFailed``)."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class GCResult:
    """What one GC pass did."""

    freed: tuple[FreedImage, ...]
    blobs_pruned: tuple[str, ...]
    bytes_freed: int
    usage_before: int
    usage_after: int
    capacity_bytes: int
    bytes_to_free: int
    events: tuple[GCEvent, ...]
    pull_records_pruned: int

    @property
    def ok(self) -> bool:
        """False when the space GC had to free could not all be found."""
        return not self.events


def _candidates(records: list[ImageRecord], in_use: set[tuple[str, str]]) -> list[ImageRecord]:
    """Unpinned images no container uses, least recently used first, then first detected."""
    eligible = [r for r in records if not r.pinned and r.key not in in_use]
    return sorted(eligible, key=lambda r: (r.last_used, r.first_used))


async def garbage_collect(
    store: Store, policy: GCPolicy, now: float | None = None, *, began: float | None = None
) -> GCResult:
    """One ``GarbageCollect`` pass at ``now`` (default: the store's clock).

    Args:
        began: when GC started running (kubelet start); the age pass waits until
            ``maximum_gc_age`` has passed since then. None: no wait.

    Raises:
        StoreError: ``invalid capacity 0 on image filesystem``.
    """
    now = store.now() if now is None else now
    usage_before = await store.usage()
    # detectImages: images in use are used now.
    in_use = set(store.in_use())
    for image_id, handler in in_use:
        await store.touch(image_id, now, handler)
    pruned, pruned_bytes = await store.prune_blobs(now - policy.minimum_gc_age)
    await store.prune_ingests(now)  # partial downloads nobody resumed within the expiry
    records = await store.list_images(None, include_absent=True)
    candidates = _candidates(records, in_use)
    freed: list[FreedImage] = []

    async def free(record: ImageRecord, reason: GCReason) -> int | None:
        removal = await store.remove_key(record.key, for_gc=True)
        if removal is None:
            return None  # became used or pinned since, or already gone
        freed.append(
            FreedImage(record.image_id, record.runtime_handler, record.repo_tags, reason,
                       removal.bytes_freed)
        )  # fmt: skip
        return removal.bytes_freed

    # freeOldImages
    remaining = candidates
    if policy.maximum_gc_age > 0 and (began is None or now - began > policy.maximum_gc_age):
        remaining = []
        for record in candidates:
            too_old = now - record.last_used > policy.maximum_gc_age
            if too_old and await free(record, GCReason.AGE) is not None:
                continue
            remaining.append(record)
    capacity = policy.capacity_bytes
    if capacity == 0:
        raise StoreError("invalid capacity 0 on image filesystem")
    usage = await store.usage() + policy.other_bytes
    # Upstream clamps available to [0, capacity]; a simulated capacity can be exceeded, so below
    # zero it is kept: then the excess is freed too (identical to upstream while usage fits).
    available = capacity - usage
    usage_percent = 100 - available * 100 // capacity
    events: list[GCEvent] = []
    to_free = 0
    if usage_percent >= policy.high_threshold_percent:
        to_free = capacity * (100 - policy.low_threshold_percent) // 100 - available
        space_freed = 0
        for record in remaining:
            if space_freed >= to_free:
                break
            # Images in use were given a newer lastUsed; young images may be about to be used.
            if record.last_used >= now or now - record.first_used < policy.minimum_gc_age:
                continue
            space_freed += await free(record, GCReason.SPACE) or 0
        if space_freed < to_free:
            message = (
                "Failed to garbage collect required amount of images. Attempted to free "
                f"{to_free} bytes, but only found {space_freed} bytes eligible to free."
            )
            events.append(GCEvent("FreeDiskSpaceFailed", message))
            log.warning("image gc could not free enough", to_free=to_free, freed=space_freed)
    pruned_records = await store.prune_pull_records(now)
    usage_after = await store.usage()
    result = GCResult(
        freed=tuple(freed),
        blobs_pruned=pruned,
        bytes_freed=pruned_bytes + sum(f.bytes_freed for f in freed),
        usage_before=usage_before,
        usage_after=usage_after,
        capacity_bytes=capacity,
        bytes_to_free=max(to_free, 0),
        events=tuple(events),
        pull_records_pruned=pruned_records,
    )
    if freed or pruned:
        log.info("image gc", images=len(freed), bytes=result.bytes_freed, usage=usage_after)
    return result
