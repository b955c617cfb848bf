"""kubectl's table columns, printed server side: ``printPod`` and ``duration.HumanDuration``.

The pod vectors are upstream's ``TestPrintPod`` cases (pkg/printers/internalversion), rewritten
as served JSON; ``now`` is fixed so "N ago" is exact.
"""

from __future__ import annotations

from typing import Any

import pytest

from kubelet_sim.k8s.served import rfc3339
from kubelet_sim.node.kubeapi.resources import RESOURCES, find
from kubelet_sim.node.kubeapi.tables import human_duration, pod_columns, table

NOW = 1_800_000_000.0
RUNNING: dict[str, Any] = {"running": {}}


def ago(seconds: float) -> str:
    return rfc3339(NOW - seconds)


def status(
    phase: str = "podPhase",
    containers: list[dict[str, Any]] | None = None,
    inits: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {"phase": phase, "containerStatuses": containers or [], **extra}
    if inits is not None:
        out["initContainerStatuses"] = inits
    return out


def pod(apps: int, st: dict[str, Any], inits: int = 0, *, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "p"}
    if deleting:
        metadata["deletionTimestamp"] = ago(10)
    spec = {
        "containers": [{"name": f"c{i}"} for i in range(apps)],
        "initContainers": [{"name": f"i{i}"} for i in range(inits)],
    }
    return {"metadata": metadata, "spec": spec, "status": st}


def restarted(count: int, seconds: float, **fields: Any) -> dict[str, Any]:
    return {
        "restartCount": count,
        "lastState": {"terminated": {"finishedAt": ago(seconds)}},
        **fields,
    }


POD_CASES = [
    pytest.param(
        pod(
            2,
            status(
                containers=[
                    {"ready": True, "restartCount": 3, "state": RUNNING},
                    {"restartCount": 3},
                ]
            ),
        ),
        ("1/2", "podPhase", "6"),
        id="ready-count-and-restarts",
    ),
    pytest.param(
        pod(
            2,
            status(
                containers=[
                    {"ready": True, "restartCount": 3, "state": RUNNING},
                    {"state": {"waiting": {"reason": "ContainerWaitingReason"}}, "restartCount": 3},
                ]
            ),
        ),
        ("1/2", "ContainerWaitingReason", "6"),
        id="waiting-reason-overrides-phase",
    ),
    pytest.param(
        pod(
            2,
            status(
                containers=[
                    {"state": {"waiting": {"reason": "ContainerWaitingReason"}}, "restartCount": 3},
                    {
                        "state": {"terminated": {"reason": "ContainerTerminatedReason"}},
                        "restartCount": 3,
                    },
                ]
            ),
        ),
        ("0/2", "ContainerWaitingReason", "6"),
        id="first-container-wins",
    ),
    pytest.param(
        pod(
            2,
            status(
                reason="podReason",
                containers=[
                    {"ready": True, "restartCount": 3, "state": RUNNING},
                    {"ready": True, "restartCount": 3},
                ],
            ),
        ),
        ("1/2", "podReason", "6"),
        id="pod-reason",
    ),
    pytest.param(
        pod(
            2,
            status(
                "Running",
                [
                    {
                        "ready": True,
                        "restartCount": 3,
                        "state": {"terminated": {"reason": "Completed", "exitCode": 0}},
                    },
                    {"ready": True, "restartCount": 3, "state": RUNNING},
                ],
            ),
        ),
        ("1/2", "NotReady", "6"),
        id="completed-and-running-without-ready-condition",
    ),
    pytest.param(
        pod(
            2,
            status(
                "Running",
                [
                    {
                        "ready": True,
                        "restartCount": 3,
                        "state": {"terminated": {"reason": "Completed", "exitCode": 0}},
                    },
                    {"ready": True, "restartCount": 3, "state": RUNNING},
                ],
                conditions=[{"type": "Ready", "status": "True"}],
            ),
        ),
        ("1/2", "Running", "6"),
        id="completed-and-running-with-ready-condition",
    ),
    pytest.param(
        pod(
            1,
            status(
                containers=[{"state": {"waiting": {}}}], inits=[restarted(3, 10, state=RUNNING)]
            ),
            inits=1,
        ),
        ("0/1", "Init:0/1", "3 (10s ago)"),
        id="init-restarting",
    ),
    pytest.param(
        pod(
            1,
            status(
                containers=[{"state": {"waiting": {}}}],
                inits=[restarted(3, 10, state=RUNNING), {"state": {"waiting": {}}}],
            ),
            inits=2,
        ),
        ("0/1", "Init:0/2", "3 (10s ago)"),
        id="two-inits-first-restarting",
    ),
    pytest.param(
        pod(
            1,
            status(
                containers=[{"state": {"waiting": {}}}],
                inits=[{"state": {"terminated": {}}}, restarted(3, 10, state=RUNNING)],
            ),
            inits=2,
        ),
        ("0/1", "Init:1/2", "3 (10s ago)"),
        id="first-init-done",
    ),
    pytest.param(
        pod(
            1,
            status(
                containers=[{"state": {"waiting": {}}}],
                inits=[
                    restarted(2, 120, state={"terminated": {}}),
                    restarted(3, 10, state=RUNNING),
                ],
            ),
            inits=2,
        ),
        ("0/1", "Init:1/2", "5 (10s ago)"),
        id="restarts-of-all-inits",
    ),
    pytest.param(
        pod(
            1,
            status(
                "Running",
                [restarted(4, 20, state=RUNNING)],
                inits=[restarted(2, 120, state={"terminated": {}})],
            ),
            inits=1,
        ),
        ("0/1", "Running", "4 (20s ago)"),
        id="init-done-app-restarting",
    ),
    pytest.param(
        pod(1, status("Running", [restarted(3, 5 * 86400, ready=True, state=RUNNING)])),
        ("1/1", "Running", "3 (5d ago)"),
        id="restarted-5d-ago",
    ),
    pytest.param(
        pod(
            2,
            status(
                "Running",
                [
                    restarted(6, 5 * 86400, ready=True, state=RUNNING),
                    restarted(3, 20 * 86400, ready=True, state=RUNNING),
                ],
            ),
        ),
        ("2/2", "Running", "9 (5d ago)"),
        id="latest-restart-shown",
    ),
    pytest.param(
        pod(
            2,
            status(
                conditions=[
                    {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}
                ]
            ),
        ),
        ("0/2", "SchedulingGated", "0"),
        id="scheduling-gated",
    ),
    pytest.param(
        pod(
            1,
            status(
                "Succeeded", [{"state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]
            ),
        ),
        ("0/1", "Completed", "0"),
        id="succeeded",
    ),
    pytest.param(
        pod(1, status("Failed", [{"state": {"terminated": {"reason": "Error", "exitCode": 1}}}])),
        ("0/1", "Error", "0"),
        id="failed",
    ),
    pytest.param(
        pod(
            1,
            status(
                "Succeeded", [{"state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]
            ),
            deleting=True,
        ),
        ("0/1", "Completed", "0"),
        id="succeeded-while-deleted",
    ),
    pytest.param(
        pod(1, status("Running", [{"ready": True, "state": RUNNING}]), deleting=True),
        ("1/1", "Terminating", "0"),
        id="running-while-deleted",
    ),
    pytest.param(
        pod(
            1,
            status(
                "Pending",
                [{"state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off"}}}],
            ),
        ),
        ("0/1", "ImagePullBackOff", "0"),
        id="image-pull-backoff",
    ),
    pytest.param(
        pod(1, status("Running", [{"state": {"terminated": {"exitCode": 137, "signal": 9}}}])),
        ("0/1", "Signal:9", "0"),
        id="terminated-by-signal",
    ),
    pytest.param(
        pod(
            1,
            status(
                "Pending",
                [{"state": {"waiting": {}}}],
                inits=[{"state": {"terminated": {"exitCode": 3}}}],
            ),
            inits=1,
        ),
        ("0/1", "Init:ExitCode:3", "0"),
        id="init-failed-with-exit-code",
    ),
]


@pytest.mark.parametrize(("doc", "expected"), POD_CASES)
def test_print_pod(doc: dict[str, Any], expected: tuple[str, str, str]) -> None:
    assert pod_columns(doc, NOW) == expected


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-2, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (150, "2m30s"),
        (599, "9m59s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (50 * 3600, "2d2h"),
        (8 * 86400, "8d"),
        (729 * 86400, "729d"),
        (730 * 86400, "2y"),
        (735 * 86400, "2y5d"),
        (8 * 365 * 86400, "8y"),
    ],
)
def test_human_duration(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_pod_table_has_kubectls_columns_and_wide_ones_at_priority_1() -> None:
    resource = find("", "v1", "pods")
    assert resource is not None
    doc = pod(1, status("Running", [{"ready": True, "state": RUNNING}]))
    doc["metadata"]["creationTimestamp"] = ago(30)
    doc["spec"]["nodeName"] = "node-1"
    doc["status"]["podIPs"] = [{"ip": "10.244.0.2"}]
    out = table(resource, [doc], NOW, resource_version="7")
    names = [(c["name"], c["priority"]) for c in out["columnDefinitions"]]
    assert names[:5] == [("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0)]
    assert all(priority == 1 for _, priority in names[5:])
    (row,) = out["rows"]
    assert row["cells"] == [
        "p",
        "1/1",
        "Running",
        "0",
        "30s",
        "10.244.0.2",
        "node-1",
        "<none>",
        "<none>",
    ]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert out["metadata"]["resourceVersion"] == "7"
    rows_only = table(resource, [doc], NOW, resource_version="7", headers=False)
    assert rows_only["columnDefinitions"] == []


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.plural)
def test_every_resource_has_as_many_cells_as_columns(resource: Any) -> None:
    doc: dict[str, Any] = {"metadata": {"name": "x", "creationTimestamp": ago(5)}}
    out = table(resource, [doc], NOW, resource_version="1", include_object="Object")
    (row,) = out["rows"]
    assert len(row["cells"]) == len(out["columnDefinitions"])
    assert row["object"] == doc
