"""The README's first command runs ``kubelet-sim demo``: it must work end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.registry


def test_demo_runs_end_to_end() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kubelet_sim", "demo", "--seconds", "90"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        # Wide enough that no table cell wraps a message the test looks for.
        env={**os.environ, "COLUMNS": "400"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for expected in (
        "seeded demo/web:1.0",
        "Successfully pulled image",
        "/team/app:1.0",  # the private image, pulled with the pod's secret
        "already present on machine",
        "InvalidImageName",
        "ErrImageNeverPull",
        "ImagePullBackOff",
        "Back-off pulling image",
        "node images",
        "kubelet_runtime_operations_total",
        "daemon stopped cleanly",
        "Done",
    ):
        assert expected in out, expected
    # The demo registry's password is in config/pods/private.yaml; it must never be printed.
    for secret in ("demo-password", "ZGVtbzpkZW1vLXBhc3N3b3Jk"):
        assert secret not in out + result.stderr
