"""Crash test: SIGKILL a process writing into the store at 100 random points.

After every kill the store is reopened (recovery), fsck re-hashes everything and must find
nothing, every image listed as present must be whole (its manifest, config and layers read back
and agree), and nothing the child reported committed may be lost unless a removal or GC that
could have taken it had started. The same store is reused across kills, so recovery also runs
on stores that earlier crashes and recoveries produced.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest
from store_fakes import assert_whole

from kubelet_sim.store import FsckReport, Store, fsck

CHILD = Path(__file__).with_name("crash_child.py")
KILLS = 100
SEED = 20240611


def run_and_kill(root: Path, seed: int, delay: float) -> list[str]:
    """Start the child, wait until it writes, let it run ``delay`` s, SIGKILL it; its lines."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(root), str(seed)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        if ready.strip() != "ready":
            proc.kill()
            proc.wait()
            stderr.seek(0)
            pytest.fail(f"child did not start: {ready!r} {stderr.read()[-2000:]!r}")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        # Read through the same buffered reader: readline() may have buffered lines already.
        out = proc.stdout.read()
        proc.wait(timeout=30)
        stderr.seek(0)
        assert proc.returncode == -signal.SIGKILL, f"child exited: {stderr.read()[-2000:]!r}"
    return out.splitlines()


def interpret(lines: list[str], before: set[str]) -> tuple[set[str], set[str]]:
    """``(must be present, may be present)`` after the child's run, from what it printed."""
    must, may = set(before), set(before)
    gc_open = False
    for line in lines:
        op, _, rest = line.partition(" ")
        if op == "c":
            may.add(rest)
        elif op == "C":
            image_id = rest.split()[0]
            must.add(image_id)
            may.add(image_id)
        elif op == "r":
            must.discard(rest)
        elif op == "R":
            must.discard(rest)
            may.discard(rest)
        elif op == "g":
            gc_open = True
        elif op == "G":
            gc_open = False
            for image_id in rest.split():
                must.discard(image_id)
                may.discard(image_id)
    if gc_open:
        must = set()  # a GC was cut short: any unpinned image may be gone
    return must, may


async def check(root: Path, must: set[str], may: set[str]) -> tuple[set[str], FsckReport]:
    """Reopen, fsck, verify; returns the present image IDs and what recovery on open did."""
    async with await Store.open(root) as store:
        assert store.recovery is not None
        assert store.recovery.clean, store.recovery
        report = await fsck(store, repair=True, rehash=True)
        assert report.clean, report
        assert not report.changed, report  # recovery on open already cleaned temp files
        assert not list((root / "tmp").iterdir())
        present = await store.list_images()
        broken = [r for r in await store.list_images(include_absent=True) if not r.present]
        assert not broken, f"images made not present by a crash: {broken}"
        ids = {r.image_id for r in present}
        for record in present:
            await assert_whole(store, record)
        refcounts = await store.blob_refcounts()
        for record in present:
            for layer in record.layers:
                assert refcounts[str(layer.digest)] >= 1
        lost = must - ids
        assert not lost, f"committed images lost: {sorted(lost)}"
        unexpected = ids - may
        assert not unexpected, f"images present that were never committed: {sorted(unexpected)}"
        return ids, store.recovery


def kill_loop(root: Path, seed: int, kills: int) -> Counter[str]:
    """``kills`` kill points on one store; counts completed operations and recovery actions."""
    rng = random.Random(seed)
    present: set[str] = set()
    stats: Counter[str] = Counter()
    for kill in range(kills):
        # Mostly runs of a few operations, a third killed in the first milliseconds.
        delay = rng.uniform(0.0, 0.04) if kill % 3 == 0 else rng.uniform(0.02, 0.3)
        lines = run_and_kill(root, rng.randrange(1 << 30), delay)
        stats["operations"] += sum(1 for line in lines if line[:1] in "CRG")
        must, may = interpret(lines, present)
        present, recovery = anyio.run(check, root, must, may)
        stats["temp files removed"] += bool(recovery.temp_files)
        stats["untracked blobs adopted"] += bool(recovery.untracked)
    return stats


@pytest.mark.slow
def test_kill_at_100_random_points_loses_and_corrupts_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    # Two independent stores side by side (the work is mostly fsync waits): 2 x 50 kill points.
    lanes = 2
    with ThreadPoolExecutor(lanes) as pool:
        futures = [
            pool.submit(kill_loop, tmp_path / f"store{lane}", SEED + lane, KILLS // lanes)
            for lane in range(lanes)
        ]
        stats = sum((f.result() for f in futures), Counter[str]())
    elapsed = time.monotonic() - started
    # The kills landed while the child was working: operations completed between them, some
    # kills cut a blob write (temp file left) and some fell between a rename and its commit
    # or between a removal's commit and its unlinks (untracked blob files left).
    assert stats["operations"] > KILLS, stats
    assert stats["temp files removed"] > 0, stats
    assert stats["untracked blobs adopted"] > 0, stats
    assert elapsed < 120, f"crash test took {elapsed:.0f}s"
