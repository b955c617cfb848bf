"""The runc handler with real containers: the busybox image pushed to the real registry, pulled by
the node's image service into the durable store, unpacked and run by runc.

These need root and runc (CI runs as root; scripts/bootstrap.sh installs runc and busybox-static).
Without them they FAIL naming bootstrap; ``KUBELET_SIM_SKIP_RUNC_TESTS=1`` is the explicit opt-out
(CI never sets it). The tests at the top need neither: they check the handler's refusals, its
``config.json`` and its ids.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio
import httpx
import pytest

from kubelet_sim.core.digest import Digest
from kubelet_sim.core.pods import PodRef
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.errors import ContainerRuntimeError
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.transport import Transport, TransportSettings
from kubelet_sim.runtime.images import ImageService
from kubelet_sim.runtime.port import (
    ContainerConfig,
    HandlerKind,
    ImageConfig,
    RuntimeHandler,
    SandboxConfig,
)
from kubelet_sim.runtime.rootfs import RootfsMode, default_mode
from kubelet_sim.runtime.runc import RuncHandler, new_container_id, runtime_spec
from kubelet_sim.sim.registry import RegistryProcess
from kubelet_sim.sim.runnable import (
    BusyboxNotFoundError,
    build_busybox_image,
    image_config,
    push_busybox_image,
)
from kubelet_sim.store import ImageRecord, Store

pytestmark = pytest.mark.anyio
_n = itertools.count()

SKIP_ENV = "KUBELET_SIM_SKIP_RUNC_TESTS"
FAST = TransportSettings(backoff_initial=0.05, backoff_max=0.1, max_attempts=2, stall_timeout=5)
POD = PodRef("default", "web", "0b8c7a1e-5d2f-4c1a-9e57-1f2a3b4c5d6e")
HOSTNAME = "web-0"
# Added to the environment below the kubelet: busybox sh exports SHLVL and PWD, runc sets HOME
# (from /etc/passwd) when the config has none.
ADDED_BY_SHELL_AND_RUNC = frozenset({"SHLVL", "PWD", "HOME"})


class NoContent:
    """An ImageContent for tests that never reach the store."""

    async def lookup(self, ref: str, runtime_handler: str = "") -> ImageRecord | None:
        raise AssertionError("not used")

    async def read_blob(self, digest: Digest, *, max_size: int = 0) -> bytes:
        raise AssertionError("not used")

    async def open_blob(self, digest: Digest) -> BinaryIO:
        raise AssertionError("not used")


def container(name: str, argv: tuple[str, ...], *, image_id: str = "sha256:" + "a" * 64,
              env: tuple[tuple[str, str], ...] = (("PATH", "/bin"),), attempt: int = 0
              ) -> ContainerConfig:  # fmt: skip
    return ContainerConfig(POD, name, attempt, image_id, argv, env, HOSTNAME)


def fake_runc(folder: Path) -> Path:
    path = folder / "runc"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


# -- without root or runc ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("euid", "binary", "expected"),
    [
        (1000, "present", "runc handler needs root"),
        (0, "missing", "no-such-runc"),
        (0, "present", None),
    ],
    ids=["not-root", "no-runc-binary", "available"],
)
def test_unavailable_reason(tmp_path: Path, euid: int, binary: str, expected: str | None) -> None:
    runc = fake_runc(tmp_path) if binary == "present" else tmp_path / "no-such-runc"
    handler = RuncHandler("runc", tmp_path / "rt", NoContent(), runc=runc, geteuid=lambda: euid)
    reason = handler.unavailable_reason()
    if expected is None:
        assert reason is None
    else:
        assert reason is not None
        assert expected in reason
    assert handler.kind is HandlerKind.RUNC
    assert handler.name == "runc"


async def test_an_unavailable_handler_refuses_to_work(tmp_path: Path) -> None:
    handler = RuncHandler("runc", tmp_path, NoContent(), runc=tmp_path / "gone", geteuid=lambda: 0)
    with pytest.raises(ContainerRuntimeError, match="gone"):
        await handler.run_sandbox(SandboxConfig(POD, HOSTNAME))
    with pytest.raises(ContainerRuntimeError, match="gone"):
        await handler.create_container("ks-sb-x", container("app", ("sh",)), ImageConfig())


def test_the_handler_is_a_runtime_handler(tmp_path: Path) -> None:
    handler: RuntimeHandler = RuncHandler("runc", tmp_path, NoContent())
    assert handler.kind is HandlerKind.RUNC


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ((("BAD=NAME", "s3cr3t-value"),), "BAD=NAME"),
        ((("", "s3cr3t-value"),), "''"),
        ((("TOKEN", "s3cr3t\x00value"),), "TOKEN"),
    ],
    ids=["equals-in-name", "empty-name", "nul-in-value"],
)
async def test_a_bad_env_is_refused_naming_the_variable_not_the_value(
    tmp_path: Path, env: tuple[tuple[str, str], ...], named: str
) -> None:
    handler = RuncHandler(
        "runc", tmp_path, NoContent(), runc=fake_runc(tmp_path), geteuid=lambda: 0
    )
    sandbox = await handler.run_sandbox(SandboxConfig(POD, HOSTNAME))
    with pytest.raises(ContainerRuntimeError) as caught:
        await handler.create_container(sandbox, container("app", ("sh",), env=env), ImageConfig())
    assert named in str(caught.value)
    assert "s3cr3t" not in str(caught.value)
    assert caught.value.container.startswith("ks-web-app-0-")


def test_config_json_is_shaped_for_runc() -> None:
    config = ContainerConfig(
        POD, "app", 2, "sha256:" + "a" * 64, ("sh", "-c", "true"), (("A", "1"), ("B", "x=y")), "h"
    )
    spec = runtime_spec(config, ImageConfig(working_dir="/srv"), Path("/r/rootfs"), (7, 8))
    process = spec["process"]
    assert process["args"] == ["sh", "-c", "true"]
    assert process["env"] == ["A=1", "B=x=y"]
    assert (process["cwd"], process["terminal"], process["user"]) == (
        "/srv",
        False,
        {"uid": 7, "gid": 8},
    )
    assert spec["hostname"] == "h"
    assert spec["root"] == {"path": "/r/rootfs", "readonly": False}
    kinds = {ns["type"] for ns in spec["linux"]["namespaces"]}
    assert kinds == {"pid", "mount", "ipc", "uts"}  # the host's network namespace
    assert runtime_spec(config, ImageConfig(), Path("/r"), (0, 0))["process"]["cwd"] == "/"


@pytest.mark.parametrize(
    ("pod", "name"),
    [("web", "app"), ("Web_Pod.With:odd/chars", "c@1"), ("p" * 200, "n" * 200), ("---", "...")],
    ids=["plain", "odd-characters", "long", "nothing-left"],
)
def test_container_ids_are_unique_and_valid_for_runc(pod: str, name: str) -> None:
    config = ContainerConfig(
        PodRef("ns", pod, "uid"), name, 3, "sha256:" + "a" * 64, ("sh",), (), "h"
    )
    ids = {new_container_id(config) for _ in range(50)}
    assert len(ids) == 50
    for cid in ids:
        assert re.fullmatch(r"[\w+\-.]+", cid), cid
        assert cid.startswith("ks-")
        assert "-3-" in cid
        assert len(cid) <= 70


def test_busybox_missing_names_the_path_and_the_package(tmp_path: Path) -> None:
    with pytest.raises(BusyboxNotFoundError) as caught:
        build_busybox_image(busybox=tmp_path / "busybox")
    assert str(tmp_path / "busybox") in str(caught.value)
    assert "apt-get install busybox-static" in str(caught.value)
    (tmp_path / "busybox").write_text("#!/bin/sh\n")
    with pytest.raises(BusyboxNotFoundError, match="statically linked"):
        build_busybox_image(busybox=tmp_path / "busybox")


# -- real containers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class World:
    handler: RuncHandler
    sandbox: str
    image_id: str
    image: ImageConfig
    root: Path

    def config(
        self, name: str, argv: tuple[str, ...], env: dict[str, str] | None = None
    ) -> ContainerConfig:
        """A container of the busybox image: the image's Env, then ``env``, then HOSTNAME."""
        merged = dict(entry.split("=", 1) for entry in self.image.env)
        merged.update(env or {})
        merged["HOSTNAME"] = HOSTNAME
        return ContainerConfig(POD, name, 0, self.image_id, argv, tuple(merged.items()), HOSTNAME)

    async def run(self, name: str, argv: tuple[str, ...], **env: str) -> str:
        """Create and start a container; its id."""
        cid = await self.handler.create_container(
            self.sandbox, self.config(name, argv, env), self.image
        )
        await self.handler.start_container(cid)
        return cid


def require_runc(handler: RuncHandler) -> None:
    reason = handler.unavailable_reason()
    if reason is None:
        return
    hint = f"{reason}: these tests need root and runc; run scripts/bootstrap.sh (CI installs them)"
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1 and {hint}")
    pytest.fail(hint, pytrace=False)


@asynccontextmanager
async def world(
    registry: RegistryProcess, tmp_path: Path, *, mode: RootfsMode | None = None,
    runc: str | Path = "runc",
) -> AsyncIterator[World]:  # fmt: skip
    ref = f"{registry.host}/runc/busybox:v{next(_n)}"
    try:
        async with RegistryClient() as client:
            image = await push_busybox_image(client, ref)
    except BusyboxNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    async with (
        await Store.open(tmp_path / "store") as store,
        RegistryClient(Transport(settings=FAST)) as client,
    ):
        service = ImageService(client, store)
        pulled = await service.pull_image(parse_normalized(ref))
        handler = RuncHandler("runc", tmp_path / "rt", store, rootfs_mode=mode, runc=runc)
        require_runc(handler)
        try:
            sandbox = await handler.run_sandbox(SandboxConfig(POD, HOSTNAME))
            yield World(handler, sandbox, pulled.image_ref, image_config(image), tmp_path / "rt")
        finally:
            await handler.aclose()


def runc_list(root: Path) -> list[str]:
    out = subprocess.run(
        ["runc", "--root", str(root / "runc"), "list", "--format", "json"],
        check=True,
        capture_output=True,
    ).stdout
    return [c["id"] for c in json.loads(out) or []]


def processes_with(argv: list[str]) -> list[int]:
    """Host pids whose command line is ``argv``."""
    wanted = "\x00".join(argv).encode() + b"\x00"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == wanted:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


MODES = [
    pytest.param(None, id="default"),
    pytest.param(RootfsMode.COPY, id="copy"),
]


@pytest.mark.registry
@pytest.mark.parametrize("mode", MODES)
async def test_hostname_and_env_reach_the_process(
    registry: RegistryProcess, tmp_path: Path, mode: RootfsMode | None
) -> None:
    async with world(registry, tmp_path, mode=mode) as w:
        started = time.perf_counter()
        cid = await w.run(
            "app", ("sh", "-c", "hostname; env"), GREETING="hello world", FROM_IMAGE="2"
        )
        startup = time.perf_counter() - started
        assert await w.handler.wait_container(cid) == 0
        lines = w.handler.log_path(cid).read_text().splitlines()
        assert lines[0] == HOSTNAME
        printed = dict(line.split("=", 1) for line in lines[1:])
        expected = dict(w.config("app", (), {"GREETING": "hello world", "FROM_IMAGE": "2"}).env)
        assert {k: v for k, v in printed.items() if k not in ADDED_BY_SHELL_AND_RUNC} == expected
        assert expected["PATH"].startswith("/usr/local/sbin")  # from the image
        print(f"unpack+create+start of busybox ({mode or default_mode()}): {startup * 1000:.0f} ms")


@pytest.mark.registry
async def test_exec_sync_exit_codes_output_env_and_timeout(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    async with world(registry, tmp_path) as w:
        cid = await w.run("app", ("sleep", "1000"), GREETING="hi")
        result = await w.handler.exec_sync(cid, ("sh", "-c", "echo out; echo err >&2; exit 3"), 10)
        assert result.exit_code == 3
        # runc copies stdout and stderr through pipes of their own: both arrive, in either order.
        assert sorted(result.output.splitlines()) == [b"err", b"out"]
        result = await w.handler.exec_sync(cid, ("sh", "-c", "echo $GREETING $FROM_IMAGE"), 10)
        assert (result.exit_code, result.output) == (0, b"hi 1\n")
        result = await w.handler.exec_sync(cid, ("sh", "-c", "yes | head -c 100000"), 10)
        assert (result.exit_code, len(result.output)) == (0, 16 * 1024)
        started = anyio.current_time()
        result = await w.handler.exec_sync(cid, ("sleep", "4242"), 0.5)
        assert result.exit_code == 137
        assert anyio.current_time() - started < 5
        assert processes_with(["sleep", "4242"]) == []
        # A timeout that fires before runc exec has even started the process leaves none either.
        result = await w.handler.exec_sync(cid, ("sleep", "4243"), 0.001)
        assert result.exit_code == 137
        assert processes_with(["sleep", "4243"]) == []
        with pytest.raises(ContainerRuntimeError) as caught:
            await w.handler.exec_sync(cid, ("no-such-binary",), 10)
        assert caught.value.container == cid
        assert "no-such-binary" in caught.value.message
        await w.handler.stop_container(cid, 0)
        with pytest.raises(ContainerRuntimeError, match="exited"):
            await w.handler.exec_sync(cid, ("true",), 10)


STOPS = [
    pytest.param(
        ("sh", "-c", "trap 'exit 0' TERM; sleep 1000 & wait"), 10.0, 0, 0.0, 5.0, id="term-handled"
    ),
    pytest.param(("sleep", "1000"), 1.0, 137, 1.0, 5.0, id="pid1-ignores-term-then-kill"),
    pytest.param(("sleep", "1000"), 0.0, 137, 0.0, 5.0, id="no-grace-kill-at-once"),
]


@pytest.mark.registry
@pytest.mark.parametrize(("argv", "grace", "code", "at_least", "at_most"), STOPS)
async def test_stop_sends_term_then_kill_after_the_timeout(
    registry: RegistryProcess,
    tmp_path: Path,
    argv: tuple[str, ...],
    grace: float,
    code: int,
    at_least: float,
    at_most: float,
) -> None:
    async with world(registry, tmp_path) as w:
        cid = await w.run("app", argv)
        started = anyio.current_time()
        await w.handler.stop_container(cid, grace)
        took = anyio.current_time() - started
        assert await w.handler.wait_container(cid) == code
        assert at_least <= took < at_most
        await w.handler.stop_container(cid, grace)  # stopping a stopped container is a no-op


@pytest.mark.registry
async def test_remove_cleans_rootfs_bundle_and_runc_state(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    async with world(registry, tmp_path) as w:
        first = await w.run("one", ("sleep", "1000"))
        second = await w.run("two", ("sleep", "1000"))
        assert w.handler.snapshotter.statistics().unpacked == 1  # one snapshot, two containers
        assert sorted(runc_list(w.root)) == sorted([first, second])
        bundle = w.handler.log_path(first).parent
        rootfs = bundle / "rootfs"
        assert (rootfs / "bin/busybox").is_file()
        await w.handler.remove_container(first)  # running: killed first
        assert runc_list(w.root) == [second]
        assert not (w.root / "runc" / first).exists()
        assert not bundle.exists()
        assert not await anyio.to_thread.run_sync(os.path.ismount, rootfs)
        await w.handler.remove_container(first)  # twice is fine
        await w.handler.stop_sandbox(w.sandbox)  # kills what still runs in the pod
        assert runc_list(w.root) == []
        assert await w.handler.wait_container(second) == 137
        await w.handler.remove_container(second)
        assert list((w.root / "containers").iterdir()) == []
        assert w.handler.snapshotter.snapshot_path(w.image_id).is_dir()  # kept for the next


@pytest.mark.registry
async def test_a_cancelled_start_leaves_nothing_running(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    # runc, but `run` writes its pid file elsewhere: the start never sees the container start,
    # and the test cancels it once the container's process is there.
    wrapper = tmp_path / "slow-runc"
    wrapper.write_text(
        "#!/bin/sh\nprev=\nfor a do\n  shift\n"
        '  if [ "$prev" = --pid-file ]; then set -- "$@" "$a.hidden"; else set -- "$@" "$a"; fi\n'
        '  prev=$a\ndone\nexec runc "$@"\n'
    )
    wrapper.chmod(0o755)
    async with world(registry, tmp_path, runc=wrapper) as w:
        cid = await w.handler.create_container(
            w.sandbox, w.config("app", ("sleep", "4321")), w.image
        )
        hidden = w.handler.log_path(cid).parent / "pid.hidden"
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(w.handler.start_container, cid)
                while not hidden.exists():  # noqa: ASYNC110 - a file runc writes, no event to await
                    await anyio.sleep(0.01)
                # runc writes the pid file before its init execs the container's command: wait
                # for the command itself (asserting at once failed on a loaded machine).
                while not processes_with(["sleep", "4321"]):  # noqa: ASYNC110 - /proc, polled
                    await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
        assert processes_with(["sleep", "4321"]) == []
        assert runc_list(w.root) == []
        assert await w.handler.wait_container(cid) == 137
        with pytest.raises(ContainerRuntimeError, match="cannot start"):
            await w.handler.start_container(cid)
        await w.handler.remove_container(cid)


@pytest.mark.registry
async def test_a_failed_start_carries_runcs_error(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    async with world(registry, tmp_path) as w:
        cid = await w.handler.create_container(
            w.sandbox, w.config("app", ("/no/such/entrypoint",)), w.image
        )
        with pytest.raises(ContainerRuntimeError) as caught:
            await w.handler.start_container(cid)
        assert caught.value.container == cid
        assert "/no/such/entrypoint" in caught.value.message
        assert await w.handler.wait_container(cid) == 128  # containerd's StartError
        assert runc_list(w.root) == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.registry
async def test_containers_share_the_hosts_network(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    port = free_port()
    async with world(registry, tmp_path) as w:
        script = (
            "echo served-by-busybox > /var/www/index.html; "
            f"exec httpd -f -p 127.0.0.1:{port} -h /var/www"
        )
        cid = await w.run("web", ("sh", "-c", script))
        async with httpx.AsyncClient() as client:
            with anyio.fail_after(10):
                while True:
                    try:
                        response = await client.get(f"http://127.0.0.1:{port}/")
                        break
                    except httpx.ConnectError:
                        await anyio.sleep(0.02)
        assert response.text == "served-by-busybox\n"
        await w.handler.stop_container(cid, 0)
