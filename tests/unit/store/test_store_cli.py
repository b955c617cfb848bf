"""``kubelet-sim images``, ``rmi``, ``fsck`` and ``gc`` against a real store folder."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from pathlib import Path

import anyio
import pytest
from store_fakes import FakeImage, blob_bytes, make_image, pull

from kubelet_sim.cli.commands.images import human_size
from kubelet_sim.cli.commands.store import parse_bytes
from kubelet_sim.cli.main import main
from kubelet_sim.core.digest import Digest
from kubelet_sim.node.paths import NodePaths, default_root
from kubelet_sim.store import Store

BASE = blob_bytes("base", 2_000_000)
BUSYBOX = make_image("busybox", [BASE, blob_bytes("bb", 30_000)])
APP = make_image("app", [BASE, blob_bytes("app", 999_999)])


def populate(root: Path) -> None:
    async def run() -> None:
        async with await Store.open(root, runtime_class_in_image_cri_api=True) as store:
            digest = f"docker.io/library/busybox@{BUSYBOX.manifest_digest}"
            await pull(store, BUSYBOX, tag="docker.io/library/busybox:latest", repo_digest=digest)
            await pull(store, BUSYBOX, tag="docker.io/library/busybox:1.36")
            await pull(
                store, APP, tag=None, repo_digest=f"example.com/app@{APP.manifest_digest}",
                handler="kata",
            )  # fmt: skip

    anyio.run(run)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    # --root names the node's folder; its store is NodePaths(root).store, as for run and pull.
    populate(NodePaths(tmp_path / "root").store)
    return tmp_path / "root"


def short(image: FakeImage) -> str:
    return image.config_digest.hex[:13]


def test_images_table_like_crictl(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["images", "--root", str(root)]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        ["IMAGE", "TAG", "DIGEST", "IMAGE", "ID", "SIZE", "PLATFORM", "RUNTIME", "HANDLER"],
        ["docker.io/library/busybox", "1.36", BUSYBOX.manifest_digest.hex[:13], short(BUSYBOX),
         "2.03MB", "linux/amd64"],
        ["docker.io/library/busybox", "latest", BUSYBOX.manifest_digest.hex[:13], short(BUSYBOX),
         "2.03MB", "linux/amd64"],
        ["example.com/app", "<none>", APP.manifest_digest.hex[:13], short(APP), "3MB",
         "linux/amd64", "kata"],
    ]  # fmt: skip


def test_images_json(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["images", "--root", str(root), "--output", "json"]) == 0
    images = json.loads(capsys.readouterr().out)["images"]
    assert [i["id"] for i in images] == sorted([BUSYBOX.image_id, APP.image_id])
    busybox = next(i for i in images if i["id"] == BUSYBOX.image_id)
    assert busybox["repoTags"] == [
        "docker.io/library/busybox:1.36",
        "docker.io/library/busybox:latest",
    ]
    assert busybox["size"] == BUSYBOX.size
    assert busybox["runtimeHandler"] == ""
    assert busybox["platform"] == "linux/amd64"
    assert busybox["present"] is True


def test_images_no_trunc_and_handler_filter(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["images", "--root", str(root), "--no-trunc", "--runtime-handler", "kata"]) == 0
    out = capsys.readouterr().out
    assert APP.image_id in out
    assert str(APP.manifest_digest) in out
    assert "busybox" not in out


@pytest.mark.parametrize("command", ["images", "rmi", "fsck", "gc"])
def test_help_prints_the_default_root(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert f"default store root: {default_root()}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("busybox:1.36", id="familiar-name"),
        pytest.param("docker.io/library/busybox", id="default-tag"),
        pytest.param(f"busybox@{BUSYBOX.manifest_digest}", id="repo-digest"),
        pytest.param(BUSYBOX.image_id, id="image-id"),
        pytest.param(short(BUSYBOX), id="short-id"),
    ],
)
def test_rmi(root: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rmi", "--root", str(root), name]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "Deleted: docker.io/library/busybox:1.36",
        "Deleted: docker.io/library/busybox:latest",
    ]
    assert main(["images", "--root", str(root)]) == 0
    listing = capsys.readouterr().out
    assert "busybox" not in listing
    assert "example.com/app" in listing
    shared = NodePaths(root).store / "blobs" / "sha256" / Digest.from_bytes(BASE).hex
    assert shared.exists()  # still shared


def test_rmi_with_runtime_handler(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rmi", "--root", str(root), f"example.com/app@{APP.manifest_digest}"]) == 1
    assert "no such image" in capsys.readouterr().err
    args = ["rmi", "--root", str(root), "--runtime-handler", "kata"]
    assert main([*args, f"example.com/app@{APP.manifest_digest}"]) == 0
    assert capsys.readouterr().out == f"Deleted: {APP.image_id}\n"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("nginx", "no such image nginx", id="absent"),
        pytest.param("Bad:Name", "must be lowercase", id="invalid-name"),
    ],
)
def test_rmi_errors(
    root: Path, name: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rmi", "--root", str(root), name, "busybox"]) == 1
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Deleted: docker.io/library/busybox:latest" in captured.out  # the others still go


def test_fsck_exit_status(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fsck", "--root", str(root)]) == 0
    assert "no damage found" in capsys.readouterr().out
    layer = NodePaths(root).store / "blobs" / "sha256" / Digest.from_bytes(BUSYBOX.layers[1]).hex
    data = bytearray(layer.read_bytes())
    data[0] ^= 1
    layer.write_bytes(bytes(data))
    assert main(["fsck", "--root", str(root), "--no-repair", "--output", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["corrupt"] == [str(Digest.from_bytes(BUSYBOX.layers[1]))]
    assert report["affected_images"] == [BUSYBOX.image_id]
    assert report["repaired"] is False
    assert layer.exists()
    assert main(["fsck", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "damage found and repaired" in out
    assert not layer.exists()
    assert main(["fsck", "--root", str(root)]) == 0
    assert main(["images", "--root", str(root), "--all"]) == 0
    listing = capsys.readouterr().out
    assert "damaged" in listing
    assert "STATUS" in listing


def test_gc_frees_by_the_thresholds(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["gc", "--root", str(root), "--image-minimum-gc-age", "0s", "--output", "json"]
    usage = BUSYBOX.size + APP.size - len(BASE)
    assert main([*args, "--capacity", str(usage * 2)]) == 0  # 50%: nothing to do
    assert json.loads(capsys.readouterr().out)["freed"] == []
    assert main([*args, "--capacity", str(usage)]) == 0  # 100%: free down to 80%
    result = json.loads(capsys.readouterr().out)
    # busybox (least recently used) frees only its own 30 kB, the base layer being shared with
    # the app image: the app has to go too.
    assert [(f["id"], f["reason"]) for f in result["freed"]] == [
        (BUSYBOX.image_id, "space"), (APP.image_id, "space")
    ]  # fmt: skip
    assert result["freed"][0]["bytesFreed"] == BUSYBOX.size - len(BASE)
    assert result["usageAfter"] == 0
    assert result["bytesToFree"] == usage * 20 // 100


def test_gc_reports_when_it_cannot_free_enough(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gc", "--root", str(root), "--capacity", "1M"]) == 1  # all too young (2m)
    captured = capsys.readouterr()
    assert "Warning FreeDiskSpaceFailed: Failed to garbage collect required amount" in captured.err
    assert "usage 3.03MB -> 3.03MB of 1MB" in captured.out


@pytest.mark.parametrize(
    ("extra", "status", "stream", "text"),
    [
        pytest.param(["--image-gc-high-threshold", "100"], 0, "out", "disabled", id="disabled"),
        pytest.param(
            ["--image-gc-low-threshold", "90"], 1, "err", "must be less than", id="bad-thresholds"
        ),
        pytest.param(
            ["--image-maximum-gc-age", "1m"], 1, "err", "must be greater than", id="bad-ages"
        ),
    ],
)
def test_gc_configuration(
    root: Path, extra: list[str], status: int, stream: str, text: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert main(["gc", "--root", str(root), *extra]) == status
    assert text in getattr(capsys.readouterr(), stream)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1048576", 1 << 20, id="bytes"),
        pytest.param("10Gi", 10 << 30, id="gibibytes"),
        pytest.param("500M", 500_000_000, id="megabytes"),
        pytest.param("2kB", 2000, id="kilobytes-with-b"),
    ],
)
def test_parse_bytes(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize(
    ("size", "text"),
    [
        pytest.param(0, "0B", id="zero"),
        pytest.param(999, "999B", id="bytes"),
        pytest.param(2_030_654, "2.03MB", id="mb"),
        pytest.param(772_000, "772kB", id="kb"),
        pytest.param(999_999, "1e+03kB", id="go-units-quirk"),
        pytest.param(5_600_000_000, "5.6GB", id="gb"),
    ],
)
def test_human_size_matches_go_units(size: int, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize("command", ["images", "fsck", "gc", "rmi"])
def test_a_root_with_a_store_of_the_old_layout_is_refused_by_name(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before NodePaths, `images --root D` kept the store in D itself.
    populate(tmp_path)
    argv = [command, "--root", str(tmp_path)] + (["busybox"] if command == "rmi" else [])
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "store.db") in err
    assert str(NodePaths(tmp_path).store) in err
    assert not NodePaths(tmp_path).store.exists(), "no empty store is started beside the old one"


def test_the_old_layout_is_recognised_by_the_store_s_own_database_name() -> None:
    from kubelet_sim.node.paths import LEGACY_STORE_DB
    from kubelet_sim.store.store import DB_NAME

    # node.paths cannot import the store (the CLI's start-up would load sqlite3): same literal.
    assert LEGACY_STORE_DB == DB_NAME


@pytest.mark.parametrize("output", ["text", "json"])
def test_fsck_reports_what_the_open_time_recovery_used_to_repair_silently(
    root: Path, output: str, capsys: pytest.CaptureFixture[str]
) -> None:
    layer = Digest.from_bytes(BUSYBOX.layers[1])
    (NodePaths(root).store / "blobs" / "sha256" / layer.hex).unlink()
    assert main(["fsck", "--root", str(root), "--output", output]) == 1
    out = capsys.readouterr().out
    if output == "json":
        report = json.loads(out)
        assert report["missing"] == [str(layer)]
        assert report["affected_images"] == [BUSYBOX.image_id]
        assert report["repaired"] is True
    else:
        assert f"missing blob: {layer}" in out
        assert f"image marked not present (the next pull repairs it): {BUSYBOX.image_id}" in out
        assert "damage found and repaired" in out
        assert "no damage found" not in out
    assert main(["fsck", "--root", str(root)]) == 0  # repaired: nothing new
    assert "no damage found" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["images"], id="images"),
        pytest.param(["fsck", "--no-repair"], id="fsck-no-repair"),
        pytest.param(["fsck"], id="fsck"),
        pytest.param(["gc"], id="gc"),
        pytest.param(["rmi", "busybox"], id="rmi"),
    ],
)
def test_a_root_without_a_store_is_refused_and_left_alone(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "rooot"
    assert main([*argv, "--root", str(typo)]) == 1
    err = capsys.readouterr().err
    assert str(typo) in err
    assert "holds no image store" in err
    assert not typo.exists()


def test_images_and_fsck_no_repair_run_beside_a_writer(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = NodePaths(root).store
    fd = os.open(store / "lock", os.O_RDWR)
    conn = sqlite3.connect(store / "store.db", isolation_level=None)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a daemon or a pull holds the store
        os.pwrite(fd, b"pid 4242\n", 0)
        conn.execute("BEGIN IMMEDIATE")  # and is writing
        assert main(["images", "--root", str(root), "--output", "json"]) == 0
        images = json.loads(capsys.readouterr().out)["images"]
        assert sorted(i["id"] for i in images) == sorted([BUSYBOX.image_id, APP.image_id])
        assert main(["fsck", "--root", str(root), "--no-repair"]) == 0
        assert "no damage found" in capsys.readouterr().out
    finally:
        conn.close()
        os.close(fd)
