"""Safe layer unpacking, whiteouts, snapshots and container root folders (kubelet_sim.runtime.rootfs).

Layers are tars built in memory. Every hostile case runs against a root inside ``tmp_path`` next
to an ``outside`` folder the entries aim at; the test asserts the RootfsError names the layer and
the entry and that nothing outside the root changed.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio
import pytest

from kubelet_sim.core.digest import Digest
from kubelet_sim.errors import RootfsError
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.runtime.rootfs import (
    PARTIAL,
    ContainerRootfs,
    Layer,
    RootfsMode,
    Snapshotter,
    apply_layer,
    default_mode,
    layer_compression,
    open_in_root,
)
from kubelet_sim.sim.images import canonical_json
from kubelet_sim.store import BlobRef, ImageRecord, Store

AS_ROOT = os.geteuid() == 0

# -- building layers -----------------------------------------------------------------------

Entry = tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]


def file(name: str, data: bytes = b"x", mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, gid, 1_000_000
    return (info, data)


def folder(name: str, mode: int = 0o755) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 1_000_000
    return info


def symlink(name: str, target: str) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def hardlink(name: str, target: str) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info


def special(name: str, kind: bytes) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor, info.mode = kind, 1, 3, 0o666
    return info


def tar_bytes(entries: Sequence[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            if isinstance(entry, tuple):
                archive.addfile(entry[0], io.BytesIO(entry[1]))
            else:
                archive.addfile(entry)
    return buffer.getvalue()


def layer(*entries: Entry, media_type: str = mt.OCI_LAYER_GZIP) -> tuple[Layer, bytes]:
    tar = tar_bytes(entries)
    data = tar if media_type == mt.OCI_LAYER else gzip.compress(tar, mtime=0)
    return Layer(Digest.from_bytes(data), media_type, len(data)), data


def apply_all(root: Path, *layers: tuple[Layer, bytes]) -> None:
    for desc, data in layers:
        apply_layer(root, io.BytesIO(data), desc, owner="sha256:test")


def tree(root: Path) -> dict[str, str]:
    """Every entry below ``root``: ``dir``, ``file:<content>``, ``link:<target>`` or ``fifo``."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                out[rel] = f"link:{os.readlink(path)}"
            elif stat.S_ISDIR(mode):
                out[rel] = "dir"
            elif stat.S_ISFIFO(mode):
                out[rel] = "fifo"
            else:
                out[rel] = f"file:{path.read_bytes().decode()}"
    return out


@dataclass(frozen=True, slots=True)
class World:
    root: Path
    outside: Path


@pytest.fixture
def world(tmp_path: Path) -> World:
    """``tmp/a/root`` to unpack into, ``tmp/outside/passwd`` for escapes to aim at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("host")
    root = tmp_path / "a" / "root"
    root.mkdir(parents=True)
    return World(root, outside)


def outside_state(w: World) -> dict[str, str]:
    base = w.root.parent.parent
    return {k: v for k, v in tree(base).items() if not k.startswith("a/root/") and k != "a/root"}


# -- hostile layers --------------------------------------------------------------------------

Hostile = Callable[[World], tuple[list[Entry], str]]
"""A case: (the layer's entries, the entry the error must name)."""

HOSTILE: list[tuple[str, Hostile]] = [
    ("dotdot", lambda w: ([file("../x")], "../x")),
    ("dotdot-inside-path", lambda w: ([file("a/../../x")], "a/../../x")),
    ("dotdot-to-outside", lambda w: ([file("../../outside/passwd", b"pwned")], "../../outside")),
    ("absolute", lambda w: ([file(f"{w.outside}/passwd", b"pwned")], f"{w.outside}/passwd")),
    ("absolute-etc", lambda w: ([file("/etc/x")], "/etc/x")),
    (
        "symlink-to-slash-then-write-through",
        lambda w: ([symlink("a", "/"), file(f"a{w.outside}/passwd", b"pwned")], "a/"),
    ),
    (
        "symlink-to-outside-then-write-through",
        lambda w: ([symlink("a", str(w.outside)), file("a/passwd", b"pwned")], "a/passwd"),
    ),
    (
        "symlink-to-dotdot-dotdot-then-write-through",
        lambda w: ([symlink("b", "../.."), file("b/outside/passwd", b"pwned")], "b/outside"),
    ),
    (
        "symlink-chain-leaving",
        lambda w: ([symlink("a", "b"), symlink("b", "c/../.."), file("a/x")], "a/x"),
    ),
    (
        "symlink-deep-dotdot",
        lambda w: ([folder("d/"), symlink("d/up", "../../.."), file("d/up/outside/y")], "d/up"),
    ),
    ("symlink-loop", lambda w: ([symlink("a", "a"), file("a/x")], "a/x")),
    (
        "folder-through-symlink",
        lambda w: ([symlink("d", str(w.outside)), folder("d/sub/")], "d/sub"),
    ),
    (
        "hardlink-dotdot-outside",
        lambda w: ([hardlink("h", "../../outside/passwd")], "h"),
    ),
    ("hardlink-absolute", lambda w: ([hardlink("h", f"{w.outside}/passwd")], "h")),
    (
        "hardlink-through-symlink",
        lambda w: ([symlink("s", str(w.outside)), hardlink("h", "s/passwd")], "h"),
    ),
    ("hardlink-missing", lambda w: ([hardlink("h", "nope")], "h")),
    (
        "whiteout-through-symlink",
        lambda w: ([symlink("s", str(w.outside)), file("s/.wh.passwd", b"")], "s/.wh.passwd"),
    ),
    (
        "opaque-through-symlink",
        lambda w: ([symlink("s", "../../outside"), file("s/.wh..wh..opq", b"")], "s/.wh..wh.."),
    ),
    ("file-as-parent", lambda w: ([file("f"), file("f/x")], "f/x")),
]


@pytest.mark.parametrize("case", [c for _, c in HOSTILE], ids=[i for i, _ in HOSTILE])
def test_hostile_entry_is_refused_naming_layer_and_entry(world: World, case: Hostile) -> None:
    entries, named = case(world)
    before = outside_state(world)
    desc, data = layer(*entries)
    with pytest.raises(RootfsError) as caught:
        apply_all(world.root, (desc, data))
    assert str(desc.digest) in caught.value.message
    assert f"entry {named}" in caught.value.message.replace("'", "")
    assert outside_state(world) == before
    assert (world.outside / "passwd").read_text() == "host"


# -- what layers make -------------------------------------------------------------------------

NORMAL: list[tuple[str, list[list[Entry]], dict[str, str]]] = [
    (
        "whiteout-removes-lower-file",
        [[folder("etc/"), file("etc/a", b"1"), file("etc/b", b"2")], [file("etc/.wh.a", b"")]],
        {"etc": "dir", "etc/b": "file:2"},
    ),
    (
        "whiteout-removes-lower-folder",
        [[folder("d/"), file("d/f")], [file(".wh.d", b"")]],
        {},
    ),
    (
        "whiteout-spares-the-same-layer",
        [[file("a", b"old")], [file("a", b"new"), file(".wh.a", b"")]],
        {"a": "file:new"},
    ),
    (
        "whiteout-of-nothing",
        [[file("a")], [file("missing/.wh.x", b""), file(".wh.nope", b"")]],
        {"a": "file:x"},
    ),
    (
        "opaque-clears-lower-folder",
        [
            [folder("d/"), file("d/old"), folder("d/sub/"), file("d/sub/deep")],
            [folder("d/"), file("d/.wh..wh..opq", b""), file("d/new", b"n")],
        ],
        {"d": "dir", "d/new": "file:n"},
    ),
    (
        "opaque-listed-after-the-new-entries",
        [
            [folder("d/"), file("d/old"), folder("d/sub/"), file("d/sub/old")],
            [folder("d/sub/"), file("d/sub/new", b"n"), file("d/.wh..wh..opq", b"")],
        ],
        {"d": "dir", "d/sub": "dir", "d/sub/new": "file:n"},
    ),
    (
        "file-replaced-by-folder",
        [[file("x", b"f")], [folder("x/"), file("x/y", b"y")]],
        {"x": "dir", "x/y": "file:y"},
    ),
    (
        "folder-replaced-by-symlink",
        [[folder("d/"), file("d/f")], [symlink("d", "e")]],
        {"d": "link:e"},
    ),
    (
        "symlink-replaced-by-file-not-followed",
        [[folder("t/"), symlink("l", "t/f")], [file("l", b"mine")]],
        {"t": "dir", "l": "file:mine"},
    ),
    (
        "folder-over-folder-merges",
        [[folder("d/"), file("d/a", b"a")], [folder("d/"), file("d/b", b"b")]],
        {"d": "dir", "d/a": "file:a", "d/b": "file:b"},
    ),
    (
        "in-root-symlink-followed-for-parents",
        [[folder("usr/lib/"), symlink("lib", "usr/lib")], [file("lib/x", b"x")]],
        {"usr": "dir", "usr/lib": "dir", "usr/lib/x": "file:x", "lib": "link:usr/lib"},
    ),
    (
        "relative-dotdot-symlink-inside",
        [[folder("a/b/"), folder("c/"), symlink("a/b/up", "../../c")], [file("a/b/up/z", b"z")]],
        {"a": "dir", "a/b": "dir", "a/b/up": "link:../../c", "c": "dir", "c/z": "file:z"},
    ),
    (
        "symlinks-that-leave-are-kept-as-links",
        [[symlink("root", "/"), symlink("up", "../.."), symlink("etc", "/etc")]],
        {"root": "link:/", "up": "link:../..", "etc": "link:/etc"},
    ),
    (
        "missing-parents-are-made",
        [[file("a/b/c", b"c")]],
        {"a": "dir", "a/b": "dir", "a/b/c": "file:c"},
    ),
    (
        "devices-skipped-fifo-kept",
        [
            [special("dev/null", tarfile.CHRTYPE), special("sda", tarfile.BLKTYPE)],
            [special("pipe", tarfile.FIFOTYPE)],
        ],
        {"pipe": "fifo"},
    ),
    (
        "hardlink-inside",
        [[file("a", b"same")], [hardlink("b", "a")]],
        {"a": "file:same", "b": "file:same"},
    ),
    (
        "aufs-metadata-skipped",
        [[folder(".wh..wh.plnk/"), file(".wh..wh.aufs", b""), file("a")]],
        {"a": "file:x"},
    ),
]


@pytest.mark.parametrize(
    ("layers", "expected"), [(c[1], c[2]) for c in NORMAL], ids=[c[0] for c in NORMAL]
)
def test_layers_make_the_expected_tree(
    world: World, layers: list[list[Entry]], expected: dict[str, str]
) -> None:
    apply_all(world.root, *(layer(*entries) for entries in layers))
    assert tree(world.root) == expected


def test_hardlink_shares_the_inode(world: World) -> None:
    apply_all(world.root, layer(file("a"), hardlink("b", "./a")))
    assert (world.root / "a").stat().st_ino == (world.root / "b").stat().st_ino


def test_modes_times_and_symlinks_are_kept(world: World) -> None:
    apply_all(
        world.root,
        layer(
            folder("bin/", 0o755),
            file("bin/busybox", b"elf", 0o4755),
            symlink("bin/sh", "busybox"),
            folder("tmp/", 0o1777),
            folder("ro/", 0o555),
        ),
        layer(file("ro/later", b"l")),  # a read-only folder still takes the next layer
    )
    busybox = (world.root / "bin/busybox").stat()
    assert stat.S_IMODE(busybox.st_mode) == (0o4755 if AS_ROOT else 0o755)
    assert busybox.st_mtime == 1_000_000
    assert os.readlink(world.root / "bin/sh") == "busybox"
    assert stat.S_IMODE((world.root / "tmp").stat().st_mode) & 0o1777 == 0o1777
    assert (world.root / "ro/later").read_bytes() == b"l"


@pytest.mark.skipif(not AS_ROOT, reason="ownership is only kept when unpacking as root")
def test_ownership_is_kept_as_root(world: World) -> None:
    apply_all(world.root, layer(file("owned", uid=1234, gid=5678), symlink("l", "owned")))
    info = (world.root / "owned").stat()
    assert (info.st_uid, info.st_gid) == (1234, 5678)


@pytest.mark.parametrize(
    "media_type",
    [mt.OCI_LAYER, mt.OCI_LAYER_GZIP, mt.DOCKER_LAYER_GZIP],
    ids=["tar", "oci-gzip", "docker-gzip"],
)
def test_layer_media_types(world: World, media_type: str) -> None:
    apply_all(world.root, layer(file("f", b"ok"), media_type=media_type))
    assert tree(world.root) == {"f": "file:ok"}


@pytest.mark.parametrize(
    ("media_type", "named"),
    [
        (mt.OCI_LAYER_ZSTD, mt.OCI_LAYER_ZSTD),
        ("application/vnd.example.layer+lz4", "application/vnd.example.layer+lz4"),
        (mt.OCI_CONFIG, mt.OCI_CONFIG),
    ],
    ids=["zstd-without-compression-zstd", "unknown", "not-a-layer"],
)
def test_unusable_media_types_are_named(media_type: str, named: str) -> None:
    try:
        import compression.zstd  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        pass
    else:
        if media_type == mt.OCI_LAYER_ZSTD:
            pytest.skip("this Python has compression.zstd")
    with pytest.raises(RootfsError) as caught:
        layer_compression(media_type, "sha256:" + "a" * 64)
    assert named in caught.value.message


Mangle = Callable[[Layer, bytes], tuple[Layer, bytes]]


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (lambda d, data: (Layer(Digest.from_bytes(b"other"), d.media_type, d.size), data), "fsck"),
        (lambda d, data: (Layer(d.digest, d.media_type, d.size + 1), data), "run fsck"),
        (lambda d, data: (d, b"not gzip at all"), "not a readable"),
        (lambda d, data: (d, data[: len(data) // 2]), "not a readable"),
        (lambda d, data: (d, data[:-1] + bytes([data[-1] ^ 1])), "not a readable"),
    ],
    ids=["digest-mismatch", "size-mismatch", "not-gzip", "truncated", "bad-gzip-trailer"],
)
def test_corrupt_layers_are_refused(world: World, mangle: Mangle, expected: str) -> None:
    desc, data = mangle(*layer(file("f", b"payload" * 100)))
    with pytest.raises(RootfsError) as caught:
        apply_layer(world.root, io.BytesIO(data), desc)
    assert str(desc.digest) in caught.value.message
    assert expected in caught.value.message


@pytest.mark.parametrize(
    ("entries", "path", "expected"),
    [
        ([folder("etc/"), file("etc/passwd", b"root")], "/etc/passwd", b"root"),
        (
            [file("real", b"r"), folder("etc/"), symlink("etc/passwd", "../real")],
            "etc/passwd",
            b"r",
        ),
        ([folder("etc/"), symlink("etc/passwd", "/etc/passwd")], "/etc/passwd", None),
        ([folder("etc/"), symlink("etc/passwd", "../../../outside/passwd")], "etc/passwd", None),
        ([symlink("etc", "/etc")], "/etc/passwd", None),
        ([folder("etc/passwd/")], "/etc/passwd", None),
        ([], "/etc/passwd", None),
    ],
    ids=[
        "plain",
        "relative-link",
        "absolute-link",
        "dotdot-link",
        "linked-parent",
        "folder",
        "none",
    ],
)
def test_open_in_root_never_leaves_the_root(
    world: World, entries: list[Entry], path: str, expected: bytes | None
) -> None:
    if entries:
        apply_all(world.root, layer(*entries))
    opened = open_in_root(world.root, path)
    if expected is None:
        assert opened is None
    else:
        assert opened is not None
        with opened:
            assert opened.read() == expected


# -- snapshots ------------------------------------------------------------------------------


async def commit(store: Store, layers: Sequence[tuple[Layer, bytes]], seed: str = "") -> str:
    """Commit an image of ``layers`` into ``store``; its image id."""
    config = canonical_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [str(d.digest) for d, _ in layers]},
            "config": {"Labels": {"seed": seed}},
        }
    )
    config_ref = await store.put_blob(config)
    for _, data in layers:
        await store.put_blob(data)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {
                "mediaType": mt.OCI_CONFIG,
                "digest": str(config_ref.digest),
                "size": len(config),
            },
            "layers": [
                {"mediaType": d.media_type, "digest": str(d.digest), "size": d.size}
                for d, _ in layers
            ],
        }
    )
    manifest_ref = await store.put_blob(manifest)
    record = await store.commit_image(
        manifest_ref.digest,
        config_ref.digest,
        [BlobRef(d.digest, d.size) for d, _ in layers],
        repo_tag=None,
        repo_digest=None,
        platform="linux/amd64",
    )
    return record.image_id


@asynccontextmanager
async def opened(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path / "store") as store:
        yield store


BASE = [
    layer(folder("bin/"), file("bin/tool", b"v1", 0o755), symlink("bin/sh", "tool")),
    layer(file("bin/tool", b"v2", 0o755), folder("etc/"), file("etc/conf", b"c")),
]


class GatedContent:
    """The store, with ``open_blob`` held until :attr:`gate` is set."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = anyio.Event()
        self.opens = 0

    async def lookup(self, ref: str, runtime_handler: str = "") -> ImageRecord | None:
        return await self.store.lookup(ref, runtime_handler)

    async def read_blob(self, digest: Digest, *, max_size: int = 16 << 20) -> bytes:
        return await self.store.read_blob(digest, max_size=max_size)

    async def open_blob(self, digest: Digest) -> BinaryIO:
        self.opens += 1
        await self.gate.wait()
        return await self.store.open_blob(digest)


@pytest.mark.anyio
async def test_snapshot_unpacks_layers_in_order_once(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        image = await commit(store, BASE)
        snapshotter = Snapshotter(tmp_path / "rt", store)
        path = await snapshotter.snapshot(image)
        assert tree(path) == {
            "bin": "dir",
            "bin/tool": "file:v2",
            "bin/sh": "link:tool",
            "etc": "dir",
            "etc/conf": "file:c",
        }
        assert await snapshotter.snapshot(image) == path
        assert snapshotter.statistics().unpacked == 1


@pytest.mark.anyio
async def test_concurrent_snapshots_of_one_image_unpack_once(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        image = await commit(store, BASE)
        content = GatedContent(store)
        snapshotter = Snapshotter(tmp_path / "rt", content)
        paths: list[Path] = []

        async def one() -> None:
            paths.append(await snapshotter.snapshot(image))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(one)
                # SingleFlight has no "joined" event to wait for: poll its counters.
                while snapshotter.statistics().shared < 4:  # noqa: ASYNC110
                    await anyio.sleep(0.001)
                content.gate.set()
        assert len(set(paths)) == 1
        assert content.opens == len(BASE)
        stats = snapshotter.statistics()
        assert (stats.unpacked, stats.shared, stats.unpacking) == (1, 4, 0)


@pytest.mark.anyio
async def test_a_refused_layer_leaves_no_snapshot_and_no_partial(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        bad = layer(file("ok"), symlink("s", "/"), file("s/etc/evil"))
        image = await commit(store, [BASE[0], bad])
        snapshotter = Snapshotter(tmp_path / "rt", store)
        with pytest.raises(RootfsError) as caught:
            await snapshotter.snapshot(image)
        assert str(bad[0].digest) in caught.value.message
        assert "s/etc/evil" in caught.value.message
        assert not snapshotter.snapshot_path(image).exists()
        assert list(snapshotter.snapshots.iterdir()) == []


@pytest.mark.anyio
async def test_a_crashed_unpack_is_swept_and_redone(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        image = await commit(store, BASE)
        other = await commit(store, BASE[:1], seed="other")
        snapshotter = Snapshotter(tmp_path / "rt", store)
        final = snapshotter.snapshot_path(image)
        crashed = [
            final.with_name(f"{PARTIAL}{final.name}-dead"),
            snapshotter.snapshot_path(other).with_name(f"{PARTIAL}x-dead"),
        ]
        for path in crashed:
            (path / "bin").mkdir(parents=True)
            (path / "bin/tool").write_text("half")
        path = await snapshotter.snapshot(image)
        assert (path / "bin/tool").read_text() == "v2"
        assert sorted(p.name for p in snapshotter.snapshots.iterdir()) == [final.name]


@pytest.mark.anyio
async def test_an_absent_image_is_a_rootfs_error(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        snapshotter = Snapshotter(tmp_path / "rt", store)
        with pytest.raises(RootfsError, match="not present"):
            await snapshotter.snapshot("sha256:" + "b" * 64)
        with pytest.raises(RootfsError, match="not a digest"):
            await snapshotter.snapshot("busybox:latest")


MODES = [
    pytest.param(RootfsMode.COPY, id="copy"),
    pytest.param(
        RootfsMode.OVERLAY,
        id="overlay",
        marks=pytest.mark.skipif(default_mode() is not RootfsMode.OVERLAY, reason="needs root"),
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_container_rootfs_is_private_and_removed(tmp_path: Path, mode: RootfsMode) -> None:
    async with opened(tmp_path) as store:
        image = await commit(store, BASE)
        snapshotter = Snapshotter(tmp_path / "rt", store, mode=mode)
        one = await snapshotter.prepare(image, tmp_path / "c1" / "rootfs")
        two = await snapshotter.prepare(image, tmp_path / "c2" / "rootfs")
        assert (one.mode, two.mode) == (mode, mode)
        mounted = await anyio.to_thread.run_sync(os.path.ismount, one.path)
        assert mounted == (mode is RootfsMode.OVERLAY)
        (one.path / "bin/tool").write_text("changed")
        (one.path / "new").write_text("n")
        os.unlink(one.path / "etc/conf")
        snapshot = await snapshotter.snapshot(image)
        for untouched in (snapshot, two.path):
            assert tree(untouched)["bin/tool"] == "file:v2"
            assert "new" not in tree(untouched)
            assert (untouched / "etc/conf").exists()
        assert os.readlink(one.path / "bin/sh") == "tool"
        assert stat.S_IMODE((two.path / "bin/tool").stat().st_mode) == 0o755
        for rootfs in (one, two):
            await snapshotter.remove(rootfs)
            await snapshotter.remove(rootfs)  # twice is fine
            assert not any(p.exists() for p in (rootfs.path, *rootfs.extra))
        assert tree(snapshot)["bin/tool"] == "file:v2"


@pytest.mark.anyio
async def test_overlay_refused_falls_back_to_copy(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        image = await commit(store, BASE)
        snapshotter = Snapshotter(tmp_path / "rt", store, mode=RootfsMode.OVERLAY)
        rootfs = await snapshotter.prepare(image, tmp_path / "odd,name" / "rootfs")
        assert rootfs == ContainerRootfs(tmp_path / "odd,name" / "rootfs", RootfsMode.COPY)
        assert snapshotter.mode is RootfsMode.COPY
        assert (rootfs.path / "etc/conf").read_text() == "c"
        await snapshotter.remove(rootfs)


def test_default_mode_without_root_is_copy() -> None:
    assert default_mode(geteuid=lambda: 1000) is RootfsMode.COPY
