"""Resumable partial downloads (containerd's ingests): their files, progress record and resume.

A resumable blob write (a layer download) goes to ``tmp/<alg>-<hex>.ingest.part``. After its
first flush to disk, then every 16 MiB or second, it records how far the data goes and the digest
of that prefix in ``tmp/<alg>-<hex>.ingest.json`` (written under a temp name, then renamed), and
once more when the download fails or is cancelled; bytes written after the last record (a crash)
are cut off on resume. When the download fails, is cancelled or the process dies, both files
stay, as containerd keeps an ingest's data across restarts (``core/content/helpers.go: Copy``
seeks to the ingest's offset). The next download of the same digest, in this process or after a
restart, re-hashes the prefix and resumes with a ``Range`` request only if the prefix still
hashes to what was recorded.

Ingests are corrupt, and removed, when the record is missing or unreadable, names another digest
or size, or the data is shorter than the record says or does not hash to it. Ingests untouched for
longer than the expiry (24 h by default, the lease containerd's pulls hold) are stale: recovery
and fsck remove them, as they remove ingests of blobs that got committed anyway.

Every function here is blocking; run it in a worker thread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import structlog

from kubelet_sim.core.digest import Digest, Hasher, new_hasher
from kubelet_sim.errors import InvalidDigestError

log = structlog.get_logger(__name__)

DATA_SUFFIX: Final = ".ingest.part"
RECORD_SUFFIX: Final = ".ingest.json"
DEFAULT_EXPIRY: Final = 24 * 3600.0
_READ_CHUNK: Final = 1 << 20


def paths(tmp: Path, digest: Digest) -> tuple[Path, Path]:
    """``(data, record)`` of the ingest of ``digest`` under the store's ``tmp`` folder."""
    checked = Digest.parse(str(digest))
    stem = f"{checked.algorithm}-{checked.hex}"
    return tmp / f"{stem}{DATA_SUFFIX}", tmp / f"{stem}{RECORD_SUFFIX}"


def digest_of(path: Path) -> str | None:
    """The digest an ingest data or record file is named after, or None for any other file."""
    name = path.name
    for suffix in (DATA_SUFFIX, RECORD_SUFFIX):
        if name.endswith(suffix):
            algorithm, sep, hex_part = name.removesuffix(suffix).partition("-")
            if not sep:
                return None
            try:
                return str(Digest.parse(f"{algorithm}:{hex_part}"))
            except InvalidDigestError:
                return None
    return None


def write_record(record: Path, digest: Digest, size: int, offset: int, prefix: str) -> None:
    """Record that the data holds the first ``offset`` bytes of ``digest``, hashing to ``prefix``."""
    doc = {"digest": str(digest), "size": size, "offset": offset, "prefix": prefix}
    staging = record.with_name(record.name + ".new")
    staging.write_text(json.dumps(doc, sort_keys=True))
    os.replace(staging, record)


def discard(*files: Path) -> None:
    """Remove an ingest's files (whichever exist)."""
    for path in files:
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".new").unlink(missing_ok=True)


@dataclass(slots=True)
class Resumed:
    """An ingest accepted for resumption: its data file open at ``offset``, the prefix hashed."""

    file: BinaryIO
    offset: int
    hasher: Hasher


def resume(data: Path, record: Path, digest: Digest, size: int) -> Resumed | None:
    """Re-open the ingest of ``digest`` if its prefix checks out; None (and nothing left) if not.

    The data is cut back to the recorded offset (a crash can leave bytes written after the last
    record); a prefix that no longer hashes to the record is corrupt and removed.
    """
    if not data.exists():
        discard(data, record)
        return None
    problem = _check_record(record, digest, size)
    offset = 0
    if problem is None:
        offset, prefix = _recorded(record)
        if data.stat().st_size < offset:
            problem = f"data is shorter than the recorded {offset} bytes"
    if problem is None:
        file = open(data, "r+b")  # noqa: SIM115 - handed to the writer, which closes it
        try:
            hasher = new_hasher(digest.algorithm)
            left = offset
            while left:
                chunk = file.read(min(_READ_CHUNK, left))
                if not chunk:
                    break
                hasher.update(chunk)
                left -= len(chunk)
            actual = f"{digest.algorithm}:{hasher.hexdigest()}"
            if left or actual != prefix:
                problem = f"its first {offset} bytes hash to {actual}, recorded {prefix}"
            else:
                file.truncate(offset)
                file.seek(offset)
                return Resumed(file, offset, hasher)
        except BaseException:
            file.close()
            raise
        file.close()
    log.warning("ingest.discarded", digest=str(digest), path=str(data), problem=problem)
    discard(data, record)
    return None


def _check_record(record: Path, digest: Digest, size: int) -> str | None:
    """What is wrong with the record for a resume of ``digest`` with ``size``, or None."""
    try:
        doc = json.loads(record.read_text())
    except FileNotFoundError:
        return "no progress record"
    except (OSError, ValueError, RecursionError):
        return "unreadable progress record"
    if not isinstance(doc, dict):
        return "unreadable progress record"
    offset, prefix = doc.get("offset"), doc.get("prefix")
    if doc.get("digest") != str(digest):
        return f"the record is for {doc.get('digest')!r}"
    if doc.get("size") != size:
        return f"the record is for size {doc.get('size')!r}, the download for {size}"
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= size:
        return f"recorded offset {offset!r} is not within the blob"
    if not isinstance(prefix, str):
        return "no recorded prefix digest"
    return None


def _recorded(record: Path) -> tuple[int, str]:
    doc = json.loads(record.read_text())
    return int(doc["offset"]), str(doc["prefix"])


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def keep(temps: Iterable[Path], *, committed: set[str], now: float, expiry: float) -> set[Path]:
    """The temp files that belong to a resumable ingest: both files present, fresh, not committed.

    Everything else under ``tmp/`` is left over by a crash and may go.
    """
    by_digest: dict[str, list[Path]] = {}
    for path in temps:
        digest = digest_of(path)
        if digest is not None:
            by_digest.setdefault(digest, []).append(path)
    kept: set[Path] = set()
    for digest, files in by_digest.items():
        names = {p.name for p in files}
        data, record = paths(files[0].parent, Digest.parse(digest))
        if digest in committed or data.name not in names or record.name not in names:
            continue
        times = [t for t in (_mtime(data), _mtime(record)) if t is not None]
        if len(times) == 2 and max(times) >= now - expiry:
            kept |= {data, record}
    return kept
