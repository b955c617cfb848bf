"""The node's image store: content-addressed blobs plus a SQLite catalogue, crash-safe.

An image is present only when its manifest, config and every layer blob are committed on disk
and recorded together in one transaction. Blobs are shared between images and freed when the
last image referencing them goes. With ``RuntimeClassInImageCriApi`` an image is keyed by
``(image ID, runtime handler)``; without it the handler is always ``""``.

Blob writes never hold the catalogue lock while hashing or writing; only the final rename and
its row do. Blobs a pull has fetched but not yet referenced are protected from removal for the
length of a :meth:`Store.lease`.
"""

from __future__ import annotations

import contextvars
import fcntl
import os
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

import anyio
import anyio.to_thread
import structlog

from kubelet_sim.digest import Digest
from kubelet_sim.errors import BlobCorruptError, DigestMismatchError, StoreError
from kubelet_sim.sinks import BlobSink
from kubelet_sim.store import catalog, pullrecords
from kubelet_sim.store.blobs import (
    BlobLayout,
    BlobWriter,
    FileOpener,
    default_opener,
    fsync_dir,
    io_error,
)
from kubelet_sim.store.db import Database, transaction
from kubelet_sim.store.records import (
    BlobRef,
    CredentialIdentity,
    ImageKey,
    ImageRecord,
    SizedDigest,
)

if TYPE_CHECKING:
    from kubelet_sim.store.fsck import FsckReport

log = structlog.get_logger(__name__)

DB_NAME = "store.db"
LOCK_NAME = "lock"


@dataclass(slots=True)
class _Flight:
    """One download in progress; waiters share its outcome."""

    done: anyio.Event = field(default_factory=anyio.Event)
    error: Exception | None = None


@dataclass(slots=True)
class _Lease:
    store: Store
    digests: set[str] = field(default_factory=set)


_LEASE: contextvars.ContextVar[_Lease | None] = contextvars.ContextVar("store_lease", default=None)


@dataclass(frozen=True, slots=True)
class Removal:
    """An image removed, and the blobs that went with it."""

    record: ImageRecord
    blobs_freed: tuple[str, ...]
    bytes_freed: int


@dataclass(frozen=True, slots=True)
class ImageInspection:
    """An image with each blob's role and reference count, and its pull records."""

    record: ImageRecord
    blobs: tuple[tuple[str, str, int], ...]  # (digest, role, refcount)
    pull_records: tuple[CredentialIdentity, ...]
    in_use: int


class Store:
    """The local image store rooted at one folder; open it with :meth:`open`."""

    def __init__(
        self,
        layout: BlobLayout,
        db: Database,
        lock_fd: int,
        *,
        runtime_class_in_image_cri_api: bool,
        clock: Callable[[], float],
        opener: FileOpener,
    ) -> None:
        self._layout = layout
        self._db = db
        self._lock_fd = lock_fd
        self.runtime_class_in_image_cri_api = runtime_class_in_image_cri_api
        self._clock = clock
        self._opener = opener
        self._inflight: dict[str, _Flight] = {}
        self._holds: Counter[str] = Counter()
        self._writers: set[BlobWriter] = set()
        self._in_use: Counter[ImageKey] = Counter()
        self.recovery: FsckReport | None = None

    @classmethod
    async def open(
        cls,
        root: Path,
        *,
        runtime_class_in_image_cri_api: bool = False,
        clock: Callable[[], float] = time.time,
        opener: FileOpener = default_opener,
        recover: bool = True,
    ) -> Store:
        """Open (creating if needed) the store at ``root`` and recover from any crash.

        Recovery: SQLite rolls back interrupted transactions, temp files are removed, blob files
        are checked against their rows (size) and images whose blobs are not all there are
        marked not present. Untracked blob files (a crash between rename and commit) are
        re-hashed and adopted or quarantined. ``recover=False`` skips all but SQLite's own
        rollback (for ``fsck --no-repair``, which must look before anything is changed).

        Raises:
            StoreError: another process has the store open, or it cannot be opened.
        """
        layout = BlobLayout(Path(root))
        try:
            await anyio.to_thread.run_sync(layout.create)
            lock_fd = await anyio.to_thread.run_sync(_lock, layout.root / LOCK_NAME)
        except OSError as exc:
            raise io_error(exc, f"opening store {root}") from exc
        try:
            db = await Database.open(layout.root / DB_NAME)
        except BaseException:
            os.close(lock_fd)
            raise
        store = cls(
            layout,
            db,
            lock_fd,
            runtime_class_in_image_cri_api=runtime_class_in_image_cri_api,
            clock=clock,
            opener=opener,
        )
        if not recover:
            return store
        try:
            from kubelet_sim.store.fsck import fsck  # fsck builds on the store's API

            store.recovery = await fsck(store, repair=True, rehash=False)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await store.aclose()
            raise
        if store.recovery.changed:
            level = log.warning if store.recovery.damaged else log.info
            level("store recovered", root=str(root), **store.recovery.summary())
        return store

    async def aclose(self) -> None:
        """Abort writers still open, close the database and release the store."""
        for writer in list(self._writers):
            await writer.abort()
        await self._db.aclose()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.aclose()

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

    def now(self) -> float:
        """The injected wall clock."""
        return self._clock()

    def handler(self, runtime_handler: str) -> str:
        """The handler part of an image key: ``""`` unless RuntimeClassInImageCriApi is on."""
        return runtime_handler if self.runtime_class_in_image_cri_api else ""

    # -- blobs ---------------------------------------------------------------------------

    async def has_blob(self, digest: Digest) -> bool:
        """True when ``digest`` is committed and its file is there."""
        return await self.blob_size(digest) is not None

    async def blob_size(self, digest: Digest) -> int | None:
        """The committed size of ``digest``, or None when it is not in the store."""
        path = self._layout.path(digest)

        def work(conn: sqlite3.Connection) -> int | None:
            row = conn.execute("SELECT size FROM blobs WHERE digest = ?", (str(digest),)).fetchone()
            return int(row[0]) if row is not None and path.exists() else None

        return await self._db.run(work, what=f"looking up blob {digest}")

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
        try:
            data = await anyio.to_thread.run_sync(self._layout.path(digest).read_bytes)
        except OSError as exc:
            raise io_error(exc, f"reading blob {digest}") from exc
        if len(data) != size or Digest.from_bytes(data, digest.algorithm) != digest:
            raise BlobCorruptError(f"blob {digest} is corrupt on disk (run fsck)")
        return data

    def blob_writer(self, digest: Digest, size: int) -> BlobWriter:
        """A sink for one blob; its temp file lives in ``<root>/tmp/`` until commit or abort."""
        writer = BlobWriter(
            self._layout,
            digest,
            size,
            publish=self._publish,
            opener=self._opener,
            on_close=self._writers.discard,
        )
        self._writers.add(writer)
        return writer

    async def _publish(self, temp: Path, digest: Digest, size: int) -> None:
        """Rename a verified, fsynced temp file into place and record it, atomically."""
        final = self._layout.path(digest)
        now = self._clock()

        def work(conn: sqlite3.Connection) -> None:
            existed = conn.execute(
                "SELECT 1 FROM blobs WHERE digest = ?", (str(digest),)
            ).fetchone()
            final.parent.mkdir(mode=0o700, exist_ok=True)
            renamed = False
            try:
                with transaction(conn):
                    conn.execute(
                        "INSERT INTO blobs VALUES (?, ?, ?) ON CONFLICT (digest) DO UPDATE "
                        "SET size = excluded.size, committed_at = excluded.committed_at",
                        (str(digest), size, now),
                    )
                    os.replace(temp, final)
                    renamed = True
                    fsync_dir(final.parent)
            except BaseException:
                if renamed and existed is None:
                    final.unlink(missing_ok=True)
                raise

        try:
            await self._db.run(work, what=f"committing blob {digest}")
        except OSError as exc:
            raise io_error(exc, f"committing blob {digest}") from exc
        self._hold(str(digest))
        log.debug("blob committed", digest=str(digest), size=size)

    async def put_blob(self, data: bytes, digest: Digest | None = None) -> BlobRef:
        """Store in-memory content (a manifest, a config); verified against ``digest`` if given."""
        digest = digest or Digest.from_bytes(data)

        async def fetch(sink: BlobSink) -> None:
            await sink.write(data)
            await sink.commit(digest, len(data))

        await self.ensure_blob(digest, len(data), fetch)
        return BlobRef(digest, len(data))

    async def ensure_blob(
        self, digest: Digest, size: int, fetch: Callable[[BlobSink], Awaitable[None]]
    ) -> None:
        """Make ``digest`` present, downloading it at most once however many tasks ask.

        Returns at once when the blob is committed. When another task is fetching it, waits and
        shares the outcome: the same exception is raised here when that fetch failed; if it was
        cancelled, this task tries itself. Otherwise calls ``fetch(writer)``, which streams into
        the writer and commits it; the writer is aborted on any error, cancellation included.

        Raises:
            StoreError: ``fetch`` returned without committing, or the store failed.
            StoreFullError: the disk is full.
        """
        key = str(digest)
        while True:
            existing = await self.blob_size(digest)
            if existing is not None:
                self._hold(key)
                if existing != size:
                    raise DigestMismatchError(
                        f"size {size}", f"size {existing} in the store", what=f"blob {digest}"
                    )
                return
            flight = self._inflight.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error
        flight = _Flight()
        self._inflight[key] = flight
        writer = self.blob_writer(digest, size)
        try:
            await fetch(writer)
            if not writer.committed:
                raise StoreError(f"fetching blob {digest} returned without committing it")
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            await writer.abort()
            del self._inflight[key]
            flight.done.set()

    def inflight(self) -> frozenset[str]:
        """Digests being downloaded right now."""
        return frozenset(self._inflight)

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
        return frozenset(dict.copy(self._holds)) | frozenset(dict.copy(self._inflight))

    def active_temp_files(self) -> frozenset[Path]:
        """Temp files of writers still open (fsck leaves them alone); call it on the loop."""
        return frozenset(w.temp_path for w in self._writers)

    # -- images --------------------------------------------------------------------------

    async def commit_image(
        self,
        manifest_digest: Digest,
        config_digest: Digest,
        layers: Sequence[SizedDigest | Digest],
        *,
        repo_tag: str | None,
        repo_digest: str | None,
        platform: str,
        runtime_handler: str = "",
        extra_blobs: Sequence[Digest] = (),
    ) -> ImageRecord:
        """Record an image whose blobs are all committed, in one transaction; it is then present.

        The image ID is the config digest. A repo tag or repo digest held by another image of
        the same handler moves to this one (as containerd does). Re-committing an image keeps
        its first-used time and pin.

        Raises:
            StoreError: a referenced blob is not committed (nothing is recorded).
            InvalidImageNameError: ``repo_tag``/``repo_digest`` are not ``name:tag``/``name@digest``.
        """
        key = (str(config_digest), self.handler(runtime_handler))
        blobs = catalog.ImageBlobs(
            manifest=manifest_digest,
            config=config_digest,
            layers=tuple(
                (layer, None) if isinstance(layer, Digest) else (layer.digest, layer.size)
                for layer in layers
            ),
            extras=tuple(extra_blobs),
        )
        tag = None if repo_tag is None else catalog.check_repo_tag(repo_tag)
        rdigest = None if repo_digest is None else catalog.check_repo_digest(repo_digest)
        now = self._clock()

        def work(conn: sqlite3.Connection) -> ImageRecord | None:
            catalog.commit(
                conn,
                self._layout,
                key,
                blobs,
                repo_tag=tag,
                repo_digest=rdigest,
                platform=platform,
                now=now,
            )
            return catalog.load(conn, key)

        record = await self._db.run(work, what=f"committing image {key[0]}")
        assert record is not None
        log.info("image committed", image=record.image_id, tag=repo_tag, handler=key[1])
        return record

    async def lookup(self, ref: str, runtime_handler: str = "") -> ImageRecord | None:
        """The present image ``ref`` names (``name:tag``, ``name@digest``, ``name:tag@digest``
        where the digest wins, or an image ID) for ``runtime_handler``, or None."""
        handler = self.handler(runtime_handler)

        def work(conn: sqlite3.Connection) -> ImageRecord | None:
            key = catalog.resolve(conn, ref, handler)
            return None if key is None else catalog.load(conn, key)

        return await self._db.run(work, what=f"looking up {ref}")

    async def list_images(
        self, runtime_handler: str | None = None, *, include_absent: bool = False
    ) -> list[ImageRecord]:
        """Present images (of one handler, or all); ``include_absent`` adds damaged ones."""
        handler = None if runtime_handler is None else self.handler(runtime_handler)
        return await self._db.run(
            lambda conn: catalog.list_records(conn, handler, include_absent=include_absent),
            what="listing images",
        )

    async def inspect(self, ref: str, runtime_handler: str = "") -> ImageInspection | None:
        """The image ``ref`` names (present or not) with blob refcounts and pull records."""
        handler = self.handler(runtime_handler)

        def work(conn: sqlite3.Connection) -> ImageInspection | None:
            key = catalog.resolve(conn, ref, handler, include_absent=True)
            record = None if key is None else catalog.load(conn, key)
            if key is None or record is None:
                return None
            blobs = tuple(
                (d, role, catalog.refcount(conn, d)) for d, role in catalog.image_blobs(conn, key)
            )
            records = tuple(pullrecords.load(conn, key[0], None))
            return ImageInspection(record, blobs, records, self._in_use.get(key, 0))

        return await self._db.run(work, what=f"inspecting {ref}")

    async def remove(self, ref: str, runtime_handler: str = "") -> bool:
        """Remove the image ``ref`` names with all its tags, freeing blobs nothing else uses.

        Returns:
            False when there is no such image.

        Raises:
            StoreError: a running container uses the image.
        """
        handler = self.handler(runtime_handler)
        key = await self._db.run(
            lambda conn: catalog.resolve(conn, ref, handler, include_absent=True),
            what=f"removing {ref}",
        )
        if key is None:
            return False
        return await self.remove_key(key) is not None

    async def remove_key(self, key: ImageKey, *, for_gc: bool = False) -> Removal | None:
        """Remove one image by key; with ``for_gc`` pinned images are kept too.

        Returns:
            None when the image is gone already, or (``for_gc``) is pinned or in use.

        Raises:
            StoreError: (not ``for_gc``) a running container uses the image.
        """

        def work(conn: sqlite3.Connection) -> Removal | None:
            record = catalog.load(conn, key)
            if record is None:
                return None
            if self._in_use.get(key, 0) > 0:
                if for_gc:
                    return None
                raise StoreError(
                    f"image {record.image_id} is in use by {self._in_use[key]} running container(s)"
                )
            if for_gc and record.pinned:
                return None
            freed = catalog.remove(conn, key, self.protected())
            catalog.unlink_blobs(self._layout, [d for d, _ in freed])
            return Removal(record, tuple(d for d, _ in freed), sum(s for _, s in freed))

        removal = await self._db.run(work, what=f"removing image {key[0]}")
        if removal is not None:
            log.info("image removed", image=key[0], handler=key[1], freed=removal.bytes_freed)
        return removal

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

    async def pin(self, ref: str, pinned: bool = True, runtime_handler: str = "") -> bool:
        """Pin (or unpin) an image so that GC never removes it; False when there is no such image."""
        return await self._update(ref, runtime_handler, "pinned = ?", int(pinned))

    async def touch(
        self, image_id: str, now: float | None = None, runtime_handler: str = ""
    ) -> bool:
        """Set an image's last-used time (default: the clock); False when there is no such image."""
        when = self._clock() if now is None else now
        return await self._update(image_id, runtime_handler, "last_used = MAX(last_used, ?)", when)

    async def _update(self, ref: str, runtime_handler: str, assignment: str, value: object) -> bool:
        handler = self.handler(runtime_handler)

        def work(conn: sqlite3.Connection) -> bool:
            key = catalog.resolve(conn, ref, handler, include_absent=True)
            if key is None:
                return False
            with transaction(conn):
                conn.execute(
                    f"UPDATE images SET {assignment} WHERE image_id = ? AND runtime_handler = ?",  # noqa: S608
                    (value, *key),
                )
            return True

        return await self._db.run(work, what=f"updating {ref}")

    async def mark_in_use(self, image_id: str, runtime_handler: str = "") -> None:
        """Count one more running container using the image; GC and rmi leave it alone.

        Raises:
            StoreError: the image is not present.
        """
        key = (image_id, self.handler(runtime_handler))
        record = await self._db.run(lambda conn: catalog.load(conn, key), what="marking in use")
        if record is None or not record.present:
            raise StoreError(f"image {image_id} is not present, no container can use it")
        self._in_use[key] += 1  # no await since the check: nothing could remove it meanwhile

    def release(self, image_id: str, runtime_handler: str = "") -> None:
        """One container fewer uses the image."""
        key = (image_id, self.handler(runtime_handler))
        if self._in_use[key] <= 1:
            self._in_use.pop(key, None)
        else:
            self._in_use[key] -= 1

    def in_use(self) -> dict[ImageKey, int]:
        """Images used by running containers, with how many use each."""
        return dict(self._in_use)

    async def usage(self) -> int:
        """Bytes of committed blobs in the store."""
        row = await self._db.run(
            lambda conn: conn.execute("SELECT COALESCE(SUM(size), 0) FROM blobs").fetchone(),
            what="measuring usage",
        )
        return int(row[0])

    async def blob_refcounts(self) -> dict[str, int]:
        """Every committed blob with the number of images that reference it."""
        return await self._db.run(catalog.refcounts, what="counting references")

    # -- pull records (KEP-2535) -----------------------------------------------------------

    async def record_pull(
        self, image_id: str, identity: CredentialIdentity, *, repository: str = ""
    ) -> bool:
        """Record that ``identity`` pulled ``image_id`` from ``repository``; True if it changed."""
        now = self._clock()
        return await self._db.run(
            lambda conn: pullrecords.record(conn, image_id, repository, identity, now),
            what=f"recording pull of {image_id}",
        )

    async def pull_records(
        self, image_id: str, *, repository: str | None = None
    ) -> list[CredentialIdentity]:
        """Who pulled ``image_id`` (from ``repository``, or from any)."""
        return await self._db.run(
            lambda conn: pullrecords.load(conn, image_id, repository),
            what=f"reading pull records of {image_id}",
        )

    async def prune_pull_records(self, before: float) -> int:
        """Drop records of images no longer in the store, last updated before ``before``."""
        return await self._db.run(
            lambda conn: pullrecords.prune_unknown(conn, before), what="pruning pull records"
        )


def _lock(path: Path) -> int:
    """Take the store's exclusive lock; blocking call, non-blocking lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise StoreError(f"store {path.parent} is in use by {holder}") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
    return fd
