"""``bench --executor ray``: a workload's shards as Ray tasks, on a local or an existing Ray cluster.

Each shard is one Ray task (one CPU) running :func:`~kubelet_sim.workloads.shards.run_shard` on a
:class:`~kubelet_sim.workloads.shards.ShardJob` made from the workload file's text; the records come
back in shard order, ready for :func:`~kubelet_sim.workloads.report.merge_records`.

Without an address a local Ray cluster is started for the run (one logical CPU per shard, at least
two; no dashboard) and shut down after it. With one (``auto``, ``HOST:6379``, ``ray://HOST:10001``,
for example a KubeRay head) the run joins that cluster and only disconnects from it afterwards. The
agreed start instant is moved on by the time connecting took, so the shards keep their margin.
Workers log at ``warning``, as ``--executor processes`` children do (each task sets that up before
it runs, so it holds over Ray Client too); their output stays in Ray's session logs
(``/tmp/ray/session_latest/logs`` on a local cluster), not on this console. An address that
names a host and port is checked first with a plain connection (Ray itself retries a dead address
for minutes).

On an existing cluster:

- the registry address and any trace file the workload names (at the same path) must be reachable
  from the workers, not only from this machine: loopback addresses work on a local cluster only;
- every worker needs kubelet-sim installed at this same version (the shards import it there; a
  KubeRay image built with ``pip install 'kubelet-sim[ray]'``), and Ray Client (``ray://``) needs
  the same Ray and Python minor versions on both sides;
- a cluster with token authentication needs ``RAY_AUTH_MODE=token`` and its token here.

Ray is the optional ``ray`` extra (``pip install 'kubelet-sim[ray]'``); this module is the only one
that imports it, and only when a run starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import structlog

from kubelet_sim.errors import ConfigError, KubeletSimError
from kubelet_sim.workloads.shards import ShardJob, run_shard

__all__ = ["run_ray"]

CONNECT_TIMEOUT = 10.0  # seconds to reach an existing cluster's address before Ray tries


def run_ray(
    workload_path: Path,
    count: int,
    registry: str,
    *,
    start_at: float,
    store: str,
    timeout: float | None,
    address: str | None,
    virtual: bool = False,
) -> list[dict[str, Any]]:
    """Run ``count`` shards of the workload at ``workload_path`` as Ray tasks; records in shard order.

    Raises:
        ConfigError: Ray is not installed.
        KubeletSimError: the cluster could not be started or reached, or a shard failed (each
            failed shard named with its error).
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(
            None,
            "--executor",
            "ray is not installed; install the ray extra: pip install 'kubelet-sim[ray]'",
        ) from None

    text = workload_path.read_text(encoding="utf-8")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a bench run does not report usage
    options: dict[str, Any] = {
        "logging_level": logging.ERROR,
        "log_to_driver": False,
    }
    if address is None:  # "local": a new cluster even if RAY_ADDRESS names another
        options |= {"address": "local", "num_cpus": max(count, 2), "include_dashboard": False}
    else:
        _check_reachable(address)
        options["address"] = address
    began = time.time()
    try:
        ray.init(**options)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: Ray's choice
        where = "start a local Ray cluster" if address is None else f"connect to Ray at {address}"
        raise KubeletSimError(f"could not {where}: {type(exc).__name__}: {exc}") from None
    try:
        start_at += time.time() - began
        shard = ray.remote(num_cpus=1)(_shard)
        refs = [
            shard.remote(
                ShardJob(
                    workload_text=text,
                    workload_source=str(workload_path),
                    base_dir=str(workload_path.absolute().parent),
                    index=index,
                    count=count,
                    registry=registry,
                    start_at=start_at,
                    store=store,
                    timeout=timeout,
                    virtual=virtual,
                )
            )
            for index in range(count)
        ]
        try:
            records: list[dict[str, Any]] = []
            failed = []
            for index, ref in enumerate(refs):
                try:
                    records.append(ray.get(ref))
                except ray.exceptions.RayError as exc:
                    failed.append(f"shard {index}/{count} failed: {_describe(exc)}")
        except BaseException:
            for ref in refs:  # Ctrl-C: no shard outlives the command on a remote cluster
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
    finally:
        ray.shutdown()  # stops a local cluster; from an existing one, only disconnects
    if failed:
        raise KubeletSimError("; ".join(failed))
    return records


def _check_reachable(address: str) -> None:
    """Fail in seconds, naming the address, when nothing listens at ``[ray://]HOST:PORT``.

    Raises:
        KubeletSimError: the connection was refused or timed out.
    """
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", a bare host: Ray resolves those itself
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise KubeletSimError(f"could not connect to Ray at {address}: {exc}") from None


def _quiet_worker_logs() -> None:
    """Warnings and errors only in a worker, as the command line sets up its children."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def _shard(job: ShardJob) -> dict[str, Any]:
    """:func:`run_shard` in a Ray worker; its error comes back as a :class:`KubeletSimError`.

    Ray sends a task's exception back pickled, and not every exception unpickles (``ConfigError``
    takes three arguments); its type and message always do.
    """
    _quiet_worker_logs()
    try:
        return run_shard(job)
    except Exception as exc:
        while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # a task group's single error
        raise KubeletSimError(f"{type(exc).__name__}: {exc}") from None


def _describe(exc: Exception) -> str:
    """The shard's own error (``RayTaskError.cause``), or Ray's in one line: no traceback dump."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, KubeletSimError):
        return str(cause)
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"
