"""Deterministic synthetic OCI/Docker images, built in memory from a seed.

Layers are real tar archives (one file of seeded random bytes each, optionally gzip-compressed
with a fixed mtime so the bytes are stable), configs carry the matching ``rootfs.diff_ids``, and
manifests, OCI indexes and Docker manifest lists reference them with exact sizes and digests.
The same seed always gives the same digests, so tests and benchmarks can name images ahead of time.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubelet_sim.core.digest import Digest
from kubelet_sim.registry import mediatypes as mt

_CREATED = "2024-01-01T00:00:00Z"


@dataclass(frozen=True, slots=True)
class Blob:
    """Content with its media type, digest and size.

    A *stub* (:meth:`stub`, for the modelled registry of virtual runs) is a layer described but
    never built: its ``size`` is declared and its digest is a stand-in derived from its name, so a
    10,000-node what-if never generates or hashes the bytes it pretends to move.
    """

    media_type: str
    data: bytes = field(repr=False)
    declared_size: int | None = None
    digest: Digest = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", Digest.from_bytes(self.data))

    @classmethod
    def stub(cls, media_type: str, name: str, size: int) -> Blob:
        """A layer of ``size`` bytes named ``name``: no bytes, a digest unique to the name."""
        return cls(media_type, f"kubelet-sim stub layer {name}".encode(), declared_size=size)

    @property
    def is_stub(self) -> bool:
        return self.declared_size is not None

    @property
    def size(self) -> int:
        return len(self.data) if self.declared_size is None else self.declared_size

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """The OCI descriptor of this blob, with ``extra`` fields (e.g. ``platform``)."""
        return {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
            **extra,
        }


@dataclass(frozen=True, slots=True)
class Image:
    """A single-platform image: manifest, config and layers."""

    manifest: Blob
    config: Blob
    layers: tuple[Blob, ...]
    platform: dict[str, str]

    def blobs(self) -> tuple[Blob, ...]:
        """Config and layers (what a push uploads before the manifest)."""
        return (self.config, *self.layers)

    @property
    def platform_string(self) -> str:
        parts = [self.platform["os"], self.platform["architecture"]]
        if self.platform.get("variant"):
            parts.append(self.platform["variant"])
        return "/".join(parts)


@dataclass(frozen=True, slots=True)
class Index:
    """A multi-platform index (OCI) or manifest list (Docker) over its images."""

    index: Blob
    images: tuple[Image, ...]
    extra_manifests: tuple[Blob, ...] = ()

    def image_for(self, platform: str) -> Image:
        """The image whose platform string is ``platform`` (e.g. ``linux/arm/v7``)."""
        for image in self.images:
            if image.platform_string == platform:
                return image
        raise KeyError(platform)


def random_bytes(seed: int | str, size: int) -> bytes:
    """``size`` deterministic pseudo-random bytes for ``seed``."""
    return random.Random(f"kubelet-sim:{seed}").randbytes(size)  # noqa: S311 - not for security


def tar_with_file(name: str, payload: bytes) -> bytes:
    """A deterministic tar archive holding one regular file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mtime = 0
        info.mode = 0o644
        archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


TAR_BLOCK = 512
TAR_RECORD = 20 * TAR_BLOCK  # tarfile.RECORDSIZE
_DEFLATE_STORED = 16_384  # zlib's buffer: random bytes go out as stored blocks of this size
_GZIP_REST = 200  # gzip frame, tar header and padding (zeros, compressed): measured 140-240


def tar_size(payload: int, name: str = "data/layer.bin") -> int:
    """Bytes of :func:`tar_with_file` for a ``payload``-byte file called ``name``: its header
    blocks (a PAX header too, for a name over 100 characters or a size over 8 GiB), the data
    padded to blocks and two end blocks, padded to a record."""
    info = tarfile.TarInfo(name)
    info.size = payload
    info.mtime = 0
    info.mode = 0o644
    header = len(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))
    blocks = header + -(-payload // TAR_BLOCK) * TAR_BLOCK + 2 * TAR_BLOCK
    return -(-blocks // TAR_RECORD) * TAR_RECORD


def build_layer(
    seed: int | str,
    size: int,
    *,
    compress: bool = True,
    docker: bool = False,
    stub: bool = False,
) -> Blob:
    """A layer whose tar holds ``size`` random bytes; gzip-compressed unless ``compress`` is false.

    ``stub``: the layer is described, not built (:meth:`Blob.stub`): its size is the tar's
    exactly, or for a compressed layer what gzip makes of random bytes (stored blocks of 16 KiB,
    5 bytes each, plus the frame and the compressed tar padding) within about 100 bytes.
    """
    name = f"data/{seed}.bin"
    if stub:
        if not compress:
            return Blob.stub(mt.OCI_LAYER, str(seed), tar_size(size, name))
        length = size + 5 * -(-size // _DEFLATE_STORED) + _GZIP_REST
        media_type = mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP
        return Blob.stub(media_type, str(seed), length)
    tar = tar_with_file(name, random_bytes(seed, size))
    if not compress:
        return Blob(mt.OCI_LAYER, tar)
    data = gzip.compress(tar, compresslevel=1, mtime=0)
    return Blob(mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP, data)


def _diff_id(layer: Blob) -> str:
    if layer.is_stub:
        return str(layer.digest)
    if layer.media_type in (mt.OCI_LAYER_GZIP, mt.DOCKER_LAYER_GZIP):
        return str(Digest.from_bytes(gzip.decompress(layer.data)))
    return str(layer.digest)


def parse_platform_spec(spec: str) -> dict[str, str]:
    """``os/arch[/variant]`` as an OCI platform object (no normalisation: the test says what it means)."""
    parts = spec.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform must be os/arch[/variant], got {spec!r}")
    platform = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        platform["variant"] = parts[2]
    return platform


def build_image(
    seed: int | str,
    platform: str = "linux/amd64",
    layer_sizes: Sequence[int] = (1024, 2048),
    *,
    shared_layers: Sequence[Blob] = (),
    docker: bool = False,
    compress: bool = True,
    labels: dict[str, str] | None = None,
    stub: bool = False,
) -> Image:
    """A single-platform image; ``shared_layers`` come first (a base image), then fresh layers
    (stubs with ``stub``: see :func:`build_layer`)."""
    plat = parse_platform_spec(platform)
    fresh = [
        build_layer(f"{seed}/{platform}/{i}", size, compress=compress, docker=docker, stub=stub)
        for i, size in enumerate(layer_sizes)
    ]
    layers = (*shared_layers, *fresh)
    config_doc: dict[str, Any] = {
        "created": _CREATED,
        **plat,
        "config": {"Labels": {"kubelet-sim.seed": str(seed), **(labels or {})}},
        "rootfs": {"type": "layers", "diff_ids": [_diff_id(layer) for layer in layers]},
        "history": [{"created": _CREATED, "created_by": "kubelet-sim synthetic"} for _ in layers],
    }
    config = Blob(mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG, canonical_json(config_doc))
    manifest_type = mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    return Image(Blob(manifest_type, canonical_json(manifest_doc)), config, layers, plat)


def build_index(
    images: Sequence[Image],
    *,
    docker: bool = False,
    attestations: bool = False,
    extra_entries: Sequence[dict[str, Any]] = (),
) -> Index:
    """An OCI index (or Docker manifest list) over ``images``, in the order given.

    With ``attestations`` each image gets a buildx-style attestation entry (``unknown/unknown``)
    that a platform matcher must never pick.
    """
    entries: list[dict[str, Any]] = []
    extra: list[Blob] = []
    for image in images:
        entries.append(image.manifest.descriptor(platform=dict(image.platform)))
        if attestations:
            attestation = _attestation_manifest(image)
            extra.append(attestation)
            entries.append(
                attestation.descriptor(
                    platform={"os": "unknown", "architecture": "unknown"},
                    annotations={
                        "vnd.docker.reference.type": "attestation-manifest",
                        "vnd.docker.reference.digest": str(image.manifest.digest),
                    },
                )
            )
    entries.extend(extra_entries)
    index_type = mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX
    doc = {"schemaVersion": 2, "mediaType": index_type, "manifests": entries}
    return Index(Blob(index_type, canonical_json(doc)), tuple(images), tuple(extra))


def _attestation_manifest(image: Image) -> Blob:
    empty = Blob(mt.OCI_EMPTY, b"{}")
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": empty.descriptor(),
        "layers": [empty.descriptor()],
        "annotations": {"kubelet-sim.attests": str(image.manifest.digest)},
    }
    return Blob(mt.OCI_MANIFEST, canonical_json(doc))


DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x")


def build_multiarch(
    seed: int | str,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    layer_sizes: Sequence[int] = (1024, 2048),
    *,
    docker: bool = False,
    attestations: bool = True,
    compress: bool = True,
) -> Index:
    """A multi-platform image: one image per platform, each with its own layers, under one index."""
    images = [
        build_image(seed, p, layer_sizes, docker=docker, compress=compress) for p in platforms
    ]
    return build_index(images, docker=docker, attestations=attestations and not docker)


def all_blobs(index: Index) -> Iterator[Blob]:
    """Every non-manifest blob of ``index``'s images, each once (shared layers deduplicated)."""
    seen: set[Digest] = set()
    for image in index.images:
        for blob in image.blobs():
            if blob.digest not in seen:
                seen.add(blob.digest)
                yield blob
    empty = Blob(mt.OCI_EMPTY, b"{}")
    if index.extra_manifests and empty.digest not in seen:
        # Attestation manifests reference the empty blob as config and layer.
        yield empty


def canonical_json(doc: Any) -> bytes:
    """Stable JSON bytes (sorted keys, no spaces) so digests depend only on content."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
