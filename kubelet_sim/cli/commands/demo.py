"""``kubelet-sim demo``: the main job on a built-in default, end to end on this machine.

Starts two real distribution registries on loopback ports (a public one, and a private one with
htpasswd auth), seeds them with synthetic multi-arch images through the project's own push client,
and runs the daemon with ``config/kubelet.yaml``: the static pods of ``config/pods/`` (a public
multi-arch image with an init container, a bad name, ``Never`` with an absent image, a missing
tag), named NAME-demo after the node as the kubelet names them, and, through the API as
``kubectl apply -f`` sends it, ``config/apply/`` (a private image with its pull secret: static
pods cannot use Secrets). The manifests name ``localhost:5000`` (public) and ``localhost:5001``
(private); the demo rewrites those to its registries' real ports. It shows
progress, then the pods, events, images and a few metrics through the daemon's HTTP API (and
``kubectl get pods`` when kubectl is installed), stops
the daemon cleanly, and starts it again on the same root to show a restart finding its images.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kubelet_sim.cli.commands.kubeconfig import kubeconfig
from kubelet_sim.config.kubelet import load_kubelet_config
from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.digest import short_digest
from kubelet_sim.core.platforms import host_platform, parse_platform
from kubelet_sim.node.daemon import Daemon, DaemonOptions
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.sim.images import build_image, build_multiarch
from kubelet_sim.sim.registry import RegistryConfig, RegistryProcess, write_htpasswd
from kubelet_sim.sim.seed import push_image, push_index

CONFIG_DIR = Path(__file__).resolve().parents[3] / "config"
PUBLIC, PRIVATE = "localhost:5000", "localhost:5001"
DEMO_USER, DEMO_PASSWORD = "demo", "demo-password"  # the throwaway demo registry's login
NODE = "demo"
"""The demo node's name: static pod NAME runs as NAME-demo."""
WAIT_FOR = (("demo", f"web-{NODE}"), ("demo", "private"), ("demo", "env-hooks"))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo", help="run the built-in demo: local registries, synthetic images, the daemon, pods"
    )
    parser.add_argument("--config", type=Path, default=CONFIG_DIR / "kubelet.yaml")
    parser.add_argument(
        "--pods", type=Path, default=CONFIG_DIR / "pods", help="static pod manifests"
    )
    parser.add_argument(
        "--apply",
        type=Path,
        default=CONFIG_DIR / "apply",
        help="manifests applied through the API (Secrets, pods that use them)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep registries and state here (default: temp)"
    )
    parser.add_argument(
        "--root",
        type=Path,
        metavar="DIR",
        help="the node's state folder, as for run/images (default: WORKDIR/node); after the demo "
        "`kubelet-sim images --root DIR` lists what it pulled",
    )
    parser.add_argument("--platform", help="node platform (default: this host)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="at most this long for the failing pod to reach ImagePullBackOff",
    )
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    # Off a terminal rich would wrap at 80 columns; 160 unless COLUMNS says otherwise.
    width = None if sys.stdout.isatty() else shutil.get_terminal_size((160, 24)).columns
    console = Console(width=width)
    with tempfile.TemporaryDirectory(prefix="kubelet-sim-demo-") as tmp:
        work = args.workdir or Path(tmp)
        public = RegistryProcess(RegistryConfig(storage_dir=work / "public"), work / "public-reg")
        htpasswd = work / "htpasswd"
        work.mkdir(parents=True, exist_ok=True)
        write_htpasswd(htpasswd, {DEMO_USER: DEMO_PASSWORD})
        private = RegistryProcess(
            RegistryConfig(storage_dir=work / "private", htpasswd=htpasswd), work / "private-reg"
        )
        console.rule("[bold]1. Registries")
        public.start()
        private.start()
        try:
            console.print(f"public registry  http://{public.host}  (pods' {PUBLIC})")
            console.print(f"private registry http://{private.host} (pods' {PRIVATE}, htpasswd)")
            anyio.run(_seed, public.host, private.host, console)
            hosts = {PUBLIC: public.host, PRIVATE: private.host}
            config = _localize(args.config, args.pods, work, hosts)
            applied = _localized_documents(args.apply, hosts)
            platform = parse_platform(args.platform) if args.platform else host_platform()
            root = args.root or work / "node"
            for round_no in (1, 2):
                title = "2. Daemon" if round_no == 1 else "3. Daemon restarted on the same root"
                console.rule(f"[bold]{title} ({platform})")
                anyio.run(
                    _run_daemon, config, applied, root, platform, args.seconds, round_no, console
                )
        finally:
            public.stop()
            private.stop()
    console.rule("[bold]Done")
    return 0


async def _seed(public: str, private: str, console: Console) -> None:
    started = time.monotonic()
    async with RegistryClient() as client:
        web = build_multiarch("demo-web", layer_sizes=(200_000, 600_000, 1_200_000))
        await push_index(client, f"{public}/demo/web:1.0", web)
        await push_index(
            client, f"{public}/demo/init:1.0", build_multiarch("demo-init", layer_sizes=(50_000,))
        )
        app = build_image("demo-private", str(host_platform()), (300_000, 300_000))
        await push_image(
            client, f"{private}/team/app:1.0", app, creds=Credentials(DEMO_USER, DEMO_PASSWORD)
        )
    platforms = ", ".join(i.platform_string for i in web.images)
    console.print(
        f"seeded demo/web:1.0 and demo/init:1.0 ({platforms}) and the private team/app:1.0 "
        f"in {time.monotonic() - started:.1f}s"
    )


def _localize(config: Path, pods: Path, work: Path, hosts: dict[str, str]) -> Path:
    """Copy the config and the pods into ``work`` with the registries' real addresses."""
    static = work / "pods"
    static.mkdir(parents=True, exist_ok=True)
    for source in sorted(pods.glob("*.yaml")):
        (static / source.name).write_text(_localized_documents(source, hosts))
    doc = yaml.safe_load(config.read_text())
    doc["staticPodPath"] = str(static)
    target = work / "kubelet.yaml"
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    load_kubelet_config(target)  # refuse a broken config before starting anything
    return target


def _localized_documents(path: Path, hosts: dict[str, str]) -> str:
    """The YAML documents of ``path`` (a file, or a folder's ``*.yaml``), registries rewritten."""
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    docs = [
        _rewrite(doc, hosts)
        for file in files
        for doc in yaml.safe_load_all(file.read_text())
        if doc
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)


def _rewrite(node: Any, hosts: dict[str, str], *, secret: bool = False) -> Any:
    if isinstance(node, dict):
        is_secret = node.get("kind") == "Secret"
        target = f"{node.get('host')}:{node.get('port')}"
        if "path" in node and target in hosts:  # an httpGet hook to a demo registry
            host, _, port = hosts[target].rpartition(":")
            node = {**node, "host": host, "port": int(port)}
        out = {}
        for key, value in node.items():
            if is_secret and key == "data" and isinstance(value, dict):
                out[key] = {
                    k: base64.b64encode(
                        _replace(base64.b64decode(v).decode(), hosts).encode()
                    ).decode()
                    for k, v in value.items()
                }
            else:
                out[key] = _rewrite(value, hosts)
        return out
    if isinstance(node, list):
        return [_rewrite(item, hosts) for item in node]
    if isinstance(node, str):
        return _replace(node, hosts)
    return node


def _replace(text: str, hosts: dict[str, str]) -> str:
    for placeholder, real in hosts.items():
        text = text.replace(placeholder, real)
    return text


async def _run_daemon(
    config: Path,
    applied: str,
    root: Path,
    platform: Any,
    seconds: float,
    round_no: int,
    console: Console,
) -> None:
    options = DaemonOptions(
        config=load_kubelet_config(config),
        root=root,
        listen_port=0,
        node_platform=platform,
        node_name=NODE,
    )
    daemon = Daemon(options)
    async with anyio.create_task_group() as tg:
        port = await tg.start(daemon.run)
        url = f"http://127.0.0.1:{port}"
        console.print(
            f"daemon API on {url} (try: kubelet-sim describe pod demo/web-{NODE} --server {url})"
        )
        async with httpx.AsyncClient(base_url=url, timeout=10, trust_env=False) as api:
            # What `kubectl apply -f config/apply/` sends; the API's objects live in memory, so
            # the restarted daemon gets them again, as it would from an API server.
            answer = await api.post("/apply", content=applied)
            answer.raise_for_status()
            for item in answer.json()["items"]:
                console.print(f"applied {item['kind'].lower()}/{item['name']} {item['result']}")
            started = time.monotonic()
            with console.status("pulling...") as status:
                while time.monotonic() - started < 60:
                    pods = (await api.get("/pods")).json()["items"]
                    status.update("pods: " + ", ".join(f"{p['name']}={p['status']}" for p in pods))
                    ready = {(p["namespace"], p["name"]) for p in pods if p["status"] == "Running"}
                    if all(key in ready for key in WAIT_FOR):
                        break
                    await anyio.sleep(0.2)
                console.print(
                    f"web, private and env-hooks running after {time.monotonic() - started:.1f}s"
                )
                if round_no == 1:
                    status.update(f"waiting for demo/missing-{NODE} to reach ImagePullBackOff")
                    with anyio.move_on_after(seconds):
                        while await _reason(api, "demo", f"missing-{NODE}") != "ImagePullBackOff":  # noqa: ASYNC110 - polls the API
                            await anyio.sleep(0.5)
                    status.update("waiting for demo/hook-fails to reach CrashLoopBackOff")
                    with anyio.move_on_after(seconds):
                        while await _reason(api, "demo", "hook-fails") != "CrashLoopBackOff":  # noqa: ASYNC110 - polls the API
                            await anyio.sleep(0.5)
            await _report(api, console, round_no)
            if round_no == 1:
                await _kubectl(url, console)
                await _environment(api, console, "demo", "env-hooks")
                status_code = (await api.delete("/pods/demo/env-hooks")).status_code
                console.print(f"deleted demo/env-hooks ({status_code}): preStop runs, then SIGTERM")
        tg.cancel_scope.cancel()
    console.print("daemon stopped cleanly")


async def _kubectl(url: str, console: Console) -> None:
    """``kubectl get pods`` against the daemon, as a user would with ``kubelet-sim kubeconfig``
    (only when kubectl is installed; its config and cache go to a temporary folder)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        console.print(
            "kubectl not found: with it, `kubelet-sim kubeconfig` points it at the daemon"
        )
        return
    with tempfile.TemporaryDirectory(prefix="kubelet-sim-kubectl-") as folder:
        config = anyio.Path(folder) / "kubeconfig"
        await config.write_text(kubeconfig(url))
        env = {"PATH": os.environ.get("PATH", ""), "HOME": folder, "KUBECONFIG": str(config)}
        argv = [kubectl, "get", "pods", "-n", "demo", "-o", "wide"]
        with anyio.move_on_after(30):
            done = await anyio.run_process(argv, env=env, check=False)
            console.print(
                f"$ kubelet-sim kubeconfig --server {url} > kc && "
                "KUBECONFIG=kc kubectl get pods -n demo -o wide"
            )
            console.print(escape((done.stdout or done.stderr).decode().rstrip()))


async def _environment(api: httpx.AsyncClient, console: Console, namespace: str, name: str) -> None:
    """The env, hostname and command one container got (``GET /pods/NS/NAME``)."""
    pod = (await api.get(f"/pods/{namespace}/{name}")).json()
    container = pod["containers"][0]
    table = Table(
        title=f"{namespace}/{name} {container['name']}: hostname {container.get('hostname', '')}, "
        f"pod IP {pod['podIP']}, command {' '.join(container.get('command', []))}"
    )
    table.add_column("env")
    table.add_column("value", overflow="fold")
    for item in container.get("env", []):
        table.add_row(escape(item["name"]), escape(item["value"]))
    console.print(table)


async def _reason(api: httpx.AsyncClient, namespace: str, name: str) -> str:
    pod = (await api.get(f"/pods/{namespace}/{name}")).json()
    waiting = pod.get("containers", [{}])[0].get("state", {}).get("waiting", {})
    return str(waiting.get("reason", ""))


async def _report(api: httpx.AsyncClient, console: Console, round_no: int) -> None:
    table = Table(title="pods (GET /pods/NS/NAME)")
    for column in ("pod", "container", "state", "reason / image", "attempts", "message"):
        table.add_column(column, overflow="fold")
    for pod in (await api.get("/pods")).json()["items"]:
        detail = (await api.get(f"/pods/{pod['namespace']}/{pod['name']}")).json()
        for c in detail["initContainers"] + detail["containers"]:
            state = c["state"]
            if "running" in state:
                row = ("running", short_digest(c["imageID"]), "")
            elif "terminated" in state:
                done = state["terminated"]
                row = ("terminated", done["reason"], f"exit code {done['exitCode']}")
            else:
                row = ("waiting", state["waiting"]["reason"], state["waiting"]["message"])
            table.add_row(
                f"{pod['namespace']}/{pod['name']}",
                c["name"],
                row[0],
                escape(row[1]),
                str(c["pullAttempts"]),
                escape(row[2]),  # messages quote commands: "[/bin/false]" is not markup
            )
    console.print(table)
    events = Table(title="events (GET /events)")
    for column in ("type", "reason", "object", "count", "message"):
        events.add_column(column, overflow="fold")
    for e in (await api.get("/events")).json()["items"]:
        obj = e["involvedObject"]
        events.add_row(
            e["type"],
            e["reason"],
            f"{obj['name']}/{obj['fieldPath']}",
            str(e["count"]),
            escape(e["message"]),
        )
    console.print(events)
    if round_no == 1:
        images = Table(title="node images (GET /images, like crictl images)")
        for column in ("repository", "tag", "image id", "platform", "size"):
            images.add_column(column)
        for image in (await api.get("/images")).json()["items"]:
            images.add_row(
                image["repository"],
                image["tag"],
                short_digest(image["imageID"]),
                image["platform"],
                f"{image['size']:,}",
            )
        console.print(images)
    metrics = (await api.get("/metrics")).text
    wanted = (
        'kubelet_runtime_operations_total{operation_type="pull_image"}',
        'kubelet_runtime_operations_errors_total{operation_type="pull_image"}',
        "kubelet_sim_pull_bytes_total",
        "kubelet_sim_image_cache_hits_total",
    )
    lines = [line for line in metrics.splitlines() if line.startswith(wanted)]
    console.print("metrics (GET /metrics):\n  " + "\n  ".join(lines))
