"""The engine with the real runtime (registry client + store) against the real registry."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry

from kubelet_sim.cli.main import main
from kubelet_sim.config.kubelet import KubeletConfiguration
from kubelet_sim.core.backoff import Backoff
from kubelet_sim.core.platforms import parse_platform
from kubelet_sim.core.pods import PodRef, PodSpec, PullRequest
from kubelet_sim.core.policy import PullPolicy
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.engine.workers import EngineSettings
from kubelet_sim.errors import NotAnImageError
from kubelet_sim.node.builder import Node
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.transport import Transport, TransportSettings
from kubelet_sim.runtime.images import ImageService
from kubelet_sim.sim.images import Blob, Image, build_image, build_multiarch
from kubelet_sim.sim.registry import RegistryFactory, RegistryProcess
from kubelet_sim.sim.seed import push_image, push_index
from kubelet_sim.store import Store, fsck
from kubelet_sim.telemetry.events import EventRecorder
from kubelet_sim.telemetry.metrics import PullMetrics

pytestmark = [pytest.mark.anyio, pytest.mark.registry]
_n = itertools.count()

FAST = TransportSettings(backoff_initial=0.05, backoff_max=0.1, max_attempts=2, stall_timeout=5)


class Answers:
    """A transport observer keeping the method and status of every registry answer."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int | None]] = []

    def registry_response(self, method: str, status: int | None, duration: float) -> None:
        self.seen.append((method, status))

    def registry_retry(self, reason: str) -> None:
        pass


@asynccontextmanager
async def runtime(
    root: Path, platform: str = "linux/amd64", *, observer: Answers | None = None
) -> AsyncIterator[ImageService]:
    async with (
        await Store.open(root) as store,
        RegistryClient(Transport(settings=FAST, observer=observer)) as client,
    ):
        yield ImageService(client, store, platform=parse_platform(platform))


async def seed(ref: str, index_or_image: object) -> None:
    async with RegistryClient() as client:
        if hasattr(index_or_image, "index"):
            await push_index(client, ref, index_or_image)  # type: ignore[arg-type]
        else:
            await push_image(client, ref, index_or_image)  # type: ignore[arg-type]


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x"])
async def test_pull_every_platform_of_a_multiarch_image(
    registry: RegistryProcess, tmp_path: Path, platform: str
) -> None:
    index = build_multiarch("engine-multi")
    ref = f"{registry.host}/engine/multi:v1"
    await seed(ref, index)
    async with runtime(tmp_path, platform) as service:
        pulled = await service.pull_image(parse_normalized(ref))
        image = index.image_for(platform)
        assert pulled.image_ref == str(image.config.digest)
        assert pulled.manifest_digest == str(image.manifest.digest)
        assert pulled.repo_digest == f"{registry.host}/engine/multi@{index.index.digest}"
        assert pulled.platform == platform
        record = await service.image_status(ref)
        assert record is not None
        assert record.image_id == str(image.config.digest)
        report = await fsck(service.store)
        assert report.clean


async def test_always_with_unchanged_tag_downloads_no_blob_and_moved_tag_repulls(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    ref = f"{registry.host}/engine/moving:v{next(_n)}"
    first = build_image("moving-1", "linux/amd64", (20_000, 30_000))
    second = build_image("moving-2", "linux/amd64", (25_000,))
    await seed(ref, first)
    async with runtime(tmp_path) as service:
        one = await service.pull_image(parse_normalized(ref))
        assert one.bytes_downloaded == sum(layer.size for layer in first.layers)
        again = await service.pull_image(parse_normalized(ref))
        assert again.bytes_downloaded == 0
        assert again.image_ref == one.image_ref
        await seed(ref, second)
        moved = await service.pull_image(parse_normalized(ref))
        assert moved.image_ref == str(second.config.digest)
        assert moved.bytes_downloaded == second.layers[0].size
        record = await service.image_status(ref)
        assert record is not None
        assert record.image_id == str(second.config.digest)
        old = await service.image_status(one.image_ref)
        assert old is not None
        assert ref not in old.repo_tags  # the tag moved to the new image


async def test_a_repeated_pull_of_a_present_image_sends_only_a_head(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    """What Always costs when the tag has not moved: containerd HEADs, the rest is in its store."""
    ref = f"{registry.host}/engine/head-only:v1"
    await seed(ref, build_multiarch("head-only", platforms=("linux/amd64", "linux/arm64")))
    answers = Answers()
    async with runtime(tmp_path, observer=answers) as service:
        first = await service.pull_image(parse_normalized(ref))
        assert ("GET", 200) in answers.seen
        answers.seen.clear()
        again = await service.pull_image(parse_normalized(ref))
    assert again.image_ref == first.image_ref
    assert answers.seen == [("HEAD", 200)]


async def test_tag_and_digest_together_records_no_tag(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    """containerd's CRI parses name:tag@digest with ParseDockerRef, which drops the tag."""
    current = build_image("tag-and-digest-current", "linux/amd64", (1000,))
    pinned = build_image("tag-and-digest-pinned", "linux/amd64", (1200,))
    name = f"{registry.host}/engine/both"
    await seed(f"{name}:old", pinned)
    await seed(f"{name}:v1", current)
    async with runtime(tmp_path) as service:
        pulled = await service.pull_image(parse_normalized(f"{name}:v1@{pinned.manifest.digest}"))
        assert pulled.image_ref == str(pinned.config.digest)
        record = await service.image_status(f"{name}@{pinned.manifest.digest}")
        assert record is not None
        assert record.repo_tags == ()
        assert record.repo_digests == (f"{name}@{pinned.manifest.digest}",)
        assert await service.image_status(f"{name}:v1") is None  # v1 is the registry's, not this
        again = await service.pull_image(parse_normalized(f"{name}:v1"))
        assert again.image_ref == str(current.config.digest)


async def test_an_oci_artifact_is_refused_and_nothing_is_stored(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    empty = Blob(mt.OCI_EMPTY, b"{}")
    payload = Blob("application/vnd.example.payload", b"an artifact, not an image")
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": "application/vnd.example.thing",
        "config": empty.descriptor(),
        "layers": [payload.descriptor()],
    }
    artifact = Image(Blob(mt.OCI_MANIFEST, json.dumps(manifest).encode()), empty, (payload,), {})
    ref = f"{registry.host}/engine/artifact:v1"
    await seed(ref, artifact)
    async with runtime(tmp_path) as service:
        with pytest.raises(NotAnImageError, match="mismatched image rootfs and manifest layers"):
            await service.pull_image(parse_normalized(ref))
        assert await service.store.list_images(include_absent=True) == []
        assert await service.store.blob_refcounts() == {}


async def test_identical_concurrent_pulls_share_one_registry_pull(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    ref = f"{registry.host}/engine/dedup:v1"
    await seed(ref, build_image("dedup", "linux/amd64", (200_000, 100_000)))
    async with runtime(tmp_path) as service:
        results = []

        async def one() -> None:
            results.append(await service.pull_image(parse_normalized(ref)))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
        assert service.registry_pulls == 1
        assert service.shared_pulls == 4
        assert len({r.image_ref for r in results}) == 1


async def test_registry_stopped_mid_pull_then_back_recovers_with_store_intact(
    registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    reg = registry_factory()
    ref = f"{reg.host}/engine/outage:v1"
    # Layers much larger than loopback socket buffers, so a kill really cuts the download.
    image = build_image(
        "outage", "linux/amd64", (30_000_000, 30_000_000, 30_000_000), compress=False
    )
    await seed(ref, image)
    stopped = anyio.Event()

    def on_progress(_image: str, _desc: object, received: int) -> None:
        if not stopped.is_set():
            reg.kill()  # the registry goes away in the middle of a layer
            stopped.set()

    recorder = EventRecorder(spam_filter=False)
    metrics = PullMetrics(CollectorRegistry())
    async with runtime(tmp_path / "store") as service:
        node = Node.build(
            KubeletConfiguration.default(),
            service,
            recorder,
            metrics,
            settings=EngineSettings(resync_period=0.2),
            backoff=Backoff(0.5, 2.0),
            progress=on_progress,
        )
        spec = PodSpec(
            PodRef("default", "outage", "uid-outage"),
            containers=(
                PullRequest(
                    PodRef("default", "outage", "uid-outage"), "app", ref, PullPolicy.IF_NOT_PRESENT
                ),
            ),
        )
        async with node.running():
            await node.engine.submit(spec)
            with anyio.fail_after(30):
                await stopped.wait()
                state = node.engine.pod("uid-outage")
                assert state is not None
                while state.containers["app"].reason != "ErrImagePull":  # noqa: ASYNC110 - polls state
                    await anyio.sleep(0.05)
            assert not list((tmp_path / "store" / "blobs").rglob("*.tmp"))
            await anyio.to_thread.run_sync(reg.start)
            with anyio.fail_after(30):
                state = await node.engine.wait_ready("uid-outage")
        assert state.containers["app"].image_id == str(image.config.digest)
        assert state.containers["app"].attempts >= 2
        reasons = [e.reason for e in recorder.events()]
        assert "Failed" in reasons
        assert "Pulled" in reasons
        report = await fsck(service.store)
        assert report.clean, report.to_dict()


def test_pull_cli_json_then_cache_hit(
    registry: RegistryProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = build_multiarch("cli-pull", platforms=("linux/amd64", "linux/arm64"))
    ref = f"{registry.host}/engine/cli:1.0"
    anyio.run(seed, ref, index)
    argv = ["pull", ref, "--root", str(tmp_path), "--platform", "linux/arm64", "--output", "json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    image = index.image_for("linux/arm64")
    assert doc["pulled"] is True
    assert doc["ref"] == ref
    assert doc["image_id"] == str(image.config.digest)
    assert doc["manifest_digest"] == str(image.manifest.digest)
    assert doc["repo_digest"] == f"{registry.host}/engine/cli@{index.index.digest}"
    assert doc["platform"] == "linux/arm64"
    assert [e["reason"] for e in doc["events"]] == ["Pulling", "Pulled"]
    assert doc["events"][1]["message"].startswith(f'Successfully pulled image "{ref}" in ')
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pulled"] is False
    # The pull command builds its node with the daemon's builder, KEP-2535 verifier included.
    assert doc["events"][0]["message"] == (
        f'Container image "{ref}" already present on machine and can be accessed by the pod'
    )
    missing = [
        "pull",
        f"{registry.host}/engine/nothing:1",
        "--root",
        str(tmp_path),
        "--output",
        "json",
    ]
    assert main(missing) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["reason"] == "ErrImagePull"
    assert "not found" in doc["message"].lower() or "unknown" in doc["message"].lower()
    never = [
        "pull",
        f"{registry.host}/engine/nothing:1",
        "--root",
        str(tmp_path),
        "--policy",
        "Never",
    ]
    assert main([*never, "--output", "json"]) == 1
    assert json.loads(capsys.readouterr().out)["reason"] == "ErrImageNeverPull"


async def test_pull_records_are_written_before_the_image_is_present(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    """KEP-2535: a present image without records counts as preloaded, so records must come first."""
    ref = f"{registry.host}/engine/records:v1"
    image = build_image("records", "linux/amd64", (50_000,))
    await seed(ref, image)
    calls: list[tuple[str, bool]] = []
    async with runtime(tmp_path) as service:

        async def on_resolved(image_id: str, fingerprint: str) -> None:
            calls.append((image_id, await service.image_status(ref) is not None))

        pulled = await service.pull_image(parse_normalized(ref), on_resolved=on_resolved)
    assert calls == [(pulled.image_ref, False)]


def test_ten_simultaneous_pull_commands_on_one_root_all_succeed(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    """One writer at a time: the others wait for the store instead of failing."""
    refs = [f"{registry.host}/engine/many-{i}:v1" for i in range(10)]
    for i, ref in enumerate(refs):
        anyio.run(seed, ref, build_image(f"many-{i}", "linux/amd64", (30_000,)))
    root = tmp_path / "root"
    argv = [sys.executable, "-m", "kubelet_sim", "pull", "--root", str(root), "--output", "json"]
    procs = [
        subprocess.Popen([*argv, ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for ref in refs
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 10, outputs
    assert any("store.waiting_for_lock" in err for _, err in outputs)  # said so, and waited
    listed = subprocess.run(
        [sys.executable, "-m", "kubelet_sim", "images", "--root", str(root), "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    tags = {t for image in json.loads(listed.stdout)["images"] for t in image["repoTags"]}
    assert tags == set(refs)
