"""The node's image store: content-addressed blobs plus a SQLite catalogue, crash-safe.

An image is present only when its manifest, config and every layer blob are committed on disk
and recorded together in one transaction. Blobs are shared between images and freed when the
last image referencing them goes. With ``RuntimeClassInImageCriApi`` an image is keyed by
``(image ID, runtime handler)``; without it the handler is always ``""``.

The blob operations (writers, single-flight ``ensure_blob``, leases) come from
:class:`~kubelet_sim.store.content.ContentStore`.

One writer at a time: a writer takes the root's ``lock`` file (``flock``), and a second writer
waits for it, bounded and saying so, instead of failing. Readers (``read_only``: ``images``,
``fsck --no-repair``) take no lock and run beside the writer on SQLite's WAL snapshots; they never
create, migrate or recover anything, and keep no lookup cache (the writer changes what they see).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import anyio
import anyio.to_thread
import structlog

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.memo import put_bounded
from kubelet_sim.errors import StoreBusyError, StoreError, StoreNotFoundError
from kubelet_sim.store import catalog, ingest, pullrecords
from kubelet_sim.store.blobs import BlobLayout, FileOpener, default_opener, io_error
from kubelet_sim.store.content import ContentStore
from kubelet_sim.store.db import Database, FreeSpace, free_bytes, transaction
from kubelet_sim.store.fsck import FsckReport, fsck
from kubelet_sim.store.records import (
    CredentialIdentity,
    ImageKey,
    ImageRecord,
    SizedDigest,
)

log = structlog.get_logger(__name__)

DB_NAME = "store.db"
LOCK_NAME = "lock"
LOOKUP_CACHE_SIZE = 10_000
LOCK_TIMEOUT = 300.0  # how long a second writer waits for the first (seconds)
LOCK_POLL = 0.1


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


class Store(ContentStore):
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
        free_space: FreeSpace = free_bytes,
        ingest_expiry: float = ingest.DEFAULT_EXPIRY,
    ) -> None:
        super().__init__(
            layout,
            db,
            clock=clock,
            opener=opener,
            free_space=free_space,
            ingest_expiry=ingest_expiry,
        )
        self._lock_fd = lock_fd
        self.runtime_class_in_image_cri_api = runtime_class_in_image_cri_api
        self._in_use: Counter[ImageKey] = Counter()
        self.recovery: FsckReport | None = None
        self._lookups: dict[tuple[str, str], tuple[int, ImageRecord | None]] = {}
        self._records: dict[tuple[str, str | None], tuple[int, tuple[CredentialIdentity, ...]]] = {}
        """Pull records by (image, repository), valid for one write generation, as lookups."""

    @classmethod
    async def open(
        cls,
        root: Path,
        *,
        runtime_class_in_image_cri_api: bool = False,
        clock: Callable[[], float] = time.time,
        opener: FileOpener = default_opener,
        recover: bool = True,
        read_only: bool = False,
        create: bool = True,
        lock_timeout: float = LOCK_TIMEOUT,
        free_space: FreeSpace = free_bytes,
        ingest_expiry: float = ingest.DEFAULT_EXPIRY,
    ) -> Store:
        """Open (creating if needed) the store at ``root`` and recover from any crash.

        Recovery: SQLite rolls back interrupted transactions, temp files are removed (fresh
        ingests of layer downloads are kept for resumption), blob files are checked against their
        rows (size) and images whose blobs are not all there are marked not present. Untracked
        blob files (a crash between rename and commit) are re-hashed and adopted or quarantined.
        ``recover=False`` skips all but SQLite's own rollback (``fsck`` runs the same pass
        itself, to report what it repaired). What recovery found is :attr:`recovery`.

        Args:
            read_only: open beside a writer to read only: no lock, no recovery, no writes.
            create: create the store when there is none (else :class:`StoreNotFoundError`);
                a read-only open never creates.
            lock_timeout: how long a writer waits for another writer to close the store.
            free_space: bytes free on the store's filesystem (statvfs; injectable for tests).
            ingest_expiry: seconds after which an untouched partial download is discarded.

        Raises:
            StoreNotFoundError: there is no store at ``root`` and it may not be created.
            StoreBusyError: another writer kept the store for longer than ``lock_timeout``.
            StoreError: the store cannot be opened.
        """
        layout = BlobLayout(Path(root))
        db_path = layout.root / DB_NAME
        if read_only or not create:
            exists = await anyio.to_thread.run_sync(db_path.is_file)
            if not exists:
                raise StoreNotFoundError(str(root))
        if read_only:
            db = await Database.open(db_path, read_only=True, free_space=free_space)
            return cls(
                layout,
                db,
                -1,
                runtime_class_in_image_cri_api=runtime_class_in_image_cri_api,
                clock=clock,
                opener=opener,
                free_space=free_space,
                ingest_expiry=ingest_expiry,
            )
        try:
            await anyio.to_thread.run_sync(layout.create)
        except OSError as exc:
            raise io_error(exc, f"opening store {root}", folder=layout.root) from exc
        lock_fd = await _lock(layout.root / LOCK_NAME, lock_timeout)
        try:
            db = await Database.open(db_path, free_space=free_space)
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
            free_space=free_space,
            ingest_expiry=ingest_expiry,
        )
        if not recover:
            return store
        try:
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

    def handler(self, runtime_handler: str) -> str:
        """The handler part of an image key: ``""`` unless RuntimeClassInImageCriApi is on."""
        return runtime_handler if self.runtime_class_in_image_cri_api else ""

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
        its first-used time and pin. A record holds one manifest: committing another manifest
        with the same config replaces it and drops the tags and repo digests that named the old
        one (they would otherwise show content they never resolved to).

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

        def work(conn: sqlite3.Connection) -> tuple[ImageRecord | None, str | None]:
            replaced = catalog.commit(
                conn,
                self._layout,
                key,
                blobs,
                repo_tag=tag,
                repo_digest=rdigest,
                platform=platform,
                now=now,
            )
            return catalog.load(conn, key), replaced

        record, replaced = await self._db.run(work, what=f"committing image {key[0]}")
        assert record is not None
        if replaced is not None:
            log.warning(
                "image manifest replaced",
                image=record.image_id,
                old_manifest=replaced,
                manifest=str(manifest_digest),
                handler=key[1],
            )
        log.info("image committed", image=record.image_id, tag=repo_tag, handler=key[1])
        return record

    async def lookup(self, ref: str, runtime_handler: str = "") -> ImageRecord | None:
        """The present image ``ref`` names (``name:tag``, ``name@digest``, ``name:tag@digest``
        where the digest wins, or an image ID) for ``runtime_handler``, or None."""
        # Lookups are the hot path of every cache-hit decision (hence self.handler() and
        # self.read_only inline); answers are kept until the next write (the root lock means
        # every write goes through this process's Database).
        handler = runtime_handler if self.runtime_class_in_image_cri_api else ""
        cache_key = (ref, handler)
        db = self._db
        if not db.read_only:
            cached = self._lookups.get(cache_key)
            if cached is not None and cached[0] == db.generation:
                return cached[1]

        def work(conn: sqlite3.Connection) -> ImageRecord | None:
            key = catalog.resolve(conn, ref, handler)
            return None if key is None else catalog.load(conn, key)

        if db.read_only:
            # Another process writes: only SQLite knows what is current.
            return await self._db.run(work, what=f"looking up {ref}", readonly=True)
        generation = self._db.generation
        record = await self._db.run(work, what=f"looking up {ref}", readonly=True)
        if generation == self._db.generation:
            put_bounded(self._lookups, cache_key, (generation, record), LOOKUP_CACHE_SIZE)
        return record

    async def list_images(
        self, runtime_handler: str | None = None, *, include_absent: bool = False
    ) -> list[ImageRecord]:
        """Present images (of one handler, or all); ``include_absent`` adds damaged ones."""
        handler = None if runtime_handler is None else self.handler(runtime_handler)
        return await self._db.run(
            lambda conn: catalog.list_records(conn, handler, include_absent=include_absent),
            what="listing images",
            readonly=True,
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

        return await self._db.run(work, what=f"inspecting {ref}", readonly=True)

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
        """Who pulled ``image_id`` (from ``repository``, or from any).

        A KEP-2535 check reads these on every cache-hit decision; the answers are kept until
        the next write, as :meth:`lookup` keeps its own.
        """

        def work(conn: sqlite3.Connection) -> tuple[CredentialIdentity, ...]:
            return tuple(pullrecords.load(conn, image_id, repository))

        what = f"reading pull records of {image_id}"
        if self.read_only:
            return list(await self._db.run(work, what=what, readonly=True))
        cached = self.cached_pull_records(image_id, repository=repository)
        if cached is not None:
            return list(cached)
        generation = self._db.generation
        records = await self._db.run(work, what=what, readonly=True)
        if generation == self._db.generation:
            put_bounded(
                self._records, (image_id, repository), (generation, records), LOOKUP_CACHE_SIZE
            )
        return list(records)

    def cached_pull_records(
        self, image_id: str, *, repository: str | None = None
    ) -> Sequence[CredentialIdentity] | None:
        """The answer :meth:`pull_records` keeps since the last write, or None (not read since,
        or another process writes the store)."""
        db = self._db
        if db.read_only:
            return None
        cached = self._records.get((image_id, repository))
        if cached is not None and cached[0] == db.generation:
            return cached[1]
        return None

    async def prune_pull_records(self, before: float) -> int:
        """Drop records of images no longer in the store, last updated before ``before``."""
        return await self._db.run(
            lambda conn: pullrecords.prune_unknown(conn, before), what="pruning pull records"
        )


async def _lock(path: Path, wait: float) -> int:
    """Take the store's writer lock, waiting up to ``wait`` seconds for another writer.

    Raises:
        StoreBusyError: the other writer still has it after ``wait`` seconds.
    """
    try:
        fd = await anyio.to_thread.run_sync(_open_lock, path)
    except OSError as exc:
        raise io_error(exc, f"opening store {path.parent}", folder=path.parent) from exc
    try:
        holder = await anyio.to_thread.run_sync(_try_lock, fd)
        if holder is not None:
            log.warning("store.waiting_for_lock", root=str(path.parent), holder=holder, wait=wait)
            deadline = anyio.current_time() + wait
            while holder is not None:
                if anyio.current_time() >= deadline:
                    raise StoreBusyError(
                        f"store {path.parent} is in use by {holder}: waited {wait:g}s "
                        "for it to finish"
                    )
                await anyio.sleep(LOCK_POLL)
                holder = await anyio.to_thread.run_sync(_try_lock, fd)
        await anyio.to_thread.run_sync(_claim, fd)
    except OSError as exc:
        os.close(fd)
        raise io_error(exc, f"locking store {path.parent}", folder=path.parent) from exc
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def _try_lock(fd: int) -> str | None:
    """Take the exclusive lock without blocking; None when taken, else who holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
    return None


def _claim(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
