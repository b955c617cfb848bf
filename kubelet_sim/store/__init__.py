"""The node's local image store: content-addressed blobs, a SQLite catalogue, fsck and image GC.

Layout under the root: ``blobs/<alg>/<hex>``, ``tmp/`` (writes in progress, resumable ingests),
``quarantine/``, ``store.db`` (WAL) and ``lock`` (one writer at a time; readers need none). See
:class:`Store` for the operations. :class:`MemoryStore` is the light store of simulated nodes
(in memory, every byte verified, nothing on disk); both satisfy :class:`NodeStore`, what a node
needs from its store.
"""

from kubelet_sim.store.blobs import FLUSH_BYTES, BlobWriter, FileOpener, WritableFile
from kubelet_sim.store.content import ContentStore
from kubelet_sim.store.fsck import FsckReport, fsck
from kubelet_sim.store.gc import FreedImage, GCEvent, GCPolicy, GCReason, GCResult, garbage_collect
from kubelet_sim.store.memory import HashingSink, MemoryStore
from kubelet_sim.store.port import NodeStore
from kubelet_sim.store.records import (
    BlobRef,
    CredentialIdentity,
    CredentialKind,
    ImageKey,
    ImageRecord,
    SizedDigest,
    format_key,
    hash_credentials,
)
from kubelet_sim.store.store import ImageInspection, Removal, Store

__all__ = [
    "FLUSH_BYTES",
    "BlobRef",
    "BlobWriter",
    "ContentStore",
    "CredentialIdentity",
    "CredentialKind",
    "FileOpener",
    "FreedImage",
    "FsckReport",
    "GCEvent",
    "GCPolicy",
    "GCReason",
    "GCResult",
    "HashingSink",
    "ImageInspection",
    "ImageKey",
    "ImageRecord",
    "MemoryStore",
    "NodeStore",
    "Removal",
    "SizedDigest",
    "Store",
    "WritableFile",
    "format_key",
    "fsck",
    "garbage_collect",
    "hash_credentials",
]
