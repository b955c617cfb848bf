"""fsck: corrupt, missing, stray and untracked blobs, temp files, broken references, repair."""

from __future__ import annotations

import importlib
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from store_fakes import assert_whole, blob_bytes, fetch_bytes, make_image, pull

from kubelet_sim.core.digest import Digest
from kubelet_sim.store import FLUSH_BYTES, Store, fsck

SHARED = blob_bytes("shared", 50_000)
A = make_image("a", [SHARED, blob_bytes("a1", 20_000)])
B = make_image("b", [SHARED, blob_bytes("b1", 30_000)])
fsck_module = importlib.import_module("kubelet_sim.store.fsck")  # the package re-exports fsck()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path / "root") as s:
        await pull(s, A, tag="example.com/a:1")
        await pull(s, B, tag="example.com/b:1")
        yield s


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.anyio
async def test_a_clean_store_is_clean(store: Store) -> None:
    report = await fsck(store)
    assert report.clean
    assert not report.changed
    assert report.checked == len(set(A.blobs) | set(B.blobs))
    assert report.rehashed
    assert report.to_dict()["damaged"] is False


@pytest.mark.anyio
async def test_corruption_is_found_quarantined_and_repaired_by_the_next_pull(store: Store) -> None:
    layer = Digest.from_bytes(A.layers[1])
    flip_a_byte(store.layout.path(layer))  # same size: only a re-hash can tell
    report = await fsck(store, repair=False)
    assert report.corrupt == (str(layer),)
    assert report.affected_images == (A.image_id,)
    assert report.damaged
    assert not report.repaired
    assert await store.lookup("example.com/a:1") is not None  # report only: nothing changed
    report = await fsck(store)
    assert report.corrupt == (str(layer),)
    assert report.affected_images == (A.image_id,)
    assert report.repaired
    [quarantined] = report.quarantined
    assert quarantined.startswith(f"quarantine/sha256-{layer.hex}.")
    assert (store.root / quarantined).exists()
    assert not store.layout.path(layer).exists()
    assert not await store.has_blob(layer)
    assert await store.lookup("example.com/a:1") is None  # not present: the next pull repairs it
    assert await store.lookup("example.com/b:1") is not None
    second = await fsck(store)
    assert second.clean, second
    assert second.incomplete_images == (A.image_id,)
    calls: list[Digest] = []
    repaired = await pull(store, A, tag="example.com/a:1", calls=calls)
    assert calls == [layer]
    await assert_whole(store, repaired)
    third = await fsck(store)
    assert third.clean
    assert third.incomplete_images == ()


@pytest.mark.anyio
async def test_a_corrupt_shared_layer_affects_every_image_using_it(store: Store) -> None:
    flip_a_byte(store.layout.path(Digest.from_bytes(SHARED)))
    report = await fsck(store)
    assert report.affected_images == tuple(sorted([A.image_id, B.image_id]))
    assert await store.list_images() == []


@pytest.mark.anyio
async def test_a_missing_blob(store: Store) -> None:
    layer = Digest.from_bytes(B.layers[1])
    store.layout.path(layer).unlink()
    report = await fsck(store)
    assert report.missing == (str(layer),)
    assert report.affected_images == (B.image_id,)
    assert report.damaged
    assert await store.lookup("example.com/b:1") is None
    assert (await fsck(store)).clean


@pytest.mark.anyio
async def test_stray_files_are_quarantined(store: Store) -> None:
    (store.root / "blobs" / "README").write_text("not a blob")
    (store.root / "blobs" / "sha256" / "not-a-digest").write_text("nor this")
    (store.root / "blobs" / "md5").mkdir()
    report = await fsck(store)
    assert report.stray == ("blobs/README", "blobs/md5", "blobs/sha256/not-a-digest")
    assert report.damaged
    assert len(report.quarantined) == 3
    assert not (store.root / "blobs" / "README").exists()
    assert report.affected_images == ()
    assert (await fsck(store)).clean


@pytest.mark.anyio
async def test_temp_files_of_open_writers_are_left_alone(store: Store) -> None:
    (store.layout.tmp / "sha256-dead.beef.part").write_bytes(b"left by a crash")
    data = blob_bytes("writing", FLUSH_BYTES + 1)
    digest = Digest.from_bytes(data)
    writer = store.blob_writer(digest, len(data))
    await writer.write(data[:FLUSH_BYTES])
    report = await fsck(store)
    assert report.temp_files == ("tmp/sha256-dead.beef.part",)
    assert report.clean  # leftovers are cleaned, not damage
    assert writer.temp_path.exists()
    await writer.write(data[FLUSH_BYTES:])
    await writer.commit(digest, len(data))
    assert await store.has_blob(digest)


@pytest.mark.anyio
async def test_untracked_blobs_are_adopted_and_unreferenced_ones_reported(store: Store) -> None:
    orphan = await store.put_blob(b"downloaded, never committed into an image")
    untracked = b"renamed into place, then the process died"
    path = store.layout.path(Digest.from_bytes(untracked))
    path.write_bytes(untracked)
    report = await fsck(store)
    assert report.untracked == (str(Digest.from_bytes(untracked)),)
    assert set(report.unreferenced) == {str(orphan.digest)}
    assert report.clean
    assert await store.has_blob(Digest.from_bytes(untracked))
    again = await fsck(store)
    assert set(again.unreferenced) == {str(orphan.digest), str(Digest.from_bytes(untracked))}


@pytest.mark.anyio
async def test_a_broken_reference_in_the_database(store: Store) -> None:
    def drop_a_reference(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM image_blobs WHERE digest = ?", (str(A.manifest_digest),))

    await store.db.run(drop_a_reference)
    report = await fsck(store)
    assert report.database_errors == (
        f"image {A.image_id}: blob {A.manifest_digest} is not referenced",
    )
    assert report.affected_images == (A.image_id,)
    assert await store.lookup("example.com/a:1") is None
    await pull(store, A, tag="example.com/a:1")  # re-commit writes the references again
    assert (await fsck(store)).clean


@pytest.mark.anyio
async def test_quick_mode_checks_sizes_only(store: Store) -> None:
    layer = Digest.from_bytes(A.layers[1])
    flip_a_byte(store.layout.path(layer))
    assert (await fsck(store, rehash=False)).clean  # same size: invisible without a re-hash
    with store.layout.path(layer).open("ab") as f:
        f.write(b"!")
    report = await fsck(store, rehash=False)
    assert report.corrupt == (str(layer),)
    assert not report.rehashed


@pytest.mark.anyio
async def test_fsck_next_to_pulls_and_removals_breaks_nothing(tmp_path: Path) -> None:
    rng = random.Random(7)
    pool = [blob_bytes(f"pool{i}", 20_000 + i) for i in range(4)]
    images = [
        make_image(f"img{i}", [*rng.sample(pool, 2), blob_bytes(i, 5_000)]) for i in range(12)
    ]
    async with await Store.open(tmp_path / "root") as store:

        async def worker(chunk: list[int]) -> None:
            for i in chunk:
                await pull(store, images[i], tag=f"example.com/img:{i}")
                if i % 3 == 0:
                    await store.remove(f"example.com/img:{i}")

        async def checker() -> None:
            for _ in range(5):
                report = await fsck(store)
                assert not report.corrupt, report
                assert not report.missing, report
                assert not report.affected_images, report

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker, list(range(0, 12, 2)))
            tg.start_soon(worker, list(range(1, 12, 2)))
            tg.start_soon(checker)
        final = await fsck(store)
        assert final.clean, final
        present = await store.list_images()
        assert {r.repo_tags[0] for r in present} == {
            f"example.com/img:{i}" for i in range(12) if i % 3
        }
        for record in present:
            await assert_whole(store, record)


@pytest.mark.anyio
async def test_a_blob_replaced_while_fsck_hashed_it_is_not_quarantined(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsck hashes outside the lock and re-checks each finding under it before acting."""
    layer = Digest.from_bytes(A.layers[1])
    flip_a_byte(store.layout.path(layer))
    original = fsck_module._hash_ok

    async def hash_then_repair(path: Path, digest: str, size: int) -> bool:
        ok: bool = await original(path, digest, size)
        if digest == str(layer):  # meanwhile a removal frees it and a pull fetches it anew
            await store.remove("example.com/a:1")
            await store.ensure_blob(layer, len(A.layers[1]), fetch_bytes(A.layers[1]))
        return ok

    monkeypatch.setattr(fsck_module, "_hash_ok", hash_then_repair)
    report = await fsck(store)
    assert report.corrupt == ()
    assert report.quarantined == ()
    assert await store.read_blob(layer) == A.layers[1]
    monkeypatch.undo()
    assert (await fsck(store)).clean
