"""``kubelet-sim fsck`` and ``kubelet-sim gc``: check and garbage-collect the local store."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

import anyio

from kubelet_sim.cli.args import add_root, node_paths
from kubelet_sim.cli.commands.images import human_size
from kubelet_sim.core.durations import parse_go_duration
from kubelet_sim.node.paths import default_root
from kubelet_sim.store import FsckReport, GCPolicy, GCResult, Store, fsck, garbage_collect

_QUANTITY = re.compile(r"(\d+)(Ki|Mi|Gi|Ti|Pi|k|K|M|G|T|P)?B?")
_FACTORS = {
    None: 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
    "Pi": 1 << 50,
}


def parse_bytes(value: str) -> int:
    """``1073741824``, ``1Gi``, ``500M``: a byte count."""
    match = _QUANTITY.fullmatch(value.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a byte count: {value!r} (e.g. 10Gi, 500M, 1048576)")
    return int(match[1]) * _FACTORS[match[2]]


def parse_duration(value: str) -> float:
    """A Go duration (``2m``, ``1h30m``) or plain seconds."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parse_go_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fsck`` and ``gc``."""
    check = subparsers.add_parser(
        "fsck",
        help="verify every blob and reference in the local store",
        description=(
            "Re-hash every blob and check every reference. Corrupt or missing blobs are "
            "quarantined and the images using them marked not present, so that the next pull "
            "repairs them. Exits 1 when damage was found. With --no-repair it only reads, and "
            "runs beside a daemon or pull using the store; repairing waits for them."
        ),
        epilog=f"default store root: {default_root()}",
    )
    add_root(check)
    check.add_argument("--no-repair", action="store_true", help="only report, change nothing")
    check.add_argument("--quick", action="store_true", help="check sizes, do not re-hash")
    check.add_argument("-o", "--output", choices=["text", "json"], default="text")
    check.set_defaults(func=run_fsck)

    gc = subparsers.add_parser(
        "gc",
        help="run image garbage collection once, as the kubelet does",
        description=(
            "Free least recently used images that are neither pinned nor in use, when usage of "
            "the capacity reaches the high threshold, until it is below the low threshold; with "
            "a maximum age, also free images unused for longer. Exits 1 when not enough "
            "space could be freed."
        ),
        epilog=f"default store root: {default_root()}",
    )
    add_root(gc)
    gc.add_argument(
        "--capacity",
        type=parse_bytes,
        metavar="BYTES",
        help="image filesystem capacity (e.g. 10Gi; default: size of the root's filesystem)",
    )
    gc.add_argument("--image-gc-high-threshold", type=int, default=85, metavar="PERCENT")
    gc.add_argument("--image-gc-low-threshold", type=int, default=80, metavar="PERCENT")
    gc.add_argument(
        "--image-minimum-gc-age", type=parse_duration, default=120.0, metavar="DURATION",
        help="minimum age of an image before it can be freed for space (default: 2m)",
    )  # fmt: skip
    gc.add_argument(
        "--image-maximum-gc-age", type=parse_duration, default=0.0, metavar="DURATION",
        help="free images unused for longer than this (default: 0, disabled)",
    )  # fmt: skip
    gc.add_argument("-o", "--output", choices=["text", "json"], default="text")
    gc.set_defaults(func=run_gc)


async def _fsck(args: argparse.Namespace) -> FsckReport:
    repair = not args.no_repair
    root = node_paths(args).existing_store()
    # Not the open-time recovery: it would repair before this fsck looks, and the report would
    # say "no damage found" about damage just repaired. fsck runs the same pass and reports it.
    store = await (
        Store.open(root, recover=False, create=False)
        if repair
        else Store.open(root, read_only=True)
    )
    async with store:
        return await fsck(store, repair=repair, rehash=not args.quick)


def run_fsck(args: argparse.Namespace) -> int:
    """Check the store; exit 1 when it found damage."""
    report = anyio.run(_fsck, args)
    if args.output == "json":
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_fsck_text(report))
    return 1 if report.damaged else 0


def _fsck_text(report: FsckReport) -> str:
    lines = [f"checked {report.checked} blobs" + (" (sizes only)" if not report.rehashed else "")]
    labels = (
        ("corrupt", "corrupt blob"),
        ("missing", "missing blob"),
        ("stray", "stray file"),
        ("database_errors", "database error"),
        ("affected_images", "image marked not present (the next pull repairs it)"),
        ("quarantined", "quarantined"),
        ("untracked", "untracked blob adopted"),
        ("temp_files", "temp file removed" if report.repaired else "temp file"),
        ("partial_ingests", "partial download kept (the next pull resumes it)"),
        ("incomplete_images", "image not present, waiting for a pull"),
        ("unreferenced", "unreferenced blob (gc frees it)"),
    )
    for field, label in labels:
        for item in getattr(report, field):
            lines.append(f"{label}: {item}")
    if report.damaged:
        lines.append("damage found" + (" and repaired" if report.repaired else " (not repaired)"))
    else:
        lines.append("no damage found")
    return "\n".join(lines)


async def _gc(args: argparse.Namespace) -> tuple[GCPolicy, GCResult | None]:
    async with await Store.open(
        node_paths(args).existing_store(), runtime_class_in_image_cri_api=True, create=False
    ) as store:
        capacity = args.capacity
        if capacity is None:
            stats = await anyio.to_thread.run_sync(os.statvfs, node_paths(args).store)
            capacity = stats.f_blocks * stats.f_frsize
        policy = GCPolicy(
            capacity_bytes=capacity,
            high_threshold_percent=args.image_gc_high_threshold,
            low_threshold_percent=args.image_gc_low_threshold,
            minimum_gc_age=args.image_minimum_gc_age,
            maximum_gc_age=args.image_maximum_gc_age,
        )
        if not policy.enabled:
            return policy, None
        return policy, await garbage_collect(store, policy)


def run_gc(args: argparse.Namespace) -> int:
    """One GC pass; exit 1 when it could not free the space the thresholds ask for."""
    policy, result = anyio.run(_gc, args)
    if result is None:
        print("image garbage collection is disabled (high threshold 100, no maximum age)")
        return 0
    if args.output == "json":
        json.dump(_gc_json(policy, result), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for freed in result.freed:
            name = ", ".join(freed.repo_tags) or freed.image_id
            print(f"freed ({freed.reason}): {name} {human_size(freed.bytes_freed)}")
        if result.blobs_pruned:
            print(f"pruned {len(result.blobs_pruned)} unreferenced blobs")
        print(
            f"usage {human_size(result.usage_before)} -> {human_size(result.usage_after)} "
            f"of {human_size(result.capacity_bytes)}; freed {human_size(result.bytes_freed)}"
        )
    for event in result.events:
        print(f"Warning {event.reason}: {event.message}", file=sys.stderr)
    return 0 if result.ok else 1


def _gc_json(policy: GCPolicy, result: GCResult) -> dict[str, Any]:
    return {
        "capacityBytes": policy.capacity_bytes,
        "usageBefore": result.usage_before,
        "usageAfter": result.usage_after,
        "bytesToFree": result.bytes_to_free,
        "bytesFreed": result.bytes_freed,
        "freed": [
            {
                "id": f.image_id,
                "runtimeHandler": f.runtime_handler,
                "repoTags": list(f.repo_tags),
                "reason": str(f.reason),
                "bytesFreed": f.bytes_freed,
            }
            for f in result.freed
        ],
        "blobsPruned": list(result.blobs_pruned),
        "pullRecordsPruned": result.pull_records_pruned,
        "events": [{"reason": e.reason, "message": e.message} for e in result.events],
    }
