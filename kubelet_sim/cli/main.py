"""Command line entry point; the only place logging is configured.

Subcommands live in :mod:`kubelet_sim.cli.commands`, one module each, listed in :data:`COMMANDS`
with their one-line help; only the module of the command that runs is imported.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import NoReturn

from kubelet_sim import __version__
from kubelet_sim.cli import commands
from kubelet_sim.errors import KubeletSimError
from kubelet_sim.node.paths import default_root


def configure_logging(level: str = "warning", *, json_lines: bool | None = None) -> None:
    """Configure structlog: JSON lines off a terminal, console output on one."""
    from kubelet_sim.cli.logs import configure

    configure(level, json_lines=json_lines)


def _configure_if_needed(level: str) -> None:
    """Configure logging when the chosen command can log.

    A command that logs imports structlog (at module level: a test checks that command modules
    import nothing inside functions), so when structlog is not loaded nothing can log and
    configuring it would only cost start-up time.
    """
    if "structlog" in sys.modules:
        configure_logging(level)


COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module under kubelet_sim.cli.commands, one-line help). A module is imported only when
    # its command runs (or its own --help is asked for), so start-up stays fast; a test checks that
    # this table and the modules' register() agree.
    "bench": ("bench", "run a scripted workload over many simulated nodes; report with plots"),
    "config": ("config", "inspect kubelet configuration files"),
    "demo": ("demo", "run the built-in demo: local registries, synthetic images, the daemon, pods"),
    "describe": ("describe", "describe a pod of a running daemon"),
    "explain": (
        "explain",
        "explain whether and why an image would pull here (a preflight, no layers fetched)",
    ),
    "fsck": ("store", "verify every blob and reference in the local store"),
    "gc": ("store", "run image garbage collection once, as the kubelet does"),
    "images": ("images", "list images in the local store"),
    "kubeconfig": (
        "kubeconfig",
        "print a kubeconfig for a running daemon (KUBECONFIG=... kubectl get pods)",
    ),
    "manifest": ("manifest", "inspect, create, annotate and push manifest lists"),
    "pull": ("pull", "ensure one image exists, as the kubelet would"),
    "ref": ("ref", "parse an image reference the way the kubelet does"),
    "rmi": ("images", "remove images from the local store"),
    "run": ("run", "run the node agent (static pods, HTTP API, /metrics)"),
    "seed": ("seed", "build a workload's synthetic images and push them (skips existing blobs)"),
}


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is not a global option)."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif word in COMMANDS:
            return word
        elif not word.startswith("-"):
            return None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every command listed, and ``command``'s module (all when "*")
    imported and registered with its full arguments."""
    parser = argparse.ArgumentParser(
        prog="kubelet-sim",
        description="The kubelet's image-pull subsystem as a standalone engine.",
        epilog=f"default root: {default_root()} (images in ROOT/store)",
    )
    parser.add_argument("--version", action="version", version=f"kubelet-sim {__version__}")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error", "critical"],
        help="log verbosity (default: warning)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = {module for name, (module, _) in COMMANDS.items() if command in (name, "*")}
    registered: set[str] = set()
    for name, (module, help_text) in COMMANDS.items():
        if module in wanted:
            if module not in registered:
                importlib.import_module(f"{commands.__name__}.{module}").register(sub)
                registered.add(module)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    return _main(argv)[0]


def run() -> NoReturn:
    """The ``kubelet-sim`` executable and ``python -m kubelet_sim``: :func:`main`, then exit.

    A command that sets ``exit_at_once`` (a one-shot ``pull``: everything it opened is closed,
    its output printed) exits without the interpreter's teardown of every module and object,
    which was 40-60 ms of a pull's wall time after its work was done. What that teardown would
    do that matters is done first: other threads that are not daemons are waited for (anyio's
    workers, told to stop when the event loop closed; any still running after a second: the
    usual exit instead), ``atexit`` handlers run (logging's shutdown among them) and both output
    streams are flushed; a standard output that cannot be flushed exits 120, as CPython does.
    """
    status, at_once = _main(None)
    if at_once and _threads_done(timeout=1.0):
        atexit._run_exitfuncs()
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            status = 120
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os._exit(status)
    raise SystemExit(status)


def _threads_done(*, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for every thread but this one that is not a daemon."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            return False
    return True


def _main(argv: Sequence[str] | None) -> tuple[int, bool]:
    """The exit status, and whether the process may exit at once (see :func:`run`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen(argv))
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Named by the command's own usage (``bench: error: ...``), not the top level's.
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        chosen = sub.choices.get(args.command) if sub is not None and args.command else None
        (chosen or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2, False
    _configure_if_needed(args.log_level)
    at_once = bool(getattr(args, "exit_at_once", False))
    try:
        status: int = args.func(args)
        sys.stdout.flush()
    except KubeletSimError as exc:
        print(f"kubelet-sim: error: {exc}", file=sys.stderr)
        return 1, at_once
    except KeyboardInterrupt:
        return 130, False
    except BaseExceptionGroup as group:
        if group.split(KeyboardInterrupt)[1] is not None:
            raise
        return 130, False  # Ctrl-C, handed on by task groups
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as a shell tool does. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE, False
    return status, at_once
