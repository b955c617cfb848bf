"""``kubelet-sim config validate FILE``: load a KubeletConfiguration and print its effect."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from kubelet_sim.config.kubelet import load_kubelet_config


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``config`` and its ``validate`` subcommand."""
    parser = subparsers.add_parser("config", help="inspect kubelet configuration files")
    commands = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    validate = commands.add_parser(
        "validate",
        help="load a KubeletConfiguration and print the effective image settings",
        description=(
            "Load a kubelet.config.k8s.io/v1beta1 KubeletConfiguration as the kubelet would "
            "(defaults, validation) and print the effective image-related settings in "
            "camelCase. Exits 1 with the offending file and field when the file is refused "
            "(every validation error at once). Unknown fields and duplicate keys are reported "
            "as warnings, as the kubelet logs them before decoding leniently; --strict refuses "
            "them."
        ),
    )
    validate.add_argument("file", metavar="FILE", help="path of the KubeletConfiguration YAML")
    validate.add_argument(
        "--strict",
        action="store_true",
        help="refuse unknown fields and duplicate keys (the kubelet logs them and decodes "
        "leniently, dropping unknown fields and keeping the last duplicate)",
    )
    validate.add_argument(
        "--output",
        "-o",
        choices=["text", "json"],
        default="text",
        help="output format (default: text)",
    )
    validate.set_defaults(func=run_validate)


def _text_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null (unset)"
    if isinstance(value, list | dict) or value == "":
        return json.dumps(value)
    return str(value)


def run_validate(args: argparse.Namespace) -> int:
    """Print the effective settings of ``args.file``; ConfigError propagates (exit 1)."""
    config = load_kubelet_config(args.file, strict=args.strict)
    settings = config.to_dict()
    warnings = list(config.strict_errors)
    static = config.static_pod_path
    if static and not os.path.exists(static):
        # The kubelet starts and watches the path; it only says it is missing.
        warnings.append(f"{args.file}: staticPodPath: {static} does not exist (yet)")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.output == "json":
        json.dump(settings, sys.stdout, indent=2)  # a loadable document; warnings on stderr
        sys.stdout.write("\n")
        return 0
    print(f"{args.file}: valid {settings.pop('kind')} ({settings.pop('apiVersion')})")
    width = max(len(name) for name in settings)
    for name, value in settings.items():
        print(f"  {name:<{width}}  {_text_value(value)}")
    if config.ignored_fields:
        print(f"ignored upstream fields ({len(config.ignored_fields)}): ", end="")
        print(", ".join(config.ignored_fields))
    return 0
