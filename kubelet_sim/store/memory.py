"""A light node store for simulated nodes: what a node must know, in memory, every byte verified.

The bench runs up to thousands of kubelets in one process; each one on a durable
:class:`~kubelet_sim.store.Store` (SQLite WAL, fsync, blob files, a worker-thread hop per
operation) makes the store the bottleneck. :class:`MemoryStore` satisfies the same
:class:`~kubelet_sim.store.port.NodeStore` seam and keeps only:

- which blobs are committed, with their sizes;
- the bytes :meth:`MemoryStore.put_blob` was given (manifests, configs, indexes: the image service
  reads them back through ``StoreFirstClient``); layer bytes are hashed as they arrive, inline on
  the event loop and as given (never copied or joined), then dropped;
- image records, keyed and named exactly as the durable store keys and names them (tags and repo
  digests move between images per runtime handler; the handler is ``""`` unless
  ``RuntimeClassInImageCriApi`` is on), in-use counts and KEP-2535 pull records.

A virtual run (``bench --virtual``) moves layers that were never built: its stores are opened
with ``hash_layers=False``, and their sinks count a layer's bytes against its size without
hashing them (manifests, configs and indexes, which are real, are still verified).

Downloads are single-flight per digest as in :class:`~kubelet_sim.store.content.ContentStore`, and
a sink verifies size and digest before a blob becomes present; a mismatch keeps nothing, so a retry
downloads again. Nothing is written to disk and no thread is used.

Not supported, because a simulated node never needs them (the daemon and the CLI keep the durable
store for these): removal, image GC, pins and last-used times (GC's inputs), listing, inspection,
usage, fsck and resumable partial downloads (a cut-off download starts again from zero, since
nothing of it was kept). Nothing ever frees a blob, so a :meth:`~MemoryStore.lease` has nothing
to hold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Final

import structlog

from kubelet_sim.core.digest import Digest, Hasher
from kubelet_sim.core.singleflight import SingleFlight
from kubelet_sim.core.sinks import BlobSink, verify
from kubelet_sim.errors import DigestMismatchError, StoreError
from kubelet_sim.store import catalog
from kubelet_sim.store.port import READ_LIMIT, NodeStore
from kubelet_sim.store.records import (
    BlobRef,
    CredentialIdentity,
    ImageKey,
    ImageRecord,
    SizedDigest,
)

__all__ = ["HashingSink", "MemoryStore"]

log = structlog.get_logger(__name__)

_OPEN: Final = 0
_COMMITTED: Final = 1
_ABORTED: Final = 2
_STATES: Final = ("open", "committed", "aborted")

# A pull record's coordinates within one (image ID, repository) scope.
_Coords = tuple[str, str, str, str]  # (kind, namespace, name, uid)
_Records = dict[_Coords, tuple[CredentialIdentity, float]]  # -> (identity, recorded at)


class _Counting:
    """The hasher of a sink that only counts (a virtual run's layers: no bytes to hash)."""

    def update(self, data: bytes, /) -> None:
        raise AssertionError("a counting sink hashes nothing")

    def hexdigest(self) -> str:
        raise AssertionError("a counting sink hashes nothing")


_COUNTING: Final = _Counting()


class HashingSink:
    """A :class:`~kubelet_sim.core.sinks.BlobSink` that hashes and counts, and keeps no bytes.

    Each chunk is hashed as it is given (no copy, no buffering, on the event loop) and dropped;
    ``commit`` checks size then digest and only then records the blob in its store.
    """

    __slots__ = ("_hasher", "_state", "_store", "_written", "digest", "size")

    def __init__(
        self, store: MemoryStore, digest: Digest, size: int, *, hashed: bool = True
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise StoreError(f"blob {digest}: size must be a non-negative integer, got {size!r}")
        self._store = store
        self.digest = digest
        self.size = size
        self._hasher: Hasher | None = digest.hasher() if hashed else _COUNTING
        self._written = 0
        self._state = _OPEN

    @property
    def written(self) -> int:
        """Bytes accepted so far (a memory sink always starts at 0: nothing is resumed)."""
        return self._written

    @property
    def committed(self) -> bool:
        """True once the blob is present in the store."""
        return self._state == _COMMITTED

    def _open_hasher(self) -> Hasher:
        if self._state != _OPEN or self._hasher is None:
            raise StoreError(f"writer for blob {self.digest} is {_STATES[self._state]}")
        return self._hasher

    async def write(self, chunk: bytes) -> None:
        """Hash ``chunk`` and forget it; never more than the declared size."""
        hasher = self._open_hasher()
        if self._written + len(chunk) > self.size:
            raise DigestMismatchError(
                f"size {self.size}", f"more than {self.size} bytes", what=f"blob {self.digest}"
            )
        if hasher is not _COUNTING:
            hasher.update(chunk)
        self._written += len(chunk)

    async def reset(self) -> None:
        """Start again from offset 0."""
        if self._open_hasher() is not _COUNTING:
            self._hasher = self.digest.hasher()
        self._written = 0

    async def commit(self, digest: Digest, size: int) -> None:
        """Verify size then digest, then make the blob present; on a mismatch keep nothing."""
        if self._state == _COMMITTED and digest == self.digest and size == self.size:
            return
        hasher = self._open_hasher()
        try:
            if digest != self.digest:
                raise DigestMismatchError(str(self.digest), str(digest), what="blob commit")
            if size != self.size:
                raise DigestMismatchError(
                    f"size {self.size}", f"size {size}", what=f"blob {self.digest}"
                )
            if hasher is _COUNTING:
                if self._written != size:
                    raise DigestMismatchError(
                        f"size {size}", f"size {self._written}", what=f"blob {digest}"
                    )
            else:
                verify(digest, size, self._written, hasher)
        except DigestMismatchError:
            await self.abort()
            raise
        self._store._publish(digest, size)
        self._state = _COMMITTED
        self._hasher = None

    async def abort(self) -> None:
        """Discard the hashing state; idempotent, and safe after ``commit``."""
        if self._state == _OPEN:
            self._state = _ABORTED
            self._hasher = None


class MemoryStore:
    """A node's image store held in memory (see the module docstring); no disk, no threads.

    Use it as ``MemoryStore(...)`` or ``async with MemoryStore(...) as store``; either way there
    is nothing to close (its contents go with the object).
    """

    __slots__ = (
        "_blobs",
        "_clock",
        "_data",
        "_downloads",
        "_images",
        "_in_use",
        "_names",
        "_pulls",
        "hash_layers",
        "runtime_class_in_image_cri_api",
    )

    def __init__(
        self,
        *,
        runtime_class_in_image_cri_api: bool = False,
        clock: Callable[[], float] = time.time,
        hash_layers: bool = True,
    ) -> None:
        self.runtime_class_in_image_cri_api = runtime_class_in_image_cri_api
        self.hash_layers = hash_layers
        self._clock = clock
        self._blobs: dict[str, int] = {}  # committed digest -> size
        self._data: dict[str, bytes] = {}  # digest -> content, for what put_blob stored
        self._downloads: SingleFlight[str, None] = SingleFlight()
        self._images: dict[ImageKey, ImageRecord] = {}
        # (repo tag or repo digest, handler) -> image ID; the two cannot collide: a repo digest
        # has an "@", a repo tag never has one.
        self._names: dict[tuple[str, str], str] = {}
        self._in_use: dict[ImageKey, int] = {}
        self._pulls: dict[str, dict[str, _Records]] = {}  # image ID -> repository -> records

    async def __aenter__(self) -> MemoryStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def handler(self, runtime_handler: str) -> str:
        """The handler part of an image key: ``""`` unless RuntimeClassInImageCriApi is on."""
        return runtime_handler if self.runtime_class_in_image_cri_api else ""

    # -- blobs ------------------------------------------------------------------------------

    async def blob_size(self, digest: Digest) -> int | None:
        """The committed size of ``digest``, or None when it is not in the store."""
        return self._blobs.get(str(digest))

    async def read_blob(self, digest: Digest, *, max_size: int = READ_LIMIT) -> bytes:
        """The content :meth:`put_blob` stored (verified when it was put).

        Raises:
            StoreError: not in the store, larger than ``max_size``, or a blob whose bytes were
                not kept (one that came through :meth:`ensure_blob`: a layer).
        """
        key = str(digest)
        size = self._blobs.get(key)
        if size is None:
            raise StoreError(f"blob {digest} is not in the store")
        if size > max_size:
            raise StoreError(f"blob {digest} is {size} bytes, more than {max_size} to read whole")
        data = self._data.get(key)
        if data is None:
            raise StoreError(
                f"blob {digest}: a memory store keeps the content of put_blob only "
                "(manifests, configs, indexes), not of downloaded layers"
            )
        return data

    async def put_blob(self, data: bytes, digest: Digest | None = None) -> BlobRef:
        """Keep in-memory content (a manifest, a config, an index), verified against ``digest``.

        Raises:
            DigestMismatchError: ``data`` is not what ``digest`` names, or the store has the
                blob with another size.
        """
        data = bytes(data)  # no copy when it is bytes already
        size = len(data)
        if digest is None:
            digest = Digest.from_bytes(data)
            verified = True
        else:
            verified = False
        key = str(digest)
        existing = self._blobs.get(key)
        if existing is not None and existing != size:
            raise DigestMismatchError(
                f"size {size}", f"size {existing} in the store", what=f"blob {digest}"
            )
        if key not in self._data:
            if not verified:
                hasher = digest.hasher()
                hasher.update(data)
                verify(digest, size, size, hasher)
            self._blobs[key] = size
            self._data[key] = data
        return BlobRef(digest, size)

    async def ensure_blob(
        self,
        digest: Digest,
        size: int,
        fetch: Callable[[BlobSink], Awaitable[None]],
        *,
        resumable: bool = False,
    ) -> None:
        """Make ``digest`` present, calling ``fetch(sink)`` at most once however many tasks ask.

        Returns at once when the blob is present. When another task is fetching it, waits and
        shares the outcome (its exception too); if that task was cancelled, this one fetches.
        ``resumable`` changes nothing: a memory sink keeps no partial download, so every fetch
        starts at offset 0 (:attr:`HashingSink.written`).

        Raises:
            DigestMismatchError: the content is not ``digest``/``size``, or the store has the
                blob with another size.
            StoreError: ``fetch`` returned without committing.
        """
        key = str(digest)
        while not self._committed(digest, size):
            outcome = await self._downloads.run_shared(
                key, partial(self._download, digest, size, fetch)
            )
            if not outcome.shared:
                return

    def _committed(self, digest: Digest, size: int) -> bool:
        existing = self._blobs.get(str(digest))
        if existing is None:
            return False
        if existing != size:
            raise DigestMismatchError(
                f"size {size}", f"size {existing} in the store", what=f"blob {digest}"
            )
        return True

    async def _download(
        self, digest: Digest, size: int, fetch: Callable[[BlobSink], Awaitable[None]]
    ) -> None:
        sink = HashingSink(self, digest, size, hashed=self.hash_layers)
        try:
            await fetch(sink)
            if not sink.committed:
                raise StoreError(f"fetching blob {digest} returned without committing it")
        finally:
            await sink.abort()

    def _publish(self, digest: Digest, size: int) -> None:
        """Record a verified blob (called by its sink's ``commit``)."""
        self._blobs[str(digest)] = size

    async def discard_ingests(self, digests: Sequence[Digest]) -> None:
        """As the durable store's; a memory sink keeps no partial download, so there is none."""

    def lease(self) -> AbstractAsyncContextManager[None]:
        """As the durable store's lease; nothing frees a blob here, so there is nothing to hold."""
        return contextlib.nullcontext()

    def inflight(self) -> dict[str, int]:
        """Digests being downloaded right now, with how many other tasks wait for each."""
        return self._downloads.waiters()

    # -- images -----------------------------------------------------------------------------

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
        """Record an image whose blobs are all present; as :meth:`Store.commit_image`.

        The image ID is the config digest. A repo tag or repo digest held by another image of
        the same handler moves to this one. Re-committing an image keeps its first-used time;
        committing another manifest with the same config replaces it and drops the tags and
        repo digests that named the old one.

        Raises:
            StoreError: a referenced blob is not present, or a layer has another size than
                declared (nothing is recorded).
            InvalidImageNameError: ``repo_tag``/``repo_digest`` are not ``name:tag``/``name@digest``.
        """
        handler = self.handler(runtime_handler)
        key = (str(config_digest), handler)
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
        roles = blobs.roles()
        catalog.check_committed(key[0], roles, self._blobs)
        total = sum(self._blobs[digest] for digest in roles)
        now = self._clock()
        old = self._images.get(key)
        first_used = now if old is None else old.first_used
        tags: set[str] = set()
        digests: set[str] = set()
        replaced = None
        if old is not None:
            if old.manifest_digest == manifest_digest:
                tags.update(old.repo_tags)
                digests.update(old.repo_digests)
            else:
                replaced = str(old.manifest_digest)
                for name in (*old.repo_tags, *old.repo_digests):
                    self._names.pop((name, handler), None)
        if tag is not None:
            self._claim(tag, handler, key[0])
            tags.add(tag)
        if rdigest is not None:
            self._claim(rdigest, handler, key[0])
            digests.add(rdigest)
        record = ImageRecord(
            image_id=key[0],
            repo_tags=tuple(sorted(tags)),
            repo_digests=tuple(sorted(digests)),
            manifest_digest=manifest_digest,
            config_digest=config_digest,
            layers=tuple(BlobRef(d, self._blobs[str(d)]) for d, _ in blobs.layers),
            platform=platform,
            size=total,
            runtime_handler=handler,
            first_used=first_used,
            last_used=now,
            pinned=False,
        )
        self._images[key] = record
        if replaced is not None:
            log.warning(
                "image manifest replaced",
                image=record.image_id,
                old_manifest=replaced,
                manifest=str(manifest_digest),
                handler=handler,
            )
        log.info("image committed", image=record.image_id, tag=repo_tag, handler=handler)
        return record

    def _claim(self, name: str, handler: str, image_id: str) -> None:
        """Point the repo tag or repo digest ``name`` at ``image_id``, taking it from its holder."""
        holder = self._names.get((name, handler))
        self._names[(name, handler)] = image_id
        if holder is None or holder == image_id:
            return
        old = self._images.get((holder, handler))
        if old is not None:
            self._images[(holder, handler)] = dataclasses.replace(
                old,
                repo_tags=tuple(t for t in old.repo_tags if t != name),
                repo_digests=tuple(d for d in old.repo_digests if d != name),
            )

    async def lookup(self, ref: str, runtime_handler: str = "") -> ImageRecord | None:
        """The image ``ref`` names (``name:tag``, ``name@digest``, ``name:tag@digest`` where the
        digest wins, or an image ID) for ``runtime_handler``, or None."""
        handler = self.handler(runtime_handler)
        image_id = catalog.image_id_of(ref)
        if image_id is None:
            name, tag, digest = catalog.split_reference(ref)
            named = f"{name}@{digest}" if digest is not None else f"{name}:{tag or 'latest'}"
            image_id = self._names.get((named, handler))
            if image_id is None:
                return None
        return self._images.get((image_id, handler))

    async def mark_in_use(self, image_id: str, runtime_handler: str = "") -> None:
        """Count one more running container using the image.

        Raises:
            StoreError: the image is not present.
        """
        key = (image_id, self.handler(runtime_handler))
        if key not in self._images:
            raise StoreError(f"image {image_id} is not present, no container can use it")
        self._in_use[key] = self._in_use.get(key, 0) + 1

    def release(self, image_id: str, runtime_handler: str = "") -> None:
        """One container fewer uses the image."""
        key = (image_id, self.handler(runtime_handler))
        count = self._in_use.get(key, 0)
        if count <= 1:
            self._in_use.pop(key, None)
        else:
            self._in_use[key] = count - 1

    def in_use(self) -> dict[ImageKey, int]:
        """Images used by running containers, with how many use each."""
        return dict(self._in_use)

    # -- pull records (KEP-2535), merged as kubelet_sim.store.pullrecords does ---------------

    async def record_pull(
        self, image_id: str, identity: CredentialIdentity, *, repository: str = ""
    ) -> bool:
        """Record that ``identity`` pulled ``image_id`` from ``repository``; True if it changed.

        A node-accessible record absorbs every later one; a node-accessible pull replaces the
        secrets and service accounts; a secret's newest hash wins.
        """
        now = self._clock()
        repos = self._pulls.get(image_id)
        records = None if repos is None else repos.get(repository)
        if records is not None and any(i.kind.node_accessible for i, _ in records.values()):
            return False  # nodePodsAccessible already: nothing changes
        coords = (str(identity.kind), identity.namespace, identity.name, identity.uid)
        if identity.kind.node_accessible:
            records = None
        elif records is not None:
            found = records.get(coords)
            if found is not None and found[0].credential_hash == identity.credential_hash:
                return False
        if records is None:
            records = {}
            self._pulls.setdefault(image_id, {})[repository] = records
        records[coords] = (identity, now)
        return True

    async def pull_records(
        self, image_id: str, *, repository: str | None = None
    ) -> list[CredentialIdentity]:
        """Who pulled ``image_id`` (from ``repository``, or from any), distinct and sorted."""
        return list(self.cached_pull_records(image_id, repository=repository))

    def cached_pull_records(
        self, image_id: str, *, repository: str | None = None
    ) -> Sequence[CredentialIdentity]:
        """:meth:`pull_records`, which needs no waiting here: everything is in memory."""
        repos = self._pulls.get(image_id)
        if repos is None:
            return ()
        scopes = repos.values() if repository is None else [repos.get(repository, {})]
        found = {identity for records in scopes for identity, _ in records.values()}
        return sorted(
            found, key=lambda i: (str(i.kind), i.namespace, i.name, i.uid, i.credential_hash)
        )

    async def prune_pull_records(self, before: float) -> int:
        """Drop records of images no longer in the store, last updated before ``before``."""
        known = {image_id for image_id, _ in self._images}
        pruned = 0
        for image_id in [i for i in self._pulls if i not in known]:
            repos = self._pulls[image_id]
            for repository in list(repos):
                records = repos[repository]
                stale = [c for c, (_, when) in records.items() if when < before]
                for coords in stale:
                    del records[coords]
                pruned += len(stale)
                if not records:
                    del repos[repository]
            if not repos:
                del self._pulls[image_id]
        return pruned


if TYPE_CHECKING:

    def _is_a_node_store(store: MemoryStore) -> NodeStore:  # the type checker holds the seam
        return store
