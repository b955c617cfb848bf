"""The command table, lazy command imports and lazy logging set-up of ``kubelet-sim``."""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from kubelet_sim.cli import commands
from kubelet_sim.cli.main import COMMANDS, build_parser

MODULES = sorted(info.name for info in pkgutil.iter_modules(commands.__path__))


def _registered(module: str) -> dict[str, str]:
    """What ``module.register`` adds: command name -> one-line help."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    importlib.import_module(f"{commands.__name__}.{module}").register(sub)
    return {action.dest: action.help or "" for action in sub._choices_actions}


@pytest.mark.parametrize("module", MODULES)
def test_the_table_lists_exactly_what_each_module_registers(module: str) -> None:
    listed = {name: help_text for name, (mod, help_text) in COMMANDS.items() if mod == module}
    assert _registered(module) == listed


def test_every_table_entry_names_an_existing_module() -> None:
    assert {module for module, _ in COMMANDS.values()} == set(MODULES)


def test_the_full_parser_has_every_command_with_its_arguments() -> None:
    parser = build_parser("*")
    args = parser.parse_args(["pull", "busybox", "--root", "/tmp/x", "--policy", "Never"])
    assert (args.command, args.image, args.root, args.policy) == (
        "pull",
        "busybox",
        Path("/tmp/x"),
        "Never",
    )
    assert callable(args.func)


def _loaded_after(argv: list[str]) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``main(argv)``."""
    code = (
        "import sys, json, contextlib, io\n"
        "from kubelet_sim.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main({argv!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize(
    ("argv", "absent"),
    [
        pytest.param(["--help"], {"structlog", "httpx", "sqlite3", "anyio"}, id="help"),
        pytest.param(["ref", "busybox"], {"structlog", "httpx", "sqlite3", "anyio"}, id="ref"),
        pytest.param(["images", "--help"], {"httpx", "kubelet_sim.cli.commands.pull"}, id="images"),
    ],
)
def test_short_commands_import_only_what_they_use(argv: list[str], absent: set[str]) -> None:
    loaded = _loaded_after(argv)
    assert not absent & loaded
    others = {f"kubelet_sim.cli.commands.{m}" for m in MODULES} - {
        f"kubelet_sim.cli.commands.{COMMANDS[argv[0]][0]}" if argv[0] in COMMANDS else ""
    }
    assert not others & loaded


def _function_imports(module: str) -> list[str]:
    source = Path(commands.__path__[0], f"{module}.py").read_text()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found += [
                ast.unparse(n) for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)
            ]
    return found


@pytest.mark.parametrize("module", MODULES)
def test_a_command_that_may_log_has_structlog_loaded_when_it_runs(module: str) -> None:
    # main() configures logging only when structlog is loaded once the command's module is
    # imported. A module that does not load structlog must not import anything later (inside a
    # function), or a late import could log through an unconfigured structlog onto stdout.
    code = f"import sys, kubelet_sim.cli.commands.{module}; print('structlog' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    if out.stdout.strip() == "False":
        assert _function_imports(module) == []
