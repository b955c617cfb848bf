"""Who may open a store at once: one writer (others wait, bounded), any number of readers."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from store_fakes import blob_bytes, make_image, pull
from structlog.testing import capture_logs

from kubelet_sim.core.digest import Digest
from kubelet_sim.errors import StoreBusyError, StoreError, StoreNotFoundError
from kubelet_sim.store import Store, fsck

pytestmark = pytest.mark.anyio

IMAGE = make_image("access", [blob_bytes("a1", 20_000)])


async def test_a_second_writer_waits_for_the_first_and_says_so(tmp_path: Path) -> None:
    root = tmp_path / "root"
    opened = anyio.Event()
    first = await Store.open(root)
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:

            async def second() -> None:
                async with await Store.open(root, lock_timeout=30) as store:
                    opened.set()
                    assert await store.lookup("example.com/access:1") is not None

            tg.start_soon(second)
            await anyio.sleep(0.3)
            assert not opened.is_set()  # waiting, not failing
            await pull(first, IMAGE, tag="example.com/access:1")
            await first.aclose()
    assert opened.is_set()
    waits = [e for e in logs if e["event"] == "store.waiting_for_lock"]
    assert len(waits) == 1
    assert waits[0]["log_level"] == "warning"
    assert waits[0]["root"] == str(root)
    assert waits[0]["holder"].startswith("pid ")


async def test_the_wait_is_bounded(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with await Store.open(root):
        with pytest.raises(StoreBusyError, match=r"is in use by pid \d+: waited 0.2s") as caught:
            await Store.open(root, lock_timeout=0.2)
        assert str(root) in str(caught.value)
    async with await Store.open(root, lock_timeout=0):
        pass  # released on close, and the failed open left nothing locked


async def test_ten_simultaneous_writers_all_get_their_image_in(tmp_path: Path) -> None:
    root = tmp_path / "root"
    images = [make_image(f"writer-{i}", [blob_bytes(f"w{i}", 5_000)]) for i in range(10)]

    async def one(i: int) -> None:
        async with await Store.open(root, lock_timeout=60) as store:
            await pull(store, images[i], tag=f"example.com/writer:{i}")

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(one, i)
    async with await Store.open(root, read_only=True) as store:
        records = await store.list_images()
    assert sorted(r.repo_tags[0] for r in records) == [f"example.com/writer:{i}" for i in range(10)]


async def test_a_reader_runs_beside_the_writer_and_never_answers_stale(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    async with await Store.open(root) as writer, await Store.open(root, read_only=True) as reader:
        assert await reader.lookup("example.com/access:1") is None
        record = await pull(writer, IMAGE, tag="example.com/access:1")
        assert await reader.lookup("example.com/access:1") == record
        assert [r.image_id for r in await reader.list_images()] == [IMAGE.image_id]
        await writer.remove("example.com/access:1")
        assert await reader.lookup("example.com/access:1") is None  # no cached answer
        report = await fsck(reader, repair=False)
        assert report.clean, report
        assert not report.repaired


async def test_a_reader_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with await Store.open(root) as writer:
        await pull(writer, IMAGE, tag="example.com/access:1")
    async with await Store.open(root, read_only=True) as reader:
        data = b"not to be written"
        with pytest.raises(StoreError, match="read-only"):
            reader.blob_writer(Digest.from_bytes(data), len(data))
        with pytest.raises(StoreError, match="read-only"):
            await reader.remove("example.com/access:1")
        with pytest.raises(StoreError, match="read-only"):
            await fsck(reader, repair=True)
        assert await reader.lookup("example.com/access:1") is not None


@pytest.mark.parametrize("read_only", [True, False], ids=["reader", "writer-without-create"])
async def test_a_missing_store_is_not_created(tmp_path: Path, read_only: bool) -> None:
    root = tmp_path / "typo" / "store"
    with pytest.raises(StoreNotFoundError, match="no image store at") as caught:
        await Store.open(root, read_only=read_only, create=False)
    assert caught.value.root == str(root)
    assert not (tmp_path / "typo").exists()
