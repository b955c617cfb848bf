"""Churn in a workload (``churn:``): parsing, and what each action does to a run in virtual time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubelet_sim.cli.main import main
from kubelet_sim.errors import ConfigError
from kubelet_sim.workloads import parse_workload
from kubelet_sim.workloads.spec import Amount, ChurnKind

BASE = """\
apiVersion: kubelet-sim.dev/v1alpha1
kind: Workload
name: churn
seed: 5
bases:
  - {name: distro, layers: [2MiB]}
images:
  - {repository: shop/web, tags: ["1.0", "1.1", "2.0"], base: distro, layers: [1MiB]}
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
    spec: {containers: [{name: a, image: "shop/side:1"}, {name: b, image: "shop/side:1"}]}
virtual:
  registry: {latency: 5ms, bandwidth: {perConnection: 20MiB/s, total: 1GiB/s}}
run: {timeout: 10m}
"""


def _with(pods: str = "", churn: str = "", base: str = BASE) -> str:
    """``base`` with more pod templates and a churn list."""
    head, tail = base.split("virtual:\n", 1)
    return head + pods + "virtual:\n" + tail + ("churn:\n" + churn if churn else "")


def _parse(churn: str) -> Any:
    return parse_workload(BASE + "churn:\n" + churn, "w.yaml")


def test_every_kind_of_action_is_read_with_its_defaults() -> None:
    workload = _parse(
        "  - {kind: rollout, at: 1m, pods: web, image: 'shop/web:1.1', maxSurge: 1}\n"
        "  - {name: cut, kind: delete, at: 5s, pods: web, count: 50%}\n"
        "  - {kind: restart, at: 30s, nodes: pool, count: 2, downtime: 2s}\n"
        "  - {kind: retag, at: 10s, repository: shop/web, tag: '1.0', to: '2.0'}\n"
    )
    roll, cut, restart, retag = workload.churn
    assert (roll.name, roll.kind, roll.at, roll.template) == (
        "rollout-0",
        ChurnKind.ROLLOUT,
        60,
        "web",
    )
    assert roll.container == "web"  # the template's only container
    assert roll.max_surge == Amount(1)
    assert roll.max_unavailable == Amount(25, percent=True)
    assert (cut.name, cut.count) == ("cut", Amount(50, percent=True))
    assert (restart.group, restart.count, restart.downtime) == ("pool", Amount(2), 2.0)
    assert (retag.repository, retag.tag, retag.to) == ("shop/web", "1.0", "2.0")


def test_amounts_round_as_a_deployment_does() -> None:
    assert Amount(25, percent=True).of(10, round_up=True) == 3  # maxSurge rounds up
    assert Amount(25, percent=True).of(10, round_up=False) == 2  # maxUnavailable down
    assert Amount(100, percent=True).of(7, round_up=True) == 7
    assert Amount(3).of(100, round_up=False) == 3


@pytest.mark.parametrize(
    ("item", "where", "message"),
    [
        ("{kind: scale, at: 1s}", "churn[0].kind", "expected one of delete, rollout"),
        ("{kind: delete, at: 1s}", "churn[0]", "pods: required"),
        ("{kind: delete, pods: web}", "churn[0].at", "at: required"),
        ("{kind: delete, at: 1s, pods: nope}", "churn[0].pods", "no pod template named 'nope'"),
        (
            "{kind: delete, at: 1s, pods: web, image: x}",
            "churn[0].image",
            "not a field of a delete",
        ),
        ("{kind: delete, at: 1s, pods: web, count: 0}", "churn[0].count", "at least 1"),
        ("{kind: delete, at: 1s, pods: web, count: 150%}", "churn[0].count", "between 1% and 100%"),
        ("{kind: delete, at: 1s, pods: web, count: lots}", "churn[0].count", "such as 25%"),
        ("{kind: delete, at: 11m, pods: web}", "churn[0].at", "not before run.timeout"),
        ("{kind: rollout, at: 1s, pods: web}", "churn[0]", "image: required"),
        ("{kind: rollout, at: 1s, pods: two, image: x}", "churn[0].container", "has a, b"),
        (
            "{kind: rollout, at: 1s, pods: web, image: x, container: nope}",
            "churn[0].container",
            "no container 'nope'",
        ),
        (
            "{kind: rollout, at: 1s, pods: web, image: x, maxSurge: 0, maxUnavailable: 0%}",
            "churn[0].maxSurge",
            "must not both be 0",
        ),
        (
            "{kind: rollout, at: 1s, pods: web, image: 'a/{j}:1'}",
            "churn[0].image",
            "the only placeholders",
        ),
        ("{kind: restart, at: 1s, nodes: gpu}", "churn[0].nodes", "no node group named 'gpu'"),
        ("{kind: restart, at: 1s, nodes: pool, count: 5}", "churn[0].count", "has 4 nodes"),
        (
            "{kind: retag, at: 1s, repository: shop/api, tag: a, to: b}",
            "churn[0].repository",
            "not one of the workload's images",
        ),
        (
            "{kind: retag, at: 1s, repository: shop/web, tag: '9', to: '1.0'}",
            "churn[0].tag",
            "has no tag '9'",
        ),
        (
            "{kind: retag, at: 1s, repository: shop/web, tag: '1.0', to: '1.0'}",
            "churn[0].to",
            "onto itself",
        ),
    ],
)
def test_a_bad_action_names_its_field(item: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse(f"  - {item}\n")
    text = str(caught.value)
    assert "w.yaml:" in text
    assert where in text
    assert message in text


def test_two_actions_may_not_share_a_name() -> None:
    with pytest.raises(ConfigError, match=r"churn\[1\]\.name.*duplicate churn action name 'x'"):
        _parse("  - {name: x, kind: delete, at: 1s, pods: web}\n"
               "  - {name: x, kind: delete, at: 2s, pods: web}\n")  # fmt: skip


def _run(tmp_path: Path, text: str, *flags: str) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    code = main(["bench", str(path), "--virtual", "--quiet", "--no-plots", "--out", str(out),
                 *flags])  # fmt: skip
    return code, json.loads((out / "report.json").read_text())


def _alive(pods: list[dict[str, Any]], t: float) -> list[dict[str, Any]]:
    return [p for p in pods if p["submitted"] <= t and (p["deleted"] is None or p["deleted"] > t)]


def test_a_rollout_keeps_within_its_surge_and_its_unavailability(tmp_path: Path) -> None:
    code, report = _run(
        tmp_path,
        BASE + "churn:\n  - {name: roll, kind: rollout, at: 5s, pods: web, image: 'shop/web:1.1',"
        " maxSurge: 2, maxUnavailable: 1}\n"
        "thresholds: ['churn.roll.seconds < 60s', 'pods_not_ready == 0']\n",
    )
    assert code == 0
    web = [p for p in report["pods"] if p["template"] == "web"]
    old = [p for p in web if "-r1-" not in p["name"]]
    new = [p for p in web if "-r1-" in p["name"]]
    assert len(old) == len(new) == 8
    assert all(p["deleted"] is not None for p in old)
    assert all(p["deleted"] is None and p["ready"] is not None for p in new)
    # the new pods replace the old ones node by node, with the new image
    assert sorted((p["node"], p["name"][-3:]) for p in new) == sorted(
        (p["node"], p["name"][-3:]) for p in old
    )
    assert {c["image"].split("/", 1)[1] for p in new for c in p["containers"]} == {"shop/web:1.1"}
    # at every instant: at most replicas + maxSurge pods, at least replicas - maxUnavailable ready
    times = sorted({t for p in web for t in (p["submitted"], p["ready"], p["deleted"]) if t})
    for t in times:
        if t < 5:
            continue
        alive = _alive(web, t)
        assert len(alive) <= 8 + 2, t
        ready = [p for p in alive if p["ready"] is not None and p["ready"] <= t]
        assert len(ready) >= 8 - 1, t
    roll = report["summary"]["churn"]["roll"]
    assert roll["kind"] == "rollout"
    assert roll["started"] == 5.0
    assert roll["replicas"] == 8
    assert (roll["max_surge"], roll["max_unavailable"]) == (2, 1)
    assert roll["created"] == 8
    assert roll["deleted"] == 8
    assert roll["peak_pods"] == 10
    assert roll["min_ready"] == 7
    assert roll["finished"] >= max(p["ready"] for p in new)
    assert roll["finished"] >= max(p["deleted"] for p in old)
    assert 0 < roll["seconds"] < 60
    assert [t["passed"] for t in report["summary"]["thresholds"]] == [True, True]


def test_pods_arriving_after_a_rollout_began_get_the_new_image(tmp_path: Path) -> None:
    text = (
        BASE.replace(
            'image: "shop/web:1.0"}]}\n', 'image: "shop/web:1.0"}]}\n    arrival: {rate: 1}\n', 1
        )
        + "churn:\n  - {kind: rollout, at: 3.5s, pods: web, image: 'shop/web:2.0'}\n"
    )
    code, report = _run(tmp_path, text)
    assert code == 0
    late = [p for p in report["pods"] if p["template"] == "web" and p["arrival"] > 3.5
            and "-r1-" not in p["name"]]  # fmt: skip
    assert len(late) == 4  # arrivals at 4..7 s
    assert all(c["image"].endswith("/shop/web:2.0") for p in late for c in p["containers"])
    assert all(p["deleted"] is None and p["ready"] is not None for p in late)
    assert report["summary"]["churn"]["rollout-0"]["arrivals_with_new_image"] == 4
    assert report["summary"]["churn"]["rollout-0"]["replicas"] == 4  # those that had arrived


def test_a_restarted_kubelet_forgets_its_backoff_and_keeps_its_ready_pods(tmp_path: Path) -> None:
    text = _with(
        "  - name: typo\n    placement: every-node\n"
        "    spec: {containers: [{name: t, image: 'shop/web:9.9'}]}\n",
        "  - {kind: restart, at: 3s, nodes: pool, count: 1, downtime: 1s}\n",
    )
    code, report = _run(tmp_path, text.replace("run: {timeout: 10m}", "run: {timeout: 30s}"))
    assert code == 0
    restart = report["summary"]["churn"]["restart-0"]
    assert (restart["nodes"], restart["started"], restart["finished"]) == (1, 3.0, 4.0)
    restarted = next(n for n in report["nodes"] if n["restarts"] == 1)
    assert restarted["name"] == "pool-000"
    mine = [p for p in report["pods"] if p["node"] == "pool-000"]
    assert restart["pods_kept_running"] == sum(1 for p in mine if p["ready"] is not None) > 0
    assert restart["pods_reapplied"] == 1  # the typo pod, in ImagePullBackOff
    starts = sorted(s["start"] for s in report["pulls"] if s["node"] == "pool-000" and s["error"])
    others = sorted(s["start"] for s in report["pulls"] if s["node"] == "pool-001" and s["error"])
    # pool-000's typo pod pulls again the moment its kubelet is back (no backoff left); the
    # other nodes' wait out 10 s
    assert starts[0] < 1
    assert 4.0 <= starts[1] < 4.1
    assert others[0] < 1
    assert others[1] >= 10
    # the ready pods were not pulled again: nothing pulled on pool-000 after the restart
    # succeeded (the typo pod's pulls fail)
    pulled_ok = [s for s in report["pulls"] if s["node"] == "pool-000" and not s["error"]]
    assert pulled_ok
    assert all(s["start"] < 3 for s in pulled_ok)


def test_a_moved_tag_reaches_only_the_pulls_after_it(tmp_path: Path) -> None:
    text = _with(
        "  - name: always\n    count: 4\n    arrival: {at: 20s}\n"
        "    spec: {containers: [{name: a, image: 'shop/web:1.0', imagePullPolicy: Always}]}\n"
        "  - name: cached\n    count: 4\n    arrival: {at: 20s}\n"
        "    spec: {containers: [{name: c, image: 'shop/web:1.0'}]}\n",
        "  - {name: move, kind: retag, at: 10s, repository: shop/web, tag: '1.0', to: '2.0'}\n",
    )
    code, report = _run(tmp_path, text)
    assert code == 0
    move = report["summary"]["churn"]["move"]
    assert move["from"] != move["to"]
    ids = {t: {c["image_id"] for p in report["pods"] if p["template"] == t for c in p["containers"]}
           for t in ("web", "always", "cached")}  # fmt: skip
    assert len(ids["web"]) == len(ids["always"]) == 1
    assert ids["always"] != ids["web"]  # Always resolved the tag again: the new image
    assert ids["cached"] == ids["web"]  # IfNotPresent used what the node had under the tag


def test_deleting_pods_that_cannot_start_ends_the_run(tmp_path: Path) -> None:
    text = _with(
        "  - name: typo\n    count: 3\n"
        "    spec: {containers: [{name: t, image: 'shop/web:9.9'}]}\n",
        "  - {kind: delete, at: 15s, pods: typo}\n",
    )
    code, report = _run(tmp_path, text)
    assert code == 0
    s = report["summary"]
    assert report["run"]["timed_out"] is False
    assert 15 <= report["run"]["stopped_at"] < 17
    assert (s["pods_deleted"], s["pods_deleted_unready"], s["pods_not_ready"]) == (3, 3, 0)
    assert s["time_to_ready"]["count"] == 9
    assert s["time_to_ready"]["not_ready"] == 0
    assert s["churn"]["delete-0"]["deleted"] == 3
    assert s["churn"]["delete-0"]["ready"] == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Churn" in md
    assert "deleted 3 `typo` pods (0 ready)" in md


def test_pods_bound_to_a_restarting_kubelet_wait_for_it(tmp_path: Path) -> None:
    text = _with(
        "  - name: late\n    count: 4\n    arrival: {at: 6s}\n"
        "    spec: {containers: [{name: l, image: 'shop/side:1'}]}\n",
        "  - {kind: restart, at: 5s, nodes: pool, downtime: 3s}\n"
        "  - {name: roll, kind: rollout, at: 6.5s, pods: web, image: 'shop/web:1.1',"
        " maxSurge: 100%}\n"
        "  - {kind: restart, at: 5.5s, nodes: pool, count: 1, downtime: 1s}\n",
    )
    code, report = _run(tmp_path, text)
    assert code == 0
    s = report["summary"]
    assert s["pods_not_ready"] == 0
    late = [p for p in report["pods"] if p["template"] == "late"]
    new = [p for p in report["pods"] if "-r1-" in p["name"]]
    # they arrived (or were created) while every kubelet was down, and ran once it was back
    assert [p["submitted"] for p in late] == [6.0] * 4
    assert all(p["ready"] >= 8 for p in late + new)
    assert len(new) == 8
    # the second restart of pool-000 waited for the first: one kubelet at a time per node
    assert [n["restarts"] for n in report["nodes"]] == [2, 1, 1, 1]
    assert s["churn"]["restart-2"]["finished"] >= 9


def test_pods_deleted_while_their_kubelet_is_down_stay_deleted(tmp_path: Path) -> None:
    text = _with(
        "  - name: typo\n    count: 4\n"
        "    spec: {containers: [{name: t, image: 'shop/web:9.9'}]}\n",
        "  - {kind: restart, at: 5s, nodes: pool, downtime: 3s}\n"
        "  - {name: cut, kind: delete, at: 6s, pods: typo}\n",
    )
    code, report = _run(tmp_path, text)
    assert code == 0
    s = report["summary"]
    assert report["run"]["timed_out"] is False
    assert s["churn"]["cut"]["deleted"] == 4
    assert s["churn"]["restart-0"]["pods_reapplied"] == 0  # the deleted ones are not re-applied
    typo = [p for p in report["pods"] if p["template"] == "typo"]
    assert all(p["deleted"] == 6.0 for p in typo)
    # nothing of theirs was pulled after the kubelets came back
    assert not [x for x in report["pulls"] if x["image"] == "shop/web:9.9" and x["start"] >= 8]
