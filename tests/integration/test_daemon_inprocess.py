"""The daemon in-process: a poisonous static file, a partly refused apply, and image GC."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from kubelet_sim.config.kubelet import parse_kubelet_config
from kubelet_sim.errors import ConfigError
from kubelet_sim.node.daemon import Daemon, DaemonOptions
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.sim.images import build_image
from kubelet_sim.sim.registry import RegistryProcess
from kubelet_sim.sim.seed import push_image

pytestmark = [pytest.mark.anyio, pytest.mark.registry]


def pod(name: str, image: str) -> str:
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: gc}}\n"
        f"spec: {{containers: [{{name: app, image: '{image}'}}]}}\n"
    )


async def wait_ready(daemon: Daemon, namespace: str, name: str) -> None:
    with anyio.fail_after(30):
        while not (daemon.pod(namespace, name) or {}).get("imagesReady"):  # noqa: ASYNC110
            await anyio.sleep(0.05)


async def test_bad_static_file_and_image_gc(registry: RegistryProcess, tmp_path: Path) -> None:
    images = [f"{registry.host}/gc/app{i}:1.0" for i in range(3)]
    async with RegistryClient() as client:
        for i, ref in enumerate(images):
            await push_image(client, ref, build_image(f"gc-{i}", "linux/amd64", (200_000,)))
    static = tmp_path / "static"
    static.mkdir()
    (static / "poison.yaml").write_text("a: " + "[" * 20_000 + "]" * 20_000 + "\n")
    (static / "good.yaml").write_text(pod("good", images[0]))
    config = parse_kubelet_config(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        f"staticPodPath: {static}\nimageMinimumGCAge: 1s\n"
        "imageGCHighThresholdPercent: 50\nimageGCLowThresholdPercent: 40\n"
    )
    daemon = Daemon(
        DaemonOptions(
            config=config,
            root=tmp_path / "root",
            listen_port=0,
            gc_capacity_bytes=1_000_000,
            node_name="node-1",
        )
    )
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await wait_ready(daemon, "gc", "good-node-1")  # the poisonous file did not stop the daemon
        results = await daemon.apply(
            (pod("one", images[1]) + "---\n" + pod("two", images[2])).encode(), ""
        )
        assert [r["result"] for r in results] == ["created", "created"]
        await wait_ready(daemon, "gc", "one")
        await wait_ready(daemon, "gc", "two")
        assert len(await daemon.images()) == 3
        assert await daemon.delete_pod("gc", "one")
        assert await daemon.delete_pod("gc", "two")
        await anyio.sleep(1.2)  # past imageMinimumGCAge
        result = await daemon.run_image_gc()
        assert result is not None
        left = {i["repository"] for i in await daemon.images()}
        # ~600 KB used of a 1 MB capacity is over 50 %: unused images go until under 40 %,
        # the image of the running pod stays.
        assert f"{registry.host}/gc/app0" in left
        assert len(left) == 1, left
        assert result.bytes_freed > 0
        tg.cancel_scope.cancel()


async def test_static_files_and_api_objects_are_separate_sources(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    image = f"{registry.host}/static/web:1.0"
    async with RegistryClient() as client:
        await push_image(client, image, build_image("static-web", "linux/amd64", (4_000,)))
    static = tmp_path / "static"
    static.mkdir()
    secret = (
        "apiVersion: v1\nkind: Secret\nmetadata: {name: regcred, namespace: gc}\n"
        "stringData: {token: from-the-file}\n"
    )
    (static / "web.yaml").write_text(secret + "---\n" + pod("web", image))
    config = parse_kubelet_config(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        f"staticPodPath: {static}\n"
    )
    daemon = Daemon(
        DaemonOptions(
            config=config,
            root=tmp_path / "root",
            listen_port=0,
            node_name="node-1",
            static_poll_interval=0.05,
        )
    )
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        await wait_ready(daemon, "gc", "web-node-1")
        # The file's Secret never reached the API's objects; the API's own one is kept.
        assert daemon.objects.get_secret("gc", "regcred") is None
        api_secret = secret.replace("from-the-file", "from-the-api")
        assert [r["result"] for r in await daemon.apply(api_secret.encode(), "")] == ["created"]
        api_pod = pod("web", image)  # the same name through the API is another pod
        assert [r["result"] for r in await daemon.apply(api_pod.encode(), "")] == ["created"]
        await wait_ready(daemon, "gc", "web")
        names = sorted(p["name"] for p in daemon.pods())
        assert names == ["web", "web-node-1"]
        with pytest.raises(ConfigError, match="static pod"):
            await daemon.delete_pod("gc", "web-node-1")
        (static / "web.yaml").unlink()
        with anyio.fail_after(10):
            while daemon.pod("gc", "web-node-1") is not None:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        kept = daemon.objects.get_secret("gc", "regcred")
        assert kept is not None
        assert kept.data["token"] == b"from-the-api"
        assert daemon.pod("gc", "web") is not None
        tg.cancel_scope.cancel()


async def test_image_gc_pins_images_records_node_events_and_metrics(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    images = [f"{registry.host}/gcpin/app{i}:1.0" for i in range(3)]
    async with RegistryClient() as client:
        for i, ref in enumerate(images):
            await push_image(client, ref, build_image(f"gcpin-{i}", "linux/amd64", (200_000,)))
    config = parse_kubelet_config(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        "imageMinimumGCAge: 1s\nimageGCHighThresholdPercent: 20\nimageGCLowThresholdPercent: 10\n"
    )
    daemon = Daemon(
        DaemonOptions(
            config=config,
            root=tmp_path / "root",
            listen_port=0,
            gc_capacity_bytes=1_000_000,
            pinned_images=(images[1],),
            node_name="node-1",
        )
    )
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        body = "---\n".join(pod(f"p{i}", ref) for i, ref in enumerate(images))
        await daemon.apply(body.encode(), "")
        for i in range(3):
            await wait_ready(daemon, "gc", f"p{i}")
        for i in (1, 2):
            assert await daemon.delete_pod("gc", f"p{i}")
        await anyio.sleep(1.2)  # past imageMinimumGCAge
        result = await daemon.run_image_gc()
        assert result is not None
        # app2 is freed; app1 is pinned and app0 in use: 10 % of 1 MB cannot be reached.
        assert [f.repo_tags for f in result.freed] == [(images[2],)]
        left = {f"{i['repository']}:{i['tag']}" for i in await daemon.images()}
        assert left == {images[0], images[1]}
        node_events = [
            e for e in daemon.events(None, None) if e["involvedObject"]["kind"] == "Node"
        ]
        assert [e["reason"] for e in node_events] == ["FreeDiskSpaceFailed"]
        assert node_events[0]["involvedObject"]["name"] == "node-1"
        assert node_events[0]["message"].startswith(
            "Failed to garbage collect required amount of images. Attempted to free "
        )
        sample = daemon.registry.get_sample_value
        assert sample("kubelet_image_garbage_collected_total", {"reason": "space"}) == 1
        assert sample("kubelet_runtime_operations_total", {"operation_type": "remove_image"}) == 1
        tg.cancel_scope.cancel()


async def test_without_a_capacity_gc_measures_the_filesystem_the_store_is_on(
    tmp_path: Path,
) -> None:
    # The kubelet's ImageFsInfo: the filesystem's size, and all of its used bytes count.
    daemon = Daemon(
        DaemonOptions(
            config=parse_kubelet_config(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
            ),
            root=tmp_path / "root",
            listen_port=0,
        )
    )
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        assert daemon.store is not None
        capacity, other = await daemon._image_fs(daemon.store)
        stat = os.statvfs(daemon.store.root)
        assert capacity == stat.f_blocks * stat.f_frsize
        used = capacity - stat.f_bavail * stat.f_frsize
        assert abs(other - used) < 64 * 1024 * 1024  # the rest of the disk, give or take writes
        tg.cancel_scope.cancel()
