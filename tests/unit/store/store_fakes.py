"""Helpers for the store tests: tiny deterministic images and fetch functions.

An image here is real enough for the store: the config lists its layers' digests (the image ID
is the config digest) and the manifest lists config and layers with their sizes, so a test can
check that what the store calls present is whole by reading the blobs back.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.sinks import BlobSink
from kubelet_sim.store import BlobRef, ImageRecord, Store


def blob_bytes(seed: int | str, size: int) -> bytes:
    """``size`` seeded random bytes."""
    return random.Random(str(seed)).randbytes(size)


@dataclass(frozen=True, slots=True)
class FakeImage:
    """A manifest, a config and layers, as bytes."""

    layers: tuple[bytes, ...] = field(repr=False)
    config: bytes = field(repr=False)
    manifest: bytes = field(repr=False)

    @property
    def image_id(self) -> str:
        return str(Digest.from_bytes(self.config))

    @property
    def config_digest(self) -> Digest:
        return Digest.from_bytes(self.config)

    @property
    def manifest_digest(self) -> Digest:
        return Digest.from_bytes(self.manifest)

    @property
    def layer_refs(self) -> tuple[BlobRef, ...]:
        return tuple(BlobRef(Digest.from_bytes(b), len(b)) for b in self.layers)

    @property
    def blobs(self) -> dict[Digest, bytes]:
        out = {Digest.from_bytes(b): b for b in self.layers}
        out[self.config_digest] = self.config
        out[self.manifest_digest] = self.manifest
        return out

    @property
    def size(self) -> int:
        """Sum of the distinct blobs' sizes."""
        return sum(len(b) for b in self.blobs.values())


def make_image(name: str, layers: Sequence[bytes]) -> FakeImage:
    """An image called ``name`` (it goes into the config, so the ID differs per name)."""
    digests = [str(Digest.from_bytes(b)) for b in layers]
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "name": name,
         "rootfs": {"type": "layers", "diff_ids": digests}},
        sort_keys=True,
    ).encode()  # fmt: skip
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": str(Digest.from_bytes(config)), "size": len(config)},
            "layers": [{"digest": d, "size": len(b)} for d, b in zip(digests, layers, strict=True)],
        },
        sort_keys=True,
    ).encode()
    return FakeImage(tuple(layers), config, manifest)


def fetch_bytes(
    data: bytes,
    *,
    chunk: int = 64 << 10,
    calls: list[Digest] | None = None,
    digest: Digest | None = None,
) -> Callable[[BlobSink], Awaitable[None]]:
    """A fetch function that streams ``data`` in chunks and commits it (to ``digest`` if given)."""
    digest = digest or Digest.from_bytes(data)

    async def fetch(sink: BlobSink) -> None:
        if calls is not None:
            calls.append(digest)
        for start in range(0, len(data), chunk):
            await sink.write(data[start : start + chunk])
        await sink.commit(digest, len(data))

    return fetch


async def pull(
    store: Store,
    image: FakeImage,
    *,
    tag: str | None = "example.com/app:1",
    repo_digest: str | None = None,
    handler: str = "",
    calls: list[Digest] | None = None,
) -> ImageRecord:
    """What a pull does to the store: ensure every blob, then commit the image."""
    async with store.lease():
        for digest, data in image.blobs.items():
            await store.ensure_blob(digest, len(data), fetch_bytes(data, calls=calls))
        return await store.commit_image(
            image.manifest_digest,
            image.config_digest,
            image.layer_refs,
            repo_tag=tag,
            repo_digest=repo_digest,
            platform="linux/amd64",
            runtime_handler=handler,
        )


async def assert_whole(store: Store, record: ImageRecord) -> None:
    """The record's blobs are all there, verify, and agree with its manifest and config."""
    manifest = json.loads(await store.read_blob(record.manifest_digest))
    config = json.loads(await store.read_blob(record.config_digest))
    assert manifest["config"]["digest"] == str(record.config_digest) == record.image_id
    assert [(lr["digest"], lr["size"]) for lr in manifest["layers"]] == [
        (str(lr.digest), lr.size) for lr in record.layers
    ]
    assert config["rootfs"]["diff_ids"] == [str(lr.digest) for lr in record.layers]
    for layer in record.layers:
        with await store.open_blob(layer.digest) as f:
            data = f.read()
        assert Digest.from_bytes(data) == layer.digest
        assert len(data) == layer.size


class Clock:
    """A settable wall clock."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def waiters(store: Store, digest: Digest, count: int) -> None:
    """Wait until ``count`` tasks wait on the download of ``digest``."""
    with anyio.fail_after(10):
        while store.inflight().get(str(digest), 0) < count:  # noqa: ASYNC110 - no event to await
            await anyio.sleep(0.001)


async def downloading(store: Store, digest: Digest) -> None:
    """Wait until some task downloads ``digest`` (it leads the single-flight)."""
    with anyio.fail_after(10):
        while str(digest) not in store.inflight():  # noqa: ASYNC110 - no event to await
            await anyio.sleep(0.001)
