"""Blob writer (BlobSink), single-flight ensure_blob, disk full, and event-loop responsiveness."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from store_fakes import blob_bytes, downloading, fetch_bytes, make_image, pull, waiters

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.sinks import BlobSink
from kubelet_sim.errors import (
    BlobCorruptError,
    DigestMismatchError,
    InvalidDigestError,
    RegistryTransportError,
    StoreError,
    StoreFullError,
)
from kubelet_sim.store import FLUSH_BYTES, Store, blobs, fsck
from kubelet_sim.store.blobs import BlobWriter, WritableFile, WriterState


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The store is anyio-only: run these on both backends."""
    return str(request.param)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path / "root") as s:
        yield s


def temp_files(store: Store) -> list[Path]:
    return list(store.layout.tmp.iterdir())


# -- the writer ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_commit_makes_the_blob_visible_and_removes_the_temp_file(store: Store) -> None:
    data = blob_bytes("a", FLUSH_BYTES * 2 + 12345)  # crosses the flush size twice
    digest = Digest.from_bytes(data)
    writer = store.blob_writer(digest, len(data))
    assert not await store.has_blob(digest)
    for start in range(0, len(data), 65536):
        await writer.write(data[start : start + 65536])
        assert not await store.has_blob(digest) or start + 65536 >= len(data)
    assert writer.written == len(data)
    await writer.commit(digest, len(data))
    assert writer.committed
    assert await store.has_blob(digest)
    assert store.layout.path(digest).read_bytes() == data
    assert store.layout.path(digest) == store.root / "blobs" / "sha256" / digest.hex
    assert temp_files(store) == []
    with await store.open_blob(digest) as f:
        assert f.read() == data
    assert await store.blob_size(digest) == len(data)


@pytest.mark.anyio
async def test_writeback_is_started_every_writeback_bytes_before_the_commits_fsync(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # So that the fsync at the commit finds little left to write; the commit still fsyncs.
    started: list[tuple[int, int]] = []
    real = blobs.start_writeback

    def start(fd: int, offset: int, length: int) -> None:
        started.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(blobs, "start_writeback", start)
    data = blob_bytes("written-back", 2 * blobs.WRITEBACK_BYTES + 3 * FLUSH_BYTES + 17)
    digest = Digest.from_bytes(data)
    await store.ensure_blob(digest, len(data), fetch_bytes(data, chunk=FLUSH_BYTES))
    step = blobs.WRITEBACK_BYTES
    assert started == [(0, step), (step, step)]  # the rest is the commit's fsync
    assert await store.read_blob(digest, max_size=len(data)) == data


def test_without_ctypes_writeback_is_simply_not_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ctypes", None)  # "import ctypes" fails, as without it
    blobs._sync_file_range.cache_clear()
    try:
        assert blobs._sync_file_range() is None
        with (tmp_path / "f").open("wb") as f:
            blobs.start_writeback(f.fileno(), 0, 1)
    finally:
        blobs._sync_file_range.cache_clear()


def test_start_writeback_takes_a_real_file(tmp_path: Path) -> None:
    with (tmp_path / "f").open("wb") as f:
        f.write(b"x" * 10_000)
        f.flush()
        blobs.start_writeback(f.fileno(), 0, 10_000)  # no error: only a head start
    assert (blobs._sync_file_range() is not None) == sys.platform.startswith("linux")


@pytest.mark.anyio
async def test_partial_write_is_never_visible(store: Store) -> None:
    data = blob_bytes("p", FLUSH_BYTES + 10)
    digest = Digest.from_bytes(data)
    writer = store.blob_writer(digest, len(data))
    await writer.write(data[: FLUSH_BYTES + 5])  # flushed to the temp file
    assert [p.name for p in temp_files(store)] == [writer.temp_path.name]
    assert writer.temp_path.parent == store.root / "tmp"
    assert not await store.has_blob(digest)
    assert not store.layout.path(digest).exists()
    await writer.abort()
    assert temp_files(store) == []


@pytest.mark.parametrize(
    ("content", "declared_size", "commit_digest"),
    [
        pytest.param(b"hello", 5, Digest.from_bytes(b"other"), id="wrong-digest"),
        pytest.param(b"hell", 5, Digest.from_bytes(b"hello"), id="short"),
        pytest.param(b"hello", 5, Digest.from_bytes(b"hello", "sha512"), id="other-algorithm"),
    ],
)
@pytest.mark.anyio
async def test_commit_verifies_size_then_digest_and_keeps_nothing(
    store: Store, content: bytes, declared_size: int, commit_digest: Digest
) -> None:
    digest = Digest.from_bytes(b"hello")
    writer = store.blob_writer(digest, declared_size)
    await writer.write(content)
    with pytest.raises(DigestMismatchError):
        await writer.commit(commit_digest, declared_size)
    assert writer.state is WriterState.ABORTED
    assert not await store.has_blob(digest)
    assert not await store.has_blob(commit_digest)
    assert temp_files(store) == []


@pytest.mark.anyio
async def test_write_beyond_the_declared_size_is_refused(store: Store) -> None:
    writer = store.blob_writer(Digest.from_bytes(b"abc"), 3)
    await writer.write(b"ab")
    with pytest.raises(DigestMismatchError, match="more than 3 bytes"):
        await writer.write(b"cd")
    assert writer.written == 2
    await writer.abort()


@pytest.mark.anyio
async def test_reset_restarts_from_zero(store: Store) -> None:
    data = blob_bytes("r", FLUSH_BYTES + 100)
    digest = Digest.from_bytes(data)
    writer = store.blob_writer(digest, len(data))
    await writer.write(b"garbage" * (FLUSH_BYTES // 7 + 1))  # on disk already
    await writer.reset()
    assert writer.written == 0
    await writer.write(data)
    await writer.commit(digest, len(data))
    assert store.layout.path(digest).read_bytes() == data


@pytest.mark.anyio
async def test_abort_is_idempotent_and_harmless_after_commit(store: Store) -> None:
    digest = Digest.from_bytes(b"x")
    writer = store.blob_writer(digest, 1)
    await writer.write(b"x")
    await writer.commit(digest, 1)
    await writer.abort()
    await writer.abort()
    assert writer.committed
    assert await store.has_blob(digest)
    with pytest.raises(StoreError, match="committed"):
        await writer.write(b"y")


@pytest.mark.anyio
async def test_empty_blob(store: Store) -> None:
    digest = Digest.from_bytes(b"")
    writer = store.blob_writer(digest, 0)
    await writer.commit(digest, 0)
    assert await store.read_blob(digest) == b""


@pytest.mark.parametrize(
    "digest",
    [
        pytest.param(Digest("sha256", "../../../etc/passwd"), id="traversal"),
        pytest.param(Digest("sha256", "A" * 64), id="uppercase"),
        pytest.param(Digest("md5", "0" * 32), id="unsupported-algorithm"),
        pytest.param(Digest("sha256", "0" * 63), id="short-hex"),
    ],
)
@pytest.mark.anyio
async def test_a_digest_is_validated_before_it_becomes_a_path(store: Store, digest: Digest) -> None:
    with pytest.raises(InvalidDigestError):
        store.blob_writer(digest, 1)
    with pytest.raises(InvalidDigestError):
        await store.has_blob(digest)
    assert temp_files(store) == []


@pytest.mark.anyio
async def test_read_blob_detects_corruption(store: Store) -> None:
    ref = await store.put_blob(b'{"config": true}')
    path = store.layout.path(ref.digest)
    path.write_bytes(b'{"config": fals}')
    with pytest.raises(BlobCorruptError, match=str(ref.digest)):
        await store.read_blob(ref.digest)
    with pytest.raises(StoreError, match="not in the store"):
        await store.read_blob(Digest.from_bytes(b"absent"))
    with pytest.raises(StoreError, match="more than 3"):
        await store.read_blob(ref.digest, max_size=3)


# -- ensure_blob: single flight --------------------------------------------------------------


@pytest.mark.anyio
async def test_ensure_blob_returns_at_once_when_committed(store: Store) -> None:
    data = b"present"
    await store.put_blob(data)
    calls: list[Digest] = []
    await store.ensure_blob(Digest.from_bytes(data), len(data), fetch_bytes(data, calls=calls))
    assert calls == []


@pytest.mark.anyio
async def test_concurrent_ensures_download_once_and_share_the_result(store: Store) -> None:
    data = blob_bytes("shared", 300_000)
    digest = Digest.from_bytes(data)
    calls: list[Digest] = []
    gate = anyio.Event()

    async def slow_fetch(sink: BlobSink) -> None:
        calls.append(digest)
        await gate.wait()
        await fetch_bytes(data)(sink)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(store.ensure_blob, digest, len(data), slow_fetch)
        await waiters(store, digest, 4)
        gate.set()
    assert calls == [digest]
    assert store.layout.path(digest).read_bytes() == data
    assert store.inflight() == {}


@pytest.mark.anyio
async def test_waiters_get_the_same_failure(store: Store) -> None:
    digest = Digest.from_bytes(b"never")
    failure = RegistryTransportError("connection reset")
    gate = anyio.Event()
    calls = 0
    errors: list[BaseException] = []

    async def failing_fetch(sink: BlobSink) -> None:
        nonlocal calls
        calls += 1
        await sink.write(b"nev")
        await gate.wait()
        raise failure

    async def one() -> None:
        try:
            await store.ensure_blob(digest, 5, failing_fetch)
        except RegistryTransportError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
        await waiters(store, digest, 2)
        gate.set()
    assert calls == 1
    assert len(errors) == 3
    assert all(e is failure for e in errors)
    assert temp_files(store) == []
    assert not await store.has_blob(digest)


@pytest.mark.anyio
async def test_a_cancelled_download_is_taken_over_by_a_waiter(store: Store) -> None:
    data = b"take over"
    digest = Digest.from_bytes(data)
    calls = 0
    first_started = anyio.Event()

    async def fetch(sink: BlobSink) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await sink.write(data[:3])
            first_started.set()
            await anyio.sleep_forever()
        await fetch_bytes(data)(sink)

    async with anyio.create_task_group() as tg:
        leader = anyio.CancelScope()

        async def lead() -> None:
            with leader:
                await store.ensure_blob(digest, len(data), fetch)

        tg.start_soon(lead)
        await first_started.wait()
        tg.start_soon(store.ensure_blob, digest, len(data), fetch)
        await waiters(store, digest, 1)
        leader.cancel()
    assert calls == 2
    assert await store.read_blob(digest) == data
    assert temp_files(store) == []


@pytest.mark.anyio
async def test_a_blob_in_flight_is_protected_and_a_waiters_lease_holds_it(store: Store) -> None:
    """GC must not free a blob being downloaded, nor one a waiter's pull shares afterwards."""
    data = b"protected while downloading"
    digest = Digest.from_bytes(data)
    gate = anyio.Event()
    waiter_done = anyio.Event()
    release_lease = anyio.Event()

    async def slow_fetch(sink: BlobSink) -> None:
        await gate.wait()
        await fetch_bytes(data)(sink)

    async def waiter() -> None:
        async with store.lease():
            await store.ensure_blob(digest, len(data), slow_fetch)
            waiter_done.set()
            await release_lease.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(store.ensure_blob, digest, len(data), slow_fetch)  # leads, no lease
        await downloading(store, digest)
        tg.start_soon(waiter)
        await waiters(store, digest, 1)
        protected = await anyio.to_thread.run_sync(store.protected)  # as GC's thread sees it
        assert str(digest) in protected
        gate.set()
        await waiter_done.wait()
        assert store.inflight() == {}
        assert str(digest) in store.protected()  # held by the waiter's lease, not the flight
        release_lease.set()
    assert str(digest) not in store.protected()


@pytest.mark.anyio
async def test_a_waiter_with_another_size_is_told_after_the_shared_download(store: Store) -> None:
    data = b"four"
    digest = Digest.from_bytes(data)
    gate = anyio.Event()
    calls: list[Digest] = []

    async def slow_fetch(sink: BlobSink) -> None:
        await gate.wait()
        await fetch_bytes(data, calls=calls)(sink)

    errors: list[DigestMismatchError] = []

    async def wrong_size() -> None:
        try:
            await store.ensure_blob(digest, 5, slow_fetch)
        except DigestMismatchError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(store.ensure_blob, digest, len(data), slow_fetch)
        await downloading(store, digest)
        tg.start_soon(wrong_size)
        await waiters(store, digest, 1)
        gate.set()
    assert calls == [digest]
    assert [str(e) for e in errors] == [
        f"blob {digest} failed verification: expected size 5, got size 4 in the store"
    ]


@pytest.mark.anyio
async def test_fetch_that_does_not_commit_is_an_error(store: Store) -> None:
    async def lazy(sink: BlobSink) -> None:
        await sink.write(b"abc")

    with pytest.raises(StoreError, match="without committing"):
        await store.ensure_blob(Digest.from_bytes(b"abc"), 3, lazy)
    assert temp_files(store) == []


@pytest.mark.anyio
async def test_ensure_blob_refuses_a_size_that_contradicts_the_store(store: Store) -> None:
    ref = await store.put_blob(b"four")
    with pytest.raises(DigestMismatchError, match="size 5"):
        await store.ensure_blob(ref.digest, 5, fetch_bytes(b"four"))


# -- disk full ---------------------------------------------------------------------------------


class SizeLimitedFile:
    """A real file that raises ENOSPC once the shared budget is spent (a full filesystem)."""

    def __init__(self, path: Path, budget: list[int]) -> None:
        self._f = open(path, "xb")  # noqa: SIM115 - closed through close()
        self._budget = budget

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        if len(data) > self._budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget[0] -= len(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def fileno(self) -> int:
        return self._f.fileno()

    def seek(self, offset: int, whence: int = 0, /) -> int:
        return self._f.seek(offset, whence)

    def truncate(self, size: int | None = None, /) -> int:
        return self._f.truncate(size)

    def close(self) -> None:
        self._f.close()


@pytest.mark.anyio
async def test_disk_full_fails_the_pull_cleanly(tmp_path: Path) -> None:
    budget = [FLUSH_BYTES + 1000]

    def opener(path: Path) -> WritableFile:
        return SizeLimitedFile(path, budget)

    big = blob_bytes("big", 3 * FLUSH_BYTES)
    image = make_image("full", [blob_bytes("small", 500), big])
    async with await Store.open(tmp_path / "root", opener=opener) as store:
        with pytest.raises(StoreFullError, match="no space left") as caught:
            await pull(store, image, tag="example.com/full:1")
        assert str(Digest.from_bytes(big)) in str(caught.value)
        assert temp_files(store) == []
        assert not await store.has_blob(Digest.from_bytes(big))
        assert await store.lookup("example.com/full:1") is None
        assert await store.list_images(include_absent=True) == []
        report = await fsck(store)
        assert report.clean, report
        budget[0] = 10 * FLUSH_BYTES  # space freed: the next pull works and resumes nothing
        record = await pull(store, image, tag="example.com/full:1")
        assert await store.lookup("example.com/full:1") == record


@pytest.mark.anyio
async def test_metadata_database_full_fails_cleanly(store: Store) -> None:
    def cap(conn: object) -> None:
        import sqlite3

        assert isinstance(conn, sqlite3.Connection)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    await store.db.run(cap)

    async def fill() -> None:
        for i in range(10_000):
            await store.put_blob(f"blob number {i}".encode())

    with pytest.raises(StoreFullError, match="database is full"):
        await fill()
    assert temp_files(store) == []
    refcounts = await store.blob_refcounts()
    on_disk = {f"sha256:{p.name}" for p in (store.root / "blobs" / "sha256").iterdir()}
    assert on_disk == set(refcounts)  # the blob whose row did not fit is not on disk either
    report = await fsck(store, repair=False)
    assert report.clean, report


@pytest.mark.anyio
async def test_real_full_tmpfs_fails_the_pull_cleanly(tiny_tmpfs: Path) -> None:
    image = make_image("tmpfs", [blob_bytes("fits", 100_000), blob_bytes("too-big", 2 << 20)])
    async with await Store.open(tiny_tmpfs / "root") as store:
        with pytest.raises(StoreFullError):
            await pull(store, image, tag="example.com/tmpfs:1")
        assert temp_files(store) == []
        assert await store.list_images(include_absent=True) == []
        report = await fsck(store)
        assert report.clean, report
        small = make_image("small", [blob_bytes("fits", 100_000)])
        await pull(store, small, tag="example.com/small:1")
    async with await Store.open(tiny_tmpfs / "root") as store:
        assert store.recovery is not None
        assert store.recovery.clean
        assert [r.repo_tags for r in await store.list_images()] == [("example.com/small:1",)]


# -- the event loop stays responsive -----------------------------------------------------------


async def max_loop_gap_while_writing(store: Store, size: int, chunk: int = 64 << 10) -> float:
    """The longest the event loop went without running a 1 ms ticker while writing a blob."""
    data = os.urandom(size)
    digest = Digest.from_bytes(data)
    gaps: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        last = anyio.current_time()
        while not done.is_set():
            await anyio.sleep(0.001)
            now = anyio.current_time()
            gaps.append(now - last)
            last = now

    async def write() -> None:
        try:
            await store.ensure_blob(digest, size, fetch_bytes(data, chunk=chunk, digest=digest))
        finally:
            done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        tg.start_soon(write)
    assert await store.has_blob(digest)
    return max(gaps)


@pytest.mark.anyio
async def test_writing_a_big_blob_does_not_stall_the_event_loop(store: Store) -> None:
    gap = await max_loop_gap_while_writing(store, 64 << 20)
    # Hashing, writing and fsync happen in worker threads; the loop only queues chunks. A
    # blocking implementation stalls it for the whole hash + write + fsync (about 300 ms for
    # 64 MiB on a quiet machine; benchmarks/store_loop_latency.py measures both at 256 MiB).
    # The bound is generous because this runs on real time: a loaded CI machine can delay a
    # ready task by tens of milliseconds without any blocking call.
    assert gap < 0.25, f"event loop stalled for {gap * 1000:.1f} ms"


# -- group commit ------------------------------------------------------------------------------


async def _written(store: Store, names: list[str]) -> list[tuple[Digest, bytes, BlobWriter]]:
    """One writer per name, its bytes written, not yet committed."""
    out = []
    for name in names:
        data = blob_bytes(name, 1000 + len(name))
        digest = Digest.from_bytes(data)
        writer = store.blob_writer(digest, len(data))
        await writer.write(data)
        out.append((digest, data, writer))
    return out


async def _until_waiting(store: Store, n: int) -> None:
    with anyio.fail_after(10):
        while len(store._publications) < n:  # noqa: ASYNC110 - nothing signals the queue
            await anyio.sleep(0.001)


@pytest.mark.anyio
async def test_blobs_committed_at_once_go_in_one_transaction(store: Store) -> None:
    groups: list[str] = []
    real_run = store.db.run

    async def counting_run(fn: Any, *, what: str = "store", readonly: bool = False) -> Any:
        if what.startswith("committing"):
            groups.append(what)
        return await real_run(fn, what=what, readonly=readonly)

    store.db.run = counting_run  # type: ignore[method-assign]
    blobs = await _written(store, [f"group-{i}" for i in range(20)])
    async with store.lease():
        # A commit under way (the lock held): the others line up behind it.
        async with anyio.create_task_group() as tg, store._publishing:
            for digest, data, writer in blobs:
                tg.start_soon(writer.commit, digest, len(data))
            await _until_waiting(store, 20)
        assert groups == ["committing 20 blobs"]
        for digest, data, _ in blobs:
            assert store.layout.path(digest).read_bytes() == data
            assert await store.blob_size(digest) == len(data)
            assert str(digest) in store.protected()  # held by the lease its own task runs in
    assert temp_files(store) == []
    assert (await fsck(store, repair=False)).clean


@pytest.mark.anyio
async def test_a_blob_that_cannot_be_renamed_fails_alone_in_its_group(store: Store) -> None:
    blobs = await _written(store, ["kept-a", "lost", "kept-b"])
    outcomes: dict[str, BaseException | None] = {}

    async def commit(digest: Digest, size: int, writer: BlobWriter) -> None:
        try:
            await writer.commit(digest, size)
            outcomes[str(digest)] = None
        except StoreError as exc:
            outcomes[str(digest)] = exc

    lost = blobs[1]
    async with anyio.create_task_group() as tg, store._publishing:
        for digest, data, writer in blobs:
            tg.start_soon(commit, digest, len(data), writer)
        await _until_waiting(store, 3)
        os.unlink(lost[2].temp_path)  # vanished between its fsync and its rename
    failed = outcomes[str(lost[0])]
    assert isinstance(failed, StoreError)
    assert f"committing blob {lost[0]}" in str(failed)
    assert not await store.has_blob(lost[0])
    for digest, data, _ in (blobs[0], blobs[2]):
        assert outcomes[str(digest)] is None
        assert store.layout.path(digest).read_bytes() == data
    assert temp_files(store) == []
    assert (await fsck(store, repair=False)).clean


@pytest.mark.anyio
async def test_a_commit_cancelled_before_its_group_runs_never_happens(store: Store) -> None:
    ((digest, data, writer),) = await _written(store, ["cancelled"])
    release = anyio.Event()

    async def a_commit_under_way() -> None:
        async with store._publishing:
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(a_commit_under_way)
        with anyio.move_on_after(0.05):
            await writer.commit(digest, len(data))
        assert store._publications == []
        release.set()
    assert not await store.has_blob(digest)
    assert temp_files(store) == []
    ((again, again_data, fresh),) = await _written(store, ["cancelled"])
    await fresh.commit(again, len(again_data))  # the next attempt commits normally
    assert await store.has_blob(again)


@pytest.mark.anyio
async def test_a_commit_cancelled_once_its_group_has_it_waits_for_the_group(store: Store) -> None:
    """Pod A's layer is in a group waiting for the database when A is cancelled: A leaves only
    once the group has committed it, so B (sharing the download) cannot take over and resume an
    ingest that is about to be renamed into the store (found in review: the row said 2,097,929
    bytes, the file had 2,097,152)."""
    data = blob_bytes("layer", FLUSH_BYTES * 2 + 777)
    digest = Digest.from_bytes(data)
    other = blob_bytes("config", 1000)

    async def fetch_a(sink: BlobSink) -> None:
        for i in range(0, len(data), 65536):
            await sink.write(data[i : i + 65536])
        await sink.commit(digest, len(data))

    async def fetch_b(sink: BlobSink) -> None:  # B takes over A's cancelled download
        assert sink.written in (0, len(data))  # never a half of what A's group renamed away
        await fetch_a(sink) if sink.written == 0 else await sink.commit(digest, len(data))

    db_free, db_held = anyio.Event(), anyio.Event()

    async def a_database_call_in_flight() -> None:
        async with store.db._lock:
            db_held.set()
            await db_free.wait()

    results: dict[str, str] = {}
    a_scope = anyio.CancelScope()

    async def pod_a() -> None:
        with a_scope:
            await store.ensure_blob(digest, len(data), fetch_a, resumable=True)
        results["a"] = "cancelled" if a_scope.cancelled_caught else "ok"

    async def pod_b() -> None:
        await store.ensure_blob(digest, len(data), fetch_b, resumable=True)
        results["b"] = "ok"

    async with anyio.create_task_group() as tg:
        async with store._publishing:  # a group under way: the next ones line up
            tg.start_soon(store.put_blob, other)  # the next group's leader
            await _until_waiting(store, 1)
            tg.start_soon(pod_a)
            await _until_waiting(store, 2)
            tg.start_soon(pod_b)
            with anyio.fail_after(10):
                while store.inflight().get(str(digest)) != 1:  # noqa: ASYNC110 - polled
                    await anyio.sleep(0.001)
            tg.start_soon(a_database_call_in_flight)
            await db_held.wait()
        with anyio.fail_after(10):
            while store._publications:  # noqa: ASYNC110 - the group took both
                await anyio.sleep(0.001)
        a_scope.cancel()  # pod A deleted while its group waits for the database
        await anyio.sleep(0.05)
        assert results == {}  # A waits for its group; B waits for A
        db_free.set()
    assert results == {"a": "cancelled", "b": "ok"}
    assert await store.blob_size(digest) == len(data)
    assert store.layout.path(digest).read_bytes() == data
    assert (await fsck(store, repair=False)).clean
