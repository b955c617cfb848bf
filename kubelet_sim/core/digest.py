"""Content digests: the ``algorithm:hex`` grammar, validation and incremental hashing.

Only the algorithms the OCI image-spec registers are accepted, with their exact hex lengths
(sha256: 64, sha384: 96, sha512: 128, lowercase). A digest is validated here before it is
ever used in a filesystem path or URL.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from kubelet_sim.errors import InvalidDigestError

HEX_LENGTHS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}

# distribution/reference digest grammar: algorithm component(s) ':' encoded.
DIGEST_GRAMMAR = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_HEX = re.compile(r"[a-f0-9]+")


class Hasher(Protocol):
    """The part of ``hashlib`` objects we use."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """A validated content digest such as ``sha256:<64 hex>``."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, value: str) -> Digest:
        """Parse and validate ``value``.

        Raises:
            InvalidDigestError: the grammar, algorithm or hex length is wrong.
        """
        if not isinstance(value, str) or not DIGEST_GRAMMAR.fullmatch(value):
            raise InvalidDigestError(str(value), "invalid digest format")
        algorithm, _, encoded = value.partition(":")
        expected = HEX_LENGTHS.get(algorithm)
        if expected is None:
            raise InvalidDigestError(value, "unsupported digest algorithm")
        if len(encoded) != expected or not _HEX.fullmatch(encoded):
            raise InvalidDigestError(value, "invalid checksum digest length")
        return cls(algorithm, encoded)

    @classmethod
    def from_bytes(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """Digest of ``data`` with ``algorithm``."""
        hasher = new_hasher(algorithm)
        hasher.update(data)
        return cls(algorithm, hasher.hexdigest())

    def hasher(self) -> Hasher:
        """A fresh incremental hasher for this digest's algorithm."""
        return new_hasher(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def new_hasher(algorithm: str) -> Hasher:
    """A fresh ``hashlib`` object for one of the registered algorithms."""
    if algorithm not in HEX_LENGTHS:
        raise InvalidDigestError(algorithm, "unsupported digest algorithm")
    return hashlib.new(algorithm)


def short_digest(value: str, length: int = 12) -> str:
    """The first ``length`` hex characters of a digest, as ``crictl images`` shows image IDs."""
    return value.partition(":")[2][:length] if ":" in value else value[:length]
