"""Resumable partial downloads (ingests) and the free-space check before a download starts."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import anyio
import pytest
from store_fakes import blob_bytes, downloading, fetch_bytes, waiters
from structlog.testing import capture_logs

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.sinks import BlobSink
from kubelet_sim.errors import DigestMismatchError, StoreFullError
from kubelet_sim.store import FLUSH_BYTES, GCPolicy, Store, blobs, fsck, garbage_collect
from kubelet_sim.store import ingest as ingests

pytestmark = pytest.mark.anyio

DATA = blob_bytes("ingest", FLUSH_BYTES + 300_000)
DIGEST = Digest.from_bytes(DATA)


class Interrupted(Exception):
    """The download broke off (a transport failure, as far as the store is concerned)."""


def fetch_until(
    stop_at: int,
    *,
    offsets: list[int] | None = None,
    data: bytes = DATA,
    chunk: int = 256 << 10,
    tick: Callable[[], None] = lambda: None,
) -> Callable[[BlobSink], Awaitable[None]]:
    """A fetch of ``data`` that, like the registry client, goes on from ``sink.written`` (noted in
    ``offsets``) in writes of at most ``chunk`` bytes, calling ``tick`` after each, and breaks off
    at ``stop_at`` (never, when ``stop_at`` is past the end)."""
    digest = Digest.from_bytes(data)

    async def fetch(sink: BlobSink) -> None:
        if offsets is not None:
            offsets.append(sink.written)
        position = sink.written
        while position < len(data):
            if position >= stop_at:
                raise Interrupted(f"connection reset at byte {position}")
            end = min(len(data), position + chunk, max(stop_at, position + 1))
            await sink.write(data[position:end])
            position = end
            tick()
        await sink.commit(digest, len(data))

    return fetch


def ingest_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "tmp").iterdir())


async def test_an_interrupted_download_resumes_after_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with await Store.open(root) as store:
        with pytest.raises(Interrupted):
            await store.ensure_blob(
                DIGEST, len(DATA), fetch_until(FLUSH_BYTES + 100), resumable=True
            )
        assert not await store.has_blob(DIGEST)
    # The store closed (a restart): the ingest stays, as containerd's do.
    data_file, record_file = ingests.paths(root / "tmp", DIGEST)
    assert ingest_files(root) == sorted([data_file.name, record_file.name])
    assert json.loads(record_file.read_text())["offset"] == FLUSH_BYTES
    async with await Store.open(root) as store:
        assert store.recovery is not None
        assert store.recovery.partial_ingests == (f"tmp/{data_file.name}",)
        assert store.recovery.temp_files == ()
        assert store.recovery.clean
        offsets: list[int] = []
        await store.ensure_blob(
            DIGEST, len(DATA), fetch_until(len(DATA), offsets=offsets), resumable=True
        )
        assert offsets == [FLUSH_BYTES]  # went on from the verified prefix: a Range request
        assert await store.read_blob(DIGEST) == DATA
        assert ingest_files(root) == []
        assert (await fsck(store)).clean


async def test_a_failed_attempt_is_resumed_by_the_next_in_the_same_process(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "root") as store:
        with pytest.raises(Interrupted):
            await store.ensure_blob(DIGEST, len(DATA), fetch_until(FLUSH_BYTES + 5), resumable=True)
        offsets: list[int] = []
        await store.ensure_blob(
            DIGEST, len(DATA), fetch_until(len(DATA), offsets=offsets), resumable=True
        )
        assert offsets == [FLUSH_BYTES]


BIG = blob_bytes("ingest-big", 6 * FLUSH_BYTES + 1000)
BIG_DIGEST = Digest.from_bytes(BIG)


def big_until(
    stop_at: int, tick: Callable[[], None] = lambda: None, offsets: list[int] | None = None
) -> Callable[[BlobSink], Awaitable[None]]:
    """:func:`fetch_until` of ``BIG`` in flush-sized writes."""
    return fetch_until(stop_at, offsets=offsets, data=BIG, chunk=FLUSH_BYTES, tick=tick)


def recorded_offset(root: Path, digest: Digest) -> int:
    _, record_file = ingests.paths(root / "tmp", digest)
    return int(json.loads(record_file.read_text())["offset"])


def recorded(root: Path) -> int:
    """The MiB the record of ``BIG``'s ingest vouches for, rounded up."""
    return -(-recorded_offset(root, BIG_DIGEST) // FLUSH_BYTES)


def frozen_clock(monkeypatch: pytest.MonkeyPatch, start: float = 1000.0) -> list[float]:
    """The writers' monotonic clock, fixed at ``start`` until the test moves it (the event loop
    keeps the real one)."""
    now = [start]
    monkeypatch.setattr(blobs, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


async def test_progress_is_recorded_at_the_first_flush_then_every_record_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A flush a MiB without a rename a MiB: after its first, a writer records only every
    # RECORD_BYTES (made small here) or RECORD_SECONDS (the clock stands still here).
    frozen_clock(monkeypatch)
    monkeypatch.setattr(blobs, "RECORD_BYTES", 3 * FLUSH_BYTES)
    root = tmp_path / "root"
    seen: list[int] = []
    async with await Store.open(root) as store:
        fetch = big_until(len(BIG), lambda: seen.append(recorded(root)))
        await store.ensure_blob(BIG_DIGEST, len(BIG), fetch, resumable=True)
        assert await store.read_blob(BIG_DIGEST, max_size=len(BIG)) == BIG
    assert seen == [1, 1, 1, 4, 4, 4, 4]  # MiB vouched for after each MiB written
    assert ingest_files(root) == []


async def test_progress_is_recorded_once_a_second_whatever_the_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = frozen_clock(monkeypatch)
    root = tmp_path / "root"
    seen: list[int] = []

    def slow_link() -> None:  # every flush-sized write takes 0.4 s
        seen.append(recorded(root))
        now[0] += 0.4

    async with await Store.open(root) as store:
        fetch = big_until(len(BIG), slow_link)
        await store.ensure_blob(BIG_DIGEST, len(BIG), fetch, resumable=True)
    # At the first flush (t = 0 s, 1 MiB), then at the first a second later (t = 1.2 s, 4 MiB);
    # 2.0 s is too soon after, and the last, partial MiB is written by the commit itself.
    assert seen == [1, 1, 1, 4, 4, 4, 4]


async def test_an_interrupted_download_records_where_it_stopped_and_resumes_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen_clock(monkeypatch)  # no record due by time: only the first, at 1 MiB
    root = tmp_path / "root"
    data_file, _ = ingests.paths(root / "tmp", BIG_DIGEST)
    async with await Store.open(root) as store:
        fetch = big_until(3 * FLUSH_BYTES)
        with pytest.raises(Interrupted):
            await store.ensure_blob(BIG_DIGEST, len(BIG), fetch, resumable=True)
        assert recorded_offset(root, BIG_DIGEST) == 3 * FLUSH_BYTES  # recorded when it broke off
        # What a crash leaves: bytes after the last record, which a resume cuts off.
        with data_file.open("ab") as f:
            f.write(b"not vouched for")
        offsets: list[int] = []
        fetch_rest = big_until(len(BIG), offsets=offsets)
        await store.ensure_blob(BIG_DIGEST, len(BIG), fetch_rest, resumable=True)
        assert offsets == [3 * FLUSH_BYTES]
        assert await store.read_blob(BIG_DIGEST, max_size=len(BIG)) == BIG
        assert ingest_files(root) == []


async def test_a_waiter_taking_over_a_cancelled_download_resumes_what_it_left(
    tmp_path: Path,
) -> None:
    # The waiter looked the blob up before the leader had written anything: taking over, it
    # must look for the leader's ingest again rather than trust that first look.
    offsets: list[int] = []
    go, flushed = anyio.Event(), anyio.Event()

    async def leader_fetch(sink: BlobSink) -> None:
        await go.wait()
        await sink.write(DATA[:FLUSH_BYTES])  # one flush: recorded
        flushed.set()
        await anyio.sleep_forever()

    waiter_fetch = fetch_until(len(DATA), offsets=offsets)

    async with await Store.open(tmp_path / "root") as store:
        async with anyio.create_task_group() as tg:
            leader = anyio.CancelScope()

            async def lead() -> None:
                with leader:
                    await store.ensure_blob(DIGEST, len(DATA), leader_fetch, resumable=True)

            tg.start_soon(lead)
            await downloading(store, DIGEST)
            tg.start_soon(
                partial(store.ensure_blob, resumable=True), DIGEST, len(DATA), waiter_fetch
            )
            await waiters(store, DIGEST, 1)  # it looked before any ingest was there
            go.set()
            await flushed.wait()
            leader.cancel()
        assert offsets == [FLUSH_BYTES]
        assert await store.read_blob(DIGEST) == DATA
        assert ingest_files(tmp_path / "root") == []


async def test_a_small_layer_written_in_one_flush_leaves_no_record_to_remove(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Written whole by the commit, it never recorded progress: no worker call to remove a record
    # afterwards (only the one that clears a stale ingest before the first write).
    removed: list[tuple[str, ...]] = []
    real = ingests.discard

    def discard(*files: Path) -> None:
        removed.append(tuple(f.name for f in files))
        real(*files)

    monkeypatch.setattr(ingests, "discard", discard)
    root = tmp_path / "root"
    small = blob_bytes("one-flush", 4096)
    digest = Digest.from_bytes(small)
    data_file, record_file = ingests.paths(root / "tmp", digest)
    async with await Store.open(root) as store:
        await store.ensure_blob(digest, len(small), fetch_bytes(small), resumable=True)
        assert await store.read_blob(digest) == small
        assert ingest_files(root) == []
    assert removed == [(data_file.name, record_file.name)]


async def test_a_corrupt_prefix_is_discarded_and_the_download_starts_over(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with await Store.open(root) as store:
        with pytest.raises(Interrupted):
            await store.ensure_blob(DIGEST, len(DATA), fetch_until(FLUSH_BYTES + 5), resumable=True)
    data_file, _ = ingests.paths(root / "tmp", DIGEST)
    damaged = bytearray(data_file.read_bytes())
    damaged[1000] ^= 0xFF
    data_file.write_bytes(bytes(damaged))
    async with await Store.open(root) as store:
        offsets: list[int] = []
        with capture_logs() as logs:
            await store.ensure_blob(
                DIGEST, len(DATA), fetch_until(len(DATA), offsets=offsets), resumable=True
            )
        assert offsets == [0]
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["ingest.discarded"]
        assert await store.read_blob(DIGEST) == DATA


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param("no-record", id="record-missing"),
        pytest.param("short", id="data-shorter-than-record"),
        pytest.param("other-size", id="record-for-another-size"),
    ],
)
async def test_an_ingest_that_does_not_check_out_is_not_resumed(
    tmp_path: Path, damage: str
) -> None:
    root = tmp_path / "root"
    async with await Store.open(root) as store:
        with pytest.raises(Interrupted):
            await store.ensure_blob(DIGEST, len(DATA), fetch_until(FLUSH_BYTES + 5), resumable=True)
        data_file, record_file = ingests.paths(root / "tmp", DIGEST)
        if damage == "no-record":
            record_file.unlink()
        elif damage == "short":
            with data_file.open("r+b") as f:
                f.truncate(1000)
        else:
            doc = json.loads(record_file.read_text())
            record_file.write_text(json.dumps({**doc, "size": len(DATA) + 1}))
        offsets: list[int] = []
        await store.ensure_blob(
            DIGEST, len(DATA), fetch_until(len(DATA), offsets=offsets), resumable=True
        )
        assert offsets == [0]
        assert await store.read_blob(DIGEST) == DATA
        assert ingest_files(root) == []


async def test_wrong_content_keeps_no_ingest(tmp_path: Path) -> None:
    root = tmp_path / "root"
    wrong = Digest.from_bytes(b"something else entirely")
    async with await Store.open(root) as store:
        with pytest.raises(DigestMismatchError):
            await store.ensure_blob(
                wrong, len(DATA), fetch_bytes(DATA, digest=wrong), resumable=True
            )
        assert ingest_files(root) == []


async def test_stale_ingests_and_those_of_committed_blobs_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    other = blob_bytes("other", FLUSH_BYTES + 10)
    async with await Store.open(root) as store:
        for data in (DATA, other):
            digest = Digest.from_bytes(data)
            writer = store.blob_writer(digest, len(data), resumable=True)
            await writer.resume()
            await writer.write(data[: FLUSH_BYTES + 1])
            await writer.abort()
        await store.put_blob(other)  # committed anyway, by a download that did not resume
    old = time.time() - ingests.DEFAULT_EXPIRY - 60
    for path in ingests.paths(root / "tmp", DIGEST):
        os.utime(path, (old, old))
    async with await Store.open(root) as store:
        assert store.recovery is not None
        assert len(store.recovery.temp_files) == 4
        assert store.recovery.partial_ingests == ()
        assert ingest_files(root) == []


async def test_plain_writers_and_a_second_writer_of_one_digest_keep_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with await Store.open(root) as store:
        first = store.blob_writer(DIGEST, len(DATA), resumable=True)
        second = store.blob_writer(DIGEST, len(DATA), resumable=True)  # the ingest is taken
        plain = store.blob_writer(DIGEST, len(DATA))
        assert [w.resumable for w in (first, second, plain)] == [True, False, False]
        for writer in (second, plain):
            await writer.write(DATA[: FLUSH_BYTES + 1])
            await writer.abort()
        assert ingest_files(root) == []
        await first.abort()


# -- the free space --------------------------------------------------------------------------


async def test_a_blob_larger_than_the_free_space_is_refused_before_downloading(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    calls: list[Digest] = []
    async with await Store.open(root, free_space=lambda _: 1 << 20) as store:
        with pytest.raises(StoreFullError) as caught:
            await store.ensure_blob(DIGEST, 1 << 62, fetch_bytes(DATA, calls=calls))
        assert calls == []  # nothing was asked of the registry
        assert str(root) in str(caught.value)
        assert str(DIGEST) in str(caught.value)
        assert ingest_files(root) == []
        small = blob_bytes("small", 1000)
        await store.ensure_blob(Digest.from_bytes(small), len(small), fetch_bytes(small))


async def test_the_free_space_counts_what_an_ingest_already_holds(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with await Store.open(root) as store:
        with pytest.raises(Interrupted):
            await store.ensure_blob(DIGEST, len(DATA), fetch_until(FLUSH_BYTES + 5), resumable=True)
    remaining = len(DATA) - FLUSH_BYTES
    async with await Store.open(root, free_space=lambda _: remaining) as store:
        await store.ensure_blob(DIGEST, len(DATA), fetch_until(len(DATA)), resumable=True)
        assert await store.has_blob(DIGEST)


async def test_gc_removes_stale_ingests_of_a_long_running_store(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with await Store.open(root) as store:
        with pytest.raises(Interrupted):
            await store.ensure_blob(DIGEST, len(DATA), fetch_until(FLUSH_BYTES + 5), resumable=True)
        assert await store.prune_ingests() == []  # fresh: kept for the next attempt
        later = time.time() + ingests.DEFAULT_EXPIRY + 60
        await garbage_collect(store, GCPolicy(capacity_bytes=10 << 30), now=later)
        assert ingest_files(root) == []
