"""Sharded runs: a workload's nodes split over processes (or Ray tasks), merged into one report.

Shard ``I/N`` runs every node whose index is ``I`` modulo ``N`` and the pods placed on them
(:func:`~kubelet_sim.workloads.runner.run_workload`), as its own process with its own event loop.
Shards agree on one start instant (a Unix time, chosen far enough ahead for the slowest shard to
build its nodes); each writes its raw records (:func:`~kubelet_sim.workloads.report.shard_record`)
as ``shard-I-of-N.json``, and :func:`load_shard_records` plus
:func:`~kubelet_sim.workloads.report.merge_records` turn them into one report. The executors:

- ``processes`` (:func:`run_processes`): N child processes of ``kubelet-sim bench --shard``;
- ``ray`` (:mod:`kubelet_sim.workloads.rayexec`): the same shard function as Ray tasks.

Any other scheduler (a Kubernetes Indexed Job) runs ``kubelet-sim bench W --shard I/N --out DIR
--start-at T`` itself and ``kubelet-sim bench merge DIR...`` afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from kubelet_sim.core.credentials import Credentials
from kubelet_sim.errors import ConfigError, KubeletSimError
from kubelet_sim.workloads.parse import parse_workload
from kubelet_sim.workloads.report import SHARD_SCHEMA, shard_record
from kubelet_sim.workloads.runner import run_workload
from kubelet_sim.workloads.spec import Workload

MAX_SHARDS = 256
SHARD_RECORD_LIMIT = 2 << 30  # bytes: a shard record larger than this is not ours


@dataclass(frozen=True, slots=True)
class ShardJob:
    """Everything a shard needs, picklable (Ray ships it to its workers)."""

    workload_text: str
    workload_source: str
    base_dir: str
    index: int
    count: int
    registry: str
    start_at: float | None
    store: str = "memory"
    timeout: float | None = None
    virtual: bool = False


def parse_shard(value: str) -> tuple[int, int]:
    """``I/N`` with ``0 <= I < N <= MAX_SHARDS``.

    Raises:
        ConfigError: naming ``--shard`` and the value.
    """
    index, sep, count = value.partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise ConfigError(None, "--shard", f"expected I/N such as 0/4, got {value!r}")
    i, n = int(index), int(count)
    if not 0 < n <= MAX_SHARDS or not 0 <= i < n:
        raise ConfigError(None, "--shard", f"need 0 <= I < N <= {MAX_SHARDS}, got {value!r}")
    return i, n


def start_delay(nodes: int, shards: int) -> float:
    """Seconds ahead to agree a start instant: process start plus building the nodes of a shard.

    Measured on the 2-core reference machine: ~1 s to start a process and import, ~2.7 ms per
    light node (10,000 nodes in 27 s); about 1.5 times that as margin. A shard that is still
    late starts at once and its pods' arrival lag shows by how much.
    """
    per_shard = -(-nodes // max(1, shards))
    return 3.0 + 0.004 * per_shard


def run_shard(job: ShardJob) -> dict[str, Any]:
    """Run one shard in this process (its own event loop) and return its raw records."""
    from dataclasses import replace

    workload = parse_workload(job.workload_text, job.workload_source, base_dir=Path(job.base_dir))
    if job.timeout is not None:
        workload = replace(workload, run=replace(workload.run, timeout=job.timeout))
    return run_shard_of(
        workload, job.registry, (job.index, job.count), start_at=job.start_at, store=job.store,
        virtual=job.virtual,
    )  # fmt: skip


def run_shard_of(
    workload: Workload,
    registry: str,
    shard: tuple[int, int],
    *,
    start_at: float | None,
    store: str,
    virtual: bool = False,
    push_creds: Credentials | None = None,
) -> dict[str, Any]:
    """Shard ``shard`` of a loaded ``workload`` in a fresh event loop; its raw records.
    ``push_creds``: what a ``retag`` churn action pushes with (:func:`run_workload`'s).

    ``virtual``: on a virtual clock against the shard's share of the modelled registry
    (:func:`~kubelet_sim.workloads.virtual.run_virtual`; ``registry`` and ``start_at`` unused:
    every shard's time zero is the same virtual instant).
    """
    with tempfile.TemporaryDirectory(prefix="ksim-shard-") as tmp:
        if virtual:
            from kubelet_sim.workloads.virtual import run_virtual

            return shard_record(run_virtual(workload, Path(tmp), shard=shard))
        result = anyio.run(
            lambda: run_workload(
                workload,
                registry,
                Path(tmp),
                shard=shard,
                start_at=start_at,
                store=store,
                push_creds=push_creds,
            )
        )
    return shard_record(result)


def shard_file(out: Path, index: int, count: int) -> Path:
    return out / f"shard-{index}-of-{count}.json"


def write_record(record: dict[str, Any], path: Path) -> None:
    """Write ``record`` atomically (a reader never sees half a shard): into a temporary file of
    a name of its own beside ``path`` (never one planted there), renamed over it.

    Raises:
        ConfigError: it cannot be written (the path and the reason; no temporary file left).
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps(record, separators=(",", ":")) + "\n")
        os.chmod(tmp, 0o644)  # as a file written plainly would be, not mkstemp's 0600
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise ConfigError(None, "--out", f"cannot write {path}: {exc.strerror}") from None


def load_shard_records(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Every shard record in ``paths`` (folders holding ``shard-*.json``, or the files).

    Raises:
        ConfigError: a path holds no shard record, or a file is not one.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("shard-*-of-*.json"))
            if not found:
                raise ConfigError(str(path), None, "no shard-I-of-N.json records in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(str(path), None, "no such file or folder")
    records = []
    for file in files:
        try:
            if file.stat().st_size > SHARD_RECORD_LIMIT:
                raise ConfigError(str(file), None, "too large to be a shard record")
            record = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ConfigError(str(file), None, f"not a readable shard record: {exc}") from None
        if not isinstance(record, dict) or record.get("schema") != SHARD_SCHEMA:
            raise ConfigError(str(file), "schema", f"not a {SHARD_SCHEMA} record")
        check_record(record, str(file))
        records.append(record)
    return records


_NUMBER = (int, float)
_MAYBE = (int, float, type(None))
_RECORD_SHAPE: dict[str, type | tuple[type, ...]] = {
    "shard": dict, "workload": dict, "run": dict, "groups": dict, "templates": dict,
    "images": dict, "faults": dict, "resources": dict, "loop_lag": list, "nodes": list,
    "pods": list, "pulls": list, "bytes_timeline": list,
}  # fmt: skip
_ITEM_SHAPE: dict[str, dict[str, type | tuple[type, ...]]] = {
    "pods": {"name": str, "template": str, "node": str, "group": str, "arrival": _NUMBER,
             "submitted": _MAYBE, "ready": _MAYBE, "seconds": _MAYBE, "containers": list},
    "pulls": {"node": str, "start": _NUMBER, "end": _NUMBER, "size": int, "error": bool,
              "dispatch": _MAYBE},
    "nodes": {"name": str, "group": str, "pulls": int, "pull_errors": int,
              "registry_pulls": int, "shared_pulls": int, "cache_hits": int, "bytes_pulled": int,
              "bytes_received": int, "peak_pulls_in_flight": int, "registry_responses": dict,
              "registry_retries": dict, "events_emitted": dict},
}  # fmt: skip


def check_record(record: dict[str, Any], source: str) -> None:
    """Refuse a shard record whose shape is not what :func:`shard_record` writes.

    Merging reads every field; a record edited by hand or cut short must fail here with the
    field named, not deep inside the merge.

    Raises:
        ConfigError: naming the file and the first field that is missing or of the wrong type.
    """

    def need(value: object, kind: type | tuple[type, ...], where: str) -> None:
        if (
            isinstance(value, bool)
            and kind is not bool
            and bool not in (kind if isinstance(kind, tuple) else (kind,))
        ):
            raise ConfigError(source, where, "has the wrong type")
        if not isinstance(value, kind):
            raise ConfigError(source, where, "missing or of the wrong type")

    for key, kind in _RECORD_SHAPE.items():
        need(record.get(key), kind, key)
    shard = record["shard"]
    need(shard.get("index"), int, "shard.index")
    need(shard.get("count"), int, "shard.count")
    need(record["workload"].get("sha256"), str, "workload.sha256")
    need(record["workload"].get("name"), str, "workload.name")
    run = record["run"]
    need(run.get("start_epoch"), _NUMBER, "run.start_epoch")
    need(run.get("stopped_at"), _NUMBER, "run.stopped_at")
    for key in ("wall_seconds", "cpu_seconds", "cpu_user_seconds", "cpu_system_seconds",
                "peak_rss_mib"):  # fmt: skip
        need(record["resources"].get(key), _NUMBER, f"resources.{key}")
    for section, fields in _ITEM_SHAPE.items():
        for i, item in enumerate(record[section]):
            need(item, dict, f"{section}[{i}]")
            for key, kind in fields.items():
                need(item.get(key), kind, f"{section}[{i}].{key}")
    for i, item in enumerate(record.get("churn") or []):  # optional: only runs with churn
        need(item, dict, f"churn[{i}]")
        for key, kind in (("name", str), ("kind", str), ("started", _MAYBE), ("finished", _MAYBE)):
            need(item.get(key), kind, f"churn[{i}].{key}")
    for i, value in enumerate(record["loop_lag"]):
        need(value, _NUMBER, f"loop_lag[{i}]")
    for i, point in enumerate(record["bytes_timeline"]):
        if not (isinstance(point, list) and len(point) == 2):
            raise ConfigError(source, f"bytes_timeline[{i}]", "expected [seconds, bytes]")
        need(point[0], _NUMBER, f"bytes_timeline[{i}][0]")
        need(point[1], int, f"bytes_timeline[{i}][1]")


def run_processes(
    workload_path: Path,
    count: int,
    registry: str,
    out: Path,
    *,
    start_at: float,
    store: str,
    timeout: float | None,
    virtual: bool = False,
    docker_config: Path | None = None,
) -> list[dict[str, Any]]:
    """Run ``count`` shards as child processes of this command; their records, in shard order.

    ``virtual``: the shards run ``--virtual`` (no registry, no agreed start instant).
    ``docker_config``: passed on (``--docker-config``), for a ``retag`` churn action's push.

    Raises:
        KubeletSimError: a shard failed (its exit status and the end of its error output).
    """
    with contextlib.ExitStack() as stack:
        procs = []
        logs = []
        for index in range(count):
            argv = [
                sys.executable, "-m", "kubelet_sim", "bench", str(workload_path),
                "--shard", f"{index}/{count}", "--out", str(out), "--quiet",
            ]  # fmt: skip
            if virtual:
                argv.append("--virtual")
            else:
                argv += [
                    "--registry", registry, "--start-at", repr(start_at), "--store", store,
                    "--no-seed", "--allow-remote-registry",  # the parent checked the address
                ]  # fmt: skip
            if timeout is not None:
                argv += ["--timeout", repr(timeout)]
            if docker_config is not None and not virtual:
                argv += ["--docker-config", str(docker_config)]
            log = stack.enter_context(tempfile.TemporaryFile())
            logs.append(log)
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
            stack.callback(_stop, proc)
            procs.append(proc)
        failed = []
        for index, proc in enumerate(procs):
            code = proc.wait()
            if code != 0:
                logs[index].seek(0)
                tail = logs[index].read()[-2000:].decode(errors="replace").strip()
                failed.append(f"shard {index}/{count} exited with status {code}: {tail}")
    if failed:
        raise KubeletSimError("; ".join(failed))
    return load_shard_records([shard_file(out, i, count) for i in range(count)])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """On the way out (an error, Ctrl-C): no shard outlives the command."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def agreed_start(nodes: int, shards: int, *, delay: float | None = None) -> float:
    """The Unix time the shards of a run start at."""
    return time.time() + (start_delay(nodes, shards) if delay is None else delay)
