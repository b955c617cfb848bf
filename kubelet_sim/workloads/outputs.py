"""The files a bench writes into a report folder (``--out``, or a repeat's ``run-K``).

A folder holds one run's report at a time: the files a run writes are cleared when the run
starts and again just before its report is written, so none of an earlier run's files (its
report after this run was interrupted, a plot this run draws no more with ``--no-plots``) sits
beside this run's and is read as its own. Files a bench does not write are never touched. A
report file is written whole or not at all (a temporary file renamed over it).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from kubelet_sim.errors import ConfigError

REPORT_FILES = ("report.json", "report.md")
PLOT_FILES = {
    "timeline": "pull-timeline.png",
    "time_to_ready": "time-to-ready-cdf.png",
    "pull_latency": "pull-latency-cdf.png",
    "bytes": "bytes-over-time.png",
    "requests": "registry-requests.png",
    "registry_view": "registry-view.png",
}
"""Each plot's file name (:func:`kubelet_sim.workloads.plots.write_plots` draws them)."""


def clear_outputs(out: Path) -> list[str]:
    """Remove from ``out`` the report and plot files a bench writes; the names removed.

    Raises:
        ConfigError: one of them cannot be removed (named, with the reason).
    """
    removed = []
    for name in (*REPORT_FILES, *PLOT_FILES.values()):
        path = out / name
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(
                None, "--out", f"cannot remove {path} of an earlier run: {exc.strerror}"
            ) from None
        removed.append(name)
    return removed


def write_output(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole: into a temporary file beside it, renamed over it.

    Raises:
        ConfigError: it cannot be written (the path and the reason named; no temporary left).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ConfigError(None, "--out", f"cannot write {path}: {exc.strerror}") from None
