"""The real distribution registry with ``auth.token`` accepts TokenServer JWTs via AuthManager."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest

from kubelet_sim.errors import RegistryAuthError
from kubelet_sim.registry.auth import (
    AuthManager,
    Credentials,
    parse_challenges,
    scope_for,
    send_authorized,
)
from kubelet_sim.sim.registry import RegistryConfig, RegistryProcess
from kubelet_sim.sim.tokenserver import TokenServer

pytestmark = pytest.mark.registry

ALICE = Credentials("alice", "alice-pw")


@pytest.fixture(scope="module")
def token_server() -> Iterator[TokenServer]:
    with TokenServer(
        {"alice": "alice-pw", "bob": "bob-pw"},
        acl={"alice": {"*": ["*"]}, "bob": {"library/*": ["pull"]}, "": {"public/*": ["pull"]}},
    ) as server:
        yield server


@pytest.fixture(scope="module")
def registry(
    token_server: TokenServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryProcess]:
    work = tmp_path_factory.mktemp("token-registry")
    config = RegistryConfig(
        storage_dir=work / "storage", token=token_server.token_auth_config(work)
    )
    with RegistryProcess(config, work) as process:
        yield process


def _sender(
    client: httpx.AsyncClient, url: str
) -> Callable[[str | None], Awaitable[httpx.Response]]:
    async def send(authorization: str | None) -> httpx.Response:
        headers = {"Authorization": authorization} if authorization else {}
        return await client.get(url, headers=headers)

    return send


@pytest.mark.anyio
async def test_registry_challenge_points_at_token_server(
    registry: RegistryProcess, token_server: TokenServer
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(f"{registry.url}/v2/")
        assert answer.status_code == 401
        (challenge,) = parse_challenges(answer.headers.get_list("www-authenticate"))
        assert (challenge.scheme, challenge.realm, challenge.service) == (
            "bearer",
            token_server.realm,
            token_server.service,
        )
        manager = AuthManager(client)
        header = await manager.authorize(
            registry.host, "", [answer.headers["www-authenticate"]], ALICE
        )
        ok = await client.get(f"{registry.url}/v2/", headers={"Authorization": header})
        assert ok.status_code == 200


@pytest.mark.parametrize(
    ("creds", "repository"),
    [
        pytest.param(ALICE, "private/app", id="alice-any-repo"),
        pytest.param(Credentials("bob", "bob-pw"), "library/busybox", id="bob-library"),
        pytest.param(None, "public/app", id="anonymous-public"),
    ],
)
@pytest.mark.anyio
async def test_granted_scope_reaches_the_repository(
    registry: RegistryProcess,
    token_server: TokenServer,
    creds: Credentials | None,
    repository: str,
) -> None:
    scope = scope_for(repository, ["pull"])
    url = f"{registry.url}/v2/{repository}/tags/list"
    async with httpx.AsyncClient(timeout=10) as client:
        manager = AuthManager(client)
        before = token_server.token_requests
        answer = await send_authorized(manager, registry.host, scope, creds, _sender(client, url))
        # authorized: the registry looked the repository up (it does not exist)
        assert answer.status_code == 404
        assert answer.json()["errors"][0]["code"] == "NAME_UNKNOWN"
        again = await send_authorized(manager, registry.host, scope, creds, _sender(client, url))
        assert again.status_code == 404
        assert token_server.token_requests == before + 1  # the second request used the cache


@pytest.mark.parametrize(
    ("creds", "repository"),
    [
        pytest.param(Credentials("bob", "bob-pw"), "private/app", id="bob-outside-acl"),
        pytest.param(None, "private/app", id="anonymous-private"),
    ],
)
@pytest.mark.anyio
async def test_denied_scope_fails_after_one_retry(
    registry: RegistryProcess, creds: Credentials | None, repository: str
) -> None:
    scope = scope_for(repository, ["pull"])
    url = f"{registry.url}/v2/{repository}/tags/list"
    async with httpx.AsyncClient(timeout=10) as client:
        manager = AuthManager(client)
        with pytest.raises(RegistryAuthError) as info:
            await send_authorized(manager, registry.host, scope, creds, _sender(client, url))
    assert info.value.status == 401
    assert info.value.code == "UNAUTHORIZED"
    assert "insufficient_scope" in info.value.message


@pytest.mark.anyio
async def test_wrong_password_is_refused_by_the_token_server(registry: RegistryProcess) -> None:
    url = f"{registry.url}/v2/private/app/tags/list"
    async with httpx.AsyncClient(timeout=10) as client:
        manager = AuthManager(client)
        with pytest.raises(RegistryAuthError, match="rejected the credentials") as info:
            await send_authorized(
                manager,
                registry.host,
                scope_for("private/app", ["pull"]),
                Credentials("alice", "wrong-pw"),
                _sender(client, url),
            )
    assert info.value.status == 401
    assert "wrong-pw" not in str(info.value)
