"""The image catalogue's SQL: records, references, tags, removal and refcounts.

Every function here is blocking and takes the store's one connection; :class:`Store` runs them in
a worker thread under its lock. A blob's reference count is the number of images that reference
it (``image_blobs`` rows), computed, never stored, so it cannot drift.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from kubelet_sim.core.digest import Digest
from kubelet_sim.errors import InvalidDigestError, InvalidImageNameError, StoreError
from kubelet_sim.store.blobs import BlobLayout
from kubelet_sim.store.db import transaction
from kubelet_sim.store.records import BlobRef, BlobRole, ImageKey, ImageRecord

_HEX64 = re.compile(r"[a-f0-9]{64}")
_IMAGE_COLUMNS = (
    "image_id, runtime_handler, manifest_digest, config_digest, layers, platform, size, "
    "first_used, last_used, pinned, present"
)


def split_reference(ref: str) -> tuple[str, str | None, str | None]:
    """``(name, tag, digest)`` of an already normalised reference string."""
    name, _, digest = ref.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    tag: str | None = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def image_id_of(ref: str) -> str | None:
    """The image ID ``ref`` names, when it is one (``sha256:<hex>`` or a bare 64-hex string)."""
    if _HEX64.fullmatch(ref):
        return f"sha256:{ref}"
    if "/" not in ref:
        try:
            return str(Digest.parse(ref))
        except InvalidDigestError:
            return None
    return None


def check_repo_tag(value: str) -> str:
    """A repo tag must be ``name:tag``."""
    name, tag, digest = split_reference(value)
    if not name or not tag or digest is not None:
        raise InvalidImageNameError(value, "a repo tag must have the form name:tag")
    return value


def check_repo_digest(value: str) -> str:
    """A repo digest must be ``name@<valid digest>``."""
    name, tag, digest = split_reference(value)
    if not name or tag is not None or digest is None:
        raise InvalidImageNameError(value, "a repo digest must have the form name@digest")
    try:
        Digest.parse(digest)
    except InvalidDigestError as exc:
        raise InvalidImageNameError(value, exc.message) from None
    return value


def resolve(
    conn: sqlite3.Connection, ref: str, handler: str, *, include_absent: bool = False
) -> ImageKey | None:
    """The key of the image ``ref`` names for ``handler``: an image ID, tag or repo digest."""
    image_id = image_id_of(ref)
    row: tuple[str] | None
    if image_id is not None:
        row = (image_id,)
    else:
        name, tag, digest = split_reference(ref)
        if digest is not None:  # name:tag@digest: the digest wins
            row = conn.execute(
                "SELECT image_id FROM repo_digests WHERE repo_digest = ? AND runtime_handler = ?",
                (f"{name}@{digest}", handler),
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT image_id FROM repo_tags WHERE repo_tag = ? AND runtime_handler = ?",
                (f"{name}:{tag or 'latest'}", handler),
            ).fetchone()
    if row is None:
        return None
    found = conn.execute(
        "SELECT present FROM images WHERE image_id = ? AND runtime_handler = ?", (row[0], handler)
    ).fetchone()
    if found is None or not (found[0] or include_absent):
        return None
    return (row[0], handler)


def load(conn: sqlite3.Connection, key: ImageKey) -> ImageRecord | None:
    """The record for ``key``, present or not."""
    row = conn.execute(
        f"SELECT {_IMAGE_COLUMNS} FROM images WHERE image_id = ? AND runtime_handler = ?",  # noqa: S608
        key,
    ).fetchone()
    return None if row is None else _record(conn, row)


def list_records(
    conn: sqlite3.Connection, handler: str | None, *, include_absent: bool
) -> list[ImageRecord]:
    """All records, ordered by image ID then handler."""
    where, params = [], []
    if handler is not None:
        where.append("runtime_handler = ?")
        params.append(handler)
    if not include_absent:
        where.append("present = 1")
    sql = f"SELECT {_IMAGE_COLUMNS} FROM images"  # noqa: S608
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = conn.execute(sql + " ORDER BY image_id, runtime_handler", params).fetchall()
    return [_record(conn, row) for row in rows]


def _record(conn: sqlite3.Connection, row: sqlite3.Row | tuple[object, ...]) -> ImageRecord:
    image_id, handler = str(row[0]), str(row[1])
    tags = conn.execute(
        "SELECT repo_tag FROM repo_tags WHERE image_id = ? AND runtime_handler = ? "
        "ORDER BY repo_tag",
        (image_id, handler),
    ).fetchall()
    digests = conn.execute(
        "SELECT repo_digest FROM repo_digests WHERE image_id = ? AND runtime_handler = ? "
        "ORDER BY repo_digest",
        (image_id, handler),
    ).fetchall()
    layers = tuple(BlobRef(Digest.parse(d), int(s)) for d, s in json.loads(str(row[4])))
    return ImageRecord(
        image_id=image_id,
        repo_tags=tuple(t for (t,) in tags),
        repo_digests=tuple(d for (d,) in digests),
        manifest_digest=Digest.parse(str(row[2])),
        config_digest=Digest.parse(str(row[3])),
        layers=layers,
        platform=str(row[5]),
        size=int(str(row[6])),
        runtime_handler=handler,
        first_used=float(str(row[7])),
        last_used=float(str(row[8])),
        pinned=bool(row[9]),
        present=bool(row[10]),
    )


@dataclass(frozen=True, slots=True)
class ImageBlobs:
    """What an image commit references: manifest, config, ordered layers and extra blobs."""

    manifest: Digest
    config: Digest
    layers: tuple[tuple[Digest, int | None], ...]
    extras: tuple[Digest, ...]

    def roles(self) -> dict[str, tuple[BlobRole, int | None]]:
        """Distinct digests with their first role and declared size (None when not declared)."""
        out: dict[str, tuple[BlobRole, int | None]] = {}
        out.setdefault(str(self.manifest), (BlobRole.MANIFEST, None))
        out.setdefault(str(self.config), (BlobRole.CONFIG, None))
        for digest, size in self.layers:
            out.setdefault(str(digest), (BlobRole.LAYER, size))
        for digest in self.extras:
            out.setdefault(str(digest), (BlobRole.EXTRA, None))
        return out


def check_committed(
    image_id: str, roles: dict[str, tuple[BlobRole, int | None]], sizes: Mapping[str, int]
) -> None:
    """Every blob of an image (``ImageBlobs.roles``) is committed (in ``sizes``), with the size
    its manifest declares; the one check both stores make before recording an image.

    Raises:
        StoreError: naming the image, the blob and its role.
    """
    for digest, (role, declared) in roles.items():
        size = sizes.get(digest)
        if size is None:
            raise StoreError(
                f"cannot commit image {image_id}: {role} blob {digest} is not in the store"
            )
        if declared is not None and declared != size:
            raise StoreError(
                f"cannot commit image {image_id}: {role} blob {digest} has size {size}, "
                f"the manifest says {declared}"
            )


def commit(
    conn: sqlite3.Connection,
    layout: BlobLayout,
    key: ImageKey,
    blobs: ImageBlobs,
    *,
    repo_tag: str | None,
    repo_digest: str | None,
    platform: str,
    now: float,
) -> str | None:
    """Record the image whole, in one transaction; every blob must be committed on disk.

    A record is one manifest: when ``key`` is recorded with another manifest (two manifests with
    one config, e.g. the same image recompressed), this one replaces it, and the tags and repo
    digests that named the old manifest go with it, so that none of them can name content it
    did not resolve to. Returns the replaced manifest's digest, if any.
    """
    roles = blobs.roles()
    sizes = committed_sizes(conn, roles)
    check_committed(key[0], roles, sizes)
    for digest, (role, _) in roles.items():
        size = sizes[digest]
        path = layout.path(Digest.parse(digest))
        try:
            on_disk = os.stat(path).st_size
        except FileNotFoundError:
            on_disk = -1
        if on_disk != size:
            raise StoreError(
                f"cannot commit image {key[0]}: {role} blob {digest} is missing on disk"
            )
    layers_json = json.dumps([[str(d), sizes[str(d)]] for d, _ in blobs.layers])
    total = sum(sizes.values())
    with transaction(conn):
        row = conn.execute(
            "SELECT manifest_digest FROM images WHERE image_id = ? AND runtime_handler = ?", key
        ).fetchone()
        replaced = None if row is None or str(row[0]) == str(blobs.manifest) else str(row[0])
        if replaced is not None:
            conn.execute("DELETE FROM repo_tags WHERE image_id = ? AND runtime_handler = ?", key)
            conn.execute("DELETE FROM repo_digests WHERE image_id = ? AND runtime_handler = ?", key)
        conn.execute(
            f"INSERT INTO images ({_IMAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 1) "  # noqa: S608
            "ON CONFLICT (image_id, runtime_handler) DO UPDATE SET "
            "manifest_digest = excluded.manifest_digest, config_digest = excluded.config_digest, "
            "layers = excluded.layers, platform = excluded.platform, size = excluded.size, "
            "last_used = excluded.last_used, present = 1",
            (*key, str(blobs.manifest), str(blobs.config), layers_json, platform, total, now, now),
        )
        conn.execute("DELETE FROM image_blobs WHERE image_id = ? AND runtime_handler = ?", key)
        conn.executemany(
            "INSERT INTO image_blobs (image_id, runtime_handler, digest, role) VALUES (?, ?, ?, ?)",
            [(*key, digest, str(role)) for digest, (role, _) in roles.items()],
        )
        # A tag or repo digest names one image per handler: moving it takes it from the old one.
        if repo_tag is not None:
            conn.execute(
                "DELETE FROM repo_tags WHERE repo_tag = ? AND runtime_handler = ?",
                (repo_tag, key[1]),
            )
            conn.execute("INSERT INTO repo_tags VALUES (?, ?, ?)", (repo_tag, key[1], key[0]))
        if repo_digest is not None:
            conn.execute(
                "DELETE FROM repo_digests WHERE repo_digest = ? AND runtime_handler = ?",
                (repo_digest, key[1]),
            )
            conn.execute("INSERT INTO repo_digests VALUES (?, ?, ?)", (repo_digest, key[1], key[0]))
    return replaced


def committed_sizes(conn: sqlite3.Connection, digests: Iterable[str]) -> dict[str, int]:
    """Sizes of those of ``digests`` that have a committed blob row."""
    out: dict[str, int] = {}
    for digest in digests:
        row = conn.execute("SELECT size FROM blobs WHERE digest = ?", (digest,)).fetchone()
        if row is not None:
            out[digest] = int(row[0])
    return out


def remove(
    conn: sqlite3.Connection, key: ImageKey, protected: frozenset[str]
) -> list[tuple[str, int]]:
    """Delete the image and the blob rows nothing references any more (unless ``protected``).

    Returns:
        ``(digest, size)`` of the blob rows deleted; the caller unlinks their files after the
        commit, so a crash in between leaves only unreferenced files, never a dangling reference.
    """
    digests = [
        d
        for (d,) in conn.execute(
            "SELECT digest FROM image_blobs WHERE image_id = ? AND runtime_handler = ?", key
        ).fetchall()
    ]
    with transaction(conn):
        conn.execute("DELETE FROM images WHERE image_id = ? AND runtime_handler = ?", key)
        return free_unreferenced(conn, digests, protected)


def free_unreferenced(
    conn: sqlite3.Connection, digests: Sequence[str], protected: frozenset[str]
) -> list[tuple[str, int]]:
    """Delete the rows of those ``digests`` no image references; inside a transaction."""
    freed = []
    for digest in digests:
        if digest in protected or refcount(conn, digest) > 0:
            continue
        row = conn.execute(
            "DELETE FROM blobs WHERE digest = ? RETURNING size", (digest,)
        ).fetchone()
        if row is not None:
            freed.append((digest, int(row[0])))
    return freed


def refcount(conn: sqlite3.Connection, digest: str) -> int:
    """How many images reference ``digest``."""
    row = conn.execute("SELECT COUNT(*) FROM image_blobs WHERE digest = ?", (digest,)).fetchone()
    return int(row[0])


def refcounts(conn: sqlite3.Connection) -> dict[str, int]:
    """Every committed blob with the number of images referencing it."""
    rows = conn.execute(
        "SELECT b.digest, COUNT(r.digest) FROM blobs b "
        "LEFT JOIN image_blobs r ON r.digest = b.digest GROUP BY b.digest ORDER BY b.digest"
    ).fetchall()
    return {str(d): int(n) for d, n in rows}


def unreferenced(conn: sqlite3.Connection, committed_before: float) -> list[str]:
    """Committed blobs no image references, committed before ``committed_before``."""
    rows = conn.execute(
        "SELECT digest FROM blobs WHERE committed_at < ? AND NOT EXISTS "
        "(SELECT 1 FROM image_blobs r WHERE r.digest = blobs.digest) ORDER BY digest",
        (committed_before,),
    ).fetchall()
    return [str(d) for (d,) in rows]


def image_blobs(conn: sqlite3.Connection, key: ImageKey) -> list[tuple[str, str]]:
    """``(digest, role)`` of every blob the image references."""
    rows = conn.execute(
        "SELECT digest, role FROM image_blobs WHERE image_id = ? AND runtime_handler = ? "
        "ORDER BY role, digest",
        key,
    ).fetchall()
    return [(str(d), str(r)) for d, r in rows]


def unlink_blobs(layout: BlobLayout, digests: Iterable[str]) -> list[str]:
    """Remove blob files (after their rows are gone); returns the ones that could not be removed."""
    failed = []
    for digest in digests:
        try:
            layout.path(Digest.parse(digest)).unlink(missing_ok=True)
        except OSError:
            failed.append(digest)  # left as an unreferenced file: fsck or the next open adopts it
    return failed
