"""The store's metadata database: SQLite in WAL mode, schema migrations, serialised access.

One connection serves the whole store. Every call runs in a worker thread under one
:class:`anyio.Lock`, so the event loop never waits on SQLite or on the file work done inside
the same critical section (a rename, an unlink, an fsync of a directory). A worker call is not
abandoned on cancellation: a transaction that started always finishes, then the cancellation
is delivered.

Crash safety comes from SQLite itself: an interrupted transaction is rolled back from the WAL
when the database is opened again, and ``synchronous=FULL`` makes a commit durable before it
returns.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, TypeVar

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


def translate(exc: sqlite3.Error, what: str) -> StoreError:
    """Map a SQLite error to the store's errors; a full disk becomes :class:`StoreFullError`."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL:
        return StoreFullError(f"{what}: the metadata database is full ({exc})")
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

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = anyio.Lock()
        self._closed = False
        # Bumped around every call not marked read-only, so in-process caches of read results
        # know when to drop them (the store's root lock keeps other processes out).
        self.generation = 0

    @classmethod
    async def open(cls, path: Path) -> Database:
        """Connect and migrate; SQLite rolls back any transaction a crash interrupted."""

        def work() -> sqlite3.Connection:
            conn = connect(path)
            try:
                migrate(conn)
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            conn = await anyio.to_thread.run_sync(work)
        except sqlite3.Error as exc:
            raise translate(exc, f"opening {path}") from exc
        return cls(conn, path)

    async def run(
        self, fn: Callable[[sqlite3.Connection], T], *, what: str = "store", readonly: bool = False
    ) -> T:
        """Run ``fn(conn)`` in a worker thread, alone; SQLite errors become store errors.

        Calls that may write bump :attr:`generation` before and after they run.
        """
        async with self._lock:
            if self._closed:
                raise StoreError(f"{what}: the store is closed")
            if not readonly:
                self.generation += 1
            try:
                return await anyio.to_thread.run_sync(fn, self._conn)
            except sqlite3.Error as exc:
                raise translate(exc, what) from exc
            finally:
                if not readonly:
                    self.generation += 1

    async def aclose(self) -> None:
        """Close the connection after the calls already queued."""
        async with self._lock:
            if not self._closed:
                self._closed = True
                await anyio.to_thread.run_sync(self._conn.close)
