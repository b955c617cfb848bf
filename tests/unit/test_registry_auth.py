"""Tests for kubelet_sim.registry.auth: challenge parsing, token fetches, cache, single-flight, leaks.

The token server is a ``respx.Router`` that routes the realm's URL to a scripted stub: a request
anywhere else fails the test.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast
from urllib.parse import parse_qs

import anyio
import httpx
import pytest
import respx
import structlog
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from kubelet_sim.core.pods import PulledImage
from kubelet_sim.core.reference import ImageReference, parse_normalized
from kubelet_sim.core.trace import CURRENT, PullTrace
from kubelet_sim.engine.manager import cri_error_message
from kubelet_sim.engine.ports import ProgressFn, ResolvedHook
from kubelet_sim.errors import (
    PullReason,
    RegistryAuthError,
    RegistryError,
    RegistryNotFoundError,
    RegistryTransportError,
)
from kubelet_sim.registry.auth import (
    ANONYMOUS,
    MAX_AUTH_BODY,
    AuthManager,
    Challenge,
    Credentials,
    TokenRequest,
    basic_header,
    check_realm,
    error_code,
    parse_challenges,
    parse_token_response,
    pick_challenge,
    plan_token_request,
    scope_for,
    send_authorized,
    should_fall_back_to_get,
)
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.runtime.images import CredentialsFailedError, ImageService
from kubelet_sim.store import Store

HOST = "registry.example.com"
REALM = "https://auth.example.com/token"
SCOPE = "repository:library/busybox:pull"
CHALLENGE = f'Bearer realm="{REALM}",service="registry.example.com",scope="{SCOPE}"'
USER = Credentials(username="alice", password="pa55-SECRET-word")
IDENT = Credentials(identity_token="ident-SECRET-token")
IDENT_USER = Credentials(username="bob", identity_token="ident-SECRET-token")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --------------------------------------------------------------------------- challenge parsing


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            [CHALLENGE],
            [
                Challenge(
                    "bearer",
                    {"realm": REALM, "service": "registry.example.com", "scope": SCOPE},
                )
            ],
            id="distribution-bearer",
        ),
        pytest.param(
            ['BEARER Realm="r", SERVICE="s"'],
            [Challenge("bearer", {"realm": "r", "service": "s"})],
            id="case-insensitive-scheme-and-keys",
        ),
        pytest.param(
            ['Bearer realm="a\\"b\\\\c",service="x"'],
            [Challenge("bearer", {"realm": 'a"b\\c', "service": "x"})],
            id="quoted-escapes",
        ),
        pytest.param(
            ['Bearer realm="a,b=c",service="d"'],
            [Challenge("bearer", {"realm": "a,b=c", "service": "d"})],
            id="comma-and-equals-inside-quotes",
        ),
        pytest.param(
            ['Basic realm="r1", Bearer realm="https://a/t",service="s"'],
            [
                Challenge("basic", {"realm": "r1"}),
                Challenge("bearer", {"realm": "https://a/t", "service": "s"}),
            ],
            id="two-challenges-one-header",
        ),
        pytest.param(
            ['Bearer realm="r" , error="invalid_token", Basic realm="b"'],
            [
                Challenge("bearer", {"realm": "r", "error": "invalid_token"}),
                Challenge("basic", {"realm": "b"}),
            ],
            id="bearer-then-basic-with-spaces",
        ),
        pytest.param(
            ['Basic realm="x"', 'Bearer realm="y"'],
            [Challenge("basic", {"realm": "x"}), Challenge("bearer", {"realm": "y"})],
            id="several-headers",
        ),
        pytest.param(
            ["Bearer realm=https://a.example/token,service=reg"],
            [Challenge("bearer", {"realm": "https://a.example/token", "service": "reg"})],
            id="unquoted-values",
        ),
        pytest.param(
            ['Bearer realm = "x" ,  service= y'],
            [Challenge("bearer", {"realm": "x", "service": "y"})],
            id="whitespace-around-equals",
        ),
        pytest.param(
            ['Bearer realm="x",,, service="y",'],
            [Challenge("bearer", {"realm": "x", "service": "y"})],
            id="empty-list-elements",
        ),
        pytest.param(
            ['Bearer realm="first", realm="second"'],
            [Challenge("bearer", {"realm": "first"})],
            id="duplicate-param-first-wins",
        ),
        pytest.param(
            ['Bearer scope="repository:a:pull repository:b:pull,push"'],
            [Challenge("bearer", {"scope": "repository:a:pull repository:b:pull,push"})],
            id="space-separated-scopes",
        ),
        pytest.param(["Basic"], [Challenge("basic")], id="scheme-only"),
        pytest.param(
            ["Negotiate YII5Bg==, Basic realm=r"],
            [Challenge("negotiate", token68="YII5Bg=="), Challenge("basic", {"realm": "r"})],
            id="token68",
        ),
        pytest.param(
            ['Digest realm="d", nonce="n"'],
            [Challenge("digest", {"realm": "d", "nonce": "n"})],
            id="unknown-scheme-kept",
        ),
        pytest.param(['Bearer realm=""'], [Challenge("bearer", {"realm": ""})], id="empty-quoted"),
        pytest.param(
            ['Basic realm="ok", Bearer realm="unterminated'],
            [Challenge("basic", {"realm": "ok"})],
            id="unterminated-quote-drops-tail",
        ),
        pytest.param(
            ['Bearer realm="x" junk here'],
            [Challenge("bearer", {"realm": "x"})],
            id="junk-after-param",
        ),
        pytest.param(["", "   ", ",,,"], [], id="empty-and-blank"),
        pytest.param(['"Bearer" realm=x', "@@@"], [], id="garbage"),
    ],
)
def test_parse_challenges(headers: list[str], expected: list[Challenge]) -> None:
    assert parse_challenges(headers) == expected


@given(st.lists(st.text(max_size=80), max_size=4))
def test_parse_challenges_never_raises(headers: list[str]) -> None:
    for challenge in parse_challenges(headers):
        assert challenge.scheme == challenge.scheme.lower()
        assert all(k == k.lower() for k in challenge.params)


def test_challenge_properties() -> None:
    (c,) = parse_challenges([CHALLENGE + ',error="insufficient_scope"'])
    assert (c.realm, c.service, c.scopes, c.error) == (
        REALM,
        "registry.example.com",
        [SCOPE],
        "insufficient_scope",
    )
    assert Challenge("basic").scopes == []


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(['Basic realm="b"', 'Bearer realm="r"'], "bearer", id="bearer-preferred"),
        pytest.param(['Bearer service="s"', 'Basic realm="b"'], "basic", id="bearer-no-realm"),
        pytest.param(['Digest realm="d"', "Basic"], "basic", id="basic-over-digest"),
        pytest.param(['Digest realm="d"'], None, id="nothing-usable"),
        pytest.param([], None, id="no-challenge"),
    ],
)
def test_pick_challenge(headers: list[str], expected: str | None) -> None:
    picked = pick_challenge(parse_challenges(headers))
    assert (picked.scheme if picked else None) == expected


# --------------------------------------------------------------------------- values


def test_credentials_repr_hides_secrets() -> None:
    creds = Credentials("alice", "pw-SECRET", "id-SECRET", "reg-SECRET")
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert "SECRET" not in text
        assert "alice" in text
        assert "<redacted>" in text
    assert "<redacted>" not in repr(ANONYMOUS)


@pytest.mark.parametrize(
    ("creds", "material"),
    [
        pytest.param(ANONYMOUS, b"{}", id="anonymous"),
        pytest.param(Credentials("u", "p"), b'{"username":"u","password":"p"}', id="user-password"),
        pytest.param(
            Credentials(identity_token="t"), b'{"identitytoken":"t"}', id="identity-token"
        ),
        pytest.param(
            Credentials(password="<&>"),
            b'{"password":"\\u003c\\u0026\\u003e"}',
            id="go-html-escaping",
        ),
        pytest.param(
            Credentials(username="\u00e9"), '{"username":"\u00e9"}'.encode(), id="utf8-raw"
        ),
        pytest.param(
            Credentials(password="a\u2028b"), b'{"password":"a\\u2028b"}', id="line-separator"
        ),
    ],
)
def test_fingerprint_is_kubelet_auth_config_hash(creds: Credentials, material: bytes) -> None:
    assert creds.fingerprint() == hashlib.sha256(material).hexdigest()


def test_fingerprint_separates_credentials() -> None:
    prints = {
        c.fingerprint() for c in (ANONYMOUS, USER, IDENT, IDENT_USER, Credentials("alice", "other"))
    }
    assert len(prints) == 5
    assert Credentials("alice", "pa55-SECRET-word").fingerprint() == USER.fingerprint()
    assert ANONYMOUS.is_anonymous
    assert not USER.is_anonymous


@pytest.mark.parametrize(
    ("repository", "actions", "expected"),
    [
        pytest.param("library/busybox", ["pull"], "repository:library/busybox:pull", id="pull"),
        pytest.param("a/b", ["push", "pull"], "repository:a/b:pull,push", id="pull-push-sorted"),
        pytest.param("a", ["pull", "pull"], "repository:a:pull", id="deduplicated"),
    ],
)
def test_scope_for(repository: str, actions: list[str], expected: str) -> None:
    assert scope_for(repository, actions) == expected


@pytest.mark.parametrize(
    ("repository", "actions"),
    [
        pytest.param("", ["pull"], id="empty-name"),
        pytest.param("a b", ["pull"], id="space-in-name"),
        pytest.param("a", [], id="no-actions"),
        pytest.param("a", ["steal"], id="unknown-action"),
    ],
)
def test_scope_for_rejects(repository: str, actions: list[str]) -> None:
    with pytest.raises(ValueError, match="scope"):
        scope_for(repository, actions)


def test_basic_header() -> None:
    assert basic_header(USER) == _basic("alice", "pa55-SECRET-word")


@pytest.mark.parametrize(
    "creds",
    [
        pytest.param(None, id="none"),
        pytest.param(ANONYMOUS, id="anonymous"),
        pytest.param(Credentials(username="u"), id="no-password"),
        pytest.param(IDENT, id="identity-token-only"),
    ],
)
def test_basic_header_needs_credentials(creds: Credentials | None) -> None:
    with pytest.raises(RegistryAuthError, match="no credentials were given") as info:
        basic_header(creds)
    assert info.value.status == 401


def test_plan_token_request_variants() -> None:
    anon = plan_token_request(REALM, "svc", ["s1", "s2"], None, client_id="c", oauth=False)
    assert anon == TokenRequest(
        "GET", REALM, (("service", "svc"), ("scope", "s1"), ("scope", "s2"))
    )
    with_user = plan_token_request(REALM, "", [SCOPE], USER, client_id="c", oauth=False)
    assert with_user.params == (("scope", SCOPE),)
    assert with_user.authorization == _basic("alice", "pa55-SECRET-word")
    post = plan_token_request(REALM, "svc", ["s1", "s2"], IDENT, client_id="c", oauth=True)
    assert post.method == "POST"
    assert dict(post.form) == {
        "grant_type": "refresh_token",
        "refresh_token": "ident-SECRET-token",
        "service": "svc",
        "scope": "s1 s2",
        "client_id": "c",
    }
    # containerd sends an identity token as the Basic secret when it falls back to GET
    fallback = plan_token_request(REALM, "svc", [], IDENT, client_id="c", oauth=False)
    assert fallback.authorization == _basic("", "ident-SECRET-token")
    for request in (with_user, post, fallback):
        assert "SECRET" not in repr(request)
        if request.authorization:
            assert request.authorization.split()[1] not in repr(request)


@pytest.mark.parametrize(
    ("status", "creds", "expected"),
    [
        pytest.param(400, IDENT, True, id="400-acr"),
        pytest.param(401, IDENT, True, id="401-artifactory"),
        pytest.param(404, IDENT, True, id="404-gcr"),
        pytest.param(405, IDENT_USER, True, id="405-with-username"),
        pytest.param(405, IDENT, False, id="405-without-username"),
        pytest.param(403, IDENT_USER, False, id="403"),
        pytest.param(500, IDENT_USER, False, id="500"),
    ],
)
def test_should_fall_back_to_get(status: int, creds: Credentials, expected: bool) -> None:
    assert should_fall_back_to_get(status, creds) is expected


def _token_body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("body", "value", "lifetime", "issued_at"),
    [
        pytest.param(_token_body(token="tok-1"), "tok-1", 60.0, "", id="expires-absent-60"),
        pytest.param(
            _token_body(access_token="acc-1", token="tok-1"), "acc-1", 60.0, "", id="access-wins"
        ),
        pytest.param(_token_body(access_token="acc-1"), "acc-1", 60.0, "", id="access-only"),
        pytest.param(_token_body(token="tok-1", expires_in=30), "tok-1", 60.0, "", id="clamped"),
        pytest.param(_token_body(token="tok-1", expires_in=0), "tok-1", 60.0, "", id="zero"),
        pytest.param(_token_body(token="tok-1", expires_in=-5), "tok-1", 60.0, "", id="negative"),
        pytest.param(_token_body(token="tok-1", expires_in=300), "tok-1", 300.0, "", id="300"),
        pytest.param(_token_body(token="tok-1", expires_in=90.5), "tok-1", 90.5, "", id="float"),
        pytest.param(_token_body(token="tok-1", expires_in=True), "tok-1", 60.0, "", id="bool"),
        pytest.param(_token_body(token="tok-1", expires_in="900"), "tok-1", 60.0, "", id="string"),
        pytest.param(
            _token_body(token="tok-1", issued_at="2024-01-01T00:00:00Z"),
            "tok-1",
            60.0,
            "2024-01-01T00:00:00Z",
            id="issued-at",
        ),
    ],
)
def test_parse_token_response(body: bytes, value: str, lifetime: float, issued_at: str) -> None:
    token = parse_token_response(body, realm=REALM)
    assert (token.value, token.lifetime, token.issued_at) == (value, lifetime, issued_at)
    assert value not in repr(token)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        pytest.param(b"<html>", "not a JSON object", id="not-json"),
        pytest.param(b"[1]", "not a JSON object", id="json-array"),
        pytest.param(b'{"expires_in":60}', "did not include a token", id="no-token"),
        pytest.param(b'{"token":""}', "did not include a token", id="empty-token"),
        pytest.param(b'{"token":7}', "did not include a token", id="number-token"),
        pytest.param(b'{"token":"a\\r\\nX-Evil: 1"}', "unusable in a header", id="crlf-token"),
    ],
)
def test_parse_token_response_rejects(body: bytes, match: str) -> None:
    with pytest.raises(RegistryAuthError, match=match) as info:
        parse_token_response(body, realm=REALM)
    assert "Evil" not in str(info.value)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(
            b'{"errors":[{"code":"UNAUTHORIZED","message":"m"}]}', "UNAUTHORIZED", id="oci"
        ),
        pytest.param(
            b'{"error":"invalid_grant","error_description":"d"}', "invalid_grant", id="oauth"
        ),
        pytest.param(b'{"error":"has spaces and pw-SECRET"}', None, id="not-a-word"),
        pytest.param(b'{"errors":[]}', None, id="empty-errors"),
        pytest.param(b"nope", None, id="not-json"),
    ],
)
def test_error_code(body: bytes, code: str | None) -> None:
    assert error_code(body) == code


@pytest.mark.parametrize(
    ("realm", "host"),
    [
        pytest.param("https://auth.docker.io/token", "registry-1.docker.io", id="https-other-host"),
        pytest.param("http://127.0.0.1:5001/token", "127.0.0.1:5000", id="http-loopback"),
        pytest.param("http://reg.local:5000/auth", "reg.local:5000", id="http-same-host"),
        pytest.param("https://10.0.0.5/token", "10.0.0.9:5000", id="internal-from-internal"),
        pytest.param("https://a.example/token?x=1", "b.example", id="realm-with-query"),
    ],
)
def test_check_realm_accepts(realm: str, host: str) -> None:
    assert check_realm(realm, host) == realm.split("?")[0]


@pytest.mark.parametrize(
    ("realm", "host", "match"),
    [
        pytest.param("http://auth.example.com/t", HOST, "must use https", id="http-other-host"),
        pytest.param("ftp://auth.example.com/t", HOST, "not an http", id="ftp"),
        pytest.param("https://u:p@auth.example.com/t", HOST, "userinfo", id="userinfo"),
        pytest.param("https://127.0.0.1/t", HOST, "internal", id="loopback-from-public"),
        pytest.param("https://169.254.169.254/t", HOST, "internal", id="metadata-ip"),
        pytest.param("/relative", HOST, "not an http", id="relative"),
    ],
)
def test_check_realm_rejects(realm: str, host: str, match: str) -> None:
    with pytest.raises(RegistryAuthError, match=match) as info:
        check_realm(realm, host)
    assert ":p@" not in str(info.value)


# --------------------------------------------------------------------------- AuthManager


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Handler = Callable[[httpx.Request], Any]


class TokenServerStub:
    """A scripted token endpoint (a respx side effect) that records every request."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.handler = handler
        self.issued = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.handler is not None:
            result = self.handler(request)
            if not isinstance(result, httpx.Response):
                result = await result
            assert isinstance(result, httpx.Response)
            return result
        self.issued += 1
        return httpx.Response(200, json={"token": f"tok-SECRET-{self.issued}"})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stub() -> TokenServerStub:
    return TokenServerStub()


def token_router(stub: TokenServerStub) -> respx.Router:
    """Only the realm (GET or POST, any query) is answered, by ``stub``."""
    router = respx.Router()
    router.route(scheme="https", host="auth.example.com", path="/token").mock(side_effect=stub)
    return router


@pytest.fixture
async def manager(stub: TokenServerStub, clock: FakeClock) -> AsyncIterator[AuthManager]:
    router = token_router(stub)
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler)) as http:
        yield AuthManager(http, clock=clock)


def _query(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.url.query.decode())


@pytest.mark.anyio
async def test_anonymous_bearer(manager: AuthManager, stub: TokenServerStub) -> None:
    header = await manager.authorize(HOST, SCOPE, [CHALLENGE], None)
    assert header == "Bearer tok-SECRET-1"
    (request,) = stub.requests
    assert request.method == "GET"
    assert str(request.url.copy_with(query=None)) == REALM
    assert _query(request) == {"service": ["registry.example.com"], "scope": [SCOPE]}
    assert "authorization" not in request.headers
    assert request.headers["accept-encoding"] == "identity"
    assert manager.header_for(HOST, SCOPE, None) == header
    assert manager.header_for(HOST.upper(), SCOPE, ANONYMOUS) == header
    assert manager.header_for(HOST, "repository:other:pull", None) is None


@pytest.mark.anyio
async def test_bearer_with_basic_credentials(manager: AuthManager, stub: TokenServerStub) -> None:
    header = await manager.authorize(HOST, SCOPE, [CHALLENGE], USER)
    assert header == "Bearer tok-SECRET-1"
    (request,) = stub.requests
    assert request.method == "GET"
    assert request.headers["authorization"] == _basic("alice", "pa55-SECRET-word")
    assert "client_id" not in _query(request)


@pytest.mark.anyio
async def test_scopes_merged_with_challenge(manager: AuthManager, stub: TokenServerStub) -> None:
    challenge = f'Bearer realm="{REALM}",scope="repository:other:pull {SCOPE}"'
    await manager.authorize(HOST, SCOPE, [challenge], None)
    assert _query(stub.requests[0]) == {"scope": [SCOPE, "repository:other:pull"]}


@pytest.mark.anyio
async def test_identity_token_post(manager: AuthManager, stub: TokenServerStub) -> None:
    stub.handler = lambda request: httpx.Response(200, json={"access_token": "at-SECRET"})
    header = await manager.authorize(HOST, SCOPE, [CHALLENGE], IDENT)
    assert header == "Bearer at-SECRET"
    (request,) = stub.requests
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in request.headers
    assert parse_qs(request.content.decode()) == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["ident-SECRET-token"],
        "service": ["registry.example.com"],
        "scope": [SCOPE],
        "client_id": ["kubelet-sim"],
    }


@pytest.mark.parametrize(
    ("post_status", "creds", "get_authorization"),
    [
        pytest.param(404, IDENT, _basic("", "ident-SECRET-token"), id="404-identity-as-secret"),
        pytest.param(400, IDENT_USER, _basic("bob", "ident-SECRET-token"), id="400"),
        pytest.param(401, IDENT, _basic("", "ident-SECRET-token"), id="401"),
        pytest.param(
            405,
            Credentials("bob", "pw-SECRET", identity_token="ident-SECRET-token"),
            _basic("bob", "pw-SECRET"),
            id="405-with-username-uses-password",
        ),
    ],
)
@pytest.mark.anyio
async def test_post_fallback_to_get(
    stub: TokenServerStub,
    manager: AuthManager,
    post_status: int,
    creds: Credentials,
    get_authorization: str,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(post_status, text="no oauth here")
        return httpx.Response(200, json={"token": "from-get"})

    stub.handler = handler
    assert await manager.authorize(HOST, SCOPE, [CHALLENGE], creds) == "Bearer from-get"
    assert [r.method for r in stub.requests] == ["POST", "GET"]
    assert stub.requests[1].headers["authorization"] == get_authorization
    assert _query(stub.requests[1])["scope"] == [SCOPE]


@pytest.mark.parametrize(
    ("post_status", "creds"),
    [
        pytest.param(405, IDENT, id="405-without-username"),
        pytest.param(403, IDENT_USER, id="403"),
        pytest.param(500, IDENT, id="500"),
    ],
)
@pytest.mark.anyio
async def test_post_failure_without_fallback(
    stub: TokenServerStub, manager: AuthManager, post_status: int, creds: Credentials
) -> None:
    stub.handler = lambda request: httpx.Response(post_status)
    with pytest.raises(RegistryAuthError) as info:
        await manager.authorize(HOST, SCOPE, [CHALLENGE], creds)
    assert info.value.status == post_status
    assert [r.method for r in stub.requests] == ["POST"]


@pytest.mark.anyio
async def test_basic_challenge(manager: AuthManager, stub: TokenServerStub) -> None:
    header = await manager.authorize(HOST, SCOPE, ['Basic realm="registry"'], USER)
    assert header == _basic("alice", "pa55-SECRET-word")
    assert stub.requests == []
    # Basic is host-wide: any scope on this host, only for these credentials
    assert manager.header_for(HOST, "repository:x:pull", USER) == header
    assert manager.header_for(HOST, SCOPE, None) is None
    assert manager.header_for("other.example.com", SCOPE, USER) is None
    assert manager.invalidate(HOST, "repository:x:pull", USER)
    assert manager.header_for(HOST, SCOPE, USER) is None


@pytest.mark.anyio
async def test_basic_challenge_without_credentials(manager: AuthManager) -> None:
    with pytest.raises(RegistryAuthError) as info:
        await manager.authorize(HOST, SCOPE, ['Basic realm="registry"'], None)
    assert info.value.message == "registry requires basic auth and no credentials were given"
    assert info.value.status == 401


@pytest.mark.anyio
async def test_registry_token_used_as_is(manager: AuthManager, stub: TokenServerStub) -> None:
    creds = Credentials(registry_token="reg-SECRET")
    assert await manager.authorize(HOST, SCOPE, [CHALLENGE], creds) == "Bearer reg-SECRET"
    assert stub.requests == []
    assert manager.header_for(HOST, SCOPE, creds) == "Bearer reg-SECRET"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([], id="no-header"),
        pytest.param(['Digest realm="x"'], id="digest-only"),
        pytest.param(['Bearer service="x"'], id="bearer-without-realm"),
    ],
)
@pytest.mark.anyio
async def test_no_usable_challenge(manager: AuthManager, headers: list[str]) -> None:
    with pytest.raises(RegistryAuthError, match="without a usable") as info:
        await manager.authorize(HOST, SCOPE, headers, USER)
    assert info.value.status == 401


@pytest.mark.anyio
async def test_bad_realm_sends_nothing(manager: AuthManager, stub: TokenServerStub) -> None:
    with pytest.raises(RegistryAuthError, match="must use https"):
        await manager.authorize(HOST, SCOPE, ['Bearer realm="http://evil.example/t"'], USER)
    assert stub.requests == []


@pytest.mark.parametrize(
    ("body", "expires_in_effect"),
    [
        pytest.param({"token": "t"}, 60.0, id="absent-defaults-to-60"),
        pytest.param({"token": "t", "expires_in": 10}, 60.0, id="short-clamped"),
        pytest.param({"token": "t", "expires_in": 300}, 300.0, id="300"),
    ],
)
@pytest.mark.anyio
async def test_expiry_and_refresh(
    manager: AuthManager,
    stub: TokenServerStub,
    clock: FakeClock,
    body: dict[str, Any],
    expires_in_effect: float,
) -> None:
    stub.handler = lambda request: httpx.Response(200, json=body)
    start = clock.now
    await manager.authorize(HOST, SCOPE, [CHALLENGE], None)
    clock.now = start + expires_in_effect - 5.01
    assert manager.header_for(HOST, SCOPE, None) == "Bearer t"
    clock.now = start + expires_in_effect - 5.0
    assert manager.header_for(HOST, SCOPE, None) is None
    await manager.authorize(HOST, SCOPE, [CHALLENGE], None)
    assert len(stub.requests) == 2
    assert manager.header_for(HOST, SCOPE, None) == "Bearer t"


@pytest.mark.anyio
async def test_cached_token_served_without_fetch(
    manager: AuthManager, stub: TokenServerStub
) -> None:
    first = await manager.authorize(HOST, SCOPE, [CHALLENGE], None)
    assert await manager.authorize(HOST, SCOPE, [CHALLENGE], None) == first
    assert len(stub.requests) == 1
    assert manager.statistics().cache_hits == 1


@pytest.mark.anyio
async def test_cache_separated_per_credentials_and_scope(
    manager: AuthManager, stub: TokenServerStub
) -> None:
    other = Credentials(username="alice", password="another-SECRET")
    tokens = {
        (creds, scope): await manager.authorize(HOST, scope, [CHALLENGE], creds)
        for creds in (None, USER, other, IDENT)
        for scope in (SCOPE, "repository:private/app:pull")
    }
    assert len(set(tokens.values())) == 8
    assert len(stub.requests) == 8
    for (creds, scope), header in tokens.items():
        assert manager.header_for(HOST, scope, creds) == header
    assert manager.statistics().cached == 8


@pytest.mark.anyio
async def test_invalidate(manager: AuthManager) -> None:
    header = await manager.authorize(HOST, SCOPE, [CHALLENGE], USER)
    assert not manager.invalidate(HOST, SCOPE, USER, rejected="Bearer stale")
    assert manager.header_for(HOST, SCOPE, USER) == header
    assert manager.invalidate(HOST, SCOPE, USER, rejected=header)
    assert manager.header_for(HOST, SCOPE, USER) is None
    assert not manager.invalidate(HOST, SCOPE, USER)
    fresh = await manager.authorize(HOST, SCOPE, [CHALLENGE], USER)
    assert fresh != header


@pytest.mark.anyio
async def test_single_flight_shares_result(manager: AuthManager, stub: TokenServerStub) -> None:
    release = anyio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json={"token": "shared-SECRET"})

    stub.handler = slow
    results: list[str] = []

    async def call() -> None:
        results.append(await manager.authorize(HOST, SCOPE, [CHALLENGE], USER))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        assert manager.statistics().in_flight == 1
        release.set()
    assert results == ["Bearer shared-SECRET"] * 10
    assert len(stub.requests) == 1
    stats = manager.statistics()
    assert (stats.token_fetches, stats.cache_hits, stats.in_flight) == (1, 9, 0)


@pytest.mark.anyio
async def test_single_flight_shares_error(manager: AuthManager, stub: TokenServerStub) -> None:
    release = anyio.Event()

    async def failing(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(503, json={"errors": [{"code": "UNAVAILABLE"}]})

    stub.handler = failing
    errors: list[RegistryError] = []

    async def call() -> None:
        try:
            await manager.authorize(HOST, SCOPE, [CHALLENGE], USER)
        except RegistryAuthError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert len(stub.requests) == 1
    assert len(errors) == 5
    assert {(e.status, e.code, e.message) for e in errors} == {
        (503, "UNAVAILABLE", f"token server {REALM} refused the request for {SCOPE}")
    }
    # the error is not cached: the next call fetches again
    stub.handler = None
    assert await manager.authorize(HOST, SCOPE, [CHALLENGE], USER) == "Bearer tok-SECRET-1"
    assert len(stub.requests) == 2


@pytest.mark.anyio
async def test_cancelled_fetch_hands_over(manager: AuthManager, stub: TokenServerStub) -> None:
    first_started = anyio.Event()
    release = anyio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if len(stub.requests) == 1:
            first_started.set()
            await anyio.sleep_forever()
        await release.wait()
        return httpx.Response(200, json={"token": "second"})

    stub.handler = handler
    results: list[str] = []

    async def waiter() -> None:
        results.append(await manager.authorize(HOST, SCOPE, [CHALLENGE], None))

    async with anyio.create_task_group() as tg:
        async with anyio.create_task_group() as leader:
            leader.start_soon(manager.authorize, HOST, SCOPE, [CHALLENGE], None)
            await first_started.wait()
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            leader.cancel_scope.cancel()
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert results == ["Bearer second"]
    assert len(stub.requests) == 2


def _big_json(size: int) -> bytes:
    prefix, suffix = b'{"token":"t","pad":"', b'"}'
    return prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 4096):
        yield data[i : i + 4096]


# httpx streams are nested async generators; stopping early leaves the inner ones to the GC,
# which trio reports as a ResourceWarning (nothing leaks: the response is closed).
@pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning")
@pytest.mark.parametrize(
    ("status", "body", "streamed", "ok"),
    [
        pytest.param(200, _big_json(MAX_AUTH_BODY), False, True, id="exactly-64KiB-ok"),
        pytest.param(200, _big_json(MAX_AUTH_BODY + 1), False, False, id="content-length-over"),
        pytest.param(200, _big_json(MAX_AUTH_BODY + 1), True, False, id="streamed-over"),
        pytest.param(500, b"e" * (MAX_AUTH_BODY * 4), True, False, id="error-body-over"),
        pytest.param(
            200, gzip.compress(b"x" * (MAX_AUTH_BODY * 64)), True, False, id="gzip-bomb-over"
        ),
        pytest.param(200, gzip.compress(b'{"token":"t"}'), True, True, id="gzip-ok"),
    ],
)
@pytest.mark.anyio
async def test_body_cap(
    manager: AuthManager, stub: TokenServerStub, status: int, body: bytes, streamed: bool, ok: bool
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-encoding": "gzip"} if body.startswith(b"\x1f\x8b") else {}
        if streamed:
            return httpx.Response(status, headers=headers, content=_chunks(body))
        return httpx.Response(status, headers=headers, content=body)

    stub.handler = handler
    if ok:
        assert await manager.authorize(HOST, SCOPE, [CHALLENGE], None) == "Bearer t"
        return
    with pytest.raises(RegistryAuthError, match="was too large") as info:
        await manager.authorize(HOST, SCOPE, [CHALLENGE], None)
    assert info.value.status == status


@pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning")  # see test_body_cap
@pytest.mark.parametrize(
    ("encoding", "content", "match"),
    [
        pytest.param("br", b"\x8b\x00\x80", "unsupported content-encoding", id="brotli"),
        pytest.param("gzip", b"not gzip at all", "not valid gzip data", id="corrupt-gzip"),
    ],
)
@pytest.mark.anyio
async def test_content_encoding_errors(
    manager: AuthManager, stub: TokenServerStub, encoding: str, content: bytes, match: str
) -> None:
    stub.handler = lambda request: httpx.Response(
        200, headers={"content-encoding": encoding}, content=_chunks(content)
    )
    with pytest.raises(RegistryAuthError, match=match):
        await manager.authorize(HOST, SCOPE, [CHALLENGE], None)


@pytest.mark.anyio
async def test_expired_entries_pruned(
    manager: AuthManager, stub: TokenServerStub, clock: FakeClock
) -> None:
    for i in range(1030):
        await manager.authorize(HOST, f"repository:r{i}:pull", [CHALLENGE], None)
        if i == 1000:
            clock.now += 3600  # everything so far expires
    assert manager.statistics().cached < 100


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        pytest.param(
            401,
            b'{"errors":[{"code":"UNAUTHORIZED","message":"bad pa55-SECRET-word"}]}',
            "UNAUTHORIZED",
            f"token server {REALM} rejected the credentials for {SCOPE}",
            id="401-oci",
        ),
        pytest.param(
            403,
            b'{"error":"access_denied","error_description":"tok-SECRET-x"}',
            "access_denied",
            f"token server {REALM} rejected the credentials for {SCOPE}",
            id="403-oauth",
        ),
        pytest.param(
            500,
            b"<html>pa55-SECRET-word</html>",
            None,
            f"token server {REALM} refused the request for {SCOPE}",
            id="500-html",
        ),
        pytest.param(
            302, b"", None, f"token server {REALM} refused the request for {SCOPE}", id="302"
        ),
    ],
)
@pytest.mark.anyio
async def test_error_answers(
    manager: AuthManager,
    stub: TokenServerStub,
    status: int,
    body: bytes,
    code: str | None,
    message: str,
) -> None:
    stub.handler = lambda request: httpx.Response(status, content=body)
    with pytest.raises(RegistryAuthError) as info:
        await manager.authorize(HOST, SCOPE, [CHALLENGE], USER)
    assert (info.value.status, info.value.code, info.value.message) == (status, code, message)
    assert "SECRET" not in str(info.value)


@pytest.mark.anyio
async def test_transport_error(manager: AuthManager, stub: TokenServerStub) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    stub.handler = handler
    with pytest.raises(RegistryTransportError, match=r"token request to .* failed: ConnectError"):
        await manager.authorize(HOST, SCOPE, [CHALLENGE], USER)


@pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio")],
)
@pytest.mark.anyio
async def test_fetch_timeout(anyio_backend: Any, stub: TokenServerStub) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    stub.handler = hang
    router = token_router(stub)
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler)) as http:
        manager = AuthManager(http)
        started = anyio.current_time()
        with pytest.raises(RegistryTransportError, match="timed out after 60s"):
            await manager.authorize(HOST, SCOPE, [CHALLENGE], None)
        assert anyio.current_time() - started == pytest.approx(60.0)


# --------------------------------------------------------------------------- send_authorized


class RegistryStub:
    """A registry that wants ``Bearer <valid>`` and counts what it saw."""

    def __init__(self, valid: set[str], error: str = "invalid_token") -> None:
        self.valid = valid
        self.error = error
        self.seen: list[str | None] = []

    async def send(self, authorization: str | None) -> httpx.Response:
        self.seen.append(authorization)
        if authorization in self.valid:
            return httpx.Response(200, text="ok")
        challenge = CHALLENGE + (f',error="{self.error}"' if authorization else "")
        return httpx.Response(
            401,
            headers={"www-authenticate": challenge},
            json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
        )


@pytest.mark.anyio
async def test_send_authorized_first_contact(manager: AuthManager) -> None:
    registry = RegistryStub({"Bearer tok-SECRET-1"})
    response = await send_authorized(manager, HOST, SCOPE, USER, registry.send)
    assert response.status_code == 200
    assert registry.seen == [None, "Bearer tok-SECRET-1"]
    again = await send_authorized(manager, HOST, SCOPE, USER, registry.send)
    assert again.status_code == 200
    assert registry.seen[2:] == ["Bearer tok-SECRET-1"]


@pytest.mark.anyio
async def test_send_authorized_refreshes_rejected_token(
    manager: AuthManager, stub: TokenServerStub
) -> None:
    await manager.authorize(HOST, SCOPE, [CHALLENGE], USER)  # caches tok-SECRET-1
    registry = RegistryStub({"Bearer tok-SECRET-2"})
    response = await send_authorized(manager, HOST, SCOPE, USER, registry.send)
    assert response.status_code == 200
    assert registry.seen == ["Bearer tok-SECRET-1", "Bearer tok-SECRET-2"]
    assert len(stub.requests) == 2


@pytest.mark.parametrize(
    "cached", [pytest.param(False, id="fresh"), pytest.param(True, id="cached")]
)
@pytest.mark.anyio
async def test_send_authorized_second_401_fails(
    manager: AuthManager, stub: TokenServerStub, cached: bool
) -> None:
    if cached:
        await manager.authorize(HOST, SCOPE, [CHALLENGE], USER)
    registry = RegistryStub(set(), error="insufficient_scope")
    with pytest.raises(RegistryAuthError) as info:
        await send_authorized(manager, HOST, SCOPE, USER, registry.send)
    assert len(registry.seen) == 2  # no loop
    assert (info.value.status, info.value.code) == (401, "UNAUTHORIZED")
    assert "refused the credentials" in info.value.message
    assert "(server said insufficient_scope)" in info.value.message
    assert manager.header_for(HOST, SCOPE, USER) is None


# --------------------------------------------------------------------------- leaks


SECRETS = (
    "pa55-SECRET-word",
    "ident-SECRET-token",
    "reg-SECRET-token",
    "tok-SECRET",
    "at-SECRET",
    "refresh-SECRET",
    base64.b64encode(b"alice:pa55-SECRET-word").decode(),
    base64.b64encode(b":ident-SECRET-token").decode(),
)


def _texts(exc: BaseException) -> Iterator[str]:
    seen: BaseException | None = exc
    while seen is not None:
        yield str(seen)
        yield repr(seen)
        yield repr(getattr(seen, "args", ()))
        yield repr(getattr(seen, "detail", None))
        seen = seen.__cause__ or seen.__context__


@pytest.mark.anyio
async def test_no_secret_in_logs_errors_or_reprs(clock: FakeClock) -> None:
    answers = iter(
        [
            httpx.Response(200, json={"token": "tok-SECRET-a", "refresh_token": "refresh-SECRET"}),
            httpx.Response(404),
            httpx.Response(200, json={"access_token": "at-SECRET-b"}),
            httpx.Response(
                401, json={"errors": [{"code": "DENIED", "message": "pa55-SECRET-word"}]}
            ),
            httpx.Response(200, content=b"x" * (MAX_AUTH_BODY + 10)),
            httpx.Response(200, json={"token": "tok-SECRET\r\nX: y"}),
            httpx.Response(200, json={"token": "tok-SECRET-c"}),
        ]
    )

    router = respx.Router()
    down = router.route(host="down.example.com").mock(side_effect=httpx.ConnectError("refused"))
    realm = router.route(host="auth.example.com", path="/token").mock(side_effect=answers)

    user = Credentials("alice", "pa55-SECRET-word", "", "")
    ident = Credentials("", "", "ident-SECRET-token", "")
    reg = Credentials(registry_token="reg-SECRET-token")
    texts: list[str] = []
    with structlog.testing.capture_logs() as logs:
        async with httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler)) as http:
            manager = AuthManager(http, clock=clock)
            texts.append(await manager.authorize(HOST, SCOPE, [CHALLENGE], user))
            texts.append(await manager.authorize(HOST, "repository:b:pull", [CHALLENGE], ident))
            texts.append(await manager.authorize(HOST, SCOPE, [CHALLENGE], reg))
            texts.append(await manager.authorize(HOST, SCOPE, ['Basic realm="r"'], user))
            failing = [
                (HOST, "repository:c:pull", [CHALLENGE], user),
                (HOST, "repository:d:pull", [CHALLENGE], user),
                (HOST, "repository:e:pull", [CHALLENGE], ident),
                (HOST, "repository:f:pull", ['Bearer realm="https://down.example.com/t"'], user),
                (HOST, "repository:g:pull", ['Bearer realm="http://evil.example.com/t"'], user),
                (HOST, SCOPE, ['Basic realm="r"'], Credentials(password="pa55-SECRET-word")),
            ]
            errors: list[BaseException] = []
            for args in failing:
                with pytest.raises(RegistryError) as info:
                    await manager.authorize(*args)
                errors.append(info.value)
            registry = RegistryStub(set())
            with pytest.raises(RegistryAuthError) as info:
                await send_authorized(manager, HOST, SCOPE, user, registry.send)
            errors.append(info.value)
            reprs = [repr(manager.statistics()), repr(vars(manager))]
    # the headers we handed out do hold secrets: that is their job, and they go nowhere else
    assert any("tok-SECRET-a" in t for t in texts)
    assert down.call_count == 1
    assert realm.call_count == 7  # each scripted answer was asked for once; evil got nothing
    haystack = [repr(logs), *reprs, *(t for e in errors for t in _texts(e))]
    haystack += [repr(user), str(ident), repr(reg)]
    assert len(logs) >= 6
    assert any(entry.get("status") == 404 for entry in logs)
    for secret in SECRETS:
        for text in haystack:
            assert secret not in text, (secret, text[:200])


def test_request_and_token_reprs_hide_secrets() -> None:
    request = plan_token_request(REALM, "s", [SCOPE], USER, client_id="c", oauth=False)
    post = plan_token_request(REALM, "s", [SCOPE], IDENT, client_id="c", oauth=True)
    token = parse_token_response(json.dumps({"token": "tok-SECRET-z"}).encode(), realm=REALM)
    for text in (repr(request), repr(post), repr(token)):
        for secret in (*SECRETS, "tok-SECRET-z"):
            assert secret not in text


# --------------------------------------------------------------------------- every credential failed
# kubelet kuberuntime_image.go: PullImage tries each credential and returns
# utilerrors.NewAggregate(pullErrs): one distinct message as itself, several as "[e1, e2]".

AGG_REF = parse_normalized("registry.example.com/library/busybox:latest")
BOB = Credentials(username="bob", password="bob-SECRET-pw")


class FailingPulls(ImageService):
    """An ImageService whose registry pull fails with a scripted error per credential user."""

    def __init__(self, errors: dict[str, RegistryError]) -> None:
        super().__init__(cast(RegistryClient, None), cast(Store, None))
        self.errors = errors

    async def _pull(
        self,
        ref: ImageReference,
        runtime_handler: str,
        creds: Credentials | None,
        progress: ProgressFn | None,
        on_resolved: ResolvedHook | None = None,
    ) -> PulledImage:
        raise self.errors[creds.username if creds else ""]


@pytest.mark.anyio
async def test_when_every_credential_fails_all_their_errors_are_shown() -> None:
    denied = RegistryAuthError(
        "registry refused the credentials (401 after authorizing)", status=401
    )
    missing = RegistryNotFoundError("GET .../manifests/latest: manifest unknown", status=404)
    service = FailingPulls({"alice": denied, "bob": missing})
    with pytest.raises(CredentialsFailedError) as info:
        await service.pull_image(AGG_REF, credentials=[USER, BOB])
    texts = [cri_error_message(AGG_REF, e) for e in (denied, missing)]
    assert cri_error_message(AGG_REF, info.value) == f"[{texts[0]}, {texts[1]}]"
    assert info.value.errors == (denied, missing)
    assert info.value.reason is PullReason.ERR_IMAGE_PULL
    assert "pa55-SECRET-word" not in str(info.value)
    assert "bob-SECRET-pw" not in str(info.value)


@pytest.mark.anyio
async def test_identical_credential_errors_read_as_one_typed_error() -> None:
    denied = RegistryAuthError(
        "registry refused the credentials (401 after authorizing)", status=401
    )
    service = FailingPulls({"alice": denied, "bob": denied})
    with pytest.raises(RegistryAuthError) as info:
        await service.pull_image(AGG_REF, credentials=[USER, BOB])
    assert info.value is denied
    with pytest.raises(RegistryAuthError):
        await FailingPulls({"alice": denied}).pull_image(AGG_REF, credentials=[USER])


@pytest.mark.anyio
@pytest.mark.parametrize("per_pull", [True, False])
async def test_each_pull_meets_the_challenge_itself_as_in_containerd(
    manager: AuthManager, stub: TokenServerStub, per_pull: bool
) -> None:
    # containerd makes a resolver and an authorizer per PullImage: a token is not reused by
    # the node's next pull. authPerPull: false keeps one cache for the node.
    manager.per_pull = per_pull
    first, second = PullTrace(0.0), PullTrace(0.0)
    assert first.session != second.session
    token = CURRENT.set(first)
    try:
        await manager.authorize(HOST, SCOPE, [CHALLENGE], USER)
        assert manager.header_for(HOST, SCOPE, USER) is not None  # within one pull: reused
    finally:
        CURRENT.reset(token)
    token = CURRENT.set(second)
    try:
        reused = manager.header_for(HOST, SCOPE, USER)
        await manager.authorize(HOST, SCOPE, [CHALLENGE], USER)
    finally:
        CURRENT.reset(token)
    assert (reused is None) is per_pull
    assert len(stub.requests) == (2 if per_pull else 1)
    # Outside any pull (a push, a preflight without a trace) the node-wide entry serves.
    assert (manager.header_for(HOST, SCOPE, USER) is not None) is not per_pull
