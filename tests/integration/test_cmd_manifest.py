"""``kubelet-sim manifest ...`` against the real registry, as the seed documents use docker manifest."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from kubelet_sim.cli.main import main
from kubelet_sim.core.credentials import Credentials
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.sim.images import build_image, build_multiarch
from kubelet_sim.sim.registry import HTPASSWD_USERS, RegistryProcess
from kubelet_sim.sim.seed import push_image, push_index
from kubelet_sim.sim.tls import TLSMaterial

pytestmark = pytest.mark.registry


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_inspect_resolves_every_platform_like_containerd(
    registry: RegistryProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    index = build_multiarch("cli-inspect")
    ref = f"{registry.host}/cli/inspect:v1"

    async def seed() -> None:
        async with RegistryClient() as client:
            await push_index(client, ref, index)

    anyio.run(seed)
    status, out, _ = run_cli(capsys, "manifest", "inspect", ref)
    assert status == 0
    raw = json.loads(out)
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert len(raw["manifests"]) == 8  # four platforms and their attestations
    for image in index.images:
        status, out, _ = run_cli(
            capsys, "manifest", "inspect", ref, "--platform", image.platform_string
        )
        assert status == 0
        doc = json.loads(out)
        assert doc["digest"] == str(index.index.digest)
        assert doc["manifest_digest"] == str(image.manifest.digest)
        assert doc["config_digest"] == str(image.config.digest)
        assert doc["platform"] == image.platform_string
        assert [layer["digest"] for layer in doc["layers"]] == [
            str(layer.digest) for layer in image.layers
        ]
        assert [layer["size"] for layer in doc["layers"]] == [layer.size for layer in image.layers]
    # Normalisation: aarch64 is arm64, armhf is arm/v7.
    for alias, wanted in (("linux/aarch64", "linux/arm64"), ("linux/armhf", "linux/arm/v7")):
        status, out, _ = run_cli(capsys, "manifest", "inspect", ref, "--platform", alias)
        assert json.loads(out)["manifest_digest"] == str(index.image_for(wanted).manifest.digest)


def test_inspect_unknown_platform_fails_naming_it(
    registry: RegistryProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    index = build_multiarch("cli-noplat", platforms=("linux/amd64",))
    ref = f"{registry.host}/cli/noplat:v1"

    async def seed() -> None:
        async with RegistryClient() as client:
            await push_index(client, ref, index)

    anyio.run(seed)
    status, out, err = run_cli(capsys, "manifest", "inspect", ref, "--platform", "linux/riscv64")
    assert status == 1
    assert out == ""
    assert "linux/riscv64" in err
    assert "linux/amd64" in err


def test_create_annotate_push_round_trip(
    registry: RegistryProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    amd = build_image("cli-list", "linux/amd64", (700,))
    arm = build_image("cli-list", "linux/arm/v7", (900,))
    amd_ref = f"{registry.host}/cli/app-amd64:v1"
    arm_ref = f"{registry.host}/cli/app-arm:v1"
    list_ref = f"{registry.host}/cli/app:v1"

    async def seed() -> None:
        async with RegistryClient() as client:
            await push_image(client, amd_ref, amd)
            await push_image(client, arm_ref, arm)

    anyio.run(seed)
    root = str(tmp_path)
    status, out, _ = run_cli(
        capsys, "manifest", "create", list_ref, amd_ref, arm_ref, "--root", root
    )
    assert status == 0, out
    status, _, err = run_cli(capsys, "manifest", "create", list_ref, amd_ref, "--root", root)
    assert status == 1
    assert "--amend" in err
    status, _, _ = run_cli(
        capsys, "manifest", "annotate", list_ref, arm_ref, "--variant", "v6", "--root", root
    )
    assert status == 0
    status, out, _ = run_cli(capsys, "manifest", "push", list_ref, "--root", root, "--purge")
    assert status == 0
    list_digest = out.strip()
    assert list_digest.startswith("sha256:")
    assert not list((tmp_path / "manifests").glob("*.json"))
    # The arm image was annotated as arm/v6: an arm/v7 node may run v6, so it resolves there.
    status, out, _ = run_cli(capsys, "manifest", "inspect", list_ref, "--platform", "linux/arm/v7")
    doc = json.loads(out)
    assert doc["digest"] == list_digest
    assert doc["manifest_digest"] == str(arm.manifest.digest)
    assert doc["platform"] == "linux/arm/v6"
    status, out, _ = run_cli(capsys, "manifest", "inspect", list_ref, "--platform", "linux/amd64")
    assert json.loads(out)["manifest_digest"] == str(amd.manifest.digest)


def test_python_dash_m_entry_point(registry: RegistryProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kubelet_sim", "manifest", "inspect", f"{registry.host}/none/x:y"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "MANIFEST_UNKNOWN" in result.stderr or "NAME_UNKNOWN" in result.stderr


def test_manifest_commands_use_docker_config_credentials_and_inspect_verbose(
    htpasswd_registry: RegistryProcess,
    tls_material: TLSMaterial,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # docker manifest create/push/inspect against a private registry, credentials from a docker
    # config; the list lives in another repository than its images, so every blob is mounted.
    host = htpasswd_registry.host
    hosts = tmp_path / "certs.d"
    (hosts / host).mkdir(parents=True)
    (hosts / host / "hosts.toml").write_text(
        f'server = "https://{host}"\nca = "{tls_material.ca_cert}"\n'
    )
    user, password = next(iter(HTPASSWD_USERS.items()))
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    images = {p: build_image(f"cred-{p}", p, (3_000,)) for p in ("linux/amd64", "linux/arm64")}

    async def seed() -> None:
        async with RegistryClient(hosts_dir=hosts) as client:
            for p, image in images.items():
                tag = p.replace("/", "-")
                ref = f"{host}/src/app:{tag}"
                await push_image(client, ref, image, creds=Credentials(user, password))

    anyio.run(seed)
    common = ["--hosts-dir", str(hosts), "--root", str(tmp_path / "root")]
    creds = ["--docker-config", str(tmp_path / "docker")]
    refs = [f"{host}/src/app:{p.replace('/', '-')}" for p in images]
    listed = f"{host}/lists/app:1"
    status, _, err = run_cli(capsys, "manifest", "create", listed, *refs, *common)
    assert status == 1, "without credentials the private registry refuses"
    assert "401" in err or "credentials" in err
    assert password not in err
    assert run_cli(capsys, "manifest", "create", listed, *refs, *common, *creds)[0] == 0
    status, out, err = run_cli(capsys, "manifest", "push", listed, *common, *creds)
    assert status == 0, err
    status, out, _ = run_cli(capsys, "manifest", "inspect", "--verbose", listed, *common, *creds)
    assert status == 0
    verbose = json.loads(out)
    assert [entry["Ref"] for entry in verbose] == [
        f"{host}/lists/app@{image.manifest.digest}" for image in images.values()
    ]
    assert {f"{e['Descriptor']['platform']['os']}/{e['Descriptor']['platform']['architecture']}"
            for e in verbose} == set(images)  # fmt: skip
    assert [e["SchemaV2Manifest"]["config"]["digest"] for e in verbose] == [
        str(image.config.digest) for image in images.values()
    ]
    status, out, _ = run_cli(capsys, "manifest", "inspect", "-v", refs[0], *common, *creds)
    single = json.loads(out)
    assert single["Ref"] == f"{host}/src/app@{images['linux/amd64'].manifest.digest}"
