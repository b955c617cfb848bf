"""Virtual runs from the workload side: the ``virtual:`` section, stub layers sized as the seed
builds them, the modelled registry's catalogue, the fault plan's ``retryAfter`` and a whole
``run_virtual`` of a tiny workload down to its report."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from test_workloads_parse import HEADER, MINIMAL

from kubelet_sim.cli.main import main
from kubelet_sim.errors import ConfigError
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.sim.faults import FaultKind, FaultPlan, FaultWindow
from kubelet_sim.sim.images import Blob, build_layer, tar_size, tar_with_file
from kubelet_sim.sim.model import MODEL_HOST, Latency, ModelTransport, RegistryModel
from kubelet_sim.workloads import ImageBuilder, build_report, parse_workload
from kubelet_sim.workloads.spec import Workload
from kubelet_sim.workloads.virtual import model_catalogue, model_for, run_virtual

MiB = 1024 * 1024
MINIMAL_LINES = MINIMAL.count("\n")


def with_virtual(registry: str) -> str:
    """MINIMAL with ``virtual: registry:`` holding the (dedented) YAML lines ``registry``."""
    body = textwrap.indent(textwrap.dedent(registry), "    ")
    return MINIMAL + "virtual:\n  registry:\n" + body


# -- the virtual: section ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(MINIMAL, RegistryModel(), id="absent"),
        pytest.param(MINIMAL + "virtual: {}\n", RegistryModel(), id="empty"),
        pytest.param(MINIMAL + "virtual: {registry: {}}\n", RegistryModel(), id="empty-registry"),
        pytest.param(
            with_virtual("latency: 4ms\n"), RegistryModel(latency=Latency(0.004)), id="latency-go"
        ),
        pytest.param(
            with_virtual("latency: 0.25\n"), RegistryModel(latency=Latency(0.25)), id="seconds"
        ),
        pytest.param(
            with_virtual("latency: 0\n"), RegistryModel(latency=Latency(0.0)), id="no-latency"
        ),
        pytest.param(
            with_virtual("latency: {median: 4ms, p99: 40ms}\n"),
            RegistryModel(latency=Latency(0.004, 0.04)),
            id="latency-median-p99",
        ),
        pytest.param(
            with_virtual("latency: {median: 10ms}\n"),
            RegistryModel(latency=Latency(0.01)),
            id="latency-median-only",
        ),
        pytest.param(
            with_virtual("bandwidth: {perConnection: 100MiB/s, total: 10GiB/s}\n"),
            RegistryModel(per_connection=100.0 * MiB, total=10.0 * 1024 * MiB),
            id="bandwidth-per-second",
        ),
        pytest.param(
            with_virtual("bandwidth: {perConnection: 1048576, total: 1MB}\n"),
            RegistryModel(per_connection=1048576.0, total=1_000_000.0),
            id="bandwidth-plain-sizes",
        ),
        pytest.param(
            with_virtual('bandwidth: {perConnection: " 5 MiB/s "}\n'),
            RegistryModel(per_connection=5.0 * MiB),
            id="bandwidth-spaces",
        ),
        pytest.param(
            with_virtual("bandwidth: {total: 0}\n"), RegistryModel(), id="bandwidth-zero-no-limit"
        ),
        pytest.param(
            with_virtual("concurrency: 2000\n"), RegistryModel(concurrency=2000), id="concurrency"
        ),
        pytest.param(with_virtual("auth: none\n"), RegistryModel(auth=False), id="auth-none"),
        pytest.param(with_virtual("auth: token\n"), RegistryModel(auth=True), id="auth-token"),
        pytest.param(
            with_virtual("auth: token\ntokenLifetime: 5m\n"),
            RegistryModel(auth=True, token_lifetime=300.0),
            id="token-lifetime-go",
        ),
        pytest.param(
            with_virtual("tokenLifetime: 90\n"),
            RegistryModel(token_lifetime=90.0),
            id="token-lifetime-seconds",
        ),
        pytest.param(
            with_virtual(
                """\
                latency: {median: 4ms, p99: 40ms}
                bandwidth: {perConnection: 100MiB/s, total: 10GiB/s}
                concurrency: 2000
                auth: token
                tokenLifetime: 1m
                """
            ),
            RegistryModel(
                latency=Latency(0.004, 0.04),
                per_connection=100.0 * MiB,
                total=10.0 * 1024 * MiB,
                concurrency=2000,
                auth=True,
                token_lifetime=60.0,
            ),
            id="everything",
        ),
    ],
)
def test_virtual_section(text: str, expected: RegistryModel) -> None:
    assert parse_workload(text, "w.yaml").virtual == expected


def test_the_example_virtual_workload_reads_its_model() -> None:
    path = Path(__file__).parents[2] / "benchmarks" / "workloads" / "outage-virtual.yaml"
    model = parse_workload(path.read_text(), str(path)).virtual
    assert model == RegistryModel(
        latency=Latency(0.004, 0.04),
        per_connection=100.0 * MiB,
        total=10.0 * 1024 * MiB,
        concurrency=2000,
        auth=True,
    )


# Each case: the text, the line (within what follows MINIMAL), the field and the message.
BAD = [
    pytest.param(MINIMAL + "virtual: [1]\n", 1, "virtual", "expected a mapping", id="not-a-map"),
    pytest.param(MINIMAL + "virtual: {speed: 1}\n", 1, "virtual.speed", "unknown field",
                 id="unknown-virtual-key"),
    pytest.param(MINIMAL + "virtual: {registry: 5}\n", 1, "virtual.registry",
                 "expected a mapping", id="registry-not-a-map"),
    pytest.param(with_virtual("speed: fast\n"), 3, "virtual.registry.speed",
                 "unknown field; expected one of: latency, bandwidth", id="unknown-registry-key"),
    pytest.param(with_virtual("auth: basic\n"), 3, "virtual.registry.auth",
                 "expected none or token, got 'basic'", id="auth-basic"),
    pytest.param(with_virtual("auth: true\n"), 3, "virtual.registry.auth",
                 "expected a non-empty string", id="auth-boolean"),
    pytest.param(with_virtual("latency: {median: 10ms, p99: 5ms}\n"), 3,
                 "virtual.registry.latency.p99", "p99 must not be less than the median",
                 id="p99-below-median"),
    pytest.param(with_virtual("latency: {p99: 5ms}\n"), 3, "virtual.registry.latency.median",
                 "required", id="p99-without-median"),
    pytest.param(with_virtual("latency: {median: 1ms, p50: 1ms}\n"), 3,
                 "virtual.registry.latency.p50", "unknown field", id="latency-unknown-key"),
    pytest.param(with_virtual("latency: -1\n"), 3, "virtual.registry.latency",
                 "must not be negative", id="negative-latency"),
    pytest.param(with_virtual("latency: soon\n"), 3, "virtual.registry.latency",
                 "duration", id="latency-not-a-duration"),
    pytest.param(with_virtual("latency: {median: -2ms}\n"), 3,
                 "virtual.registry.latency.median", "must not be negative",
                 id="negative-median"),
    pytest.param(with_virtual("bandwidth: 100MiB/s\n"), 3, "virtual.registry.bandwidth",
                 "expected a mapping", id="bandwidth-not-a-map"),
    pytest.param(with_virtual("bandwidth: {perConnection: fast}\n"), 3,
                 "virtual.registry.bandwidth.perConnection", "expected a size",
                 id="bandwidth-not-a-size"),
    pytest.param(with_virtual("bandwidth: {total: -5}\n"), 3,
                 "virtual.registry.bandwidth.total", "must not be negative",
                 id="bandwidth-negative"),
    pytest.param(with_virtual("bandwidth: {total: 5MiB/min}\n"), 3,
                 "virtual.registry.bandwidth.total", "expected a size", id="bandwidth-per-min"),
    pytest.param(with_virtual("bandwidth: {perconnection: 1}\n"), 3,
                 "virtual.registry.bandwidth.perconnection", "unknown field",
                 id="bandwidth-key-case"),
    pytest.param(with_virtual("concurrency: -1\n"), 3, "virtual.registry.concurrency",
                 "must be at least 0", id="negative-concurrency"),
    pytest.param(with_virtual("concurrency: 1.5\n"), 3, "virtual.registry.concurrency",
                 "expected an integer", id="fractional-concurrency"),
    pytest.param(with_virtual("concurrency: 2000000\n"), 3, "virtual.registry.concurrency",
                 "must be at most 1,000,000", id="too-much-concurrency"),
    pytest.param(with_virtual("tokenLifetime: -1\n"), 3, "virtual.registry.tokenLifetime",
                 "must not be negative", id="negative-token-lifetime"),
    pytest.param(with_virtual("auth: token\ntokenLifetime: forever\n"), 4,
                 "virtual.registry.tokenLifetime", "duration", id="token-lifetime-not-a-duration"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "field", "message"), BAD)
def test_bad_virtual_section_names_line_and_field(
    text: str, line: int, field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_workload(text, "w.yaml")
    error = caught.value
    assert error.field == field, str(error)
    assert message in error.message, str(error)
    assert error.file == f"w.yaml:{MINIMAL_LINES + line}", str(error)


# -- stub layers ------------------------------------------------------------------------------

SIZES = [
    pytest.param(0, id="0"),
    pytest.param(1, id="1"),
    pytest.param(511, id="511"),
    pytest.param(512, id="512"),
    pytest.param(65536, id="64KiB"),
    pytest.param(300_000, id="300000"),
    pytest.param(2 * MiB + 7, id="2MiB+7"),
]


@pytest.mark.parametrize("size", SIZES)
def test_uncompressed_stub_layer_has_the_real_size_exactly(size: int) -> None:
    real = build_layer(f"layer-{size}", size, compress=False)
    stub = build_layer(f"layer-{size}", size, compress=False, stub=True)
    assert stub.size == real.size == tar_size(size)
    assert stub.media_type == real.media_type == mt.OCI_LAYER
    assert stub.is_stub
    assert not real.is_stub
    assert stub.digest != real.digest  # a stand-in digest, never the bytes'
    assert stub.descriptor()["size"] == real.size


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("docker", [pytest.param(False, id="oci"), pytest.param(True, id="docker")])
def test_compressed_stub_layer_is_within_100_bytes_of_the_real_size(
    size: int, docker: bool
) -> None:
    real = build_layer(f"gz-{size}", size, docker=docker)
    stub = build_layer(f"gz-{size}", size, docker=docker, stub=True)
    assert abs(stub.size - real.size) <= 100, (stub.size, real.size)
    assert stub.media_type == real.media_type
    assert stub.media_type == (mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP)


@pytest.mark.parametrize("size", SIZES)
def test_tar_size_is_the_size_of_the_archive(size: int) -> None:
    assert tar_size(size) == len(tar_with_file("data/x.bin", bytes(size)))
    assert tar_size(size) % (20 * 512) == 0  # whole tar records


def test_uncompressed_stub_size_is_exact_for_a_long_layer_name() -> None:
    seed = "7/team/" + "service-" * 10 + "api/1/linux/amd64/0"
    real = build_layer(seed, 8704, compress=False)
    stub = build_layer(seed, 8704, compress=False, stub=True)
    assert stub.size == real.size


def test_stub_digests_are_per_name_and_stable() -> None:
    one = Blob.stub(mt.OCI_LAYER, "one", 10)
    assert one.digest == Blob.stub(mt.OCI_LAYER, "one", 10).digest
    assert one.digest == Blob.stub(mt.OCI_LAYER, "one", 99).digest  # the name, not the size
    assert one.digest != Blob.stub(mt.OCI_LAYER, "two", 10).digest
    assert (one.size, one.is_stub) == (10, True)
    assert one.descriptor() == {"mediaType": mt.OCI_LAYER, "digest": str(one.digest), "size": 10}


# -- the modelled registry's catalogue ----------------------------------------------------------

CATALOGUE_WORKLOAD = HEADER + textwrap.dedent(
    """\
    seed: 11
    bases:
      - {name: distro, layers: [24KiB, {count: 2, size: 3KiB}]}
    images:
      - repository: shop/web-{i}
        count: 2
        tags: ["1.0", latest]
        base: distro
        layers: [{count: 2, size: {uniform: [1KiB, 64KiB]}}]
      - repository: shop/multi
        tags: ["2"]
        platforms: [linux/amd64, linux/arm64]
        layers: [5000, 70000]
      - repository: shop/packed
        tags: ["3"]
        compress: true
        layers: [300000]
    nodes:
      - {name: n}
    pods:
      - name: p
        count: 1
        spec: {containers: [{name: c, image: "shop/web-0:1.0"}]}
    """
)


@pytest.fixture(scope="module")
def workload() -> Workload:
    return parse_workload(CATALOGUE_WORKLOAD, "catalogue.yaml")


def digests(blobs: dict[tuple[str, str], Blob]) -> dict[tuple[str, str], str]:
    return {key: str(blob.digest) for key, blob in blobs.items()}


def test_catalogue_holds_every_tag_manifest_and_blob(workload: Workload) -> None:
    catalogue, seed = model_catalogue(workload)
    refs = workload.references()
    assert len(refs) == 6
    assert {f"{repo}:{tag}" for repo, tag in catalogue.tags} == set(refs)
    assert catalogue.repositories == {"shop/web-0", "shop/web-1", "shop/multi", "shop/packed"}
    assert seed.images == 6
    for built in ImageBuilder(workload, stub=True):
        top = catalogue.tags[(built.repository, built.tag)]
        if built.index is None:
            assert top.digest == built.images[0].manifest.digest
        else:
            assert top.digest == built.index.index.digest
            assert top.media_type == mt.OCI_INDEX
        assert catalogue.manifests[(built.repository, str(top.digest))] is top
        for image in built.images:
            manifest = catalogue.manifests[(built.repository, str(image.manifest.digest))]
            assert manifest.data == image.manifest.data
            doc = json.loads(manifest.data)
            assert [layer["size"] for layer in doc["layers"]] == [b.size for b in image.layers]
            for blob in image.blobs():
                held = catalogue.blobs[(built.repository, str(blob.digest))]
                assert (held.size, held.is_stub) == (blob.size, blob in image.layers)
            size = image.config.size + sum(layer.size for layer in image.layers)
            assert seed.sizes[built.reference][image.platform_string] == size


def test_base_layers_are_shared_blobs(workload: Workload) -> None:
    catalogue, _ = model_catalogue(workload)
    web = [{digest for repo, digest in catalogue.blobs if repo == f"shop/web-{i}"} for i in (0, 1)]
    assert len(web[0] & web[1]) == 3  # the distro base: 24KiB and 2 x 3KiB, one set per platform
    built = list(ImageBuilder(workload, stub=True))
    base = {str(layer.digest) for layer in built[0].images[0].layers[:3]}
    assert base == web[0] & web[1]


def test_stub_digests_are_stable_across_builds(workload: Workload) -> None:
    first, _ = model_catalogue(workload)
    again, _ = model_catalogue(workload)
    assert digests(first.tags) == digests(again.tags)
    assert digests(first.manifests) == digests(again.manifests)
    assert digests(first.blobs) == digests(again.blobs)


def test_stub_images_have_the_layer_sizes_the_real_build_draws(workload: Workload) -> None:
    real = list(ImageBuilder(workload))
    stub = list(ImageBuilder(workload, stub=True))
    assert [b.reference for b in real] == [b.reference for b in stub]
    for r, s in zip(real, stub, strict=True):
        assert [i.platform_string for i in r.images] == [i.platform_string for i in s.images]
        for ri, si in zip(r.images, s.images, strict=True):
            assert [layer.media_type for layer in ri.layers] == [
                layer.media_type for layer in si.layers
            ]
            real_sizes = [layer.size for layer in ri.layers]
            stub_sizes = [layer.size for layer in si.layers]
            if r.repository == "shop/packed":  # compressed: what gzip makes of random bytes
                assert all(abs(a - b) <= 100 for a, b in zip(real_sizes, stub_sizes, strict=True))
            else:
                assert real_sizes == stub_sizes
            # The configs differ only in their diff_ids (a stub layer has no uncompressed bytes).
            real_config: dict[str, Any] = json.loads(ri.config.data)
            stub_config: dict[str, Any] = json.loads(si.config.data)
            assert real_config["rootfs"]["diff_ids"] != stub_config["rootfs"]["diff_ids"]
            real_config["rootfs"].pop("diff_ids")
            stub_config["rootfs"].pop("diff_ids")
            assert real_config == stub_config
            assert ri.config.digest != si.config.digest


def test_model_for_uses_the_workloads_model_faults_and_seed() -> None:
    text = with_virtual("latency: 1ms\nconcurrency: 3\n").replace(
        "virtual:", "faults:\n  windows:\n    - {kind: outage, start: 1s, end: 2s}\nvirtual:"
    )
    workload = parse_workload(text, "w.yaml")
    transport, seed = model_for(workload)
    assert isinstance(transport, ModelTransport)
    assert transport.model == RegistryModel(latency=Latency(0.001), concurrency=3)
    assert transport.draws.plan == workload.faults
    assert transport.draws.plan.windows[0].kind is FaultKind.OUTAGE
    assert set(transport.catalogue.tags) == {("a/b", "1")}
    assert seed.images == 1


# -- fault windows: retryAfter -----------------------------------------------------------------


@pytest.mark.parametrize(
    "retry_after",
    [
        pytest.param(None, id="none"),
        pytest.param(0.0, id="zero"),
        pytest.param(7.5, id="seconds"),
        pytest.param(86_400.0, id="24h"),
    ],
)
def test_retry_after_within_a_day_is_accepted(retry_after: float | None) -> None:
    window = FaultWindow(FaultKind.ERRORS, status=429, retry_after=retry_after)
    assert window.retry_after == retry_after


@pytest.mark.parametrize(
    "retry_after",
    [pytest.param(-1.0, id="negative"), pytest.param(86_400.5, id="over-24h")],
)
def test_retry_after_out_of_range_is_refused(retry_after: float) -> None:
    with pytest.raises(ValueError, match="errors fault: retryAfter must be between 0 and 24h"):
        FaultWindow(FaultKind.ERRORS, retry_after=retry_after)


def test_fault_plan_lists_retry_after_only_when_set() -> None:
    plan = FaultPlan(
        (
            FaultWindow(FaultKind.ERRORS, start=1.0, end=2.0, share=0.5, status=429,
                        retry_after=30.0),
            FaultWindow(FaultKind.ERRORS, status=503),
            FaultWindow(FaultKind.LATENCY, delay=0.05, jitter=0.01),
            FaultWindow(FaultKind.RESETS, share=0.1, after_bytes=65536),
            FaultWindow(FaultKind.OUTAGE, start=300.0, end=3900.0),
        )
    )  # fmt: skip
    assert plan.to_list() == [
        {"kind": "errors", "start": 1.0, "end": 2.0, "share": 0.5, "status": 429,
         "retry_after": 30.0},
        {"kind": "errors", "start": 0.0, "end": None, "share": 1.0, "status": 503},
        {"kind": "latency", "start": 0.0, "end": None, "delay": 0.05, "jitter": 0.01},
        {"kind": "resets", "start": 0.0, "end": None, "share": 0.1, "after_bytes": 65536},
        {"kind": "outage", "start": 300.0, "end": 3900.0},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("30s", 30.0, id="go-duration"),
        pytest.param("2", 2.0, id="seconds"),
        pytest.param("1m30s", 90.0, id="minutes"),
    ],
)
def test_workload_reads_retry_after(value: str, expected: float) -> None:
    window_yaml = f"{{kind: errors, status: 429, retryAfter: {value}}}"
    text = MINIMAL + f"faults:\n  windows:\n    - {window_yaml}\n"
    window = parse_workload(text, "w.yaml").faults.windows[0]
    assert (window.kind, window.status, window.retry_after) == (FaultKind.ERRORS, 429, expected)


def test_workload_refuses_retry_after_over_a_day() -> None:
    text = MINIMAL + "faults:\n  windows:\n    - {kind: errors, retryAfter: 25h}\n"
    with pytest.raises(ConfigError) as caught:
        parse_workload(text, "w.yaml")
    assert caught.value.field == "faults.windows[0]"
    assert "retryAfter must be between 0 and 24h" in caught.value.message
    assert caught.value.file == f"w.yaml:{MINIMAL_LINES + 3}"


# -- a whole virtual run ------------------------------------------------------------------------

TINY = HEADER + textwrap.dedent(
    """\
    seed: 3
    images:
      - {repository: team/app, tags: ["1"], layers: [1MiB, 64KiB]}
      - {repository: team/side, tags: ["2"], layers: [300KiB]}
    nodes:
      - {name: n, count: 2}
    pods:
      - name: p
        count: 3
        spec:
          containers:
            - {name: c, image: "team/app:1"}
            - {name: s, image: "team/side:2"}
    virtual:
      registry:
        latency: 5ms
        bandwidth: {perConnection: 10MiB/s}
        auth: AUTH
    """
)


def tiny_report(auth: str, store_root: Path) -> dict[str, Any]:
    workload = parse_workload(TINY.replace("AUTH", auth), "tiny.yaml")
    result = run_virtual(workload, store_root)
    assert result.model is not None
    return build_report(result)


@pytest.mark.parametrize("auth", ["none", "token"])
def test_run_virtual_of_a_tiny_workload(auth: str, tmp_path: Path) -> None:
    report = tiny_report(auth, tmp_path)
    summary = report["summary"]
    assert (summary["pods"], summary["pods_ready"], summary["pods_not_ready"]) == (3, 3, 0)
    assert all(pod["ready"] is not None for pod in report["pods"])
    assert all(c["ready"] for pod in report["pods"] for c in pod["containers"])
    assert summary["pull_errors"] == 0
    assert report["run"]["virtual"] is True
    assert report["run"]["registry"] == MODEL_HOST
    assert report["run"]["timed_out"] is False
    assert summary["health"]["warnings"] == []
    assert summary["health"]["virtual_time"] is True
    view = report["registry_view"]
    totals = view["totals"]
    tokens = totals["tokens_issued"]
    if auth == "token":
        assert tokens > 0
        assert summary["registry_requests_by_status"]["401"] > 0  # each node met the challenge
    else:
        assert tokens == 0
        assert "401" not in summary["registry_requests_by_status"]
    # The registry saw every request the nodes counted, and the token requests besides.
    assert totals["requests"] == summary["registry_requests"] + tokens
    assert totals["errors"] == 0
    assert totals["bytes"] > summary["bytes_pulled"] > 0  # layers, and manifests and configs
    assert summary["bytes_received"] == summary["bytes_pulled"]
    assert sum(row[1] for row in view["series"]) == totals["requests"]
    assert sum(row[2] for row in view["series"]) == totals["bytes"]
    assert sum(row[4] for row in view["series"]) == tokens
    assert view["model"]["auth"] == auth
    assert view["model"]["latency"] == "5 ms"
    assert view["model"]["per_connection_bytes_per_second"] == 10 * MiB
    assert view["outages"] == []
    sizes = report["images"]["sizes"]
    assert set(sizes) == {"team/app:1", "team/side:2"}


def test_run_virtual_is_repeatable(tmp_path: Path) -> None:
    first = tiny_report("token", tmp_path / "a")
    again = tiny_report("token", tmp_path / "b")
    assert [p["ready"] for p in first["pods"]] == [p["ready"] for p in again["pods"]]
    assert first["registry_view"]["series"] == again["registry_view"]["series"]
    statuses = [r["summary"]["registry_requests_by_method_status"] for r in (first, again)]
    assert statuses[0] == statuses[1]


# -- the command line -------------------------------------------------------------------------

TINY_CLI = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: tiny-cli
seed: 2
images:
  - {repository: cli/app, tags: ["1"], layers: [64KiB]}
nodes:
  - {name: node, count: 2}
pods:
  - name: app
    count: 3
    spec: {containers: [{name: app, image: "cli/app:1"}]}
faults:
  windows:
    - {kind: outage, start: 0s, end: 30s}
run: {timeout: 2m}
"""


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(["--registry", "127.0.0.1:5000"], id="--registry"),
        pytest.param(["--start-at", str(int(time.time()) + 60)], id="--start-at"),
        pytest.param(["--store", "disk"], id="--store"),
        pytest.param(["--keep-stores"], id="--store"),
        pytest.param(["--no-seed"], id="--no-seed"),
    ],
)
def test_virtual_refuses_flags_of_real_runs(
    tmp_path: Path, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(TINY_CLI)
    assert main(["bench", str(path), "--virtual", "--out", str(tmp_path / "out"), *flags]) == 1
    err = capsys.readouterr().err
    flag = flags[0] if flags[0] != "--keep-stores" else "--store"
    assert err.startswith(f"kubelet-sim: error: {flag}: not with --virtual")
    assert "modelled registry" in err
    assert not (tmp_path / "out" / "report.json").exists()


def test_virtual_bench_writes_the_report_and_prints_the_outage_spike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(TINY_CLI)
    out = tmp_path / "out"
    assert main(["bench", str(path), "--virtual", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "virtual time: 2 nodes, 3 pods against the modelled registry" in text
    assert "outage 0-30 s:" in text
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["virtual"] is True
    assert report["summary"]["pods_ready"] == 3
    assert report["summary"]["health"]["virtual_time"] is True
    assert report["summary"]["health"]["warnings"] == []
    spike = report["registry_view"]["outages"][0]
    assert spike["requests_during"] == spike["resets_during"] > 0
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "registry-view.png"}
    assert "## The modelled registry (virtual time)" in (out / "report.md").read_text()


def test_virtual_shards_model_their_share_and_merge_into_the_single_run(tmp_path: Path) -> None:
    """Two shards, each against half the registry, merge into exactly what one process saw
    (no bandwidth limit, an outage: every node's pulls and retries are the same)."""
    from kubelet_sim.workloads.report import merge_records, shard_record
    from kubelet_sim.workloads.shards import run_shard_of

    text = TINY_CLI.replace("count: 2}", "count: 4}").replace("count: 3", "count: 8")
    workload = parse_workload(text + "virtual:\n  registry: {latency: 2ms, auth: token}\n")
    single = merge_records([shard_record(run_virtual(workload, tmp_path / "one"))])
    records = [
        run_shard_of(workload, "", (i, 2), start_at=None, store="memory", virtual=True)
        for i in range(2)
    ]
    merged = merge_records(records)
    ready = {p["name"]: p["ready"] for p in single["pods"]}
    assert ready == {p["name"]: p["ready"] for p in merged["pods"]}
    assert all(t is not None and t >= 30.0 for t in ready.values())  # after the outage
    assert merged["run"]["shards"] == 2
    assert merged["run"]["virtual"] is True
    one, two = single["registry_view"], merged["registry_view"]
    assert two["shards"] == 2
    assert two["totals"] | {"peak_bodies": 0, "peak_in_flight": 0} == one["totals"] | {
        "peak_bodies": 0,
        "peak_in_flight": 0,
    }
    assert two["outages"] == one["outages"]
    assert [row[:5] for row in two["series"]] == [row[:5] for row in one["series"]]
    assert merged["summary"]["health"]["warnings"] == []


def test_a_shard_modeled_as_a_share_of_the_registry() -> None:
    workload = parse_workload(
        TINY_CLI + "virtual:\n  registry: {bandwidth: {total: 1GiB/s}, concurrency: 5}\n"
    )
    model, _ = model_for(workload, shards=2)
    assert model.model.total == 1024**3 / 2
    assert model.model.concurrency == 3  # 5/2, rounded up: a shard always has a slot
    # Only shards that have nodes share the registry: 4 shards of 2 nodes are 2 that do.
    assert model_for(workload, shards=4)[0].model.total == 1024**3 / 2
    assert model.model.per_connection == workload.virtual.per_connection


def test_virtual_and_real_shard_records_are_not_merged(tmp_path: Path) -> None:
    from kubelet_sim.workloads.report import merge_records
    from kubelet_sim.workloads.shards import run_shard_of

    workload = parse_workload(TINY_CLI)
    first = run_shard_of(workload, "", (0, 2), start_at=None, store="memory", virtual=True)
    second = run_shard_of(workload, "", (1, 2), start_at=None, store="memory", virtual=True)
    second["run"]["virtual"] = False
    del second["registry_raw"]
    with pytest.raises(ConfigError, match="virtual and real shards cannot be merged"):
        merge_records([first, second])


def test_ctrl_c_inside_a_virtual_run_comes_back_as_a_keyboard_interrupt(tmp_path: Path) -> None:
    """trio's task groups hand a Ctrl-C on wrapped in an exception group; bench's --repeat (which
    drops the run) and the CLI (which exits 130) know a KeyboardInterrupt, not a traceback."""
    workload = parse_workload(TINY.replace("AUTH", "none"), "tiny.yaml")

    def interrupted(snapshot: object) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_virtual(workload, tmp_path, on_tick=interrupted)
