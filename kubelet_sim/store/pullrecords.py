"""KEP-2535 pull records: which credential identity pulled which image, merged as upstream does.

Models ``pulledRecordMergeNewCreds`` and ``PruneUnknownRecords`` in
``pkg/kubelet/images/pullmanager/image_pull_manager.go``: a record is kept per image ID and
repository (the ``credentialMapping`` key); a node-accessible entry (anonymous or node
credentials) absorbs everything after it, a new node-accessible pull replaces the secrets and
service accounts, secrets merge by ``(uid, namespace, name)`` with the newest hash winning.
Blocking functions; the store runs them in its worker thread.
"""

from __future__ import annotations

import sqlite3

from kubelet_sim.store.db import transaction
from kubelet_sim.store.records import CredentialIdentity, CredentialKind

_NODE_KINDS = (str(CredentialKind.NODE), str(CredentialKind.ANONYMOUS))


def record(
    conn: sqlite3.Connection,
    image_id: str,
    repository: str,
    identity: CredentialIdentity,
    now: float,
) -> bool:
    """Merge ``identity`` into the record of ``(image_id, repository)``; True when it changed."""
    scope = (image_id, repository)
    with transaction(conn):
        kinds = {
            k
            for (k,) in conn.execute(
                "SELECT kind FROM pull_records WHERE image_id = ? AND repository = ?", scope
            ).fetchall()
        }
        if kinds & set(_NODE_KINDS):
            return False  # nodePodsAccessible already: nothing changes
        if identity.kind.node_accessible:
            conn.execute("DELETE FROM pull_records WHERE image_id = ? AND repository = ?", scope)
            _insert(conn, scope, identity, now)
            return True
        coords = (str(identity.kind), identity.namespace, identity.name, identity.uid)
        row = conn.execute(
            "SELECT credential_hash FROM pull_records WHERE image_id = ? AND repository = ? "
            "AND kind = ? AND namespace = ? AND name = ? AND uid = ?",
            (*scope, *coords),
        ).fetchone()
        if row is not None and row[0] == identity.credential_hash:
            return False
        _insert(conn, scope, identity, now)
        return True


def _insert(
    conn: sqlite3.Connection, scope: tuple[str, str], identity: CredentialIdentity, now: float
) -> None:
    conn.execute(
        "INSERT INTO pull_records VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (image_id, repository, kind, namespace, name, uid) DO UPDATE SET "
        "credential_hash = excluded.credential_hash, recorded_at = excluded.recorded_at",
        (
            *scope,
            str(identity.kind),
            identity.namespace,
            identity.name,
            identity.uid,
            identity.credential_hash,
            now,
        ),
    )


def load(
    conn: sqlite3.Connection, image_id: str, repository: str | None
) -> list[CredentialIdentity]:
    """The identities recorded for ``image_id`` (in ``repository``, or in any), sorted."""
    sql = "SELECT DISTINCT kind, namespace, name, uid, credential_hash FROM pull_records "
    sql += "WHERE image_id = ?"
    params: tuple[str, ...] = (image_id,)
    if repository is not None:
        sql += " AND repository = ?"
        params = (image_id, repository)
    rows = conn.execute(sql + " ORDER BY kind, namespace, name, uid", params).fetchall()
    return [CredentialIdentity(CredentialKind(k), ns, n, u, h) for k, ns, n, u, h in rows]


def repositories(conn: sqlite3.Connection, image_id: str) -> list[str]:
    """The repositories (credential-mapping keys) ``image_id`` has records for."""
    rows = conn.execute(
        "SELECT DISTINCT repository FROM pull_records WHERE image_id = ? ORDER BY repository",
        (image_id,),
    ).fetchall()
    return [str(r) for (r,) in rows]


def prune_unknown(conn: sqlite3.Connection, before: float) -> int:
    """Delete records of images the store no longer has, last updated before ``before``."""
    with transaction(conn):
        cur = conn.execute(
            "DELETE FROM pull_records WHERE recorded_at < ? AND image_id NOT IN "
            "(SELECT image_id FROM images)",
            (before,),
        )
        return int(cur.rowcount)
