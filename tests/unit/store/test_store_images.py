"""Images in the store: commit, lookup, tags, runtime handlers, shared layers, removal, pins."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_fakes import Clock, FakeImage, assert_whole, blob_bytes, fetch_bytes, make_image, pull
from structlog.testing import capture_logs

from kubelet_sim.core.digest import Digest
from kubelet_sim.errors import InvalidImageNameError, StoreError
from kubelet_sim.store import BlobRef, Store

SHARED = blob_bytes("shared", 40_000)
A = make_image("a", [SHARED, blob_bytes("a1", 10_000)])
B = make_image("b", [SHARED, blob_bytes("b1", 20_000)])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path / "root", clock=clock) as s:
        yield s


@pytest.fixture
async def gated(tmp_path: Path, clock: Clock) -> AsyncIterator[Store]:
    """A store with RuntimeClassInImageCriApi on."""
    async with await Store.open(
        tmp_path / "gated", clock=clock, runtime_class_in_image_cri_api=True
    ) as s:
        yield s


@pytest.mark.anyio
async def test_commit_records_the_whole_image(store: Store, clock: Clock) -> None:
    record = await pull(
        store, A, tag="example.com/a:1", repo_digest=f"example.com/a@{A.manifest_digest}"
    )
    assert record.image_id == A.image_id == str(A.config_digest)
    assert record.repo_tags == ("example.com/a:1",)
    assert record.repo_digests == (f"example.com/a@{A.manifest_digest}",)
    assert record.manifest_digest == A.manifest_digest
    assert record.layers == A.layer_refs
    assert record.platform == "linux/amd64"
    assert record.size == A.size  # manifest + config + layers, each distinct blob once
    assert record.first_used == record.last_used == clock.now
    assert not record.pinned
    assert record.present
    await assert_whole(store, record)


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param("example.com/a:1", id="tag"),
        pytest.param(f"example.com/a@{A.manifest_digest}", id="repo-digest"),
        pytest.param(f"example.com/a:other@{A.manifest_digest}", id="tag-and-digest-digest-wins"),
        pytest.param(A.image_id, id="image-id"),
        pytest.param(A.config_digest.hex, id="bare-image-id"),
    ],
)
@pytest.mark.anyio
async def test_lookup_by_every_reference_form(store: Store, ref: str) -> None:
    record = await pull(
        store, A, tag="example.com/a:1", repo_digest=f"example.com/a@{A.manifest_digest}"
    )
    assert await store.lookup(ref) == record


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param("example.com/a:2", id="other-tag"),
        pytest.param("example.com/b:1", id="other-repo"),
        pytest.param(f"example.com/a@{B.manifest_digest}", id="other-digest"),
        pytest.param(f"example.com/a:1@{B.manifest_digest}", id="tag-matches-digest-does-not"),
        pytest.param(B.image_id, id="other-id"),
    ],
)
@pytest.mark.anyio
async def test_lookup_misses(store: Store, ref: str) -> None:
    await pull(store, A, tag="example.com/a:1", repo_digest=f"example.com/a@{A.manifest_digest}")
    assert await store.lookup(ref) is None


@pytest.mark.anyio
async def test_a_name_without_tag_means_latest(store: Store) -> None:
    record = await pull(store, A, tag="localhost:5000/a:latest")
    assert await store.lookup("localhost:5000/a") == record


@pytest.mark.anyio
async def test_commit_fails_when_a_blob_is_not_committed(store: Store) -> None:
    for digest, data in A.blobs.items():
        if data is not A.layers[1]:
            await store.ensure_blob(digest, len(data), fetch_bytes(data))
    with pytest.raises(StoreError, match=f"layer blob {Digest.from_bytes(A.layers[1])}"):
        await store.commit_image(
            A.manifest_digest, A.config_digest, A.layer_refs,
            repo_tag="example.com/a:1", repo_digest=None, platform="linux/amd64",
        )  # fmt: skip
    assert await store.list_images(include_absent=True) == []
    assert await store.lookup("example.com/a:1") is None


@pytest.mark.anyio
async def test_commit_fails_when_a_blob_file_vanished(store: Store) -> None:
    await pull(store, A, tag="example.com/a:1")
    await store.remove(A.image_id)
    for digest, data in A.blobs.items():
        await store.ensure_blob(digest, len(data), fetch_bytes(data))
    store.layout.path(A.layer_refs[0].digest).unlink()  # behind the store's back
    with pytest.raises(StoreError, match="missing on disk"):
        await store.commit_image(
            A.manifest_digest, A.config_digest, A.layer_refs,
            repo_tag="example.com/a:1", repo_digest=None, platform="linux/amd64",
        )  # fmt: skip
    assert await store.list_images(include_absent=True) == []


@pytest.mark.anyio
async def test_commit_checks_declared_layer_sizes(store: Store) -> None:
    await pull(store, A, tag="example.com/a:1")
    wrong = (dataclasses.replace(A.layer_refs[0], size=A.layer_refs[0].size + 1),)
    with pytest.raises(StoreError, match="the manifest says"):
        await store.commit_image(
            A.manifest_digest, A.config_digest, wrong,
            repo_tag=None, repo_digest=None, platform="linux/amd64",
        )  # fmt: skip


@pytest.mark.anyio
async def test_layers_may_be_given_as_bare_digests(store: Store) -> None:
    await pull(store, A, tag="example.com/a:1")
    record = await store.commit_image(
        A.manifest_digest, A.config_digest, [ref.digest for ref in A.layer_refs],
        repo_tag="example.com/a:2", repo_digest=None, platform="linux/amd64",
    )  # fmt: skip
    assert record.layers == A.layer_refs
    assert record.repo_tags == ("example.com/a:1", "example.com/a:2")


@pytest.mark.parametrize(
    ("tag", "digest"),
    [
        pytest.param("example.com/a", None, id="tag-without-tag"),
        pytest.param("example.com/a:1@sha256:" + "0" * 64, None, id="tag-with-digest"),
        pytest.param(None, "example.com/a:1", id="digest-without-digest"),
        pytest.param(None, "example.com/a@sha256:123", id="digest-invalid"),
    ],
)
@pytest.mark.anyio
async def test_repo_tag_and_digest_shapes_are_checked(
    store: Store, tag: str | None, digest: str | None
) -> None:
    await pull(store, A, tag="example.com/a:1")
    with pytest.raises(InvalidImageNameError):
        await store.commit_image(
            A.manifest_digest, A.config_digest, A.layer_refs,
            repo_tag=tag, repo_digest=digest, platform="linux/amd64",
        )  # fmt: skip


@pytest.mark.anyio
async def test_a_tag_moves_to_the_newer_image(store: Store) -> None:
    old = await pull(
        store,
        A,
        tag="example.com/app:latest",
        repo_digest="example.com/app@" + str(A.manifest_digest),
    )
    new = await pull(
        store,
        B,
        tag="example.com/app:latest",
        repo_digest="example.com/app@" + str(B.manifest_digest),
    )
    assert await store.lookup("example.com/app:latest") == new
    moved = await store.lookup(old.image_id)
    assert moved is not None
    assert moved.repo_tags == ()  # dangling, still present (as containerd keeps it)
    assert moved.repo_digests == (f"example.com/app@{A.manifest_digest}",)
    assert {r.image_id for r in await store.list_images()} == {A.image_id, B.image_id}


@pytest.mark.anyio
async def test_recommit_keeps_first_used_and_pin(store: Store, clock: Clock) -> None:
    first = await pull(store, A, tag="example.com/a:1")
    await store.pin(A.image_id)
    clock.advance(100)
    again = await pull(store, A, tag="example.com/a:2")
    assert again.first_used == first.first_used
    assert again.last_used == first.last_used + 100
    assert again.pinned
    assert again.repo_tags == ("example.com/a:1", "example.com/a:2")


@pytest.mark.anyio
async def test_shared_layers_are_downloaded_and_stored_once(store: Store) -> None:
    calls: list[Digest] = []
    await pull(store, A, tag="example.com/a:1", calls=calls)
    await pull(store, B, tag="example.com/b:1", calls=calls)
    shared = Digest.from_bytes(SHARED)
    assert calls.count(shared) == 1
    assert len(calls) == len(A.blobs) + len(B.blobs) - 1
    files = sorted(p.name for p in (store.root / "blobs" / "sha256").iterdir())
    assert files == sorted({d.hex for d in [*A.blobs, *B.blobs]})
    refcounts = await store.blob_refcounts()
    assert refcounts[str(shared)] == 2
    assert sum(refcounts.values()) == len(A.blobs) + len(B.blobs)
    assert await store.usage() == A.size + B.size - len(SHARED)


@pytest.mark.anyio
async def test_remove_frees_only_unshared_blobs(store: Store) -> None:
    await pull(store, A, tag="example.com/a:1")
    await pull(store, B, tag="example.com/b:1")
    shared = Digest.from_bytes(SHARED)
    assert await store.remove("example.com/a:1")
    assert await store.lookup("example.com/a:1") is None
    assert await store.has_blob(shared)
    for digest in A.blobs:
        if digest != shared:
            assert not await store.has_blob(digest)
            assert not store.layout.path(digest).exists()
    assert (await store.blob_refcounts())[str(shared)] == 1
    assert await store.usage() == B.size
    assert await store.remove(B.image_id)
    assert await store.blob_refcounts() == {}
    assert list((store.root / "blobs" / "sha256").iterdir()) == []
    assert await store.usage() == 0
    assert not await store.remove(B.image_id)


@pytest.mark.anyio
async def test_an_image_in_use_cannot_be_removed(store: Store) -> None:
    await pull(store, A, tag="example.com/a:1")
    await store.mark_in_use(A.image_id)
    await store.mark_in_use(A.image_id)
    assert store.in_use() == {(A.image_id, ""): 2}
    with pytest.raises(StoreError, match="in use by 2 running"):
        await store.remove("example.com/a:1")
    store.release(A.image_id)
    with pytest.raises(StoreError, match="in use by 1 running"):
        await store.remove("example.com/a:1")
    store.release(A.image_id)
    assert store.in_use() == {}
    assert await store.remove("example.com/a:1")
    with pytest.raises(StoreError, match="not present"):
        await store.mark_in_use(A.image_id)


@pytest.mark.anyio
async def test_a_lease_protects_blobs_between_download_and_commit(store: Store) -> None:
    await pull(store, A, tag="example.com/a:1")
    async with store.lease():
        for digest, data in B.blobs.items():  # the shared layer is found present
            await store.ensure_blob(digest, len(data), fetch_bytes(data))
        assert await store.remove("example.com/a:1")  # a concurrent rmi of the other image
        assert await store.has_blob(Digest.from_bytes(SHARED))
        record = await store.commit_image(
            B.manifest_digest, B.config_digest, B.layer_refs,
            repo_tag="example.com/b:1", repo_digest=None, platform="linux/amd64",
        )  # fmt: skip
    await assert_whole(store, record)


@pytest.mark.anyio
async def test_without_a_lease_a_removal_can_take_a_shared_blob(store: Store) -> None:
    await pull(store, A, tag="example.com/a:1")
    for digest, data in B.blobs.items():
        await store.ensure_blob(digest, len(data), fetch_bytes(data))
    await store.remove("example.com/a:1")
    with pytest.raises(StoreError, match="not in the store"):
        await store.commit_image(
            B.manifest_digest, B.config_digest, B.layer_refs,
            repo_tag="example.com/b:1", repo_digest=None, platform="linux/amd64",
        )  # fmt: skip


@pytest.mark.anyio
async def test_prune_blobs_frees_old_unreferenced_blobs_not_held(
    store: Store, clock: Clock
) -> None:
    old = await store.put_blob(b"left over by a failed pull")
    async with store.lease():
        held = await store.put_blob(b"held by a pull in progress")
        clock.advance(10)
        young = await store.put_blob(b"just downloaded")
        pruned, freed = await store.prune_blobs(clock.now - 5)
    assert pruned == (str(old.digest),)
    assert freed == old.size
    assert not await store.has_blob(old.digest)
    assert await store.has_blob(young.digest)
    assert await store.has_blob(held.digest)
    pruned, _ = await store.prune_blobs(clock.now - 5)  # the lease is over
    assert pruned == (str(held.digest),)


@pytest.mark.anyio
async def test_pin_and_touch(store: Store, clock: Clock) -> None:
    record = await pull(store, A, tag="example.com/a:1")
    assert await store.pin("example.com/a:1")
    assert (await store.lookup(A.image_id)).pinned  # type: ignore[union-attr]
    assert await store.pin(A.image_id, pinned=False)
    assert not (await store.lookup(A.image_id)).pinned  # type: ignore[union-attr]
    assert not await store.pin("example.com/nope:1")
    assert await store.touch(A.image_id, record.last_used + 50)
    assert await store.touch(A.image_id, record.last_used + 10)  # never moves back
    assert (await store.lookup(A.image_id)).last_used == record.last_used + 50  # type: ignore[union-attr]
    assert not await store.touch(B.image_id)


@pytest.mark.anyio
async def test_inspect_shows_roles_refcounts_and_use(store: Store) -> None:
    await pull(store, A, tag="example.com/a:1")
    await pull(store, B, tag="example.com/b:1")
    await store.mark_in_use(B.image_id)
    found = await store.inspect("example.com/b:1")
    assert found is not None
    roles = {digest: (role, count) for digest, role, count in found.blobs}
    assert roles[str(B.manifest_digest)] == ("manifest", 1)
    assert roles[str(B.config_digest)] == ("config", 1)
    assert roles[str(Digest.from_bytes(SHARED))] == ("layer", 2)
    assert found.in_use == 1
    assert await store.inspect("example.com/c:1") is None


# -- RuntimeClassInImageCriApi -----------------------------------------------------------------


@pytest.mark.anyio
async def test_with_the_gate_an_image_is_present_per_runtime_handler(gated: Store) -> None:
    kata = await pull(gated, A, tag="example.com/a:1", handler="kata")
    assert kata.runtime_handler == "kata"
    assert await gated.lookup("example.com/a:1", "kata") == kata
    assert await gated.lookup("example.com/a:1") is None
    assert await gated.lookup(A.image_id, "runc") is None
    default = await pull(gated, A, tag="example.com/a:1")
    assert default.runtime_handler == ""
    assert await gated.lookup("example.com/a:1") == default
    assert len(await gated.list_images()) == 2
    assert await gated.list_images("kata") == [kata]
    # One copy of each blob, referenced by both keys.
    assert set((await gated.blob_refcounts()).values()) == {2}
    assert await gated.remove("example.com/a:1", "kata")
    assert await gated.lookup("example.com/a:1", "kata") is None
    assert await gated.lookup("example.com/a:1") == default
    await assert_whole(gated, default)


@pytest.mark.anyio
async def test_without_the_gate_the_handler_is_ignored(store: Store) -> None:
    record = await pull(store, A, tag="example.com/a:1", handler="kata")
    assert record.runtime_handler == ""
    assert await store.lookup("example.com/a:1", "runc") == record
    assert await store.lookup("example.com/a:1") == record


@pytest.mark.anyio
async def test_a_blob_ref_size_must_be_sane() -> None:
    with pytest.raises(StoreError, match="non-negative"):
        BlobRef(Digest.from_bytes(b""), -1)


@pytest.mark.anyio
async def test_cached_lookups_follow_every_write(store: Store) -> None:
    """Lookups are answered from memory until the next write: a tag that moves, a removal, a
    pin and a fsck repair must all show at once."""
    assert await store.lookup("example.com/app:1") is None
    await pull(store, A, tag="example.com/app:1")
    first = await store.lookup("example.com/app:1")
    assert first is not None
    assert first.image_id == A.image_id
    assert await store.lookup("example.com/app:1") is first  # served from the cache
    await pull(store, B, tag="example.com/app:1")
    moved = await store.lookup("example.com/app:1")
    assert moved is not None
    assert moved.image_id == B.image_id
    assert await store.pin("example.com/app:1")
    pinned = await store.lookup("example.com/app:1")
    assert pinned is not None
    assert pinned.pinned
    assert await store.pin("example.com/app:1", pinned=False)
    assert await store.remove("example.com/app:1")
    assert await store.lookup("example.com/app:1") is None


def same_config_other_manifest(image: FakeImage, seed: str) -> FakeImage:
    """Another manifest for ``image``'s config: e.g. its layers recompressed, or two OCI
    artifacts sharing the empty config."""
    layers = (blob_bytes(seed, 12_000),)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": image.image_id, "size": len(image.config)},
            "layers": [{"digest": str(Digest.from_bytes(b)), "size": len(b)} for b in layers],
            "annotations": {"seed": seed},
        },
        sort_keys=True,
    ).encode()
    return FakeImage(layers, image.config, manifest)


@pytest.mark.anyio
async def test_two_manifests_never_share_one_record(store: Store) -> None:
    twin = same_config_other_manifest(A, "twin")
    assert twin.image_id == A.image_id
    assert twin.manifest_digest != A.manifest_digest
    await pull(store, A, tag="example.com/a:1", repo_digest=f"example.com/a@{A.manifest_digest}")
    with capture_logs() as logs:
        record = await pull(
            store, twin, tag="example.com/b:1", repo_digest=f"example.com/b@{twin.manifest_digest}"
        )
    assert record.manifest_digest == twin.manifest_digest
    assert record.layers == twin.layer_refs
    # The names that resolved to A's manifest no longer name this record, which is twin's.
    assert record.repo_tags == ("example.com/b:1",)
    assert record.repo_digests == (f"example.com/b@{twin.manifest_digest}",)
    assert await store.lookup("example.com/a:1") is None
    assert await store.lookup(f"example.com/a@{A.manifest_digest}") is None
    assert [e["old_manifest"] for e in logs if e["event"] == "image manifest replaced"] == [
        str(A.manifest_digest)
    ]
    # Pulling A again takes the record back, and only A's names.
    again = await pull(store, A, tag="example.com/a:1")
    assert again.manifest_digest == A.manifest_digest
    assert again.repo_tags == ("example.com/a:1",)
    assert await store.lookup("example.com/b:1") is None
    await assert_whole(store, again)
