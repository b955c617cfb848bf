"""Memory while pulling one 1 GiB layer: kubelet-sim vs ``skopeo copy``, same registry, same run.

Seeds an image whose single uncompressed layer is a tar of 1 GiB of seeded random bytes (streamed
to the registry in 64 MiB chunks, never whole in memory), then pulls it with ``kubelet-sim pull``
(engine + store, fresh root) and with ``skopeo copy docker://… oci:DIR``, each as its own process,
measuring wall time and peak RSS (``VmHWM``) as ``pull_vs_skopeo.py`` does.

    .venv/bin/python benchmarks/large_layer_memory.py [--mib 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
from pull_vs_skopeo import ratio_line, run_measured

from kubelet_sim.cli.main import configure_logging
from kubelet_sim.core.digest import Digest
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.push import Pusher
from kubelet_sim.sim.images import Blob, canonical_json, random_bytes

CHUNK = 64 * 1024 * 1024


def layer_chunks(size: int) -> Iterator[bytes]:
    """A tar holding one ``size``-byte file of seeded random bytes, in chunks."""
    info = tarfile.TarInfo("data/big.bin")
    info.size, info.mtime, info.mode = size, 0, 0o644
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    for i, offset in enumerate(range(0, size, CHUNK)):
        yield random_bytes(f"big-{i}", min(CHUNK, size - offset))
    yield b"\0" * ((512 - size % 512) % 512 + 1024)


async def seed(host: str, size: int) -> str:
    ref = f"{host}/bench/biglayer:v1"
    hasher, total = hashlib.sha256(), 0
    for chunk in layer_chunks(size):
        hasher.update(chunk)
        total += len(chunk)
    digest = Digest.parse(f"sha256:{hasher.hexdigest()}")
    layer = {"mediaType": mt.OCI_LAYER, "digest": str(digest), "size": total}
    async with RegistryClient() as client:
        pusher = Pusher(client, parse_normalized(ref), chunk_size=CHUNK)
        await pusher.push_blob(layer_chunks(size), digest, total)
        config = Blob(mt.OCI_CONFIG, canonical_json({
            "os": "linux", "architecture": "amd64",
            "rootfs": {"type": "layers", "diff_ids": [str(digest)]},
        }))  # fmt: skip
        await pusher.push_blob(config.data, config.digest, config.size)
        manifest = canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                                   "config": config.descriptor(), "layers": [layer]})  # fmt: skip
        await pusher.push_manifest(manifest, mt.OCI_MANIFEST, "v1")
    return ref


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=1024)
    args = parser.parse_args()
    configure_logging("warning")
    if shutil.which("skopeo") is None:
        raise SystemExit("skopeo is not installed: sudo apt-get install -y skopeo")
    from kubelet_sim.sim.registry import RegistryConfig, RegistryProcess

    with tempfile.TemporaryDirectory(prefix="ksim-biglayer-") as tmp:
        work = Path(tmp)
        with RegistryProcess(RegistryConfig(storage_dir=work / "registry"), work) as registry:
            started = time.perf_counter()
            ref = anyio.run(seed, registry.host, args.mib * 1024 * 1024)
            print(f"seeded one {args.mib} MiB layer in {time.perf_counter() - started:.1f}s")
            ksim = run_measured([sys.executable, "-m", "kubelet_sim", "pull", ref, "--root",
                                 str(work / "ksim"), "--output", "json"])  # fmt: skip
            peer = run_measured(["skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}",
                                 f"oci:{work / 'skopeo'}:v1"])  # fmt: skip
            print(ratio_line(f"one {args.mib} MiB layer", ksim[:2], peer[:2], "skopeo copy"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
