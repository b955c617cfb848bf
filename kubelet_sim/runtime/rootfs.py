"""Image layers unpacked safely into per-image snapshots, and each container's rootfs over one.

What containerd's unpacker and overlayfs snapshotter do, in miniature:

- **Snapshots.** An image's layers (the manifest's, in order) are applied into a temporary folder
  beside ``snapshots/<alg>-<hex>`` (the image id) and renamed into place when whole, after a
  ``syncfs``: a snapshot folder exists only complete. Temporary folders a crash left behind are
  removed before a snapshotter's first unpack (and an image's, before each of its unpacks).
  Concurrent requests for one image unpack it once
  (:class:`~kubelet_sim.core.singleflight.SingleFlight`); the unpack runs in a worker thread.
  Snapshots are immutable and kept until their folder is removed (no snapshot GC yet).
- **Layers** are tar, tar+gzip or tar+zstd by media type (zstd only when Python has
  ``compression.zstd``, 3.14+; otherwise a :class:`~kubelet_sim.errors.RootfsError` naming the
  media type). The compressed bytes are hashed while read and must match the layer digest.
- **Safe extraction** (:func:`apply_layer`), our own rather than ``tarfile``'s ``data`` filter,
  because as root we keep modes (setuid too) and ownership: a name that is absolute or has a
  ``..`` component is refused; parent folders are resolved inside the root component by
  component, following a symlink only when its target is relative and stays inside (an absolute
  target points out of the root on the host, so writing through it is refused); a hardlink must
  name an existing non-folder inside the root; the final component is never followed (an existing
  entry is replaced, except folder over folder, which merges). Every refusal is a
  :class:`~kubelet_sim.errors.RootfsError` naming the layer digest and the entry. Device nodes are
  skipped (rootless-safe; ``/dev`` is a tmpfs in the container anyway); FIFOs, symlinks, modes and
  mtimes are kept, ownership when root (not root: setuid/setgid bits are dropped and folders
  keep their owner's rwx, so the layers above can still write into them).
- **Whiteouts** (image-spec ``layer.md``): ``.wh.NAME`` removes NAME of the lower layers and
  ``.wh..wh..opq`` empties its folder of the lower layers' entries; both spare what the same layer
  adds, in whatever order the tar lists them. Other ``.wh..wh.`` names (aufs metadata) are skipped.
- **Container rootfs** (:meth:`Snapshotter.prepare`): an overlayfs mount (the snapshot as the
  read-only lower folder, a fresh upper and work folder) when running as root with overlay in
  ``/proc/filesystems``, else, or when the mount fails (an overlay upper on an overlay root, as in
  many CI containers), a copy keeping symlinks, modes, times and (as root) ownership; hardlinks are
  copied as separate files. :meth:`Snapshotter.remove` unmounts and deletes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gzip
import hashlib
import importlib
import io
import os
import secrets
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol

import anyio
import anyio.to_thread
import structlog

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.singleflight import SingleFlight
from kubelet_sim.errors import InvalidDigestError, ManifestError, RootfsError
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.manifests import ImageManifest, parse_manifest
from kubelet_sim.store.records import ImageRecord

__all__ = [
    "Compression",
    "ContainerRootfs",
    "ImageContent",
    "Layer",
    "RootfsMode",
    "Snapshotter",
    "SnapshotterStatistics",
    "apply_layer",
    "default_mode",
    "image_layers",
    "layer_compression",
    "open_in_root",
]

log = structlog.get_logger(__name__)

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_SYMLINKS = 40  # the kernel's MAXSYMLINKS
PARTIAL = ".partial-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_CHUNK = 1 << 20


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


class RootfsMode(StrEnum):
    OVERLAY = "overlay"
    """An overlayfs mount over the snapshot (root, overlay available)."""
    COPY = "copy"
    """A copy of the snapshot (anyone, anywhere)."""


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer of an image, as its manifest describes it."""

    digest: Digest
    media_type: str
    size: int


class ImageContent(Protocol):
    """What unpacking needs from the store (the durable :class:`~kubelet_sim.store.Store` has it)."""

    async def lookup(self, ref: str, runtime_handler: str = "") -> ImageRecord | None: ...

    async def read_blob(self, digest: Digest, *, max_size: int = ...) -> bytes: ...

    async def open_blob(self, digest: Digest) -> BinaryIO: ...


@dataclass(frozen=True, slots=True)
class ContainerRootfs:
    """A container's writable root folder and what was made for it."""

    path: Path
    mode: RootfsMode
    extra: tuple[Path, ...] = ()
    """The overlay's upper and work folders (removed with it)."""


@dataclass(frozen=True, slots=True)
class SnapshotterStatistics:
    unpacked: int
    """Snapshots unpacked by this snapshotter."""
    shared: int
    """Requests that waited for another request's unpack of the same image."""
    unpacking: int
    """Images being unpacked now."""


_UNCOMPRESSED = frozenset({mt.OCI_LAYER, "application/vnd.oci.image.layer.nondistributable.v1.tar"})
_GZIP = frozenset(
    {
        mt.OCI_LAYER_GZIP,
        mt.DOCKER_LAYER_GZIP,
        mt.DOCKER_FOREIGN_LAYER,
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    }
)
_ZSTD = frozenset(
    {mt.OCI_LAYER_ZSTD, "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"}
)


def layer_compression(media_type: str, digest: Digest | str = "") -> Compression:
    """How a layer of ``media_type`` is compressed.

    Raises:
        RootfsError: not a layer media type, or zstd without ``compression.zstd``.
    """
    if media_type in _UNCOMPRESSED:
        return Compression.NONE
    if media_type in _GZIP:
        return Compression.GZIP
    if media_type in _ZSTD:
        if _zstd_module() is None:
            raise RootfsError(
                str(digest),
                f"layer {digest}: media type {media_type} needs zstd, which this Python lacks "
                "(compression.zstd comes with Python 3.14)",
            )
        return Compression.ZSTD
    raise RootfsError(str(digest), f"layer {digest}: unsupported layer media type {media_type!r}")


def _zstd_module() -> Any:
    try:
        return importlib.import_module("compression.zstd")
    except ImportError:
        return None


async def image_layers(
    content: ImageContent, image_id: str, runtime_handler: str = ""
) -> tuple[Layer, ...]:
    """The layers of the present image ``image_id``, from its stored manifest, in order.

    Raises:
        RootfsError: the image is not present, or its manifest disagrees with its record.
    """
    record = await content.lookup(image_id, runtime_handler)
    if record is None:
        raise RootfsError(image_id, f"image {image_id} is not present in the store")
    raw = await content.read_blob(record.manifest_digest)
    try:
        manifest = parse_manifest(raw, None, record.manifest_digest)
    except ManifestError as exc:
        raise RootfsError(image_id, f"stored manifest {record.manifest_digest}: {exc}") from exc
    if not isinstance(manifest, ImageManifest) or [d.digest for d in manifest.layers] != [
        b.digest for b in record.layers
    ]:
        raise RootfsError(
            image_id, f"stored manifest {record.manifest_digest} does not list the image's layers"
        )
    return tuple(Layer(d.digest, d.media_type, d.size) for d in manifest.layers)


# -- safe extraction ---------------------------------------------------------------------


def apply_layer(root: Path, blob: IO[bytes], layer: Layer, *, owner: str = "") -> None:
    """Apply one layer's tar (compressed as its media type says) onto the folder ``root``; blocking.

    ``owner`` names whose rootfs this is in errors (an image id). The compressed bytes read must
    match ``layer``'s digest and size, checked once the archive is read.

    Raises:
        RootfsError: naming the layer and the entry (a path escaping the root, a bad tar, I/O).
    """
    label = owner or str(layer.digest)
    compression = layer_compression(layer.media_type, layer.digest)
    hashing = _HashingReader(blob, layer.digest)
    stream: io.BufferedIOBase
    if compression is Compression.GZIP:
        stream = gzip.GzipFile(fileobj=hashing, mode="rb")
    elif compression is Compression.ZSTD:
        stream = _zstd_module().ZstdFile(hashing, mode="rb")
    else:
        stream = io.BufferedReader(hashing, _COPY_CHUNK)
    root_fd = os.open(root, _DIR_FLAGS)
    writer = _LayerWriter(root_fd, layer, label)
    try:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    writer.apply(member, archive)
            writer.finish()
            while stream.read(_COPY_CHUNK):  # padding after the end-of-archive blocks
                pass
            while hashing.read(_COPY_CHUNK):
                pass
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise RootfsError(
                label, f"layer {layer.digest}: not a readable {layer.media_type}: {exc}"
            ) from exc
        except OSError as exc:
            raise RootfsError(label, f"layer {layer.digest}: {exc}") from exc
    finally:
        os.close(root_fd)
    if hashing.size != layer.size or hashing.digest() != layer.digest:
        raise RootfsError(
            label,
            f"layer {layer.digest}: stored content is {hashing.size} bytes with digest "
            f"{hashing.digest()}, not what the manifest says (run fsck)",
        )


class _HashingReader(io.RawIOBase):
    """A read-only stream that hashes and counts what passes through."""

    def __init__(self, raw: IO[bytes], digest: Digest) -> None:
        self._raw = raw
        self._algorithm = digest.algorithm
        self._hash = hashlib.new(digest.algorithm)
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._hash.update(data)
        self.size += n
        return n

    def digest(self) -> Digest:
        return Digest(self._algorithm, self._hash.hexdigest())


Parts = tuple[str, ...]


def _split(name: str, error: Callable[[str], RootfsError]) -> Parts:
    """An entry name's components; absolute names and ``..`` components are refused."""
    if "\x00" in name:
        raise error("the name holds a NUL byte")
    if name.startswith("/"):
        raise error("absolute path escapes the rootfs")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise error("'..' escapes the rootfs")
    return parts


class _Root:
    """Paths resolved inside one root folder (an open fd), never through a symlink leaving it.

    Only this process writes under the root while it is resolved (a private temporary folder),
    so a component checked to be a real folder stays one.
    """

    def __init__(self, fd: int, error: Callable[[str], RootfsError]) -> None:
        self.fd = fd
        self.error = error

    def resolve(self, parts: Sequence[str], *, create: bool) -> Parts | None:
        """The real folder ``parts`` names, in-root relative symlinks followed; None when it is
        missing (or not a folder) and not ``create``d.

        Raises:
            RootfsError: a symlink on the way leaves the root (absolute target, ``..`` above the
                root, a loop), or (``create``) a component is not a folder.
        """
        resolved: list[str] = []
        todo = list(reversed(parts))
        links = 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    raise self.error("a symlink in its path leads out of the rootfs")
                resolved.pop()
                continue
            rel = "/".join((*resolved, part))
            info = _lstat(rel, self.fd)
            if info is None:
                if not create:
                    return None
                os.mkdir(rel, 0o755, dir_fd=self.fd)
            elif stat.S_ISLNK(info.st_mode):
                links += 1
                if links > MAX_SYMLINKS:
                    raise self.error("too many levels of symlinks in its path")
                target = os.readlink(rel, dir_fd=self.fd)
                if target.startswith("/"):
                    # Inside the container this names the rootfs; on the host it leaves it.
                    raise self.error(
                        f"its path goes through symlink {rel!r} -> {target!r}, out of the rootfs"
                    )
                todo.extend(reversed(target.split("/")))
                continue
            elif not stat.S_ISDIR(info.st_mode):
                if not create:
                    return None
                raise self.error(f"{rel!r} in its path is not a folder")
            resolved.append(part)
        return tuple(resolved)

    @contextlib.contextmanager
    def open_dir(self, parts: Parts) -> Iterator[int]:
        """An fd of the real folder ``parts``, opened without following any symlink."""
        fd = os.dup(self.fd)
        try:
            for part in parts:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)


class _LayerWriter:
    """Applies one layer's entries under a root folder; every path is resolved inside it."""

    def __init__(self, root_fd: int, layer: Layer, label: str) -> None:
        self._root = _Root(root_fd, self._error)
        self._layer = layer
        self._label = label
        self._as_root = os.geteuid() == 0
        self._created: set[Parts] = set()  # what this layer wrote (its whiteouts spare them)
        self._dirs: list[tuple[Parts, tarfile.TarInfo]] = []  # folder attributes, set last
        self._entry = ""

    def _error(self, problem: str) -> RootfsError:
        return RootfsError(
            self._label, f"layer {self._layer.digest}: entry {self._entry!r}: {problem}"
        )

    def apply(self, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        self._entry = member.name
        parts = _split(member.name, self._error)
        try:
            self._apply(parts, member, archive)
        except OSError as exc:
            raise self._error(exc.strerror or str(exc)) from exc

    def _apply(self, parts: Parts, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        if not parts:
            if not member.isdir():
                raise self._error("the root of a layer must be a folder")
            self._dirs.append(((), member))
            return
        base = parts[-1]
        if base.startswith(WHITEOUT):
            self._whiteout(parts)
            return
        if member.ischr() or member.isblk():
            log.debug("rootfs.device_skipped", layer=str(self._layer.digest), entry=member.name)
            return
        if not (member.isdir() or member.isreg() or member.issym() or member.islnk()) and not (
            member.isfifo()
        ):
            log.debug("rootfs.entry_skipped", layer=str(self._layer.digest), entry=member.name)
            return
        parent = self._root.resolve(parts[:-1], create=True)
        assert parent is not None
        with self._root.open_dir(parent) as dir_fd:
            existing = _lstat(base, dir_fd)
            if existing is not None and not (member.isdir() and stat.S_ISDIR(existing.st_mode)):
                _remove(base, dir_fd, existing)  # replaced, unless folder over folder (merged)
                existing = None
            if member.isdir():
                if existing is None:
                    os.mkdir(base, 0o700, dir_fd=dir_fd)
                self._dirs.append(((*parent, base), member))
            elif member.isreg():
                self._file(base, dir_fd, member, archive)
            elif member.issym():
                os.symlink(member.linkname, base, dir_fd=dir_fd)
                if self._as_root:
                    os.chown(base, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)
                os.utime(base, (member.mtime, member.mtime), dir_fd=dir_fd, follow_symlinks=False)
            elif member.islnk():
                self._hardlink(base, dir_fd, member)
            else:
                os.mkfifo(base, 0o600, dir_fd=dir_fd)
                if self._as_root:
                    os.chown(base, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)
                os.chmod(base, self._mode(member), dir_fd=dir_fd)  # just made: not a symlink
                os.utime(base, (member.mtime, member.mtime), dir_fd=dir_fd, follow_symlinks=False)
        self._created.add((*parent, base))

    def _file(
        self, base: str, dir_fd: int, member: tarfile.TarInfo, archive: tarfile.TarFile
    ) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(base, flags, 0o600, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as out:
            source = archive.extractfile(member)
            if source is not None:
                shutil.copyfileobj(source, out, _COPY_CHUNK)
            out.flush()
            if self._as_root:
                os.fchown(fd, member.uid, member.gid)  # before the mode: chown clears setuid
            os.fchmod(fd, self._mode(member))
            os.utime(fd, (member.mtime, member.mtime))

    def _hardlink(self, base: str, dir_fd: int, member: tarfile.TarInfo) -> None:
        target = _split(member.linkname, self._error)
        parent = self._root.resolve(target[:-1], create=False) if target else None
        if parent is not None:
            with self._root.open_dir(parent) as target_fd:
                info = _lstat(target[-1], target_fd)
                if info is not None and not stat.S_ISDIR(info.st_mode):
                    os.link(
                        target[-1],
                        base,
                        src_dir_fd=target_fd,
                        dst_dir_fd=dir_fd,
                        follow_symlinks=False,
                    )
                    return
        raise self._error(f"hardlink target {member.linkname!r} is not a file in the rootfs")

    def _mode(self, member: tarfile.TarInfo, *, folder: bool = False) -> int:
        if self._as_root:
            return member.mode & 0o7777
        # Not root: no setuid/setgid, and folders stay writable for the layers above.
        return (member.mode & 0o1777) | (0o700 if folder else 0)

    def _whiteout(self, parts: Parts) -> None:
        base = parts[-1]
        parent = self._root.resolve(parts[:-1], create=False)
        if parent is None:
            return  # nothing below to hide
        if base == OPAQUE:
            self._clear_lower(parent)
        elif not base.startswith(WHITEOUT + WHITEOUT):  # else aufs metadata (.wh..wh.plnk)
            name = base[len(WHITEOUT) :]
            if not name or name in (".", ".."):
                raise self._error("a whiteout that names no entry")
            self._hide((*parent, name))

    def _hide(self, path: Parts) -> None:
        """Remove ``path`` as far as the lower layers made it (what this layer wrote stays)."""
        with self._root.open_dir(path[:-1]) as dir_fd:
            info = _lstat(path[-1], dir_fd)
            if info is None:
                return
            if path not in self._created:
                _remove(path[-1], dir_fd, info)
                return
        if stat.S_ISDIR(info.st_mode):
            self._clear_lower(path)  # a folder this layer merged: its lower entries go

    def _clear_lower(self, folder: Parts) -> None:
        with self._root.open_dir(folder) as dir_fd:
            names = os.listdir(dir_fd)
        for name in names:
            self._hide((*folder, name))

    def finish(self) -> None:
        """Set folder modes, owners and times, deepest last-listed first (children changed the
        mtimes; a read-only folder could not have taken them)."""
        for parts, member in reversed(self._dirs):
            self._entry = member.name
            try:
                with self._root.open_dir(parts) as fd:
                    if self._as_root:
                        os.fchown(fd, member.uid, member.gid)
                    os.fchmod(fd, self._mode(member, folder=True))
                    os.utime(fd, (member.mtime, member.mtime))
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    continue  # replaced by a later entry of the same layer
                raise self._error(exc.strerror or str(exc)) from exc


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def _remove(name: str, dir_fd: int, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)  # fd-based: never follows a symlink inside
    else:
        os.unlink(name, dir_fd=dir_fd)


def open_in_root(root: Path, path: str) -> BinaryIO | None:
    """Open the regular file ``path`` of a rootfs for reading, resolved inside ``root``; blocking.

    Symlinks are followed as extraction follows them (relative, staying inside). None when the
    file is missing, is not a regular file, or its path leads out of the root.
    """

    def refuse(problem: str) -> RootfsError:
        return RootfsError(str(root), f"{path}: {problem}")

    root_fd = os.open(root, _DIR_FLAGS)
    resolver = _Root(root_fd, refuse)
    try:
        parts: Sequence[str] = _split(path.lstrip("/"), refuse)
        for _ in range(MAX_SYMLINKS):
            if not parts or parts[-1] in ("..", "."):
                return None
            parent = resolver.resolve(parts[:-1], create=False)
            if parent is None:
                return None
            with resolver.open_dir(parent) as dir_fd:
                info = _lstat(parts[-1], dir_fd)
                if info is None or not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
                    return None
                if stat.S_ISREG(info.st_mode):
                    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
                    return os.fdopen(os.open(parts[-1], flags, dir_fd=dir_fd), "rb")
                target = os.readlink(parts[-1], dir_fd=dir_fd)
            if target.startswith("/"):
                return None
            parts = [p for p in (*parent, *target.split("/")) if p not in ("", ".")]
        return None
    except (RootfsError, OSError):
        return None
    finally:
        os.close(root_fd)


# -- snapshots and container rootfs -------------------------------------------------------


class Snapshotter:
    """Unpacked images under ``root/snapshots`` and container root folders made from them."""

    def __init__(
        self,
        root: Path,
        content: ImageContent,
        *,
        mode: RootfsMode | None = None,
        runtime_handler: str = "",
    ) -> None:
        self.root = Path(root)
        self.snapshots = self.root / "snapshots"
        self.mode = mode if mode is not None else default_mode()
        self._content = content
        self._handler = runtime_handler
        self._flights: SingleFlight[str, Path] = SingleFlight()
        self._swept = False
        self._sweeping = anyio.Lock()
        self._unpacked = 0

    def statistics(self) -> SnapshotterStatistics:
        stats = self._flights.statistics()
        return SnapshotterStatistics(self._unpacked, stats.joined, stats.in_flight)

    def snapshot_path(self, image_id: str) -> Path:
        """Where the snapshot of ``image_id`` lives (whether it exists or not).

        Raises:
            RootfsError: ``image_id`` is not a digest.
        """
        try:
            digest = Digest.parse(image_id)
        except InvalidDigestError as exc:
            raise RootfsError(image_id, f"image id {image_id!r} is not a digest") from exc
        return self.snapshots / f"{digest.algorithm}-{digest.hex}"

    async def snapshot(self, image_id: str) -> Path:
        """The unpacked snapshot of the present image ``image_id``, unpacking it once if needed.

        Raises:
            RootfsError: the image is not present, or a layer cannot be unpacked safely (nothing
                is left of the attempt).
        """
        final = self.snapshot_path(image_id)
        if await anyio.to_thread.run_sync(final.is_dir):
            return final
        await self._sweep()

        async def unpack() -> Path:
            return await self._unpack(image_id, final)

        return await self._flights.run(image_id, unpack)

    async def _sweep(self) -> None:
        """Once per snapshotter, before its first unpack: remove what crashed unpacks left."""
        if self._swept:
            return
        async with self._sweeping:
            if not self._swept:
                await anyio.to_thread.run_sync(_sweep_partials, self.snapshots, "")
                self._swept = True

    async def _unpack(self, image_id: str, final: Path) -> Path:
        layers = await image_layers(self._content, image_id, self._handler)
        started = anyio.current_time()
        blobs: list[BinaryIO] = []
        try:
            for layer in layers:
                blobs.append(await self._content.open_blob(layer.digest))
            # Not abandoned on cancellation: the thread finishes (or removes) its folder first.
            built = await anyio.to_thread.run_sync(
                _build_snapshot, final, list(zip(layers, blobs, strict=True)), image_id
            )
        finally:
            for blob in blobs:
                blob.close()
        self._unpacked += 1
        log.info(
            "rootfs.unpacked",
            image=image_id,
            layers=len(layers),
            seconds=round(anyio.current_time() - started, 4),
        )
        return built

    async def prepare(self, image_id: str, target: Path) -> ContainerRootfs:
        """A writable root folder at ``target`` (which must not exist; its parents are made) over
        the image's snapshot.

        Raises:
            RootfsError: the snapshot cannot be made, or the folder cannot.
        """
        lower = await self.snapshot(image_id)
        target = Path(target)
        if self.mode is RootfsMode.OVERLAY:
            try:
                return await anyio.to_thread.run_sync(_overlay, lower, target)
            except _MountError as exc:
                # This filesystem refuses overlay (an overlay root, say): copy from now on.
                log.warning("rootfs.overlay_refused", target=str(target), error=str(exc))
                self.mode = RootfsMode.COPY
            except OSError as exc:
                raise RootfsError(image_id, f"making {target}: {exc}") from exc
        try:
            await anyio.to_thread.run_sync(_copy_tree, lower, target)
        except OSError as exc:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_remove_tree, target)
            raise RootfsError(image_id, f"copying the snapshot to {target}: {exc}") from exc
        return ContainerRootfs(target, RootfsMode.COPY)

    async def remove(self, rootfs: ContainerRootfs) -> None:
        """Unmount (overlay) and delete a container's root folder; missing parts are fine.

        Raises:
            RootfsError: it cannot be unmounted or deleted.
        """
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(_remove_rootfs, rootfs)
            except OSError as exc:
                raise RootfsError(str(rootfs.path), f"removing the rootfs: {exc}") from exc

    async def discard(self, target: Path) -> None:
        """Remove whatever :meth:`prepare` made or half-made at ``target`` (after a failure or a
        cancellation lost its answer).

        Raises:
            RootfsError: it cannot be unmounted or deleted.
        """
        target = Path(target)
        upper, work = _overlay_folders(target)
        await self.remove(ContainerRootfs(target, RootfsMode.OVERLAY, (upper, work)))


def default_mode(geteuid: Callable[[], int] = os.geteuid) -> RootfsMode:
    """Overlay when root and the kernel lists overlayfs, else copy."""
    if geteuid() != 0:
        return RootfsMode.COPY
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        return RootfsMode.COPY
    has_overlay = any(line.split()[-1:] == ["overlay"] for line in filesystems.splitlines())
    return RootfsMode.OVERLAY if has_overlay else RootfsMode.COPY


def _sweep_partials(folder: Path, name: str) -> None:
    """Remove temporary folders of crashed unpacks (of snapshot ``name``, or all); blocking."""
    if not folder.is_dir():
        return
    for stale in folder.glob(f"{PARTIAL}{name}*"):
        log.info("rootfs.partial_removed", path=str(stale))
        _remove_tree(stale)


def _build_snapshot(final: Path, layers: Sequence[tuple[Layer, BinaryIO]], owner: str) -> Path:
    """Unpack into a temporary folder beside ``final`` and rename it into place; blocking."""
    parent = final.parent
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _sweep_partials(parent, final.name + "-")  # single flight: none of ours is in progress
    temp = parent / f"{PARTIAL}{final.name}-{secrets.token_hex(4)}"
    temp.mkdir(mode=0o755)
    try:
        os.chmod(temp, 0o755)  # noqa: S103 - the container's /, whatever the umask
        for layer, blob in layers:
            apply_layer(temp, blob, layer, owner=owner)
        fd = os.open(temp, _DIR_FLAGS)
        try:
            _check(_c().syncfs(fd), "syncfs")  # the files are on disk before the name is
        finally:
            os.close(fd)
        try:
            os.rename(temp, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            _remove_tree(temp)  # another process finished it first
        _fsync_dir(parent)
    except BaseException:
        _remove_tree(temp)
        raise
    return final


_libc: Any = None


def _c() -> Any:
    """libc, for mount(2), umount2(2) and syncfs(2) (Python has no wrappers)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), what)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, _DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _MountError(OSError):
    """The kernel refused the overlay mount."""


MNT_DETACH = 2


def _overlay_folders(target: Path) -> tuple[Path, Path]:
    return target.with_name(target.name + ".upper"), target.with_name(target.name + ".work")


def _overlay(lower: Path, target: Path) -> ContainerRootfs:
    """Mount an overlay at ``target``: ``lower`` read-only, fresh upper and work; blocking."""
    upper, work = _overlay_folders(target)
    if any(c in str(path) for path in (lower, upper, work) for c in ",:\\"):
        raise _MountError(errno.EINVAL, "a path holds an overlay option separator", str(target))
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    made: list[Path] = []
    try:
        for path in (upper, work, target):
            path.mkdir(mode=0o755)
            made.append(path)
        os.chmod(upper, os.stat(lower).st_mode & 0o7777)  # the merged root takes upper's mode
        options = f"lowerdir={lower},upperdir={upper},workdir={work}".encode()
        if _c().mount(b"overlay", os.fsencode(target), b"overlay", 0, options) != 0:
            code = ctypes.get_errno()
            raise _MountError(code, os.strerror(code), f"mount overlay on {target}")
    except BaseException:
        for path in made:
            _remove_tree(path)
        raise
    return ContainerRootfs(target, RootfsMode.OVERLAY, (upper, work))


def _remove_rootfs(rootfs: ContainerRootfs) -> None:
    if rootfs.mode is RootfsMode.OVERLAY and os.path.ismount(rootfs.path):
        target = os.fsencode(rootfs.path)
        if _c().umount2(target, 0) != 0:
            code = ctypes.get_errno()
            if code != errno.EBUSY:
                raise OSError(code, os.strerror(code), f"umount {rootfs.path}")
            # Something still holds it (a process that escaped the container's kill): detach,
            # the kernel frees it when the last user goes.
            _check(_c().umount2(target, MNT_DETACH), f"umount {rootfs.path}")
    for path in (rootfs.path, *rootfs.extra):
        _remove_tree(path)


def _remove_tree(path: Path) -> None:
    if os.path.ismount(path):
        raise OSError(errno.EBUSY, "still mounted", str(path))
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except NotADirectoryError:
        os.unlink(path)


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a snapshot keeping symlinks, modes, times, xattrs and (as root) owners; blocking."""
    as_root = os.geteuid() == 0
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    target.mkdir(mode=0o700)
    folders: list[tuple[Path, Path]] = [(source, target)]
    pending = [(source, target)]
    while pending:
        src_dir, dst_dir = pending.pop()
        with os.scandir(src_dir) as entries:
            for entry in entries:
                src = Path(entry.path)
                dst = dst_dir / entry.name
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    dst.mkdir(mode=0o700)
                    folders.append((src, dst))
                    pending.append((src, dst))
                    continue
                if stat.S_ISLNK(info.st_mode):
                    os.symlink(os.readlink(src), dst)
                elif stat.S_ISREG(info.st_mode):
                    shutil.copyfile(src, dst, follow_symlinks=False)
                elif stat.S_ISFIFO(info.st_mode):
                    os.mkfifo(dst, 0o600)
                else:
                    continue  # sockets and devices are never in a snapshot
                if as_root:
                    os.lchown(dst, info.st_uid, info.st_gid)  # before the mode: clears setuid
                shutil.copystat(src, dst, follow_symlinks=False)
    for src, dst in reversed(folders):  # deepest first: children no longer change the mtimes
        info = os.lstat(src)
        if as_root:
            os.lchown(dst, info.st_uid, info.st_gid)
        shutil.copystat(src, dst, follow_symlinks=False)
