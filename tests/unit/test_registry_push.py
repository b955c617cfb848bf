"""Pushing a manifest list's blobs: a refused cross-repository mount uploads the real blob."""

from __future__ import annotations

import httpx
import pytest
import respx

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.errors import DigestMismatchError
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.manifests import Descriptor
from kubelet_sim.registry.push import Pusher
from kubelet_sim.registry.transport import Transport, TransportSettings

pytestmark = pytest.mark.anyio

BASE = "https://registry.test/v2"
BLOB = b"layer bytes " * 100_000
DIGEST = Digest.from_bytes(BLOB)
DESC = Descriptor("application/vnd.oci.image.layer.v1.tar", DIGEST, len(BLOB))
FAST = TransportSettings(backoff_initial=0.001, backoff_max=0.01, max_attempts=2)


def client(router: respx.Router) -> RegistryClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
    return RegistryClient(Transport(settings=FAST, http=http))


def registry(source_blob: bytes, *, mount: bool) -> tuple[respx.Router, bytearray]:
    router = respx.Router(base_url=BASE, assert_all_called=False)
    received = bytearray()
    router.head(f"/lists/all/blobs/{DIGEST}").respond(404)
    router.post("/lists/all/blobs/uploads/").respond(
        201 if mount else 202, headers={} if mount else {"Location": "/v2/lists/all/uploads/u1"}
    )
    router.get(f"/team/app/blobs/{DIGEST}").respond(200, content=source_blob)

    def patch(request: httpx.Request) -> httpx.Response:
        received.extend(request.content)
        return httpx.Response(202, headers={"Location": "/v2/lists/all/uploads/u1"})

    router.patch("/lists/all/uploads/u1").mock(side_effect=patch)
    router.put(f"/lists/all/uploads/u1?digest={DIGEST}").respond(201)
    return router, received


async def test_a_refused_mount_uploads_the_blob_from_its_source() -> None:
    router, received = registry(BLOB, mount=False)
    async with client(router) as c:
        pusher = Pusher(c, parse_normalized("registry.test/lists/all:1"))
        await pusher.copy_blob(parse_normalized("registry.test/team/app:1"), DESC)
    # The empty-body PUT that got DIGEST_INVALID is gone: the bytes are the blob's.
    assert bytes(received) == BLOB
    assert (pusher.uploaded, pusher.mounted) == (1, 0)


async def test_an_accepted_mount_copies_nothing() -> None:
    router, received = registry(BLOB, mount=True)
    async with client(router) as c:
        pusher = Pusher(c, parse_normalized("registry.test/lists/all:1"))
        await pusher.copy_blob(parse_normalized("registry.test/team/app:1"), DESC)
    assert received == b""
    assert (pusher.uploaded, pusher.mounted) == (0, 1)


async def test_a_source_blob_that_does_not_match_is_never_uploaded() -> None:
    router, received = registry(b"x" * len(BLOB), mount=False)
    async with client(router) as c:
        pusher = Pusher(c, parse_normalized("registry.test/lists/all:1"))
        with pytest.raises(DigestMismatchError):
            await pusher.copy_blob(parse_normalized("registry.test/team/app:1"), DESC)
    assert received == b""
