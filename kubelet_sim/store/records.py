"""Values the image store hands out: image records, blob references and pull-record identities."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol, TypeAlias

from kubelet_sim.core.digest import Digest
from kubelet_sim.errors import StoreError

_HEX64 = re.compile(r"[a-f0-9]{64}")

# (image_id, runtime_handler); the handler is "" unless RuntimeClassInImageCriApi is on.
ImageKey: TypeAlias = tuple[str, str]


class SizedDigest(Protocol):
    """Anything with a digest and a size: :class:`BlobRef`, a registry ``Descriptor``."""

    @property
    def digest(self) -> Digest: ...

    @property
    def size(self) -> int: ...


@dataclass(frozen=True, slots=True)
class BlobRef:
    """A blob named by digest, with its size in bytes."""

    digest: Digest
    size: int

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise StoreError(
                f"blob {self.digest}: size must be a non-negative integer, got {self.size!r}"
            )


class BlobRole(StrEnum):
    """Why an image references a blob."""

    MANIFEST = "manifest"
    CONFIG = "config"
    LAYER = "layer"
    EXTRA = "extra"  # e.g. the index the tag resolved to


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image as the store knows it, keyed by ``(image_id, runtime_handler)``.

    ``size`` is the sum of the sizes of the distinct blobs the image references (manifest,
    config, compressed layers and extra blobs such as the index), which is what containerd's
    CRI reports as the image size (``images.Size``) and what ``crictl images`` prints.
    ``last_used`` starts at the commit time and moves with :meth:`Store.touch` and GC detection.
    """

    image_id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    manifest_digest: Digest
    config_digest: Digest
    layers: tuple[BlobRef, ...]
    platform: str
    size: int
    runtime_handler: str
    first_used: float
    last_used: float
    pinned: bool
    present: bool = True

    @property
    def key(self) -> ImageKey:
        """The GC/record key ``(image_id, runtime_handler)``."""
        return (self.image_id, self.runtime_handler)


def format_key(key: ImageKey) -> str:
    """The kubelet's GC record key: ``"<imageID>,<handler>"``, or the bare ID (image_gc_manager.go)."""
    image_id, handler = key
    return f"{image_id},{handler}" if handler else image_id


class CredentialKind(StrEnum):
    """Where the credentials of a pull came from (KEP-2535 ``ImagePullCredentials``)."""

    SECRET = "secret"  # noqa: S105 - a kind of credential source, not a credential
    SERVICE_ACCOUNT = "serviceaccount"
    NODE = "node"  # node docker config or a plugin without a service account
    ANONYMOUS = "anonymous"

    @property
    def node_accessible(self) -> bool:
        """Node and anonymous pulls map to ``nodePodsAccessible: true`` upstream."""
        return self in _NODE_ACCESSIBLE


_NODE_ACCESSIBLE: Final = frozenset({CredentialKind.NODE, CredentialKind.ANONYMOUS})


@dataclass(frozen=True, slots=True)
class CredentialIdentity:
    """Who pulled an image: a secret's coordinates and credential hash, a service account, or the node.

    Never holds credential material: ``credential_hash`` is the hex sha256 that
    :func:`hash_credentials` computes.
    """

    kind: CredentialKind
    namespace: str = ""
    name: str = ""
    uid: str = ""
    credential_hash: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        try:
            kind = CredentialKind(self.kind)
        except ValueError:
            raise StoreError(f"unknown credential kind {self.kind!r}") from None
        object.__setattr__(self, "kind", kind)
        coords = (self.namespace, self.name, self.uid)
        if kind.node_accessible:
            if any(coords) or self.credential_hash:
                raise StoreError(f"a {kind} pull record carries no secret or service account")
            return
        missing = [n for n, v in zip(("namespace", "name", "uid"), coords, strict=True) if not v]
        if missing:
            raise StoreError(f"a {kind} pull record needs {', '.join(missing)}")
        if kind is CredentialKind.SECRET and not _HEX64.fullmatch(self.credential_hash):
            raise StoreError(
                f"secret {self.namespace}/{self.name}: credential_hash must be 64 lowercase hex"
            )
        if kind is CredentialKind.SERVICE_ACCOUNT and self.credential_hash:
            raise StoreError(f"service account {self.namespace}/{self.name} carries no hash")

    @classmethod
    def node(cls) -> CredentialIdentity:
        """Node credentials (node docker config, plugin without a service account)."""
        return cls(CredentialKind.NODE)

    @classmethod
    def anonymous(cls) -> CredentialIdentity:
        """A pull that used no credentials."""
        return cls(CredentialKind.ANONYMOUS)


def hash_credentials(
    *,
    username: str = "",
    password: str = "",
    auth: str = "",
    identity_token: str = "",
    registry_token: str = "",
    server_address: str = "",
    email: str = "",
) -> str:
    """Hex sha256 over the canonical JSON of an auth config, never the credentials themselves.

    Models the kubelet's ``hashAuthConfig`` (``pkg/credentialprovider/keyring.go``), which hashes
    the JSON of the ``AuthConfig``: the same credentials always give the same hash.
    """
    doc = {
        "username": username,
        "password": password,
        "auth": auth,
        "identitytoken": identity_token,
        "registrytoken": registry_token,
        "serveraddress": server_address,
        "email": email,
    }
    data = json.dumps({k: v for k, v in doc.items() if v}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()
