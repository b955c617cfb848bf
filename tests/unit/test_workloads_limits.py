"""Workloads that used to pass validation and then crash or exhaust ``bench`` are refused while
they are parsed, naming the file, line and field; trace files are read with a cap and never
quoted."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kubelet_sim.errors import ConfigError
from kubelet_sim.workloads import parse_workload, read_trace
from kubelet_sim.workloads.limits import MAX_LAYER_BYTES, MAX_PODS, MAX_TRACE_BYTES


def workload(
    *,
    layers: str = "[1KiB]",
    image_count: int = 1,
    nodes: int = 1,
    pods: int = 1,
    image: str = "a/b-0:1",
    arrival: str = "{at: 0s}",
) -> str:
    repository = "a/b-{i}" if image_count > 1 else "a/b-0"
    return f"""\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: t
images:
  - {{repository: "{repository}", count: {image_count}, tags: ["1"], layers: {layers}}}
nodes:
  - {{name: n, count: {nodes}}}
pods:
  - name: p
    count: {pods}
    spec: {{containers: [{{name: c, image: "{image}"}}]}}
    arrival: {arrival}
"""


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        pytest.param(workload(image="a/b-{i%0}:1"), "pods[0].spec.containers[0].image",
                     "{i%0}: N must be between 1", id="modulo-zero"),
        pytest.param(workload(image="a/b-{j}:1"), "pods[0].spec.containers[0].image",
                     "the only placeholders are {i} and {i%N}", id="unknown-placeholder"),
        pytest.param(workload(layers="[1000GiB]"), "images[0].layers[0]",
                     "a layer of up to 1000GiB; at most 16GiB", id="huge-layer"),
        pytest.param(workload(layers="[{count: 2, size: {uniform: [1KiB, 20GiB]}}]"),
                     "images[0].layers[0].size", "at most 16GiB", id="huge-uniform"),
        pytest.param(workload(layers="[{count: 5000, size: 1KiB}]"), "images[0].layers[0].count",
                     "must be at most 1,000", id="too-many-layers"),
        pytest.param(workload(layers="[{count: 1000, size: 16GiB}]", image_count=100),
                     "images", "seeding could write", id="too-many-bytes"),
        pytest.param(workload(image_count=100_000), "images[0].count", "must be at most 10,000",
                     id="too-many-images"),
        pytest.param(workload(pods=100_000_000), "pods[0].count", "must be at most 1,000,000",
                     id="1e8-pods"),
        pytest.param(workload(nodes=100_000_000), "nodes[0].count", "must be at most 100,000",
                     id="1e8-nodes"),
    ],
)  # fmt: skip
def test_workloads_that_would_exhaust_bench_are_refused_up_front(
    text: str, field: str, message: str
) -> None:
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        parse_workload(text, "w.yaml")
    assert info.value.file is not None
    assert info.value.file.startswith("w.yaml:")
    assert info.value.field == field
    assert message in info.value.message
    assert time.perf_counter() - started < 2


def test_log_normal_sizes_without_a_max_are_clamped_to_the_largest_layer() -> None:
    parsed = parse_workload(workload(layers="[{lognormal: {median: 1MiB, sigma: 5}}]"), "w.yaml")
    (group,) = parsed.images[0].layers
    assert group.size.high == MAX_LAYER_BYTES


def test_a_trace_is_read_with_a_cap(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_trace(Path("/dev/zero"), "w.yaml:9")
    assert info.value.file == "w.yaml:9"
    assert f"larger than {MAX_TRACE_BYTES // 2**20} MiB" in info.value.message
    big = tmp_path / "big.txt"
    big.write_bytes(b"1\n" * (MAX_TRACE_BYTES // 2 + 1))
    with pytest.raises(ConfigError, match="larger than"):
        read_trace(big)


def test_an_error_about_a_trace_never_quotes_a_line_of_the_file(tmp_path: Path) -> None:
    wrong = tmp_path / "credentials.txt"
    wrong.write_text("# header\nadmin:SuperSecret-Pa55\n")
    with pytest.raises(ConfigError) as info:
        read_trace(wrong)
    assert info.value.file == f"{wrong}:2"
    assert "SuperSecret" not in str(info.value)
    binary = tmp_path / "binary.bin"
    binary.write_bytes(b"\xff\xfe\x00secret")
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        read_trace(binary)
    assert "secret" not in str(info.value)


def test_a_trace_with_more_arrivals_than_a_workload_may_have_is_refused(tmp_path: Path) -> None:
    trace = tmp_path / "t.txt"
    trace.write_text(f"0,{MAX_PODS}\n1,1\n")
    with pytest.raises(ConfigError, match="more than 1,000,000 arrivals") as info:
        read_trace(trace)
    assert info.value.file == f"{trace}:2"


def test_log_normal_layers_count_toward_seed_bytes_by_their_percentile_not_their_clamp() -> None:
    # 1,000 repositories x 10 layers around 10 MiB: about 100 GiB, not 1,000 x 10 x 16 GiB.
    layers = "[{count: 10, size: {lognormal: {median: 10MiB, sigma: 0.5}}}]"
    parsed = parse_workload(workload(layers=layers, image_count=1_000), "w.yaml")
    assert parsed.images[0].count == 1_000
    with pytest.raises(ConfigError, match="seeding could write"):
        parse_workload(workload(layers=layers.replace("10MiB", "1GiB"), image_count=1_000), "w")
