"""The command table, lazy command imports and lazy logging set-up of ``kubelet-sim``."""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import json
import os
import pkgutil
import signal
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


PACKAGE_ROOT = Path(commands.__path__[0]).parents[2]  # the folder holding kubelet_sim/


def _module_file(name: str) -> Path | None:
    base = PACKAGE_ROOT.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _top_level_imports(name: str) -> frozenset[str]:
    """Every module ``name``'s module-level statements import (with parent packages)."""
    file = _module_file(name)
    assert file is not None, name
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.parse(file.read_text()).body:
        stack: list[ast.stmt] = [node]
        while stack:
            stmt = stack.pop()
            if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
                continue  # annotations only
            if isinstance(stmt, ast.Import):
                found |= {alias.name for alias in stmt.names}
            elif isinstance(stmt, ast.ImportFrom):
                base = stmt.module or ""
                if stmt.level:
                    parts = package.split(".")[: len(package.split(".")) - stmt.level + 1]
                    base = ".".join([*parts, *([stmt.module] if stmt.module else [])])
                found.add(base)
                found |= {
                    f"{base}.{a.name}" for a in stmt.names if _module_file(f"{base}.{a.name}")
                }
            elif isinstance(stmt, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(stmt, field, []):
                        stack.extend(
                            child.body if isinstance(child, ast.ExceptHandler) else [child]
                        )
    parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 1)}
    return frozenset(found | parents)


def _import_closure(name: str) -> set[str]:
    """The modules importing ``name`` loads: ours followed through, third-party names kept."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.split(".")[0] == "kubelet_sim" and _module_file(current):
            todo.extend(_top_level_imports(current))
    return seen


def test_the_import_closure_matches_what_python_loads() -> None:
    # The static closure used below is checked against a real import once.
    loaded = _loaded_after(["images", "--help"])
    closure = _import_closure("kubelet_sim.cli.commands.images")
    ours = {m for m in loaded if m.startswith("kubelet_sim")}
    assert {m for m in closure if m.startswith("kubelet_sim") and _module_file(m)} <= ours
    assert ("structlog" in closure) == ("structlog" in loaded)


@pytest.mark.parametrize("module", MODULES)
def test_a_command_that_may_log_has_structlog_loaded_when_it_runs(module: str) -> None:
    # main() configures logging only when structlog is loaded once the command's module is
    # imported. A module that does not load structlog must not import anything later (inside a
    # function), or a late import could log through an unconfigured structlog onto stdout.
    if "structlog" not in _import_closure(f"kubelet_sim.cli.commands.{module}"):
        assert _function_imports(module) == []


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["ref", "busybox"], id="ref-text"),
        pytest.param(["ref", "--output", "json", "busybox"], id="ref-json"),
        pytest.param(["config", "validate", "--output", "json", "{config}"], id="config-json"),
    ],
)
def test_a_reader_that_goes_away_ends_the_command_quietly(argv: list[str], tmp_path: Path) -> None:
    # `kubelet-sim ... | head`: the pipe's reader is gone before the first write.
    config = tmp_path / "kubelet.yaml"
    config.write_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n")
    argv = [a.replace("{config}", str(config)) for a in argv]
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "kubelet_sim", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 128 + signal.SIGPIPE


def test_pull_progress_shows_a_live_rate_in_the_same_units_as_the_sizes() -> None:
    import io
    import re
    import time

    from rich.console import Console

    from kubelet_sim.cli.commands.pull import progress_bars
    from kubelet_sim.core.digest import Digest
    from kubelet_sim.registry.manifests import Descriptor

    layer = Descriptor("application/vnd.oci.image.layer.v1.tar", Digest.from_bytes(b"x"), 10**7)
    out = io.StringIO()
    console = Console(file=out, width=160, color_system=None)
    bars, on_progress = progress_bars(console)
    for received in range(1, 6):  # five reports 20 ms apart, the layer still arriving
        on_progress("img", layer, received * 100_000)
        time.sleep(0.02)
    task = bars.tasks[0]
    assert not task.finished
    assert task.speed is not None
    assert task.speed > 0
    console.print(bars.make_tasks_table(bars.tasks))
    line = out.getvalue()
    assert "?" not in line  # neither the rate nor the time left is unknown
    assert re.search(r"0\.5/10\.0 MB [\d.]+ MB/s", line), line
    assert "MiB" not in line
    assert "KiB" not in line


def test_pull_downloads_as_many_layers_at_once_as_it_is_told() -> None:
    from kubelet_sim.cli.commands.pull import _node_options
    from kubelet_sim.core.platforms import parse_platform

    parser = build_parser("pull")
    linux = parse_platform("linux/amd64")
    told = _node_options(
        parser.parse_args(["pull", "busybox", "--max-concurrent-downloads", "8"]), linux
    ).client
    default = _node_options(parser.parse_args(["pull", "busybox"]), linux).client
    assert told is not None
    assert told.max_concurrent_downloads == 8
    assert default is not None
    assert default.max_concurrent_downloads == 3  # containerd's


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", "101"])
def test_pull_refuses_a_download_count_that_is_not_one_or_more(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser("pull").parse_args(["pull", "busybox", "--max-concurrent-downloads", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert (
        f"argument --max-concurrent-downloads: want a whole number from 1 to 100, got {value!r}"
        in err
    )


def test_a_pull_that_exits_at_once_still_flushes_its_output_and_runs_atexit(
    tmp_path: Path,
) -> None:
    # `pull` skips the interpreter's teardown (run()); its answer, exit status and the atexit
    # handlers (logging's shutdown, Ray's) must not be skipped with it.
    program = (
        "import atexit, sys\n"
        "class Torn:\n"
        "    def __del__(self): print('torn down', file=sys.stderr)\n"
        "kept = Torn()  # freed by the interpreter's teardown, which a pull skips\n"
        "atexit.register(lambda: print('atexit ran', file=sys.stderr))\n"
        f"sys.argv = ['kubelet-sim', 'pull', 'Bad/Name', '--root', {str(tmp_path)!r},"
        " '--output', 'json']\n"
        "from kubelet_sim.cli.main import run\n"
        "run()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 1
    answer = json.loads(done.stdout)  # whole: written and flushed before the exit
    assert answer["reason"] == "InvalidImageName"
    assert done.stderr.splitlines()[-1] == "atexit ran"
    assert "torn down" not in done.stderr  # exited at once: no teardown
