"""Hostile inputs to the container half: env and command expansion, sim annotations and commands,
lifecycle hooks, pod IPs, AlwaysPullImages updates, runc's image User, and image layers.

Some of these pinned bugs a hostile review found (a Secret in the shown command, exit codes past
Python's int limit, an image User of odd digits, AlwaysPullImages bypassed by an update, quadratic
``$(`` expansion, the last pod IP never given), fixed since; the others are regressions for abuse
that was handled.
Pods run on the sim handler in virtual time through ``test_engine_lifecycle``'s world (a node with
the ContainerManager over ``SimHandler``, the engine and the object store).
"""

from __future__ import annotations

import gzip
import io
import ipaddress
import json
import os
import tarfile
from pathlib import Path
from typing import Any, SupportsIndex

import anyio
import pytest
import structlog.testing
import trio.testing
from test_engine_lifecycle import UID, World, ctr, manifest, running_world
from test_runtime_rootfs import Entry, apply_all, file, folder, hardlink, layer, symlink, tree

from kubelet_sim.config.runtimes import parse_runtimes
from kubelet_sim.core.digest import Digest
from kubelet_sim.errors import ConfigError, RootfsError
from kubelet_sim.k8s import ObjectStore
from kubelet_sim.k8s.admission import Admission
from kubelet_sim.k8s.envvars import expand
from kubelet_sim.k8s.objects import Pod
from kubelet_sim.node.views import pod_detail
from kubelet_sim.registry import mediatypes as mt
from kubelet_sim.runtime.containers import ContainerManager, NodeInfo, _SandboxError
from kubelet_sim.runtime.rootfs import Layer, apply_layer
from kubelet_sim.runtime.runc import RuncHandler
from kubelet_sim.runtime.runcspec import resolve_user
from kubelet_sim.runtime.sim import ANNOTATION_PREFIX, Outcome, SimHandler, interpret

pytestmark = pytest.mark.anyio

SECRET_VALUE = "hunter2-TOPSECRET"
SECRET = json.dumps(
    {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "default"},
        "stringData": {"pw": SECRET_VALUE},
    }
)
PW = {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}
HUGE = "1" * 5000  # beyond Python's 4300-digit int() limit
HUGE_MOD_256 = int(HUGE[-8:]) % 256  # 10**8 is a multiple of 256


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def detail(w: World, *, reveal: bool = False) -> dict[str, Any]:
    state = w.pod()
    source = state.spec.source
    assert isinstance(source, Pod)
    return pod_detail(source, state, anyio.current_time(), containers=w.containers, reveal=reveal)


# -- Secrets never leave through the API, events or logs ----------------------------------------


async def test_command_expanding_a_secret_is_masked_in_the_api() -> None:
    async with running_world() as w:
        w.objects.apply_text(SECRET)
        await w.submit(manifest(ctr(command=["sleep", "infinity"], args=["--pw=$(PW)"], env=[PW])))
        await w.until(5)
        shown = detail(w)
        assert shown["containers"][0]["command"][0] == "sleep"
        assert SECRET_VALUE not in json.dumps(shown)
        assert SECRET_VALUE in json.dumps(detail(w, reveal=True))  # ?reveal=1 from loopback


async def test_secret_env_and_expansions_are_masked_in_api_events_and_logs() -> None:
    env = [PW, {"name": "DSN", "value": "postgres://u:$(PW)@db"}, {"name": "PLAIN", "value": "x"}]
    with structlog.testing.capture_logs() as logs:
        async with running_world() as w:
            w.objects.apply_text(SECRET)
            await w.submit(manifest(ctr(env=env)))
            await w.until(5)
            values = {e["name"]: e["value"] for e in detail(w)["containers"][0]["env"]}
            revealed = {
                e["name"]: e["value"] for e in detail(w, reveal=True)["containers"][0]["env"]
            }
            seen = json.dumps([e.message for e in w.seen])
    assert values["PW"] == values["DSN"] == "<secret>"
    assert values["PLAIN"] == "x"
    assert revealed["DSN"] == f"postgres://u:{SECRET_VALUE}@db"
    assert SECRET_VALUE not in seen
    assert SECRET_VALUE not in repr(logs)


async def test_config_error_names_the_key_never_a_value() -> None:
    missing = {"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope"}}}
    async with running_world() as w:
        w.objects.apply_text(SECRET)
        await w.submit(manifest(ctr(env=[PW, missing])))
        await w.until(5)
        state = w.state()
        assert state.reason == "CreateContainerConfigError"
        assert state.message == "couldn't find key nope in Secret default/db"
        assert SECRET_VALUE not in json.dumps([e.message for e in w.seen])


# -- the sim's commands and annotations ---------------------------------------------------------


def test_sim_exit_with_a_5000_digit_code_is_read_mod_256() -> None:
    assert interpret(("sh", "-c", f"exit {HUGE}")) == Outcome(HUGE_MOD_256)


def test_sim_sleep_with_huge_operands_never_raises() -> None:
    assert interpret(("sleep", "9" * 5000)) == Outcome(0, float("inf"))
    assert interpret(("sleep", "1e9")) == Outcome(1)  # not a sleep operand
    assert interpret(("sh", "-c", "exit 256")) == Outcome(0)


async def test_post_start_exec_with_a_huge_exit_code_fails_the_hook_not_the_node() -> None:
    hook = {"postStart": {"exec": {"command": ["sh", "-c", f"exit {HUGE}"]}}}
    async with running_world() as w:
        await w.submit(manifest(ctr(lifecycle=hook)))
        await w.until(5)
        assert w.state().reason in ("PostStartHookError", "CrashLoopBackOff")
        assert w.events("FailedPostStartHook")


async def test_sim_annotation_with_a_huge_code_is_create_container_error() -> None:
    key = f"{ANNOTATION_PREFIX}exit.c"
    async with running_world() as w:
        await w.submit(manifest(ctr(), annotations={key: f"code={HUGE}"}))
        await w.until(5)
        assert w.state().reason == "CreateContainerError"
        assert key in w.state().message


@pytest.mark.parametrize(
    "value",
    ["code=1,code=2", "code=-1", "code=256", "after=1e3", "seconds=1", "", ",", "code", "\x00=1"],
)
async def test_garbage_sim_annotations_are_create_container_errors(value: str) -> None:
    key = f"{ANNOTATION_PREFIX}exit.c"
    async with running_world() as w:
        await w.submit(manifest(ctr(), annotations={key: value}))
        await w.until(5)
        assert w.state().reason == "CreateContainerError"
        assert key in w.state().message


# -- $(VAR) expansion ---------------------------------------------------------------------------


class CountingText(str):
    """A str whose ``find`` counts the characters it may scan."""

    scanned = 0

    def find(self, sub: str, start: SupportsIndex | None = None, *args: Any) -> int:
        CountingText.scanned += len(self) - (int(start) if start is not None else 0)
        return super().find(sub, start, *args)


def test_unterminated_references_expand_in_linear_time() -> None:
    text = CountingText("$(" * 20_000)
    CountingText.scanned = 0
    assert expand(text, {}) == str(text)
    assert CountingText.scanned <= 4 * len(text)


def test_expansion_of_hostile_values_is_literal() -> None:
    assert expand("$(A", {"A": "x"}) == "$(A"
    assert expand("$((A))", {"A": "x"}) == "$((A))"
    assert expand("$$(A)", {"A": "x"}) == "$(A)"
    assert expand("$(A)" * 1000, {"A": "$(A)"}) == "$(A)" * 1000  # no recursive expansion
    assert expand("$(" + "(" * 1000 + "A" + ")" * 1000, {}) == "$(" + "(" * 1000 + "A" + ")" * 1000
    assert expand("$(=)$( )$(\x00)", {"=": "a", " ": "b", "\x00": "c"}) == "abc"


# -- pod IPs from the podCIDR -------------------------------------------------------------------


def all_ips(cidr: str) -> list[str]:
    manager = ContainerManager(
        {"sim": SimHandler()},
        default_handler="sim",
        images=None,  # type: ignore[arg-type]  # not read by IP allocation
        objects=None,
        hooks=None,  # type: ignore[arg-type]
        recorder=None,  # type: ignore[arg-type]
        node=NodeInfo(name="n", pod_cidr=cidr),
    )
    out: list[str] = []
    while True:
        try:
            out.append(manager._allocate_ip(None))  # type: ignore[arg-type]
        except _SandboxError:
            return out


@pytest.mark.parametrize(
    ("cidr", "expected"),
    [
        ("10.0.0.0/30", ["10.0.0.2"]),
        ("10.0.0.0/29", [f"10.0.0.{n}" for n in range(2, 7)]),
        ("fd00::/126", ["fd00::2", "fd00::3"]),
    ],
)
def test_small_pod_cidrs_give_every_usable_address(cidr: str, expected: list[str]) -> None:
    assert all_ips(cidr) == expected


async def test_exhausted_pod_cidr_fails_the_sandbox_naming_the_range() -> None:
    async with running_world() as w:
        w.containers._network = ipaddress.ip_network("10.9.0.0/31")  # no usable address
        await w.submit(manifest(ctr()))
        await w.until(5)
        assert "no IP addresses available in range set" in w.state().message
        assert w.events("FailedCreatePodSandBox")


# -- hostnames ----------------------------------------------------------------------------------


async def test_fqdn_longer_than_64_fails_the_sandbox_with_upstreams_message() -> None:
    async with running_world() as w:
        await w.submit(manifest(ctr(), hostname="h" * 63, subdomain="sub", setHostnameAsFQDN=True))
        await w.until(5)
        assert "FQDN " in w.state().message
        assert "is too long" in w.state().message
        assert w.events("FailedCreatePodSandBox")


# -- lifecycle ----------------------------------------------------------------------------------


async def test_pre_stop_that_never_returns_is_cut_at_the_grace_period() -> None:
    hang = {f"{ANNOTATION_PREFIX}exec.c": "code=0,seconds=100000"}
    pre_stop = {"preStop": {"exec": {"command": ["wait-forever"]}}}
    async with running_world() as w:
        await w.submit(manifest(ctr(lifecycle=pre_stop), grace=5, annotations=hang))
        await w.until(1)
        assert w.state().running
        assert await w.engine.remove(UID)
        with anyio.fail_after(10):
            await w.engine.wait_terminated(UID)
        assert w.now() <= 1 + 5 + 2 + 1


async def test_delete_mid_post_start_stops_the_container() -> None:
    slow = {f"{ANNOTATION_PREFIX}exec.c": "code=0,seconds=1000"}
    post_start = {"postStart": {"exec": {"command": ["slow"]}}}
    async with running_world() as w:
        await w.submit(manifest(ctr(lifecycle=post_start), annotations=slow))
        await w.until(3)
        assert not w.state().running
        assert await w.engine.remove(UID)
        with anyio.fail_after(60):
            await w.engine.wait_terminated(UID)
        assert w.sim.statistics().containers == 0


@pytest.mark.parametrize(
    ("host", "path"),
    [("[zz]", "/"), ("127.0.0.1", "http://[::1"), ("bad\x00host", "/")],
    ids=["bracketed-host", "broken-ipv6-path", "nul-in-host"],
)
async def test_a_pre_stop_http_get_with_a_bad_url_fails_the_hook_and_still_stops(
    host: str, path: str
) -> None:
    # Found by review: the URL errors escaped the hook runner and ended the node's engine.
    pre_stop = {"preStop": {"httpGet": {"host": host, "port": 80, "path": path}}}
    ignore = {f"{ANNOTATION_PREFIX}ignore-sigterm.c": "true"}
    async with running_world() as w:
        await w.submit(manifest(ctr(lifecycle=pre_stop), grace=5, annotations=ignore))
        await w.until(1)
        assert w.state().running
        assert await w.engine.remove(UID)
        with anyio.fail_after(30):
            await w.engine.wait_terminated(UID)
        assert w.events("FailedPreStopHook")
        assert w.sim.statistics().containers == 0  # stopped (SIGKILL after the grace period)


async def test_a_cancelled_sandbox_gives_its_pod_ip_back() -> None:
    # Found by review: an address taken before run_sandbox was lost when it was cancelled.
    async with running_world() as w:
        manager = w.containers
        await w.submit(manifest(ctr()))
        await w.until(1)
        assert manager._ips_used == {manager.pod_ip(UID)}
        assert await w.engine.remove(UID)
        await w.engine.wait_terminated(UID)
        assert manager._ips_used == set()  # freed with the sandbox

        class Stall(SimHandler):
            async def run_sandbox(self, config: Any) -> str:
                await anyio.sleep_forever()
                raise AssertionError("unreachable")

        manager.handlers["sim"] = Stall("sim")
        await w.submit(manifest(ctr()))
        await w.until(3)
        assert len(manager._ips_used) == 1  # taken while run_sandbox waits
        assert await w.engine.remove(UID)
        await w.engine.wait_terminated(UID)
        assert manager._ips_used == set()


@pytest.mark.parametrize(
    "value", [1 << 63, 10**400, -(1 << 63) - 1], ids=["2^63", "10^400", "-2^63-1"]
)
def test_a_grace_period_past_int64_is_a_config_error(value: int) -> None:
    # Found by review: 10**400 was stored, then float() of it failed the apply with a 500.
    doc = json.loads(never_pod("1"))
    doc["spec"]["terminationGracePeriodSeconds"] = value
    with pytest.raises(ConfigError) as caught:
        ObjectStore().apply_text(json.dumps(doc))
    assert caught.value.field is not None
    assert caught.value.field.endswith("spec.terminationGracePeriodSeconds")


# -- AlwaysPullImages ---------------------------------------------------------------------------


def never_pod(value: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "containers": [
                    {
                        "name": "a",
                        "image": "reg.test/private:1",
                        "imagePullPolicy": "Never",
                        "env": [{"name": "X", "value": value}],
                    }
                ]
            },
        }
    )


def test_always_pull_images_cannot_be_bypassed_by_an_update() -> None:
    store = ObjectStore(admission=Admission(always_pull_images=True))
    store.apply_text(never_pod("1"))
    store.apply_text(never_pod("2"))
    pod = store.get_pod("default", "p")
    assert pod is not None
    assert str(pod.containers[0].image_pull_policy) == "Always"


def test_always_pull_images_sets_always_on_create() -> None:
    store = ObjectStore(admission=Admission(always_pull_images=True))
    store.apply_text(never_pod("1"))
    pod = store.get_pod("default", "p")
    assert pod is not None
    assert str(pod.containers[0].image_pull_policy) == "Always"


# -- manifests: quantities, env names, ephemeral containers -------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("resources", {"limits": {"cpu": "1e1000000"}}),
        ("resources", {"limits": {"memory": "9" * 5000}}),
        ("env", [{"name": "A=B", "value": "x"}]),
        ("env", [{"name": "A\x00", "value": "x"}]),
        (
            "env",
            [
                {
                    "name": "A",
                    "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "3"}},
                }
            ],
        ),
        ("lifecycle", {"postStart": {"sleep": {"seconds": 10**30}}}),
        ("lifecycle", {"postStart": {"httpGet": {"port": 80, "httpHeaders": [{"name": "a b"}]}}}),
        ("lifecycle", {"postStart": {"exec": {"command": []}}}),
    ],
)
def test_hostile_container_fields_are_config_errors_naming_the_field(
    field: str, value: object
) -> None:
    text = manifest({**ctr(), field: value})
    with pytest.raises(ConfigError) as info:
        ObjectStore().apply_text(text)
    assert f"spec.containers[0].{field}" in str(info.value)


async def test_divisor_zero_counts_as_one() -> None:
    env = [
        {"name": "N", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "0"}}}
    ]
    async with running_world() as w:
        await w.submit(manifest(ctr(env=env)))
        await w.until(5)
        values = {e["name"]: e["value"] for e in detail(w)["containers"][0]["env"]}
        assert values["N"] == "2"  # the node's allocatable cpu


async def test_ten_thousand_env_vars_start() -> None:
    env = [{"name": f"V{i}", "value": f"$(V{i - 1})x" if i else "x"} for i in range(10_000)]
    async with running_world() as w:
        await w.submit(manifest(ctr(env=env)))
        await w.until(5)
        assert w.state().running


# -- runtimes configuration and runc's image User -----------------------------------------------

RUNTIMES = """
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "sim"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sim]
  runtime_type = "io.kubelet-sim.sim.v1"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    BinaryName = "BINARY"
"""


@pytest.mark.parametrize("kind", ["missing", "not-executable", "folder"])
def test_unusable_runc_binary_is_named(tmp_path: Path, kind: str) -> None:
    binary = tmp_path / "runc"
    if kind == "not-executable":
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o644)
    elif kind == "folder":
        binary.mkdir()
    config = parse_runtimes(RUNTIMES.replace("BINARY", str(binary)), source="rt.toml")
    entry = config.entries["runc"]
    handler = RuncHandler("runc", tmp_path / "state", None, runc=entry.binary, geteuid=lambda: 0)  # type: ignore[arg-type]
    reason = handler.unavailable_reason()
    assert reason is not None
    assert str(binary) in reason


@pytest.mark.parametrize(
    "text",
    [
        RUNTIMES.replace('"BINARY"', "3"),
        RUNTIMES.replace('"io.containerd.runc.v2"', '"io.containerd.kata.v2"'),
        RUNTIMES.replace('default_runtime_name = "sim"', 'default_runtime_name = "kata"'),
        RUNTIMES + "\n[plugins",
        "plugins = 3",
    ],
)
def test_bad_runtimes_toml_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_runtimes(text, source="rt.toml")
    assert str(info.value).startswith("rt.toml")


@pytest.mark.parametrize("user", ["²", HUGE, "0:²", "root:" + HUGE])
def test_hostile_image_user_is_an_error_message(tmp_path: Path, user: str) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\n")
    assert isinstance(resolve_user(tmp_path, user), str)


# -- image layers -------------------------------------------------------------------------------


def pax(name: str, override: str) -> Entry:
    info, data = file(name, b"pwned")  # type: ignore[misc]
    info.pax_headers = {"path": override}
    return (info, data)


def escapes(tmp_path: Path) -> list[tuple[str, list[list[Entry]]]]:
    outside = tmp_path / "outside"
    return [
        ("symlink-l1-write-l2", [[symlink("s", str(outside))], [file("s/passwd", b"pwned")]]),
        ("dotdot-link-l1-write-l2", [[symlink("s", "../../outside")], [file("s/passwd", b"p")]]),
        ("pax-path-override", [[pax("innocent", "../../outside/passwd")]]),
        ("pax-absolute", [[pax("innocent", f"{outside}/passwd")]]),
        ("opaque-in-symlinked-dir-l2", [[symlink("d", "../../outside")], [file("d/.wh..wh..opq")]]),
        ("whiteout-in-symlinked-dir-l2", [[symlink("d", str(outside))], [file("d/.wh.passwd")]]),
        ("whiteout-of-dotdot", [[folder("d/")], [file("d/.wh...")]]),
        ("hardlink-l2-via-symlink-l1", [[symlink("s", str(outside))], [hardlink("h", "s/passwd")]]),
        ("long-component", [[file("a" * 300)]]),
        ("long-path", [[file("/".join(["d" * 200] * 30) + "/x")]]),
    ]


def test_cross_layer_and_pax_escapes_write_nothing_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("host")
    for name, layers in escapes(tmp_path):
        root = tmp_path / name / "root"
        root.mkdir(parents=True)
        with pytest.raises(RootfsError) as info:
            apply_all(root, *(layer(*entries) for entries in layers))
        assert "layer sha256:" in str(info.value), name
        assert tree(outside) == {"passwd": "file:host"}, name


def test_writing_over_a_symlink_replaces_it_and_hardlinks_to_links_stay_links(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("host")
    root = tmp_path / "root"
    root.mkdir()
    apply_all(
        root,
        layer(symlink("etc-passwd", str(outside / "passwd")), hardlink("h", "etc-passwd")),
        layer(file("etc-passwd", b"mine"), file("h", b"mine too")),
    )
    assert tree(outside) == {"passwd": "file:host"}
    assert tree(root) == {"etc-passwd": "file:mine", "h": "file:mine too"}


def test_device_nodes_are_skipped_and_a_bounded_gzip_bomb_unpacks(tmp_path: Path) -> None:
    info = tarfile.TarInfo("dev/sda")
    info.type, info.devmajor, info.devminor = tarfile.BLKTYPE, 8, 0
    big = tarfile.TarInfo("zeros")
    big.size = 32 << 20
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.addfile(info)
        archive.addfile(big, io.BytesIO(bytes(big.size)))
    data = gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0)
    assert len(data) < big.size // 100
    desc = Layer(Digest.from_bytes(data), mt.OCI_LAYER_GZIP, len(data))
    apply_layer(tmp_path, io.BytesIO(data), desc)
    assert not (tmp_path / "dev" / "sda").exists()
    assert os.path.getsize(tmp_path / "zeros") == big.size
