"""``kubelet-sim bench``'s progress, fed with snapshots: a live panel on a terminal (rich), or
a line every few seconds in a CI log or a file."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from kubelet_sim.workloads.runner import Snapshot
from kubelet_sim.workloads.spec import Workload, human_bytes


class LiveProgress:
    """A rich ``Live`` panel: pods ready per node group, pulls in flight, bytes, errors."""

    def __init__(self, console: Console, workload: Workload) -> None:
        self.console = console
        self.workload = workload
        self._live = Live(console=console, auto_refresh=False, transient=False)

    def __enter__(self) -> LiveProgress:
        self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._live.__exit__(exc_type, exc, tb)

    def __call__(self, snap: Snapshot) -> None:
        self._live.update(render_snapshot(snap, self.workload.name), refresh=True)


def render_snapshot(snap: Snapshot, name: str) -> Group:
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    table.add_column("node group")
    table.add_column("pods ready", justify="right")
    table.add_column("", width=40)
    for group, (ready, planned) in snap.groups.items():
        bar = ProgressBar(total=max(planned, 1), completed=ready, width=40)
        table.add_row(group, f"{ready}/{planned}", bar)
    line = Text.assemble(
        (f"{name}", "bold"),
        f"  {snap.elapsed:6.1f}s  submitted {snap.submitted}/{snap.pods_total}",
        f"  ready {snap.ready}  pulls in flight {snap.pulls_in_flight}",
        f"  done {snap.pulls_done}",
        (f"  failed {snap.pull_errors}", "red" if snap.pull_errors else ""),
        (f"  backoffs {snap.backoffs}", "yellow" if snap.backoffs else ""),
        f"  received {human_bytes(snap.bytes)}",
    )
    return Group(line, table)


class LineProgress:
    """One plain line per ``every`` seconds of the run (and the last one): what a CI log shows."""

    def __init__(self, console: Console, workload: Workload, every: float = 5.0) -> None:
        self.console = console
        self.workload = workload
        self.every = every
        self._next = 0.0

    def __call__(self, snap: Snapshot) -> None:
        if snap.elapsed < self._next:
            return
        self._next = snap.elapsed + self.every
        self.console.print(line_of(snap, self.workload.name), highlight=False, markup=False)


def line_of(snap: Snapshot, name: str) -> str:
    return (
        f"{name} {snap.elapsed:6.1f}s: submitted {snap.submitted}/{snap.pods_total}, ready "
        f"{snap.ready}, pulls in flight {snap.pulls_in_flight}, done {snap.pulls_done}, failed "
        f"{snap.pull_errors}, backoffs {snap.backoffs}, received {human_bytes(snap.bytes)}"
    )
