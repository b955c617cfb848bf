"""Image GC: thresholds, LRU order, minimum and maximum age, pins and images in use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_fakes import Clock, FakeImage, blob_bytes, make_image, pull

from kubelet_sim.errors import ConfigError, StoreError
from kubelet_sim.store import (
    CredentialIdentity,
    GCPolicy,
    GCReason,
    ImageRecord,
    Store,
    garbage_collect,
)

MIB = 1 << 20


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[Store]:
    async with await Store.open(
        tmp_path / "root", clock=clock, runtime_class_in_image_cri_api=True
    ) as s:
        yield s


def image(name: str, size: int = 100_000, *shared: bytes) -> FakeImage:
    return make_image(name, [*shared, blob_bytes(name, size)])


async def fill(
    store: Store, clock: Clock, names: list[str], size: int = 100_000
) -> list[ImageRecord]:
    """Pull images one second apart (first detected, last used in that order)."""
    records = []
    for name in names:
        records.append(await pull(store, image(name, size), tag=f"example.com/{name}:1"))
        clock.advance(1)
    return records


def policy(capacity: int, **kwargs: float) -> GCPolicy:
    """A policy without minimum age, so that freshly pulled test images can go."""
    return GCPolicy(capacity_bytes=capacity, minimum_gc_age=0.0, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        pytest.param(
            {"high_threshold_percent": 101}, "imageGCHighThresholdPercent",
            "invalid configuration: imageGCHighThresholdPercent (--image-gc-high-threshold) 101 "
            "must be between 0 and 100, inclusive", id="high-over-100",
        ),
        pytest.param(
            {"low_threshold_percent": -1}, "imageGCLowThresholdPercent",
            "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) -1 "
            "must be between 0 and 100, inclusive", id="low-negative",
        ),
        pytest.param(
            {"high_threshold_percent": 70, "low_threshold_percent": 70},
            "imageGCLowThresholdPercent",
            "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) 70 "
            "must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) 70",
            id="low-not-below-high",
        ),
        pytest.param(
            {"maximum_gc_age": -1.0}, "imageMaximumGCAge",
            "imageMaximumGCAge -1s must not be negative", id="max-age-negative",
        ),
        pytest.param(
            {"maximum_gc_age": 60.0}, "imageMaximumGCAge",
            "imageMaximumGCAge 1m0s must be greater than imageMinimumGCAge 2m0s",
            id="max-age-not-above-min",
        ),
        pytest.param(
            {"minimum_gc_age": -5.0}, "imageMinimumGCAge",
            "imageMinimumGCAge -5s must not be negative", id="min-age-negative",
        ),
    ],
)  # fmt: skip
def test_policy_validation(kwargs: dict[str, float], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        GCPolicy(capacity_bytes=MIB, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("high", "max_age", "enabled"),
    [
        pytest.param(85, 0.0, True, id="default"),
        pytest.param(100, 0.0, False, id="high-100-no-max-age"),
        pytest.param(100, 3600.0, True, id="high-100-with-max-age"),
    ],
)
def test_policy_enabled(high: int, max_age: float, enabled: bool) -> None:
    gc_policy = GCPolicy(capacity_bytes=MIB, high_threshold_percent=high, maximum_gc_age=max_age)
    assert gc_policy.enabled is enabled


def test_policy_from_a_kubelet_configuration() -> None:
    from kubelet_sim.config.kubelet import KubeletConfiguration

    config = KubeletConfiguration(
        image_gc_high_threshold_percent=90, image_gc_low_threshold_percent=70
    )
    assert GCPolicy.from_config(config, 10 * MIB) == GCPolicy(
        capacity_bytes=10 * MIB, high_threshold_percent=90, low_threshold_percent=70
    )


@pytest.mark.anyio
async def test_below_the_high_threshold_nothing_is_freed(store: Store, clock: Clock) -> None:
    await fill(store, clock, ["a", "b", "c"])
    usage = await store.usage()
    result = await garbage_collect(store, policy(usage * 100 // 80))  # 80% used
    assert result.freed == ()
    assert result.bytes_to_free == 0
    assert result.ok
    assert await store.usage() == usage


@pytest.mark.anyio
async def test_frees_least_recently_used_until_below_the_low_threshold(
    store: Store, clock: Clock
) -> None:
    records = await fill(store, clock, ["a", "b", "c", "d", "e"])
    # Use them in another order: c (oldest use), a, e, b, d.
    for name in ["c", "a", "e", "b", "d"]:
        await store.touch(
            next(r.image_id for r in records if f"example.com/{name}:1" in r.repo_tags)
        )
        clock.advance(1)
    usage = await store.usage()
    capacity = usage  # 100% used, over 85: free down to 60%, i.e. two of the five images
    result = await garbage_collect(store, policy(capacity, low_threshold_percent=60))
    freed = [f.repo_tags for f in result.freed]
    assert freed == [("example.com/c:1",), ("example.com/a:1",)]
    assert all(f.reason is GCReason.SPACE for f in result.freed)
    assert result.bytes_to_free == capacity * 40 // 100
    assert result.bytes_freed >= result.bytes_to_free
    assert result.usage_after <= capacity * 60 // 100
    assert result.usage_after == await store.usage() == usage - result.bytes_freed
    assert result.ok


@pytest.mark.anyio
async def test_ties_in_last_use_go_by_first_detection(store: Store, clock: Clock) -> None:
    records = await fill(store, clock, ["x", "y", "z"])
    for record in records:  # same last use for all three
        await store.touch(record.image_id, clock.now)
    clock.advance(1)
    result = await garbage_collect(store, policy(await store.usage()))  # 100% used
    assert [f.repo_tags[0] for f in result.freed][:1] == ["example.com/x:1"]


@pytest.mark.anyio
async def test_pinned_and_in_use_images_are_never_freed(store: Store, clock: Clock) -> None:
    records = await fill(store, clock, ["pinned", "used", "free"])
    await store.pin("example.com/pinned:1")
    await store.mark_in_use(records[1].image_id)
    clock.advance(100)
    # 200% used and a low threshold of 0: everything would have to go.
    result = await garbage_collect(store, policy(await store.usage() // 2, low_threshold_percent=0))
    assert [f.repo_tags for f in result.freed] == [("example.com/free:1",)]
    assert {r.repo_tags[0] for r in await store.list_images()} == {
        "example.com/pinned:1", "example.com/used:1"
    }  # fmt: skip
    # An image in use counts as used now (detectImages).
    used = await store.lookup("example.com/used:1")
    assert used is not None
    assert used.last_used == clock.now
    [event] = result.events
    assert event.reason == "FreeDiskSpaceFailed"
    assert not result.ok


@pytest.mark.anyio
async def test_images_younger_than_the_minimum_age_are_kept(store: Store, clock: Clock) -> None:
    await fill(store, clock, ["old"])
    clock.advance(200)
    await fill(store, clock, ["young"])
    usage = await store.usage()
    capacity = usage  # 100%: must free 20%
    gc_policy = GCPolicy(capacity_bytes=capacity, minimum_gc_age=120.0)
    result = await garbage_collect(store, gc_policy)
    assert [f.repo_tags for f in result.freed] == [("example.com/old:1",)]
    young_size = usage - result.bytes_freed
    assert young_size > 0
    # Now only the young image is left and it cannot go: the kubelet's warning, word for word.
    result = await garbage_collect(store, GCPolicy(capacity_bytes=young_size, minimum_gc_age=120.0))
    assert result.freed == ()
    to_free = young_size * 20 // 100
    assert [(e.reason, e.message) for e in result.events] == [
        (
            "FreeDiskSpaceFailed",
            "Failed to garbage collect required amount of images. Attempted to free "
            f"{to_free} bytes, but only found 0 bytes eligible to free.",
        )
    ]


@pytest.mark.anyio
async def test_maximum_age_frees_unused_images_below_the_threshold(
    store: Store, clock: Clock
) -> None:
    records = await fill(store, clock, ["stale", "fresh"])
    clock.advance(3000)
    await store.touch(records[1].image_id)
    clock.advance(1000)
    gc_policy = policy(100 * await store.usage(), maximum_gc_age=3600.0)  # 1% used
    # Not before maximum_gc_age has passed since GC began (kubelet start).
    result = await garbage_collect(store, gc_policy, began=clock.now - 60)
    assert result.freed == ()
    result = await garbage_collect(store, gc_policy, began=clock.now - 4000)
    assert [(f.repo_tags, f.reason) for f in result.freed] == [
        (("example.com/stale:1",), GCReason.AGE)
    ]
    assert await store.lookup("example.com/fresh:1") is not None


@pytest.mark.anyio
async def test_shared_layers_count_only_when_really_freed(store: Store, clock: Clock) -> None:
    shared = blob_bytes("base", 300_000)
    for name in ["s1", "s2", "s3"]:
        await pull(store, image(name, 1_000, shared), tag=f"example.com/{name}:1")
        clock.advance(1)
    usage = await store.usage()
    result = await garbage_collect(store, policy(usage))  # 100%: free 20% = ~60 kB
    # Each image alone frees only ~1.6 kB (the base layer stays shared), so all three go.
    assert [f.repo_tags[0] for f in result.freed] == [
        "example.com/s1:1", "example.com/s2:1", "example.com/s3:1"
    ]  # fmt: skip
    assert result.freed[-1].bytes_freed > 300_000
    assert await store.usage() == 0


@pytest.mark.anyio
async def test_unreferenced_blobs_are_pruned_after_the_minimum_age(
    store: Store, clock: Clock
) -> None:
    orphan = await store.put_blob(b"a failed pull's layer")
    clock.advance(10)
    result = await garbage_collect(store, GCPolicy(capacity_bytes=MIB, minimum_gc_age=60.0))
    assert result.blobs_pruned == ()
    clock.advance(60)
    result = await garbage_collect(store, GCPolicy(capacity_bytes=MIB, minimum_gc_age=60.0))
    assert result.blobs_pruned == (str(orphan.digest),)
    assert result.bytes_freed == orphan.size
    assert not await store.has_blob(orphan.digest)


@pytest.mark.anyio
async def test_pull_records_of_freed_images_are_pruned(store: Store, clock: Clock) -> None:
    records = await fill(store, clock, ["gone", "kept"])
    for record in records:
        await store.record_pull(record.image_id, CredentialIdentity.node(), repository="r")
    await store.pin("example.com/kept:1")
    clock.advance(10)
    result = await garbage_collect(store, policy(await store.usage()))
    assert [f.image_id for f in result.freed] == [records[0].image_id]
    assert result.pull_records_pruned == 1
    assert await store.pull_records(records[0].image_id) == []
    assert await store.pull_records(records[1].image_id) == [CredentialIdentity.node()]


@pytest.mark.anyio
async def test_in_use_is_per_runtime_handler(store: Store, clock: Clock) -> None:
    img = image("handlers")
    kata = await pull(store, img, tag="example.com/h:1", handler="kata")
    await pull(store, img, tag="example.com/h:1", handler="")
    await store.mark_in_use(kata.image_id, "kata")
    clock.advance(10)
    result = await garbage_collect(store, policy(await store.usage()))
    assert [(f.image_id, f.runtime_handler) for f in result.freed] == [(kata.image_id, "")]
    assert await store.lookup("example.com/h:1", "kata") is not None
    assert [await store.has_blob(d) for d in img.blobs] == [True] * len(img.blobs)


@pytest.mark.anyio
async def test_zero_capacity_is_an_error(store: Store) -> None:
    with pytest.raises(StoreError, match="invalid capacity 0 on image filesystem"):
        await garbage_collect(store, GCPolicy(capacity_bytes=0))
