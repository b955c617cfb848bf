"""The push path, for seeding registries, benchmarks and the ``manifest`` commands.

Blob uploads skip blobs the registry already has (``HEAD``), try a cross-repository mount when a
source repository is known, and otherwise upload monolithically (``POST`` + ``PUT ?digest=``) or in
chunks (``PATCH`` with ``Content-Range``, then ``PUT``), as distribution-spec "Pushing blobs" describes.
Manifests and indexes are ``PUT`` by tag or digest and the registry's digest is checked.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import BinaryIO
from urllib.parse import urljoin

import httpx
import structlog

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.digest import Digest, new_hasher
from kubelet_sim.core.reference import ImageReference
from kubelet_sim.core.sinks import verify
from kubelet_sim.errors import DigestMismatchError, RegistryError, RegistryNotFoundError
from kubelet_sim.registry.auth import scope_for
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.hosts import RegistryHost
from kubelet_sim.registry.manifests import Descriptor

log = structlog.get_logger(__name__)

DEFAULT_CHUNK = 8 * 1024 * 1024


class Pusher:
    """Uploads blobs and manifests to one repository through a :class:`RegistryClient`."""

    def __init__(
        self,
        client: RegistryClient,
        ref: ImageReference,
        creds: Credentials | None = None,
        *,
        chunk_size: int | None = None,
    ) -> None:
        self.client = client
        self.ref = ref
        self.creds = creds
        self.chunk_size = chunk_size
        hosts = client.hosts(ref, "push")
        if not hosts:
            raise RegistryError(f"no host for {ref.domain} has the 'push' capability")
        self.host: RegistryHost = hosts[-1]
        self.scope = scope_for(ref.repository, ("pull", "push"))
        self.uploaded = 0
        self.skipped = 0
        self.mounted = 0

    def _open(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        ok: frozenset[int] = frozenset({200}),
    ) -> AbstractAsyncContextManager[httpx.Response]:
        return self.client.transport.open(
            method,
            self.host,
            path,
            scope=self.scope,
            creds=self.creds,
            headers=headers,
            content=content,
            params=params,
            ok=ok,
        )

    async def blob_exists(self, digest: Digest) -> bool:
        """True when the repository already has the blob."""
        try:
            async with self._open("HEAD", f"/{self.ref.repository}/blobs/{digest}"):
                return True
        except RegistryNotFoundError:
            return False

    async def push_blob(
        self, data: bytes | Iterable[bytes], digest: Digest, size: int, *, mount_from: str = ""
    ) -> None:
        """Upload a blob unless the registry has it; ``data`` is bytes or an iterable of chunks."""
        if await self.blob_exists(digest):
            self.skipped += 1
            return
        location = await self._start_upload(digest, mount_from)
        if location is None:
            self.mounted += 1
            return
        chunks = [data] if isinstance(data, bytes) else data
        if self.chunk_size is None and isinstance(data, bytes):
            await self._finish_upload(location, digest, data)
        else:
            location = await self._patch_chunks(location, chunks)
            await self._finish_upload(location, digest, b"")
        self.uploaded += 1
        log.debug("push.blob", repository=self.ref.repository, digest=str(digest), size=size)

    async def copy_blob(self, source: ImageReference, desc: Descriptor) -> None:
        """Make the blob ``desc`` of ``source`` (same registry) exist in this repository.

        A cross-repository mount is tried first; when the registry refuses it (it answers 202
        with an upload location: no access to the source, or the blob is not there) the blob is
        downloaded from ``source``, verified, and uploaded, as ``docker manifest push`` does.
        """
        if await self.blob_exists(desc.digest):
            self.skipped += 1
            return
        location = await self._start_upload(desc.digest, source.repository)
        if location is None:
            self.mounted += 1
            return
        with tempfile.TemporaryFile(prefix="kubelet-sim-push-") as spool:
            sink = _SpoolSink(spool, desc.digest.algorithm)
            await self.client.fetch_blob(source, desc, sink, self.creds)
            location = await self._patch_chunks(location, _read_chunks(spool))
        await self._finish_upload(location, desc.digest, b"")
        self.uploaded += 1
        log.debug("push.blob_copied", source=source.repository, digest=str(desc.digest))

    async def _start_upload(self, digest: Digest, mount_from: str) -> str | None:
        path = f"/{self.ref.repository}/blobs/uploads/"
        params = {"mount": str(digest), "from": mount_from} if mount_from else None
        async with self._open("POST", path, params=params, ok=frozenset({201, 202})) as response:
            if response.status_code == 201:
                return None  # mounted from the other repository
            location = response.headers.get("location")
            if not location:
                raise RegistryError(f"upload of {digest}: registry sent no Location", status=202)
            return str(urljoin(str(response.url), location))

    async def _patch_chunks(self, location: str, chunks: Iterable[bytes]) -> str:
        offset = 0
        for chunk in _rechunk(chunks, self.chunk_size or DEFAULT_CHUNK):
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
            }
            async with self._open(
                "PATCH", location, headers=headers, content=chunk, ok=frozenset({202})
            ) as response:
                location = urljoin(str(response.url), response.headers.get("location", location))
            offset += len(chunk)
        return location

    async def _finish_upload(self, location: str, digest: Digest, data: bytes) -> None:
        separator = "&" if "?" in location else "?"
        url = f"{location}{separator}digest={digest}"
        headers = {"Content-Type": "application/octet-stream"}
        async with self._open("PUT", url, headers=headers, content=data, ok=frozenset({201})):
            pass

    async def push_manifest(self, raw: bytes, media_type: str, reference: str) -> Digest:
        """``PUT`` a manifest or index under a tag or digest; returns its digest.

        Raises:
            DigestMismatchError: the registry computed a different digest.
        """
        expected = Digest.from_bytes(raw)
        path = f"/{self.ref.repository}/manifests/{reference}"
        async with self._open(
            "PUT",
            path,
            headers={"Content-Type": media_type},
            content=raw,
            ok=frozenset({201}),
        ) as response:
            returned = response.headers.get("docker-content-digest")
        if returned and returned != str(expected):
            raise DigestMismatchError(str(expected), returned, what="pushed manifest")
        return expected


class _SpoolSink:
    """A :class:`~kubelet_sim.core.sinks.BlobSink` onto a temporary file, verified on commit."""

    def __init__(self, spool: BinaryIO, algorithm: str) -> None:
        self._spool = spool
        self._algorithm = algorithm
        self._hasher = new_hasher(algorithm)
        self._written = 0

    @property
    def written(self) -> int:
        return self._written

    async def write(self, chunk: bytes) -> None:
        self._spool.write(chunk)
        self._hasher.update(chunk)
        self._written += len(chunk)

    async def reset(self) -> None:
        self._spool.seek(0)
        self._spool.truncate()
        self._hasher = new_hasher(self._algorithm)
        self._written = 0

    async def commit(self, digest: Digest, size: int) -> None:
        verify(digest, size, self._written, self._hasher)
        self._spool.flush()
        self._spool.seek(0)

    async def abort(self) -> None:
        await self.reset()  # the file itself goes with copy_blob's block


def _read_chunks(spool: BinaryIO) -> Iterator[bytes]:
    while chunk := spool.read(DEFAULT_CHUNK):
        yield chunk


def _rechunk(chunks: Iterable[bytes], size: int) -> Iterable[bytes]:
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)
