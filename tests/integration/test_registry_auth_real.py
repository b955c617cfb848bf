"""Auth, TLS and redirects against the real distribution registry."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.platforms import parse_platform
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.core.sinks import MemorySink
from kubelet_sim.errors import RegistryAuthError, RegistryTransportError
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.sim.images import build_image, build_multiarch
from kubelet_sim.sim.registry import HTPASSWD_USERS, RegistryFactory, RegistryProcess
from kubelet_sim.sim.seed import push_image, push_index
from kubelet_sim.sim.tls import TLSMaterial
from kubelet_sim.testing.fileserver import RecordingFileServer

pytestmark = [pytest.mark.anyio, pytest.mark.registry]

ALICE = Credentials(username="alice", password=HTPASSWD_USERS["alice"])
_counter = itertools.count()


def hosts_dir_trusting(tmp_path: Path, registry: RegistryProcess, ca: Path) -> Path:
    """A containerd certs.d folder whose hosts.toml trusts the test CA for this registry."""
    folder = tmp_path / "certs.d" / registry.host
    folder.mkdir(parents=True)
    (folder / "hosts.toml").write_text(f'server = "https://{registry.host}"\nca = "{ca}"\n')
    return tmp_path / "certs.d"


async def test_basic_auth_over_tls_with_self_signed_ca(
    htpasswd_registry: RegistryProcess, tls_material: TLSMaterial, tmp_path: Path
) -> None:
    hosts = hosts_dir_trusting(tmp_path, htpasswd_registry, tls_material.ca_cert)
    index = build_multiarch("private", platforms=("linux/amd64", "linux/arm64"))
    ref = parse_normalized(f"{htpasswd_registry.host}/private/app:v{next(_counter)}")
    with capture_logs() as logs:
        async with RegistryClient(hosts_dir=hosts) as client:
            await push_index(client, ref, index, creds=ALICE)
            for image in index.images:
                resolved = await client.resolve_image(
                    ref, parse_platform(image.platform_string), ALICE
                )
                sink = MemorySink()
                await client.fetch_blob(ref, resolved.manifest.layers[0], sink, ALICE)
                assert sink.data == image.layers[0].data
            with pytest.raises(RegistryAuthError) as anonymous:
                await client.resolve(ref)
            assert anonymous.value.status == 401
            wrong = Credentials(username="alice", password="not-the-password")
            with pytest.raises(RegistryAuthError) as denied:
                await client.resolve(ref, wrong)
            assert denied.value.status == 401
    everything = repr(logs) + str(anonymous.value) + str(denied.value)
    assert HTPASSWD_USERS["alice"] not in everything
    assert "not-the-password" not in everything


async def test_loopback_tls_without_settings_is_insecure_like_containerd(
    htpasswd_registry: RegistryProcess, tmp_path: Path
) -> None:
    image = build_image("loopback-tls", "linux/amd64", (256,))
    ref = parse_normalized(f"{htpasswd_registry.host}/private/loopback:v1")
    async with RegistryClient() as client:
        # containerd treats localhost/127.0.0.0/8 registries as insecure: TLS without verification.
        await push_image(client, ref, image, creds=ALICE)
        resolved = await client.resolve_image(ref, creds=ALICE)
        assert resolved.image_id == image.config.digest
    folder = tmp_path / "certs.d" / htpasswd_registry.host
    folder.mkdir(parents=True)
    (folder / "hosts.toml").write_text(
        f'server = "https://{htpasswd_registry.host}"\n\n[host."https://{htpasswd_registry.host}"]\n'
        '  capabilities = ["pull", "resolve"]\n  skip_verify = false\n'
    )
    async with RegistryClient(hosts_dir=tmp_path / "certs.d") as client:
        with pytest.raises(RegistryTransportError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.resolve(ref, ALICE)


async def test_blob_redirect_to_storage_drops_authorization(
    registry_factory: RegistryFactory, tmp_path: Path, tls_material: TLSMaterial
) -> None:
    from kubelet_sim.sim.registry import TLSConfig, write_htpasswd

    storage = tmp_path / "storage"
    storage.mkdir()
    files = RecordingFileServer(storage).start()
    try:
        htpasswd = write_htpasswd(tmp_path / "htpasswd", HTPASSWD_USERS)
        registry = registry_factory(
            storage_dir=storage,
            redirect_baseurl=files.url,
            htpasswd=htpasswd,
            tls=TLSConfig(tls_material.server_cert, tls_material.server_key),
        )
        hosts = hosts_dir_trusting(tmp_path, registry, tls_material.ca_cert)
        image = build_image("redirected", "linux/amd64", (50_000,))
        ref = parse_normalized(f"{registry.host}/redir/app:v1")
        async with RegistryClient(hosts_dir=hosts) as client:
            await push_image(client, ref, image, creds=ALICE)
            resolved = await client.resolve_image(ref, creds=ALICE)
            sink = MemorySink()
            await client.fetch_blob(ref, resolved.manifest.layers[0], sink, ALICE)
            assert sink.data == image.layers[0].data
        blob_requests = [r for r in files.requests if r[1].endswith("/data")]
        assert blob_requests, "the registry did not redirect blob reads to the storage origin"
        for _method, _path, headers in blob_requests:
            assert "Authorization" not in headers
            assert headers.get("Accept-Encoding") == "identity"
    finally:
        files.stop()
