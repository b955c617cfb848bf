"""Registry credentials as a value: what a pull secret, docker config or plugin yields.

A :class:`Credentials` never shows its secrets in ``repr``/``str``; its :meth:`~Credentials.fingerprint`
models the kubelet's ``AuthConfigHash`` so pull records and caches agree across processes.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Credentials:
    """Registry credentials for one pod/secret; never shows its secrets in repr/str."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    """An OAuth2 refresh token (docker config ``identitytoken``)."""
    registry_token: str = ""
    """A bearer token to send as is (docker config ``registrytoken``)."""

    def __repr__(self) -> str:
        def shown(value: str) -> str:
            return "<redacted>" if value else "''"

        return (
            f"Credentials(username={self.username!r}, password={shown(self.password)}, "
            f"identity_token={shown(self.identity_token)}, "
            f"registry_token={shown(self.registry_token)}, fingerprint={self.fingerprint()[:12]})"
        )

    __str__ = __repr__

    @property
    def is_anonymous(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)

    def fingerprint(self) -> str:
        """Stable sha256 hex of the credential material, for cache keys and pull records.

        Models kubelet's ``AuthConfigHash`` (sha256 of Go ``json.Marshal(AuthConfig)``, fields in
        order, omitempty), so equal credentials give equal hashes across processes.
        """
        return _fingerprint(self.username, self.password, self.identity_token, self.registry_token)


@functools.lru_cache(maxsize=4096)
def _fingerprint(username: str, password: str, identity_token: str, registry_token: str) -> str:
    """:meth:`Credentials.fingerprint`, computed once per distinct credentials (every pull,
    record and cache key asks for it)."""
    fields = {
        "username": username,
        "password": password,
        "identitytoken": identity_token,
        "registrytoken": registry_token,
    }
    material = {k: v for k, v in fields.items() if v}
    text = json.dumps(material, separators=(",", ":"), ensure_ascii=False)
    # Go's encoder emits non-ASCII raw but escapes <, >, & and U+2028/U+2029.
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return hashlib.sha256(text.encode(errors="replace")).hexdigest()


ANONYMOUS = Credentials()
"""No credentials; ``None`` means the same everywhere a ``Credentials | None`` is taken."""
