"""Command line entry point; the only place logging is configured.

Subcommands live in :mod:`kubelet_sim.cli.commands`, one module each, discovered at start-up so
that adding a command never means editing a shared list.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

import structlog
import structlog.tracebacks

from kubelet_sim import __version__
from kubelet_sim.cli import commands
from kubelet_sim.errors import KubeletSimError
from kubelet_sim.node.paths import default_root


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def configure_logging(level: str = "warning", *, json_lines: bool | None = None) -> None:
    """Configure structlog: JSON lines off a terminal, console output on one."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    # Tracebacks never show local variables: a frame's locals can hold request headers or
    # credentials (structlog's console default shows them).
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
        )
    )
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json_lines:
        processors.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # Looked up per logger: sys.stderr may be replaced (test capture, daemon redirection).
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every subcommand module registered."""
    parser = argparse.ArgumentParser(
        prog="kubelet-sim",
        description="The kubelet's image-pull subsystem as a standalone engine.",
        epilog=f"default store root: {default_root()}",
    )
    parser.add_argument("--version", action="version", version=f"kubelet-sim {__version__}")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error", "critical"],
        help="log verbosity (default: warning)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    configure_logging(args.log_level)
    try:
        status: int = args.func(args)
    except KubeletSimError as exc:
        print(f"kubelet-sim: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status
