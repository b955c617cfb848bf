"""The runtime's pull against an in-memory registry: references, artifacts, sizes, requests made.

The registry answers through ``httpx.MockTransport`` and records every request, so a test can say
what a pull asked for (only a ``HEAD`` for ``Always`` with the image present; a ``Range`` request
when a layer resumes) and serve what a real registry would not (artifacts, lying sizes).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.platforms import parse_platform
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.engine.manager import cri_error_message
from kubelet_sim.engine.ports import Layer
from kubelet_sim.errors import (
    BlobNotFoundError,
    KubeletSimError,
    ManifestError,
    NotAnImageError,
    RegistryNotFoundError,
    RegistryTransportError,
    StoreFullError,
)
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.transport import Transport, TransportSettings
from kubelet_sim.runtime.images import ImageService
from kubelet_sim.sim.images import Blob, Image, build_image, random_bytes
from kubelet_sim.store import FLUSH_BYTES, MemoryStore, NodeStore, Store
from kubelet_sim.store import ingest as ingests
from kubelet_sim.testing.fakeregistry import REPO, FakeRegistry

pytestmark = pytest.mark.anyio

HOST = "registry.test"
NAME = f"{HOST}/{REPO}"
FAST = TransportSettings(backoff_initial=0.001, backoff_max=0.01, max_attempts=2)


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@asynccontextmanager
async def service(
    registry: FakeRegistry, root: Path, **options: Any
) -> AsyncIterator[ImageService]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(registry.handler))
    async with (
        await Store.open(root, **options) as store,
        RegistryClient(Transport(settings=FAST, http=http)) as client,
    ):
        yield ImageService(client, store, platform=parse_platform("linux/amd64"))


# -- 1: name:tag@digest -----------------------------------------------------------------------


async def test_tag_and_digest_records_the_digest_only_as_containerd(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    tagged = build_image("tagged", "linux/amd64", (1000,))
    pinned = build_image("pinned", "linux/amd64", (2000,))
    registry.push("v1", tagged)
    registry.push("old", pinned)
    async with service(registry, tmp_path / "store") as images:
        pulled = await images.pull_image(parse_normalized(f"{NAME}:v1@{pinned.manifest.digest}"))
        assert pulled.image_ref == str(pinned.config.digest)
        assert pulled.repo_digest == f"{NAME}@{pinned.manifest.digest}"
        record = await images.image_status(f"{NAME}@{pinned.manifest.digest}")
        assert record is not None
        assert record.repo_tags == ()  # ParseDockerRef dropped the tag: no tag is recorded
        assert record.repo_digests == (f"{NAME}@{pinned.manifest.digest}",)
        # So IfNotPresent for name:v1 does not find the pinned image "already present".
        assert await images.image_status(f"{NAME}:v1") is None
        assert await images.image_status(f"{NAME}:v1@{pinned.manifest.digest}") == record
        assert ("GET", f"/v2/{REPO}/manifests/v1", None) not in registry.requests
        tag_pull = await images.pull_image(parse_normalized(f"{NAME}:v1"))
        assert tag_pull.image_ref == str(tagged.config.digest)


# -- 11: Always with the image present; resuming a layer ----------------------------------------


async def test_a_repeated_pull_of_a_present_image_only_asks_the_registry_with_head(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    image = build_image("always", "linux/amd64", (5000, 7000))
    registry.push("v1", image)
    async with service(registry, tmp_path / "store") as images:
        first = await images.pull_image(parse_normalized(f"{NAME}:v1"))
        registry.requests.clear()
        again = await images.pull_image(parse_normalized(f"{NAME}:v1"))  # what Always does
        assert again.image_ref == first.image_ref
        assert again.bytes_downloaded == 0
        assert registry.requests == [("HEAD", f"/v2/{REPO}/manifests/v1", None)]


async def test_a_layer_cut_off_resumes_with_a_range_request_after_a_restart(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    image = build_image("resume", "linux/amd64", (FLUSH_BYTES + 600_000,), compress=False)
    layer = image.layers[0]
    registry.push("v1", image)
    registry.cut_blob_at[str(layer.digest)] = FLUSH_BYTES + 500_000
    root = tmp_path / "store"
    async with service(registry, root) as images:
        with pytest.raises(RegistryTransportError):
            await images.pull_image(parse_normalized(f"{NAME}:v1"))
    data_file, _ = ingests.paths(root / "tmp", layer.digest)
    assert data_file.stat().st_size == FLUSH_BYTES  # what reached the disk, verified later
    registry.down = False
    registry.requests.clear()
    async with service(registry, root) as images:  # a new process on the same store
        pulled = await images.pull_image(parse_normalized(f"{NAME}:v1"))
        assert pulled.bytes_downloaded == layer.size - FLUSH_BYTES
    ranged = [r for m, p, r in registry.requests if p.endswith(str(layer.digest)) and m == "GET"]
    assert ranged == [f"bytes={FLUSH_BYTES}-{layer.size - 1}"]
    assert not data_file.exists()


# -- 9: OCI artifacts --------------------------------------------------------------------------


EMPTY = Blob(mt.OCI_EMPTY, b"{}")


def artifact(
    seed: str, *, config: Blob = EMPTY, payload: Blob | None = None, **fields: Any
) -> tuple[Blob, Blob]:
    """An OCI artifact manifest over one blob (``oras push`` style) and that blob."""
    payload = payload or Blob("application/vnd.example.payload", f"artifact {seed}".encode())
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [payload.descriptor()],
        **fields,
    }
    return Blob(mt.OCI_MANIFEST, json.dumps(doc).encode()), payload


def image_config(diff_ids: int) -> Blob:
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{'0' * 64}"] * diff_ids},
    }
    return Blob(mt.OCI_CONFIG, json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("fields", "config", "problem"),
    [
        pytest.param(
            {}, EMPTY, "config mediaType 'application/vnd.oci.empty.v1+json'", id="empty-config"
        ),
        pytest.param(
            {},
            Blob("application/vnd.cncf.helm.config.v1+json", b"{}"),
            "helm.config",
            id="helm-chart",
        ),
        pytest.param(
            {"artifactType": "application/vnd.example.sbom"},
            image_config(1),
            "application/vnd.example.sbom",
            id="artifact-type",
        ),
    ],
)
async def test_an_artifact_its_manifest_shows_is_refused_before_anything_is_fetched(
    registry: FakeRegistry, tmp_path: Path, fields: dict[str, Any], config: Blob, problem: str
) -> None:
    manifest, payload = artifact("one", config=config, **fields)
    registry.blobs |= {str(config.digest): config.data, str(payload.digest): payload.data}
    registry.put_manifest("v1", manifest)
    async with service(registry, tmp_path / "store") as images:
        with pytest.raises(NotAnImageError) as caught:
            await images.pull_image(parse_normalized(f"{NAME}:v1"))
        assert caught.value.digest == str(manifest.digest)
        assert problem in str(caught.value)
        assert "mismatched image rootfs and manifest layers" in str(caught.value)
        assert not [path for path in registry.gets() if "/blobs/" in path]  # config nor layer
        assert await images.store.list_images(include_absent=True) == []
        assert await images.store.blob_refcounts() == {}


@asynccontextmanager
async def held_service(
    registry: FakeRegistry,
    root: Path,
    digest: Digest,
    until: anyio.Event,
    release_when: Callable[[list[str]], bool] = lambda asked: False,
) -> AsyncIterator[tuple[ImageService, list[str]]]:
    """A service whose registry holds its answer for the blob ``digest`` until ``until`` is
    set (by the test, or here once ``release_when`` holds for the paths asked so far); with
    the paths in the order they were asked (before any answer)."""
    asked: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if release_when(asked):
            until.set()
        if request.url.path.endswith(f"/blobs/{digest}"):
            with anyio.fail_after(5):  # never set: the pull waited for this answer first
                await until.wait()
        return registry.handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with (
        await Store.open(root) as store,
        RegistryClient(Transport(settings=FAST, http=http)) as client,
    ):
        yield ImageService(client, store, platform=parse_platform("linux/amd64")), asked


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        pytest.param(image_config(3), "lists 3 rootfs.diff_ids for 1 layers", id="rootfs-mismatch"),
        pytest.param(Blob(mt.OCI_CONFIG, b"[]"), "is not a JSON object", id="config-not-an-object"),
    ],
)
async def test_an_image_whose_config_has_no_rootfs_is_refused_before_any_layer_is_stored(
    registry: FakeRegistry, tmp_path: Path, config: Blob, problem: str
) -> None:
    """The config comes beside the layers (containerd's dispatch): a layer that arrived first,
    whole (past the writer's first flush, so it is on disk as a resumable ingest), waits for the
    config's verdict and is then discarded; nothing is left behind."""
    layer = Blob(mt.OCI_LAYER, random_bytes("refused", 2 * FLUSH_BYTES + 1))
    manifest, payload = artifact("big", config=config, payload=layer)
    registry.blobs |= {str(config.digest): config.data, str(payload.digest): payload.data}
    registry.put_manifest("v1", manifest)
    layer_in = anyio.Event()

    def progress(image: str, layer: Layer, received: int) -> None:
        if layer.digest == payload.digest and received == len(payload.data):
            layer_in.set()

    root = tmp_path / "store"
    async with held_service(registry, root, config.digest, layer_in) as (images, _):
        with pytest.raises(NotAnImageError) as caught:
            await images.pull_image(parse_normalized(f"{NAME}:v1"), progress=progress)
        assert problem in str(caught.value)
        assert "mismatched image rootfs and manifest layers" in str(caught.value)
        assert layer_in.is_set()  # the layer had been downloaded whole before the config came
        assert await images.store.list_images(include_absent=True) == []
        assert await images.store.blob_refcounts() == {}
    assert list((root / "tmp").iterdir()) == []


@pytest.mark.parametrize("memory", [False, True], ids=["durable", "memory"])
async def test_a_layer_that_is_the_config_itself_does_not_deadlock_the_pull(
    registry: FakeRegistry, tmp_path: Path, memory: bool
) -> None:
    """The config's verdict comes before its puts: the put of the config joins the download of
    the layer with the same digest, which commits only after the verdict."""
    config = image_config(1)
    same = Blob(mt.OCI_LAYER, config.data)  # the same bytes: the same digest
    manifest, _ = artifact("same", config=config, payload=same)
    registry.blobs[str(config.digest)] = config.data
    registry.put_manifest("v1", manifest)
    http = httpx.AsyncClient(transport=httpx.MockTransport(registry.handler))
    store: Store | MemoryStore = MemoryStore() if memory else await Store.open(tmp_path / "store")
    async with store, RegistryClient(Transport(settings=FAST, http=http)) as client:
        images = ImageService[NodeStore](client, store, platform=parse_platform("linux/amd64"))
        with anyio.fail_after(5):
            pulled = await images.pull_image(parse_normalized(f"{NAME}:v1"))
        assert pulled.image_ref == str(config.digest)
        assert await images.image_status(f"{NAME}:v1") is not None


async def test_the_config_is_fetched_beside_the_layers_as_containerd_does(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    """One round trip fewer than config first: the config is asked first of the manifest's
    children, and the layers go out before its answer (here held until both were asked)."""
    image = build_image("beside", "linux/amd64", (1000, 2000))
    registry.push("v1", image)
    layers = {f"/v2/{REPO}/blobs/{layer.digest}" for layer in image.layers}
    both_asked = anyio.Event()

    async with held_service(
        registry,
        tmp_path / "store",
        image.config.digest,
        both_asked,
        release_when=lambda asked: layers <= set(asked),
    ) as (images, asked):
        pulled = await images.pull_image(parse_normalized(f"{NAME}:v1"))
        assert pulled.image_ref == str(image.config.digest)
        blobs = [path for path in asked if "/blobs/" in path]
        assert blobs[0] == f"/v2/{REPO}/blobs/{image.config.digest}"
        assert set(blobs[1:]) == layers
        record = await images.image_status(f"{NAME}:v1")
        assert record is not None
        assert await images.store.read_blob(image.config.digest) == image.config.data


async def test_two_artifacts_sharing_the_empty_config_never_become_one_image(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    for tag in ("a", "b"):
        manifest, payload = artifact(tag)
        registry.blobs |= {str(EMPTY.digest): EMPTY.data, str(payload.digest): payload.data}
        registry.put_manifest(tag, manifest)
    async with service(registry, tmp_path / "store") as images:
        for tag in ("a", "b"):
            with pytest.raises(NotAnImageError):
                await images.pull_image(parse_normalized(f"{NAME}:{tag}"))
        assert await images.image_status(f"{NAME}:a") is None
        assert await images.image_status(str(EMPTY.digest)) is None


# -- 8: sizes ----------------------------------------------------------------------------------


def manifest_with_layers(image: Image, layers: list[dict[str, Any]]) -> Blob:
    doc = json.loads(image.manifest.data)
    doc["layers"] = layers
    return Blob(mt.OCI_MANIFEST, json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("size", "error", "text"),
    [
        pytest.param(1 << 63, ManifestError, "does not fit an int64", id="2^63"),
        pytest.param(1 << 62, StoreFullError, "refused before downloading", id="2^62"),
    ],
)
async def test_a_layer_too_large_for_the_disk_is_refused_before_downloading(
    registry: FakeRegistry, tmp_path: Path, size: int, error: type[Exception], text: str
) -> None:
    image = build_image("huge", "linux/amd64", (1000,))
    huge = {"mediaType": mt.OCI_LAYER_GZIP, "digest": str(image.layers[0].digest), "size": size}
    registry.push("v1", image)
    manifest = manifest_with_layers(image, [huge])
    registry.put_manifest("v1", manifest)
    # The config lists one diff ID for the one layer: a real image but for the size.
    async with service(registry, tmp_path / "store", free_space=lambda _: 10 << 30) as images:
        with pytest.raises(error, match=text):
            await images.pull_image(parse_normalized(f"{NAME}:v1"))
        assert f"/v2/{REPO}/blobs/{image.layers[0].digest}" not in registry.gets()
        assert list((tmp_path / "store" / "tmp").iterdir()) == []


async def test_a_manifest_listing_one_digest_with_two_sizes_is_refused(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    image = build_image("twice", "linux/amd64", (1000, 2000))
    first = image.layers[0].descriptor()
    registry.push("v1", image)
    registry.put_manifest("v1", manifest_with_layers(image, [first, {**first, "size": 999_999}]))
    async with service(registry, tmp_path / "store") as images:
        with pytest.raises(
            ManifestError, match=r"layers\[1\] lists .* with size 999999, layers\[0\]"
        ):
            await images.pull_image(parse_normalized(f"{NAME}:v1"))
        assert registry.gets() == [
            f"/v2/{REPO}/manifests/{Digest.from_bytes(registry.manifests['v1'][0])}"
        ]


async def test_an_image_without_layers_is_an_image(registry: FakeRegistry, tmp_path: Path) -> None:
    config = Blob(
        mt.OCI_CONFIG,
        b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":null}}',
    )
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [],
    }
    registry.blobs[str(config.digest)] = config.data
    registry.put_manifest("v1", Blob(mt.OCI_MANIFEST, json.dumps(doc).encode()))
    async with service(registry, tmp_path / "store") as images:
        pulled = await images.pull_image(parse_normalized(f"{NAME}:v1"))
        assert pulled.image_ref == str(config.digest)


# -- 10: a blob the manifest lists is missing ------------------------------------------------


@pytest.mark.parametrize("missing", ["config", "layer"])
async def test_a_missing_blob_is_not_worded_as_an_unresolvable_reference(
    registry: FakeRegistry, tmp_path: Path, missing: str
) -> None:
    image = build_image("gone", "linux/amd64", (1000,))
    registry.push("v1", image)
    gone = image.config if missing == "config" else image.layers[0]
    del registry.blobs[str(gone.digest)]
    ref = parse_normalized(f"{NAME}:v1")
    async with service(registry, tmp_path / "store") as images:
        with pytest.raises(BlobNotFoundError) as caught:
            await images.pull_image(ref)
    text = cri_error_message(ref, caught.value)
    assert text.startswith("rpc error: code = NotFound desc = failed to pull and unpack image")
    assert f"could not fetch content descriptor {gone.digest} ({gone.media_type})" in text
    assert "failed to resolve reference" not in text
    # The reference itself resolved: a missing tag still reads as containerd words it.
    with pytest.raises(RegistryNotFoundError) as unknown:
        async with service(registry, tmp_path / "store") as images:
            await images.pull_image(parse_normalized(f"{NAME}:nope"))
    assert not isinstance(unknown.value, BlobNotFoundError)
    assert "failed to resolve reference" in cri_error_message(ref, unknown.value)


async def test_a_config_nested_past_the_recursion_limit_is_refused_not_a_crash(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    deep = b'{"architecture":"amd64","os":"linux","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    config = Blob(mt.OCI_CONFIG, deep)
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [],
    }
    registry.blobs[str(config.digest)] = config.data
    registry.put_manifest("v1", Blob(mt.OCI_MANIFEST, json.dumps(doc).encode()))
    async with service(registry, tmp_path / "store") as images:
        with pytest.raises(KubeletSimError) as caught:
            await images.pull_image(parse_normalized(f"{NAME}:v1"))
    assert str(config.digest) in str(caught.value)
