"""Registry auth: answering 401 challenges, a per-credential token cache.

Models containerd ``core/remotes/docker/authorizer.go`` + ``auth/{parse,fetch}.go`` and the
distribution token specs (``docs/spec/auth/{token,oauth,scope}.md``). The protocol logic is pure
and lives in :mod:`~kubelet_sim.registry.challenge` (:func:`parse_challenges`,
:func:`pick_challenge`, :func:`scope_for`) and :mod:`~kubelet_sim.registry.tokens`
(:func:`plan_token_request`, :func:`parse_token_response`, :func:`check_realm`); their names are
re-exported here. :class:`AuthManager` only adds I/O through an injected ``httpx.AsyncClient`` (or
a function that gives it when a token is first fetched), a cache and a
:class:`~kubelet_sim.core.singleflight.SingleFlight` per token. :func:`send_authorized` is the one
401 path: :class:`~kubelet_sim.registry.transport.Transport` sends every registry request through
it.

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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import anyio
import httpx
import structlog

from kubelet_sim.core.credentials import ANONYMOUS, Credentials
from kubelet_sim.core.singleflight import SingleFlight
from kubelet_sim.core.trace import CURRENT
from kubelet_sim.errors import RegistryAuthError, RegistryTransportError
from kubelet_sim.registry.boundary import read_capped, read_error_body, translate_errors
from kubelet_sim.registry.challenge import Challenge, parse_challenges, pick_challenge, scope_for
from kubelet_sim.registry.tokens import (
    HEADER_SAFE,
    MAX_AUTH_BODY,
    MIN_TOKEN_LIFETIME,
    SAFE_CODE,
    Token,
    TokenRequest,
    check_realm,
    error_code,
    parse_token_response,
    plan_token_request,
    should_fall_back_to_get,
)

log = structlog.get_logger(__name__)

EXPIRY_MARGIN = 5.0
"""Refresh this many seconds before the computed expiry, so no request carries a dying token."""
TOKEN_FETCH_TIMEOUT = 60.0
"""Upper bound on one token fetch (all waiters of a single-flight share it)."""

CacheKey = tuple[str, str, str, int]
"""(host, scope, credential fingerprint, pull session: 0 when auth is cached node-wide)."""
"""(registry host, scope string, credential fingerprint)."""


def basic_header(creds: Credentials | None) -> str:
    """``Basic base64(user:password)`` for a Basic challenge.

    Raises:
        RegistryAuthError: status 401 when there is no username and password, or when they are
            not UTF-8 text (a lone surrogate; the message never shows them).
    """
    if creds is None or not creds.username or not creds.password:
        raise RegistryAuthError(
            "registry requires basic auth and no credentials were given", status=401
        )
    try:
        raw = f"{creds.username}:{creds.password}".encode()
    except UnicodeEncodeError:
        raise RegistryAuthError(
            "registry requires basic auth and the username or password given is not valid "
            "Unicode text (a lone surrogate escape)",
            status=401,
        ) from None
    return "Basic " + base64.b64encode(raw).decode("ascii")


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


def _key(host: str, scope: str, creds: Credentials | None, session: int = 0) -> CacheKey:
    return (host.lower(), scope, (creds or ANONYMOUS).fingerprint(), session)


BASIC_ENTRIES = 4096
"""Basic headers, and tokens, kept at most (a Basic header or a given registry token never
expires; per-pull sessions would otherwise add one a pull)."""


def _what(scope: str) -> str:
    return scope or "registry access"


class AuthManager:
    """Answers 401 challenges with Authorization values, cached per host/scope/credential.

    The cache key includes the credential fingerprint, so two pods with different pull secrets
    never share a token. Concurrent :meth:`authorize` calls for one key make one token request
    (single-flight); the others wait and share its result or its error. A cancelled fetch lets
    the next waiter fetch instead. Tokens expire ``max(expires_in, 60) - 5`` s after the request
    was sent (measured on ``clock``); Basic headers and given registry tokens do not expire.
    Token requests go through ``http``: a client, or a function that gives it when first needed.
    """

    def __init__(
        self,
        http: httpx.AsyncClient | Callable[[], httpx.AsyncClient],
        *,
        clock: Callable[[], float] = anyio.current_time,
        client_id: str = "kubelet-sim",
        per_pull: bool = False,
    ) -> None:
        self._http = http
        self.per_pull = per_pull
        """Cache per pull (the current :class:`~kubelet_sim.core.trace.PullTrace`'s session), as
        containerd's authorizer per ``PullImage``: each pull meets the 401 challenge and fetches
        its own token. Off: one cache for every pull of the node."""
        self._clock = clock
        self._client_id = client_id
        self._tokens: dict[CacheKey, _Cached] = {}
        # (host, fingerprint, session): host-wide
        self._basic: dict[tuple[str, str, int], _Cached] = {}
        # containerd authResult: concurrent fetches of one token share its header or its error.
        self._fetching: SingleFlight[CacheKey, str] = SingleFlight()
        self._fetches = 0
        self._hits = 0
        self._prune_at = 1024

    def _session(self) -> int:
        if not self.per_pull:
            return 0
        trace = CURRENT.get()
        return trace.session if trace is not None else 0

    def statistics(self) -> AuthStatistics:
        return AuthStatistics(
            token_fetches=self._fetches,
            cache_hits=self._hits,
            cached=len(self._tokens) + len(self._basic),
            in_flight=self._fetching.statistics().in_flight,
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
            if len(self._tokens) >= BASIC_ENTRIES:
                # Values that never expire (a given registry token), one per pull session: the
                # oldest half goes, as for Basic headers.
                for old in list(self._tokens)[: len(self._tokens) // 2]:
                    del self._tokens[old]
            self._prune_at = max(1024, min(2 * len(self._tokens), BASIC_ENTRIES))
        self._tokens[key] = _Cached(header, expires_at)

    def header_for(self, host: str, scope: str, creds: Credentials | None) -> str | None:
        """The cached, unexpired Authorization value for host/scope/creds, else None."""
        key = _key(host, scope, creds, self._session())
        basic = self._basic.get((key[0], key[2], key[3]))
        return self._cached_token(key) or (basic.header if basic is not None else None)

    def invalidate(
        self, host: str, scope: str, creds: Credentials | None, *, rejected: str | None = None
    ) -> bool:
        """Drop the cached value (call after a 401 that carried it); True if one was dropped.

        With ``rejected``, only a cached value equal to it is dropped, so a token another task
        has just refreshed survives a late 401 for the old one.
        """
        key = _key(host, scope, creds, self._session())
        dropped = False
        entry = self._tokens.get(key)
        if entry is not None and rejected in (None, entry.header):
            del self._tokens[key]
            dropped = True
        basic = self._basic.get((key[0], key[2], key[3]))
        if basic is not None and rejected in (None, basic.header):
            del self._basic[(key[0], key[2], key[3])]
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
        key = _key(host, scope, creds, self._session())
        challenge = pick_challenge(parse_challenges(www_authenticate))
        if challenge is None:
            raise RegistryAuthError(
                f"registry {host} answered 401 without a usable Bearer or Basic challenge",
                status=401,
            )
        if challenge.scheme == "basic":
            header = basic_header(creds)
            if len(self._basic) >= BASIC_ENTRIES:
                for old in list(self._basic)[: BASIC_ENTRIES // 2]:  # the oldest half
                    del self._basic[old]
            self._basic[(key[0], key[2], key[3])] = _Cached(header, None)
            log.debug("registry_auth_basic", host=host, scope=scope)
            return header
        if creds.registry_token:  # docker config "registrytoken": a bearer token used as is
            if not HEADER_SAFE.fullmatch(creds.registry_token):
                raise RegistryAuthError("registry token holds characters unusable in a header")
            header = f"Bearer {creds.registry_token}"
            self._store(key, header, None)
            return header
        cached = self._cached_token(key)
        if cached is not None:
            self._hits += 1
            log.debug("registry_token", host=host, scope=scope, cache="hit")
            return cached
        outcome = await self._fetching.run_shared(
            key, partial(self._fetch, key, host, scope, challenge, creds)
        )
        if outcome.shared:
            self._hits += 1
            log.debug("registry_token", host=host, scope=scope, cache="shared")
        return outcome.value

    async def _fetch(
        self, key: CacheKey, host: str, scope: str, challenge: Challenge, creds: Credentials
    ) -> str:
        """Fetch a token and cache its header (the single-flight's function)."""
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
        header = f"Bearer {token.value}"
        self._store(key, header, started + token.lifetime - EXPIRY_MARGIN)
        return header

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
            with translate_errors(f"token request to {shown} failed"):
                http = self._http if isinstance(self._http, httpx.AsyncClient) else self._http()
                async with http.stream(
                    request.method,
                    request.url,
                    params=list(request.params) or None,
                    data=dict(request.form) or None,
                    headers=headers,
                ) as response:
                    body = await read_capped(
                        response,
                        limit=MAX_AUTH_BODY,
                        what=f"token answer from {shown}",
                        error=RegistryAuthError,
                    )
                    return response.status_code, body
        except RegistryTransportError as exc:
            log.warning("registry_token_fetch", realm=shown, error=type(exc.__cause__).__name__)
            raise


async def send_authorized(
    auth: AuthManager,
    host: str,
    scope: str,
    creds: Credentials | None,
    send: Callable[[str | None], Awaitable[httpx.Response]],
) -> httpx.Response:
    """Send with the cached Authorization value; on 401 authorize once and resend; never loop.

    The one 401 path: :class:`~kubelet_sim.registry.transport.Transport` sends every registry
    request through it. ``send(authorization)`` makes the request (None: no Authorization header)
    and returns an answer; every 401 it returns is taken for the registry's challenge (a sender
    that must not answer some 401s, such as blob storage's after a redirect, raises for those
    itself). A 401 answer is closed here; any other answer is returned open to the caller. The
    rule (containerd ``invalidAuthorization``): a 401 for a cached value drops it and retries once
    with a fresh one; a 401 to the fresh value fails with the error code of its body
    (``UNAUTHORIZED`` when it names none).

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
        body = await read_error_body(response, what=f"401 answer from {host}")
        code = error_code(body) or "UNAUTHORIZED"
    finally:
        await response.aclose()
    auth.invalidate(host, scope, creds, rejected=header)
    chosen = pick_challenge(parse_challenges(response.headers.get_list("www-authenticate")))
    said = chosen.error if chosen is not None and SAFE_CODE.fullmatch(chosen.error) else ""
    raise RegistryAuthError(
        # What happened, in the registry's terms; the CRI message around it adds containerd's
        # "pull access denied, repository does not exist or may require authorization".
        f"registry {host} refused the credentials for {_what(scope)} (401 after authorizing)"
        + (f" (server said {said})" if said else ""),
        code=code,
        status=401,
    )


# Challenge parsing and token requests moved to challenge.py and tokens.py; their names stay
# importable from here.
__all__ = [
    "ANONYMOUS",
    "EXPIRY_MARGIN",
    "MAX_AUTH_BODY",
    "MIN_TOKEN_LIFETIME",
    "TOKEN_FETCH_TIMEOUT",
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
