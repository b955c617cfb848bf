"""Blob sinks: where the registry client streams verified content.

The client streams a blob's bytes into a :class:`BlobSink`, stops at the descriptor's size, and then
calls :meth:`BlobSink.commit` with the expected digest and size. A sink hashes what it is given as it
goes, so content is hashed once; ``commit`` checks size then digest and only then makes the content
visible, raising :class:`~kubelet_sim.errors.DigestMismatchError` (and discarding everything) when it
does not match. ``reset`` throws away what was written so an interrupted download can restart from
zero; ``written`` tells the client where to resume with a ``Range`` request.
"""

from __future__ import annotations

from typing import Protocol

from kubelet_sim.core.digest import Digest, Hasher, new_hasher
from kubelet_sim.errors import DigestMismatchError


class BlobSink(Protocol):
    """Destination of one blob download."""

    @property
    def written(self) -> int:
        """Bytes accepted so far (the resume offset)."""
        ...

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk``."""
        ...

    async def reset(self) -> None:
        """Discard everything written; the next write starts at offset 0."""
        ...

    async def commit(self, digest: Digest, size: int) -> None:
        """Verify size then digest, then make the content durable and visible.

        Raises:
            DigestMismatchError: the content is not what ``digest``/``size`` say; nothing is kept.
        """
        ...

    async def abort(self) -> None:
        """Discard everything; idempotent, and safe after ``commit``."""
        ...


def verify(digest: Digest, size: int, written: int, hasher: Hasher, *, what: str = "blob") -> None:
    """Check ``written`` against ``size`` and ``hasher`` against ``digest``.

    Raises:
        DigestMismatchError: naming the expected and actual size or digest.
    """
    if written != size:
        raise DigestMismatchError(f"size {size}", f"size {written}", what=f"{what} {digest}")
    actual = f"{digest.algorithm}:{hasher.hexdigest()}"
    if actual != str(digest):
        raise DigestMismatchError(str(digest), actual, what=what)


class MemorySink:
    """Keeps the blob in memory; for manifests, configs, tests and small blobs."""

    def __init__(self, algorithm: str = "sha256") -> None:
        self._algorithm = algorithm
        self._chunks: list[bytes] = []
        self._written = 0
        self._hasher = new_hasher(algorithm)
        self.data: bytes | None = None

    @property
    def written(self) -> int:
        return self._written

    async def write(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._written += len(chunk)
        self._hasher.update(chunk)

    async def reset(self) -> None:
        self._chunks.clear()
        self._written = 0
        self._hasher = new_hasher(self._algorithm)

    async def commit(self, digest: Digest, size: int) -> None:
        if digest.algorithm != self._algorithm:
            # The hasher was chosen before the digest was known; rehash with the right algorithm.
            self._hasher = new_hasher(digest.algorithm)
            for chunk in self._chunks:
                self._hasher.update(chunk)
            self._algorithm = digest.algorithm
        try:
            verify(digest, size, self._written, self._hasher)
        except DigestMismatchError:
            await self.abort()
            raise
        self.data = b"".join(self._chunks)
        self._chunks.clear()

    async def abort(self) -> None:
        self._chunks.clear()
        self._written = 0
