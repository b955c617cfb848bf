"""Shard records and their merge: figures from the merged raw data, never averaged; bad sets refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubelet_sim.errors import ConfigError
from kubelet_sim.workloads.health import assess
from kubelet_sim.workloads.report import SHARD_SCHEMA, merge_records, percentiles
from kubelet_sim.workloads.shards import load_shard_records, parse_shard, shard_file, write_record


def node(name: str, requests: int) -> dict[str, Any]:
    return {
        "name": name, "group": "node", "platform": "linux/amd64", "pods": 1, "pods_ready": 1,
        "pulls": 1, "pull_errors": 0, "registry_pulls": 1, "shared_pulls": 0, "cache_hits": 0,
        "ensure_image_requests": 1, "bytes_pulled": 10, "bytes_received": 10,
        "peak_pulls_in_flight": 1, "registry_responses": {"GET 200": requests},
        "registry_retries": {}, "events_emitted": {"Pulled": 1}, "events_stored": {},
        "events_spam_filtered": 0, "metrics": {},
    }  # fmt: skip


def pod(name: str, node_name: str, arrival: float, seconds: float | None) -> dict[str, Any]:
    ready = None if seconds is None else arrival + seconds
    return {
        "name": name, "template": "web", "node": node_name, "group": "node", "arrival": arrival,
        "submitted": arrival, "ready": ready, "seconds": seconds,
        "containers": [{"name": "web", "image": "x", "ready": seconds is not None,
                        "reason": "" if seconds is not None else "ErrImagePull", "attempts": 1,
                        "image_id": None}],
    }  # fmt: skip


def record(
    index: int,
    count: int,
    pods: list[dict[str, Any]],
    *,
    start: float = 1000.0,
    agreed: float | None = 1000.0,
    sha: str = "abc",
    lag: float = 0.001,
) -> dict[str, Any]:
    nodes = sorted({p["node"] for p in pods})
    return {
        "schema": SHARD_SCHEMA,
        "shard": {"index": index, "count": count},
        "workload": {"name": "w", "description": "", "file": "w.yaml", "sha256": sha, "seed": 1},
        "run": {"started_at": "x", "start_epoch": start, "agreed_start": agreed,
                "registry": "r", "nodes_pulled_from": "r", "via_fault_proxy": False,
                "stopped_at": 5.0, "timed_out": False, "timeout": 10.0, "store": "memory",
                "kubelet_sim": "0", "python": "3", "machine": "m", "host": f"h{index}"},
        "groups": {"node": {"platform": "linux/amd64", "cache": "cold", "kubelet": {},
                            "kubelet_fields": {}, "nodes_planned": 4}},
        "templates": {"web": {"pods": 4, "images": ["x"], "arrival": "once", "placement": "rr"}},
        "images": {"seeded": 1, "sizes": {}, "pod_images_not_seeded": [], "seeding": None},
        "faults": {"plan": []},
        "resources": {"wall_seconds": 5.0, "cpu_user_seconds": 1.0, "cpu_system_seconds": 0.5,
                      "cpu_seconds": 1.5, "peak_rss_mib": 100.0, "peak_rss_reset_at_start": 1.0},
        "loop_lag": [lag] * 10,
        "nodes": [node(n, 3) for n in nodes],
        "pods": pods,
        "pulls": [{"node": p["node"], "start": p["arrival"], "end": p["arrival"] + 0.1,
                   "size": 10, "error": False, "dispatch": 0.002} for p in pods],
        "bytes_timeline": [[0.0, 5], [0.1, 5]],
    }  # fmt: skip


def test_a_percentile_that_falls_among_pods_not_ready_is_unknown_not_optimistic() -> None:
    stats = percentiles([1.0, 2.0, 3.0], not_ready=1)
    assert stats["count"] == 3
    assert stats["not_ready"] == 1
    assert stats["p50"] == 2.5  # rank 1.5 of 4 pods
    assert stats["p90"] is None  # rank 2.7: among the pods that never became ready
    assert stats["p99"] is None
    assert stats["max"] is None
    assert stats["mean"] is None
    assert percentiles([1.0, 2.0, 3.0])["p99"] == pytest.approx(2.98)


def test_merged_percentiles_come_from_the_merged_pods_not_from_averaging_shards() -> None:
    a = record(0, 2, [pod("a", "n0", 0.0, 1.0), pod("b", "n0", 0.0, 2.0)])
    b = record(1, 2, [pod("c", "n1", 0.0, 10.0), pod("d", "n1", 0.0, 20.0)])
    report = merge_records([b, a])
    s = report["summary"]
    assert s["pods"] == 4
    assert s["pods_ready"] == 4
    assert s["time_to_ready"] == percentiles([1.0, 2.0, 10.0, 20.0])
    assert s["time_to_ready"]["p50"] == 6.0  # the shards' own medians average to 8.25
    assert s["registry_requests"] == 6
    assert s["resources"]["cpu_seconds"] == 3.0
    assert s["resources"]["processes"] == 2
    assert report["run"]["shards"] == 2
    assert report["run"]["hosts"] == ["h0", "h1"]
    assert [n["name"] for n in report["nodes"]] == ["n0", "n1"]
    assert report["bytes_timeline"] == [(0.0, 10), (0.1, 10)]


def test_a_pod_that_never_became_ready_stays_in_the_denominator_with_its_reason() -> None:
    a = record(0, 1, [pod("a", "n0", 0.0, 1.0), pod("b", "n0", 0.0, None)])
    s = merge_records([a])["summary"]
    assert s["pods"] == 2
    assert s["pods_ready"] == 1
    assert s["pods_not_ready"] == 1
    assert s["waiting_reasons"] == {"ErrImagePull": 1}
    assert s["time_to_ready"]["p99"] is None
    assert s["makespan"] is None  # not every pod finished: there is no makespan


def test_a_shard_that_started_late_keeps_its_lateness() -> None:
    a = record(0, 2, [pod("a", "n0", 0.0, 1.0)], start=1000.0)
    b = record(1, 2, [pod("b", "n1", 0.0, 1.0)], start=1002.5)
    report = merge_records([a, b])
    late = next(p for p in report["pods"] if p["name"] == "b")
    assert late["submitted"] == 2.5
    assert late["ready"] == 3.5
    assert report["summary"]["arrival_lag"]["max"] == 2.5


@pytest.mark.parametrize(
    ("records", "message"),
    [
        pytest.param([record(0, 2, [])], "missing shard records: 1/2", id="missing"),
        pytest.param([record(0, 2, []), record(0, 2, [])], "shard 0/2 given twice", id="twice"),
        pytest.param(
            [record(0, 2, []), record(1, 2, [], sha="other")], "different workload", id="sha"
        ),
        pytest.param([record(0, 2, []), record(1, 3, [])], "disagree on the count", id="count"),
        pytest.param([], "no shard records", id="none"),
    ],
)
def test_an_incomplete_or_mixed_set_of_shards_is_refused(
    records: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        merge_records(records)


@pytest.mark.parametrize("value", ["2", "2/2", "-1/2", "0/0", "a/b", "0/257", "1/2/3"])
def test_a_bad_shard_spec_names_the_option_and_value(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_shard(value)
    assert "--shard" in str(info.value)
    assert repr(value) in str(info.value)


def test_shard_records_round_trip_through_files_and_folders(tmp_path: Path) -> None:
    a = record(0, 2, [pod("a", "n0", 0.0, 1.0)])
    b = record(1, 2, [pod("b", "n1", 0.0, 2.0)])
    write_record(a, shard_file(tmp_path / "one", 0, 2))
    write_record(b, shard_file(tmp_path / "two", 1, 2))
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["shard-0-of-2.json"]
    loaded = load_shard_records([tmp_path / "one", shard_file(tmp_path / "two", 1, 2)])
    assert merge_records(loaded)["summary"]["pods_ready"] == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("{", "not a readable shard record", id="truncated"),
        pytest.param("[" * 100_000 + "]" * 100_000, "not a readable shard record", id="deep"),
        pytest.param(json.dumps({"schema": "other"}), "not a kubelet-sim/bench-shard", id="alien"),
    ],
)
def test_a_file_that_is_not_a_shard_record_is_named(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "shard-0-of-1.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_shard_records([tmp_path])
    assert str(path) in str(info.value)


def test_an_empty_folder_or_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no shard-I-of-N\.json records"):
        load_shard_records([tmp_path])
    with pytest.raises(ConfigError, match="no such file or folder"):
        load_shard_records([tmp_path / "nope"])


def test_health_flags_a_run_where_the_simulator_dominated() -> None:
    quiet = assess(loop_lag=[0.0005] * 100, dispatch=[0.001] * 10, arrival_lag=[0.0] * 10,
                   ttr_p50=1.0, cpu_seconds=2.0, wall_seconds=10.0)  # fmt: skip
    assert quiet["dominated_by_simulator"] is False
    assert quiet["warnings"] == []
    busy = assess(loop_lag=[0.2] * 100, dispatch=[0.3] * 10, arrival_lag=[0.0] * 10,
                  ttr_p50=1.0, cpu_seconds=9.8, wall_seconds=10.0)  # fmt: skip
    assert busy["dominated_by_simulator"] is True
    assert busy["client_wait_share"] == pytest.approx(0.5)
    assert any("simulator dominated the latency" in w for w in busy["warnings"])
    assert any("CPU-bound" in w for w in busy["warnings"])
    two = assess(loop_lag=[0.0] * 10, dispatch=[], arrival_lag=[], ttr_p50=1.0,
                 cpu_seconds=9.8, wall_seconds=10.0, processes=2)  # fmt: skip
    assert two["cpu_per_process"] == pytest.approx(0.49)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        pytest.param(lambda r: r.pop("pods"), "pods", id="no-pods"),
        pytest.param(lambda r: r["pods"][0].update(arrival="soon"), "pods[0].arrival", id="type"),
        pytest.param(lambda r: r["pulls"][0].update(error=1), "pulls[0].error", id="bool"),
        pytest.param(lambda r: r["shard"].update(index=True), "shard.index", id="bool-index"),
        pytest.param(lambda r: r["nodes"].append(7), "nodes[1]", id="not-an-object"),
        pytest.param(lambda r: r.update(bytes_timeline=[[0]]), "bytes_timeline[0]", id="point"),
        pytest.param(
            lambda r: r["resources"].pop("cpu_seconds"), "resources.cpu_seconds", id="resources"
        ),
    ],
)
def test_a_shard_record_edited_out_of_shape_names_the_field(
    tmp_path: Path, edit: Any, field: str
) -> None:
    bad = record(0, 1, [pod("a", "n0", 0.0, 1.0)])
    edit(bad)
    write_record(bad, shard_file(tmp_path, 0, 1))
    with pytest.raises(ConfigError) as info:
        load_shard_records([tmp_path])
    assert info.value.field == field
    assert str(shard_file(tmp_path, 0, 1)) in str(info.value)


def test_a_start_instant_that_is_not_a_time_is_refused(tmp_path: Path) -> None:
    from kubelet_sim.cli.main import main

    workload = Path(__file__).parents[2] / "benchmarks" / "workloads" / "smoke.yaml"
    for value in ("nan", "inf", "1e12"):
        argv = ["bench", str(workload), "--shard", "0/2", "--out", str(tmp_path),
                "--start-at", value, "--registry", "127.0.0.1:1"]  # fmt: skip
        assert main(argv) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_shard_record_is_written_under_a_name_of_its_own_never_through_a_planted_link(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".shard-0-of-1.json.tmp").symlink_to(victim)  # the old fixed temporary name
    write_record({"a": 1}, shard_file(out, 0, 1))
    assert victim.read_text() == "not yours"
    assert json.loads(shard_file(out, 0, 1).read_text()) == {"a": 1}
    assert not shard_file(out, 0, 1).is_symlink()
    assert sorted(p.name for p in out.iterdir()) == [".shard-0-of-1.json.tmp", "shard-0-of-1.json"]


def test_a_shard_record_that_cannot_be_written_is_named_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "shard-0-of-1.json").mkdir()  # in the way
    with pytest.raises(ConfigError, match=r"--out.*cannot write .*shard-0-of-1\.json"):
        write_record({"a": 1}, shard_file(tmp_path, 0, 1))
    assert [p.name for p in tmp_path.iterdir()] == ["shard-0-of-1.json"]
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match=r"--out.*cannot write .*a-file/shard-0-of-1\.json"):
        write_record({"a": 1}, shard_file(tmp_path / "a-file", 0, 1))
