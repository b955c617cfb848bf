"""The container flags of ``kubelet-sim run`` and the container sections of ``kubelet-sim describe``.

``run`` is driven through :func:`kubelet_sim.cli.main.main` with the daemon's serve loop replaced:
the test sees the :class:`~kubelet_sim.node.daemon.DaemonOptions` the flags made, and a refused
flag is ``kubelet-sim: error: <flag or file>: ...`` with exit status 1 (the project's error
status; argparse's own usage errors are 2) before anything is served.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from kubelet_sim.cli.commands import describe, run
from kubelet_sim.cli.main import main
from kubelet_sim.config.runtimes import RUNC_RUNTIME_TYPE, SIM_RUNTIME_TYPE
from kubelet_sim.core.pods import ContainerPhase, ContainerState, Termination
from kubelet_sim.engine.workers import PodState
from kubelet_sim.k8s import parse_manifests, pod_spec
from kubelet_sim.k8s.objects import Pod
from kubelet_sim.node import views
from kubelet_sim.node.daemon import Daemon, DaemonOptions

CONFIG = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
CRI = 'plugins."io.containerd.grpc.v1.cri".containerd'


class Served:
    """Stands in for ``run._serve``: keeps the options instead of serving them."""

    def __init__(self) -> None:
        self.options: list[DaemonOptions] = []

    async def __call__(self, options: DaemonOptions) -> None:
        self.options.append(options)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Served:
    fake = Served()
    monkeypatch.setattr(run, "_serve", fake)
    # Leave this process's open-file limit alone.
    monkeypatch.setattr(run, "raise_open_file_limit", lambda: (1024, 1024))
    return fake


def run_argv(tmp_path: Path, *flags: str) -> list[str]:
    config = tmp_path / "kubelet.yaml"
    config.write_text(CONFIG)
    root = tmp_path / "root"
    return ["run", "--config", str(config), "--root", str(root), "--listen", "127.0.0.1:0", *flags]


def refused(capsys: pytest.CaptureFixture[str], served: Served, argv: list[str]) -> str:
    """Run ``argv``; it must fail with status 1 before serving. Its one-line error."""
    assert main(argv) == 1
    assert served.options == []
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error printed"
    line = err[-1]
    assert line.startswith("kubelet-sim: error: ")
    return line.removeprefix("kubelet-sim: error: ")


# -- --enable-admission-plugins --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "plugins"),
    [
        pytest.param([], set(), id="none"),
        pytest.param(["AlwaysPullImages"], {"AlwaysPullImages"}, id="always-pull-images"),
        pytest.param(
            ["ServiceAccount, AlwaysPullImages"],
            {"ServiceAccount", "AlwaysPullImages"},
            id="comma-separated",
        ),
        pytest.param(
            ["RuntimeClass", "AlwaysPullImages,"],
            {"RuntimeClass", "AlwaysPullImages"},
            id="repeated",
        ),
    ],
)
def test_admission_plugins_are_accepted(
    tmp_path: Path, served: Served, flags: list[str], plugins: set[str]
) -> None:
    argv = run_argv(tmp_path, *(f"--enable-admission-plugins={f}" for f in flags))
    assert main(argv) == 0
    (options,) = served.options
    assert options.admission_plugins == plugins
    daemon = Daemon(options)
    assert daemon.objects.admission.always_pull_images is ("AlwaysPullImages" in plugins)
    assert daemon.objects.admission.runtime_class  # on by default, as in kube-apiserver


@pytest.mark.parametrize("value", ["Bogus", "AlwaysPullImages,Bogus", "alwayspullimages"], ids=str)
def test_an_unknown_admission_plugin_names_the_flag_and_the_value(
    tmp_path: Path, served: Served, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    bad = value.rpartition(",")[2]
    error = refused(capsys, served, run_argv(tmp_path, "--enable-admission-plugins", value))
    assert error.startswith("--enable-admission-plugins: ")
    assert f'"{bad}"' in error
    assert "AlwaysPullImages" in error  # what would have been accepted


# -- --runtime-config ------------------------------------------------------------------------------


def test_a_runtime_config_file_is_read(tmp_path: Path, served: Served) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        f"[{CRI}]\n"
        'default_runtime_name = "fast"\n'
        f"[{CRI}.runtimes.fast]\n"
        f'runtime_type = "{SIM_RUNTIME_TYPE}"\n'
        f"[{CRI}.runtimes.real]\n"
        f'runtime_type = "{RUNC_RUNTIME_TYPE}"\n'
        f"[{CRI}.runtimes.real.options]\n"
        'BinaryName = "/opt/runc"\n'
    )
    assert main(run_argv(tmp_path, "--runtime-config", str(path))) == 0
    (options,) = served.options
    assert options.runtimes is not None
    assert options.runtimes.default == "fast"
    entries = options.runtimes.entries
    assert {name: (e.kind, e.binary) for name, e in entries.items()} == {
        "fast": ("sim", ""),
        "real": ("runc", "/opt/runc"),
    }


def test_without_a_runtime_config_the_node_has_its_builtin_handlers(
    tmp_path: Path, served: Served
) -> None:
    assert main(run_argv(tmp_path)) == 0
    (options,) = served.options
    assert options.runtimes is None  # the node's default: sim (the default) and runc


RUNTIME_CONFIG_ERRORS = [
    pytest.param("not = [toml\n", None, id="not-toml"),
    pytest.param(
        f'[{CRI}.runtimes.fast]\nruntime_type = "io.containerd.kata.v2"\n',
        f"{CRI}.runtimes.fast.runtime_type",
        id="unknown-runtime-type",
    ),
    pytest.param(
        f"[{CRI}.runtimes.fast]\n", f"{CRI}.runtimes.fast.runtime_type", id="no-runtime-type"
    ),
    pytest.param(
        f'[{CRI}]\ndefault_runtime_name = "gone"\n'
        f'[{CRI}.runtimes.fast]\nruntime_type = "{SIM_RUNTIME_TYPE}"\n',
        f"{CRI}.default_runtime_name",
        id="default-not-configured",
    ),
    pytest.param(
        f'[{CRI}.runtimes.real]\nruntime_type = "{RUNC_RUNTIME_TYPE}"\n'
        f"[{CRI}.runtimes.real.options]\nBinaryName = 7\n",
        f"{CRI}.runtimes.real.options.BinaryName",
        id="binary-not-a-string",
    ),
    pytest.param("[other]\nx = 1\n", "plugins", id="no-cri-table"),
]


@pytest.mark.parametrize(("text", "key"), RUNTIME_CONFIG_ERRORS)
def test_a_bad_runtime_config_names_the_file_and_the_key(
    tmp_path: Path,
    served: Served,
    capsys: pytest.CaptureFixture[str],
    text: str,
    key: str | None,
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    error = refused(capsys, served, run_argv(tmp_path, "--runtime-config", str(path)))
    assert error.startswith(f"{path}: ")
    if key is not None:
        assert error.startswith(f"{path}: {key}: ")


def test_a_missing_runtime_config_names_the_file(
    tmp_path: Path, served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "absent.toml"
    error = refused(capsys, served, run_argv(tmp_path, "--runtime-config", str(path)))
    assert error.startswith(f"{path}: ")


# -- --node-labels ---------------------------------------------------------------------------------


def test_node_labels_are_accepted_and_become_the_nodes_labels(
    tmp_path: Path, served: Served
) -> None:
    argv = run_argv(
        tmp_path,
        "--node-labels",
        "sandbox.example.com/kind=secure,tier=",
        "--node-labels=zone=a",
        "--hostname-override",
        "Node-1",
    )
    assert main(argv) == 0
    (options,) = served.options
    assert dict(options.node_labels) == {
        "sandbox.example.com/kind": "secure",
        "tier": "",
        "zone": "a",
    }
    labels = Daemon(options).labels
    assert labels["kubernetes.io/hostname"] == "node-1"
    assert labels["sandbox.example.com/kind"] == "secure"
    assert {"kubernetes.io/os", "kubernetes.io/arch"} <= labels.keys()


@pytest.mark.parametrize(
    ("value", "label"),
    [
        pytest.param("bad", "bad", id="no-equals"),
        pytest.param("a=b,=c", "=c", id="empty-key"),
        pytest.param("a/b/c=d", "a/b/c", id="two-slashes"),
        pytest.param("k=" + "v" * 64, "v" * 64, id="value-too-long"),
        pytest.param("k=a b", "a b", id="space-in-value"),
        pytest.param("-k=v", "-k", id="key-starts-with-dash"),
    ],
)
def test_a_bad_node_label_names_the_flag_and_the_label(
    tmp_path: Path,
    served: Served,
    capsys: pytest.CaptureFixture[str],
    value: str,
    label: str,
) -> None:
    error = refused(capsys, served, run_argv(tmp_path, f"--node-labels={value}"))
    assert error.startswith("--node-labels")  # then the label's key when the key is known
    assert f'"{label}"' in error


# -- describe pod: the container sections ---------------------------------------------------------

STARTED = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 +0000


def stamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(
        "%a, %d %b %Y %H:%M:%S +0000"
    )


def pod_document(**changes: Any) -> dict[str, Any]:
    """A pod as ``GET /pods/NS/NAME`` answers it (:func:`views.pod_detail`'s shape)."""
    app = {
        "name": "app",
        "image": "registry.local/busybox:1",
        "imagePullPolicy": "IfNotPresent",
        "kind": "containers",
        "state": {"running": {"startedAt": STARTED}},
        "lastState": {
            "terminated": {
                "exitCode": 137,
                "reason": "Error",
                "startedAt": STARTED - 10,
                "finishedAt": STARTED - 4,
            }
        },
        "ready": True,
        "restartCount": 1,
        "imageID": "sha256:" + "a" * 64,
        "repoDigest": "registry.local/busybox@sha256:" + "b" * 64,
        "imageReady": True,
        "pullAttempts": 1,
        "backoffRemainingSeconds": 0.0,
        "containerID": "ks-web-app-1-0123abcd",
        "command": ["sh", "-c", "env; sleep 1000"],
        "hostname": "h1",
        "env": [
            {"name": "PATH", "value": "/usr/bin:/bin"},
            {"name": "HOSTNAME", "value": "h1"},
            {"name": "PASSWORD", "value": views.SECRET_SHOWN},
        ],
    }
    done = {
        "name": "once",
        "image": "registry.local/busybox:1",
        "imagePullPolicy": "Always",
        "kind": "containers",
        "state": {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": STARTED,
                "finishedAt": STARTED + 2,
            }
        },
        "ready": False,
        "restartCount": 0,
        "imageID": "sha256:" + "a" * 64,
        "repoDigest": "",
        "imageReady": True,
        "pullAttempts": 1,
        "backoffRemainingSeconds": 0.0,
        "containerID": "ks-web-once-0-4567cdef",
        "command": ["true"],
        "hostname": "h1",
        "env": [],
    }
    hooked = {
        "name": "hooked",
        "image": "registry.local/busybox:1",
        "imagePullPolicy": "IfNotPresent",
        "kind": "containers",
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting"}},
        "lastState": {
            "terminated": {
                "exitCode": 137,
                "reason": "Error",
                "startedAt": None,
                "finishedAt": STARTED + 1,
            }
        },
        "ready": False,
        "restartCount": 2,
        "imageID": "",
        "repoDigest": "",
        "imageReady": True,
        "pullAttempts": 1,
        "backoffRemainingSeconds": 17.6,
    }
    doc: dict[str, Any] = {
        "namespace": "shop",
        "name": "web",
        "uid": "0b8c7a1e-5d2f-4c1a-9e57-1f2a3b4c5d6e",
        "phase": "Running",
        "serviceAccountName": "default",
        "imagePullSecrets": [],
        "imagesReady": True,
        "ready": False,
        "restartPolicy": "Always",
        "runtimeClassName": "runc-class",
        "overhead": {"memory": "120Mi", "cpu": "250m"},
        "nodeSelector": {},
        "hostname": "h1",
        "podIP": "127.0.0.1",
        "unsupportedFields": [],
        "initContainers": [],
        "containers": [app, done, hooked],
    }
    doc.update(changes)
    return doc


def block(text: str, container: str) -> list[str]:
    """The lines of one container's section of the describe text."""
    lines = text.splitlines()
    start = lines.index(f"  {container}:")
    end = start + 1
    while end < len(lines) and lines[end].startswith("    "):
        end += 1
    return lines[start:end]


def test_describe_shows_a_running_container_with_last_state_and_env() -> None:
    text = describe.render(pod_document(), [])
    app = block(text, "app")
    assert app == [
        "  app:",
        "    Container ID:       ks-web-app-1-0123abcd",
        "    Image:              registry.local/busybox:1",
        f"    Image ID:           registry.local/busybox@sha256:{'b' * 64}",
        "    Image Pull Policy:  IfNotPresent",
        "    Command:            sh -c env; sleep 1000",
        "    State:              Running",
        f"      Started:          {stamp(STARTED)}",
        "    Last State:         Terminated",
        "      Reason:           Error",
        "      Exit Code:        137",
        f"      Started:          {stamp(STARTED - 10)}",
        f"      Finished:         {stamp(STARTED - 4)}",
        "    Ready:              True",
        "    Restart Count:      1",
        "    Pull Attempts:      1",
        "    Environment:",
        "      PATH:      /usr/bin:/bin",
        "      HOSTNAME:  h1",
        "      PASSWORD:  <secret>",
    ]


def test_describe_shows_terminated_and_waiting_containers() -> None:
    text = describe.render(pod_document(), [])
    once = block(text, "once")
    assert "    State:              Terminated" in once
    assert "      Reason:           Completed" in once
    assert "      Exit Code:        0" in once
    assert f"      Finished:         {stamp(STARTED + 2)}" in once
    assert "    Environment:        <none>" in once
    assert not any(line.startswith("    Last State:") for line in once)

    hooked = block(text, "hooked")
    state = hooked.index("    State:              Waiting")
    assert hooked[state + 1 : state + 3] == [
        "      Reason:           CrashLoopBackOff",
        "      Message:          back-off 20s restarting",
    ]
    last = hooked.index("    Last State:         Terminated")
    assert "      Started:          <unknown>" in hooked[last:]
    assert "    Restart Count:      2" in hooked
    assert "    Back-off Remaining: 18s" in hooked
    # A container not started yet has no Container ID, Command or Environment.
    assert not any(
        line.startswith(("    Container ID:", "    Command:", "    Environment:"))
        for line in hooked
    )


def test_describe_shows_the_pods_runtime_class_overhead_and_network() -> None:
    lines = describe.render(pod_document(), []).splitlines()
    assert "Status:           Running" in lines
    assert "IP:               127.0.0.1" in lines
    assert "Hostname:         h1" in lines
    assert "Runtime Class:    runc-class" in lines
    assert "Overhead:         cpu: 250m, memory: 120Mi" in lines
    assert lines[-2:] == ["Events:", "  <none>"]


def test_describe_shows_a_rejected_pods_reason_and_message() -> None:
    doc = pod_document(
        phase="Failed",
        reason="NodeAffinity",
        message="Pod was rejected: Predicate NodeAffinity failed",
        runtimeClassName=None,
        overhead={},
        hostname="",
        podIP="",
    )
    lines = describe.render(doc, []).splitlines()
    assert lines[4:7] == [
        "Status:           Failed",
        "Reason:           NodeAffinity",
        "Message:          Pod was rejected: Predicate NodeAffinity failed",
    ]
    assert "Runtime Class:    <none>" in lines
    assert "IP:               <none>" in lines
    assert not any(line.startswith("Overhead:") for line in lines)


def test_describe_lists_container_events() -> None:
    now = datetime.datetime.now(datetime.UTC).timestamp()
    events = [
        {
            "type": "Warning",
            "reason": "FailedPostStartHook",
            "message": "PostStartHook failed",
            "count": 3,
            "firstTimestamp": now - 300,
            "lastTimestamp": now - 5,
        },
        {
            "type": "Normal",
            "reason": "Started",
            "message": "Started container app",
            "count": 1,
            "firstTimestamp": now - 310,
            "lastTimestamp": now - 310,
        },
    ]
    lines = describe.render(pod_document(), events).splitlines()
    table = lines[lines.index("Events:") + 1 :]
    assert table[0].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert table[2].split()[:3] == ["Normal", "Started", "5m"]
    assert table[2].endswith("kubelet  Started container app")
    assert "(x3 over 5m)" in table[3]
    assert table[3].endswith("PostStartHook failed")


@pytest.mark.anyio  # a PodState holds anyio events
async def test_describe_renders_what_views_pod_detail_makes() -> None:
    (manifest,) = parse_manifests(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\n"
        "spec:\n  runtimeClassName: runc-class\n  containers:\n"
        "  - {name: app, image: 'registry.local/busybox:1'}\n"
        "  - {name: once, image: 'registry.local/busybox:1'}\n",
        source="pod.yaml",
    )
    pod = manifest.object
    assert isinstance(pod, Pod)
    now = 1000.0
    died = Termination(exit_code=137, reason="Error", started_at=900.0, finished_at=990.0)
    done = Termination(exit_code=0, reason="Completed", started_at=950.0, finished_at=960.0)
    state = PodState(
        spec=pod_spec(pod),
        containers={
            "app": ContainerState(
                "app",
                "registry.local/busybox:1",
                ContainerPhase.RUNNING,
                started_at=995.0,
                restart_count=1,
                last_termination=died,
                image_ready=True,
                attempts=1,
            ),
            "once": ContainerState(
                "once",
                "registry.local/busybox:1",
                ContainerPhase.TERMINATED,
                last_termination=done,
                image_ready=True,
                attempts=1,
            ),
        },
        submitted_at=0.0,
    )
    doc = views.pod_detail(pod, state, now)
    text = describe.render(doc, [])
    app = block(text, "app")
    assert "    State:              Running" in app
    assert "    Last State:         Terminated" in app
    assert "      Exit Code:        137" in app
    assert "    Restart Count:      1" in app
    once = block(text, "once")
    assert "    State:              Terminated" in once
    assert "      Reason:           Completed" in once
    assert "Runtime Class:    runc-class" in text.splitlines()


def test_describe_shows_recent_pulls_and_the_one_under_way() -> None:
    doc = pod_document()
    app = doc["containers"][0]
    app["pulls"] = [
        {
            "startedAt": STARTED - 40,
            "waitedSeconds": 0.0,
            "seconds": 1.25,
            "result": "ErrImagePull",
            "message": "rpc error: code = NotFound desc = not found",
        },
        {
            "startedAt": STARTED,
            "waitedSeconds": 3.5,
            "seconds": 2.0,
            "result": "Pulled",
            "message": "",
        },
    ]
    app["pullInProgress"] = {"step": "waiting for a pull slot", "forSeconds": 12.34}
    lines = block(describe.render(doc, []), "app")
    start = lines.index("    Pulling:            waiting for a pull slot for 12.3s")
    assert lines[start + 1 : start + 4] == [
        "    Recent Pulls:",
        f"      {stamp(STARTED - 40)}  waited 0.0s, took 1.2s  ErrImagePull: rpc error: code = "
        "NotFound desc = not found",
        f"      {stamp(STARTED)}  waited 3.5s, took 2.0s  Pulled",
    ]
