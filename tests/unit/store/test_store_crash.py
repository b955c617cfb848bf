"""Crash test: SIGKILL a process writing into the store at 100 random points.

After every kill the store is reopened (recovery), fsck re-hashes everything and must find
nothing, every image listed as present must be whole (its manifest, config and layers read back
and agree), and nothing the child reported committed may be lost unless a removal or GC that
could have taken it had started. The same store is reused across kills, so recovery also runs
on stores that earlier crashes and recoveries produced.

Each writer is a fresh process forked by a warmed fork server (``crash_child.py --serve``), so a
kill costs milliseconds of set-up instead of an interpreter start; four stores are worked on
side by side, 25 kill points each.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from store_fakes import assert_whole

from kubelet_sim.store import FsckReport, Store, fsck

CHILD = Path(__file__).with_name("crash_child.py")
KILLS = 100
LANES = 4
SEED = 20240611


class ForkServer:
    """``crash_child.py --serve``: one warmed interpreter that forks a fresh writer per kill.

    Starting an interpreter and importing the store for each of the 100 kills cost more than the
    kills themselves; a fork of a process that has done it once costs a few milliseconds. Each
    writer is still a separate process, killed with SIGKILL and reaped by its parent (the server).
    One server serves every lane: a request is answered at once (a wait is asked for only once
    the writer is dead), so the lanes take turns under a lock.
    """

    def __init__(self, log: IO[bytes]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0"}
        with theirs:
            self._proc = subprocess.Popen(
                [sys.executable, str(CHILD), "--serve", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        ours.settimeout(60)  # every answer is immediate: a silent server has hung
        self._sock = ours
        self._log = log
        self._lock = threading.Lock()

    def _ask(self, request: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        with self._lock:
            socket.send_fds(self._sock, [json.dumps(request).encode()], fds or [])
            answer = self._sock.recv(65536)
        if not answer:
            self._proc.wait(timeout=30)
            self._log.seek(0)
            pytest.fail(f"fork server died: {self._log.read()[-2000:]!r}")
        reply: dict[str, Any] = json.loads(answer)
        return reply

    def start(self, root: Path, seed: int, stdout: int, stderr: int) -> int:
        """Fork a writer on ``root`` with these stdout and stderr descriptors; its pid."""
        return int(
            self._ask({"op": "run", "root": str(root), "seed": seed}, [stdout, stderr])["pid"]
        )

    def wait(self, pid: int) -> int:
        """Reap the writer; its return code as ``subprocess`` reports it."""
        return int(self._ask({"op": "wait", "pid": pid})["returncode"])

    def close(self) -> None:
        self._sock.close()  # the server kills and reaps any writer still running, then exits
        self._proc.wait(timeout=30)


@contextmanager
def fork_server() -> Iterator[ForkServer]:
    with tempfile.TemporaryFile() as log:
        server = ForkServer(log)
        try:
            yield server
        finally:
            server.close()


def run_and_kill(server: ForkServer, root: Path, seed: int, runs: int, delay: float) -> list[str]:
    """Start a writer; once it is ready and has completed ``runs`` operations, let it run
    ``delay`` s more and SIGKILL it. Returns every line it printed."""
    lines: list[str] = []
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as stderr, open(read_end, encoding="utf-8") as stdout:
        try:
            pid = server.start(root, seed, write_end, stderr.fileno())
        finally:
            os.close(write_end)  # the writer holds the only write end: EOF when it dies
        ready = stdout.readline()
        if ready.strip() != "ready":
            os.kill(pid, signal.SIGKILL)
            server.wait(pid)
            stderr.seek(0)
            pytest.fail(f"child did not start: {ready!r} {stderr.read()[-2000:]!r}")
        completed = 0
        while completed < runs and (line := stdout.readline()):  # "" if it died: see below
            lines.append(line.rstrip("\n"))
            completed += line[:1] in "CRG"
        time.sleep(delay)  # the random kill point, not an ordering wait
        os.kill(pid, signal.SIGKILL)  # the server has not reaped it: the pid is still ours
        # Read through the same buffered reader: readline() may have buffered lines already.
        lines += stdout.read().splitlines()
        returncode = server.wait(pid)
        stderr.seek(0)
        assert returncode == -signal.SIGKILL, f"child exited: {stderr.read()[-2000:]!r}"
    return lines


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


def kill_loop(server: ForkServer, root: Path, seed: int, kills: int) -> Counter[str]:
    """``kills`` kill points on one store; counts completed operations and recovery actions."""
    rng = random.Random(seed)
    present: set[str] = set()
    stats: Counter[str] = Counter()
    for kill in range(kills):
        # A third killed in the first milliseconds; the rest after a run of a few operations,
        # a random time into what follows. Counting the run in operations, not seconds, keeps
        # the kill points in the same places of a writer's work however loaded the machine.
        runs = 0 if kill % 3 == 0 else rng.randint(1, 4)
        delay = rng.uniform(0.0, 0.04)
        lines = run_and_kill(server, root, rng.randrange(1 << 30), runs, delay)
        stats["kills"] += 1
        stats["operations"] += sum(1 for line in lines if line[:1] in "CRG")
        must, may = interpret(lines, present)
        present, recovery = anyio.run(check, root, must, may)
        stats["temp files removed"] += bool(recovery.temp_files)
        stats["untracked blobs adopted"] += bool(recovery.untracked)
    return stats


@pytest.mark.slow
def test_kill_at_100_random_points_loses_and_corrupts_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    # Independent stores side by side, one writer each at a time: a lane waits for its writer
    # much of the time, and its kill points are drawn from its own seed and counted in its
    # writer's operations, so the lanes overlap without moving the kill points.
    shares = [KILLS // LANES + (lane < KILLS % LANES) for lane in range(LANES)]
    with fork_server() as server, ThreadPoolExecutor(LANES) as pool:
        futures = [
            pool.submit(kill_loop, server, tmp_path / f"store{lane}", SEED + lane, kills)
            for lane, kills in enumerate(shares)
        ]
        stats = sum((f.result() for f in futures), Counter[str]())
    elapsed = time.monotonic() - started
    assert stats["kills"] == KILLS, stats
    # The kills landed while the child was working: operations completed between them, some
    # kills cut a blob write (temp file left) and some fell between a rename and its commit
    # or between a removal's commit and its unlinks (untracked blob files left).
    assert stats["operations"] > KILLS, stats
    assert stats["temp files removed"] > 0, stats
    assert stats["untracked blobs adopted"] > 0, stats
    assert elapsed < 120, f"crash test took {elapsed:.0f}s"
