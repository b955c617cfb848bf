"""The files a bench writes into a report folder (``--out``, or a repeat's ``run-K``).

A folder holds one run's report at a time. A run's files are made in a private folder inside it
(:func:`staged_outputs`) and only then renamed into place, each over the file of the same name,
and any report or plot file of an earlier run that this run did not make is removed at that
moment: no earlier plot sits beside a ``--no-plots`` report, and a run stopped or failed while
writing leaves the earlier report as it was, never half of each. A run that fails before it
writes (an unreachable registry, a port in use) leaves the folder alone. Files a bench does not
write are never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
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

OUTPUT_FILES = frozenset((*REPORT_FILES, *PLOT_FILES.values()))
_STAGING = ".report-"  # then the writing process's pid, then mkdtemp's random part


def check_writable(out: Path) -> None:
    """Make ``out`` if missing and prove a run can write there, before the run, not after it;
    remove the private folders that runs killed while writing (SIGKILL, SIGTERM) left there.

    Raises:
        ConfigError: it is not a folder, or cannot be made or written (named, with the reason).
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(None, "--out", f"cannot write into {out}: {exc.strerror}") from None
    shutil.rmtree(_private_folder(out), ignore_errors=True)
    for folder in out.glob(f"{_STAGING}*-*"):
        pid = folder.name[len(_STAGING) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)


def _private_folder(out: Path) -> Path:
    """A new folder of this process's own in ``out`` (named for :func:`check_writable`'s sweep).

    Raises:
        ConfigError: ``out`` cannot be written (named, with the reason).
    """
    try:
        return Path(tempfile.mkdtemp(prefix=f"{_STAGING}{os.getpid()}-", dir=out))
    except OSError as exc:
        raise ConfigError(None, "--out", f"cannot write into {out}: {exc.strerror}") from None


def _alive(pid: int) -> bool:
    """Whether ``pid`` may still be writing (anything not a process known gone counts)."""
    if pid <= 0:
        return True  # not a pid a bench wrote: left alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process; a number no pid can be
    return True


@contextlib.contextmanager
def staged_outputs(out: Path) -> Iterator[Path]:
    """A private folder in ``out`` to write a run's report files into; when the block ends
    without an error they replace the earlier run's (:func:`publish`), else they are dropped.

    Raises:
        ConfigError: ``out`` cannot be written, or a file cannot be put in place.
    """
    staging = _private_folder(out)
    try:
        try:
            yield staging
        except OSError as exc:  # a file that could not be written inside the private folder
            raise ConfigError(
                None, "--out", f"cannot write the report into {out}: {exc.strerror}"
            ) from None
        publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish(staging: Path, out: Path) -> None:
    """Rename every file of ``staging`` into ``out``, over the file of the same name, and remove
    the report and plot files of an earlier run that ``staging`` has no new one of.

    Every place is checked before anything moves (a folder in the way fails here, with the
    folder as it was); ``report.json``, what readers load, is renamed last, and the earlier run's
    leftovers are removed only once all of this run's files are in.

    Raises:
        ConfigError: a file cannot be put in place or removed (named, with the reason).
    """
    made = sorted(path.name for path in staging.iterdir())
    for name in made:
        if (out / name).is_dir():
            raise ConfigError(None, "--out", f"cannot put {out / name} in place: it is a folder")
    made.sort(key=lambda name: name == "report.json")
    for name in made:
        try:
            os.replace(staging / name, out / name)
        except OSError as exc:
            raise ConfigError(
                None, "--out", f"cannot put {out / name} in place: {exc.strerror}"
            ) from None
    for name in sorted(OUTPUT_FILES - set(made)):
        path = out / name
        if not (path.is_file() or path.is_symlink()):
            continue  # missing, or not a file a bench wrote (a folder of that name): left alone
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(
                None, "--out", f"cannot remove {path} of an earlier run: {exc.strerror}"
            ) from None
