"""Token requests and answers: what to send to a Bearer realm and how to read what comes back.

Models containerd ``core/remotes/docker/auth/fetch.go`` and ``authorizer.go`` and the distribution
token specs (``docs/spec/auth/{token,oauth}.md``). Everything here is pure:
:class:`~kubelet_sim.registry.auth.AuthManager` does the I/O (reading bodies with
:func:`~kubelet_sim.registry.boundary.read_capped`, capped at :data:`MAX_AUTH_BODY`).
:func:`check_realm` decides where credentials may be sent (see :mod:`kubelet_sim.registry.auth`).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.errors import RegistryAuthError
from kubelet_sim.registry.hosts import is_localhost

__all__ = [
    "HEADER_SAFE",
    "MAX_AUTH_BODY",
    "MIN_TOKEN_LIFETIME",
    "SAFE_CODE",
    "Token",
    "TokenRequest",
    "check_realm",
    "error_code",
    "parse_token_response",
    "plan_token_request",
    "should_fall_back_to_get",
]

MAX_AUTH_BODY = 64 * 1024
"""Token and token-error bodies larger than this are refused (streamed, never buffered whole)."""
MIN_TOKEN_LIFETIME = 60.0
"""distribution ``token.md``: expires_in defaults to 60 s and is never less (session.go clamps)."""
SAFE_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
"""An error code a server sent that is plain enough to repeat in messages."""
HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
"""A token value usable as is in an Authorization header."""
# containerd authorizer.go: a refused OAuth POST is retried as GET (GCR 404, Artifactory 401,
# ACR 400; 405 only with a username)
_POST_FALLBACK_STATUSES = frozenset({400, 401, 404})


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """One HTTP request to a token realm; secrets are kept out of repr."""

    method: str
    url: str
    params: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    authorization: str | None = field(default=None, repr=False)


def plan_token_request(
    realm: str,
    service: str,
    scopes: Sequence[str],
    creds: Credentials | None,
    *,
    client_id: str,
    oauth: bool,
) -> TokenRequest:
    """The token request to make (pure).

    ``oauth=True`` builds the OAuth2 POST (``grant_type=refresh_token``, only meaningful with an
    identity token); otherwise the docker token GET with Basic credentials when a password (or,
    as containerd sends it, the identity token) is known, anonymous when not.
    """
    username, password, identity_token = (
        (creds.username, creds.password, creds.identity_token) if creds else ("", "", "")
    )
    if oauth:
        form = [("grant_type", "refresh_token"), ("refresh_token", identity_token)]
        if service:
            form.append(("service", service))
        if scopes:
            form.append(("scope", " ".join(scopes)))
        form.append(("client_id", client_id))
        return TokenRequest("POST", realm, form=tuple(form))
    params = [("service", service)] if service else []
    params.extend(("scope", s) for s in scopes)
    secret = password or identity_token
    auth = None
    if secret:
        raw = f"{username}:{secret}".encode()
        auth = "Basic " + base64.b64encode(raw).decode("ascii")
    return TokenRequest("GET", realm, params=tuple(params), authorization=auth)


def should_fall_back_to_get(status: int, creds: Credentials | None) -> bool:
    """containerd ``authorizer.go``: a refused OAuth POST is retried as GET for these statuses."""
    has_user = creds is not None and bool(creds.username)
    return status in _POST_FALLBACK_STATUSES or (status == 405 and has_user)


@dataclass(frozen=True, slots=True)
class Token:
    """A parsed token answer; ``lifetime`` is already clamped to at least 60 s."""

    value: str = field(repr=False)
    lifetime: float
    issued_at: str = ""


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # 64 KiB of brackets nest past the recursion limit
        return None
    return data if isinstance(data, dict) else None


def parse_token_response(body: bytes, *, realm: str) -> Token:
    """Read ``token``/``access_token`` (the latter wins, containerd), ``expires_in``, ``issued_at``.

    Raises:
        RegistryAuthError: body not a JSON object, no token, or a token unusable in a header.
    """
    data = _json_object(body)
    if data is None:
        raise RegistryAuthError(f"token answer from {realm} is not a JSON object")
    value = data.get("access_token") or data.get("token")
    if not isinstance(value, str) or not value:
        raise RegistryAuthError(f"token answer from {realm} did not include a token")
    if not HEADER_SAFE.fullmatch(value):
        raise RegistryAuthError(f"token answer from {realm} holds a token unusable in a header")
    expires_in = data.get("expires_in")
    lifetime = MIN_TOKEN_LIFETIME
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        lifetime = max(float(expires_in), MIN_TOKEN_LIFETIME)
    issued_at = data.get("issued_at")
    return Token(value, lifetime, issued_at if isinstance(issued_at, str) else "")


def error_code(body: bytes) -> str | None:
    """The OCI ``errors[0].code`` or OAuth ``error`` of an error body, if it is a plain word."""
    data = _json_object(body)
    if data is None:
        return None
    code: object = data.get("error")
    errors = data.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code = errors[0].get("code")
    return code if isinstance(code, str) and SAFE_CODE.fullmatch(code) else None


def _internal(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def check_realm(realm: str, host: str) -> str:
    """Validate a Bearer realm named by ``host``'s challenge; returns it for display (no query).

    Raises:
        RegistryAuthError: a realm we will not send credentials to (see the module docstring).
    """
    try:
        url = httpx.URL(realm)
    except httpx.InvalidURL:
        raise RegistryAuthError(f"registry {host} named an unparsable token realm") from None
    shown = str(url.copy_with(query=None, fragment=None))
    registry_host = httpx.URL(f"//{host}").host or host
    if url.scheme not in ("http", "https") or not url.host:
        raise RegistryAuthError(f"token realm {shown} of registry {host} is not an http(s) URL")
    if url.userinfo:
        raise RegistryAuthError(f"token realm of registry {host} carries userinfo")
    if _internal(url.host) and not _internal(registry_host) and url.host != registry_host:
        raise RegistryAuthError(f"registry {host} points its token realm at internal {url.host}")
    if url.scheme == "http" and not (url.host == registry_host or is_localhost(url.host)):
        raise RegistryAuthError(f"token realm {shown} of registry {host} must use https")
    return shown
