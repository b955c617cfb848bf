"""Child process of ``test_store_crash.py``: writes into a store as fast as it can until killed.

Usage: ``crash_child.py ROOT SEED``. Prints ``ready`` once the store is open, then one line
before and one after every operation that changes what is present, flushed at once, so the
parent knows which operations completed before the SIGKILL and which may have been cut:

    c <id>            about to commit image <id>      C <id> <tag>   committed
    r <id>            about to remove <id>            R <id>         removed
    g                 about to run GC                 G <id>...      GC removed these
"""

from __future__ import annotations

import random
import sys
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


if __name__ == "__main__":
    configure_logging("warning", json_lines=True)  # stderr; stdout carries the protocol
    anyio.run(main, Path(sys.argv[1]), int(sys.argv[2]))
