"""Per-image snapshots unpacked from the store, and each container's writable rootfs over one.

What containerd's overlayfs snapshotter does, in miniature:

- **Snapshots.** An image's layers (the manifest's, in order) are applied into a temporary folder
  beside ``snapshots/<alg>-<hex>`` (the image id) and renamed into place when whole, after a
  ``syncfs``: a snapshot folder exists only complete. Temporary folders a crash left behind are
  removed before a snapshotter's first unpack (and an image's, before each of its unpacks).
  Concurrent requests for one image unpack it once
  (:class:`~kubelet_sim.core.singleflight.SingleFlight`); the unpack runs in a worker thread.
  Snapshots are immutable and kept until their folder is removed (no snapshot GC yet).
- **Layers** are applied one by one with :func:`~kubelet_sim.runtime.layers.apply_layer`
  (decompression, digest check, safe extraction and whiteouts: :mod:`kubelet_sim.runtime.layers`).
- **Container rootfs** (:meth:`Snapshotter.prepare`): an overlayfs mount (the snapshot as the
  read-only lower folder, a fresh upper and work folder) when running as root with overlay in
  ``/proc/filesystems``, else, or when the mount fails (an overlay upper on an overlay root, as in
  many CI containers), a copy keeping symlinks, modes, times and (as root) ownership; hardlinks are
  copied as separate files. :meth:`Snapshotter.remove` unmounts and deletes it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import anyio
import anyio.to_thread
import structlog

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.singleflight import SingleFlight
from kubelet_sim.errors import InvalidDigestError, ManifestError, RootfsError
from kubelet_sim.registry.manifests import ImageManifest, parse_manifest
from kubelet_sim.runtime.layers import (
    DIR_FLAGS,
    MAX_SYMLINKS,
    OPAQUE,
    WHITEOUT,
    Compression,
    Layer,
    Parts,
    apply_layer,
    layer_compression,
    open_in_root,
)
from kubelet_sim.store.records import ImageRecord

__all__ = [
    "MAX_SYMLINKS",
    "OPAQUE",
    "PARTIAL",
    "WHITEOUT",
    "Compression",
    "ContainerRootfs",
    "ImageContent",
    "Layer",
    "Parts",
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

PARTIAL = ".partial-"


class RootfsMode(StrEnum):
    OVERLAY = "overlay"
    """An overlayfs mount over the snapshot (root, overlay available)."""
    COPY = "copy"
    """A copy of the snapshot (anyone, anywhere)."""


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

    async def snapshot(self, image_id: str, runtime_handler: str | None = None) -> Path:
        """The unpacked snapshot of the present image ``image_id``, unpacking it once if needed;
        ``runtime_handler``: the handler the image was pulled for (default: this snapshotter's).

        Raises:
            RootfsError: the image is not present, or a layer cannot be unpacked safely (nothing
                is left of the attempt).
        """
        final = self.snapshot_path(image_id)
        if await anyio.to_thread.run_sync(final.is_dir):
            return final
        await self._sweep()

        handler = self._handler if runtime_handler is None else runtime_handler

        async def unpack() -> Path:
            return await self._unpack(image_id, final, handler)

        return await self._flights.run(image_id, unpack)

    async def _sweep(self) -> None:
        """Once per snapshotter, before its first unpack: remove what crashed unpacks left."""
        if self._swept:
            return
        async with self._sweeping:
            if not self._swept:
                await anyio.to_thread.run_sync(_sweep_partials, self.snapshots, "")
                self._swept = True

    async def _unpack(self, image_id: str, final: Path, handler: str) -> Path:
        layers = await image_layers(self._content, image_id, handler)
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

    async def prepare(
        self, image_id: str, target: Path, runtime_handler: str | None = None
    ) -> ContainerRootfs:
        """A writable root folder at ``target`` (which must not exist; its parents are made) over
        the image's snapshot.

        Raises:
            RootfsError: the snapshot cannot be made, or the folder cannot.
        """
        lower = await self.snapshot(image_id, runtime_handler)
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
        fd = os.open(temp, DIR_FLAGS)
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
    fd = os.open(path, DIR_FLAGS)
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
