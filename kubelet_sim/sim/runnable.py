"""A runnable image from Debian's busybox-static, for the runc handler's tests and the demo.

One gzip layer: the static ``/bin/busybox`` with symlinks for the common applets, a tiny
``/etc/passwd`` and ``/etc/group`` (root and nobody), ``/tmp`` (1777) and ``/var/www`` (for
``httpd``); an OCI image config with ``Cmd ["sh"]``, no ``Entrypoint`` and the ``Env`` below. The
tar is deterministic (fixed mtimes and owners, gzip without a timestamp), so the digests change
only with the busybox binary. The platform is the host's: the binary is.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.digest import Digest
from kubelet_sim.core.platforms import host_platform
from kubelet_sim.core.reference import ImageReference
from kubelet_sim.errors import KubeletSimError
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.runtime.port import ImageConfig
from kubelet_sim.sim.images import Blob, Image, canonical_json
from kubelet_sim.sim.seed import push_image

__all__ = [
    "APPLETS",
    "BUSYBOX",
    "BUSYBOX_CMD",
    "BUSYBOX_ENV",
    "BusyboxNotFoundError",
    "build_busybox_image",
    "image_config",
    "push_busybox_image",
]

BUSYBOX = Path("/bin/busybox")
INSTALL_HINT = "apt-get install busybox-static"
BUSYBOX_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FROM_IMAGE=1")
BUSYBOX_CMD = ("sh",)
# Fixed rather than `busybox --list`: the image's digest should not depend on how this Debian
# release configured busybox. Every one of these is in Debian 12's busybox-static.
APPLETS = (
    "[", "ash", "awk", "base64", "basename", "cat", "chmod", "cp", "cut", "date", "dd", "df",
    "diff", "dirname", "du", "echo", "env", "expr", "false", "find", "free", "grep", "gunzip",
    "gzip", "head", "hostname", "httpd", "id", "ip", "kill", "killall", "less", "ln", "ls",
    "md5sum", "mkdir", "mkfifo", "mktemp", "more", "mv", "nc", "netstat", "nproc", "nslookup",
    "od", "pidof", "ping", "printf", "ps", "pwd", "readlink", "realpath", "rm", "rmdir", "sed",
    "seq", "sh", "sha256sum", "sleep", "sort", "stat", "sync", "tail", "tar", "tee", "test",
    "timeout", "top", "touch", "tr", "true", "uname", "uniq", "uptime", "usleep", "vi", "wc",
    "wget", "which", "whoami", "xargs", "yes", "zcat",
)  # fmt: skip
_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = b"root:x:0:\nnobody:x:65534:\n"
_FOLDERS = (("bin", 0o755), ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777), ("var", 0o755))
_CREATED = "2024-01-01T00:00:00Z"
_MTIME = 1_704_067_200  # _CREATED


class BusyboxNotFoundError(KubeletSimError):
    """No static busybox binary to build the image from (missing, or dynamically linked)."""

    def __init__(self, path: Path, problem: str = "not found") -> None:
        self.path = path
        super().__init__(f"{path} {problem}: {INSTALL_HINT} (or run scripts/bootstrap.sh)")


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    kind: bytes
    mode: int = 0o755
    data: bytes = b""
    target: str = ""


def _layer_tar(busybox: bytes) -> bytes:
    entries = [_Entry(name, tarfile.DIRTYPE, mode) for name, mode in _FOLDERS]
    entries += [
        _Entry("bin/busybox", tarfile.REGTYPE, 0o755, busybox),
        *(_Entry(f"bin/{a}", tarfile.SYMTYPE, 0o777, target="busybox") for a in APPLETS),
        _Entry("etc/group", tarfile.REGTYPE, 0o644, _GROUP),
        _Entry("etc/passwd", tarfile.REGTYPE, 0o644, _PASSWD),
        _Entry("var/www", tarfile.DIRTYPE, 0o755),
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type, info.mode, info.mtime = entry.kind, entry.mode, _MTIME
            info.linkname, info.size = entry.target, len(entry.data)
            archive.addfile(info, io.BytesIO(entry.data) if entry.data else None)
    return buffer.getvalue()


def _static_elf(binary: bytes) -> bool:
    """True for an ELF executable without a ``PT_INTERP`` program header (no dynamic loader)."""
    if binary[:4] != b"\x7fELF" or binary[4] not in (1, 2) or binary[5] not in (1, 2):
        return False
    wide, order = binary[4] == 2, "<" if binary[5] == 1 else ">"
    offset, size, count = struct.unpack_from(
        order + ("Q14xHH" if wide else "I10xHH"), binary, 0x20 if wide else 0x1C
    )
    types = (
        struct.unpack_from(order + "I", binary, offset + i * size)[0]
        for i in range(count)
        if offset + i * size + 4 <= len(binary)
    )
    return all(kind != PT_INTERP for kind in types)


PT_INTERP = 3


def build_busybox_image(*, busybox: Path = BUSYBOX) -> Image:
    """The runnable busybox image (one gzip layer, OCI config and manifest); blocking.

    Raises:
        BusyboxNotFoundError: ``busybox`` is not a file (names it and the package to install).
    """
    try:
        binary = Path(busybox).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise BusyboxNotFoundError(Path(busybox)) from None
    if not _static_elf(binary):
        # A rootfs with busybox alone has no dynamic loader: exec would fail with ENOENT.
        raise BusyboxNotFoundError(Path(busybox), "is not a statically linked executable")
    tar = _layer_tar(binary)
    layer = Blob(mt.OCI_LAYER_GZIP, gzip.compress(tar, compresslevel=6, mtime=0))
    host = host_platform()
    platform = {"os": host.os, "architecture": host.architecture}
    if host.variant:
        platform["variant"] = host.variant
    config_doc = {
        "created": _CREATED,
        **platform,
        "config": {"Cmd": list(BUSYBOX_CMD), "Env": list(BUSYBOX_ENV)},
        "rootfs": {"type": "layers", "diff_ids": [str(Digest.from_bytes(tar))]},
        "history": [{"created": _CREATED, "created_by": "kubelet-sim busybox-static"}],
    }
    config = Blob(mt.OCI_CONFIG, canonical_json(config_doc))
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }
    return Image(Blob(mt.OCI_MANIFEST, canonical_json(manifest_doc)), config, (layer,), platform)


def image_config(image: Image) -> ImageConfig:
    """What a container takes from ``image``'s OCI config (Entrypoint, Cmd, Env, ...)."""
    doc = json.loads(image.config.data).get("config") or {}
    return ImageConfig(
        entrypoint=tuple(doc.get("Entrypoint") or ()),
        cmd=tuple(doc.get("Cmd") or ()),
        env=tuple(doc.get("Env") or ()),
        working_dir=doc.get("WorkingDir") or "",
        user=doc.get("User") or "",
    )


async def push_busybox_image(
    client: RegistryClient,
    ref: str | ImageReference,
    *,
    busybox: Path = BUSYBOX,
    creds: Credentials | None = None,
) -> Image:
    """Build the busybox image (in a worker thread) and push it to ``ref``; returns it.

    Raises:
        BusyboxNotFoundError: ``busybox`` is missing.
        RegistryError: the push failed.
    """
    image = await anyio.to_thread.run_sync(lambda: build_busybox_image(busybox=busybox))
    await push_image(client, ref, image, creds=creds)
    return image
