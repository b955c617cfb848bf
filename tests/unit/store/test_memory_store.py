"""The light node store (MemoryStore) against the durable Store, behind the NodeStore seam.

What both must agree on runs against both (``store``/``open_store`` are parametrised): image
records, naming and handler keying, single-flight downloads, verification, small blobs, in-use
counts and KEP-2535 pull records. Then what only the memory store promises: a large layer is
hashed as it arrives and never held, nothing touches the disk or a worker thread, an idle store is
small; and a real ImageService pull through it against an in-memory registry.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
import trio.testing
from store_fakes import Clock, FakeImage, blob_bytes, fetch_bytes, make_image

from kubelet_sim.config.kubelet import KubeletConfiguration
from kubelet_sim.core.digest import Digest
from kubelet_sim.core.platforms import parse_platform
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.core.sinks import BlobSink
from kubelet_sim.credentials.verify import ImageAccessVerifier
from kubelet_sim.errors import DigestMismatchError, StoreError
from kubelet_sim.node.builder import NodeOptions, NodeParts, open_node, quiet_image_service
from kubelet_sim.node.paths import NodePaths
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.transport import Transport, TransportSettings
from kubelet_sim.runtime.images import ImageService
from kubelet_sim.sim.images import build_image
from kubelet_sim.store import (
    CredentialIdentity,
    CredentialKind,
    ImageRecord,
    MemoryStore,
    NodeStore,
    Store,
    hash_credentials,
)
from kubelet_sim.testing.fakeregistry import REPO, FakeRegistry

pytestmark = pytest.mark.anyio

AnyStore = Store | MemoryStore
OpenStore = Callable[..., AbstractAsyncContextManager[AnyStore]]
APP = "example.com/app"


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    """Virtual time: nothing here may depend on the wall clock."""
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["durable", "memory"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> OpenStore:
    """Opens the durable store under ``tmp_path`` or a memory store, with the test's clock."""
    kind = str(request.param)

    @asynccontextmanager
    async def open_(*, runtime_class: bool = False) -> AsyncIterator[AnyStore]:
        if kind == "durable":
            root = tmp_path / f"root-{runtime_class}"
            opened = await Store.open(
                root, runtime_class_in_image_cri_api=runtime_class, clock=clock
            )
            async with opened as durable:
                yield durable
        else:
            async with MemoryStore(
                runtime_class_in_image_cri_api=runtime_class, clock=clock
            ) as mem:
                yield mem

    return open_


@pytest.fixture
async def store(open_store: OpenStore) -> AsyncIterator[AnyStore]:
    async with open_store() as s:
        yield s


def seam(store: AnyStore) -> NodeStore:
    """Both stores are NodeStores (mypy checks this assignment)."""
    return store


async def pull(
    store: NodeStore,
    image: FakeImage,
    *,
    tag: str | None = f"{APP}:1",
    repo_digest: str | None = None,
    handler: str = "",
    calls: list[Digest] | None = None,
) -> ImageRecord:
    """What ImageService does to a store: manifest and config put, layers ensured, then commit."""
    async with store.lease():
        await store.put_blob(image.manifest, image.manifest_digest)
        await store.put_blob(image.config, image.config_digest)
        for ref, data in zip(image.layer_refs, image.layers, strict=True):
            await store.ensure_blob(ref.digest, ref.size, fetch_bytes(data, calls=calls))
        return await store.commit_image(
            image.manifest_digest,
            image.config_digest,
            image.layer_refs,
            repo_tag=tag,
            repo_digest=repo_digest,
            platform="linux/amd64",
            runtime_handler=handler,
        )


def two_layers(name: str) -> FakeImage:
    return make_image(name, [blob_bytes(f"{name}/0", 3000), blob_bytes(f"{name}/1", 5000)])


# -- images: naming, sharing, moving, handlers ---------------------------------------------------


async def test_a_committed_image_is_found_by_tag_repo_digest_and_image_id(
    store: AnyStore, clock: Clock
) -> None:
    image = two_layers("a")
    repo_digest = f"{APP}@{image.manifest_digest}"
    record = await pull(seam(store), image, repo_digest=repo_digest)
    assert record.image_id == image.image_id == str(image.config_digest)
    assert record.repo_tags == (f"{APP}:1",)
    assert record.repo_digests == (repo_digest,)
    assert record.manifest_digest == image.manifest_digest
    assert record.layers == image.layer_refs
    assert record.size == image.size
    assert (record.first_used, record.last_used, record.pinned, record.present) == (
        clock.now,
        clock.now,
        False,
        True,
    )
    for ref in (
        f"{APP}:1",
        repo_digest,
        f"{APP}:other@{image.manifest_digest}",  # name:tag@digest: the digest wins
        image.image_id,
        image.config_digest.hex,  # a bare 64-hex image ID
    ):
        assert await store.lookup(ref) == record, ref
    for ref in (f"{APP}:2", APP, "other.example/app:1", image.image_id[:19]):
        assert await store.lookup(ref) is None, ref  # no tag, no :latest, no ID-prefix matching
    assert await store.blob_size(image.layer_refs[0].digest) == 3000
    assert await store.read_blob(image.config_digest) == image.config


async def test_images_share_layers_and_each_layer_is_fetched_once(store: AnyStore) -> None:
    shared = blob_bytes("shared", 4000)
    first = make_image("first", [shared, blob_bytes("first/1", 1000)])
    second = make_image("second", [shared, blob_bytes("second/1", 2000)])
    calls: list[Digest] = []
    one = await pull(seam(store), first, tag=f"{APP}:first", calls=calls)
    two = await pull(seam(store), second, tag=f"{APP}:second", calls=calls)
    assert calls.count(Digest.from_bytes(shared)) == 1
    assert len(calls) == 3
    assert one.image_id != two.image_id
    assert one.layers[0] == two.layers[0]
    assert await store.lookup(f"{APP}:first") == one
    assert await store.lookup(f"{APP}:second") == two
    # The same image again (another tag) fetches nothing and keeps its first-used time.
    again = await pull(seam(store), first, tag=f"{APP}:again", calls=calls)
    assert len(calls) == 3
    assert again.repo_tags == (f"{APP}:again", f"{APP}:first")
    assert again.first_used == one.first_used


async def test_another_manifest_for_the_same_config_replaces_it_and_its_names(
    store: AnyStore, clock: Clock
) -> None:
    image = two_layers("same-config")
    first = await pull(seam(store), image, repo_digest=f"{APP}@{image.manifest_digest}")
    other_manifest = image.manifest + b" "  # another manifest (the same config and layers)
    other = FakeImage(image.layers, image.config, other_manifest)
    clock.advance(60)
    second = await pull(
        seam(store), other, tag=f"{APP}:2", repo_digest=f"{APP}@{other.manifest_digest}"
    )
    assert second.image_id == first.image_id
    assert second.manifest_digest == other.manifest_digest
    # The names that resolved to the old manifest went with it.
    assert second.repo_tags == (f"{APP}:2",)
    assert second.repo_digests == (f"{APP}@{other.manifest_digest}",)
    assert await store.lookup(f"{APP}:1") is None
    assert await store.lookup(f"{APP}@{image.manifest_digest}") is None
    assert (second.first_used, second.last_used) == (first.first_used, first.last_used + 60)


async def test_a_tag_moves_to_the_image_committed_last(store: AnyStore) -> None:
    old = await pull(seam(store), two_layers("old"), repo_digest=f"{APP}@sha256:{'a' * 64}")
    new = await pull(seam(store), two_layers("new"))
    assert await store.lookup(f"{APP}:1") == new
    assert new.repo_tags == (f"{APP}:1",)
    left = await store.lookup(old.image_id)
    assert left is not None  # the old image stays, without the tag
    assert left.repo_tags == ()
    assert left.repo_digests == (f"{APP}@sha256:{'a' * 64}",)
    moved = await pull(
        seam(store), two_layers("newer"), tag=None, repo_digest=f"{APP}@sha256:{'a' * 64}"
    )
    assert await store.lookup(f"{APP}@sha256:{'a' * 64}") == moved
    left = await store.lookup(old.image_id)
    assert left is not None
    assert left.repo_digests == ()


@pytest.mark.parametrize("runtime_class", [True, False], ids=["handler-keyed", "handler-ignored"])
async def test_runtime_handler_keying(open_store: OpenStore, runtime_class: bool) -> None:
    image = two_layers("handlers")
    async with open_store(runtime_class=runtime_class) as store:
        kata = await pull(seam(store), image, handler="kata")
        if runtime_class:
            assert kata.runtime_handler == "kata"
            assert kata.key == (image.image_id, "kata")
            assert await store.lookup(f"{APP}:1", "kata") == kata
            assert await store.lookup(f"{APP}:1") is None
            assert await store.lookup(image.image_id, "runc") is None
            plain = await pull(seam(store), image, tag=f"{APP}:plain")
            assert plain.runtime_handler == ""
            assert await store.lookup(f"{APP}:plain", "kata") is None
            assert await store.lookup(f"{APP}:1", "kata") == kata  # a tag per handler
            with pytest.raises(StoreError):
                await store.mark_in_use(image.image_id, "runc")
        else:
            assert kata.runtime_handler == ""
            assert await store.lookup(f"{APP}:1") == kata
            assert await store.lookup(f"{APP}:1", "runc") == kata
            await store.mark_in_use(image.image_id, "runc")
            assert store.in_use() == {(image.image_id, ""): 1}


# -- blobs: single flight, verification, small blobs ---------------------------------------------


async def test_concurrent_ensure_blob_of_one_digest_fetches_once(store: AnyStore) -> None:
    data = blob_bytes("flight", 100_000)
    digest = Digest.from_bytes(data)
    release = anyio.Event()
    calls: list[Digest] = []

    async def slow(sink: BlobSink) -> None:
        calls.append(digest)
        await sink.write(data[:50_000])
        await release.wait()
        await sink.write(data[50_000:])
        await sink.commit(digest, len(data))

    async with anyio.create_task_group() as tg:
        tg.start_soon(store.ensure_blob, digest, len(data), slow)
        tg.start_soon(store.ensure_blob, digest, len(data), slow)
        # One task fetching, the other waiting for it; the store has no event to wait for.
        while store.inflight().get(str(digest)) != 1:  # noqa: ASYNC110
            await anyio.sleep(0.01)
        release.set()
    assert calls == [digest]
    assert store.inflight() == {}
    assert await store.blob_size(digest) == len(data)


async def test_ensure_blob_of_a_present_blob_does_not_fetch(store: AnyStore) -> None:
    data = blob_bytes("present", 2000)
    digest = Digest.from_bytes(data)
    calls: list[Digest] = []
    await store.ensure_blob(digest, len(data), fetch_bytes(data, calls=calls))
    await store.ensure_blob(digest, len(data), fetch_bytes(data, calls=calls))
    assert calls == [digest]
    with pytest.raises(DigestMismatchError):  # present with another size than asked for
        await store.ensure_blob(digest, len(data) + 1, fetch_bytes(data, calls=calls))
    assert calls == [digest]


def _bad_fetch(kind: str, data: bytes, digest: Digest) -> Callable[[BlobSink], Awaitable[None]]:
    if kind == "corrupt":
        return fetch_bytes(bytes([data[0] ^ 1]) + data[1:], digest=digest)
    if kind == "short":
        return fetch_bytes(data[:-1], digest=digest)  # commits with the short size
    if kind == "declared-size":

        async def lying(sink: BlobSink) -> None:  # all bytes, then the wrong size at commit
            await sink.write(data[:-1])
            await sink.commit(digest, len(data))

        return lying
    return fetch_bytes(data + b"!", digest=digest)  # "long": more bytes than the size


@pytest.mark.parametrize("kind", ["corrupt", "short", "declared-size", "long"])
async def test_a_mismatch_keeps_nothing_and_a_retry_fetches_again(
    store: AnyStore, kind: str
) -> None:
    data = blob_bytes("verify", 70_000)
    digest = Digest.from_bytes(data)
    with pytest.raises(DigestMismatchError):
        await store.ensure_blob(digest, len(data), _bad_fetch(kind, data, digest))
    assert await store.blob_size(digest) is None
    assert store.inflight() == {}
    await store.ensure_blob(digest, len(data), fetch_bytes(data))
    assert await store.blob_size(digest) == len(data)


async def test_a_fetch_that_does_not_commit_is_an_error(store: AnyStore) -> None:
    data = blob_bytes("uncommitted", 100)
    digest = Digest.from_bytes(data)

    async def forgetful(sink: BlobSink) -> None:
        await sink.write(data)

    with pytest.raises(StoreError, match="without committing"):
        await store.ensure_blob(digest, len(data), forgetful)
    assert await store.blob_size(digest) is None


async def test_put_blob_read_blob_and_blob_size_of_small_blobs(store: AnyStore) -> None:
    manifest = b'{"schemaVersion": 2}'
    ref = await store.put_blob(manifest)
    assert ref.digest == Digest.from_bytes(manifest)
    assert ref.size == len(manifest)
    assert await store.blob_size(ref.digest) == len(manifest)
    assert await store.read_blob(ref.digest) == manifest
    assert await store.put_blob(manifest, ref.digest) == ref  # again: nothing changes
    with pytest.raises(StoreError, match="more than"):
        await store.read_blob(ref.digest, max_size=len(manifest) - 1)
    other = Digest.from_bytes(b"something else")
    with pytest.raises(DigestMismatchError):
        await store.put_blob(manifest, other)
    assert await store.blob_size(other) is None
    with pytest.raises(StoreError, match="not in the store"):
        await store.read_blob(other)


async def test_commit_image_refuses_missing_or_wrongly_sized_blobs(store: AnyStore) -> None:
    image = two_layers("incomplete")
    await store.put_blob(image.manifest)
    await store.put_blob(image.config)
    with pytest.raises(StoreError, match="not in the store"):
        await store.commit_image(
            image.manifest_digest,
            image.config_digest,
            image.layer_refs,
            repo_tag=f"{APP}:1",
            repo_digest=None,
            platform="linux/amd64",
        )
    for ref, data in zip(image.layer_refs, image.layers, strict=True):
        await store.ensure_blob(ref.digest, ref.size, fetch_bytes(data))
    with pytest.raises(StoreError, match="the manifest says"):
        await store.commit_image(
            image.manifest_digest,
            image.config_digest,
            [image.layer_refs[0], type(image.layer_refs[1])(image.layer_refs[1].digest, 1)],
            repo_tag=f"{APP}:1",
            repo_digest=None,
            platform="linux/amd64",
        )
    assert await store.lookup(f"{APP}:1") is None
    assert await store.lookup(image.image_id) is None


# -- in use, pull records ------------------------------------------------------------------------


async def test_mark_in_use_and_release(store: AnyStore) -> None:
    image = two_layers("used")
    with pytest.raises(StoreError, match="not present"):
        await store.mark_in_use(image.image_id)
    await pull(seam(store), image)
    await store.mark_in_use(image.image_id)
    await store.mark_in_use(image.image_id)
    assert store.in_use() == {(image.image_id, ""): 2}
    store.release(image.image_id)
    assert store.in_use() == {(image.image_id, ""): 1}
    store.release(image.image_id)
    assert store.in_use() == {}
    store.release(image.image_id)  # one release too many changes nothing
    assert store.in_use() == {}


def _secret(name: str, password: str) -> CredentialIdentity:
    return CredentialIdentity(
        CredentialKind.SECRET, "ns", name, f"uid-{name}", hash_credentials(password=password)
    )


async def test_pull_records_merge_read_and_prune(store: AnyStore, clock: Clock) -> None:
    image = two_layers("records")
    record = await pull(seam(store), image)
    image_id = record.image_id
    a, a_rotated, b = _secret("a", "1"), _secret("a", "2"), _secret("b", "1")
    assert await store.pull_records(image_id) == []
    assert await store.record_pull(image_id, a, repository=APP)
    assert not await store.record_pull(image_id, a, repository=APP)  # the same: no change
    assert await store.record_pull(image_id, b, repository=APP)
    assert await store.record_pull(image_id, a_rotated, repository=APP)  # the newest hash wins
    assert await store.pull_records(image_id, repository=APP) == [a_rotated, b]
    assert await store.record_pull(image_id, a, repository="other.example/app")
    everywhere = await store.pull_records(image_id)  # a's two hashes, in either order
    assert [r.name for r in everywhere] == ["a", "a", "b"]
    assert set(everywhere) == {a, a_rotated, b}
    assert await store.pull_records(image_id, repository="nowhere") == []
    # A node-accessible pull replaces the secrets and absorbs everything after it.
    assert await store.record_pull(image_id, CredentialIdentity.node(), repository=APP)
    assert await store.pull_records(image_id, repository=APP) == [CredentialIdentity.node()]
    assert not await store.record_pull(image_id, b, repository=APP)
    assert not await store.record_pull(image_id, CredentialIdentity.anonymous(), repository=APP)
    # Pruning drops old records of images the store does not have, only those.
    gone = f"sha256:{'1' * 64}"
    assert await store.record_pull(gone, a, repository=APP)
    assert await store.record_pull(gone, CredentialIdentity.anonymous(), repository="x.example/y")
    clock.advance(100)
    newer = f"sha256:{'2' * 64}"
    assert await store.record_pull(newer, b, repository=APP)
    assert await store.prune_pull_records(before=clock.now - 50) == 2
    assert await store.pull_records(gone) == []
    assert await store.pull_records(newer) == [b]
    assert await store.pull_records(image_id, repository=APP) == [CredentialIdentity.node()]
    assert await store.prune_pull_records(before=clock.now - 50) == 0


async def test_the_kep_2535_verifier_reads_a_memory_store() -> None:
    store = MemoryStore()
    verifier = ImageAccessVerifier(store)  # the pull-record port is part of NodeStore
    assert await verifier.store.record_pull("sha256:" + "3" * 64, CredentialIdentity.node())
    assert await store.pull_records("sha256:" + "3" * 64) == [CredentialIdentity.node()]


# -- what only the memory store promises ---------------------------------------------------------


def _no_disk_no_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail (and note) any file opened or worker thread started from here on."""
    seen: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            seen.append(what)
            raise AssertionError(f"{what} called by a memory store")

        return refused

    monkeypatch.setattr(builtins, "open", refuse("open"))
    monkeypatch.setattr(os, "open", refuse("os.open"))
    monkeypatch.setattr(anyio.to_thread, "run_sync", refuse("to_thread.run_sync"))
    return seen


async def test_a_64_mib_layer_is_hashed_as_it_arrives_and_never_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = blob_bytes("big", 1 << 20)
    count = 64
    whole = hashlib.sha256()
    for _ in range(count):
        whole.update(chunk)
    digest = Digest("sha256", whole.hexdigest())
    size = count * len(chunk)
    store = MemoryStore()
    warm = b"warm-up"  # the first download imports and sets up what every later one reuses
    await store.ensure_blob(Digest.from_bytes(warm), len(warm), fetch_bytes(warm))
    monkeypatch.chdir(tmp_path)
    seen = _no_disk_no_threads(monkeypatch)

    async def fetch(sink: BlobSink) -> None:
        for _ in range(count):
            await sink.write(chunk)  # the same object each time: nothing new to allocate
        await sink.commit(digest, size)

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        async with store.lease():
            await store.ensure_blob(digest, size, fetch, resumable=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before < 256 << 10, f"{peak - before} bytes traced for a 64 MiB layer"
    assert await store.blob_size(digest) == size
    with pytest.raises(StoreError, match="not of downloaded layers"):
        await store.read_blob(digest, max_size=size)  # its bytes were never kept
    assert seen == []
    monkeypatch.undo()
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []


async def test_an_idle_memory_store_is_small() -> None:
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        stores = [MemoryStore() for _ in range(1000)]
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    each = (after - before) / len(stores)
    assert each < 2048, f"an empty MemoryStore takes {each:.0f} bytes"
    assert not hasattr(stores[0], "__dict__")  # __slots__ only


async def test_the_memory_store_has_no_durable_only_operations() -> None:
    store = MemoryStore()
    for name in ("remove", "remove_key", "pin", "touch", "list_images", "inspect", "usage", "root"):
        assert not hasattr(store, name), name


# -- a real pull through the memory store ---------------------------------------------------------

HOST = "registry.test"
NAME = f"{HOST}/{REPO}"
FAST = TransportSettings(backoff_initial=0.001, backoff_max=0.01, max_attempts=2)


@asynccontextmanager
async def memory_service(registry: FakeRegistry) -> AsyncIterator[ImageService[MemoryStore]]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(registry.handler))
    async with RegistryClient(Transport(settings=FAST, http=http)) as client:
        yield ImageService(client, MemoryStore(), platform=parse_platform("linux/amd64"))


async def test_an_image_service_pull_through_a_memory_store() -> None:
    registry = FakeRegistry()
    image = build_image("memory", "linux/amd64", (5000, 7000))
    registry.push("v1", image)
    async with memory_service(registry) as images:
        pulled = await images.pull_image(parse_normalized(f"{NAME}:v1"))
        assert pulled.image_ref == str(image.config.digest)
        assert pulled.bytes_downloaded == sum(layer.size for layer in image.layers)
        # IfNotPresent: the image status finds it, by tag and by ID.
        status = await images.image_status(f"{NAME}:v1")
        assert status is not None
        assert status.image_id == pulled.image_ref
        assert status.repo_digests == (f"{NAME}@{image.manifest.digest}",)
        assert await images.image_status(pulled.image_ref) == status
        # Always: one HEAD; manifest and config are read back from the memory store.
        registry.requests.clear()
        again = await images.pull_image(parse_normalized(f"{NAME}:v1"))
        assert again.bytes_downloaded == 0
        assert registry.requests == [("HEAD", f"/v2/{REPO}/manifests/v1", None)]
        assert await images.store.read_blob(image.manifest.digest) == image.manifest.data


async def test_a_corrupted_layer_from_the_registry_fails_the_pull_and_keeps_nothing() -> None:
    registry = FakeRegistry()
    image = build_image("corrupt", "linux/amd64", (5000, 7000))
    registry.push("v1", image)
    layer = image.layers[1]
    registry.blobs[str(layer.digest)] = bytes([layer.data[0] ^ 0xFF]) + layer.data[1:]
    async with memory_service(registry) as images:
        with pytest.raises(DigestMismatchError):
            await images.pull_image(parse_normalized(f"{NAME}:v1"))
        assert await images.image_status(f"{NAME}:v1") is None
        assert await images.store.blob_size(layer.digest) is None
        registry.blobs[str(layer.digest)] = layer.data  # the registry is fixed: a retry works
        pulled = await images.pull_image(parse_normalized(f"{NAME}:v1"))
        assert pulled.bytes_downloaded == layer.size  # the good layer was kept
        assert await images.image_status(f"{NAME}:v1") is not None


async def test_open_node_runs_on_a_memory_store(tmp_path: Path) -> None:
    store = MemoryStore()
    options = NodeOptions(node_docker_config=False)
    parts = NodeParts(store=store)
    async with open_node(
        KubeletConfiguration.default(), NodePaths(tmp_path), options, parts
    ) as node:
        assert node.image_store is store
        assert node.store is None  # no durable store: nothing for the daemon's GC
        async with quiet_image_service(node) as service:
            assert service.store is store
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []
