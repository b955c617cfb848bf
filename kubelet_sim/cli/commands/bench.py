"""``kubelet-sim bench WORKLOAD``: seed, run every simulated node, write the report and plots.

Every node of the workload runs as its own engine with its own store and settings; they share only
the registry (``--registry HOST:PORT``, else a local one started for the run). Nodes keep the light
in-memory store (every byte received and verified, nothing written) unless ``--store disk`` or
``--keep-stores``. Writes ``report.json``, ``report.md`` and the PNG plots to ``--out`` (default
``bench-results/<workload name>``), in place of an earlier run's (:mod:`.workloads.outputs`).

Beyond one event loop:

- ``--shards N`` splits the nodes over N worker processes on this machine, started at one agreed
  instant, and merges their raw records into one report;
- ``--executor ray`` runs the same shards as Ray tasks, on a local Ray cluster started for the run
  or on ``--ray-address ADDRESS`` (needs the ``ray`` extra);
- ``--shard I/N --out DIR [--start-at UNIX_TIME]`` runs one shard and writes its raw records to
  ``DIR/shard-I-of-N.json`` (what an external scheduler, e.g. a Kubernetes Indexed Job, runs);
  ``kubelet-sim bench merge DIR... --out REPORT_DIR`` turns them into the report.

``--virtual`` runs the same nodes on a virtual clock (trio's MockClock, which jumps whenever
every task waits) against a modelled registry (the workload's ``virtual.registry``: latency,
bandwidth, concurrency, token auth) with the workload's faults: hours of rollout, outage and
backoff in minutes of wall time. No registry is started or contacted. With ``--shards N``,
``--executor ray`` or ``--shard I/N``, each shard models its share of the registry (1/N of its
egress and concurrency) and the report merges what the shards' registries saw.

``--repeat N`` runs the workload N times (1 to 100; in any of the modes above but one shard):
each run's report goes to ``DIR/run-1`` ... ``DIR/run-N`` and ``DIR/report.json``/``report.md``
is the *repeat report*, the same report with each figure the median over the runs, plus a
``repeat`` section with every headline figure's values, min, max and interquartile range. The
workload's thresholds are checked on the medians. A real bench's identical runs differ by 10-15 %;
``--virtual`` runs are deterministic (only CPU, memory and wall time vary).

``kubelet-sim bench --compare A.json B.json`` prints two reports side by side; when both are
repeat reports, with each figure's spreads and a verdict: ``~`` within noise, else how B moved.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kubelet_sim.cli.commands.seed import add_registry_args, registry_for
from kubelet_sim.errors import ConfigError

if TYPE_CHECKING:  # the workloads package is imported when the command runs, not at start-up
    from kubelet_sim.workloads import BenchResult, Workload


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "bench",
        help="run a scripted workload over many simulated nodes; report with plots",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "workload", nargs="*", metavar="WORKLOAD", help="workload file (YAML), or: merge DIR..."
    )
    add_registry_args(parser)
    parser.add_argument("--out", type=Path, metavar="DIR", help="report folder")
    parser.add_argument(
        "--store", choices=["memory", "disk"], default="memory",
        help="node stores: light in memory (default) or durable on disk",
    )  # fmt: skip
    parser.add_argument("--keep-stores", action="store_true", help="keep disk stores in --out")
    parser.add_argument("--timeout", type=float, help="override the workload's run.timeout (s)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no live progress display")
    parser.add_argument("--shards", type=int, default=1, metavar="N", help="worker processes")
    parser.add_argument(
        "--executor", choices=["processes", "ray"], default="processes",
        help="where --shards run: child processes here (default) or Ray tasks",
    )  # fmt: skip
    parser.add_argument("--ray-address", metavar="ADDRESS", help="an existing Ray cluster")
    parser.add_argument("--shard", metavar="I/N", help="run only shard I of N (needs --out)")
    parser.add_argument(
        "--start-at", type=float, metavar="UNIX_TIME", help="the instant shards agreed to start"
    )
    parser.add_argument("--no-seed", action="store_true", help="the images are already seeded")
    parser.add_argument(
        "--virtual", action="store_true",
        help="virtual time against the workload's modelled registry (no real registry)",
    )  # fmt: skip
    parser.add_argument(
        "--compare", nargs=2, type=Path, metavar=("A.json", "B.json"), help="compare two reports"
    )
    parser.add_argument(
        "--repeat", metavar="N",
        help="run the workload N times (1-100): runs in DIR/run-K, medians and spreads in DIR",
    )  # fmt: skip
    parser.add_argument("--output", choices=["text", "json", "markdown"], default="text")
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="serve the fleet's Prometheus metrics (every node's series summed, and the run's "
        "own) at http://HOST:PORT/metrics while the run goes on",
    )
    parser.set_defaults(func=_bench_until_stopped)


def _bench_until_stopped(args: argparse.Namespace) -> int:
    """:func:`_bench` with SIGTERM taken as Ctrl-C outside the run's own handling of both, so a
    bench stopped while it seeds, checks or writes its report still stops the registry it
    started and drops the report it was writing (exit 130), instead of dying with both left.
    (A run's own handler, while it runs, makes the first SIGTERM a partial report as before.)"""

    def interrupt(signum: int, frame: object) -> None:
        signal.raise_signal(signal.SIGINT)  # handled as Ctrl-C is, by asyncio's runner or trio

    if threading.current_thread() is not threading.main_thread():
        return _bench(args)  # signal handlers belong to the main thread (a test's caller)
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return _bench(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _bench(args: argparse.Namespace) -> int:
    repeat = _repeat_count(args)
    if args.compare:
        if args.workload:
            raise ConfigError(None, "--compare", "give either a workload or --compare, not both")
        if repeat is not None:
            raise ConfigError(None, "--repeat", "runs a workload; --compare reads two reports")
        return _compare(args)
    if args.workload and args.workload[0] == "merge":
        if repeat is not None:
            raise ConfigError(None, "--repeat", "not with bench merge (it merges one run's shards)")
        return _merge(args, [Path(p) for p in args.workload[1:]])
    if len(args.workload) != 1:
        raise ConfigError(
            None, "WORKLOAD", "give one workload file (or: bench merge DIR..., --compare A B)"
        )
    from kubelet_sim.workloads import load_workload

    path = Path(args.workload[0])
    workload = load_workload(path)
    if args.timeout is not None:
        import math

        if not (math.isfinite(args.timeout) and args.timeout > 0):
            raise ConfigError(
                None, "--timeout", f"must be a positive number of seconds, got {args.timeout!r}"
            )
        workload = replace(workload, run=replace(workload.run, timeout=args.timeout))
    store = "disk" if args.keep_stores else args.store
    if args.start_at is not None:
        _check_start_at(args.start_at)
    if args.listen is not None and not args.virtual and args.shard is None:
        from kubelet_sim.workloads.live import parse_listen

        parse_listen(args.listen)  # a bad value is named before any registry is contacted
    if repeat is not None and args.shard is not None:
        raise ConfigError(None, "--repeat", "not with --shard (repeat the whole run, or the job)")
    if args.virtual:
        return _virtual(args, path, workload, repeat)
    if args.shard is not None:
        if args.listen is not None:
            raise ConfigError(None, "--listen", "not with --shard (one shard's nodes only)")
        return _one_shard(args, path, workload, store)
    _check_shards(args)
    console = _console(stderr=args.output == "json")  # with --output json, stdout is the JSON
    out = _out_dir(args, workload.name)
    if (args.shards > 1 or args.executor == "ray") and args.listen is not None:
        raise ConfigError(None, "--listen", "not with --shards or Ray (one process's nodes)")
    with registry_for(args, console) as host:

        def run_once(run_out: Path) -> dict[str, Any]:
            return _real_run(args, path, workload, store, host, console, run_out)

        if repeat is not None:
            runs = _repeat_runs(console, out, repeat, run_once)
        else:
            report = run_once(out)
    if repeat is not None:
        return _emit_repeat(args, console, out, repeat, *runs)
    return _emit(args, console, report, out)


def _real_run(
    args: argparse.Namespace,
    path: Path,
    workload: Workload,
    store: str,
    host: str,
    console: Console,
    out: Path,
) -> dict[str, Any]:
    """One run against ``host``: seeded (or checked), run, its report and plots written to
    ``out``; in this process, or over ``--shards`` processes or Ray tasks."""
    if args.shards > 1 or args.executor == "ray":
        seed = anyio.run(_prepare, workload, host, console, args.no_seed, args.docker_config)
        records = _sharded(args, path, workload, host, out, store)
        return _write_records(records, out, plots=not args.no_plots, seed=seed)
    with tempfile.TemporaryDirectory(prefix="ksim-") as tmp:
        stores = (
            Path(tempfile.mkdtemp(prefix="stores-", dir=out)) if args.keep_stores else Path(tmp)
        )
        # A panel on a terminal, lines in a log, nothing with --quiet.
        live = None if args.quiet else sys.stdout.isatty()
        result = anyio.run(
            _run, workload, host, stores, console, live, store, args.no_seed, args.listen,
            args.docker_config,
        )  # fmt: skip
        return _write(result, out, plots=not args.no_plots)


def _repeat_count(args: argparse.Namespace) -> int | None:
    """``--repeat``'s run count (None without it); a bad value is named before anything runs."""
    value = getattr(args, "repeat", None)
    if value is None:
        return None
    from kubelet_sim.workloads.repeat import parse_repeat

    return parse_repeat(value)


def _repeat_runs(
    console: Console, out: Path, count: int, run_once: Callable[[Path], dict[str, Any]]
) -> tuple[list[dict[str, Any]], bool]:
    """``run_once`` into ``out/run-1`` ... ``out/run-COUNT``: the reports of the runs that wrote
    one, and whether a Ctrl-C stopped the repeat. A run that Ctrl-C ended with a partial report
    (a real run in this process) is kept; one stopped before its report (``--virtual``,
    ``--shards``, or while seeding) is dropped. However the repeat ends, the ``run-K`` folders
    it did not write are named as an earlier repeat's."""
    reports: list[dict[str, Any]] = []
    interrupted = False
    try:
        for k in range(1, count + 1):
            run_out = out / f"run-{k}"
            try:
                run_out.mkdir(exist_ok=True)
            except OSError as exc:
                raise ConfigError(None, "--out", f"cannot make {run_out}: {exc.strerror}") from None
            console.print(f"[bold]run {k} of {count}[/bold] -> {run_out}", highlight=False)
            try:
                report = run_once(run_out)
            except BaseException:
                with contextlib.suppress(OSError):
                    run_out.rmdir()  # only if empty: nothing of an earlier repeat in it
                raise
            reports.append(report)
            s = report["summary"]
            ttr = s["time_to_ready"]
            console.print(
                f"run {k} of {count}: {s['pods_ready']}/{s['pods']} pods ready, time to ready p50 "
                f"{_seconds(ttr['p50'])}, p99 {_seconds(ttr['p99'])}, makespan "
                f"{_seconds(s['makespan'])}",
                highlight=False,
            )
            if report["run"].get("interrupted"):
                interrupted = True
                break
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted: run {len(reports) + 1} is dropped (it wrote no report)"
        )
        interrupted = True
    except BaseException:
        _note_earlier_runs(console, out, written=len(reports), replaced=False)
        raise
    if not reports:  # no repeat report to come; with one, _emit_repeat names them once it is in
        _note_earlier_runs(console, out, written=0, replaced=False)
    return reports, interrupted


def _note_earlier_runs(console: Console, out: Path, *, written: int, replaced: bool) -> None:
    """Say what in ``out`` this repeat did not write: the ``run-K`` folders after ``run-WRITTEN``
    and, unless its own repeat report is to replace it, the repeat report there."""
    from kubelet_sim.workloads.outputs import REPORT_FILES

    numbers = (int(p.name[4:]) for p in out.glob("run-*") if p.name[4:].isdigit() and p.is_dir())
    earlier = [f"run-{k}" for k in sorted(k for k in numbers if k > written)]
    if not replaced:
        earlier[:0] = [name for name in REPORT_FILES if (out / name).exists()]
    if earlier:
        names = ", ".join(earlier)
        console.print(
            f"[yellow]note: {names} in {out} are from an earlier repeat, not this one",
            highlight=False,
        )


def _seconds(value: float | None) -> str:
    return "not ready" if value is None else f"{value:.3f}s"


def _emit_repeat(
    args: argparse.Namespace,
    console: Console,
    out: Path,
    planned: int,
    reports: list[dict[str, Any]],
    interrupted: bool,
) -> int:
    """Aggregate the runs into the repeat report in ``out``; show and judge it as :func:`_emit`
    does one run's."""
    from kubelet_sim.workloads.repeat import aggregate_reports, save_repeat

    if not reports:
        console.print("[yellow]interrupted before any run wrote its report: no repeat report")
        return 130
    dirs = [f"run-{k}" for k in range(1, len(reports) + 1)]
    report = aggregate_reports(reports, dirs, planned=planned, interrupted=interrupted)
    try:
        save_repeat(report, out)
    except BaseException:
        _note_earlier_runs(console, out, written=len(reports), replaced=False)
        raise
    _note_earlier_runs(console, out, written=len(reports), replaced=True)
    return _emit(args, console, report, out)


def _check_shards(args: argparse.Namespace) -> None:
    if not 1 <= args.shards <= 256:
        raise ConfigError(None, "--shards", f"must be between 1 and 256, got {args.shards}")


def _console(*, stderr: bool = False) -> Console:
    """The report's console: the terminal's width, or 160 columns into a file or pipe."""
    return Console(width=None if sys.stdout.isatty() else 160, stderr=stderr)


def _out_dir(args: argparse.Namespace, name: str) -> Path:
    """``--out``, else ``bench-results/NAME``; made if missing, and proven writable before the
    run rather than after it."""
    from kubelet_sim.workloads.outputs import check_writable

    out: Path = args.out or Path("bench-results") / name
    check_writable(out)
    return out


def _virtual(args: argparse.Namespace, path: Path, workload: Workload, repeat: int | None) -> int:
    """``--virtual``: the nodes on a virtual clock against the modelled registry; in this
    process, over ``--shards N`` processes or Ray tasks (each modelling its share of the
    registry), or one shard alone (``--shard I/N --out DIR``)."""
    conflicts = [
        ("--registry", args.registry is not None),
        ("--registry-dir", args.registry_dir is not None),
        ("--start-at", args.start_at is not None),
        ("--store", args.store != "memory" or args.keep_stores),
        ("--no-seed", args.no_seed),
        ("--listen", args.listen is not None),
    ]
    for flag, given in conflicts:
        if given:
            raise ConfigError(None, flag, "not with --virtual (the modelled registry, no other)")
    if args.shard is not None:
        from kubelet_sim.workloads.shards import parse_shard, run_shard_of

        index, count = parse_shard(args.shard)
        _shard_out(args)
        record = run_shard_of(workload, "", (index, count), start_at=None, store="memory",
                              virtual=True)  # fmt: skip
        return _write_shard(args, record, (index, count), Console(stderr=True, quiet=args.quiet))
    _check_shards(args)
    # With --output json, stdout is the JSON document alone.
    console = _console(stderr=args.output == "json")
    out = _out_dir(args, workload.name)
    pods = sum(t.count for t in workload.pods)
    console.print(
        f"virtual time: {workload.node_count} nodes, {pods} pods against the modelled registry"
        + (f", over {args.shards} shards" if args.shards > 1 or args.executor == "ray" else "")
    )

    def run_once(run_out: Path) -> dict[str, Any]:
        return _virtual_run(args, path, workload, console, run_out)

    if repeat is not None:
        return _emit_repeat(args, console, out, repeat, *_repeat_runs(console, out, repeat,
                                                                      run_once))  # fmt: skip
    return _emit(args, console, run_once(out), out)


def _virtual_run(
    args: argparse.Namespace, path: Path, workload: Workload, console: Console, out: Path
) -> dict[str, Any]:
    """One virtual run (in this process or over shards), its report and plots written to ``out``."""
    if args.shards > 1 or args.executor == "ray":
        records = _virtual_shards(args, path, out)
        return _write_records(records, out, plots=not args.no_plots, source=str(path))
    from kubelet_sim.workloads.progress import LiveProgress
    from kubelet_sim.workloads.virtual import run_virtual

    with tempfile.TemporaryDirectory(prefix="ksim-") as tmp:
        if sys.stdout.isatty() and not args.quiet:
            with LiveProgress(console, workload) as progress:
                result = run_virtual(workload, Path(tmp), on_tick=progress)
        else:
            result = run_virtual(workload, Path(tmp))
    return _write(result, out, plots=not args.no_plots)


def _virtual_shards(args: argparse.Namespace, path: Path, out: Path) -> list[dict[str, Any]]:
    if args.executor == "ray":
        from kubelet_sim.workloads.rayexec import run_ray

        return run_ray(
            path, args.shards, "", start_at=0.0, store="memory", timeout=args.timeout,
            address=args.ray_address, virtual=True,
        )  # fmt: skip
    from kubelet_sim.workloads.shards import run_processes

    with tempfile.TemporaryDirectory(prefix="shards-", dir=out) as shard_dir:
        return run_processes(
            path, args.shards, "", Path(shard_dir), start_at=0.0, store="memory",
            timeout=args.timeout, virtual=True,
        )  # fmt: skip


def _emit(args: argparse.Namespace, console: Console, report: dict[str, Any], out: Path) -> int:
    """The run's summary on the terminal, or its JSON alone on stdout with ``--output json``
    (a repeat report's with its ``repeat`` section as the summary's ``repeat``)."""
    if args.output == "json":
        doc = report["summary"]
        if "repeat" in report:
            doc = {**doc, "repeat": report["repeat"]}
        print(json.dumps(doc, indent=2))
    else:
        _print_summary(console, report, out)
        if "repeat" in report:
            _print_repeat(console, report, out)
    from kubelet_sim.workloads.thresholds import THRESHOLDS_FAILED

    results = report["summary"].get("thresholds", [])
    if results and args.output != "json":
        _print_thresholds(console, results)
    if report["run"].get("interrupted"):
        console.print(f"[yellow]partial report (interrupted) in {out}")
        return 130  # as a shell reports a Ctrl-C'd command, after the report is written
    if any(not r["passed"] for r in results):
        return THRESHOLDS_FAILED
    return 0


def _print_repeat(console: Console, report: dict[str, Any], out: Path) -> None:
    """A repeat report's runs: each headline figure's median, range and IQR over them."""
    from kubelet_sim.workloads.compare import format_figure
    from kubelet_sim.workloads.repeat import relative_iqr

    rep = report["repeat"]
    n = rep["runs"]
    table = Table(title=f"{n} runs: median, range and interquartile range (IQR) of each figure")
    columns = ["figure", "median", "min", "max", "IQR", "IQR/median"]
    if n <= 10:
        columns.append("runs")
    for column in columns:
        table.add_column(column, justify="left" if column in ("figure", "runs") else "right")
    for name, stats in rep["figures"].items():
        unit = stats["unit"]
        cells = [name, *(format_figure(stats[k], unit) for k in ("median", "min", "max", "iqr")),
                 relative_iqr(stats)]  # fmt: skip
        if n <= 10:
            cells.append(", ".join(format_figure(v, unit) for v in stats["values"]))
        table.add_row(*(Text(c) for c in cells))
    console.print(table)
    dirs = rep["run_dirs"]
    console.print(
        f"repeat report: medians of {n} runs (of {rep['planned']}); each run's report in "
        f"{out / dirs[0]} ... {out / dirs[-1]}; detail and plots from {dirs[rep['median_run'] - 1]}"
        ", the median run",
        highlight=False,
    )


def _print_thresholds(console: Console, results: list[dict[str, Any]]) -> None:
    """Each threshold with its value: what a CI log shows when the job fails."""
    from kubelet_sim.workloads.thresholds import THRESHOLDS_FAILED

    failed = sum(1 for r in results if not r["passed"])
    for r in results:
        value = "no value" if r["value"] is None else f"{r['value']:g}"
        mark = "[green]pass[/green]" if r["passed"] else "[red]FAIL[/red]"
        note = f" ({r['note']})" if r.get("note") else ""
        console.print(f"threshold {mark}: {r['threshold']}  (is {value}){note}", highlight=False)
    if failed:
        console.print(
            f"[red]{failed} of {len(results)} thresholds failed: exit status {THRESHOLDS_FAILED}"
        )


def _check_start_at(value: float) -> None:
    """A start instant that is a real time within a day from now."""
    import math
    import time

    if not math.isfinite(value) or abs(value - time.time()) > 86_400:
        raise ConfigError(
            None, "--start-at", f"expected a Unix time within a day of now, got {value!r}"
        )


def _one_shard(args: argparse.Namespace, path: Path, workload: Workload, store: str) -> int:
    from kubelet_sim.workloads.shards import parse_shard, run_shard_of

    index, count = parse_shard(args.shard)
    _shard_out(args)
    console = Console(stderr=True, quiet=args.quiet)
    with registry_for(args, console) as host:
        anyio.run(_prepare, workload, host, console, args.no_seed, args.docker_config)
        record = run_shard_of(
            workload, host, (index, count), start_at=args.start_at, store=store,
            push_creds=_retag_creds(workload, host, args.docker_config),
        )  # fmt: skip
    return _write_shard(args, record, (index, count), console)


def _retag_creds(workload: Workload, host: str, docker_config: Path | None) -> Any:
    """What a ``retag`` churn action pushes with: what seeding pushed with (``--docker-config``'s
    entry for ``host``); None lets the run use the workload's pull secret."""
    from kubelet_sim.workloads.spec import ChurnKind

    if docker_config is None or not any(a.kind is ChurnKind.RETAG for a in workload.churn):
        return None
    from kubelet_sim.workloads.target import push_credentials

    return push_credentials(workload, host, docker_config)


def _shard_out(args: argparse.Namespace) -> None:
    """``--shard``'s ``--out``: given, and writable before the shard runs."""
    from kubelet_sim.workloads.outputs import check_writable

    if args.out is None:
        raise ConfigError(None, "--out", "--shard writes its records to --out DIR; give one")
    check_writable(args.out)


def _write_shard(
    args: argparse.Namespace, record: dict[str, Any], shard: tuple[int, int], console: Console
) -> int:
    """Write one shard's records to ``--out`` and say where."""
    from kubelet_sim.workloads.shards import shard_file, write_record

    target = shard_file(args.out, *shard)
    write_record(record, target)
    kind = " (virtual)" if record["run"].get("virtual") else ""
    console.print(
        f"shard {shard[0]}/{shard[1]}{kind}: {len(record['nodes'])} nodes, records in {target}"
    )
    return 0


def _sharded(
    args: argparse.Namespace, path: Path, workload: Workload, host: str, out: Path, store: str
) -> list[dict[str, Any]]:
    from kubelet_sim.workloads.shards import agreed_start, run_processes

    start_at = args.start_at or agreed_start(workload.node_count, args.shards)
    if args.executor == "ray":
        from kubelet_sim.workloads.rayexec import run_ray

        return run_ray(
            path, args.shards, host, start_at=start_at, store=store, timeout=args.timeout,
            address=args.ray_address,
        )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="shards-", dir=out) as shard_dir:
        return run_processes(
            path, args.shards, host, Path(shard_dir), start_at=start_at, store=store,
            timeout=args.timeout, docker_config=args.docker_config,
        )  # fmt: skip


def _merge(args: argparse.Namespace, paths: list[Path]) -> int:
    from kubelet_sim.workloads.shards import load_shard_records

    if not paths:
        raise ConfigError(None, "merge", "give the folders (or files) holding the shard records")
    from kubelet_sim.workloads.report import merge_records

    records = load_shard_records(paths)
    try:
        report = merge_records(records, source=str(paths[0]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # A record that passed the shape check but whose finer parts were edited by hand.
        raise ConfigError(
            str(paths[0]), None, f"the shard records cannot be merged ({type(exc).__name__})"
        ) from None
    console = _console(stderr=args.output == "json")  # with --output json, stdout is the JSON
    out = _out_dir(args, report["workload"]["name"])
    report = _save(report, out, plots=not args.no_plots)
    return _emit(args, console, report, out)


async def _seed(
    workload: Workload, host: str, console: Console, docker_config: Path | None = None
) -> Any:
    from kubelet_sim.errors import RegistryTransportError
    from kubelet_sim.workloads import seed_workload
    from kubelet_sim.workloads.target import push_credentials, unreachable

    creds = push_credentials(workload, host, docker_config)
    try:
        seed = await seed_workload(workload, host, creds=creds)
    except RegistryTransportError as exc:
        raise unreachable(host, exc) from None
    console.print(
        f"seeded {seed.images} images ({seed.blobs_uploaded} blobs uploaded, "
        f"{seed.blobs_skipped} already present) in {seed.seconds:.1f}s; running "
        f"{workload.node_count} nodes, {sum(t.count for t in workload.pods)} pods"
    )
    return seed


async def _prepare(
    workload: Workload,
    host: str,
    console: Console,
    no_seed: bool,
    docker_config: Path | None = None,
) -> Any:
    """Seed the images, or with ``--no-seed`` check that every one is there (before any node
    starts: a missing image is named now, not found as ErrImagePull in the report)."""
    if not no_seed:
        return await _seed(workload, host, console, docker_config)
    from kubelet_sim.workloads.target import check_images

    checked = await check_images(workload, host)
    console.print(f"--no-seed: {host} has all {checked} of the workload's images", highlight=False)
    return None


async def _run(
    workload: Workload,
    host: str,
    stores: Path,
    console: Console,
    live: bool | None,
    store: str,
    no_seed: bool,
    listen: str | None = None,
    docker_config: Path | None = None,
) -> BenchResult:
    from kubelet_sim.workloads import run_workload
    from kubelet_sim.workloads.progress import LineProgress, LiveProgress
    from kubelet_sim.workloads.runner import Snapshot

    stop = anyio.Event()
    pods = sum(t.count for t in workload.pods)
    with ExitStack() as stack:
        fleet = None
        if listen is not None:  # listening first: an address in use fails before any push
            from kubelet_sim.workloads.live import FleetCollector, serve_fleet_metrics

            fleet = FleetCollector()
            server = stack.enter_context(serve_fleet_metrics(listen, fleet))
            address, port = server.server_address[:2]
            console.print(f"fleet metrics: http://{address}:{port}/metrics", highlight=False)
        seed = await _prepare(workload, host, console, no_seed, docker_config)
        console.print(
            f"run started: {workload.node_count} nodes, {pods} pods against {host}",
            highlight=False,
        )
        progress: Callable[[Snapshot], None] | None = None
        if live:
            progress = stack.enter_context(LiveProgress(console, workload))
        elif live is not None:
            progress = LineProgress(console, workload)
        on_nodes = None
        if fleet is not None:
            on_nodes, shown = fleet.attach, progress

            def progress_and_metrics(snap: Snapshot) -> None:
                assert fleet is not None
                fleet.tick(snap)
                if shown is not None:
                    shown(snap)

            progress = progress_and_metrics
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_interrupt, stop, console)
            result = await run_workload(
                workload, host, stores, seed=seed, on_tick=progress, store=store, stop=stop,
                on_nodes=on_nodes, push_creds=_retag_creds(workload, host, docker_config),
            )  # fmt: skip
            tg.cancel_scope.cancel()
    return result


async def _stop_on_interrupt(stop: anyio.Event, console: Console) -> None:
    """The first Ctrl-C (or SIGTERM) ends the run with a partial report of what it measured;
    a second one quits at once (the default action of the signal: no report)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if stop.is_set():
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            stop.set()
            console.print(
                "[yellow]interrupted: stopping and writing a partial report "
                "(press Ctrl-C again to quit without one)"
            )


def _write_records(
    records: list[dict[str, Any]],
    out: Path,
    *,
    plots: bool,
    seed: Any = None,
    source: str = "<shards>",
) -> dict[str, Any]:
    from kubelet_sim.workloads.report import merge_records

    report = merge_records(records, source=source)
    if seed is not None:
        report["images"]["seeding"] = seed.to_dict()
        report["images"]["sizes"] = seed.sizes
    return _save(report, out, plots=plots)


def _write(result: BenchResult, out: Path, *, plots: bool) -> dict[str, Any]:
    from kubelet_sim.workloads import build_report

    return _save(build_report(result), out, plots=plots)


def _save(report: dict[str, Any], out: Path, *, plots: bool) -> dict[str, Any]:
    """Write ``report`` (and its plots) into ``out``, in place of an earlier run's files, all of
    them or none (:func:`~kubelet_sim.workloads.outputs.staged_outputs`)."""
    from kubelet_sim.workloads import render_markdown
    from kubelet_sim.workloads.outputs import staged_outputs

    with staged_outputs(out) as staging:
        report.pop("plots", None)
        if plots:
            from kubelet_sim.workloads.plots import write_plots

            report["plots"] = [p.name for p in write_plots(report, staging)]
        (staging / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (staging / "report.md").write_text(render_markdown(report))
    return report


def _print_summary(console: Console, report: dict[str, Any], out: Path) -> None:
    s = report["summary"]
    t = s["time_to_ready"]

    def sec(v: float | None) -> str:
        return "not ready" if v is None else f"{v:.3f}s"

    table = Table(title=f"{report['workload']['name']}: {s['pods_ready']}/{s['pods']} pods ready")
    for column in ("group", "nodes", "p50", "p90", "p99", "max", "makespan", "pulls", "failed",
                   "cache hits", "MiB", "peak in flight"):  # fmt: skip
        table.add_column(column, justify="right" if column != "group" else "left")
    for name, g in report["groups"].items():
        gt = g["time_to_ready"]
        table.add_row(
            name, str(g["nodes"]), sec(gt["p50"]), sec(gt["p90"]), sec(gt["p99"]), sec(gt["max"]),
            sec(g["makespan"]), str(g["pulls"]), str(g["pull_errors"]), str(g["cache_hits"]),
            f"{g['bytes_pulled'] / 1048576:.1f}", str(g["peak_pulls_in_flight_max"]),
        )  # fmt: skip
    console.print(table)
    res = s["resources"]
    console.print(
        f"all pods: p50 {sec(t['p50'])}, p99 {sec(t['p99'])}, makespan {sec(s['makespan'])}; "
        f"registry requests {s['registry_requests']} {s['registry_requests_by_status']}; "
        f"backoffs {s['backoffs']}; CPU {res['cpu_seconds']:.1f}s, peak RSS "
        f"{res['peak_rss_mib']:.0f} MiB"
    )
    h = s["health"]
    if h.get("virtual_time"):
        view = report["registry_view"]
        console.print(
            f"virtual time: {h['simulated_seconds']:g} simulated seconds in "
            f"{res['wall_seconds']:.1f} s of wall time ({h['speedup']}x); registry peak "
            f"{view['peak_requests_per_second']} req/s, {view['totals']['errors']} errors/resets"
        )
        for o in view["outages"]:
            console.print(
                f"outage {o['start']:g}-{o['end']:g} s: {o['requests_during']} requests reset; "
                f"after it, peak {o['peak_requests_per_second_after']} req/s at "
                f"+{o['peak_seconds_after_end']} s (before: {o['requests_per_second_before']}/s)"
            )
    else:
        console.print(
            f"simulator: loop lag p99 {h['loop_lag']['p99_ms']} ms, dispatch p50 "
            f"{h['dispatch_delay']['p50_ms']} ms, {h['cpu_per_process']:.0%} of a core per "
            f"process ({res.get('processes', 1)} process(es))"
        )
    for warning in h["warnings"]:
        console.print(f"[yellow]warning: {warning}")
    if report["run"]["timed_out"]:
        reasons = ", ".join(f"{k} {v}" for k, v in s["waiting_reasons"].items())
        console.print(
            f"[yellow]stopped at the timeout: {s['pods_not_ready']} pods not ready ({reasons})"
        )
    if "repeat" in report or not report.get("plots"):  # a repeat's are its median run's
        console.print(f"report: {out / 'report.md'} (and report.json)")
    else:
        console.print(f"report: {out / 'report.md'} (and report.json, plots)")


def _compare(args: argparse.Namespace) -> int:
    from kubelet_sim.workloads import compare_markdown, compare_reports, load_report
    from kubelet_sim.workloads.compare import (
        NOISE_RULE,
        compare_columns,
        noise_note,
        render_compare,
        runs_of,
        verdict_summary,
        workload_name,
    )

    a, b = (load_report(p) for p in args.compare)
    rows = compare_reports(a, b)
    note = noise_note(a, b)
    if args.output == "json":
        if note:
            print(f"kubelet-sim: {note}", file=sys.stderr)  # stdout is the JSON alone
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    if args.output == "markdown":
        print(compare_markdown(a, b), end="")
        return 0
    console = _console()

    def side(report: dict[str, Any], path: Path) -> str:
        n = runs_of(report)
        runs = f", median of {n} runs" if n > 1 else ", 1 run" if "repeat" in report else ""
        return f"{workload_name(report)} ({path}{runs})"

    # Names come from the reports: Text, not markup ("[/x]" in a group name is no markup error).
    table = Table(title=Text(f"A = {side(a, args.compare[0])}, B = {side(b, args.compare[1])}"))
    for column in compare_columns(a, b):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for row in render_compare(a, b, rows):
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)
    if note:
        console.print(Text(note, style="yellow"))
    else:
        console.print(Text(verdict_summary(rows)))
        console.print(Text(NOISE_RULE, style="dim"))
    return 0
