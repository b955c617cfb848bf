"""The content half of the store: committed blobs, single-flight downloads, leases.

:class:`ContentStore` knows blobs only; :class:`~kubelet_sim.store.store.Store` adds images on
top. A blob is committed when its verified, fsynced file has been renamed into ``blobs/`` and its
row recorded, both in one critical section. Downloads of the same digest are single-flight
(:class:`~kubelet_sim.core.singleflight.SingleFlight`): one task fetches, the others wait and share
its outcome. A :meth:`ContentStore.lease` protects the
blobs a pull has fetched from being freed before the image that references them is committed.

Before a download starts, the blob must fit: a blob larger than the free space of the store's
filesystem (what is left after the part an ingest already holds) is refused at once with
:class:`~kubelet_sim.errors.StoreFullError`, instead of being streamed until the disk is full.
Resumable downloads (layers) continue the ingest an earlier attempt or process left behind.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.to_thread
import structlog

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.singleflight import SingleFlight
from kubelet_sim.core.sinks import BlobSink
from kubelet_sim.errors import BlobCorruptError, DigestMismatchError, StoreError, StoreFullError
from kubelet_sim.store import catalog, ingest
from kubelet_sim.store.blobs import BlobLayout, BlobWriter, FileOpener, fsync_dir, io_error
from kubelet_sim.store.db import Database, FreeSpace, free_bytes, transaction
from kubelet_sim.store.records import BlobRef

log = structlog.get_logger(__name__)


PUBLISH_GROUP = 256
"""Most blobs committed in one transaction."""


@dataclass(slots=True, eq=False)
class _Publication:
    """A verified blob waiting for its group commit, then its outcome."""

    temp: Path
    digest: Digest
    size: int
    done: bool = False
    error: StoreError | None = None
    group: anyio.Event | None = None
    """Set while a group has it; the group's end sets the event."""


@dataclass(frozen=True, slots=True)
class _Look:
    """What one lookup before a download found: the committed size (None: not committed) and,
    when not committed, the filesystem's free bytes and whether an ingest of the digest is on
    disk. One worker call: three (the catalogue, ``statvfs``, the ingest) were three thread hops
    for every blob of every pull."""

    size: int | None
    free: int = 0
    ingest: bool = False


def _committed_size(conn: sqlite3.Connection, digest: Digest, path: Path) -> int | None:
    """The catalogue's size of ``digest`` if its file at ``path`` is there too; blocking."""
    row = conn.execute("SELECT size FROM blobs WHERE digest = ?", (str(digest),)).fetchone()
    return int(row[0]) if row is not None and path.exists() else None


@dataclass(slots=True)
class _Lease:
    store: ContentStore
    digests: set[str] = field(default_factory=set)


_LEASE: contextvars.ContextVar[_Lease | None] = contextvars.ContextVar("store_lease", default=None)


class ContentStore:
    """Committed blobs under one root, with their rows in the store's database."""

    def __init__(
        self,
        layout: BlobLayout,
        db: Database,
        *,
        clock: Callable[[], float],
        opener: FileOpener,
        free_space: FreeSpace = free_bytes,
        ingest_expiry: float = ingest.DEFAULT_EXPIRY,
    ) -> None:
        self._layout = layout
        self._db = db
        self._clock = clock
        self._opener = opener
        self._free_space = free_space
        self.ingest_expiry = ingest_expiry
        self._downloads: SingleFlight[str, None] = SingleFlight()
        self._holds: Counter[str] = Counter()
        self._writers: set[BlobWriter] = set()
        self._ingesting: set[str] = set()  # digests whose ingest a writer of ours has open
        self._publications: list[_Publication] = []  # waiting for a group commit
        self._publishing = anyio.Lock()

    @property
    def root(self) -> Path:
        """The store root folder."""
        return self._layout.root

    @property
    def layout(self) -> BlobLayout:
        """Paths under the root."""
        return self._layout

    @property
    def db(self) -> Database:
        """The catalogue database (for fsck and GC)."""
        return self._db

    @property
    def read_only(self) -> bool:
        """True when opened to read only: no blob can be written, nothing is changed."""
        return self._db.read_only

    def now(self) -> float:
        """The injected wall clock."""
        return self._clock()

    async def free_space(self) -> int:
        """Bytes still free on the store's filesystem (the injected ``free_space``)."""
        try:
            return await anyio.to_thread.run_sync(self._free_space, self._layout.root)
        except OSError as exc:
            raise io_error(exc, "measuring free space", folder=self._layout.root) from exc

    async def has_blob(self, digest: Digest) -> bool:
        """True when ``digest`` is committed and its file is there."""
        return await self.blob_size(digest) is not None

    async def blob_size(self, digest: Digest) -> int | None:
        """The committed size of ``digest``, or None when it is not in the store."""
        path = self._layout.path(digest)
        return await self._db.run(
            lambda conn: _committed_size(conn, digest, path),
            what=f"looking up blob {digest}",
            readonly=True,
        )

    async def open_blob(self, digest: Digest) -> BinaryIO:
        """Open a committed blob for reading; the caller closes it.

        Raises:
            StoreError: the blob is not in the store.
        """
        if not await self.has_blob(digest):
            raise StoreError(f"blob {digest} is not in the store")
        path = self._layout.path(digest)
        try:
            return await anyio.to_thread.run_sync(path.open, "rb")
        except OSError as exc:
            raise io_error(exc, f"opening blob {digest}") from exc

    async def read_blob(self, digest: Digest, *, max_size: int = 16 << 20) -> bytes:
        """Read a small committed blob whole, verifying its digest.

        Raises:
            StoreError: not in the store, or larger than ``max_size``.
            BlobCorruptError: the content no longer matches the digest (run fsck).
        """
        size = await self.blob_size(digest)
        if size is None:
            raise StoreError(f"blob {digest} is not in the store")
        if size > max_size:
            raise StoreError(f"blob {digest} is {size} bytes, more than {max_size} to read whole")
        path = self._layout.path(digest)

        def read() -> tuple[bytes, bool]:
            data = path.read_bytes()
            return data, len(data) == size and Digest.from_bytes(data, digest.algorithm) == digest

        try:
            data, whole = await anyio.to_thread.run_sync(read)
        except OSError as exc:
            raise io_error(exc, f"reading blob {digest}") from exc
        if not whole:
            raise BlobCorruptError(f"blob {digest} is corrupt on disk (run fsck)")
        return data

    def blob_writer(self, digest: Digest, size: int, *, resumable: bool = False) -> BlobWriter:
        """A sink for one blob; its temp file lives in ``<root>/tmp/`` until commit or abort.

        A ``resumable`` writer uses the digest's ingest (call :meth:`BlobWriter.resume` before
        writing) and keeps it when aborted; while another writer of ours has that ingest open,
        the new one writes a plain temp file.

        Raises:
            StoreError: the store is open read-only.
        """
        if self.read_only:
            raise StoreError(f"writing blob {digest}: the store {self.root} is open read-only")
        resumable = resumable and str(digest) not in self._ingesting
        writer = BlobWriter(
            self._layout,
            digest,
            size,
            publish=self._publish,
            opener=self._opener,
            on_close=self._writer_closed,
            resumable=resumable,
        )
        self._writers.add(writer)
        if resumable:
            self._ingesting.add(str(digest))
        return writer

    def _writer_closed(self, writer: BlobWriter) -> None:
        self._writers.discard(writer)
        if writer.resumable:
            self._ingesting.discard(str(writer.digest))

    async def _publish(self, temp: Path, digest: Digest, size: int) -> None:
        """Rename a verified, fsynced temp file into place and record it, atomically.

        Group commit: a blob that arrives while others are being committed waits for them, then
        goes with every blob that arrived meanwhile in one transaction (one WAL sync) and one
        fsync per folder (the first carries the journal for the others). Many pulls at once paid
        two syncs per blob, one blob after another under the database's one lock. Each blob
        keeps its own outcome: a rename that fails fails that blob alone. A commit cancelled
        while still in line never happens; once its group has it, its owner waits for the
        group's outcome (as a commit that had started always finished), so no file is renamed
        after its writer has been given up.
        """
        mine = _Publication(temp, digest, size)
        self._publications.append(mine)
        try:
            while not mine.done:
                if mine.group is not None:  # another task commits the group that has it
                    await mine.group.wait()
                    continue
                async with self._publishing:
                    if mine.group is None and not mine.done:
                        await self._publish_next()
        except BaseException:
            group = mine.group
            if group is not None:
                with anyio.CancelScope(shield=True):
                    await group.wait()
            if not mine.done:  # still in line (or back in it): it never happens
                with contextlib.suppress(ValueError):
                    self._publications.remove(mine)
            elif mine.error is None:
                self._hold(str(digest))  # committed all the same: its lease holds it
            raise
        if mine.error is not None:
            raise mine.error
        self._hold(str(digest))
        log.debug("blob committed", digest=str(digest), size=size)

    async def _publish_next(self) -> None:
        """Commit the next group of publications in line (the caller holds the lock)."""
        batch = self._publications[:PUBLISH_GROUP]
        del self._publications[:PUBLISH_GROUP]
        group = anyio.Event()
        for p in batch:
            p.group = group
        try:
            await self._publish_group(batch)
        finally:
            # A group that never ran (cancelled before the database took it, or the store
            # closed) goes back in line, first, for its owners to try again.
            unrun = [p for p in batch if not p.done]
            for p in unrun:
                p.group = None
            self._publications[:0] = unrun
            group.set()

    async def _publish_group(self, group: list[_Publication]) -> None:
        """Commit ``group`` in one transaction; sets each one's outcome once it is final."""
        layout, root, now = self._layout, self.root, self._clock()
        ran = False

        def work(conn: sqlite3.Connection) -> None:
            nonlocal ran
            ran = True
            digests = sorted({str(p.digest) for p in group})
            marks = ", ".join("?" * len(digests))
            existed = {
                row[0]
                for row in conn.execute(
                    f"SELECT digest FROM blobs WHERE digest IN ({marks})",  # noqa: S608 - marks
                    digests,
                )
            }
            renamed: dict[Path, str] = {}
            try:
                with transaction(conn):
                    for p in group:
                        final = layout.path(p.digest)
                        conn.execute("SAVEPOINT blob")
                        conn.execute(
                            "INSERT INTO blobs VALUES (?, ?, ?) ON CONFLICT (digest) DO UPDATE "
                            "SET size = excluded.size, committed_at = excluded.committed_at",
                            (str(p.digest), p.size, now),
                        )
                        try:
                            final.parent.mkdir(mode=0o700, exist_ok=True)
                            os.replace(p.temp, final)
                        except OSError as exc:
                            conn.execute("ROLLBACK TO blob")
                            p.error = io_error(exc, f"committing blob {p.digest}", folder=root)
                        else:
                            renamed[final] = str(p.digest)
                        conn.execute("RELEASE blob")
                    for folder in {final.parent for final in renamed}:
                        fsync_dir(folder)
            except BaseException:
                for final, digest in renamed.items():
                    if digest not in existed:
                        final.unlink(missing_ok=True)
                raise

        try:
            await self._db.run(work, what=f"committing {len(group)} blobs")
        except (OSError, StoreError) as exc:
            if not ran:
                raise
            for p in group:  # the transaction was rolled back: every blob of it failed
                if isinstance(exc, OSError):
                    p.error = io_error(exc, f"committing blob {p.digest}", folder=root)
                else:
                    p.error = exc
        if ran:
            for p in group:
                p.done = True

    async def put_blob(self, data: bytes, digest: Digest | None = None) -> BlobRef:
        """Store in-memory content (a manifest, a config); verified against ``digest`` if given."""
        digest = digest or Digest.from_bytes(data)

        async def fetch(sink: BlobSink) -> None:
            await sink.write(data)
            await sink.commit(digest, len(data))

        await self.ensure_blob(digest, len(data), fetch)
        return BlobRef(digest, len(data))

    async def ensure_blob(
        self,
        digest: Digest,
        size: int,
        fetch: Callable[[BlobSink], Awaitable[None]],
        *,
        resumable: bool = False,
    ) -> None:
        """Make ``digest`` present, downloading it at most once however many tasks ask.

        Returns at once when the blob is committed. When another task is fetching it, waits and
        shares the outcome: the same exception is raised here when that fetch failed; if it was
        cancelled, this task tries itself. Otherwise calls ``fetch(writer)``, which streams into
        the writer and commits it; the writer is aborted on any error, cancellation included.
        With ``resumable`` the writer starts at :attr:`BlobWriter.written` (an earlier attempt's
        ingest) and ``fetch`` must continue from there (the registry client's ``fetch_blob``
        does, with a ``Range`` request).

        Raises:
            StoreError: ``fetch`` returned without committing, or the store failed.
            StoreFullError: the blob does not fit in the free space, or the disk is full.
        """
        key = str(digest)
        while True:
            # Nobody downloaded it while it was looked up, nor does now: this task leads at
            # once with what it saw. Otherwise a leader may have stopped meanwhile (or may stop
            # while this task waits, which then takes over) and left an ingest: look again.
            idle = key not in self._downloads
            look = await self._look(digest, size)
            if look.size is not None:
                return
            now = idle and key not in self._downloads
            outcome = await self._downloads.run_shared(
                key, partial(self._download, digest, size, fetch, resumable, look if now else None)
            )
            if not outcome.shared:
                return  # this task committed it (and its lease holds it)
            # Another task committed it: look it up, so this task's lease holds it too.

    async def _look(self, digest: Digest, size: int) -> _Look:
        """Whether ``digest`` is committed (then held by the current lease) with ``size``; if
        not, the free space and whether an ingest of it is on disk.

        Raises:
            DigestMismatchError: the store has it with another size.
            StoreError: the catalogue or the free space could not be read.
        """
        path = self._layout.path(digest)
        data, _ = ingest.paths(self._layout.tmp, digest)
        root = self._layout.root

        def work(conn: sqlite3.Connection) -> _Look:
            committed = _committed_size(conn, digest, path)
            if committed is not None:
                return _Look(committed)
            return _Look(None, self._free_space(root), data.exists())

        try:
            look = await self._db.run(work, what=f"looking up blob {digest}", readonly=True)
        except OSError as exc:  # statvfs
            raise io_error(exc, "measuring free space", folder=root) from exc
        if look.size is not None:
            self._hold(str(digest))
            if look.size != size:
                raise DigestMismatchError(
                    f"size {size}", f"size {look.size} in the store", what=f"blob {digest}"
                )
        return look

    async def _download(
        self,
        digest: Digest,
        size: int,
        fetch: Callable[[BlobSink], Awaitable[None]],
        resumable: bool,
        look: _Look | None,
    ) -> None:
        """One download into a writer (the single-flight's function); aborted on failure.

        ``look`` is the lookup that found the blob missing just before: its free space, and
        whether there is an ingest to resume (none: no thread hop to look for one). Without it
        (a take-over from a cancelled leader, whose ingest may be there now) both are measured.
        """
        writer = self.blob_writer(digest, size, resumable=resumable)
        try:
            if look is None:
                offset = await writer.resume()
                free = await self.free_space()
            else:
                offset = await writer.resume() if look.ingest else 0
                free = look.free
            if size - offset > free:
                raise StoreFullError(
                    f"store {self.root} is full: blob {digest} needs {size - offset} more bytes, "
                    f"its filesystem has {free} free; refused before downloading"
                )
            await fetch(writer)
            if not writer.committed:
                raise StoreError(f"fetching blob {digest} returned without committing it")
        finally:
            await writer.abort()

    def inflight(self) -> dict[str, int]:
        """Digests being downloaded right now, with how many other tasks wait for each."""
        return self._downloads.waiters()

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[None]:
        """Protect the blobs this task (and its children) commit or ensure until the block ends.

        Wrap a pull (blobs, then :meth:`commit_image`) in it so that a concurrent removal or GC
        cannot free a shared blob between its download and the image commit.
        """
        current = _LEASE.get()
        if current is not None and current.store is self:
            yield
            return
        lease = _Lease(self)
        token = _LEASE.set(lease)
        try:
            yield
        finally:
            _LEASE.reset(token)
            for digest in lease.digests:
                self._holds[digest] -= 1
                if self._holds[digest] <= 0:
                    del self._holds[digest]

    def _hold(self, digest: str) -> None:
        lease = _LEASE.get()
        if lease is not None and lease.store is self and digest not in lease.digests:
            lease.digests.add(digest)
            self._holds[digest] += 1

    def protected(self) -> frozenset[str]:
        """Blobs no removal may free now: held by a lease or being downloaded.

        Called from the catalogue's worker thread too: ``dict.copy`` is atomic under the GIL,
        iterating a dict the event loop may be changing is not.
        """
        return frozenset(dict.copy(self._holds)) | self._downloads.keys()

    def active_temp_files(self) -> frozenset[Path]:
        """Temp files of writers still open (fsck leaves them alone); call it on the loop."""
        return frozenset(path for w in self._writers for path in w.files)

    async def prune_blobs(self, committed_before: float) -> tuple[tuple[str, ...], int]:
        """Free committed blobs no image references (and no lease holds); ``(digests, bytes)``."""

        def work(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            candidates = catalog.unreferenced(conn, committed_before)
            with transaction(conn):
                freed = catalog.free_unreferenced(conn, candidates, self.protected())
            catalog.unlink_blobs(self._layout, [d for d, _ in freed])
            return freed

        freed = await self._db.run(work, what="pruning unreferenced blobs")
        return tuple(d for d, _ in freed), sum(s for _, s in freed)

    async def discard_ingests(self, digests: Sequence[Digest]) -> None:
        """Remove the ingests of ``digests`` that no writer of ours has open (downloads nobody
        will resume: their image was refused); one worker call."""
        files = [
            path
            for digest in digests
            if str(digest) not in self._ingesting
            for path in ingest.paths(self._layout.tmp, digest)
        ]
        if not files:
            return
        try:
            await anyio.to_thread.run_sync(lambda: ingest.discard(*files))
        except OSError as exc:
            raise io_error(exc, "removing partial downloads", folder=self.root) from exc

    async def prune_ingests(self, now: float | None = None) -> list[Path]:
        """Remove partial downloads untouched for longer than the expiry, or whose blob got
        committed, except those of writers still open; the files removed."""
        when = self._clock() if now is None else now
        active = self.active_temp_files()
        committed = set(await self.blob_refcounts())
        tmp = self._layout.tmp

        def work() -> list[Path]:
            temps = [p for p in tmp.iterdir() if ingest.digest_of(p) is not None]
            fresh = ingest.keep(temps, committed=committed, now=when, expiry=self.ingest_expiry)
            gone = [p for p in temps if p not in fresh and p not in active]
            ingest.discard(*gone)
            return gone

        try:
            gone = await anyio.to_thread.run_sync(work)
        except OSError as exc:
            raise io_error(exc, "removing stale partial downloads", folder=self.root) from exc
        if gone:
            log.info("ingests pruned", files=len(gone))
        return gone

    async def usage(self) -> int:
        """Bytes of committed blobs in the store."""
        row = await self._db.run(
            lambda conn: conn.execute("SELECT COALESCE(SUM(size), 0) FROM blobs").fetchone(),
            what="measuring usage",
            readonly=True,
        )
        return int(row[0])

    async def blob_refcounts(self) -> dict[str, int]:
        """Every committed blob with the number of images that reference it."""
        return await self._db.run(catalog.refcounts, what="counting references", readonly=True)
