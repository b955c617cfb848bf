"""What the ``explain pod`` tests share: a daemon in-process with a client for its API and the
checks the tests wait on, and the ``private`` image fixture."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from credential_world import ALIAS, ALICE, alias_hosts_dir, seed_private, unique

from kubelet_sim.config.kubelet import parse_kubelet_config
from kubelet_sim.node.daemon import Daemon, DaemonOptions
from kubelet_sim.sim.registry import RegistryProcess
from kubelet_sim.sim.tls import TLSMaterial

CONFIG = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Node:
    """A running daemon and a client for its API."""

    daemon: Daemon
    api: httpx.AsyncClient
    url: str

    async def apply(self, *texts: str) -> None:
        response = await self.api.post("/apply", content="---\n".join(texts).encode())
        assert response.status_code == 200, response.text

    async def explain(self, namespace: str, name: str) -> Doc:
        response = await self.api.get(f"/pods/{namespace}/{name}/explain")
        assert response.status_code == 200, response.text
        doc: Doc = response.json()
        return doc

    async def wait(
        self,
        namespace: str,
        name: str,
        check: Callable[[Doc], bool],
        timeout: float = 30,  # noqa: ASYNC109
        index: int = 0,
    ) -> Doc:
        """Poll the explanation until ``check`` holds on container ``index``."""
        doc: Doc = {}
        try:
            with anyio.fail_after(timeout):
                while True:
                    doc = await self.explain(namespace, name)
                    if check(doc["containers"][index]):
                        return doc["containers"][index]  # type: ignore[no-any-return]
                    await anyio.sleep(0.05)  # a daemon's state behind its API: polled
        except TimeoutError:
            pytest.fail(f"{namespace}/{name} never got there: {json.dumps(doc, indent=1)}")


@asynccontextmanager
async def daemon(tmp_path: Path, config: str = "", **options: Any) -> AsyncIterator[Node]:
    """A daemon on a free loopback port (node ``node-1``), stopped when the block ends."""
    node = Daemon(
        DaemonOptions(
            config=parse_kubelet_config(CONFIG + config),
            root=tmp_path / "root",
            listen_port=0,
            node_name="node-1",
            **options,
        )
    )
    async with anyio.create_task_group() as tg:
        port = await tg.start(node.run)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as api:
            yield Node(node, api, url)
        tg.cancel_scope.cancel()


def failed(c: Doc) -> bool:
    """The container has a finished, failed pull."""
    return bool(c["pulls"]) and c["pulls"][-1]["result"] != "Pulled"


def pulled(c: Doc) -> bool:
    """The container is fine and pulled its image."""
    return bool(c["ok"]) and bool(c["pulls"])


@pytest.fixture
async def private(
    htpasswd_registry: RegistryProcess, tls_material: TLSMaterial, tmp_path: Path
) -> tuple[str, Path]:
    """A private image as ``myregistry.io/...`` and the certs.d folder that reaches it."""
    repository = unique("why")
    await seed_private(htpasswd_registry, repository, creds=ALICE)
    hosts = alias_hosts_dir(tmp_path / "certs.d", htpasswd_registry, tls_material.ca_cert)
    return f"{ALIAS}/{repository}:1.0", hosts
