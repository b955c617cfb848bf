"""A hostile look at churn (``churn:``) and the report's breakdowns: rollouts at their edges,
restarts in a row, deletes under a rollout, bad input through the CLI, shard records merged,
retags on the real registry. Each bug it found is pinned by a test here (a strict xfail until
it was fixed)."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from kubelet_sim.cli.main import main
from kubelet_sim.errors import ConfigError
from kubelet_sim.sim.registry import HTPASSWD_USERS, RegistryFactory, RegistryProcess
from kubelet_sim.sim.tls import TLSMaterial
from kubelet_sim.workloads import parse_workload, seed_workload
from kubelet_sim.workloads.report import histogram_quantile, merge_records

BASE = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: hostile
seed: 5
images:
  - {repository: shop/web, tags: ["1.0", "1.1", "2.0"], layers: [1MiB]}
  - {repository: shop/side, tags: ["1"], layers: [64KiB]}
nodes:
  - name: pool
    count: 4
    timing: {resyncPeriod: 1s, backoffInitial: 10s, backoffMax: 20s}
pods:
  - name: web
    count: 8
    spec: {containers: [{name: web, image: "shop/web:1.0"}]}
  - name: two
    count: 1
    spec:
      initContainers: [{name: i, image: "shop/side:1"}]
      containers: [{name: a, image: "shop/side:1"}, {name: b, image: "shop/side:1"}]
virtual:
  registry: {latency: 5ms, bandwidth: {perConnection: 20MiB/s, total: 1GiB/s}}
run: {timeout: 60s}
"""

TYPO = "  - name: typo\n    count: 4\n    spec: {containers: [{name: t, image: 'shop/web:9.9'}]}\n"
"""Four pods whose image the registry does not have: ImagePullBackOff, one per node."""


def _text(pods: str = "", churn: str = "", timeout: str = "60s", tail: str = "") -> str:
    head, rest = BASE.split("virtual:\n", 1)
    text = head + pods + "virtual:\n" + rest.replace("60s", timeout)
    return text + ("churn:\n" + churn if churn else "") + tail


def _run(tmp_path: Path, text: str, *flags: str) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    code = main(["bench", str(path), "--virtual", "--quiet", "--no-plots", "--out", str(out),
                 *flags])  # fmt: skip
    return code, json.loads((out / "report.json").read_text())


# --- rollouts at their edges ---------------------------------------------------------------------


def test_one_replica_without_surge_goes_down_then_up(tmp_path: Path) -> None:
    solo = (
        "  - name: solo\n    count: 1\n    spec: {containers: [{name: s, image: 'shop/web:1.0'}]}\n"
    )
    code, report = _run(
        tmp_path,
        _text(
            solo,
            "  - {name: roll, kind: rollout, at: 5s, pods: solo, image: 'shop/web:1.1',"
            " maxSurge: 0, maxUnavailable: 100%}\n",
        ),
    )
    assert code == 0
    roll = report["summary"]["churn"]["roll"]
    assert (roll["max_surge"], roll["max_unavailable"]) == (0, 1)
    assert (roll["created"], roll["deleted"], roll["peak_pods"], roll["min_ready"]) == (1, 1, 1, 0)
    old, new = (
        next(p for p in report["pods"] if p["name"] == n) for n in ("solo-000", "solo-r1-000")
    )
    assert old["deleted"] <= new["submitted"]  # never two at once
    assert new["ready"] is not None


def test_a_rollout_to_a_missing_image_stalls_and_keeps_every_old_pod(tmp_path: Path) -> None:
    code, report = _run(
        tmp_path,
        _text(
            "",
            "  - {name: roll, kind: rollout, at: 5s, pods: web, image: 'shop/web:9.9',"
            " maxSurge: 1, maxUnavailable: 0}\n",
            timeout="40s",
            tail="thresholds: ['churn.roll.seconds < 60s']\n",
        ),
    )
    assert code == 99  # the threshold on a rollout that never finished fails
    s = report["summary"]
    assert report["run"]["timed_out"] is True
    roll = s["churn"]["roll"]
    assert (roll["finished"], roll["seconds"]) == (None, None)
    old = [p for p in report["pods"] if p["template"] == "web" and "-r1-" not in p["name"]]
    assert all(p["deleted"] is None and p["ready"] is not None for p in old)
    assert s["waiting_reasons"] == {"ImagePullBackOff": 1}  # the one surge pod
    assert s["thresholds"][0]["passed"] is False


def test_a_rollout_cut_by_the_timeout_says_what_it_did_so_far(tmp_path: Path) -> None:
    code, report = _run(
        tmp_path,
        _text(
            "",
            "  - {name: roll, kind: rollout, at: 5s, pods: web, image: 'shop/web:1.1',"
            " maxSurge: 1, maxUnavailable: 0}\n",
            timeout="5.5s",
        ),
    )
    assert code == 0
    assert report["run"]["timed_out"] is True
    roll = report["summary"]["churn"]["roll"]
    assert roll["finished"] is None
    new = [p for p in report["pods"] if "-r1-" in p["name"]]
    gone = [p for p in report["pods"] if "-r1-" not in p["name"] and p["deleted"] is not None]
    assert new
    assert gone
    assert roll.get("created") == len(new)
    assert roll.get("deleted") == len(gone)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "0 created, 0 deleted" not in md


def test_a_rollout_before_any_pod_arrived_rolls_the_arrivals(tmp_path: Path) -> None:
    late = (
        "  - name: late\n    count: 3\n    arrival: {at: 10s}\n"
        "    spec: {containers: [{name: l, image: 'shop/web:1.0'}]}\n"
    )
    code, report = _run(
        tmp_path,
        _text(late, "  - {name: roll, kind: rollout, at: 5s, pods: late, image: 'shop/web:1.1'}\n"),
    )
    assert code == 0
    roll = report["summary"]["churn"]["roll"]
    assert (roll["replicas"], roll["created"], roll["arrivals_with_new_image"]) == (0, 0, 3)
    assert roll["finished"] == 5.0
    mine = [p for p in report["pods"] if p["template"] == "late"]
    assert {c["image"].split("/", 1)[1] for p in mine for c in p["containers"]} == {"shop/web:1.1"}


def test_a_rollout_of_an_init_container_changes_only_it(tmp_path: Path) -> None:
    code, report = _run(
        tmp_path,
        _text(
            "",
            "  - {name: roll, kind: rollout, at: 5s, pods: two, container: i, image: 'shop/web:1.1'}\n",
        ),
    )
    assert code == 0
    new = next(p for p in report["pods"] if p["name"] == "two-r1-000")
    images = {c["name"]: c["image"].split("/", 1)[1] for c in new["containers"]}
    assert images == {"i": "shop/web:1.1", "a": "shop/side:1", "b": "shop/side:1"}
    assert new["ready"] is not None


def test_two_rollouts_of_one_template_run_one_after_the_other(tmp_path: Path) -> None:
    code, report = _run(
        tmp_path,
        _text("", "  - {name: r1, kind: rollout, at: 5s, pods: web, image: 'shop/web:1.1'}\n"
                  "  - {name: r2, kind: rollout, at: 5.1s, pods: web, image: 'shop/web:2.0'}\n"),
    )  # fmt: skip
    assert code == 0
    r1, r2 = (report["summary"]["churn"][n] for n in ("r1", "r2"))
    assert r2["started"] >= r1["finished"]
    assert (r1["revision"], r2["revision"], r2["replicas"], r2["created"]) == (1, 2, 8, 8)
    last = [p for p in report["pods"] if p["deleted"] is None and p["template"] == "web"]
    assert len(last) == 8
    assert {c["image"].split("/", 1)[1] for p in last for c in p["containers"]} == {"shop/web:2.0"}


def test_a_delete_under_a_rollout_does_not_stop_the_run_from_ending(tmp_path: Path) -> None:
    code, report = _run(
        tmp_path,
        _text("", "  - {name: roll, kind: rollout, at: 5s, pods: web, image: 'shop/web:1.1',"
                  " maxSurge: 1, maxUnavailable: 0}\n"
                  "  - {name: cut, kind: delete, at: 5.3s, pods: web, count: 50%}\n"),
    )  # fmt: skip
    assert code == 0
    s = report["summary"]
    assert s["churn"]["roll"]["finished"] is not None
    assert s["pods_not_ready"] == 0
    names = [p["name"] for p in report["pods"]]
    assert len(names) == len(set(names))  # every pod the run made is its own
    assert report["run"]["timed_out"] is False  # every pod settled, every action done


# --- restarts ------------------------------------------------------------------------------------


def test_every_restart_of_a_node_counts_the_ready_pods_it_left_running(tmp_path: Path) -> None:
    code, report = _run(
        tmp_path,
        _text(
            TYPO,
            "  - {name: first, kind: restart, at: 2s, nodes: pool, count: 1, downtime: 1s}\n"
            "  - {name: again, kind: restart, at: 5s, nodes: pool, count: 1, downtime: 1s}\n",
            timeout="20s",
        ),
    )
    assert code == 0
    churn = report["summary"]["churn"]
    ready_there = [p for p in report["pods"] if p["node"] == "pool-000" and p["ready"] is not None]
    assert [n["restarts"] for n in report["nodes"]] == [2, 0, 0, 0]
    assert churn["first"]["pods_kept_running"] == len(ready_there) == 3
    assert churn["again"]["pods_reapplied"] == 1  # the typo pod, again
    assert churn["again"]["pods_kept_running"] == 3  # the same three, still running


def test_a_zero_downtime_restart_of_every_kubelet(tmp_path: Path) -> None:
    code, report = _run(
        tmp_path,
        _text(TYPO, "  - {kind: restart, at: 2s, nodes: pool, downtime: 0}\n", timeout="20s"),
    )
    assert code == 0
    restart = report["summary"]["churn"]["restart-0"]
    assert (restart["nodes"], restart["seconds"]) == (4, 0.0)
    assert (restart["pods_reapplied"], restart["pods_kept_running"]) == (4, 9)
    assert report["summary"]["pods_ready"] == 9


def test_pods_deleted_while_their_kubelet_is_down(tmp_path: Path) -> None:
    code, report = _run(
        tmp_path,
        _text(
            TYPO,
            "  - {name: b, kind: restart, at: 3s, nodes: pool, downtime: 3s}\n"
            "  - {name: cut, kind: delete, at: 4s, pods: typo}\n"
            "  - {name: cut2, kind: delete, at: 4.5s, pods: web, count: 2}\n",
            timeout="30s",
        ),
    )
    assert code == 0
    s = report["summary"]
    assert report["run"]["timed_out"] is False
    assert (s["churn"]["b"]["pods_reapplied"], s["churn"]["b"]["pods_kept_running"]) == (0, 7)
    assert (s["pods"], s["pods_deleted"], s["pods_deleted_unready"]) == (13, 6, 4)
    assert s["pods_ready"] + s["pods_not_ready"] + s["pods_deleted_unready"] == s["pods"]
    assert s["time_to_ready"]["count"] == 9  # the typo pods are out of the figures


def test_a_restart_during_an_outage(tmp_path: Path) -> None:
    late = (
        "  - name: late\n    count: 4\n    arrival: {at: 1.5s}\n"
        "    spec: {containers: [{name: l, image: 'shop/web:2.0'}]}\n"
    )
    outage = "faults:\n  windows:\n    - {kind: outage, start: 1s, end: 6s}\n"
    code, report = _run(
        tmp_path,
        _text(late, "  - {kind: restart, at: 2s, nodes: pool, downtime: 1s}\n", tail=outage),
    )
    assert code == 0
    s = report["summary"]
    assert (s["pods_ready"], s["pods_not_ready"]) == (13, 0)
    late_ready = [p["ready"] for p in report["pods"] if p["template"] == "late"]
    assert min(late_ready) >= 6  # nothing came through the outage, restarted kubelet or not


# --- bad input: a FILE:LINE: churn[i].field error, never a traceback -----------------------------


@pytest.mark.parametrize(
    ("item", "where"),
    [
        ("{kind: delete, at: 99999999999999999999999999, pods: web}", "churn[0].at"),
        ("{kind: delete, at: .nan, pods: web}", "churn[0].at"),
        ("{kind: delete, at: -1, pods: web}", "churn[0].at"),
        ("{kind: delete, at: 60s, pods: web}", "churn[0].at"),
        ("{kind: delete, at: [1], pods: web}", "churn[0].at"),
        ("{kind: delete, at: 1, pods: {a: 1}}", "churn[0].pods"),
        ("{kind: delete, at: 1, pods: web, count: true}", "churn[0].count"),
        ("{kind: delete, at: 1, pods: web, count: 99999999999999999999999999}", "churn[0].count"),
        ("{kind: delete, at: 1, pods: web, count: .inf}", "churn[0].count"),
        ("{kind: [delete], at: 1, pods: web}", "churn[0].kind"),
        ("{name: Bad_Name, kind: delete, at: 1, pods: web}", "churn[0].name"),
        ("{name: true, kind: delete, at: 1, pods: web}", "churn[0].name"),
        ("{kind: delete, at: 1, pods: web, bogus: 1}", "churn[0].bogus"),
        ("just-a-string", "churn[0]"),
        ("{kind: restart, at: 1, nodes: pool, downtime: .inf}", "churn[0].downtime"),
        ("{kind: restart, at: 1, nodes: pool, downtime: -2s}", "churn[0].downtime"),
        ("{kind: restart, at: 1, nodes: pool, count: '0.0001%'}", "churn[0].count"),
        ("{kind: rollout, at: 1, pods: web, image: 'x:1', maxSurge: 'nan%'}", "churn[0].maxSurge"),
        ("{kind: rollout, at: 1, pods: web, image: 'x:1', maxSurge: -1}", "churn[0].maxSurge"),
        ("{kind: rollout, at: 1, pods: two, image: 'x:1'}", "churn[0].container"),
    ],
)
def test_bad_churn_through_the_cli_is_a_located_error(
    tmp_path: Path, item: str, where: str
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(_text(churn=f"  - {item}\n"))
    proc = subprocess.run(
        [sys.executable, "-m", "kubelet_sim", "bench", str(path), "--virtual", "--quiet",
         "--no-plots", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode in (1, 2), proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{path}:" in proc.stderr
    assert f": {where}:" in proc.stderr


def test_a_non_utf8_churn_entry_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_bytes(_text(churn="  - {kind: delete, at: 1, pods: 'w").encode() + b"\xffeb'}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kubelet_sim", "bench", str(path), "--virtual", "--quiet"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode in (1, 2)
    assert "Traceback" not in proc.stderr
    assert f"{path}: cannot read the workload file" in proc.stderr


def test_a_threshold_on_an_action_the_workload_does_not_have_is_refused() -> None:
    text = _text(
        churn="  - {name: roll, kind: rollout, at: 5s, pods: web, image: 'shop/web:1.1'}\n",
        tail="thresholds: ['churn.rol.seconds < 60s']\n",
    )
    with pytest.raises(ConfigError, match="thresholds"):
        parse_workload(text, "w.yaml")


# --- the report ----------------------------------------------------------------------------------


def test_the_churn_table_keeps_its_columns_whatever_the_image(tmp_path: Path) -> None:
    code, _ = _run(
        tmp_path,
        _text("", "  - {name: roll, kind: rollout, at: 1s, pods: web, image: 'shop/web:1|1',"
                  " maxSurge: 1, maxUnavailable: 0}\n", timeout="5s"),
    )  # fmt: skip
    assert code == 0
    md = (tmp_path / "out" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| roll |"))
    cells = [c for c in row.replace("\\|", "").split("|")[1:-1]]
    assert len(cells) == 7, row


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, {"+Inf": 4}, None),  # Prometheus: NaN with fewer than two buckets
        (0.9, {"1": 3, "2": 1, "3": 4, "+Inf": 4}, 2.6),  # non-monotonic: made monotonic first
    ],
)
def test_histogram_quantile_on_odd_buckets(
    q: float, buckets: dict[str, int], expected: float | None
) -> None:
    assert histogram_quantile(q, buckets) == expected


def test_histogram_quantile_ignores_bucket_order_and_label_spelling() -> None:
    assert histogram_quantile(0.5, {"+Inf": 20, "2": 20, "1.0": 10}) == 1.0
    assert histogram_quantile(0.75, {"2.0": 20, "1": 10, "+Inf": 20}) == 1.5


def _shard_records(tmp_path: Path, text: str) -> list[dict[str, Any]]:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    records = []
    for i in range(2):
        out = tmp_path / f"shard-{i}"
        assert main(["bench", str(path), "--virtual", "--quiet", "--no-plots", "--shard", f"{i}/2",
                     "--out", str(out)]) == 0  # fmt: skip
        records.append(json.loads((out / f"shard-{i}-of-2.json").read_text()))
    return records


ROLL = "  - {name: roll, kind: rollout, at: 5s, pods: web, image: 'shop/web:1.1', maxSurge: 1}\n"


def test_shard_records_from_before_churn_and_breakdowns_still_merge(tmp_path: Path) -> None:
    records = _shard_records(tmp_path, _text(churn=ROLL))
    for record in records:  # what a record of the release before these figures holds
        record.pop("churn")
        record.pop("request_timeline")
        for pod in record["pods"]:
            pod.pop("deleted")
        for node in record["nodes"]:
            node.pop("pull_causes")
            node.pop("restarts")
            node.get("metrics", {}).pop("registry_ttfb", None)
            node.get("metrics", {}).pop("image_pull_duration_by_size", None)
        for pull in record["pulls"]:
            pull.pop("image")
    report = merge_records(records)
    s = report["summary"]
    assert "churn" not in s
    assert s["pods_deleted"] == 0
    assert s["registry_ttfb"]["count"] == 0
    assert set(s["by_image"]) == {"?"}


def test_a_late_shards_churn_times_move_with_its_pods(tmp_path: Path) -> None:
    records = _shard_records(tmp_path, _text(churn=ROLL))
    agreed = 1_000_000.0
    for i, record in enumerate(records):  # shard 1 started 3 s after the agreed instant
        record["run"]["agreed_start"] = agreed
        record["run"]["start_epoch"] = agreed + 3.0 * i
    report = merge_records(records)
    roll = report["summary"]["churn"]["roll"]
    new_ready = [p["ready"] for p in report["pods"] if "-r1-" in p["name"]]
    old_gone = [p["deleted"] for p in report["pods"] if p["deleted"] is not None]
    assert roll["finished"] >= max(new_ready)
    assert roll["finished"] >= max(old_gone)


def test_hand_edited_churn_in_a_shard_record_is_a_clean_merge_error(tmp_path: Path) -> None:
    records = _shard_records(tmp_path, _text(churn=ROLL))
    records[0]["churn"][0]["created"] = "four"
    for i, record in enumerate(records):
        (tmp_path / "edited").mkdir(exist_ok=True)
        (tmp_path / "edited" / f"shard-{i}-of-2.json").write_text(json.dumps(record))
    proc = subprocess.run(
        [sys.executable, "-m", "kubelet_sim", "bench", "merge", str(tmp_path / "edited"),
         "--out", str(tmp_path / "merged"), "--quiet", "--no-plots"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "cannot be merged" in proc.stderr


# --- retag on the real registry ------------------------------------------------------------------

PRIVATE = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: hostile-private
seed: 3
images:
  - {{repository: {repo}, tags: ["1.0", "2.0"], layers: [64KiB]}}
nodes:
  - {{name: pool, count: 2, hostsDir: certs.d,
     timing: {{resyncPeriod: 200ms, backoffInitial: 300ms, backoffMax: 600ms}}}}
{secrets}
pods:
  - name: web
    count: 2
    spec:
      containers: [{{name: web, image: "{repo}:1.0"}}]
{pull}
  - name: always
    count: 2
    arrival: {{at: 2s}}
    spec:
      containers: [{{name: a, image: "{repo}:1.0", imagePullPolicy: Always}}]
{pull}
churn:
  - {{name: move, kind: retag, at: 1s, repository: {repo}, tag: "1.0", to: "2.0"}}
run: {{timeout: {timeout}}}
"""


def _private(
    tmp_path: Path, host: str, ca: Path, repo: str, *, secret: bool, timeout: str = "30s"
) -> Path:
    folder = tmp_path / "certs.d" / host
    folder.mkdir(parents=True)
    (folder / "hosts.toml").write_text(f'server = "https://{host}"\nca = "{ca}"\n')
    secrets = (
        "secrets:\n  - {name: regcred, username: alice, passwordEnv: HOSTILE_REGISTRY_PASSWORD}"
        if secret
        else ""
    )
    pull = "      imagePullSecrets: [{name: regcred}]" if secret else ""
    path = tmp_path / "private.yaml"
    path.write_text(
        PRIVATE.format(repo=repo, secrets=secrets, pull=pull, timeout=timeout).replace("\n\n", "\n")
    )
    return path


def _tag_digest(host: str, ca: Path, repo: str, tag: str, password: str) -> str:
    accept = ", ".join((
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ))  # fmt: skip
    answer = httpx.head(
        f"https://{host}/v2/{repo}/manifests/{tag}",
        headers={"Accept": accept},
        auth=("alice", password),
        verify=ssl.create_default_context(cafile=str(ca)),
    )
    answer.raise_for_status()
    return answer.headers["Docker-Content-Digest"]


@pytest.mark.registry
def test_a_retag_on_a_private_tls_registry_pushes_with_the_pull_secret_and_shows_no_password(
    htpasswd_registry: RegistryProcess,
    tls_material: TLSMaterial,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host, ca, repo = htpasswd_registry.host, tls_material.ca_cert, "hostile-retag/app"
    password = HTPASSWD_USERS["alice"]
    monkeypatch.setenv("HOSTILE_REGISTRY_PASSWORD", password)
    path = _private(tmp_path, host, ca, repo, secret=True)
    out = tmp_path / "out"
    code = main(
        ["bench", str(path), "--registry", host, "--quiet", "--no-plots", "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "report.json").read_text())
    move = report["summary"]["churn"]["move"]
    assert move["to"] == _tag_digest(host, ca, repo, "1.0", password)
    assert move["to"] == _tag_digest(host, ca, repo, "2.0", password) != move["from"]
    ids = {t: {c["image_id"] for p in report["pods"] if p["template"] == t for c in p["containers"]}
           for t in ("web", "always")}  # fmt: skip
    assert ids["web"] != ids["always"]  # the Always pods after the move pulled 2.0's image
    for text in (captured.out, captured.err, (out / "report.json").read_text(),
                 (out / "report.md").read_text()):  # fmt: skip
        assert password not in text


@pytest.mark.registry
def test_a_retag_pushes_with_the_docker_config_that_seeding_pushed_with(
    htpasswd_registry: RegistryProcess,
    tls_material: TLSMaterial,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host, ca, repo = htpasswd_registry.host, tls_material.ca_cert, "hostile-dockercfg/app"
    password = HTPASSWD_USERS["alice"]
    config = tmp_path / "config.json"
    token = base64.b64encode(f"alice:{password}".encode()).decode()
    config.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    # No pull secret: the pods cannot pull (401), but the operator's retag has credentials.
    path = _private(tmp_path, host, ca, repo, secret=False, timeout="4s")
    out = tmp_path / "out"
    code = main(["bench", str(path), "--registry", host, "--docker-config", str(config),
                 "--quiet", "--no-plots", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert password not in err
    assert code == 0, err
    move = json.loads((out / "report.json").read_text())["summary"]["churn"]["move"]
    assert move["to"] == _tag_digest(host, ca, repo, "1.0", password) != move["from"]


PLAIN = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: hostile-readonly
seed: 4
images:
  - {repository: hostile-ro/app, tags: ["1.0", "2.0"], layers: [64KiB]}
nodes:
  - {name: pool, count: 1}
pods:
  - name: web
    count: 2
    spec: {containers: [{name: web, image: "hostile-ro/app:1.0"}]}
churn:
  - {name: move, kind: retag, at: 1s, repository: hostile-ro/app, tag: "1.0", to: "2.0"}
run: {timeout: 20s}
"""


@pytest.mark.registry
def test_a_retag_the_registry_refuses_is_no_traceback(
    registry_factory: RegistryFactory, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    writable = registry_factory(storage_dir=storage)
    anyio.run(seed_workload, parse_workload(PLAIN, "w.yaml"), writable.host)
    writable.stop()
    readonly = registry_factory(
        storage_dir=storage,
        extra={"storage": {"filesystem": {"rootdirectory": str(storage)},
                           "maintenance": {"readonly": {"enabled": True},
                                           "uploadpurging": {"enabled": False}}}},
    )  # fmt: skip
    path = tmp_path / "w.yaml"
    path.write_text(PLAIN)
    proc = subprocess.run(
        [sys.executable, "-m", "kubelet_sim", "bench", str(path), "--registry", readonly.host,
         "--no-seed", "--quiet", "--no-plots", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]  # the run goes on; the report says it
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    move = report["summary"]["churn"]["move"]
    assert move["finished"] is not None
    assert "405" in move["error"] or "UNSUPPORTED" in move["error"], move
    assert report["summary"]["pods_ready"] == 2
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| move | retag |" in md
    assert "**failed**" in md


@pytest.mark.registry
def test_a_retag_under_two_shards_moves_the_tag_once_and_reports_shard_0s_digests(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    text = PLAIN.replace("hostile-ro/", "hostile-shards/").replace("count: 1}", "count: 2}")
    path = tmp_path / "w.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    code = main(["bench", str(path), "--registry", registry.host, "--shards", "2", "--quiet",
                 "--no-plots", "--out", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    move = report["summary"]["churn"]["move"]
    assert "by_shard" not in move
    assert move["from"] != move["to"]
    answer = httpx.head(
        f"http://{registry.host}/v2/hostile-shards/app/manifests/1.0",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert answer.headers["Docker-Content-Digest"] == move["to"]
    assert move["finished"] is not None
