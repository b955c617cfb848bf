"""Layer downloads: a blob streamed from one host into a sink, resumed with closed ``Range`` requests.

Models containerd's ``httpreadseeker.go`` and the ``urls`` part of ``fetcher.go``. A layer's body is
not bound by the request deadline (a large layer takes as long as it takes) but by the stall
timeout and the no-progress rule: three failed attempts in a row that brought no byte give up
(one on a mirror, which is left for the next host at once). Foreign ``urls`` are tried first,
without credentials; a 404 moves to the next URL, anything else fails the fetch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar
from urllib.parse import urlsplit

import anyio
import httpx
import structlog

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.sinks import BlobSink
from kubelet_sim.errors import DigestMismatchError, RegistryNotFoundError, RegistryTransportError
from kubelet_sim.registry.boundary import redact_url, translate_errors
from kubelet_sim.registry.hosts import RegistryHost
from kubelet_sim.registry.manifests import Descriptor
from kubelet_sim.registry.transport import Transport

log = structlog.get_logger(__name__)

T = TypeVar("T")

ProgressFn = Callable[[Descriptor, int], None]
"""Called with a blob's descriptor and the bytes received so far."""

MAX_NO_PROGRESS_RETRIES = 3

PROGRESS_INTERVAL = 0.05
"""Seconds (event-loop clock) between progress reports while bytes arrive between large writes."""


@dataclass(frozen=True, slots=True)
class Target:
    """One host to try a request on, with what goes there."""

    host: RegistryHost
    creds: Credentials | None = field(repr=False)
    params: dict[str, str]
    last: bool  # the last host: the only one that retries
    authorize: bool = True


HostCall: TypeAlias = Callable[[Target], Awaitable[T]]
"""A request made on one host (the client runs it on each host in turn)."""


class LayerStreamer:
    """Streams layers through a transport into sinks, each chunk as the socket gave it.

    A chunk goes to the sink as it came, without being gathered here first: the store's writer
    batches its writes for its worker thread (``FLUSH_BYTES``), and gathering on the event loop
    cost two copies of every byte there (an eighth of a large pull's main-thread time).
    """

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def fetch_foreign(
        self, desc: Descriptor, sink: BlobSink, progress: ProgressFn | None
    ) -> bool:
        """Fetch ``desc`` from its own ``urls``; True when one served it, False to use the hosts."""
        for url in desc.urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                log.debug("registry.foreign_url_skipped", digest=str(desc.digest))
                continue
            netloc = parts.netloc.rpartition("@")[2]  # never send userinfo as credentials
            clean = f"{parts.scheme}://{netloc}{parts.path}" + (
                f"?{parts.query}" if parts.query else ""
            )
            host = RegistryHost(host=netloc, scheme=parts.scheme, path="", capabilities=frozenset())
            target = Target(host, None, {}, last=False, authorize=False)
            try:
                await self.stream(target, clean, "", desc, sink, progress)
            except RegistryNotFoundError:
                log.info("registry.foreign_url_not_found", url=redact_url(clean))
                await sink.reset()
                continue
            return True
        return False

    async def stream(
        self,
        target: Target,
        path: str,
        scope: str,
        desc: Descriptor,
        sink: BlobSink,
        progress: ProgressFn | None,
    ) -> None:
        """Fetch the blob from one host, resuming where each failed attempt stopped."""
        failures = 0
        give_up = MAX_NO_PROGRESS_RETRIES if target.last else 1
        while sink.written < desc.size:
            offset = sink.written
            try:
                # What arrives before a failure is in the sink: a valid prefix to resume from.
                await self._fetch_from(target, path, scope, desc, sink, progress)
            except RegistryTransportError as exc:
                failures = 0 if sink.written > offset else failures + 1
                if failures >= give_up:
                    where = path if "://" in path else self.transport.base_url(target.host) + path
                    raise RegistryTransportError(
                        f"GET {redact_url(where)}: "
                        f"{failures} failures without progress at byte {sink.written}: {exc}"
                    ) from exc
                log.info(
                    "registry.blob_resume",
                    digest=str(desc.digest),
                    offset=sink.written,
                    size=desc.size,
                    error=type(exc.__cause__ or exc).__name__,
                )
                continue
            if sink.written < desc.size:
                # The body ended early without a transport error (a lying Content-Length).
                failures += 1
            if failures >= MAX_NO_PROGRESS_RETRIES:
                raise DigestMismatchError(
                    f"size {desc.size}", f"size {sink.written}", what=f"blob {desc.digest}"
                )

    async def _fetch_from(
        self,
        target: Target,
        path: str,
        scope: str,
        desc: Descriptor,
        sink: BlobSink,
        progress: ProgressFn | None,
    ) -> None:
        """One GET of the blob from ``sink.written`` on: a closed ``Range`` request when resuming.

        The deadline covers the answer's headers only; the body is bounded by the stall timeout.
        """
        offset = sink.written
        headers = {"Accept-Encoding": "identity", "Accept": f"{desc.media_type}, */*"}
        if offset:
            headers["Range"] = f"bytes={offset}-{desc.size - 1}"
        async with self.transport.open(
            "GET",
            target.host,
            path,
            scope=scope,
            creds=target.creds,
            headers=headers,
            params=target.params,
            ok=frozenset({200, 206}),
            whole=False,
            last_host=target.last,
            authorize=target.authorize,
        ) as response:
            await self._check_blob_response(response, desc, sink, offset)
            await self._copy_body(response, desc, sink, progress)

    async def _copy_body(
        self,
        response: httpx.Response,
        desc: Descriptor,
        sink: BlobSink,
        progress: ProgressFn | None,
    ) -> None:
        """Stream the body into ``sink``, never past the descriptor's size.

        Raises:
            DigestMismatchError: the body holds more bytes than the descriptor's size.
            RegistryTransportError: the body failed while streaming.
        """
        encoded = response.headers.get("content-encoding", "identity") != "identity"
        # aiter_bytes: decoded, or the body httpx already holds (a transport that read it).
        whole = encoded or response.is_stream_consumed
        next_report = anyio.current_time() + PROGRESS_INTERVAL
        with translate_errors(f"GET {redact_url(response.url)}"):
            async for chunk in response.aiter_bytes() if whole else response.aiter_raw():
                if len(chunk) > desc.size - sink.written:
                    raise DigestMismatchError(
                        f"size {desc.size}",
                        "more bytes than the descriptor's size",
                        what=f"blob {desc.digest}",
                    )
                await sink.write(chunk)
                if progress is not None and (now := anyio.current_time()) >= next_report:
                    next_report = now + PROGRESS_INTERVAL
                    progress(desc, sink.written)
        if progress is not None:
            progress(desc, sink.written)

    @staticmethod
    async def _check_blob_response(
        response: httpx.Response, desc: Descriptor, sink: BlobSink, offset: int
    ) -> None:
        """Accept a ranged answer only if it starts at ``offset``; otherwise restart from zero."""
        if offset:
            content_range = response.headers.get("content-range", "")
            if response.status_code == 206 and content_range.startswith(f"bytes {offset}-"):
                return
            log.info("registry.range_not_honoured", status=response.status_code)
            await sink.reset()
            if response.status_code == 206:
                raise RegistryTransportError(
                    f"range answer {content_range!r} does not start at byte {offset}"
                )
        length = response.headers.get("content-length")
        too_long = length is not None and length.isdigit() and int(length) > desc.size
        if response.status_code == 200 and too_long:
            raise DigestMismatchError(
                f"size {desc.size}", f"Content-Length {length}", what=f"blob {desc.digest}"
            )
