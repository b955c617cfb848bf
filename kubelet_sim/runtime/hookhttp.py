"""The httpGet half of the hook runner: the lifecycle HTTP client, one GET and Go's error texts.

Models the request building of ``pkg/probe/http/request.go``, the port lookup of
``pkg/probe/util.go`` and the client of ``pkg/kubelet/lifecycle/handlers.go``
(:class:`~kubelet_sim.runtime.hooks.HookRunner` runs the hook, retries an HTTPS request over HTTP
and words the failure):

- **The request**: ``scheme://host:port/path`` (a named port is looked up in the container's
  ports, then read as a number), the action's headers with ``User-Agent: kube-lifecycle/<v>`` and
  ``Accept: */*`` by default, no timeout of its own.
- **The answer**: any response is a success (upstream checks only that one came,
  kubernetes/kubernetes#56963). The body is read up to 10 KiB and discarded. Redirects are
  followed to the same host name only, at most 9. HTTPS skips certificate verification; a plain
  HTTP answer to HTTPS is reported as such (``http_response_to_https``), for the runner's retry.

A request that got no answer fails with Go's ``*url.Error`` text; header values never appear in
it.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import os
import re
import socket
import ssl
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Final, cast
from urllib.parse import urljoin, urlsplit

import anyio
import h11
import httpx

from kubelet_sim.core.reference import go_quote
from kubelet_sim.k8s.objects import Container
from kubelet_sim.k8s.podspec import HTTPHeader
from kubelet_sim.registry.boundary import exception_chain

__all__ = [
    "MAX_RESPONSE_BODY",
    "USER_AGENT",
    "HTTPFailure",
    "RequestHeaders",
    "do_get",
    "format_url",
    "join_host_port",
    "lifecycle_http_client",
    "resolve_container_port",
]

MAX_RESPONSE_BODY: Final = 10 << 10
"""``maxRespBodyLength``: how much of a hook's response body is read (and discarded)."""
USER_AGENT: Final = "kube-lifecycle/1.35"
"""``kube-<purpose>/<major>.<minor>`` of the kubelet line kubelet-sim models (v1.35)."""

_MAX_REDIRECTS: Final = 10  # RedirectChecker: "stopped after 10 redirects"
_REDIRECT_CODES: Final = frozenset({301, 302, 303, 307, 308})
# OpenSSL's reasons for a first record that is not TLS: what a plain HTTP answer produces. Go
# recognises the answer itself ("server gave HTTP response to HTTPS client"); a server that
# speaks neither fails the HTTP retry too, so the outcome is upstream's either way.
_NOT_TLS_REASONS: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"}
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # httpguts.ValidHeaderFieldName
_HOST_HEADER = re.compile(r"[!$%&'()*+,\-.0-9:;=A-Z\[\]_a-z~]*")  # httpguts.ValidHostHeader
_GO_INT = re.compile(r"[+-]?[0-9]+")  # strconv.Atoi's syntax
_INT64_MAX: Final = (1 << 63) - 1


def lifecycle_http_client(
    *, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The client hooks need (``insecureContainerLifecycleHTTPClient``).

    No certificate verification (the kubelet has nothing to verify a pod's certificate with), no
    proxy or ``.netrc`` from the environment, no cookie jar and no automatic redirects; the
    runner's requests carry no timeout of their own. The runner follows redirects itself, as
    ``RedirectChecker(false)`` does. Like upstream's, the client must never be given credentials.
    """
    return httpx.AsyncClient(
        verify=False,  # noqa: S501 - upstream's InsecureSkipVerify: pods' certificates are unknown
        trust_env=False,
        follow_redirects=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        transport=transport,
    )


@dataclass(frozen=True, slots=True)
class HTTPFailure:
    """An error's text, as Go's ``%v`` would print it."""

    text: str
    http_response_to_https: bool = False


def resolve_container_port(port: int | str, container: Container) -> int | str:
    """``probe.ResolveContainerPort``: the port number, or upstream's error text.

    A name is looked up in the container's ports first, then read as a number (``strconv.Atoi``);
    the number must be 1-65535.
    """
    if isinstance(port, int):
        number = port
    else:
        found = next((p.container_port for p in container.ports if p.name == port), None)
        if found is not None:
            number = found
        elif not _GO_INT.fullmatch(port):
            return f"strconv.Atoi: parsing {go_quote(port)}: invalid syntax"
        elif abs(int(port)) > _INT64_MAX:
            return f"strconv.Atoi: parsing {go_quote(port)}: value out of range"
        else:
            number = int(port)
    if 0 < number < 65536:
        return number
    return f"invalid port number: {number}"


async def do_get(http: httpx.AsyncClient, url: str, headers: RequestHeaders) -> HTTPFailure | None:
    """``client.Do``: one GET with the lifecycle client's redirect policy; None on any answer."""
    try:
        original_host = urlsplit(url).hostname
    except ValueError as exc:  # a host such as "[zz]": Go's url.Parse fails the request
        return HTTPFailure(f"parse {go_quote(url)}: {exc}")
    for redirects in range(_MAX_REDIRECTS + 1):
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            return HTTPFailure(
                f"Get {go_quote(url)}: unsupported protocol scheme {go_quote(scheme)}"
            )
        invalid = headers.invalid()
        if invalid is not None:
            return HTTPFailure(f"Get {go_quote(url)}: {invalid}")
        try:
            request = http.build_request("GET", url.partition("#")[0], timeout=None)
        except (httpx.InvalidURL, ValueError):
            return HTTPFailure(f"parse {go_quote(url)}: invalid URL")
        request.headers = headers.wire(request.url.netloc.decode("ascii"))
        try:
            response = await http.send(request, stream=True, follow_redirects=False)
        except httpx.HTTPError as err:
            return _transport_failure(url, err)
        location = response.headers.get("location")
        await _discard_body(response)
        if response.status_code not in _REDIRECT_CODES or location is None:
            return None
        try:
            target = urljoin(url, location)
            same_host = urlsplit(target).hostname == original_host
        except ValueError:
            return HTTPFailure(
                f"Get {go_quote(url)}: failed to parse Location header {go_quote(location)}"
            )
        if not same_host:
            return None  # http.ErrUseLastResponse: the redirect response is the answer
        if redirects + 1 >= _MAX_REDIRECTS:
            return HTTPFailure(f"Get {go_quote(location)}: stopped after 10 redirects")
        headers = headers.for_redirect(relative=not urlsplit(location).scheme)
        url = target
    return None  # not reached: the loop returns at the last redirect


async def _discard_body(response: httpx.Response) -> None:
    """``discardHTTPRespBody``: read at most 10 KiB (nothing when longer), then close."""
    try:
        length = int(response.headers.get("content-length", "-1"))
    except ValueError:
        length = -1
    try:
        if length <= MAX_RESPONSE_BODY:
            read = 0
            chunks = cast(AsyncGenerator[bytes, None], response.aiter_raw())
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    read += len(chunk)
                    if read >= MAX_RESPONSE_BODY:
                        break
    except httpx.HTTPError:
        pass  # upstream ignores the copy's error: the answer has come
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()


def _transport_failure(url: str, err: httpx.HTTPError) -> HTTPFailure:
    """Go's ``*url.Error`` text for a request that got no answer (never a header value)."""
    prefix = f"Get {go_quote(url)}: "
    parts = urlsplit(url)
    host_port = parts.netloc
    causes = list(exception_chain(err))
    if isinstance(err, httpx.TimeoutException):
        return HTTPFailure(prefix + "context deadline exceeded")
    for cause in causes:
        if isinstance(cause, ssl.SSLError):
            if cause.reason in _NOT_TLS_REASONS and parts.scheme == "https":
                return HTTPFailure(prefix + "http: server gave HTTP response to HTTPS client", True)
            reason = (cause.reason or "handshake failure").lower().replace("_", " ")
            return HTTPFailure(prefix + f"tls: {reason}")
    for cause in causes:
        if isinstance(cause, socket.gaierror):
            return HTTPFailure(prefix + f"dial tcp: lookup {parts.hostname}: no such host")
    for cause in causes:
        if isinstance(cause, OSError) and cause.errno is not None:
            strerror = os.strerror(cause.errno).lower()
            if isinstance(err, httpx.ConnectError):
                return HTTPFailure(prefix + f"dial tcp {host_port}: connect: {strerror}")
            if cause.errno in (errno_codes.ECONNRESET, errno_codes.EPIPE):
                return HTTPFailure(prefix + f"read tcp {host_port}: {strerror}")
    if isinstance(err, httpx.RemoteProtocolError):
        if any(isinstance(cause, h11.RemoteProtocolError) for cause in causes):
            return HTTPFailure(
                prefix + "net/http: HTTP/1.x transport connection broken: malformed HTTP response"
            )
        return HTTPFailure(prefix + "EOF")  # closed without an answer
    if isinstance(err, httpx.ConnectError):
        return HTTPFailure(prefix + f"dial tcp {host_port}: connect: connection failed")
    return HTTPFailure(prefix + "EOF")


def join_host_port(host: str, port: int) -> str:
    """``net.JoinHostPort``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_url(scheme: str, host: str, port: int, path: str) -> str:
    """``formatURL``: the path parsed as a URL reference, its scheme and host replaced."""
    parts = urlsplit(path)
    url_path = parts.path
    if url_path and not url_path.startswith("/"):
        url_path = "/" + url_path  # url.URL.String() with a host
    text = f"{scheme}://{join_host_port(host, port)}{url_path}"
    if parts.query:
        text += f"?{parts.query}"
    if parts.fragment:
        text += f"#{parts.fragment}"
    return text


def _canonical_header_key(name: str) -> str:
    """``textproto.CanonicalMIMEHeaderKey`` (a name with invalid bytes is left as it is)."""
    if not _TOKEN.fullmatch(name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


class RequestHeaders:
    """The request's ``http.Header`` (canonical keys, values in order) and its ``req.Host``."""

    __slots__ = ("host", "values")

    def __init__(self, values: dict[str, list[str]], host: str) -> None:
        self.values = values
        self.host = host

    @classmethod
    def from_action(cls, headers: tuple[HTTPHeader, ...]) -> RequestHeaders:
        """``v1HeaderToHTTPHeader`` and ``newProbeRequest``'s defaults."""
        values: dict[str, list[str]] = {}
        for header in headers:
            values.setdefault(_canonical_header_key(header.name), []).append(header.value)
        if "User-Agent" not in values:
            values["User-Agent"] = [USER_AGENT]
        if "Accept" not in values:
            values["Accept"] = ["*/*"]
        elif values["Accept"][0] == "":
            del values["Accept"]
        return cls(values, values.get("Host", [""])[0])

    def without(self, name: str) -> RequestHeaders:
        return RequestHeaders({k: v for k, v in self.values.items() if k != name}, self.host)

    def for_redirect(self, *, relative: bool) -> RequestHeaders:
        """A custom Host survives a redirect only to a relative location (``Client.do``)."""
        return self if relative else RequestHeaders(self.values, "")

    def invalid(self) -> str | None:
        """The transport's header checks; the message names a header, never shows its value."""
        for name, values in self.values.items():
            if not _TOKEN.fullmatch(name):
                return f"net/http: invalid header field name {go_quote(name)}"
            if any(not _valid_header_value(v) for v in values):
                return f"net/http: invalid header field value for {go_quote(name)}"
        if not _HOST_HEADER.fullmatch(self.host):
            return "http: invalid Host header"
        return None

    def wire(self, url_host: str) -> httpx.Headers:
        """What goes on the wire: Host (``req.Host`` or the URL's), the first User-Agent (none
        when empty), every other header, and ``Accept-Encoding: gzip`` as Go's transport adds."""
        items: list[tuple[bytes, bytes]] = [(b"Host", (self.host or url_host).encode())]
        user_agent = self.values.get("User-Agent", [""])[0]
        if user_agent:
            items.append((b"User-Agent", user_agent.encode()))
        for name, values in self.values.items():
            if name in ("Host", "User-Agent"):
                continue
            items.extend((name.encode(), value.encode()) for value in values)
        if "Accept-Encoding" not in self.values:
            items.append((b"Accept-Encoding", b"gzip"))
        return httpx.Headers(items)


def _valid_header_value(value: str) -> bool:
    """``httpguts.ValidHeaderFieldValue``: no control bytes other than tab."""
    return not any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value)
