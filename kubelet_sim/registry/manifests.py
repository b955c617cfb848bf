"""Descriptors, image manifests and indexes: parsed from untrusted bytes and validated.

Docker manifest lists are treated as OCI indexes and Docker v2 manifests as OCI manifests
(containerd ``images.IsIndexType``/``IsManifestType``). Schema 1 and unknown media types are refused
with a :class:`~kubelet_sim.errors.ManifestError`; index entries of unknown media types are kept but
never chosen (image-spec: "MUST NOT generate an error").
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.platforms import Platform
from kubelet_sim.errors import (
    DigestMismatchError,
    InvalidDigestError,
    ManifestError,
    PlatformError,
)
from kubelet_sim.registry import mediatypes as mt

MAX_DESCRIPTOR_SIZE = (1 << 63) - 1  # a descriptor's size is an int64 (image-spec descriptor.md)


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor."""

    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()
    urls: tuple[str, ...] = ()
    data: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, obj: object, where: str) -> Descriptor:
        """Validate a descriptor object found at ``where`` (a JSON path used in errors)."""
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: descriptor must be an object")
        media_type = obj.get("mediaType")
        if not isinstance(media_type, str) or not media_type:
            raise ManifestError(f"{where}.mediaType: missing or not a string")
        raw_digest = obj.get("digest")
        try:
            digest = Digest.parse(raw_digest if isinstance(raw_digest, str) else "")
        except InvalidDigestError as exc:
            raise ManifestError(f"{where}.digest: {exc}") from exc
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"{where}.size: must be a non-negative integer, got {size!r}")
        if size > MAX_DESCRIPTOR_SIZE:
            raise ManifestError(f"{where}.size: {size} does not fit an int64")
        platform = None
        if obj.get("platform") is not None:
            try:
                platform = Platform.from_oci(obj["platform"])
            except PlatformError as exc:
                raise ManifestError(f"{where}.platform: {exc}") from exc
        annotations = obj.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise ManifestError(f"{where}.annotations: must be an object")
        urls = obj.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ManifestError(f"{where}.urls: must be a list of strings")
        data = None
        if isinstance(obj.get("data"), str):
            try:
                data = base64.b64decode(obj["data"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ManifestError(f"{where}.data: not valid base64") from exc
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            platform=platform,
            annotations=tuple(sorted((str(k), str(v)) for k, v in annotations.items())),
            urls=tuple(urls),
            data=data,
        )

    def to_json(self) -> dict[str, Any]:
        """The descriptor as an OCI JSON object."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.platform is not None:
            out["platform"] = self.platform.to_oci()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.urls:
            out["urls"] = list(self.urls)
        return out

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEX_TYPES

    @property
    def is_manifest(self) -> bool:
        return self.media_type in mt.MANIFEST_TYPES


@dataclass(frozen=True, slots=True)
class ImageManifest:
    """A single-platform image manifest (OCI or Docker v2 schema 2)."""

    media_type: str
    digest: Digest
    config: Descriptor
    layers: tuple[Descriptor, ...]
    raw: bytes = field(repr=False)
    artifact_type: str | None = None

    @property
    def size(self) -> int:
        """Bytes of manifest, config and layers, as ``crictl images`` counts an image."""
        return len(self.raw) + self.config.size + sum(layer.size for layer in self.layers)


@dataclass(frozen=True, slots=True)
class ImageIndex:
    """A multi-platform index (OCI) or manifest list (Docker)."""

    media_type: str
    digest: Digest
    manifests: tuple[Descriptor, ...]
    raw: bytes = field(repr=False)


def clean_media_type(content_type: str | None) -> str:
    """A ``Content-Type`` without parameters, lower-cased (clients SHOULD ignore parameters)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def verify_content(raw: bytes, digest: Digest, *, what: str) -> None:
    """Check ``raw`` against ``digest``.

    Raises:
        DigestMismatchError: naming the expected and the actual digest.
    """
    actual = Digest.from_bytes(raw, digest.algorithm)
    if actual != digest:
        raise DigestMismatchError(str(digest), str(actual), what=what)


def parse_manifest(
    raw: bytes, content_type: str | None, digest: Digest
) -> ImageManifest | ImageIndex:
    """Parse verified manifest bytes as a manifest or an index.

    The media type comes from ``Content-Type``; the body's own ``mediaType`` must agree with it when
    both are present. A generic or missing content type falls back to the body's ``mediaType``, then
    to the document's shape (``manifests`` -> index, ``config`` -> manifest), as containerd does.

    Raises:
        ManifestError: schema 1, unknown media types, invalid JSON or fields.
    """
    header_type = clean_media_type(content_type)
    if header_type == "text/plain":
        header_type = mt.DOCKER_SCHEMA1_SIGNED  # registry.access.redhat.com quirk, as containerd
    try:
        doc = json.loads(raw)
    except RecursionError:  # brackets nested past the interpreter's recursion limit
        raise ManifestError(f"manifest {digest} is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        if header_type in mt.SCHEMA1_TYPES:
            raise _schema1_error(digest) from exc
        raise ManifestError(f"manifest {digest} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ManifestError(f"manifest {digest} is not a JSON object")
    body_type = doc.get("mediaType")
    if body_type is not None and not isinstance(body_type, str):
        raise ManifestError(f"manifest {digest}: mediaType must be a string")
    if (
        doc.get("schemaVersion") == 1
        or header_type in mt.SCHEMA1_TYPES
        or body_type in mt.SCHEMA1_TYPES
    ):
        raise _schema1_error(digest)
    media_type = header_type
    if media_type in ("", "application/json", "application/octet-stream"):
        if body_type:
            media_type = body_type
        elif "manifests" in doc:
            media_type = mt.OCI_INDEX
        elif "config" in doc:
            media_type = mt.OCI_MANIFEST
    if body_type and body_type != media_type:
        raise ManifestError(
            f"manifest {digest}: mediaType {body_type!r} does not match Content-Type {media_type!r}"
        )
    if doc.get("schemaVersion") != 2:
        raise ManifestError(
            f"manifest {digest}: schemaVersion must be 2, got {doc.get('schemaVersion')!r}"
        )
    if media_type in mt.INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError(f"index {digest}: manifests must be a list")
        manifests = tuple(
            Descriptor.from_json(entry, f"manifests[{i}]") for i, entry in enumerate(entries)
        )
        _check_sizes(digest, [(f"manifests[{i}]", d) for i, d in enumerate(manifests)])
        return ImageIndex(media_type, digest, manifests, raw)
    if media_type in mt.MANIFEST_TYPES:
        config = Descriptor.from_json(doc.get("config"), "config")
        layers_doc = doc.get("layers")
        if not isinstance(layers_doc, list):
            raise ManifestError(f"manifest {digest}: layers must be a list")
        layers = tuple(
            Descriptor.from_json(layer, f"layers[{i}]") for i, layer in enumerate(layers_doc)
        )
        _check_sizes(
            digest, [("config", config), *((f"layers[{i}]", d) for i, d in enumerate(layers))]
        )
        artifact_type = doc.get("artifactType")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise ManifestError(f"manifest {digest}: artifactType must be a string")
        return ImageManifest(media_type, digest, config, layers, raw, artifact_type or None)
    raise ManifestError(
        f"manifest {digest}: unsupported media type {media_type or '(none)'!r}", code="UNSUPPORTED"
    )


def _check_sizes(digest: Digest, entries: list[tuple[str, Descriptor]]) -> None:
    """One digest, one size: content cannot be two lengths, so such a manifest lies.

    Raises:
        ManifestError: naming both places and sizes.
    """
    seen: dict[Digest, tuple[str, int]] = {}
    for where, desc in entries:
        first = seen.setdefault(desc.digest, (where, desc.size))
        if first[1] != desc.size:
            raise ManifestError(
                f"manifest {digest}: {where} lists {desc.digest} with size {desc.size}, "
                f"{first[0]} with size {first[1]}"
            )


def _schema1_error(digest: Digest) -> ManifestError:
    return ManifestError(
        f"manifest {digest}: Docker Image Format v1 and Docker Image manifest version 2, schema 1 "
        "support is disabled by default and will be removed; this image must be rebuilt "
        "with a schema 2 or OCI manifest",
        code="UNSUPPORTED",
    )
