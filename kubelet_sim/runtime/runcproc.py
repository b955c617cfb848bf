"""Running ``runc`` and reading its answers: exec with capped output, its error log, exit codes.

``runc exec`` runs with stdout and stderr together (their interleaving is runc's), capped at
:data:`EXEC_OUTPUT_LIMIT`; on timeout the exec'd process is SIGKILLed and the exit code is runc's
(137). runc's own errors come from its ``--log-format json`` log, never from the container's
output.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import structlog

from kubelet_sim.errors import ContainerRuntimeError
from kubelet_sim.runtime.port import ExecResult

__all__ = [
    "EXEC_OUTPUT_LIMIT",
    "EXEC_PID_WAIT",
    "STDERR_LIMIT",
    "exit_status",
    "run_exec",
    "runc_errors",
    "stderr_text",
]

log = structlog.get_logger(__name__)

EXEC_OUTPUT_LIMIT = 16 * 1024
"""Bytes of combined exec output kept; the rest is read and dropped."""
EXEC_PID_WAIT = 2.0  # for runc exec's pid file, then for runc exec to exit, after a timeout
STDERR_LIMIT = 2000  # characters of runc's stderr put in an error


async def run_exec(
    container_id: str,
    command: list[str],
    argv: tuple[str, ...],
    pid_file: Path,
    runc_log: Path,
    timeout: float,  # noqa: ASYNC109 - ExecSync's timeout, kept by killing the exec'd process
) -> ExecResult:
    """Run ``command`` (a ``runc exec`` of ``argv`` writing ``pid_file`` and ``runc_log``).

    Raises:
        ContainerRuntimeError: runc could not be run, or could not exec (runc's error).
    """
    output = bytearray()
    try:
        with anyio.CancelScope(shield=True):
            execution = await anyio.open_process(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as exc:
        raise ContainerRuntimeError(container_id, f"cannot run {command[0]}: {exc}") from exc

    async def drain() -> None:
        assert execution.stdout is not None
        async for chunk in execution.stdout:
            output.extend(chunk[: max(0, EXEC_OUTPUT_LIMIT - len(output))])

    problem = ""
    try:
        with anyio.move_on_after(timeout) as deadline:
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain)
                await execution.wait()
    finally:
        with anyio.CancelScope(shield=True):
            if execution.returncode is None:  # the timeout, or our caller was cancelled
                await _kill_exec(execution, pid_file)
            await execution.aclose()
            problem = await anyio.to_thread.run_sync(runc_errors, runc_log)
            await anyio.to_thread.run_sync(_remove_files, pid_file, runc_log)
    returncode = execution.returncode
    assert returncode is not None
    if problem and not deadline.cancelled_caught:
        raise ContainerRuntimeError(container_id, f"exec {argv[0]!r} failed: {problem}")
    if deadline.cancelled_caught:
        log.info("runc.exec_timeout", id=container_id, timeout=timeout)
    return ExecResult(exit_status(returncode), bytes(output))


async def _kill_exec(execution: anyio.abc.Process, pid_file: Path) -> None:
    """SIGKILL an exec'd process (runc exec then exits 137), then runc exec if it lingers.

    runc exec writes the pid file as soon as the process runs; killing runc exec before that
    could leave the process running in the container, so its pid is waited for (briefly).
    """
    with anyio.move_on_after(EXEC_PID_WAIT):
        while execution.returncode is None:
            pid = await anyio.to_thread.run_sync(_read_pid, pid_file)
            if pid is not None:
                # runc exec is its parent and has not reaped it (it runs): the pid is still its.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            await anyio.sleep(0.01)
    with anyio.move_on_after(EXEC_PID_WAIT):
        await execution.wait()
        return
    execution.kill()
    await execution.wait()


def exit_status(returncode: int) -> int:
    """A process's exit code as a shell reports it: 128+N for signal N."""
    return returncode if returncode >= 0 else 128 - returncode


def stderr_text(data: bytes) -> str:
    return data.decode(errors="replace").strip()[:STDERR_LIMIT] or "no message"


def runc_errors(path: Path) -> str:
    """The error messages runc logged (``--log-format json``), one line; blocking."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    messages: list[str] = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            messages.append(str(entry.get("msg", "")))
    return "; ".join(messages)[:STDERR_LIMIT]


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _remove_files(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
