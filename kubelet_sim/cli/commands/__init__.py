"""Subcommands of ``kubelet-sim``: one module each, found by :func:`kubelet_sim.cli.main.build_parser`.

Each module exposes ``register(subparsers) -> None`` which adds its parser and sets
``func=`` to a callable ``(args) -> int`` returning the exit status.
"""
