"""``kubelet-sim images`` and ``kubelet-sim rmi``: list and remove images, like ``crictl``."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

import anyio

from kubelet_sim.cli.args import add_root, node_paths
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.errors import KubeletSimError
from kubelet_sim.node.paths import default_root
from kubelet_sim.store import ImageRecord, Store
from kubelet_sim.store.catalog import image_id_of

NONE = "<none>"
TRUNCATED_ID_LEN = 13  # crictl's truncatedIDLen
_HEX_PREFIX = re.compile(r"[a-f0-9]{3,63}")
_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``images`` and ``rmi``."""
    images = subparsers.add_parser(
        "images",
        help="list images in the local store",
        description="List the images present in the local store, as `crictl images` does.",
        epilog=f"default store root: {default_root()}",
    )
    add_root(images)
    images.add_argument(
        "-o", "--output", choices=["table", "json"], default="table", help="output format"
    )
    images.add_argument("--no-trunc", action="store_true", help="show full image IDs and digests")
    images.add_argument(
        "-a", "--all", action="store_true", help="also list damaged images (not present)"
    )
    images.add_argument(
        "--runtime-handler", default=None, help="only images of this runtime handler"
    )
    images.set_defaults(func=run_images)

    rmi = subparsers.add_parser(
        "rmi",
        help="remove images from the local store",
        description="Remove images by reference or image ID; blobs no other image uses are freed.",
        epilog=f"default store root: {default_root()}",
    )
    rmi.add_argument("images", nargs="+", metavar="IMAGE", help="reference, image ID or ID prefix")
    add_root(rmi)
    rmi.add_argument("--runtime-handler", default="", help="runtime handler of the image")
    rmi.set_defaults(func=run_rmi)


def human_size(size: float) -> str:
    """docker/go-units ``HumanSizeWithPrecision(size, 3)``, as crictl prints sizes."""
    i = 0
    while size >= 1000 and i < len(_UNITS) - 1:
        size /= 1000
        i += 1
    return f"{size:.3g}{_UNITS[i]}"


def _truncate(value: str, no_trunc: bool) -> str:
    if no_trunc:
        return value
    return value.removeprefix("sha256:")[:TRUNCATED_ID_LEN]


def rows(
    records: list[ImageRecord], *, no_trunc: bool = False, status: bool = False
) -> list[list[str]]:
    """crictl's rows: one per repo tag, ``<none>`` where there is none; ``status`` adds one."""
    out = []
    for record in records:
        if record.repo_digests:
            repo, _, digest = record.repo_digests[0].partition("@")
            digest = _truncate(digest, no_trunc)
        else:
            repo, digest = NONE, NONE
        pairs = [
            (name if name != NONE else repo, tag)
            for name, _, tag in (t.rpartition(":") for t in record.repo_tags)
        ] or [(repo, NONE)]
        for name, tag in pairs:
            out.append(
                [
                    name,
                    tag,
                    digest,
                    _truncate(record.image_id, no_trunc),
                    human_size(record.size),
                    record.platform,
                    record.runtime_handler,
                    *([("present" if record.present else "damaged")] if status else []),
                ]
            )
    return out


def image_json(record: ImageRecord) -> dict[str, Any]:
    """The JSON form of one image (crictl's field names where it has them)."""
    return {
        "id": record.image_id,
        "repoTags": list(record.repo_tags),
        "repoDigests": list(record.repo_digests),
        "size": record.size,
        "pinned": record.pinned,
        "platform": record.platform,
        "runtimeHandler": record.runtime_handler,
        "manifestDigest": str(record.manifest_digest),
        "layers": [{"digest": str(lr.digest), "size": lr.size} for lr in record.layers],
        "firstUsed": record.first_used,
        "lastUsed": record.last_used,
        "present": record.present,
    }


def _table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *body]
    ]
    return "\n".join(lines)


async def _list(args: argparse.Namespace) -> list[ImageRecord]:
    # Read-only: runs beside a daemon or a pull writing the store, and never creates one.
    async with await Store.open(
        node_paths(args).existing_store(), runtime_class_in_image_cri_api=True, read_only=True
    ) as store:
        return await store.list_images(args.runtime_handler, include_absent=args.all)


def run_images(args: argparse.Namespace) -> int:
    """Print the images of the store under ``args.root``."""
    records = anyio.run(_list, args)
    if args.output == "json":
        json.dump({"images": [image_json(r) for r in records]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    header = ["IMAGE", "TAG", "DIGEST", "IMAGE ID", "SIZE", "PLATFORM", "RUNTIME HANDLER"]
    if args.all:
        header.append("STATUS")
    print(_table(header, rows(records, no_trunc=args.no_trunc, status=args.all)))
    return 0


def normalize(value: str) -> str:
    """The store reference for a command-line image: an image ID, or a normalised name."""
    if image_id_of(value) is not None:
        return value
    return str(parse_normalized(value).with_default_tag())


async def _rmi(args: argparse.Namespace) -> int:
    status = 0
    async with await Store.open(
        node_paths(args).existing_store(), runtime_class_in_image_cri_api=True, create=False
    ) as store:
        for value in args.images:
            try:
                ref = await _resolve(store, value, args.runtime_handler)
                found = None if ref is None else await store.inspect(ref, args.runtime_handler)
                if ref is None or found is None:
                    raise KubeletSimError(f"no such image {value}")
                await store.remove(ref, args.runtime_handler)
            except KubeletSimError as exc:
                print(f"kubelet-sim: error: {exc}", file=sys.stderr)
                status = 1
                continue
            for name in found.record.repo_tags or (found.record.image_id,):
                print(f"Deleted: {name}")
    return status


async def _resolve(store: Store, value: str, handler: str) -> str | None:
    """``value`` as a store reference; a unique image-ID prefix is accepted too."""
    try:
        ref = normalize(value)
    except KubeletSimError:
        ref = None
    if ref is not None and await store.inspect(ref, handler) is not None:
        return ref
    if _HEX_PREFIX.fullmatch(value.removeprefix("sha256:")):
        prefix = "sha256:" + value.removeprefix("sha256:")
        matches = {
            r.image_id
            for r in await store.list_images(handler, include_absent=True)
            if r.image_id.startswith(prefix)
        }
        if len(matches) > 1:
            raise KubeletSimError(f"image ID prefix {value} is ambiguous ({len(matches)} images)")
        if matches:
            return matches.pop()
    if ref is None:
        normalize(value)  # re-raise the name's own error
    return ref


def run_rmi(args: argparse.Namespace) -> int:
    """Remove each of ``args.images``; exit 1 if any could not be removed."""
    return anyio.run(_rmi, args)
