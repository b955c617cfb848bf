"""A loopback token server that issues JWTs docker/distribution's ``auth.token`` accepts.

Speaks the docker token protocol (``GET /token?service=..&scope=..`` with optional Basic auth,
distribution ``docs/spec/auth/token.md``) and the OAuth2 form (``POST /token`` with
``grant_type=password|refresh_token``, ``oauth.md``). Tokens are ES256 JWTs whose header carries
``x5c`` (the signing certificate, which :meth:`TokenServer.cert_bundle_path` writes as the
registry's ``rootcertbundle``) and ``kid`` (the libtrust fingerprint of the key), with the claims
``registry/auth/token/token.go`` verifies: iss, sub, aud, exp, nbf, iat, jti, access.

Runs ``http.server.ThreadingHTTPServer`` in a daemon thread so sync pytest fixtures can use it.
``cryptography`` is a test extra, imported only when a server is built.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import hashlib
import json
import secrets
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

    from kubelet_sim.sim.registry import TokenAuthConfig

Acl = Mapping[str, Mapping[str, Collection[str]]]
"""user ("" = anonymous) -> repository glob -> allowed actions ("*" = all)."""


@dataclass(frozen=True, slots=True)
class TokenRequestRecord:
    """What one request to the token endpoint asked for and got (no secrets)."""

    method: str
    user: str
    scopes: tuple[str, ...]
    status: int
    access: tuple[tuple[str, str, tuple[str, ...]], ...] = ()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(spki_der: bytes) -> str:
    """docker/libtrust ``keyIDFromCryptoKey``: base32 of sha256(SPKI)[:30] in 12 groups of 4."""
    encoded = base64.b32encode(hashlib.sha256(spki_der).digest()[:30]).decode("ascii")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def parse_scope(scope: str) -> tuple[str, str, tuple[str, ...]] | None:
    """``type:name:a,b`` (the name may hold ``host:port``) -> (type, name, actions)."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not (sep and sep2 and kind and name):
        return None
    return kind, name, tuple(a for a in actions.split(",") if a)


class TokenServer:
    """An in-memory token service: users, optional per-user ACLs, refresh tokens, a counter.

    Args:
        users: username -> password for Basic (GET) and ``grant_type=password`` (POST).
        issuer: the ``iss`` claim; the registry's ``auth.token.issuer``.
        service: the ``aud`` claim; the registry's ``auth.token.service``.
        acl: optional per-user grants; without it authenticated users get what they ask
            for and anonymous callers get nothing.
        refresh_tokens: identity token -> username, for ``grant_type=refresh_token``.
        oauth: answer POST; False makes POST 404, like token servers without OAuth.
        expires_in: token lifetime in seconds.
    """

    def __init__(
        self,
        users: Mapping[str, str],
        issuer: str = "kubelet-sim-test",
        service: str = "kubelet-sim-registry",
        *,
        acl: Acl | None = None,
        refresh_tokens: Mapping[str, str] | None = None,
        oauth: bool = True,
        expires_in: int = 300,
    ) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.users = dict(users)
        self.issuer = issuer
        self.service = service
        self.acl = acl
        self.refresh_tokens = dict(refresh_tokens or {})
        self.oauth = oauth
        self.expires_in = expires_in
        self._key: EllipticCurvePrivateKey = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])
        public = self._key.public_key()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_der = self._cert.public_bytes(serialization.Encoding.DER)
        self.cert_pem = self._cert.public_bytes(serialization.Encoding.PEM)
        spki = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = libtrust_key_id(spki)
        self._lock = threading.Lock()
        self._records: list[TokenRequestRecord] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> TokenServer:
        """Listen on a free loopback port in a background thread."""
        if self._httpd is not None:
            return self
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits up to one poll
            name="kubelet-sim-tokenserver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("token server is not running")
        return int(self._httpd.server_address[1])

    @property
    def realm(self) -> str:
        """The token endpoint URL; the registry's ``auth.token.realm``."""
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def token_requests(self) -> int:
        """Requests that reached ``/token`` (any method, any outcome)."""
        with self._lock:
            return len(self._records)

    @property
    def records(self) -> list[TokenRequestRecord]:
        with self._lock:
            return list(self._records)

    def cert_bundle_path(self, directory: Path | str) -> Path:
        """Write the signing certificate (PEM) as the registry's ``rootcertbundle``; return it."""
        path = Path(directory) / "tokenserver-rootcertbundle.pem"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.cert_pem)
        return path

    def token_auth_config(self, directory: Path | str) -> TokenAuthConfig:
        """The registry's ``auth.token`` settings for this server (writes the bundle)."""
        from kubelet_sim.sim.registry import TokenAuthConfig

        return TokenAuthConfig(
            realm=self.realm,
            service=self.service,
            issuer=self.issuer,
            rootcertbundle=self.cert_bundle_path(directory),
        )

    # ------------------------------------------------------------------ tokens

    def grant(self, user: str, scopes: Collection[str]) -> list[dict[str, Any]]:
        """The ``access`` claim for ``user`` ("" = anonymous) asking for ``scopes``."""
        rules = self.acl.get(user, {}) if self.acl is not None else None
        access: list[dict[str, Any]] = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            kind, name, wanted = parsed
            if rules is None:
                allowed = set(wanted) if user else set()
            else:
                allowed = set()
                for pattern, actions in rules.items():
                    if fnmatch.fnmatchcase(name, pattern):
                        allowed |= set(wanted) if "*" in actions else set(actions)
            granted = [a for a in wanted if a in allowed]
            if granted:
                access.append({"type": kind, "name": name, "actions": granted})
        return access

    def issue(self, user: str, access: list[dict[str, Any]], *, now: int | None = None) -> str:
        """Sign a JWT for ``user`` with the given ``access`` claim."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        issued = int(dt.datetime.now(dt.UTC).timestamp()) if now is None else now
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "kid": self.key_id,
            "x5c": [base64.b64encode(self.cert_der).decode("ascii")],
        }
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": self.service,
            "exp": issued + self.expires_in,
            "nbf": issued,
            "iat": issued,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)  # JWS ES256 wants raw r || s, 32 bytes each
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _record(self, record: TokenRequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def answer(
        self, method: str, authorization: str, query: str, form: str
    ) -> tuple[int, dict[str, Any]]:
        """Decide one token request (pure apart from the record); returns status and JSON body."""
        params = parse_qs(query if method == "GET" else form, keep_blank_values=True)

        def one(key: str) -> str:
            return params.get(key, [""])[0]

        if method == "GET":
            scopes = tuple(s for value in params.get("scope", []) for s in value.split())
        else:
            scopes = tuple(one("scope").split())
        status, body, user = self._decide(method, authorization, one, scopes)
        access = body.pop("_access", [])
        self._record(
            TokenRequestRecord(
                method,
                user,
                scopes,
                status,
                tuple((a["type"], a["name"], tuple(a["actions"])) for a in access),
            )
        )
        return status, body

    def _decide(
        self, method: str, authorization: str, one: Callable[[str], str], scopes: tuple[str, ...]
    ) -> tuple[int, dict[str, Any], str]:
        if method == "POST" and not self.oauth:
            return 404, _oci_error("UNSUPPORTED", "oauth is not supported here"), ""
        if one("service") and one("service") != self.service:
            return 400, {"error": "invalid_request", "error_description": "unknown service"}, ""
        user = ""
        if method == "GET":
            if authorization:
                user_or_none = self._basic_user(authorization)
                if user_or_none is None:
                    return 401, _oci_error("UNAUTHORIZED", "invalid credentials"), ""
                user = user_or_none
        else:
            if not one("client_id"):
                return 400, {"error": "invalid_request", "error_description": "no client_id"}, ""
            grant_type = one("grant_type")
            if grant_type == "refresh_token":
                found = self.refresh_tokens.get(one("refresh_token"))
            elif grant_type == "password":
                name = one("username")
                found = name if name and self.users.get(name) == one("password") else None
            else:
                return 400, {"error": "unsupported_grant_type"}, ""
            if found is None:
                return 401, {"error": "invalid_grant"}, ""
            user = found
        access = self.grant(user, scopes)
        token = self.issue(user, access)
        issued_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body: dict[str, Any] = {
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": issued_at,
            "_access": access,
        }
        if method == "GET":
            body["token"] = token
        else:
            body["scope"] = " ".join(scopes)
        return 200, body, user

    def _basic_user(self, authorization: str) -> str | None:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:
            return None
        return user if user and self.users.get(user) == password else None


def _oci_error(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}


def _handler_class(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read :attr:`TokenServer.records` instead."""

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            form = self.rfile.read(min(length, 1 << 20)).decode(errors="replace")
            if url.path != "/token":
                self._reply(404, _oci_error("NOT_FOUND", "no such endpoint"))
                return
            authorization = self.headers.get("Authorization", "")
            status, body = server.answer(method, authorization, url.query, form)
            self._reply(status, body)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

    return Handler
