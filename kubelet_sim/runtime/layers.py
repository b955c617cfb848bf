"""Image layers applied safely onto a folder: decompression, digest check, extraction, whiteouts.

What containerd's unpacker does with one layer, in miniature (the snapshots built from them are
:mod:`kubelet_sim.runtime.rootfs`'s):

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
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import importlib
import io
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, BinaryIO

import structlog

from kubelet_sim.core.digest import Digest
from kubelet_sim.errors import RootfsError
from kubelet_sim.registry import mediatypes as mt

__all__ = [
    "DIR_FLAGS",
    "MAX_SYMLINKS",
    "OPAQUE",
    "WHITEOUT",
    "Compression",
    "Layer",
    "Parts",
    "apply_layer",
    "layer_compression",
    "open_in_root",
]

log = structlog.get_logger(__name__)

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_SYMLINKS = 40  # the kernel's MAXSYMLINKS
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_CHUNK = 1 << 20


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer of an image, as its manifest describes it."""

    digest: Digest
    media_type: str
    size: int


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
    root_fd = os.open(root, DIR_FLAGS)
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
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
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

    root_fd = os.open(root, DIR_FLAGS)
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
