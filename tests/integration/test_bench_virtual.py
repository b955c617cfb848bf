"""A virtual run makes the requests a real run makes: the modelled registry against the real one.

The same workload runs against the CNCF distribution registry (its access log records every
request it served) and with ``--virtual`` (the modelled registry records every request it
answered); the nodes' requests must be the same kinds, methods, statuses and counts: the model
sits under the same client, so the engine cannot tell them apart.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import trio.testing

from kubelet_sim.cli.main import configure_logging, main
from kubelet_sim.sim.model import MODEL_HOST
from kubelet_sim.sim.registry import RegistryProcess
from kubelet_sim.workloads import build_report, parse_workload, run_workload
from kubelet_sim.workloads.virtual import model_for

pytestmark = pytest.mark.registry

WORKLOAD = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: virtual-vs-real
seed: 41
bases:
  - {name: base, layers: [300KiB, 100KiB]}
images:
  - {repository: vr/agent, tags: ["1.0"], base: base, layers: [50KiB]}
  - {repository: vr/web, tags: ["1.0"], base: base, layers: [80KiB, 20KiB]}
nodes:
  - {name: serial, count: 2}
  - name: wide
    count: 1
    kubelet: {serializeImagePulls: false, maxParallelImagePulls: 2}
pods:
  - name: agent
    spec: {containers: [{name: agent, image: "vr/agent:1.0"}]}
    placement: every-node
  - name: web
    count: 6
    spec: {containers: [{name: web, image: "vr/web:1.0"}]}
    arrival: {rate: 10}
  - name: typo
    count: 1
    spec: {containers: [{name: web, image: "vr/web:1.0-typo"}]}
    arrival: {at: 0.2s}
run: {timeout: 12s}
"""
_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.[01]" (?P<status>\d{3})')


def kind(path: str) -> str:
    path = path.split("?", 1)[0]
    if path in ("/v2", "/v2/"):
        return "ping"
    if "/manifests/" in path:
        ref = path.rsplit("/", 1)[1]
        return "manifest by digest" if ref.startswith("sha256:") else "manifest by tag"
    if "/blobs/" in path:
        return "blob"
    return path


def test_a_virtual_run_requests_what_a_real_run_requests(
    registry_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("warning")
    logged: RegistryProcess = registry_factory(access_log=True)
    path = tmp_path / "w.yaml"
    path.write_text(WORKLOAD)
    assert main(["seed", str(path), "--registry", logged.host]) == 0
    before = len(logged.access_log())
    out = tmp_path / "real"
    args = ["bench", str(path), "--registry", logged.host, "--no-seed", "--quiet", "--no-plots"]
    assert main([*args, "--out", str(out)]) == 0
    capsys.readouterr()
    real: Counter[tuple[str, str, str]] = Counter()
    for line in logged.access_log()[before:]:
        match = _LINE.search(line)
        if match and "kubelet-sim/" in line:
            real[(match["method"], kind(match["path"]), match["status"])] += 1

    workload = parse_workload(WORKLOAD, str(path))
    model, seed = model_for(workload)
    seen: Counter[tuple[str, str, str]] = Counter()
    answer = model.handle

    async def recording(request: httpx.Request, node: str) -> httpx.Response:
        response = await answer(request, node)
        seen[(request.method, kind(request.url.path), str(response.status_code))] += 1
        return response

    model.handle = recording  # type: ignore[method-assign]

    async def virtual_run() -> Any:
        return await run_workload(workload, MODEL_HOST, tmp_path / "v", seed=seed, model=model)

    result = anyio.run(
        virtual_run,
        backend="trio",
        backend_options={"clock": trio.testing.MockClock(autojump_threshold=0)},
    )
    assert seen == real, f"virtual {sorted(seen.items())} != real {sorted(real.items())}"
    assert real[("HEAD", "manifest by tag", "404")] > 0  # the typo's pulls were made
    virtual = build_report(result)["summary"]
    real_summary = json.loads((out / "report.json").read_text())["summary"]
    assert virtual["pods_ready"] == real_summary["pods_ready"] == 9  # all but the typo
    assert virtual["pulls"] == real_summary["pulls"]
    assert virtual["events_by_reason"]["Pulling"] == real_summary["events_by_reason"]["Pulling"]
