"""What a node needs from its image store: the seam between a node and the store it pulls into.

The image service (:class:`~kubelet_sim.runtime.images.ImageService` and its
:class:`~kubelet_sim.runtime.images.StoreFirstClient`), the node builder and the KEP-2535 pull-record
verifier (:class:`~kubelet_sim.credentials.verify.ImageAccessVerifier`) use exactly these members.
Two stores satisfy it structurally: the durable :class:`~kubelet_sim.store.Store` (SQLite and blob
files; the daemon and the CLI, which also use its GC, fsck and listing) and
:class:`~kubelet_sim.store.memory.MemoryStore` (the bench's simulated nodes: sizes and records in
memory, every byte still verified, nothing on disk).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.sinks import BlobSink
from kubelet_sim.store.records import BlobRef, CredentialIdentity, ImageRecord, SizedDigest

READ_LIMIT = 16 << 20
"""The default ``max_size`` of :meth:`NodeStore.read_blob` (both stores use it)."""


class NodeStore(Protocol):
    """A node's image store, as the image service, the node builder and the verifier use it."""

    # -- blobs (StoreFirstClient, ImageService) -----------------------------------------------

    async def blob_size(self, digest: Digest) -> int | None:
        """The committed size of ``digest``, or None when it is not in the store."""
        ...

    async def read_blob(self, digest: Digest, *, max_size: int = READ_LIMIT) -> bytes:
        """A small committed blob's content (a manifest, a config, an index), verified.

        Raises:
            StoreError: not in the store (or its content is not kept), or above ``max_size``.
            BlobCorruptError: the content no longer matches the digest.
        """
        ...

    async def put_blob(self, data: bytes, digest: Digest | None = None) -> BlobRef:
        """Commit in-memory content (a manifest, a config, an index), verified against ``digest``.

        Raises:
            DigestMismatchError: ``data`` is not what ``digest`` names.
        """
        ...

    async def ensure_blob(
        self,
        digest: Digest,
        size: int,
        fetch: Callable[[BlobSink], Awaitable[None]],
        *,
        resumable: bool = False,
    ) -> None:
        """Make ``digest`` present, calling ``fetch(sink)`` at most once however many tasks ask.

        Raises:
            DigestMismatchError: the content fetched (or the blob stored) is not ``digest``/``size``.
            StoreError: ``fetch`` returned without committing, or the store failed.
        """
        ...

    async def discard_ingests(self, digests: Sequence[Digest]) -> None:
        """Remove the partial downloads of ``digests`` that no writer has open: downloads
        nobody will resume (their image was refused)."""
        ...

    def lease(self) -> AbstractAsyncContextManager[None]:
        """Protect the blobs this task ensures until the block ends (wrap a pull in it)."""
        ...

    # -- images (ImageService) ----------------------------------------------------------------

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
        """Record an image whose blobs are all committed; it is then present.

        Raises:
            StoreError: a referenced blob is not committed, or has another size than declared.
            InvalidImageNameError: ``repo_tag``/``repo_digest`` are malformed.
        """
        ...

    async def lookup(self, ref: str, runtime_handler: str = "") -> ImageRecord | None:
        """The present image a tag, repo digest or image ID names for ``runtime_handler``."""
        ...

    async def mark_in_use(self, image_id: str, runtime_handler: str = "") -> None:
        """One more running container uses the image.

        Raises:
            StoreError: the image is not present.
        """
        ...

    def release(self, image_id: str, runtime_handler: str = "") -> None:
        """One container fewer uses the image."""
        ...

    # -- pull records (KEP-2535 verifier, node credentials) ------------------------------------

    async def record_pull(
        self, image_id: str, identity: CredentialIdentity, *, repository: str = ""
    ) -> bool:
        """Record that ``identity`` pulled ``image_id`` from ``repository``; True if it changed."""
        ...

    async def pull_records(
        self, image_id: str, *, repository: str | None = None
    ) -> list[CredentialIdentity]:
        """Who pulled ``image_id`` (from ``repository``, or from any)."""
        ...

    def cached_pull_records(
        self, image_id: str, *, repository: str | None = None
    ) -> Sequence[CredentialIdentity] | None:
        """What :meth:`pull_records` would answer, when the answer is in memory; else None."""
        ...
