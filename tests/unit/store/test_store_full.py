"""A disk with no space left reads as the store being full, never as "disk I/O error"."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from store_fakes import blob_bytes, make_image, pull

from kubelet_sim.errors import StoreError, StoreFullError
from kubelet_sim.store import Store

pytestmark = pytest.mark.anyio


def fill(folder: Path) -> None:
    """Write to ``folder`` until its filesystem has not one byte left."""
    with (folder / "filler").open("wb", buffering=0) as f:
        for size in (64 << 10, 4 << 10, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass


async def test_a_store_on_a_filesystem_at_zero_bytes_free_is_full(tiny_tmpfs: Path) -> None:
    root = tiny_tmpfs / "root"
    async with await Store.open(root) as store:
        await pull(store, make_image("before", [blob_bytes("b", 10_000)]), tag="example.com/b:1")
    fill(tiny_tmpfs)
    with pytest.raises(StoreFullError) as caught:
        async with await Store.open(root):
            pass
    assert f"store {root} is full (0 bytes free" in str(caught.value)
    with pytest.raises(StoreFullError):  # a reader too: SQLite cannot map its shared memory
        await Store.open(root, read_only=True)
    (tiny_tmpfs / "filler").unlink()
    async with await Store.open(root) as store:
        assert store.recovery is not None
        assert store.recovery.clean


def io_error(code: int) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("disk I/O error")
    exc.sqlite_errorcode = code  # what SQLite's C code sets
    return exc


@pytest.mark.parametrize(
    ("free", "full"),
    [
        pytest.param(0, True, id="no-space-left"),
        pytest.param(10 << 30, False, id="space-left-a-real-io-error"),
    ],
)
async def test_an_io_error_is_the_disk_being_full_only_without_space(
    tmp_path: Path, free: int, full: bool
) -> None:
    root = tmp_path / "root"
    async with await Store.open(root, free_space=lambda _: free) as store:

        def write(conn: sqlite3.Connection) -> None:
            raise io_error(sqlite3.SQLITE_IOERR_WRITE)

        with pytest.raises(StoreError) as caught:
            await store.db.run(write, what="committing image sha256:abc")
    assert isinstance(caught.value, StoreFullError) is full
    assert str(caught.value).startswith("committing image sha256:abc: ")
    if full:
        assert f"store {root} is full" in str(caught.value)
    else:
        assert "disk I/O error" in str(caught.value)
