"""Content-addressed blob files: the on-disk layout, and the writer that makes a blob visible.

Layout under the store root::

    blobs/<alg>/<hex>   committed blobs, named by their validated digest
    tmp/                temp files of writes in progress (same filesystem, removed on open),
                        and resumable ingests of layer downloads (kept: see ``ingest``)
    quarantine/         corrupt or stray files moved aside by fsck

A :class:`BlobWriter` is a :class:`~kubelet_sim.core.sinks.BlobSink`. It buffers small writes and hands
big pieces (:data:`FLUSH_BYTES`) to a worker thread that hashes and writes them, so the event
loop neither hashes nor waits on the disk. ``commit`` verifies size then digest, fsyncs the temp
file and asks the store to publish it: the rename into ``blobs/`` and the database row happen in
one critical section, so a partial or unverified write is never visible as a blob.

A *resumable* writer (a layer download) writes the blob's ingest file instead of a fresh temp
file and keeps it when aborted, unless the content proved wrong or the disk is full; its
:meth:`BlobWriter.resume` picks up where an earlier writer of the same digest stopped.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final, Protocol, cast

import anyio
import anyio.to_thread

from kubelet_sim.core.digest import HEX_LENGTHS, Digest, Hasher, new_hasher
from kubelet_sim.core.sinks import verify
from kubelet_sim.errors import (
    DigestMismatchError,
    InvalidDigestError,
    StoreError,
    StoreFullError,
)
from kubelet_sim.store import ingest

FLUSH_BYTES: Final = 1 << 20  # big enough that a thread hop costs nothing next to the hashing
READ_CHUNK: Final = 1 << 20
# A resumable writer records its progress (a small file written, then renamed) at its first
# flush, then once this much more is on disk or this long has passed, not at every flush: a
# record per MiB cost a rename per MiB in one shared folder, as much time as writing the data
# (py-spy, a 256 MiB pull), and a resume only needs a recent prefix.
RECORD_BYTES: Final = 16 << 20
RECORD_SECONDS: Final = 1.0
# A writer asks the kernel to start writing back each WRITEBACK_BYTES it has written, without
# waiting (Linux's sync_file_range(SYNC_FILE_RANGE_WRITE), as PostgreSQL's *_flush_after settings
# do), so the fsync at its commit finds little left to write: a 256 MiB pull in 4 layers spent
# 105 ms in its final fsyncs, 21 ms with the writeback under way. Durability is unchanged: the
# commit's fsync still comes before the blob is published.
WRITEBACK_BYTES: Final = 8 << 20
_NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class WritableFile(Protocol):
    """The part of a binary file a writer uses; the seam for disk-full tests."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Write and return how many bytes were taken (a short write is continued)."""
        ...

    def flush(self) -> None: ...

    def fileno(self) -> int: ...

    def seek(self, offset: int, whence: int = ..., /) -> int: ...

    def truncate(self, size: int | None = ..., /) -> int: ...

    def close(self) -> None: ...


FileOpener = Callable[[Path], WritableFile]


class _Hasher(Hasher, Protocol):
    """A ``hashlib`` object, whose state can be copied (an ingest records its prefix digest)."""

    def copy(self) -> _Hasher: ...


def _fresh_hasher(digest: Digest) -> _Hasher:
    return cast(_Hasher, digest.hasher())  # hashlib objects, which have copy()


def default_opener(path: Path) -> WritableFile:
    """Create ``path`` exclusively for writing."""
    return open(path, "xb")


def io_error(exc: OSError, what: str, *, folder: Path | None = None) -> StoreError:
    """Map an OS error to the store's errors; no space becomes :class:`StoreFullError`.

    ``folder`` (the store root) is named when the disk is full.
    """
    if exc.errno in _NO_SPACE:
        where = f"store {folder} is full: " if folder is not None else ""
        return StoreFullError(f"{what}: {where}no space left ({exc.strerror or exc})")
    return StoreError(f"{what}: {exc.strerror or exc}")


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` (Linux only; Python's ``os`` has no binding), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes  # loaded by the first writer with WRITEBACK_BYTES written, not at import

        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (ImportError, OSError, AttributeError):  # a Python without ctypes, a libc without it
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes of ``fd`` from ``offset`` to disk, and
    return without waiting for them (nothing where there is no ``sync_file_range``). Only a head
    start for a later fsync: a failure changes nothing. Blocking (briefly); run it in a thread."""
    function = _sync_file_range()
    if function is not None:
        function(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE


def _record_progress(
    file: WritableFile, record: Path, digest: Digest, size: int, on_disk: int, hasher: _Hasher
) -> None:
    """Record that ``file``'s first ``on_disk`` bytes (hashed by ``hasher``) are ``digest``'s;
    blocking. The data is flushed first: the record must never claim bytes still in a buffer."""
    file.flush()
    prefix = f"{digest.algorithm}:{hasher.copy().hexdigest()}"
    ingest.write_record(record, digest, size, on_disk, prefix)


def fsync_dir(path: Path) -> None:
    """Make a rename or create in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_file(path: Path, algorithm: str) -> tuple[str, int]:
    """``(digest string, size)`` of the file at ``path``; blocking, run it in a thread."""
    hasher = new_hasher(algorithm)
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return f"{algorithm}:{hasher.hexdigest()}", size


@dataclass(frozen=True, slots=True)
class Scan:
    """What is on disk: committed blob files, misplaced files and temp files."""

    blobs: dict[str, Path]
    stray: tuple[Path, ...]
    temps: tuple[Path, ...]


class BlobLayout:
    """Paths under the store root; every digest is re-validated before it becomes a path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        self.quarantine = root / "quarantine"

    def create(self) -> None:
        """Create the folders (owner-only); blocking."""
        for path in (self.root, self.blobs, self.tmp, self.quarantine):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        """``blobs/<alg>/<hex>``; the digest goes through the grammar first."""
        checked = Digest.parse(str(digest))
        return self.blobs / checked.algorithm / checked.hex

    def temp_path(self, digest: Digest) -> Path:
        """A fresh temp file name for a write of ``digest``."""
        checked = Digest.parse(str(digest))
        return self.tmp / f"{checked.algorithm}-{checked.hex}.{secrets.token_hex(6)}.part"

    def scan(self) -> Scan:
        """List blob files, stray entries and temp files; blocking."""
        blobs: dict[str, Path] = {}
        stray: list[Path] = []
        for entry in _entries(self.blobs):
            if not entry.is_dir(follow_symlinks=False) or entry.name not in HEX_LENGTHS:
                stray.append(Path(entry.path))
                continue
            for child in _entries(Path(entry.path)):
                text = f"{entry.name}:{child.name}"
                if child.is_file(follow_symlinks=False) and _is_digest(text):
                    blobs[text] = Path(child.path)
                else:
                    stray.append(Path(child.path))
        temps = tuple(Path(e.path) for e in _entries(self.tmp))
        return Scan(blobs, tuple(sorted(stray)), tuple(sorted(temps)))

    def quarantine_file(self, path: Path, label: str) -> Path:
        """Move ``path`` into ``quarantine/``; blocking. Returns the new path."""
        target = self.quarantine / f"{label}.{secrets.token_hex(4)}"
        os.replace(path, target)
        fsync_dir(self.quarantine)
        return target


def _entries(path: Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            yield from sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        return


def _is_digest(text: str) -> bool:
    try:
        Digest.parse(text)
    except InvalidDigestError:
        return False
    return True


class WriterState(StrEnum):
    """Life cycle of a :class:`BlobWriter`."""

    OPEN = "open"
    COMMITTED = "committed"
    ABORTED = "aborted"


Publisher = Callable[[Path, Digest, int], Awaitable[None]]


class BlobWriter:
    """A :class:`~kubelet_sim.core.sinks.BlobSink` that writes one blob into the store."""

    def __init__(
        self,
        layout: BlobLayout,
        digest: Digest,
        size: int,
        *,
        publish: Publisher,
        opener: FileOpener = default_opener,
        on_close: Callable[[BlobWriter], None] | None = None,
        resumable: bool = False,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise StoreError(f"blob {digest}: size must be a non-negative integer, got {size!r}")
        self.digest = digest
        self.size = size
        self.resumable = resumable
        self._root = layout.root
        self.record_path: Path | None = None
        if resumable:
            self.temp_path, self.record_path = ingest.paths(layout.tmp, digest)
        else:
            self.temp_path = layout.temp_path(digest)
        self._publish = publish
        self._opener = opener
        self._on_close = on_close
        self._file: WritableFile | None = None
        self._chunks: list[bytes] = []
        self._pending = 0
        self._written = 0
        self._hasher = _fresh_hasher(digest)
        self._on_disk = 0
        self._recorded = 0  # bytes the ingest record vouches for
        self._has_record = False  # an ingest record of ours may be on disk
        self._record_due = 0.0  # monotonic time of the next record, whatever the bytes
        self._written_back = 0  # bytes whose writeback was started (start_writeback)
        # A resumable writer keeps its ingest when aborted, until the content proves wrong or
        # the disk is full.
        self._keep = resumable
        self.resumed_from = 0
        self.state = WriterState.OPEN

    @property
    def files(self) -> tuple[Path, ...]:
        """The files this writer owns under ``tmp/`` (fsck leaves them alone while it is open)."""
        return (self.temp_path,) if self.record_path is None else (self.temp_path, self.record_path)

    async def resume(self) -> int:
        """Continue the ingest an earlier writer of this digest left, if its prefix checks out.

        Returns:
            The offset the download goes on from (0: from the start); :attr:`written` too.
        """
        self._check_open()
        if self.record_path is None or self._file is not None or self._written:
            return self._written
        record = self.record_path
        try:
            resumed = await anyio.to_thread.run_sync(
                ingest.resume, self.temp_path, record, self.digest, self.size
            )
        except OSError as exc:
            raise io_error(exc, f"resuming blob {self.digest}", folder=self._root) from exc
        if resumed is not None:
            self._file = resumed.file
            self._hasher = cast(_Hasher, resumed.hasher)
            self._written = self._on_disk = self.resumed_from = resumed.offset
            self._recorded = self._written_back = resumed.offset
            self._has_record = True
        return self._written

    @property
    def written(self) -> int:
        """Bytes accepted so far (the resume offset)."""
        return self._written

    @property
    def committed(self) -> bool:
        """True once the blob is visible in the store."""
        return self.state is WriterState.COMMITTED

    def _check_open(self) -> None:
        if self.state is not WriterState.OPEN:
            raise StoreError(f"writer for blob {self.digest} is {self.state}")

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk``; never more than the declared size."""
        self._check_open()
        if self._written + len(chunk) > self.size:
            self._keep = False  # the source sends something else: its prefix is no good either
            raise DigestMismatchError(
                f"size {self.size}", f"more than {self.size} bytes", what=f"blob {self.digest}"
            )
        self._chunks.append(bytes(chunk))
        self._pending += len(chunk)
        self._written += len(chunk)
        if self._pending >= FLUSH_BYTES:
            await self._flush(final=False)

    async def reset(self) -> None:
        """Discard everything written; the next write starts at offset 0."""
        self._check_open()
        self._chunks, self._pending = [], 0
        self._written = self._on_disk = self._recorded = self._written_back = 0
        self._record_due = 0.0
        self._hasher = _fresh_hasher(self.digest)
        if self._file is not None:
            file, record = self._file, self.record_path

            def truncate() -> None:
                if record is not None:
                    ingest.discard(record)
                file.seek(0)
                file.truncate(0)

            await self._io(truncate)

    async def commit(self, digest: Digest, size: int) -> None:
        """Verify size then digest, fsync, then publish the blob; on any failure keep nothing."""
        if self.state is WriterState.COMMITTED and digest == self.digest and size == self.size:
            return
        self._check_open()
        published = False
        try:
            if digest != self.digest:
                raise DigestMismatchError(str(self.digest), str(digest), what="blob commit")
            await self._flush(final=True)
            try:
                verify(digest, size, self._written, self._hasher)
            except DigestMismatchError:
                self._keep = False  # wrong content: nothing of it is worth resuming
                raise
            await self._publish(self.temp_path, digest, size)
            published = True
            self.state = WriterState.COMMITTED
            self._closed()
        finally:
            if not published:
                await self.abort()
        if self.record_path is not None and self._has_record:  # none: no hop to remove it
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(ingest.discard, self.record_path)

    async def abort(self) -> None:
        """Discard the temp file (a resumable writer keeps its ingest); idempotent, safe after
        commit."""
        if self.state is not WriterState.OPEN:
            return
        self.state = WriterState.ABORTED
        self._chunks, self._pending = [], 0
        file, self._file = self._file, None
        files = () if self._keep else self.files
        # A kept ingest records how far it got (its records come only every RECORD_BYTES or
        # RECORD_SECONDS), so a retry in this process resumes there, not at the last record.
        record = self.record_path if self._keep and self._on_disk > self._recorded else None
        on_disk, hasher, digest, size = self._on_disk, self._hasher, self.digest, self.size

        def discard() -> None:
            if file is not None:
                if record is not None:
                    with contextlib.suppress(OSError):  # the last record still vouches
                        _record_progress(file, record, digest, size, on_disk, hasher)
                # Closing flushes; a full disk here changes nothing, the file goes anyway.
                with contextlib.suppress(OSError):
                    file.close()
            ingest.discard(*files)

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(discard)
        self._closed()

    def _closed(self) -> None:
        if self._on_close is not None:
            self._on_close(self)

    async def _flush(self, *, final: bool) -> None:
        chunks, self._chunks, self._pending = self._chunks, [], 0
        hasher = self._hasher
        record = self.record_path
        note = False  # record the progress after this flush
        if record is not None and not final and self._written > self._recorded:
            now = time.monotonic()
            if now >= self._record_due or self._written - self._recorded >= RECORD_BYTES:
                note = self._has_record = True
                self._recorded, self._record_due = self._written, now + RECORD_SECONDS

        def work() -> None:
            if self._file is None:
                if record is not None:
                    ingest.discard(self.temp_path, record)  # not resumed: start afresh
                self._file = self._opener(self.temp_path)
            file = self._file
            data = 0
            for index, chunk in enumerate(chunks):  # each as it came: joining would copy every
                # byte once more. Each chunk is let go once written, not with the whole batch:
                # the event loop fills other layers' batches meanwhile (less peak memory).
                chunks[index] = b""
                hasher.update(chunk)  # hashlib and file writes let go of the GIL
                view = memoryview(chunk)
                while view:
                    n = file.write(view)
                    view = view[n:]
                data += len(chunk)
                del view, chunk
            self._on_disk += data
            if final:
                file.flush()
                os.fsync(file.fileno())
                self._file = None
                file.close()
                return
            if self._on_disk - self._written_back >= WRITEBACK_BYTES:
                file.flush()
                with contextlib.suppress(OSError, ValueError):  # a file with no descriptor
                    start_writeback(
                        file.fileno(), self._written_back, self._on_disk - self._written_back
                    )
                self._written_back = self._on_disk
            if note and record is not None:
                _record_progress(file, record, self.digest, self.size, self._on_disk, hasher)

        await self._io(work)

    async def _io(self, fn: Callable[[], None]) -> None:
        try:
            await anyio.to_thread.run_sync(fn)
        except OSError as exc:
            error = io_error(exc, f"writing blob {self.digest}", folder=self._root)
            self._keep = False  # a full or failing disk: give the space back
            await self.abort()
            raise error from exc
