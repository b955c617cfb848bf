"""Child process of ``test_store_crash.py``: writes into a store as fast as it can until killed.

Usage: ``crash_child.py ROOT SEED`` runs one writer. ``crash_child.py --serve FD`` is a fork
server: it pays for the interpreter start and the imports once, then, on each request over the
SOCK_SEQPACKET socket ``FD``, forks a fresh writer process whose stdout and stderr are the two
file descriptors sent with the request. The test SIGKILLs that process at a random point.

A writer prints ``ready`` once the store is open, then one line before and one after every
operation that changes what is present, flushed at once, so the parent knows which operations
completed before the SIGKILL and which may have been cut:

    c <id>            about to commit image <id>      C <id> <tag>   committed
    r <id>            about to remove <id>            R <id>         removed
    g                 about to run GC                 G <id>...      GC removed these

Fork server requests and answers are one JSON object per message:

    {"op": "run", "root": ROOT, "seed": SEED} + fds (stdout, stderr)  ->  {"pid": PID}
    {"op": "wait", "pid": PID}                                        ->  {"returncode": N}

N is what ``subprocess`` would report (``-9`` for SIGKILL). The server exits when the test
closes its end of the socket, killing any writer the test did not wait for.
"""

from __future__ import annotations

import gc
import json
import os
import random
import signal
import socket
import sys
import tempfile
import threading
import traceback
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).parent))

from store_fakes import blob_bytes, make_image, pull

from kubelet_sim.cli.main import configure_logging
from kubelet_sim.store import (
    CredentialIdentity,
    CredentialKind,
    GCPolicy,
    Store,
    garbage_collect,
    hash_credentials,
)

# Shared layers: the same bytes in every run, so images of different runs share them too.
SHARED = [blob_bytes(f"shared-{i}", 2_000 + 37_000 * i) for i in range(6)]
BIG = 5 << 20  # crosses the writer's flush size: several worker-thread writes per blob


def say(line: str) -> None:
    print(line, flush=True)


async def main(root: Path, seed: int) -> None:
    rng = random.Random(seed)
    async with await Store.open(root) as store:
        known = [r.image_id for r in await store.list_images()]
        say("ready")
        for i in range(1_000_000):
            op = rng.random()
            if op < 0.6 or not known:
                layers = rng.sample(SHARED, rng.randrange(0, 3))
                for j in range(rng.randrange(1, 4)):
                    size = BIG if rng.random() < 0.05 else rng.randrange(0, 200_000)
                    layers.append(blob_bytes(f"{seed}-{i}-{j}", size))
                image = make_image(f"{seed}-{i}", layers)
                tag = f"example.com/crash/app:{rng.randrange(4)}"
                say(f"c {image.image_id}")
                await pull(
                    store,
                    image,
                    tag=tag,
                    repo_digest=f"example.com/crash/app@{image.manifest_digest}",
                )
                say(f"C {image.image_id} {tag}")
                known.append(image.image_id)
            elif op < 0.8:
                victim = known.pop(rng.randrange(len(known)))
                say(f"r {victim}")
                await store.remove(victim)
                say(f"R {victim}")
            elif op < 0.85:
                say("g")
                policy = GCPolicy(capacity_bytes=2_000_000, minimum_gc_age=0.0)
                result = await garbage_collect(store, policy)
                gone = [f.image_id for f in result.freed]
                known = [k for k in known if k not in gone]
                say("G " + " ".join(gone))
            elif op < 0.9:
                await store.pin(rng.choice(known), rng.random() < 0.5)
            else:
                secret = CredentialIdentity(
                    CredentialKind.SECRET, "default", f"pull-{i % 3}", f"uid-{i % 3}",
                    hash_credentials(username="u", password=str(i)),
                )  # fmt: skip
                await store.record_pull(
                    rng.choice(known), secret, repository="example.com/crash/app"
                )


def run_writer(root: Path, seed: int) -> None:
    configure_logging("warning", json_lines=True)  # stderr; stdout carries the protocol
    anyio.run(main, root, seed)


def _forked_writer(sock: socket.socket, fds: list[int], root: Path, seed: int) -> None:
    """In the forked process: take the sent stdout and stderr, write until killed."""
    code = 0
    try:
        sock.close()
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        run_writer(root, seed)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never return into the server loop, never run its exit handlers


async def warm_up() -> None:
    """Run the writer's code paths once on a scratch store, so that what anyio, the store and
    SQLite load or compile on first use is already in the server when it forks a writer."""
    with tempfile.TemporaryDirectory() as scratch:
        async with await Store.open(Path(scratch)) as store:
            image = make_image("warm-up", [blob_bytes("warm-up", 1_000)])
            await pull(store, image, repo_digest=f"example.com/warm@{image.manifest_digest}")
            await store.pin(image.image_id, True)
            await store.pin(image.image_id, False)
            await store.remove(image.image_id)
            await garbage_collect(store, GCPolicy(capacity_bytes=1, minimum_gc_age=0.0))


def serve(fd: int) -> None:
    """Fork one writer per request until the test closes the socket."""
    configure_logging("warning", json_lines=True)
    anyio.run(warm_up)
    for thread in threading.enumerate():  # fork a single-threaded process only
        if thread is not threading.main_thread():
            thread.join(timeout=10)
    gc.freeze()  # the writers share the server's objects copy-on-write; keep GC off them
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=fd)
    children: set[int] = set()
    with sock:
        while True:
            message, fds, _, _ = socket.recv_fds(sock, 65536, 2)
            if not message:
                break
            request = json.loads(message)
            if request["op"] == "run":
                pid = os.fork()
                if pid == 0:
                    _forked_writer(sock, fds, Path(request["root"]), int(request["seed"]))
                for received in fds:
                    os.close(received)
                children.add(pid)
                sock.send(json.dumps({"pid": pid}).encode())
            elif request["op"] == "wait":
                pid = int(request["pid"])
                _, status = os.waitpid(pid, 0)
                children.discard(pid)
                sock.send(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode())
            else:
                raise ValueError(f"unknown request {request!r}")
    for pid in children:  # the test went away (or failed) without waiting for these
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        run_writer(Path(sys.argv[1]), int(sys.argv[2]))
