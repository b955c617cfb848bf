"""``kubelet-sim ref IMAGE``: show how an image reference is parsed, defaulted and pulled."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from kubelet_sim.core.policy import default_pull_policy
from kubelet_sim.core.reference import (
    apply_default_image_tag,
    image_name_error_text,
    parse_normalized,
)
from kubelet_sim.errors import InvalidImageNameError

_FIELDS = (
    "input",
    "reference",
    "name",
    "domain",
    "path",
    "tag",
    "digest",
    "familiar",
    "runtime_image",
    "default_pull_policy",
)


def register(subparsers: Any) -> None:
    """Add the ``ref`` subcommand."""
    parser = subparsers.add_parser(
        "ref",
        help="parse an image reference the way the kubelet does",
        description=(
            "Parse IMAGE with distribution/reference normalisation and show its parts, the "
            "string the kubelet hands to the runtime, and the API's default imagePullPolicy. "
            "Use '--' before an IMAGE that starts with '-'."
        ),
    )
    parser.add_argument("image", metavar="IMAGE", help="image reference, e.g. busybox:1.36")
    parser.add_argument(
        "--output",
        "-o",
        choices=["text", "json"],
        default="text",
        help="output format (default: text)",
    )
    parser.set_defaults(func=run)


def describe(image: str) -> dict[str, str | None]:
    """Everything ``ref`` prints about ``image``, keyed as in the JSON output.

    Raises:
        InvalidImageNameError: ``image`` does not parse.
    """
    ref = parse_normalized(image)
    return {
        "input": image,
        "reference": str(ref),
        "name": ref.name,
        "domain": ref.domain,
        "path": ref.path,
        "tag": ref.tag,
        "digest": str(ref.digest) if ref.digest is not None else None,
        "familiar": ref.familiar(),
        "runtime_image": apply_default_image_tag(image),
        "default_pull_policy": default_pull_policy(image).value,
    }


def run(args: argparse.Namespace) -> int:
    """Print the description of ``args.image``; exit status 1 if it is not a valid reference."""
    image: str = args.image
    try:
        info = describe(image)
    except InvalidImageNameError as exc:
        print(f"kubelet-sim: error: {exc.reason}: {image_name_error_text(exc)}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(info, indent=2))
    else:
        width = max(len(key) for key in _FIELDS) + 1
        for key in _FIELDS:
            value = info[key]
            shown = "-" if value is None else (value or '""')
            print(f"{key + ':':<{width}} {shown}")
    return 0
