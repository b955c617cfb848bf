"""Opening the store: recovery after a crash, schema migrations, the single-process lock."""

from __future__ import annotations

import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
from store_fakes import Clock, assert_whole, blob_bytes, make_image, pull

from kubelet_sim.core.digest import Digest
from kubelet_sim.errors import StoreError
from kubelet_sim.store import FLUSH_BYTES, CredentialIdentity, Store
from kubelet_sim.store import db as store_db

IMAGE = make_image("open", [blob_bytes("o1", 30_000), blob_bytes("o2", 5_000)])


@pytest.mark.anyio
async def test_a_new_store_has_its_layout_wal_and_private_files(tmp_path: Path) -> None:
    root = tmp_path / "new" / "root"
    async with await Store.open(root) as store:
        assert store.root == root
        for name in ("blobs", "tmp", "quarantine"):
            assert (root / name).is_dir()
        mode = await store.db.run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        assert mode == "wal"
        version = await store.db.run(store_db.schema_version)
        assert version == store_db.SCHEMA_VERSION == 2
        assert store.recovery is not None
        assert store.recovery.clean
        assert not store.recovery.changed
    assert stat.S_IMODE((root / "store.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


@pytest.mark.anyio
async def test_closing_leaves_no_wal_behind(tmp_path: Path) -> None:
    # Closing checkpoints the WAL and removes it and the shared memory: nothing of the store's
    # database but its file stays between two runs.
    root = tmp_path / "root"
    async with await Store.open(root) as store:
        await pull(store, IMAGE, tag="example.com/open:1")
        assert await store.blob_refcounts()
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("store.db")) == ["store.db"]


@pytest.mark.anyio
async def test_only_one_writer_opens_a_store(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "root"):
        with pytest.raises(StoreError, match=r"is in use by pid \d+"):
            await Store.open(tmp_path / "root", lock_timeout=0)
    async with await Store.open(tmp_path / "root", lock_timeout=0):
        pass  # released on close (test_store_access: waiting writers, readers beside them)


@pytest.mark.anyio
async def test_recovery_removes_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with await Store.open(root) as store:
        data = blob_bytes("half", FLUSH_BYTES * 2)
        writer = store.blob_writer(Digest.from_bytes(data), len(data))
        await writer.write(data[:FLUSH_BYTES])
        assert writer.temp_path.exists()
    assert list((root / "tmp").iterdir()) == []  # closing aborts writers still open
    # A killed process leaves the temp file of its write in progress.
    (root / "tmp" / "sha256-abc.0123.part").write_bytes(b"partial")
    async with await Store.open(root) as store:
        assert store.recovery is not None
        assert store.recovery.temp_files == ("tmp/sha256-abc.0123.part",)
        assert store.recovery.clean
        assert list((root / "tmp").iterdir()) == []


@pytest.mark.anyio
async def test_recovery_adopts_a_whole_untracked_blob_and_quarantines_a_bad_one(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    good, bad = b"renamed but not recorded", b"not what the name says"
    good_digest, bad_digest = Digest.from_bytes(good), Digest.from_bytes(b"something else")
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "blobs" / "sha256" / good_digest.hex).write_bytes(good)
    (root / "blobs" / "sha256" / bad_digest.hex).write_bytes(bad)
    async with await Store.open(root) as store:
        assert store.recovery is not None
        assert store.recovery.untracked == (str(good_digest),)
        assert store.recovery.corrupt == (str(bad_digest),)
        assert await store.read_blob(good_digest) == good
        assert not await store.has_blob(bad_digest)
        quarantined = list((root / "quarantine").iterdir())
        assert [p.read_bytes() for p in quarantined] == [bad]


@pytest.mark.anyio
async def test_an_image_with_a_vanished_blob_is_not_present_after_reopen(tmp_path: Path) -> None:
    root, clock = tmp_path / "root", Clock()
    async with await Store.open(root, clock=clock) as store:
        first = await pull(store, IMAGE, tag="example.com/open:1")
        await store.pin("example.com/open:1")
    layer = IMAGE.layer_refs[0].digest
    (root / "blobs" / "sha256" / layer.hex).unlink()
    clock.advance(60)
    async with await Store.open(root, clock=clock) as store:
        assert store.recovery is not None
        assert store.recovery.missing == (str(layer),)
        assert store.recovery.affected_images == (IMAGE.image_id,)
        assert await store.lookup("example.com/open:1") is None
        assert await store.list_images() == []
        [absent] = await store.list_images(include_absent=True)
        assert not absent.present
        # The next pull repairs it: only the missing blob is fetched again.
        calls: list[Digest] = []
        again = await pull(store, IMAGE, tag="example.com/open:1", calls=calls)
        assert calls == [layer]
        assert again.present
        assert again.pinned
        assert again.first_used == first.first_used
        await assert_whole(store, again)


@pytest.mark.anyio
async def test_a_size_changed_blob_is_caught_on_open(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with await Store.open(root) as store:
        await pull(store, IMAGE, tag="example.com/open:1")
    layer = IMAGE.layer_refs[1].digest
    with (root / "blobs" / "sha256" / layer.hex).open("ab") as f:
        f.write(b"appended")
    async with await Store.open(root) as store:
        assert store.recovery is not None
        assert store.recovery.corrupt == (str(layer),)
        assert not store.recovery.clean
        assert await store.lookup("example.com/open:1") is None


@pytest.mark.anyio
async def test_an_interrupted_transaction_is_rolled_back(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with await Store.open(root) as store:
        await pull(store, IMAGE, tag="example.com/open:1")
    # Another connection starts removing the image and never commits (as a killed process).
    conn = sqlite3.connect(root / "store.db", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DELETE FROM images")
    conn.close()  # without COMMIT
    async with await Store.open(root) as store:
        record = await store.lookup("example.com/open:1")
        assert record is not None
        await assert_whole(store, record)


@pytest.mark.anyio
async def test_an_old_schema_is_migrated_keeping_data(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with await Store.open(root) as store:
        await pull(store, IMAGE, tag="example.com/open:1")
    # Make it a version-1 store, from before pull records existed.
    conn = sqlite3.connect(root / "store.db", isolation_level=None)
    conn.execute("DROP TABLE pull_records")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    async with await Store.open(root) as store:
        assert await store.db.run(store_db.schema_version) == 2
        assert await store.lookup("example.com/open:1") is not None
        assert await store.record_pull(IMAGE.image_id, CredentialIdentity.node())


def test_migrations_apply_step_by_step(tmp_path: Path) -> None:
    conn = store_db.connect(tmp_path / "s.db")
    assert store_db.migrate(conn, target=1) == 0
    assert store_db.schema_version(conn) == 1
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "images" in tables
    assert "pull_records" not in tables
    assert store_db.migrate(conn) == 1
    assert store_db.schema_version(conn) == 2
    assert store_db.migrate(conn) == 2  # nothing left to do
    conn.close()


@pytest.mark.anyio
async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with await Store.open(root):
        pass
    conn = sqlite3.connect(root / "store.db", isolation_level=None)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="version 99 is newer"):
        await Store.open(root)
    async with await Store.open(tmp_path / "other"):
        pass  # the failed open released its lock and connection
    shutil.rmtree(root)
