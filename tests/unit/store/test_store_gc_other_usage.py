"""Image GC on a real disk: what else fills the image filesystem counts toward its usage, as the
kubelet's ImageFsInfo counts every used byte, not only the images."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_fakes import Clock, blob_bytes, make_image, pull

from kubelet_sim.errors import ConfigError
from kubelet_sim.store import GCPolicy, Store, garbage_collect

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[Store, Clock]]:
    clock = Clock()
    async with await Store.open(tmp_path / "root", clock=clock) as s:
        yield s, clock


async def test_other_usage_of_the_filesystem_triggers_gc(store: tuple[Store, Clock]) -> None:
    s, clock = store
    for name in ("a", "b"):
        await pull(s, make_image(name, [blob_bytes(name, 100_000)]), tag=f"example.com/{name}:1")
        clock.advance(1)
    images = await s.usage()
    capacity = images * 10  # images alone use 10 %: under any threshold
    alone = await garbage_collect(s, GCPolicy(capacity_bytes=capacity, minimum_gc_age=0))
    assert alone.freed == ()
    # The rest of the disk is 80 % full: 90 % used, over the 85 % high threshold.
    crowded = GCPolicy(capacity_bytes=capacity, minimum_gc_age=0, other_bytes=capacity * 8 // 10)
    result = await garbage_collect(s, crowded)
    assert [f.repo_tags for f in result.freed] == [("example.com/a:1",), ("example.com/b:1",)]
    # To get under 80 %, 10 % of the disk must go: exactly the images.
    assert result.bytes_to_free == images
    assert result.ok


def test_other_usage_must_not_be_negative() -> None:
    with pytest.raises(ConfigError) as info:
        GCPolicy(capacity_bytes=100, other_bytes=-1)
    assert info.value.field == "otherBytes"
