"""Workload files: the examples parse, every field is read, bad files name the line and the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kubelet_sim.core.policy import PullPolicy
from kubelet_sim.errors import ConfigError
from kubelet_sim.sim.faultproxy import FaultKind
from kubelet_sim.workloads import load_workload, parse_workload, read_trace
from kubelet_sim.workloads.spec import ArrivalKind, CacheState, PlacementKind, SizeKind

EXAMPLES = sorted((Path(__file__).parents[2] / "benchmarks" / "workloads").glob("*.yaml"))

HEADER = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: t
"""
MINIMAL = (
    HEADER
    + """\
images:
  - {repository: a/b, tags: ["1"], layers: [1KiB]}
nodes:
  - {name: n}
pods:
  - name: p
    count: 1
    spec: {containers: [{name: c, image: "a/b:1"}]}
"""
)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_workload_parses(path: Path) -> None:
    workload = load_workload(path)
    assert workload.nodes
    assert workload.pods
    assert len(workload.digest) == 64


def test_full_workload_reads_every_section(tmp_path: Path) -> None:
    (tmp_path / "arrivals.txt").write_text("# recorded\n10.5\n12.0,3\n\n11\n")
    text = HEADER + textwrap.dedent(
        """\
        description: all of it
        seed: 7
        bases:
          - name: distro
            layers: [2MiB, {count: 2, size: 512KiB}]
        images:
          - repository: shop/web-{i}
            count: 2
            tags: ["1.0", latest]
            base: distro
            platforms: [linux/amd64, linux/arm64]
            layers:
              - {count: 3, size: {lognormal: {median: 1MiB, sigma: 0.5}, min: 64k, max: 4MB}}
              - {count: 1, size: {uniform: [1KiB, 2KiB]}}
              - {count: 1, size: {choice: [1KiB, 1Mi]}}
            compress: true
            mediaTypes: docker
        nodes:
          - name: serial
            count: 2
            kubelet: {registryPullQPS: 0}
          - name: parallel
            count: 3
            platform: linux/arm64
            kubelet: {maxParallelImagePulls: 4}
            cache: warm
            prePulled: ["shop/web-0:1.0"]
            maxConcurrentDownloads: 6
            transport: {maxAttempts: 2, backoffInitial: 100ms, stallTimeout: 5}
            timing: {resyncPeriod: 1s, backoffInitial: 1s, backoffMax: 1m}
        pods:
          - name: web
            count: 5
            namespace: shop
            spec:
              initContainers: [{name: init, image: "shop/web-1:1.0"}]
              containers:
                - {name: web, image: "shop/web-{i%2}:1.0", imagePullPolicy: Always}
              imagePullSecrets: [{name: regcred}]
            arrival: {rate: 2.5, start: 1s}
            placement: {kind: random, seed: 3, nodes: [parallel]}
          - name: agent
            spec: {containers: [{name: a, image: "shop/web-0:latest"}]}
            placement: every-node
          - name: replay
            spec: {containers: [{name: a, image: "shop/web-0:1.0"}]}
            arrival: {trace: arrivals.txt}
          - name: burst
            count: 7
            spec: {containers: [{name: a, image: "shop/web-0:1.0"}]}
            arrival: {bursts: {size: 3, every: 2s}}
        secrets:
          - {name: regcred, namespace: shop, username: u, password: sekrit}
        faults:
          seed: 4
          windows:
            - {kind: latency, delay: 50ms, jitter: 10ms}
            - {kind: outage, start: 1s, end: 2s}
            - {kind: errors, share: 0.25, status: 429}
            - {kind: resets, share: 0.1, afterBytes: 64KiB}
        run: {timeout: 90s, proxy: true}
        """
    )
    w = parse_workload(text, "w.yaml", base_dir=tmp_path)
    assert (w.name, w.seed, w.description) == ("t", 7, "all of it")
    base = w.bases[0]
    assert [(g.count, g.size.value) for g in base.layers] == [(1, 2 * 2**20), (2, 512 * 1024)]
    image = w.images[0]
    assert image.repositories() == ["shop/web-0", "shop/web-1"]
    assert image.tags == ("1.0", "latest")
    assert image.platforms == ("linux/amd64", "linux/arm64")
    assert (image.compress, image.docker, image.base) == (True, True, "distro")
    lognormal, uniform, choice = (g.size for g in image.layers)
    assert lognormal.kind is SizeKind.LOGNORMAL
    assert (lognormal.median, lognormal.sigma, lognormal.low, lognormal.high) == (
        2**20,
        0.5,
        64_000,
        4_000_000,
    )
    assert (uniform.kind, uniform.low, uniform.high) == (SizeKind.UNIFORM, 1024, 2048)
    assert choice.choices == (1024, 2**20)
    serial, parallel = w.nodes
    assert serial.kubelet.serialize_image_pulls is True
    assert serial.kubelet.registry_pull_qps == 0
    assert serial.node_names() == ["serial-000", "serial-001"]
    # maxParallelImagePulls alone defaults serializeImagePulls to false, as in a config file.
    assert parallel.kubelet.serialize_image_pulls is False
    assert parallel.kubelet.max_parallel_image_pulls == 4
    assert (parallel.cache, parallel.platform) == (CacheState.WARM, "linux/arm64")
    assert parallel.pre_pulled == ("shop/web-0:1.0",)
    assert parallel.max_concurrent_downloads == 6
    assert (parallel.transport.max_attempts, parallel.transport.backoff_initial) == (2, 0.1)
    assert parallel.transport.stall_timeout == 5
    assert (parallel.timing.resync_period, parallel.timing.backoff_max) == (1.0, 60.0)
    web, agent, replay, burst = w.pods
    assert (web.count, web.namespace, web.pull_secrets) == (5, "shop", ("regcred",))
    assert [c.name for c in web.init_containers] == ["init"]
    assert web.containers[0].image_pull_policy is PullPolicy.ALWAYS
    assert web.arrival.kind is ArrivalKind.RATE
    assert web.arrival.times(3) == [1.0, 1.4, 1.8]
    assert (web.placement.kind, web.placement.groups, web.placement.seed) == (
        PlacementKind.RANDOM,
        ("parallel",),
        3,
    )
    assert agent.count == 5  # every-node: one per node of all groups
    assert agent.containers[0].image_pull_policy is PullPolicy.ALWAYS  # :latest
    assert replay.count == 5
    assert replay.arrival.times(5) == [0.0, 0.5, 1.5, 1.5, 1.5]
    assert burst.arrival.times(7) == [0, 0, 0, 2, 2, 2, 4]
    assert w.secrets[0].password == "sekrit"
    assert "sekrit" not in repr(w.secrets[0])
    kinds = [window.kind for window in w.faults.windows]
    assert kinds == [FaultKind.LATENCY, FaultKind.OUTAGE, FaultKind.ERRORS, FaultKind.RESETS]
    assert w.faults.windows[2].status == 429
    assert w.faults.windows[3].after_bytes == 65536
    assert w.faults.seed == 4
    assert (w.run.timeout, w.run.proxy, w.uses_proxy) == (90.0, True, True)


def _bad(snippet: str, old: str = "", new: str = "") -> str:
    return MINIMAL.replace(old, new) if old else MINIMAL + snippet


BAD = [
    pytest.param(_bad("color: red\n"), 12, "color", "unknown field", id="unknown-top-field"),
    pytest.param(_bad("", "kind: Workload", "kind: Pod"), 2, "kind", "expected 'Workload'",
                 id="wrong-kind"),
    pytest.param(_bad("", "name: t\n", ""), 1, "", "name: required", id="missing-name"),
    pytest.param(_bad("", "name: t\n", "name: t\nname: u\n"), 4, "name", "duplicate key",
                 id="duplicate-key"),
    pytest.param(_bad("", "nodes:", "nodes: [\n"), 8, "", "invalid YAML", id="invalid-yaml"),
    pytest.param(_bad("", "layers: [1KiB]", "layers: [4XB]"), 5, "images[0].layers[0]",
                 "expected a size", id="bad-size"),
    pytest.param(_bad("", "layers: [1KiB]", "layers: [{count: 0, size: 1k}]"), 5,
                 "images[0].layers[0].count", "at least 1", id="zero-layers"),
    pytest.param(_bad("", "layers: [1KiB]", "base: nope"), 5, "images[0].base", "unknown base",
                 id="unknown-base"),
    pytest.param(_bad("", "{repository: a/b,", "{repository: a/b, count: 2,"), 5,
                 "images[0].repository", "must contain {i}", id="count-without-index"),
    pytest.param(_bad("", "{repository: a/b,", "{repository: A/B,"), 5, "images[0].repository",
                 "not a valid image", id="invalid-repository"),
    pytest.param(_bad("", "  - {name: n}", "  - {name: n, kubelet: {maxParallelImagePulls: 0}}"),
                 7, "nodes[0].kubelet.maxParallelImagePulls", "must be a positive number",
                 id="kubelet-invalid-value"),
    pytest.param(_bad("", "  - {name: n}",
                      "  - name: n\n    kubelet:\n      serializeImagePulls: true\n"
                      "      maxParallelImagePulls: 3"),
                 10, "nodes[0].kubelet.maxParallelImagePulls", "cannot be larger than 1",
                 id="kubelet-serial-and-parallel"),
    pytest.param(_bad("", "  - {name: n}", "  - {name: n, kubelet: {pullFaster: true}}"), 7,
                 "nodes[0].kubelet.pullFaster", "unknown field", id="kubelet-unknown-field"),
    pytest.param(_bad("", "  - {name: n}", "  - {name: n, cache: lukewarm}"), 7,
                 "nodes[0].cache", "cold or warm", id="bad-cache"),
    pytest.param(_bad("", "  - {name: n}", "  - {name: n, prePulled: [x/y:1]}"), 7,
                 "nodes[0].prePulled[0]", "not one of the workload's images", id="prepull-unknown"),
    pytest.param(_bad("", "  - {name: n}", "  - {name: n, platform: amd64}"), 7,
                 "nodes[0].platform", "expected os/arch", id="bad-platform"),
    pytest.param(_bad("", "  - {name: n}", "  - {name: N_1}"), 7, "nodes[0].name",
                 "lower-case", id="bad-node-name"),
    pytest.param(_bad("", "image: \"a/b:1\"", "image: \"\""), 11,
                 "pods[0].spec.containers[0].image", "Required value", id="pod-image-missing"),
    pytest.param(_bad("", "image: \"a/b:1\"}", "image: \"a/b:1\", imagePullPolicy: Sometimes}"),
                 11, "pods[0].spec.containers[0].imagePullPolicy", "Sometimes",
                 id="bad-pull-policy"),
    pytest.param(_bad("    arrival: {at: 1s, rate: 3}\n"), 12, "pods[0].arrival",
                 "exactly one of", id="two-arrivals"),
    pytest.param(_bad("    arrival: {rate: 0}\n"), 12, "pods[0].arrival.rate",
                 "between", id="zero-rate"),
    pytest.param(_bad("    arrival: {at: soon}\n"), 12, "pods[0].arrival.at",
                 "duration", id="bad-duration"),
    pytest.param(_bad("    placement: {kind: random, nodes: [gpu]}\n"), 12,
                 "pods[0].placement.nodes[0]", "no node group 'gpu'", id="unknown-group"),
    pytest.param(_bad("    placement: spread\n"), 12, "pods[0].placement.kind",
                 "round-robin, random, every-node", id="unknown-placement"),
    pytest.param(_bad("", "    count: 1\n", ""), 9, "pods[0].count", "required",
                 id="missing-count"),
    pytest.param(_bad("faults:\n  windows:\n    - {kind: errors, share: 1.5}\n"), 14,
                 "faults.windows[0].share", "between 0 and 1", id="share-above-one"),
    pytest.param(_bad("faults:\n  windows:\n    - {kind: outage, start: 5s, end: 2s}\n"), 14,
                 "faults.windows[0]", "end must be after start", id="window-ends-first"),
    pytest.param(_bad("faults:\n  windows:\n    - {kind: flood}\n"), 14,
                 "faults.windows[0].kind", "latency, errors, resets, outage", id="unknown-fault"),
    pytest.param(_bad("run: {timeout: -1}\n"), 12, "run.timeout", "must not be negative",
                 id="negative-timeout"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "field", "message"), BAD)
def test_bad_workload_names_line_and_field(text: str, line: int, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_workload(text, "w.yaml")
    error = caught.value
    assert error.file == f"w.yaml:{line}", str(error)
    assert (error.field or "") == field, str(error)
    assert message in error.message, str(error)
    assert str(error).startswith(f"w.yaml:{line}")


def test_missing_workload_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_workload(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param("5\n2\n3.5\n", (0.0, 1.5, 3.0), id="seconds-unsorted"),
        pytest.param("0,2\n# gap\n\n1.25 # inline\n", (0.0, 0.0, 1.25), id="counts-comments"),
        pytest.param(
            "2024-05-01T10:00:00Z\n2024-05-01T10:00:02.5Z,2\n", (0.0, 2.5, 2.5), id="iso-times"
        ),
    ],
)
def test_trace_files(tmp_path: Path, content: str, expected: tuple[float, ...]) -> None:
    path = tmp_path / "trace.txt"
    path.write_text(content)
    assert read_trace(path) == expected


@pytest.mark.parametrize(
    ("content", "where"),
    [
        pytest.param("1\nnoon\n", "trace.txt:2", id="bad-time"),
        pytest.param("1,0\n", "trace.txt:1", id="zero-count"),
        pytest.param("# nothing\n", "trace.txt", id="empty"),
    ],
)
def test_bad_trace_files_name_the_line(tmp_path: Path, content: str, where: str) -> None:
    path = tmp_path / "trace.txt"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        read_trace(path)
    assert caught.value.file is not None
    assert caught.value.file.endswith(where)


def test_trace_count_beyond_the_trace_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("0\n1\n")
    text = MINIMAL.replace("    count: 1\n", "    count: 3\n    arrival: {trace: t.txt}\n")
    with pytest.raises(ConfigError, match="only 2 arrivals"):
        parse_workload(text, "w.yaml", base_dir=tmp_path)


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KSIM_TEST_PW", "from-env")
    text = MINIMAL + "secrets: [{name: s, username: u, passwordEnv: KSIM_TEST_PW}]\n"
    assert parse_workload(text, "w.yaml").secrets[0].password == "from-env"
    monkeypatch.delenv("KSIM_TEST_PW")
    with pytest.raises(ConfigError, match="KSIM_TEST_PW is not set"):
        parse_workload(text, "w.yaml")


@pytest.mark.parametrize("command", ["seed", "bench"])
def test_commands_refuse_a_registry_that_is_not_loopback(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from kubelet_sim.cli.main import main

    assert main([command, str(EXAMPLES[0]), "--registry", "10.0.0.1:5000"]) == 1
    assert "not a loopback address" in capsys.readouterr().err
