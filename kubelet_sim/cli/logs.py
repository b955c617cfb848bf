"""structlog configuration for the command line (the only place logging is configured).

Imported only when something logs: structlog and its console renderer cost about 100 ms of start-up,
which short commands such as ``kubelet-sim ref`` do not pay.
"""

from __future__ import annotations

import logging
import sys

import structlog
import structlog.tracebacks

__all__ = ["configure"]


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def configure(level: str = "warning", *, json_lines: bool | None = None) -> None:
    """Configure structlog: JSON lines off a terminal, console output on one."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    # Tracebacks never show local variables: a frame's locals can hold request headers or
    # credentials (structlog's rich console default shows them). Plain ones also keep rich out
    # of the process (kubelet_sim/__init__.py).
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json_lines:
        processors.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # Looked up per logger: sys.stderr may be replaced (test capture, daemon redirection).
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
