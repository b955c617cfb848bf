"""The registry client against the real distribution registry: push, resolve, multi-arch, verify."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import anyio
import pytest

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.digest import Digest
from kubelet_sim.core.platforms import parse_platform
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.core.sinks import MemorySink
from kubelet_sim.errors import (
    DigestMismatchError,
    ManifestError,
    NoMatchingPlatformError,
    RegistryAuthError,
    RegistryNotFoundError,
)
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.manifests import ImageIndex, ImageManifest
from kubelet_sim.registry.push import Pusher
from kubelet_sim.sim.faultproxy import FaultProxy
from kubelet_sim.sim.images import (
    Blob,
    build_image,
    build_layer,
    build_multiarch,
    canonical_json,
)
from kubelet_sim.sim.registry import HTPASSWD_USERS, RegistryProcess
from kubelet_sim.sim.seed import push_image, push_index
from kubelet_sim.sim.tls import TLSMaterial

pytestmark = [pytest.mark.anyio, pytest.mark.registry]

_counter = itertools.count()


def unique_repo(registry: RegistryProcess, name: str) -> str:
    return f"{registry.host}/it/{name}-{next(_counter)}"


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-manifest-list"])
async def test_push_then_resolve_every_platform(registry: RegistryProcess, docker: bool) -> None:
    index = build_multiarch("multi", docker=docker)
    ref = unique_repo(registry, "multi") + ":v1"
    async with RegistryClient() as client:
        await push_index(client, ref, index)
        parsed_ref = parse_normalized(ref)
        top = await client.resolve(parsed_ref)
        assert top.digest == index.index.digest
        assert top.media_type == (mt.DOCKER_MANIFEST_LIST if docker else mt.OCI_INDEX)
        for image in index.images:
            resolved = await client.resolve_image(parsed_ref, parse_platform(image.platform_string))
            assert resolved.manifest_descriptor.digest == image.manifest.digest
            assert resolved.image_id == image.config.digest
            assert resolved.config == image.config.data
            assert resolved.repo_digest == f"{parsed_ref.name}@{index.index.digest}"
            sinks: dict[Digest, MemorySink] = {}

            async def sink_for(desc, sinks=sinks):  # type: ignore[no-untyped-def]
                sinks[desc.digest] = MemorySink()
                return sinks[desc.digest]

            await client.pull(parsed_ref, sink_for, resolved=resolved)
            assert {d: s.data for d, s in sinks.items()} == {
                layer.digest: layer.data for layer in image.layers
            }


async def test_arm64_falls_back_and_unknown_platform_is_named(registry: RegistryProcess) -> None:
    index = build_multiarch("fallback", platforms=("linux/amd64", "linux/arm/v7"))
    ref = parse_normalized(unique_repo(registry, "fallback") + ":v1")
    async with RegistryClient() as client:
        await push_index(client, ref, index)
        # arm/v8 (32-bit mode of an arm64 CPU) may run arm/v7 images: containerd's fall-back.
        resolved = await client.resolve_image(ref, parse_platform("linux/arm/v8"))
        assert (
            resolved.manifest_descriptor.digest == index.image_for("linux/arm/v7").manifest.digest
        )
        with pytest.raises(NoMatchingPlatformError) as info:
            await client.resolve_image(ref, parse_platform("linux/ppc64le"))
        assert "linux/ppc64le" in str(info.value)
        assert "linux/amd64" in str(info.value)
        assert "unknown" not in str(info.value)


async def test_single_manifest_by_tag_and_by_digest(registry: RegistryProcess) -> None:
    image = build_image("single", "linux/amd64", (4096,))
    name = unique_repo(registry, "single")
    async with RegistryClient() as client:
        await push_image(client, name + ":1.0", image)
        by_tag = await client.resolve_image(parse_normalized(name + ":1.0"))
        by_digest = await client.resolve_image(parse_normalized(f"{name}@{image.manifest.digest}"))
        assert by_tag.manifest_descriptor.digest == by_digest.descriptor.digest
        parsed = await client.fetch_manifest(parse_normalized(name + ":1.0"), by_tag.descriptor)
        assert isinstance(parsed, ImageManifest)
        assert [layer.digest for layer in parsed.layers] == [image.layers[0].digest]


async def test_missing_tag_and_repository_are_not_found(registry: RegistryProcess) -> None:
    async with RegistryClient() as client:
        with pytest.raises(RegistryNotFoundError) as info:
            await client.resolve(parse_normalized(unique_repo(registry, "absent") + ":nope"))
        assert info.value.status == 404
        assert info.value.code in {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"}


async def test_nested_index_is_followed(registry: RegistryProcess) -> None:
    inner = build_multiarch("nested", platforms=("linux/amd64", "linux/arm64"), attestations=False)
    outer_doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [inner.index.descriptor(platform={"os": "linux", "architecture": "arm64"})],
    }
    outer = Blob(mt.OCI_INDEX, canonical_json(outer_doc))
    name = unique_repo(registry, "nested")
    async with RegistryClient() as client:
        await push_index(client, name + ":inner", inner)
        pusher = Pusher(client, parse_normalized(name + ":outer"))
        await pusher.push_manifest(outer.data, outer.media_type, "outer")
        resolved = await client.resolve_image(
            parse_normalized(name + ":outer"), parse_platform("linux/arm64")
        )
        assert resolved.manifest_descriptor.digest == inner.image_for("linux/arm64").manifest.digest
        assert isinstance(resolved.index, ImageIndex)


async def test_corrupted_blob_on_registry_disk_is_rejected(registry: RegistryProcess) -> None:
    image = build_image("corrupt", "linux/amd64", (8192,))
    name = unique_repo(registry, "corrupt")
    layer = image.layers[0]
    async with RegistryClient() as client:
        await push_image(client, name + ":v1", image)
        data_file = _blob_data_path(registry.config.storage_dir, layer.digest)
        original = data_file.read_bytes()
        data_file.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
        try:
            ref = parse_normalized(name + ":v1")
            resolved = await client.resolve_image(ref, parse_platform("linux/amd64"))
            sink = MemorySink()
            with pytest.raises(DigestMismatchError) as info:
                await client.fetch_blob(ref, resolved.manifest.layers[0], sink)
            assert str(layer.digest) in str(info.value)
            assert sink.data is None
            assert sink.written == 0
        finally:
            data_file.write_bytes(original)


async def test_schema1_and_unknown_media_types_are_typed_errors(registry: RegistryProcess) -> None:
    name = unique_repo(registry, "weird")
    image = build_image("weird", "linux/amd64", (128,))
    async with RegistryClient() as client:
        await push_image(client, name + ":ok", image)
        weird_doc = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.example.unknown+json",
            "config": image.config.descriptor(),
            "layers": [],
        }
        ref = parse_normalized(name + ":ok")
        desc = await client.resolve(ref)
        bogus = desc.__class__(
            media_type="application/vnd.example.unknown+json",
            digest=Digest.from_bytes(canonical_json(weird_doc)),
            size=len(canonical_json(weird_doc)),
            data=canonical_json(weird_doc),
        )
        with pytest.raises(ManifestError, match="unsupported media type"):
            await client.fetch_manifest(ref, bogus)
        schema1 = b'{"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}'
        s1 = desc.__class__(
            media_type=mt.DOCKER_SCHEMA1_SIGNED,
            digest=Digest.from_bytes(schema1),
            size=len(schema1),
            data=schema1,
        )
        with pytest.raises(ManifestError, match="schema 1"):
            await client.fetch_manifest(ref, s1)


async def test_push_skips_existing_blobs_and_mounts_across_repositories(
    registry: RegistryProcess,
) -> None:
    base = build_layer("shared-base", 4096)
    first = build_image("mount-a", "linux/amd64", (512,), shared_layers=(base,))
    second = build_image("mount-b", "linux/amd64", (512,), shared_layers=(base,))
    repo_a = unique_repo(registry, "mount-a")
    repo_b = unique_repo(registry, "mount-b")
    async with RegistryClient() as client:
        pusher_a = await push_image(client, repo_a + ":v1", first)
        assert pusher_a.uploaded == 3
        again = await push_image(client, repo_a + ":v1", first)
        assert again.uploaded == 0
        assert again.skipped == 3
        pusher_b = Pusher(client, parse_normalized(repo_b + ":v1"))
        await pusher_b.push_blob(
            base.data, base.digest, base.size, mount_from=parse_normalized(repo_a).repository
        )
        assert pusher_b.mounted == 1
        assert await pusher_b.blob_exists(base.digest)
        chunked = Pusher(client, parse_normalized(repo_b + ":v1"), chunk_size=1000)
        for blob in second.blobs():
            await chunked.push_blob(blob.data, blob.digest, blob.size)
        await chunked.push_manifest(second.manifest.data, second.manifest.media_type, "v1")
        resolved = await client.resolve_image(parse_normalized(repo_b + ":v1"))
        assert resolved.image_id == second.config.digest


def _blob_data_path(storage: Path, digest: Digest) -> Path:
    hexd = digest.hex
    path = storage / "docker/registry/v2/blobs" / digest.algorithm / hexd[:2] / hexd / "data"
    assert path.exists(), path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hexd
    return path


async def test_a_401_behind_the_documented_private_ca_layout_stays_a_401(
    htpasswd_registry: RegistryProcess, tls_material: TLSMaterial, tmp_path: Path
) -> None:
    # containerd docs/hosts.md: the CA is set on a [host] table for the server's own URL; the
    # server line itself (appended last, without the CA) then fails certificate verification.
    # The answer worth showing is the first host's 401, not the fallback's certificate error.
    folder = tmp_path / "certs.d" / htpasswd_registry.host
    folder.mkdir(parents=True)
    (folder / "hosts.toml").write_text(
        f'server = "https://{htpasswd_registry.host}"\n\n'
        f'[host."https://{htpasswd_registry.host}"]\n'
        f'  ca = "{tls_material.ca_cert}"\n'
    )
    alice = Credentials(username="alice", password=HTPASSWD_USERS["alice"])
    wrong = Credentials(username="alice", password="not-the-password")
    ref = parse_normalized(f"{htpasswd_registry.host}/private/ca-layout:v1")
    seeding = tmp_path / "seed.d" / htpasswd_registry.host
    seeding.mkdir(parents=True)
    (seeding / "hosts.toml").write_text(
        f'server = "https://{htpasswd_registry.host}"\nca = "{tls_material.ca_cert}"\n'
    )
    async with RegistryClient(hosts_dir=tmp_path / "seed.d") as seeder:
        await push_image(seeder, ref, build_image("ca-layout", "linux/amd64", (128,)), creds=alice)
    async with RegistryClient(hosts_dir=tmp_path / "certs.d") as client:
        assert (await client.resolve_image(ref, creds=alice)).reference == ref
        for creds in (None, wrong):
            with pytest.raises(RegistryAuthError) as info:
                await client.resolve_image(ref, creds=creds)
            assert info.value.status == 401
            assert "CERTIFICATE_VERIFY_FAILED" not in str(info.value)


async def test_resolves_reuse_one_connection(registry: RegistryProcess) -> None:
    # A HEAD answer closed unread closed its connection too: every resolve (every pull) opened
    # a new one. Through a proxy that counts connections: one for the HTTPS attempt that finds
    # a plain-HTTP loopback registry, then one for all five resolves.
    image = build_image("reuse", "linux/amd64", (64,))
    async with anyio.create_task_group() as tg:
        proxy = FaultProxy(registry.host)
        await tg.start(proxy.run)
        ref = f"{proxy.host}/it/reuse-{next(_counter)}:v1"
        async with RegistryClient() as client:
            await push_image(client, ref, image)
        before = proxy.stats.connections
        async with RegistryClient() as client:
            for _ in range(5):
                desc = await client.resolve(parse_normalized(ref))
                assert desc.digest == image.manifest.digest
        assert proxy.stats.connections - before == 2
        tg.cancel_scope.cancel()
