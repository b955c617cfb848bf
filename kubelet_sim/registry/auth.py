"""Registry auth: WWW-Authenticate challenges, token fetches, a per-credential token cache.

Models containerd ``core/remotes/docker/authorizer.go`` + ``auth/{parse,fetch}.go`` and the
distribution token specs (``docs/spec/auth/{token,oauth,scope}.md``). The protocol logic is pure
(:func:`parse_challenges`, :func:`pick_challenge`, :func:`plan_token_request`,
:func:`parse_token_response`); :class:`AuthManager` only adds I/O through an injected
``httpx.AsyncClient``, a cache and single-flight.

Where credentials go: a Bearer challenge names a ``realm`` (the token server), which may live on
another host than the registry. As docker and containerd do, the credentials for the registry are
sent to that realm because the registry's own challenge pointed there. To limit what a hostile or
confused registry can do with that: the realm must be ``http(s)``, carry no userinfo, use ``https``
unless it is the registry's own host or loopback, and may not be a loopback/private/link-local
address unless the registry itself is one (ggcr ``transport/bearer.go``). Only :func:`basic_header`
output or a token fetched for *this* host/scope/credential ever becomes an Authorization value.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import ipaddress
import json
import re
import zlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import cast

import anyio
import httpx
import structlog

from kubelet_sim.errors import RegistryAuthError, RegistryError, RegistryTransportError

log = structlog.get_logger(__name__)

MAX_AUTH_BODY = 64 * 1024
"""Token and token-error bodies larger than this are refused (streamed, never buffered whole)."""
MIN_TOKEN_LIFETIME = 60.0
"""distribution ``token.md``: expires_in defaults to 60 s and is never less (session.go clamps)."""
EXPIRY_MARGIN = 5.0
"""Refresh this many seconds before the computed expiry, so no request carries a dying token."""
TOKEN_FETCH_TIMEOUT = 60.0
"""Upper bound on one token fetch (all waiters of a single-flight share it)."""
# containerd authorizer.go: a refused OAuth POST is retried as GET (GCR 404, Artifactory 401,
# ACR 400; 405 only with a username)
_POST_FALLBACK_STATUSES = frozenset({400, 401, 404})
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SAFE_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
_ACTIONS = frozenset({"pull", "push", "delete", "*"})

CacheKey = tuple[str, str, str]
"""(registry host, scope string, credential fingerprint)."""


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
        fields = {
            "username": self.username,
            "password": self.password,
            "identitytoken": self.identity_token,
            "registrytoken": self.registry_token,
        }
        material = {k: v for k, v in fields.items() if v}
        text = json.dumps(material, separators=(",", ":"), ensure_ascii=False)
        # Go's encoder emits non-ASCII raw but escapes <, >, & and U+2028/U+2029.
        for char in "<>&\u2028\u2029":
            text = text.replace(char, f"\\u{ord(char):04x}")
        return hashlib.sha256(text.encode(errors="replace")).hexdigest()


ANONYMOUS = Credentials()
"""No credentials; ``None`` means the same everywhere a ``Credentials | None`` is taken."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """One auth challenge from a WWW-Authenticate header (scheme lowercased, keys lowercased)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str = ""

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scopes(self) -> list[str]:
        """The space-separated ``scope`` parameter as a list (empty when absent)."""
        return self.params.get("scope", "").split()

    @property
    def error(self) -> str:
        return self.params.get("error", "")


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t\r\n":
        i += 1
    return i


def _token(s: str, i: int) -> tuple[str, int]:
    start = i
    while i < len(s) and s[i] in _TCHAR:
        i += 1
    return s[start:i], i


def _quoted(s: str, i: int) -> tuple[str | None, int]:
    """Parse a quoted-string starting at the opening quote; None when unterminated."""
    out: list[str] = []
    i += 1
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    return None, i


def _param_ahead(s: str, i: int) -> bool:
    """True when ``token BWS "="`` starts at i (an auth-param, not the next challenge's scheme)."""
    name, j = _token(s, i)
    j = _skip_ws(s, j)
    return bool(name) and j < len(s) and s[j] == "="


def _parse_one_value(s: str) -> list[Challenge]:
    """RFC 7235 ``1#challenge``: several comma-separated challenges may share one header value."""
    challenges: list[Challenge] = []
    i = 0
    while True:
        while i < len(s) and s[i] in " \t\r\n,":
            i += 1
        scheme, i = _token(s, i)
        if not scheme:
            return challenges  # end of value, or garbage we cannot resync from
        params: dict[str, str] = {}
        token68 = ""
        i = _skip_ws(s, i)
        t68 = _TOKEN68.match(s, i)
        if t68:  # RFC 7235: token68 only when it is all there is before the next comma
            end = _skip_ws(s, t68.end())
            if end >= len(s) or s[end] == ",":
                token68, i = t68.group(), end
        while not token68 and _param_ahead(s, i):
            name, i = _token(s, i)
            i = _skip_ws(s, _skip_ws(s, i) + 1)
            value: str | None
            if i < len(s) and s[i] == '"':
                value, i = _quoted(s, i)
                if value is None:
                    return challenges  # unterminated quote: drop this challenge and the rest
            else:  # lenient: a bare value runs to the next comma/space (unquoted realm URLs)
                start = i
                while i < len(s) and s[i] not in ' \t\r\n,"':
                    i += 1
                value = s[start:i]
            params.setdefault(name.lower(), value)
            i = _skip_ws(s, i)
            if i < len(s) and s[i] == ",":
                i = _skip_ws(s, i + 1)
                while i < len(s) and s[i] == ",":  # empty list elements are allowed
                    i = _skip_ws(s, i + 1)
            elif i < len(s):
                challenges.append(Challenge(scheme.lower(), params, token68))
                return challenges  # junk after a param: keep what parsed, stop here
        challenges.append(Challenge(scheme.lower(), params, token68))


def parse_challenges(headers: Sequence[str]) -> list[Challenge]:
    """Parse every WWW-Authenticate header value into challenges, in order of appearance.

    Unlike containerd ``auth/parse.go`` (one challenge per header value) this follows RFC 7235 and
    accepts several challenges in one value; schemes and parameter names are case-insensitive
    (lowercased here), values may be tokens or quoted strings with backslash escapes. Malformed
    tails are dropped rather than guessed at.
    """
    out: list[Challenge] = []
    for value in headers:
        out.extend(_parse_one_value(value))
    return out


def pick_challenge(challenges: Sequence[Challenge]) -> Challenge | None:
    """Bearer (with a realm) over Basic, as containerd sorts them; None when neither is usable."""
    for c in challenges:
        if c.scheme == "bearer" and c.realm:
            return c
    for c in challenges:
        if c.scheme == "basic":
            return c
    return None


def scope_for(repository: str, actions: Sequence[str]) -> str:
    """``repository:<name>:<actions>`` (distribution ``scope.md``), actions deduplicated, sorted.

    Raises:
        ValueError: for an empty/ill-formed name or an unknown action (a programming error).
    """
    if not repository or any(c in repository for c in ' ,\t\r\n"'):
        raise ValueError(f"repository name not usable in a token scope: {repository!r}")
    wanted = sorted(set(actions))
    if not wanted or not set(wanted) <= _ACTIONS:
        raise ValueError(f"token scope actions must be among {sorted(_ACTIONS)}: {list(actions)!r}")
    return f"repository:{repository}:{','.join(wanted)}"


def basic_header(creds: Credentials | None) -> str:
    """``Basic base64(user:password)`` for a Basic challenge.

    Raises:
        RegistryAuthError: status 401 when there is no username and password.
    """
    if creds is None or not creds.username or not creds.password:
        raise RegistryAuthError(
            "registry requires basic auth and no credentials were given", status=401
        )
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


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
    creds = creds or ANONYMOUS
    if oauth:
        form = [("grant_type", "refresh_token"), ("refresh_token", creds.identity_token)]
        if service:
            form.append(("service", service))
        if scopes:
            form.append(("scope", " ".join(scopes)))
        form.append(("client_id", client_id))
        return TokenRequest("POST", realm, form=tuple(form))
    params = [("service", service)] if service else []
    params.extend(("scope", s) for s in scopes)
    secret = creds.password or creds.identity_token
    auth = None
    if secret:
        raw = f"{creds.username}:{secret}".encode()
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
    except ValueError:
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
    if not _HEADER_SAFE.fullmatch(value):
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
    return code if isinstance(code, str) and _SAFE_CODE.fullmatch(code) else None


def _internal(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def _loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


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
    if url.scheme == "http" and not (url.host == registry_host or _loopback(url.host)):
        raise RegistryAuthError(f"token realm {shown} of registry {host} must use https")
    return shown


async def read_capped(response: httpx.Response, *, what: str, limit: int = MAX_AUTH_BODY) -> bytes:
    """Read at most ``limit`` decoded bytes of a (streamed) body, then stop.

    Reads raw chunks under ``aclosing`` (so nothing is left for the GC on trio) and inflates
    gzip/deflate itself, bounded by ``limit``.

    Raises:
        RegistryAuthError: the body is larger than ``limit`` or uses another content-encoding.
    """
    status = response.status_code
    too_large = RegistryAuthError(f"{what} was too large (over {limit} bytes)", status=status)
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    if response.is_stream_consumed:  # httpx already holds the (decoded) body
        if len(response.content) > limit:
            raise too_large
        return response.content
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        raise RegistryAuthError(f"{what} used an unsupported content-encoding", status=status)
    inflate = None if encoding == "identity" else zlib.decompressobj(zlib.MAX_WBITS | 32)
    body = bytearray()
    try:
        raw = cast("AsyncGenerator[bytes, None]", response.aiter_raw())  # it is one in httpx
        async with aclosing(raw) as chunks:
            async for chunk in chunks:
                body += (
                    chunk if inflate is None else inflate.decompress(chunk, limit + 1 - len(body))
                )
                if len(body) > limit:
                    raise too_large
    except zlib.error:
        raise RegistryAuthError(f"{what} is not valid {encoding} data", status=status) from None
    return bytes(body)


@dataclass(frozen=True, slots=True)
class AuthStatistics:
    """Counters for tests and metrics (trio-style ``statistics()``)."""

    token_fetches: int
    cache_hits: int
    cached: int
    in_flight: int


@dataclass(slots=True)
class _Cached:
    header: str = field(repr=False)
    expires_at: float | None  # None: never expires (Basic, a registry token given as is)


class _Flight:
    """One in-flight token fetch; waiters share its header or its error (containerd authResult)."""

    __slots__ = ("done", "error", "header")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.header: str | None = None
        self.error: RegistryError | None = None


def _key(host: str, scope: str, creds: Credentials | None) -> CacheKey:
    return (host.lower(), scope, (creds or ANONYMOUS).fingerprint())


def _what(scope: str) -> str:
    return scope or "registry access"


class AuthManager:
    """Answers 401 challenges with Authorization values, cached per host/scope/credential.

    The cache key includes the credential fingerprint, so two pods with different pull secrets
    never share a token. Concurrent :meth:`authorize` calls for one key make one token request
    (single-flight); the others wait and share its result or its error. A cancelled fetch lets
    the next waiter fetch instead. Tokens expire ``max(expires_in, 60) - 5`` s after the request
    was sent (measured on ``clock``); Basic headers and given registry tokens do not expire.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = anyio.current_time,
        client_id: str = "kubelet-sim",
    ) -> None:
        self._http = http
        self._clock = clock
        self._client_id = client_id
        self._tokens: dict[CacheKey, _Cached] = {}
        self._basic: dict[tuple[str, str], _Cached] = {}  # (host, fingerprint): host-wide
        self._inflight: dict[CacheKey, _Flight] = {}
        self._fetches = 0
        self._hits = 0
        self._prune_at = 1024

    def statistics(self) -> AuthStatistics:
        return AuthStatistics(
            token_fetches=self._fetches,
            cache_hits=self._hits,
            cached=len(self._tokens) + len(self._basic),
            in_flight=len(self._inflight),
        )

    def _cached_token(self, key: CacheKey) -> str | None:
        entry = self._tokens.get(key)
        if entry is None:
            return None
        if entry.expires_at is not None and self._clock() >= entry.expires_at:
            del self._tokens[key]
            return None
        return entry.header

    def _store(self, key: CacheKey, header: str, expires_at: float | None) -> None:
        if len(self._tokens) >= self._prune_at:  # nothing else evicts expired tokens
            now = self._clock()
            for k, v in list(self._tokens.items()):
                if v.expires_at is not None and now >= v.expires_at:
                    del self._tokens[k]
            self._prune_at = max(1024, 2 * len(self._tokens))
        self._tokens[key] = _Cached(header, expires_at)

    def header_for(self, host: str, scope: str, creds: Credentials | None) -> str | None:
        """The cached, unexpired Authorization value for host/scope/creds, else None."""
        key = _key(host, scope, creds)
        basic = self._basic.get((key[0], key[2]))
        return self._cached_token(key) or (basic.header if basic is not None else None)

    def invalidate(
        self, host: str, scope: str, creds: Credentials | None, *, rejected: str | None = None
    ) -> bool:
        """Drop the cached value (call after a 401 that carried it); True if one was dropped.

        With ``rejected``, only a cached value equal to it is dropped, so a token another task
        has just refreshed survives a late 401 for the old one.
        """
        key = _key(host, scope, creds)
        dropped = False
        entry = self._tokens.get(key)
        if entry is not None and rejected in (None, entry.header):
            del self._tokens[key]
            dropped = True
        basic = self._basic.get((key[0], key[2]))
        if basic is not None and rejected in (None, basic.header):
            del self._basic[(key[0], key[2])]
            dropped = True
        return dropped

    async def authorize(
        self,
        host: str,
        scope: str,
        www_authenticate: Sequence[str],
        creds: Credentials | None,
    ) -> str:
        """Answer a 401: pick Bearer (else Basic), obtain and cache the Authorization value.

        A value cached meanwhile (another task's fetch) is returned as is; call :meth:`invalidate`
        first when the 401 answered a request that carried the cached value.

        Raises:
            RegistryAuthError: no usable challenge, missing Basic credentials, bad realm, or a
                token server that refused or answered nonsense.
            RegistryTransportError: the token server could not be reached or timed out.
        """
        creds = creds or ANONYMOUS
        key = _key(host, scope, creds)
        challenge = pick_challenge(parse_challenges(www_authenticate))
        if challenge is None:
            raise RegistryAuthError(
                f"registry {host} answered 401 without a usable Bearer or Basic challenge",
                status=401,
            )
        if challenge.scheme == "basic":
            header = basic_header(creds)
            self._basic[(key[0], key[2])] = _Cached(header, None)
            log.debug("registry_auth_basic", host=host, scope=scope)
            return header
        if creds.registry_token:  # docker config "registrytoken": a bearer token used as is
            if not _HEADER_SAFE.fullmatch(creds.registry_token):
                raise RegistryAuthError("registry token holds characters unusable in a header")
            header = f"Bearer {creds.registry_token}"
            self._store(key, header, None)
            return header
        while True:
            cached = self._cached_token(key)
            if cached is not None:
                self._hits += 1
                log.debug("registry_token", host=host, scope=scope, cache="hit")
                return cached
            flight = self._inflight.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.error is not None:
                raise copy.copy(flight.error) from flight.error
            if flight.header is not None:
                self._hits += 1
                log.debug("registry_token", host=host, scope=scope, cache="shared")
                return flight.header
            # the fetching task was cancelled: loop, and fetch ourselves unless someone else does
        flight = _Flight()
        self._inflight[key] = flight
        try:
            header, expires_at = await self._fetch(host, scope, challenge, creds)
            self._store(key, header, expires_at)
            flight.header = header
        except RegistryError as exc:
            flight.error = exc
            raise
        finally:
            del self._inflight[key]
            flight.done.set()
        return header

    async def _fetch(
        self, host: str, scope: str, challenge: Challenge, creds: Credentials
    ) -> tuple[str, float]:
        shown = check_realm(challenge.realm, host)
        scopes = sorted(set(scope.split()) | set(challenge.scopes))
        started = self._clock()
        self._fetches += 1
        try:
            with anyio.fail_after(TOKEN_FETCH_TIMEOUT):
                token = await self._request_token(host, scope, shown, challenge, scopes, creds)
        except TimeoutError:
            log.warning(
                "registry_token_fetch", host=host, realm=shown, scope=scope, error="timeout"
            )
            raise RegistryTransportError(
                f"token request to {shown} for {_what(scope)} timed out "
                f"after {TOKEN_FETCH_TIMEOUT:g}s"
            ) from None
        return f"Bearer {token.value}", started + token.lifetime - EXPIRY_MARGIN

    async def _request_token(
        self,
        host: str,
        scope: str,
        shown: str,
        challenge: Challenge,
        scopes: list[str],
        creds: Credentials,
    ) -> Token:
        # distribution session.go / ggcr bearer.go: OAuth POST only with a refresh (identity)
        # token, docker token GET with Basic otherwise. containerd also POSTs passwords
        # (grant_type=password) first; we do not, so a password only ever travels as Basic.
        oauth = bool(creds.identity_token)
        request = plan_token_request(
            challenge.realm,
            challenge.service,
            scopes,
            creds,
            client_id=self._client_id,
            oauth=oauth,
        )
        status, body = await self._send(request, shown)
        if oauth and should_fall_back_to_get(status, creds):
            log.info(
                "registry_token_fetch",
                host=host,
                realm=shown,
                scope=scope,
                method="POST",
                status=status,
                cache="miss",
                fallback="GET",
            )
            request = plan_token_request(
                challenge.realm,
                challenge.service,
                scopes,
                creds,
                client_id=self._client_id,
                oauth=False,
            )
            status, body = await self._send(request, shown)
        log.info(
            "registry_token_fetch",
            host=host,
            realm=shown,
            scope=scope,
            method=request.method,
            status=status,
            cache="miss",
        )
        if not 200 <= status < 300:
            verb = "rejected the credentials" if status in (401, 403) else "refused the request"
            raise RegistryAuthError(
                f"token server {shown} {verb} for {_what(scope)}",
                code=error_code(body),
                status=status,
            )
        return parse_token_response(body, realm=shown)

    async def _send(self, request: TokenRequest, shown: str) -> tuple[int, bytes]:
        headers = {"Accept-Encoding": "identity", "Accept": "application/json"}
        if request.authorization:
            headers["Authorization"] = request.authorization
        try:
            async with self._http.stream(
                request.method,
                request.url,
                params=list(request.params) or None,
                data=dict(request.form) or None,
                headers=headers,
            ) as response:
                body = await read_capped(response, what=f"token answer from {shown}")
                return response.status_code, body
        except httpx.TransportError as exc:
            log.warning("registry_token_fetch", realm=shown, error=type(exc).__name__)
            raise RegistryTransportError(
                f"token request to {shown} failed: {type(exc).__name__}"
            ) from exc


async def send_authorized(
    auth: AuthManager,
    host: str,
    scope: str,
    creds: Credentials | None,
    send: Callable[[str | None], Awaitable[httpx.Response]],
) -> httpx.Response:
    """Send with the cached Authorization value; on 401 authorize once and resend; never loop.

    ``send(authorization)`` makes the request (None: no Authorization header). A 401 answer is
    closed here; any other answer is returned open to the caller. The rule (containerd
    ``invalidAuthorization``): a 401 for a cached value drops it and retries once with a fresh
    one; a 401 to the fresh value fails.

    Raises:
        RegistryAuthError: status 401 after the retry (plus whatever :meth:`AuthManager.authorize`
            raises).
    """
    header = auth.header_for(host, scope, creds)
    response = await send(header)
    if response.status_code != 401:
        return response
    challenges = response.headers.get_list("www-authenticate")
    await response.aclose()
    if header is not None:
        auth.invalidate(host, scope, creds, rejected=header)
    header = await auth.authorize(host, scope, challenges, creds)
    response = await send(header)
    if response.status_code != 401:
        return response
    try:
        code = error_code(await read_capped(response, what=f"401 answer from {host}"))
    except RegistryAuthError:
        code = None
    finally:
        await response.aclose()
    auth.invalidate(host, scope, creds, rejected=header)
    chosen = pick_challenge(parse_challenges(response.headers.get_list("www-authenticate")))
    said = chosen.error if chosen is not None and _SAFE_CODE.fullmatch(chosen.error) else ""
    raise RegistryAuthError(
        f"registry {host} refused authorization for {_what(scope)}: pull access denied, "
        "repository does not exist or may require authorization"
        + (f" (server said {said})" if said else ""),
        code=code,
        status=401,
    )


__all__ = [
    "ANONYMOUS",
    "AuthManager",
    "AuthStatistics",
    "Challenge",
    "Credentials",
    "Token",
    "TokenRequest",
    "basic_header",
    "check_realm",
    "error_code",
    "parse_challenges",
    "parse_token_response",
    "pick_challenge",
    "plan_token_request",
    "read_capped",
    "scope_for",
    "send_authorized",
    "should_fall_back_to_get",
]
