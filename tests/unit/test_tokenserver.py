"""Tests for kubelet_sim.sim.tokenserver over loopback, and AuthManager against it."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.errors import RegistryAuthError
from kubelet_sim.registry.auth import AuthManager
from kubelet_sim.sim.tokenserver import TokenServer, libtrust_key_id, parse_scope

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
SERVICE = "kubelet-sim-registry"
PULL = "repository:library/busybox:pull"


def _unb64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_jwt(token: str, bundle_pem: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check an ES256 JWT the way distribution does (x5c leaf in the bundle, signature)."""
    head_b64, claims_b64, sig_b64 = token.split(".")
    header = json.loads(_unb64url(head_b64))
    claims = json.loads(_unb64url(claims_b64))
    leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    assert leaf in x509.load_pem_x509_certificates(bundle_pem)
    raw = _unb64url(sig_b64)
    assert len(raw) == 64
    signature = encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    return header, claims


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with TokenServer(
        USERS,
        acl={"alice": {"*": ["*"]}, "bob": {"library/*": ["pull"]}, "": {"public/*": ["pull"]}},
        refresh_tokens={"alice-refresh": "alice"},
    ) as running:
        yield running


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def test_anonymous_and_basic_tokens_verify(
    server: TokenServer, http: httpx.Client, tmp_path: Path
) -> None:
    bundle = server.cert_bundle_path(tmp_path).read_bytes()
    before = int(time.time())
    answer = http.get(
        server.realm,
        params=[("service", SERVICE), ("scope", PULL), ("scope", "repository:a/b:pull,push")],
        auth=("alice", "alice-pw"),
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert body["issued_at"].endswith("Z")
    header, claims = verify_jwt(body["token"], bundle)
    assert header["alg"] == "ES256"
    assert header["typ"] == "JWT"
    assert header["kid"] == server.key_id
    assert {k: claims[k] for k in ("iss", "sub", "aud")} == {
        "iss": "kubelet-sim-test",
        "sub": "alice",
        "aud": SERVICE,
    }
    assert claims["exp"] - claims["iat"] == 300
    assert before - 1 <= claims["nbf"] == claims["iat"] <= int(time.time()) + 1
    assert len(claims["jti"]) == 32
    assert claims["access"] == [
        {"type": "repository", "name": "library/busybox", "actions": ["pull"]},
        {"type": "repository", "name": "a/b", "actions": ["pull", "push"]},
    ]
    anonymous = http.get(server.realm, params={"service": SERVICE, "scope": PULL})
    _, anon_claims = verify_jwt(anonymous.json()["token"], bundle)
    assert anon_claims["sub"] == ""
    assert anon_claims["access"] == []
    assert server.token_requests == 2


@pytest.mark.parametrize(
    ("auth", "scopes", "access"),
    [
        pytest.param(
            ("bob", "bob-pw"),
            ["repository:library/x:pull,push", "repository:private/y:pull"],
            [("repository", "library/x", ("pull",))],
            id="acl-restricts-bob",
        ),
        pytest.param(
            None,
            ["repository:public/app:pull", "repository:library/x:pull"],
            [("repository", "public/app", ("pull",))],
            id="acl-anonymous-public",
        ),
        pytest.param(
            ("carol", "carol-pw"),
            ["repository:127.0.0.1:5000/x:pull", "registry:catalog:*"],
            [],
            id="carol-not-in-acl-gets-nothing",
        ),
    ],
)
def test_acl(
    server: TokenServer,
    http: httpx.Client,
    auth: tuple[str, str] | None,
    scopes: list[str],
    access: list[tuple[str, str, tuple[str, ...]]],
) -> None:
    answer = http.get(server.realm, params=[("scope", s) for s in scopes], auth=auth)
    assert answer.status_code == 200
    assert list(server.records[-1].access) == access


def test_no_acl_grants_users_what_they_ask() -> None:
    with TokenServer(USERS) as server:
        assert server.grant("alice", ["registry:catalog:*", "repository:a:pull"]) == [
            {"type": "registry", "name": "catalog", "actions": ["*"]},
            {"type": "repository", "name": "a", "actions": ["pull"]},
        ]
        assert server.grant("", ["repository:a:pull"]) == []


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        pytest.param({"auth": ("alice", "wrong")}, 401, "UNAUTHORIZED", id="bad-password"),
        pytest.param({"auth": ("mallory", "x")}, 401, "UNAUTHORIZED", id="unknown-user"),
        pytest.param(
            {"headers": {"Authorization": "Bearer abc"}}, 401, "UNAUTHORIZED", id="not-basic"
        ),
        pytest.param({"params": {"service": "other"}}, 400, "invalid_request", id="bad-service"),
    ],
)
def test_get_errors(
    server: TokenServer, http: httpx.Client, kwargs: dict[str, Any], status: int, error: str
) -> None:
    answer = http.get(server.realm, **kwargs)
    assert answer.status_code == status
    body = answer.json()
    assert body.get("error") == error or body["errors"][0]["code"] == error
    assert server.records[-1].status == status


@pytest.mark.parametrize(
    ("form", "status", "user"),
    [
        pytest.param(
            {"grant_type": "refresh_token", "refresh_token": "alice-refresh"}, 200, "alice", id="rt"
        ),
        pytest.param(
            {"grant_type": "password", "username": "bob", "password": "bob-pw"},
            200,
            "bob",
            id="password",
        ),
        pytest.param(
            {"grant_type": "refresh_token", "refresh_token": "nope"}, 401, "", id="bad-rt"
        ),
        pytest.param(
            {"grant_type": "password", "username": "bob", "password": "x"}, 401, "", id="bad-pw"
        ),
        pytest.param({"grant_type": "authorization_code"}, 400, "", id="unsupported-grant"),
    ],
)
def test_oauth_post(
    server: TokenServer, http: httpx.Client, form: dict[str, str], status: int, user: str
) -> None:
    data = {"service": SERVICE, "scope": PULL, "client_id": "test", **form}
    answer = http.post(server.realm, data=data)
    assert answer.status_code == status
    record = server.records[-1]
    assert (record.method, record.user, record.scopes) == ("POST", user, (PULL,))
    if status == 200:
        body = answer.json()
        assert body["scope"] == PULL
        assert "token" not in body
        _, claims = verify_jwt(body["access_token"], server.cert_pem)
        assert claims["sub"] == user


def test_oauth_post_needs_client_id_and_can_be_disabled(http: httpx.Client) -> None:
    with TokenServer(USERS, refresh_tokens={"rt": "alice"}) as server:
        answer = http.post(
            server.realm, data={"grant_type": "refresh_token", "refresh_token": "rt"}
        )
        assert answer.status_code == 400
    with TokenServer(USERS, oauth=False) as server:
        assert http.post(server.realm, data={"client_id": "x"}).status_code == 404
        assert http.get(server.realm).status_code == 200
        assert http.get(server.realm.replace("/token", "/other")).status_code == 404


def test_cert_bundle(server: TokenServer, tmp_path: Path) -> None:
    path = server.cert_bundle_path(tmp_path / "sub")
    assert path.parent == tmp_path / "sub"
    (cert,) = x509.load_pem_x509_certificates(path.read_bytes())
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    config = server.token_auth_config(tmp_path)
    assert (config.realm, config.service, config.issuer) == (server.realm, SERVICE, server.issuer)
    assert config.rootcertbundle.read_bytes() == server.cert_pem


def test_tampered_token_fails_verification(server: TokenServer) -> None:
    token = server.issue("alice", [])
    head, claims, sig = token.split(".")
    forged = json.loads(_unb64url(claims)) | {"sub": "root"}
    forged_b64 = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidSignature):
        verify_jwt(f"{head}.{forged_b64}.{sig}", server.cert_pem)


def test_libtrust_key_id_shape() -> None:
    kid = libtrust_key_id(b"any der bytes")
    groups = kid.split(":")
    assert len(groups) == 12
    assert all(len(g) == 4 and set(g) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for g in groups)


@pytest.mark.parametrize(
    ("scope", "parsed"),
    [
        pytest.param("repository:a/b:pull,push", ("repository", "a/b", ("pull", "push")), id="rw"),
        pytest.param(
            "repository:localhost:5000/a:pull",
            ("repository", "localhost:5000/a", ("pull",)),
            id="port",
        ),
        pytest.param("registry:catalog:*", ("registry", "catalog", ("*",)), id="catalog"),
        pytest.param("nonsense", None, id="bad"),
        pytest.param("repository::pull", None, id="empty-name"),
    ],
)
def test_parse_scope(scope: str, parsed: tuple[str, str, tuple[str, ...]] | None) -> None:
    assert parse_scope(scope) == parsed


def test_stop_is_idempotent_and_port_needs_start() -> None:
    server = TokenServer(USERS)
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.realm
    server.start()
    assert server.start() is server
    server.stop()
    server.stop()


# --------------------------------------------------------------------------- AuthManager e2e

HOST = "127.0.0.1:5000"


def _challenge(server: TokenServer, scope: str = PULL) -> list[str]:
    return [f'Bearer realm="{server.realm}",service="{SERVICE}",scope="{scope}"']


@pytest.mark.parametrize(
    ("creds", "method", "user"),
    [
        pytest.param(None, "GET", "", id="anonymous"),
        pytest.param(Credentials("alice", "alice-pw"), "GET", "alice", id="basic"),
        pytest.param(Credentials(identity_token="alice-refresh"), "POST", "alice", id="identity"),
    ],
)
@pytest.mark.anyio
async def test_auth_manager_against_token_server(
    server: TokenServer, creds: Credentials | None, method: str, user: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        manager = AuthManager(client)
        header = await manager.authorize(HOST, PULL, _challenge(server), creds)
    assert header.startswith("Bearer ")
    _, claims = verify_jwt(header.removeprefix("Bearer "), server.cert_pem)
    assert claims["sub"] == user
    assert [(r.method, r.user, r.status) for r in server.records] == [(method, user, 200)]


@pytest.mark.anyio
async def test_auth_manager_wrong_password(server: TokenServer) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        manager = AuthManager(client)
        with pytest.raises(RegistryAuthError) as info:
            await manager.authorize(HOST, PULL, _challenge(server), Credentials("alice", "nope"))
    assert (info.value.status, info.value.code) == (401, "UNAUTHORIZED")
    assert "nope" not in str(info.value)


@pytest.mark.anyio
async def test_auth_manager_post_fallback_against_server_without_oauth() -> None:
    with TokenServer(USERS, oauth=False) as server:
        async with httpx.AsyncClient(timeout=10) as client:
            manager = AuthManager(client)
            creds = Credentials("alice", "alice-pw", identity_token="stale-refresh")
            await manager.authorize(HOST, PULL, _challenge(server), creds)
        assert [(r.method, r.status, r.user) for r in server.records] == [
            ("POST", 404, ""),
            ("GET", 200, "alice"),
        ]


@pytest.mark.anyio
async def test_single_flight_over_loopback(server: TokenServer) -> None:
    results: list[str] = []
    async with httpx.AsyncClient(timeout=10) as client:
        manager = AuthManager(client)

        async def call() -> None:
            creds = Credentials("alice", "alice-pw")
            results.append(await manager.authorize(HOST, PULL, _challenge(server), creds))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(call)
    assert len(set(results)) == 1
    assert len(results) == 20
    assert server.token_requests == 1
