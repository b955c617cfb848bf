"""``kubelet-sim ref``: text and JSON output, and the InvalidImageName failure path."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kubelet_sim.cli.main import main

D256 = "sha256:" + "f" * 64
KEYS = {
    "input",
    "reference",
    "name",
    "domain",
    "path",
    "tag",
    "digest",
    "familiar",
    "runtime_image",
    "default_pull_policy",
}


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param(
            "busybox",
            {
                "input": "busybox",
                "reference": "docker.io/library/busybox",
                "name": "docker.io/library/busybox",
                "domain": "docker.io",
                "path": "library/busybox",
                "tag": None,
                "digest": None,
                "familiar": "busybox",
                "runtime_image": "busybox:latest",
                "default_pull_policy": "Always",
            },
            id="short-name",
        ),
        pytest.param(
            "index.docker.io/library/busybox:1.32.0",
            {
                "input": "index.docker.io/library/busybox:1.32.0",
                "reference": "docker.io/library/busybox:1.32.0",
                "name": "docker.io/library/busybox",
                "domain": "docker.io",
                "path": "library/busybox",
                "tag": "1.32.0",
                "digest": None,
                "familiar": "busybox:1.32.0",
                "runtime_image": "index.docker.io/library/busybox:1.32.0",
                "default_pull_policy": "IfNotPresent",
            },
            id="legacy-domain-tagged",
        ),
        pytest.param(
            "[::1]:5000/team/app:latest@" + D256,
            {
                "input": "[::1]:5000/team/app:latest@" + D256,
                "reference": "[::1]:5000/team/app:latest@" + D256,
                "name": "[::1]:5000/team/app",
                "domain": "[::1]:5000",
                "path": "team/app",
                "tag": "latest",
                "digest": D256,
                "familiar": "[::1]:5000/team/app:latest@" + D256,
                "runtime_image": "[::1]:5000/team/app:latest@" + D256,
                "default_pull_policy": "Always",
            },
            id="ipv6-tag-and-digest",
        ),
        pytest.param(
            "localhost:5000",
            {
                "input": "localhost:5000",
                "reference": "docker.io/library/localhost:5000",
                "name": "docker.io/library/localhost",
                "domain": "docker.io",
                "path": "library/localhost",
                "tag": "5000",
                "digest": None,
                "familiar": "localhost:5000",
                "runtime_image": "localhost:5000",
                "default_pull_policy": "IfNotPresent",
            },
            id="bare-host-port-is-docker-hub",
        ),
    ],
)
def test_ref_json(
    image: str, expected: dict[str, str | None], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ref", image, "--output", "json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert set(data) == KEYS
    assert data == expected
    assert err == ""


def test_ref_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ref", "busybox@" + D256]) == 0
    out, _ = capsys.readouterr()
    rows = dict(line.split(":", 1) for line in out.splitlines())
    assert set(rows) == KEYS
    values = {key: value.strip() for key, value in rows.items()}
    assert values["reference"] == "docker.io/library/busybox@" + D256
    assert values["tag"] == "-"
    assert values["digest"] == D256
    assert values["familiar"] == "busybox@" + D256
    assert values["runtime_image"] == "busybox@" + D256
    assert values["default_pull_policy"] == "IfNotPresent"


@pytest.mark.parametrize(
    ("argv", "image", "detail"),
    [
        pytest.param(
            ["ref", "Bad Name"],
            "Bad Name",
            "repository name (library/Bad Name) must be lowercase",
            id="uppercase",
        ),
        pytest.param(
            ["ref", "busybox:", "-o", "json"],
            "busybox:",
            "invalid reference format",
            id="empty-tag-json",
        ),
        pytest.param(
            ["ref", "--", "-docker"], "-docker", "invalid reference format", id="leading-dash"
        ),
        pytest.param(
            ["ref", "f" * 64],
            "f" * 64,
            "cannot specify 64-byte hexadecimal strings",
            id="identifier",
        ),
    ],
)
def test_ref_invalid(
    argv: list[str], image: str, detail: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "InvalidImageName" in err
    assert f'couldn\'t parse image name "{image}"' in err
    assert detail in err


def test_ref_subprocess_exit_status() -> None:
    # Both interpreters start at once: each spends most of its time importing.
    argvs = (["ref", "busybox:1.36", "--output", "json"], ["ref", "UPPER"])
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "kubelet_sim", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    try:
        (ok_out, ok_err), (bad_out, bad_err) = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:  # timed out: leave no interpreter behind
                proc.kill()
                proc.communicate()
    ok, bad = procs
    assert ok.returncode == 0, ok_err
    assert json.loads(ok_out)["runtime_image"] == "busybox:1.36"
    assert bad.returncode == 1
    assert bad_out == ""
    assert "InvalidImageName" in bad_err
    assert "UPPER" in bad_err
