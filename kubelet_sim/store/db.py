"""The store's metadata database: SQLite in WAL mode, schema migrations, serialised access.

One connection serves the whole store. Every call runs in a worker thread under one
:class:`anyio.Lock`, so the event loop never waits on SQLite or on the file work done inside
the same critical section (a rename, an unlink, an fsync of a directory). A worker call is not
abandoned on cancellation: a transaction that started always finishes, then the cancellation
is delivered.

Crash safety comes from SQLite itself: an interrupted transaction is rolled back from the WAL
when the database is opened again, and ``synchronous=FULL`` makes a commit durable before it
returns.

A read-only database (``images``, ``fsck --no-repair`` beside a running writer) opens the file
with ``mode=ro``, never migrates, refuses calls not marked read-only, and runs each call in one
read transaction, so it sees one consistent snapshot of what the writer committed.

A full disk reaches SQLite as ``SQLITE_FULL`` or, when it cannot even grow its WAL or shared
memory file, as ``SQLITE_IOERR`` ("disk I/O error"); the latter is reported as the store being
full when the store's filesystem has (next to) no space left.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import quote

import anyio
import anyio.to_thread

from kubelet_sim.errors import StoreError, StoreFullError

T = TypeVar("T")

# Each entry brings the schema from version i to i + 1; ``PRAGMA user_version`` says where we are.
MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: blobs, images and their references, tags and digests.
    """
    CREATE TABLE blobs (
        digest TEXT PRIMARY KEY,
        size INTEGER NOT NULL CHECK (size >= 0),
        committed_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE images (
        image_id TEXT NOT NULL,
        runtime_handler TEXT NOT NULL DEFAULT '',
        manifest_digest TEXT NOT NULL,
        config_digest TEXT NOT NULL,
        layers TEXT NOT NULL,
        platform TEXT NOT NULL,
        size INTEGER NOT NULL,
        first_used REAL NOT NULL,
        last_used REAL NOT NULL,
        pinned INTEGER NOT NULL DEFAULT 0,
        present INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (image_id, runtime_handler)
    );
    CREATE TABLE image_blobs (
        image_id TEXT NOT NULL,
        runtime_handler TEXT NOT NULL,
        digest TEXT NOT NULL,
        role TEXT NOT NULL,
        PRIMARY KEY (image_id, runtime_handler, digest),
        FOREIGN KEY (image_id, runtime_handler)
            REFERENCES images (image_id, runtime_handler) ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE INDEX image_blobs_by_digest ON image_blobs (digest);
    CREATE TABLE repo_tags (
        repo_tag TEXT NOT NULL,
        runtime_handler TEXT NOT NULL,
        image_id TEXT NOT NULL,
        PRIMARY KEY (repo_tag, runtime_handler),
        FOREIGN KEY (image_id, runtime_handler)
            REFERENCES images (image_id, runtime_handler) ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE INDEX repo_tags_by_image ON repo_tags (image_id, runtime_handler);
    CREATE TABLE repo_digests (
        repo_digest TEXT NOT NULL,
        runtime_handler TEXT NOT NULL,
        image_id TEXT NOT NULL,
        PRIMARY KEY (repo_digest, runtime_handler),
        FOREIGN KEY (image_id, runtime_handler)
            REFERENCES images (image_id, runtime_handler) ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE INDEX repo_digests_by_image ON repo_digests (image_id, runtime_handler);
    """,
    # 2: KEP-2535 pull records. Keyed by image ID and repository, not by runtime handler, and
    # independent of the images table: records outlive a removal until GC prunes them.
    """
    CREATE TABLE pull_records (
        image_id TEXT NOT NULL,
        repository TEXT NOT NULL,
        kind TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        uid TEXT NOT NULL,
        credential_hash TEXT NOT NULL,
        recorded_at REAL NOT NULL,
        PRIMARY KEY (image_id, repository, kind, namespace, name, uid)
    ) WITHOUT ROWID;
    """,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


FreeSpace = Callable[[Path], int]
"""Bytes an unprivileged writer may still use on the filesystem holding a folder (the seam for
full-disk tests)."""

# An I/O error while the filesystem has less than this left is the disk being full: SQLite
# writes whole pages and grows its WAL and shared-memory files in chunks of this order.
NEARLY_FULL: Final = 64 << 10


def free_bytes(path: Path) -> int:
    """``statvfs``: the bytes available to unprivileged writers on ``path``'s filesystem."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def translate(
    exc: sqlite3.Error,
    what: str,
    *,
    folder: Path | None = None,
    free_space: FreeSpace = free_bytes,
) -> StoreError:
    """Map a SQLite error to the store's errors; a full disk becomes :class:`StoreFullError`.

    ``SQLITE_FULL`` always is; ``SQLITE_IOERR`` is when ``folder``'s filesystem has less than
    :data:`NEARLY_FULL` bytes free. Blocking (``statvfs``): call it from the worker thread.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    where = f"store {folder}" if folder is not None else "the store"
    if code == sqlite3.SQLITE_FULL:
        return StoreFullError(f"{what}: the metadata database is full: {where} has no space left")
    if code is not None and code & 0xFF == sqlite3.SQLITE_IOERR and folder is not None:
        try:
            free = free_space(folder)
        except OSError:
            free = None
        if free is not None and free < NEARLY_FULL:
            return StoreFullError(
                f"{what}: {where} is full ({free} bytes free on its filesystem; SQLite: {exc})"
            )
    return StoreError(f"{what}: {exc}")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's ``user_version``."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply the missing migrations up to ``target``, each in its own transaction.

    Returns:
        The version the database was at before.

    Raises:
        StoreError: the database is newer than this code understands.
    """
    before = schema_version(conn)
    if before > SCHEMA_VERSION:
        raise StoreError(
            f"store schema version {before} is newer than this kubelet-sim supports "
            f"({SCHEMA_VERSION})"
        )
    for version in range(before, target):
        with transaction(conn):
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1:d}")
    return before


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path`` with the store's pragmas."""
    existed = path.exists()
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    try:
        if not existed:
            path.chmod(0o600)  # pull records are nobody else's business
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: cannot switch the database to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


class Database:
    """The single connection, used one call at a time from worker threads."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        read_only: bool = False,
        free_space: FreeSpace = free_bytes,
    ) -> None:
        self._conn = conn
        self.path = path
        self.read_only = read_only
        self._free_space = free_space
        self._lock = anyio.Lock()
        self._closed = False
        # Bumped around every call not marked read-only, so in-process caches of read results
        # know when to drop them (the store's root lock keeps other writers out).
        self.generation = 0

    @classmethod
    async def open(
        cls, path: Path, *, read_only: bool = False, free_space: FreeSpace = free_bytes
    ) -> Database:
        """Connect and migrate; SQLite rolls back any transaction a crash interrupted.

        With ``read_only`` the file must exist and be at this code's schema version.
        """

        def work() -> sqlite3.Connection:
            conn = connect_read_only(path) if read_only else connect(path)
            try:
                if read_only:
                    _check_readable(conn, path)
                else:
                    migrate(conn)
            except BaseException:
                conn.close()
                raise
            return conn

        def guarded() -> sqlite3.Connection:
            try:
                return work()
            except sqlite3.Error as exc:
                raise translate(
                    exc, f"opening {path}", folder=path.parent, free_space=free_space
                ) from exc

        conn = await anyio.to_thread.run_sync(guarded)
        return cls(conn, path, read_only=read_only, free_space=free_space)

    async def run(
        self, fn: Callable[[sqlite3.Connection], T], *, what: str = "store", readonly: bool = False
    ) -> T:
        """Run ``fn(conn)`` in a worker thread, alone; SQLite errors become store errors.

        Calls that may write bump :attr:`generation` before and after they run. On a read-only
        database only ``readonly`` calls are allowed, each in one read transaction.
        """
        async with self._lock:
            if self._closed:
                raise StoreError(f"{what}: the store is closed")
            if self.read_only and not readonly:
                raise StoreError(f"{what}: the store {self.path.parent} is open read-only")
            if not readonly:
                self.generation += 1
            try:
                return await anyio.to_thread.run_sync(self._call, fn, what)
            finally:
                if not readonly:
                    self.generation += 1

    def _call(self, fn: Callable[[sqlite3.Connection], T], what: str) -> T:
        """``fn(conn)`` in the worker thread, translating SQLite errors there (statvfs blocks)."""
        try:
            if not self.read_only:
                return fn(self._conn)
            self._conn.execute("BEGIN")
            try:
                return fn(self._conn)
            finally:
                self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise translate(
                exc, what, folder=self.path.parent, free_space=self._free_space
            ) from exc

    async def aclose(self) -> None:
        """Close the connection after the calls already queued."""
        async with self._lock:
            if not self._closed:
                self._closed = True
                await anyio.to_thread.run_sync(self._conn.close)


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Open the existing database at ``path`` for reading only (``mode=ro``: nothing is created)."""
    uri = f"file:{quote(str(path))}?mode=ro"
    return sqlite3.connect(
        uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30.0
    )


def _check_readable(conn: sqlite3.Connection, path: Path) -> None:
    """A reader never migrates: the schema must be the one this code writes."""
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"store schema version {version} is newer than this kubelet-sim supports "
            f"({SCHEMA_VERSION})"
        )
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"store {path.parent} has schema version {version}, older than {SCHEMA_VERSION}: "
            "open it for writing once (a pull, rmi, gc or fsck) to upgrade it"
        )
