"""The Kubernetes API's cost at scale: N pods on one daemon, kubectl and watches against it.

Starts the daemon in-process on a loopback port, creates N pods through ``POST
/api/v1/namespaces/bench/pods`` (imagePullPolicy Never with absent images: every pod settles in
``ErrImageNeverPull`` without a registry, so the figures are the API's, not the pulls'), then
measures, at stated scale:

- **create**: pods created per second through the REST path (each a JSON body, admission, the
  store's write and the engine's submit);
- **status manager**: one pass of :meth:`Daemon.sync_statuses` over all pods when nothing
  changed (it runs every 0.5 s; this is its standing cost);
- **list**: ``GET .../pods`` as kubectl asks for it (a Table), median of 10, and the JSON list;
- **kubectl get pods**: the real client's wall time against the daemon (discovery cached), next
  to ``kubectl version --client`` as its floor (the client's own start-up);
- **watch fan-out**: W watchers, then N more pods: the time until every watcher has seen every
  ADDED event, and the daemon's RSS growth over the run.

    .venv/bin/python benchmarks/kubeapi.py [--pods 1000] [--watchers 50]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import anyio
import anyio.abc
import httpx

from kubelet_sim.cli.commands.kubeconfig import kubeconfig
from kubelet_sim.cli.main import configure_logging
from kubelet_sim.config.kubelet import parse_kubelet_config
from kubelet_sim.node.daemon import Daemon, DaemonOptions

CONFIG = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
PODS = "/api/v1/namespaces/bench/pods"


def pod(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench"}},
        "spec": {
            "containers": [
                {"name": "app", "image": "127.0.0.1:1/absent:1.0", "imagePullPolicy": "Never"}
            ]
        },
    }


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def create(api: httpx.AsyncClient, prefix: str, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        answer = await api.post(PODS, json=pod(f"{prefix}-{i}"))
        answer.raise_for_status()
    return time.perf_counter() - started


async def median_get(api: httpx.AsyncClient, accept: str) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(10):
        started = time.perf_counter()
        answer = await api.get(PODS, headers={"accept": accept})
        answer.raise_for_status()
        times.append(time.perf_counter() - started)
        size = len(answer.content)
    return statistics.median(times), size


async def kubectl_times(url: str, work: Path) -> tuple[float, float] | None:
    binary = shutil.which("kubectl")
    if binary is None:
        return None
    config = work / "kubeconfig"
    config.write_text(kubeconfig(url))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(work), "KUBECONFIG": str(config)}

    async def timed(*args: str) -> float:
        started = time.perf_counter()
        done = await anyio.run_process([binary, *args], env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed: {done.stderr.decode()}")
        return time.perf_counter() - started

    await timed("get", "pods", "-n", "bench")  # fills the discovery cache
    get = statistics.median([await timed("get", "pods", "-n", "bench") for _ in range(5)])
    floor = statistics.median([await timed("version", "--client") for _ in range(5)])
    return get, floor


async def watch_fanout(api: httpx.AsyncClient, port: int, watchers: int, count: int) -> float:
    """Each watcher is a bare socket that counts ADDED events in the chunked stream (a cheap
    client, so the figure is the server's, not the client's parsing)."""
    since = (await api.get(PODS)).json()["metadata"]["resourceVersion"]
    target = f"{PODS}?watch=true&resourceVersion={since}&labelSelector=batch%3Dtwo"
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n"
    marker = b'{"type":"ADDED"'
    seen = [0] * watchers
    done = anyio.Event()

    async def watch(index: int, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(request.encode())
            task_status.started()
            tail = b""
            while seen[index] < count:
                data = tail + await stream.receive(65536)
                seen[index] += data.count(marker)
                tail = data[-len(marker) :]  # a marker split across reads is counted once
                seen[index] -= tail.count(marker)
            if all(s >= count for s in seen):
                done.set()

    async with anyio.create_task_group() as tg:
        for index in range(watchers):
            await tg.start(watch, index)
        started = time.perf_counter()
        for i in range(count):
            doc = pod(f"two-{i}")
            doc["metadata"]["labels"] = {"batch": "two"}  # type: ignore[index]
            (await api.post(PODS, json=doc)).raise_for_status()
        created = time.perf_counter() - started
        with anyio.fail_after(120):
            await done.wait()
        elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    print(f"  (the {count} creates themselves took {created:.2f} s)")
    return elapsed


async def main(pods: int, watchers: int) -> None:
    configure_logging("error")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        daemon = Daemon(
            DaemonOptions(
                config=parse_kubelet_config(CONFIG),
                root=work / "root",
                listen_port=0,
                node_name="bench",
            )
        )
        async with anyio.create_task_group() as tg:
            port = await tg.start(daemon.run)
            url = f"http://127.0.0.1:{port}"
            limits = httpx.Limits(max_connections=watchers + 8)
            async with httpx.AsyncClient(base_url=url, trust_env=False, limits=limits) as api:
                rss_before = rss_mib()
                seconds = await create(api, "one", pods)
                print(f"create: {pods} pods in {seconds:.2f} s ({pods / seconds:.0f} pods/s)")
                await anyio.sleep(1.0)  # their statuses settle (ErrImageNeverPull)
                passes = []
                for _ in range(10):
                    started = time.perf_counter()
                    daemon.sync_statuses()
                    passes.append(time.perf_counter() - started)
                print(
                    f"status manager: one pass over {pods} unchanged pods "
                    f"{statistics.median(passes) * 1000:.1f} ms (every 0.5 s)"
                )
                table, table_size = await median_get(api, TABLE)
                listed, list_size = await median_get(api, "application/json")
                print(
                    f"list {pods} pods: Table {table * 1000:.1f} ms ({table_size // 1024} KiB), "
                    f"JSON {listed * 1000:.1f} ms ({list_size // 1024} KiB)"
                )
                times = await kubectl_times(url, work)
                if times is None:
                    print("kubectl get pods: kubectl not installed, skipped")
                else:
                    get, floor = times
                    print(
                        f"kubectl get pods ({pods} pods): {get * 1000:.0f} ms; kubectl version "
                        f"--client {floor * 1000:.0f} ms; ratio {get / floor:.2f}"
                    )
                fanout = await watch_fanout(api, port, watchers, pods)
                print(
                    f"watch fan-out: {watchers} watchers each saw {pods} new pods "
                    f"{fanout:.2f} s after the first create ({watchers * pods} events)"
                )
                print(f"RSS (max): {rss_mib():.0f} MiB, +{rss_mib() - rss_before:.0f} MiB")
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--watchers", type=int, default=50)
    args = parser.parse_args()
    anyio.run(main, args.pods, args.watchers)
