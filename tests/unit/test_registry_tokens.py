"""registry.auth split into challenge.py, tokens.py and boundary.py: names re-exported, loopback
realms, nesting."""

from __future__ import annotations

import httpx
import pytest

from kubelet_sim.errors import RegistryAuthError
from kubelet_sim.registry import auth, boundary, challenge, tokens
from kubelet_sim.registry.hosts import is_localhost


@pytest.mark.parametrize(
    ("module", "name"),
    [
        *(
            pytest.param(challenge, n, id=f"challenge.{n}")
            for n in ("Challenge", "parse_challenges", "pick_challenge", "scope_for")
        ),
        *(
            pytest.param(tokens, n, id=f"tokens.{n}")
            for n in (
                "MAX_AUTH_BODY",
                "MIN_TOKEN_LIFETIME",
                "Token",
                "TokenRequest",
                "check_realm",
                "error_code",
                "parse_token_response",
                "plan_token_request",
                "should_fall_back_to_get",
            )
        ),
        # the one capped body read lives in the HTTP boundary; auth still re-exports it
        pytest.param(boundary, "read_capped", id="boundary.read_capped"),
    ],
)
def test_moved_names_are_still_importable_from_auth(module: object, name: str) -> None:
    assert name in auth.__all__
    assert getattr(auth, name) is getattr(module, name)


@pytest.mark.parametrize(
    "realm",
    [
        pytest.param("http://localhost:5001/token", id="localhost"),
        pytest.param("http://127.0.0.2:5001/token", id="loopback-net"),
        pytest.param("http://[::1]:5001/token", id="ipv6-loopback"),
    ],
)
def test_plain_http_realm_on_loopback_is_accepted(realm: str) -> None:
    # check_realm asks hosts.is_localhost about the host httpx parsed out of the realm.
    assert is_localhost(httpx.URL(realm).host)
    assert tokens.check_realm(realm, "127.0.0.1:5000") == realm


DEEP = b"[" * 30_000 + b"]" * 30_000  # under MAX_AUTH_BODY, deeper than the recursion limit


def test_deeply_nested_token_answer_is_an_auth_error() -> None:
    with pytest.raises(RegistryAuthError, match="not a JSON object"):
        tokens.parse_token_response(DEEP, realm="https://auth.example/token")
    assert len(DEEP) < tokens.MAX_AUTH_BODY


def test_deeply_nested_error_body_has_no_code() -> None:
    assert tokens.error_code(b'{"errors": ' + DEEP + b"}") is None
