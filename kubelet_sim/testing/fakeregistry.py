"""An in-memory OCI registry behind ``httpx.MockTransport``, for unit tests of the pull path.

It records every request, so a test can say what a pull asked for (only a ``HEAD`` for
``Always`` with the image present; a ``Range`` request when a layer resumes), and serves what a
real registry would not on demand: artifacts, lying sizes, a connection that breaks mid-layer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from kubelet_sim.core.digest import Digest
from kubelet_sim.sim.images import Blob, Image

REPO = "team/app"


@dataclass
class FakeRegistry:
    """Manifests by tag and digest, blobs by digest; every request is kept in ``requests``."""

    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    cut_blob_at: dict[str, int] = field(default_factory=dict)  # digest -> bytes sent, then reset
    down: bool = False

    def push(self, tag: str, image: Image) -> None:
        for blob in image.blobs():
            self.blobs[str(blob.digest)] = blob.data
        self.put_manifest(tag, image.manifest)

    def put_manifest(self, tag: str | None, manifest: Blob) -> None:
        entry = (manifest.data, manifest.media_type)
        self.manifests[str(manifest.digest)] = entry
        if tag is not None:
            self.manifests[tag] = entry

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path, request.headers.get("range")))
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        prefix = f"/v2/{REPO}/"
        path = request.url.path
        if path.startswith(prefix + "manifests/"):
            found = self.manifests.get(path.removeprefix(prefix + "manifests/"))
            if found is None:
                return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
            data, media_type = found
            headers = {
                "Content-Type": media_type,
                "Docker-Content-Digest": str(Digest.from_bytes(data)),
                "Content-Length": str(len(data)),
            }
            return httpx.Response(
                200, headers=headers, content=b"" if request.method == "HEAD" else data
            )
        if path.startswith(prefix + "blobs/"):
            digest = path.removeprefix(prefix + "blobs/")
            blob = self.blobs.get(digest)
            if blob is None:
                return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
            rng = request.headers.get("range")
            if digest in self.cut_blob_at:
                sent = self.cut_blob_at.pop(digest)
                self.down = True  # the registry goes away mid-layer
                return httpx.Response(200, stream=_Broken(blob[:sent]))
            if rng is None:
                return httpx.Response(200, content=blob)
            start, end = (int(x) for x in rng.removeprefix("bytes=").split("-"))
            headers = {"Content-Range": f"bytes {start}-{end}/{len(blob)}"}
            return httpx.Response(206, headers=headers, content=blob[start : end + 1])
        return httpx.Response(404)

    def gets(self) -> list[str]:
        return [path for method, path, _ in self.requests if method == "GET"]


class _Broken(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), 1 << 20):
            yield self.data[start : start + (1 << 20)]
        raise httpx.ReadError("connection reset by peer")
