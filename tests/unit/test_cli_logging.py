"""Logging configuration: tracebacks must never print local variables (they may hold secrets)."""

from __future__ import annotations

import pytest
import structlog

from kubelet_sim.cli.main import configure_logging


@pytest.mark.parametrize("json_lines", [True, False], ids=["json", "console"])
def test_exception_logs_do_not_show_locals(
    json_lines: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", json_lines=json_lines)
    log = structlog.get_logger("test")

    secret = "".join(reversed("3BnOyQTLlVHbhZXL0JXZjNmc"))  # built at run time, not in source

    def handler(value: str) -> None:
        authorization = f"Basic {value}"  # a local that must not be printed
        raise RuntimeError(f"boom {len(authorization)}")

    try:
        handler(secret)
    except RuntimeError:
        log.exception("handler failed")
    err = capsys.readouterr().err
    assert "handler failed" in err
    assert "RuntimeError" in err  # the traceback itself is kept
    assert secret not in err
