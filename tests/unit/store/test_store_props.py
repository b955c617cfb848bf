"""Property tests: reference counts stay exact under random add / remove / pin / use / GC.

A model tracks which (image, handler) keys are present and which blobs they reference; after
every step the store must agree: each committed blob's refcount is the number of present images
using it, the files on disk are exactly the committed blobs, usage is their total size, and GC
never takes a pinned image or one in use.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_fakes import FakeImage, blob_bytes, make_image, pull

from kubelet_sim.core.digest import Digest
from kubelet_sim.errors import StoreError
from kubelet_sim.store import GCPolicy, Store, fsck, garbage_collect

POOL = [blob_bytes(f"pool-{i}", 1_000 * (i + 1)) for i in range(5)]
IMAGES: list[FakeImage] = [
    make_image(f"prop-{i}", [POOL[i % 5], POOL[(i * 2 + 1) % 5], blob_bytes(f"own-{i}", 500 + i)])
    for i in range(6)
]
ORPHANS = [blob_bytes(f"orphan-{i}", 300) for i in range(3)]
HANDLERS = ["", "kata"]

index = st.integers(0, len(IMAGES) - 1)
handler = st.sampled_from(HANDLERS)
thresholds = st.integers(1, 100).flatmap(
    lambda high: st.tuples(st.just(high), st.integers(0, high - 1))
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), index, handler),
        st.tuples(st.just("remove"), index, handler),
        st.tuples(st.just("pin"), index, handler, st.booleans()),
        st.tuples(st.just("use"), index, handler),
        st.tuples(st.just("release"), index, handler),
        st.tuples(st.just("gc"), st.integers(1, 200), thresholds),
        st.tuples(st.just("orphan"), st.integers(0, len(ORPHANS) - 1)),
    ),
    max_size=30,
)


class Model:
    """What should be in the store."""

    def __init__(self) -> None:
        self.present: set[tuple[int, str]] = set()
        self.pinned: set[tuple[int, str]] = set()
        self.in_use: Counter[tuple[int, str]] = Counter()
        self.orphans: set[str] = set()

    def refcounts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for i, _ in self.present:
            counts.update(str(d) for d in IMAGES[i].blobs)
        return counts


async def check(store: Store, model: Model) -> None:
    by_id = {img.image_id: i for i, img in enumerate(IMAGES)}
    records = await store.list_images()
    listed = {(by_id[r.image_id], r.runtime_handler) for r in records}
    assert listed == model.present
    expected = model.refcounts()
    refcounts = await store.blob_refcounts()
    assert {d: n for d, n in refcounts.items() if n} == dict(expected)
    assert {d for d, n in refcounts.items() if not n} == model.orphans - set(expected)
    on_disk = {f"sha256:{p.name}" for p in (store.root / "blobs" / "sha256").glob("*")}
    assert on_disk == set(refcounts)
    sizes = {str(d): len(b) for img in IMAGES for d, b in img.blobs.items()}
    sizes.update({str(d): len(b) for d, b in ((Digest.from_bytes(o), o) for o in ORPHANS)})
    assert await store.usage() == sum(sizes[d] for d in refcounts)
    pinned = {(by_id[r.image_id], r.runtime_handler) for r in records if r.pinned}
    assert pinned == model.pinned & model.present


async def run(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with await Store.open(Path(tmp), runtime_class_in_image_cri_api=True) as store:
            model = Model()
            for op in ops:
                await step(store, model, op)
                await check(store, model)
            report = await fsck(store)
            assert report.clean, report


async def step(store: Store, model: Model, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "add":
        _, i, h = op
        await pull(store, IMAGES[i], tag=f"example.com/prop:{i}", handler=h)
        model.present.add((i, h))
        model.orphans -= {str(d) for d in IMAGES[i].blobs}
    elif kind == "remove":
        _, i, h = op
        if model.in_use[(i, h)]:
            with pytest.raises(StoreError, match="in use"):
                await store.remove(IMAGES[i].image_id, h)
            return
        assert await store.remove(IMAGES[i].image_id, h) == ((i, h) in model.present)
        model.present.discard((i, h))
        model.pinned.discard((i, h))
    elif kind == "pin":
        _, i, h, on = op
        assert await store.pin(IMAGES[i].image_id, on, h) == ((i, h) in model.present)
        if (i, h) in model.present:
            (model.pinned.add if on else model.pinned.discard)((i, h))
    elif kind == "use":
        _, i, h = op
        if (i, h) in model.present:
            await store.mark_in_use(IMAGES[i].image_id, h)
            model.in_use[(i, h)] += 1
        else:
            with pytest.raises(StoreError, match="not present"):
                await store.mark_in_use(IMAGES[i].image_id, h)
    elif kind == "release":
        _, i, h = op
        if model.in_use[(i, h)]:
            store.release(IMAGES[i].image_id, h)
            model.in_use[(i, h)] -= 1
    elif kind == "gc":
        _, percent, (high, low) = op
        capacity = max(1, await store.usage() * percent // 100)
        policy = GCPolicy(
            capacity_bytes=capacity, high_threshold_percent=high, low_threshold_percent=low,
            minimum_gc_age=0.0,
        )  # fmt: skip
        result = await garbage_collect(store, policy, store.now() + 1)
        by_id = {img.image_id: i for i, img in enumerate(IMAGES)}
        for freed in result.freed:
            key = (by_id[freed.image_id], freed.runtime_handler)
            assert key in model.present
            assert key not in model.pinned, "GC removed a pinned image"
            assert not model.in_use[key], "GC removed an image in use"
            model.present.discard(key)
        assert set(result.blobs_pruned) <= model.orphans
        model.orphans -= set(result.blobs_pruned)
        if result.ok and result.bytes_to_free:
            # Freed down to the low threshold (the kubelet's integer arithmetic).
            assert result.usage_after <= capacity - capacity * (100 - low) // 100
    elif kind == "orphan":
        _, j = op
        ref = await store.put_blob(ORPHANS[j])  # content no image references
        model.orphans.add(str(ref.digest))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations)
def test_refcounts_stay_exact_under_random_operations(ops: list[tuple[Any, ...]]) -> None:
    anyio.run(run, ops)
