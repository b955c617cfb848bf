"""fsck: re-hash every blob, check every reference, quarantine damage, tell the truth.

A corrupt or missing blob loses its row and its file moves to ``<root>/quarantine/``; every
image that referenced it is marked not present, so the next pull fetches the blob again and
re-commits the image. Blob files without a row (a crash between rename and commit) are
re-hashed and adopted when whole; leftover temp files are removed; files that are not named
by a digest are quarantined.

The same pass, without re-hashing recorded blobs (sizes only), is the store's recovery on open.
Hashing runs in worker threads outside the catalogue lock; the repair re-checks each finding
under the lock, so fsck can run next to pulls and removals. A report-only fsck in another process
than the writer (a read-only store) re-checks its findings against the database the same way,
so a blob removed meanwhile is not reported missing.

Fresh ingests (resumable partial layer downloads, see :mod:`~kubelet_sim.store.ingest`) are kept
and listed as ``partial_ingests``; stale ones, and ingests of blobs committed since, are removed
with the other temp files.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_thread
import structlog

from kubelet_sim.core.digest import Digest
from kubelet_sim.store import ingest
from kubelet_sim.store.blobs import BlobLayout, Scan, hash_file, io_error
from kubelet_sim.store.db import Database, transaction
from kubelet_sim.store.records import ImageKey, format_key

log = structlog.get_logger(__name__)

Fingerprint = tuple[int, int, int]  # (inode, size, mtime_ns): "the same file as when hashed"


@dataclass(frozen=True, slots=True)
class FsckReport:
    """What fsck found and did. Only the fields listed in :attr:`damaged` count as damage."""

    checked: int = 0
    corrupt: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    stray: tuple[str, ...] = ()
    affected_images: tuple[str, ...] = ()
    database_errors: tuple[str, ...] = ()
    untracked: tuple[str, ...] = ()
    temp_files: tuple[str, ...] = ()
    partial_ingests: tuple[str, ...] = ()
    unreferenced: tuple[str, ...] = ()
    incomplete_images: tuple[str, ...] = ()
    quarantined: tuple[str, ...] = ()
    repaired: bool = False
    rehashed: bool = True

    @property
    def damaged(self) -> bool:
        """Corrupt or missing blobs, stray files, broken images or database errors were found."""
        return bool(
            self.corrupt or self.missing or self.stray or self.affected_images
            or self.database_errors
        )  # fmt: skip

    @property
    def clean(self) -> bool:
        """Nothing damaged."""
        return not self.damaged

    @property
    def changed(self) -> bool:
        """Anything was found that a crash or damage leaves behind (temp files included)."""
        return self.damaged or bool(self.untracked or self.temp_files)

    def summary(self) -> dict[str, int]:
        """Counts per finding, for logs."""
        return {k: len(v) for k, v in asdict(self).items() if isinstance(v, tuple) and v}

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        out: dict[str, object] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
        }
        out["damaged"] = self.damaged
        return out


@dataclass(slots=True)
class _Snapshot:
    blobs: dict[str, int]
    refs: dict[str, set[ImageKey]]
    present: set[ImageKey]
    absent: set[ImageKey]
    db_errors: list[str]
    inconsistent: set[ImageKey]


def _snapshot(conn: sqlite3.Connection, check_db: bool) -> _Snapshot:
    db_errors: list[str] = []
    if check_db:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        db_errors += [f"quick_check: {r[0]}" for r in rows if r[0] != "ok"]
        for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check").fetchall():
            db_errors.append(f"foreign key: {table} row {rowid} points to a missing {parent}")
    blobs = {str(d): int(s) for d, s in conn.execute("SELECT digest, size FROM blobs")}
    refs: dict[str, set[ImageKey]] = defaultdict(set)
    for image_id, handler, digest in conn.execute(
        "SELECT image_id, runtime_handler, digest FROM image_blobs"
    ):
        refs[str(digest)].add((str(image_id), str(handler)))
    present: set[ImageKey] = set()
    absent: set[ImageKey] = set()
    inconsistent: set[ImageKey] = set()
    for image_id, handler, manifest, config, layers, is_present in conn.execute(
        "SELECT image_id, runtime_handler, manifest_digest, config_digest, layers, present "
        "FROM images"
    ):
        key = (str(image_id), str(handler))
        (present if is_present else absent).add(key)
        expected = {str(manifest), str(config), *(str(d) for d, _ in json.loads(layers))}
        for digest in sorted(expected):
            if key not in refs.get(digest, set()):
                inconsistent.add(key)
                db_errors.append(f"image {format_key(key)}: blob {digest} is not referenced")
    return _Snapshot(blobs, dict(refs), present, absent, db_errors, inconsistent)


def _fingerprint(path: Path) -> Fingerprint | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class FsckTarget(Protocol):
    """What fsck needs of a store (:class:`~kubelet_sim.store.content.ContentStore` has it)."""

    @property
    def layout(self) -> BlobLayout: ...

    @property
    def db(self) -> Database: ...

    @property
    def ingest_expiry(self) -> float: ...

    def now(self) -> float: ...

    def active_temp_files(self) -> frozenset[Path]: ...


@dataclass(slots=True)
class _Findings:
    """What the read-only pass found; the repair re-checks each item under the lock."""

    snap: _Snapshot
    scan: Scan
    corrupt: dict[str, Fingerprint | None]
    missing: list[str]
    adopt: dict[str, int]  # untracked blob files that hash right, with their sizes
    ingests: frozenset[Path] = frozenset()  # fresh resumable ingests: kept


async def fsck(store: FsckTarget, *, repair: bool = True, rehash: bool = True) -> FsckReport:
    """Check the store; with ``repair`` quarantine damage and mark broken images not present.

    Args:
        repair: act on the findings; without it, only report.
        rehash: re-hash every recorded blob; without it only sizes are checked (the quick pass
            run on open). Blob files without a row are always re-hashed.
    """
    layout = store.layout
    snap = await store.db.run(lambda conn: _snapshot(conn, rehash), what="fsck", readonly=True)
    scan: Scan = await anyio.to_thread.run_sync(layout.scan)
    fresh = await anyio.to_thread.run_sync(
        partial(
            ingest.keep,
            scan.temps,
            committed=set(snap.blobs),
            now=store.now(),
            expiry=store.ingest_expiry,
        )
    )
    findings = _Findings(snap, scan, {}, [], {}, frozenset(fresh))
    await _check_recorded(findings, rehash)
    await _check_untracked(findings)
    if not repair:
        if store.db.read_only:
            await store.db.run(
                lambda conn: _confirm(conn, findings, layout), what="fsck", readonly=True
            )
        return _report(findings, layout, rehash)
    report = _report(findings, layout, rehash)
    active = store.active_temp_files()
    now = store.now()
    try:
        result = await store.db.run(
            lambda conn: _repair(conn, findings, report, layout, active, now), what="fsck repair"
        )
    except OSError as exc:
        raise io_error(exc, "fsck repair") from exc
    if result.damaged:
        log.warning("fsck found damage", root=str(layout.root), **result.summary())
    return result


def _confirm(conn: sqlite3.Connection, findings: _Findings, layout: BlobLayout) -> None:
    """Drop findings another process's writes explain (a reader runs beside the writer).

    A blob removed (row, then file) after the snapshot is not missing; one committed after the
    scan is not untracked.
    """
    rows = {str(d) for (d,) in conn.execute("SELECT digest FROM blobs")}
    findings.missing[:] = [
        d for d in findings.missing if d in rows and not layout.path(Digest.parse(d)).exists()
    ]
    findings.corrupt = {
        d: fp for d, fp in findings.corrupt.items() if d in rows or d not in findings.snap.blobs
    }
    findings.adopt = {d: s for d, s in findings.adopt.items() if d not in rows}
    findings.snap.blobs = {d: s for d, s in findings.snap.blobs.items() if d in rows}


async def _check_recorded(findings: _Findings, rehash: bool) -> None:
    """Blobs with a row: missing files, wrong sizes and (with ``rehash``) wrong content."""
    for digest, size in sorted(findings.snap.blobs.items()):
        path = findings.scan.blobs.get(digest)
        before = None if path is None else await anyio.to_thread.run_sync(_fingerprint, path)
        if path is None or before is None:
            findings.missing.append(digest)
        elif before[1] != size or (rehash and not await _hash_ok(path, digest, size)):
            findings.corrupt[digest] = before


async def _check_untracked(findings: _Findings) -> None:
    """Blob files without a row (a crash between rename and commit): adopt whole ones."""
    for digest, path in sorted(findings.scan.blobs.items()):
        if digest in findings.snap.blobs:
            continue
        before = await anyio.to_thread.run_sync(_fingerprint, path)
        if before is None:
            continue
        if await _hash_ok(path, digest, before[1]):
            findings.adopt[digest] = before[1]
        else:
            findings.corrupt[digest] = before


def _report(findings: _Findings, layout: BlobLayout, rehash: bool) -> FsckReport:
    """The report of the read-only pass."""
    snap, scan = findings.snap, findings.scan
    dangling = {d for d in snap.refs if d not in snap.blobs}
    bad = set(findings.corrupt) | set(findings.missing) | dangling
    affected = {k for d in bad for k in snap.refs.get(d, set()) if k in snap.present}
    affected |= snap.inconsistent & snap.present
    unreferenced = sorted(d for d in snap.blobs if d not in snap.refs and d not in bad)
    return FsckReport(
        checked=len(snap.blobs) + len(findings.adopt),
        corrupt=tuple(sorted(findings.corrupt)),
        missing=tuple(findings.missing),
        stray=tuple(str(p.relative_to(layout.root)) for p in scan.stray),
        affected_images=tuple(sorted(format_key(k) for k in affected)),
        database_errors=tuple(snap.db_errors),
        untracked=tuple(sorted(findings.adopt)),
        temp_files=tuple(
            str(p.relative_to(layout.root)) for p in scan.temps if p not in findings.ingests
        ),
        partial_ingests=_ingest_names(findings.ingests, layout),
        unreferenced=tuple(unreferenced),
        incomplete_images=tuple(sorted(format_key(k) for k in snap.absent | affected)),
        rehashed=rehash,
    )


def _repair(
    conn: sqlite3.Connection,
    findings: _Findings,
    report: FsckReport,
    layout: BlobLayout,
    active: frozenset[Path],
    now: float,
) -> FsckReport:
    """Act on the findings under the catalogue lock (in its worker thread); the final report.

    Every finding is re-checked first: a pull may have repaired or replaced a file meanwhile.
    """
    still_corrupt = {
        d: fp
        for d, fp in findings.corrupt.items()
        if _fingerprint(layout.path(Digest.parse(d))) == fp
    }
    still_missing = [
        d
        for d in findings.missing
        if not layout.path(Digest.parse(d)).exists()
        and conn.execute("SELECT 1 FROM blobs WHERE digest = ?", (d,)).fetchone()
    ]
    with transaction(conn):
        for digest in [*still_corrupt, *still_missing]:
            conn.execute("DELETE FROM blobs WHERE digest = ?", (digest,))
        adopted = _adopt(conn, findings.adopt, still_corrupt, layout, now)
        newly = _mark_broken_images(conn, findings.snap)
    quarantined = _quarantine(still_corrupt, findings.scan, layout)
    removed = _remove_temp_files(findings.scan, layout, active | findings.ingests)
    absent = {
        (str(a), str(b))
        for a, b in conn.execute(
            "SELECT image_id, runtime_handler FROM images WHERE present = 0"
        ).fetchall()
    }
    return FsckReport(
        checked=report.checked,
        corrupt=tuple(sorted(still_corrupt)),
        missing=tuple(still_missing),
        stray=report.stray,
        affected_images=tuple(sorted(format_key(k) for k in newly)),
        database_errors=report.database_errors,
        untracked=tuple(sorted(adopted)),
        temp_files=tuple(removed),
        partial_ingests=report.partial_ingests,
        unreferenced=report.unreferenced,
        incomplete_images=tuple(sorted(format_key(k) for k in absent)),
        quarantined=tuple(quarantined),
        repaired=True,
        rehashed=report.rehashed,
    )


def _adopt(
    conn: sqlite3.Connection,
    adopt: dict[str, int],
    still_corrupt: dict[str, Fingerprint | None],
    layout: BlobLayout,
    now: float,
) -> list[str]:
    """Record the untracked blob files that are still there with their hashed size."""
    adopted = []
    for digest, size in adopt.items():
        fp = _fingerprint(layout.path(Digest.parse(digest)))
        if fp is not None and fp[1] == size and digest not in still_corrupt:
            conn.execute("INSERT OR IGNORE INTO blobs VALUES (?, ?, ?)", (digest, size, now))
            adopted.append(digest)
    return adopted


def _mark_broken_images(conn: sqlite3.Connection, snap: _Snapshot) -> set[ImageKey]:
    """Mark present images that lack a blob (or whose rows disagree) not present."""
    broken = conn.execute(
        "SELECT DISTINCT i.image_id, i.runtime_handler FROM images i "
        "JOIN image_blobs r USING (image_id, runtime_handler) "
        "WHERE i.present = 1 AND r.digest NOT IN (SELECT digest FROM blobs)"
    ).fetchall()
    newly = {(str(a), str(b)) for a, b in broken} | (snap.inconsistent & snap.present)
    for key in newly:
        conn.execute(
            "UPDATE images SET present = 0 WHERE image_id = ? AND runtime_handler = ?", key
        )
    return newly


def _quarantine(
    still_corrupt: dict[str, Fingerprint | None], scan: Scan, layout: BlobLayout
) -> list[str]:
    """Move corrupt blob files and stray files aside; their paths under the root."""
    quarantined = []
    for digest in still_corrupt:
        path = layout.path(Digest.parse(digest))
        if path.exists():
            label = digest.replace(":", "-")
            quarantined.append(str(layout.quarantine_file(path, label).relative_to(layout.root)))
    for path in scan.stray:
        if path.exists():
            label = "stray-" + "-".join(path.relative_to(layout.blobs).parts)
            quarantined.append(str(layout.quarantine_file(path, label).relative_to(layout.root)))
    return quarantined


def _ingest_names(ingests: frozenset[Path], layout: BlobLayout) -> tuple[str, ...]:
    """The data files of the kept ingests, relative to the root."""
    return tuple(
        sorted(
            str(p.relative_to(layout.root)) for p in ingests if p.name.endswith(ingest.DATA_SUFFIX)
        )
    )


def _remove_temp_files(scan: Scan, layout: BlobLayout, active: frozenset[Path]) -> list[str]:
    """Remove leftover temp files, except those of writers still open and fresh ingests."""
    removed = []
    for path in scan.temps:
        if path not in active:
            path.unlink(missing_ok=True)
            removed.append(str(path.relative_to(layout.root)))
    return removed


async def _hash_ok(path: Path, digest: str, size: int) -> bool:
    algorithm = digest.partition(":")[0]
    try:
        actual, actual_size = await anyio.to_thread.run_sync(hash_file, path, algorithm)
    except FileNotFoundError:
        return False
    return actual == digest and actual_size == size
