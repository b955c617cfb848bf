"""How long does the event loop stall while the store writes a big blob?

A 1 ms ticker task runs next to ``Store.ensure_blob`` streaming a blob (default 256 MiB, in
64 KiB chunks, as the registry client does). The figure is the ticker's longest gap: how late
any other task (another download, an HTTP handler) could be. For comparison the same blob is
written by a naive sink that hashes and writes on the event loop.

    .venv/bin/python benchmarks/store_loop_latency.py [--size-mib 256] [--root DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.lowlevel

from kubelet_sim.cli.main import configure_logging
from kubelet_sim.core.digest import Digest
from kubelet_sim.core.sinks import BlobSink
from kubelet_sim.store import Store


async def measure(write: Callable[[], Awaitable[None]]) -> tuple[float, float, float]:
    """``(max gap, p99 gap, seconds)`` of a 1 ms ticker while ``write`` runs."""
    gaps: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        last = anyio.current_time()
        while not done.is_set():
            await anyio.sleep(0.001)
            now = anyio.current_time()
            gaps.append(now - last)
            last = now

    async def run() -> None:
        try:
            await write()
        finally:
            done.set()

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        tg.start_soon(run)
    elapsed = time.perf_counter() - started
    p99 = statistics.quantiles(gaps, n=100)[98] if len(gaps) >= 100 else max(gaps)
    return max(gaps), p99, elapsed


def streaming(data: bytes, digest: Digest, chunk: int) -> Callable[[BlobSink], Awaitable[None]]:
    """A fetch streaming ``data`` (whose digest the caller computed, outside the measurement)."""

    async def fetch(sink: BlobSink) -> None:
        for start in range(0, len(data), chunk):
            await sink.write(data[start : start + chunk])
        await sink.commit(digest, len(data))

    return fetch


async def main(size: int, chunk: int, root: Path) -> None:
    data = os.urandom(size)
    digest = Digest.from_bytes(data)
    async with await Store.open(root / "store") as store:
        gap, p99, elapsed = await measure(
            lambda: store.ensure_blob(digest, size, streaming(data, digest, chunk))
        )
    mib = size / (1 << 20)
    print(f"blob: {mib:.0f} MiB in {chunk >> 10} KiB chunks")
    print(
        f"store (ensure_blob):   max loop gap {gap * 1000:7.1f} ms   p99 {p99 * 1000:5.1f} ms   "
        f"{mib / elapsed:6.0f} MiB/s"
    )

    async def naive() -> None:
        hasher = digest.hasher()
        with open(root / "naive.blob", "wb") as f:  # noqa: ASYNC230 - the point of comparison
            for start in range(0, size, chunk):
                piece = data[start : start + chunk]
                hasher.update(piece)
                f.write(piece)
                await anyio.lowlevel.checkpoint()
            f.flush()
            os.fsync(f.fileno())

    gap, p99, elapsed = await measure(naive)
    print(
        f"naive (on the loop):   max loop gap {gap * 1000:7.1f} ms   p99 {p99 * 1000:5.1f} ms   "
        f"{mib / elapsed:6.0f} MiB/s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--chunk-kib", type=int, default=64)
    parser.add_argument("--root", type=Path, help="folder on the filesystem to measure")
    args = parser.parse_args()
    configure_logging("warning")
    with tempfile.TemporaryDirectory(dir=args.root) as tmp:
        anyio.run(main, args.size_mib << 20, args.chunk_kib << 10, Path(tmp))
