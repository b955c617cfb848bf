"""The registry under test, checked before a bench run starts.

A load test against a real target must fail fast and say why: a registry that is not reachable,
or (``--no-seed``: the images must already be there) images the workload declares that the
registry does not have, each named, before any node starts. The check resolves each declared
reference as a node would, anonymously and then with each of the workload's pull secrets when
the registry wants credentials; no credential is ever shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio

from kubelet_sim import __version__
from kubelet_sim.core.credentials import Credentials
from kubelet_sim.core.reference import parse_normalized
from kubelet_sim.credentials.dockerconfig import read_docker_config_file
from kubelet_sim.credentials.keyring import BasicKeyring
from kubelet_sim.errors import (
    ConfigError,
    KubeletSimError,
    RegistryAuthError,
    RegistryNotFoundError,
    RegistryTransportError,
    first_error,
)
from kubelet_sim.registry.client import RegistryClient
from kubelet_sim.registry.transport import Transport, TransportSettings
from kubelet_sim.workloads.spec import Workload

__all__ = ["SHOWN", "TargetError", "check_images", "push_credentials", "unreachable"]

SHOWN = 10
"""Missing images named in the error (the rest counted)."""
CONCURRENCY = 8
QUICK = TransportSettings(
    connect_timeout=5.0,
    header_timeout=10.0,
    max_attempts=2,
    user_agent=f"kubelet-sim-preflight/{__version__}",
)
"""Short waits; a User-Agent of its own, so the registry's log tells these requests from the
simulated kubelets' traffic (``kubelet-sim/...``)."""


class TargetError(KubeletSimError):
    """The registry under test cannot serve the run."""


def unreachable(host: str, exc: RegistryTransportError) -> TargetError:
    """``registry HOST is not reachable: <containerd's wording of why>``."""
    return TargetError(f"registry {host} is not reachable: {exc.message}")


async def check_images(workload: Workload, host: str) -> int:
    """Resolve every reference the workload declares on ``host``; the number checked.

    Raises:
        TargetError: the registry is not reachable, refuses every credential the workload
            has, or lacks some of the images (each named).
    """
    refs = workload.references()
    creds: list[Credentials | None] = [None]
    creds += [Credentials(s.username, s.password) for s in workload.secrets if s.username]
    missing: list[str] = []
    refused: list[str] = []
    limiter = anyio.CapacityLimiter(CONCURRENCY)
    failure: TargetError | None = None
    async with RegistryClient(Transport(settings=QUICK), hosts_dir=workload.hosts_dir) as client:

        async def one(ref: str) -> None:
            async with limiter:
                outcome = await _resolve(client, f"{host}/{ref}", creds)
            if outcome == "missing":
                missing.append(ref)
            elif outcome == "refused":
                refused.append(ref)

        try:
            async with anyio.create_task_group() as tg:
                for ref in refs:
                    tg.start_soon(one, ref)
        except* RegistryTransportError as group:
            # Raised below, not here: see registry.client.run_limited (Python 3.11.2).
            first = first_error(group)
            assert isinstance(first, RegistryTransportError)
            failure = unreachable(host, first)
    if failure is not None:
        raise failure
    if refused:
        raise TargetError(
            f"registry {host} refused the workload's credentials for {_names(refused)}: give "
            "the workload a pull secret (secrets: with passwordEnv) that may pull them"
        )
    if missing:
        raise TargetError(
            f"--no-seed: registry {host} lacks {len(missing)} of the workload's "
            f"{len(refs)} images: {_names(missing)}; push them (kubelet-sim seed WORKLOAD "
            f"--registry {host}) or run without --no-seed"
        )
    return len(refs)


def push_credentials(
    workload: Workload, host: str, docker_config: Path | None = None
) -> Credentials | None:
    """What seeding pushes with: the ``docker_config`` entry for ``host`` (as ``docker push``
    would pick it), else the workload's first pull secret with a user name, else none.

    Raises:
        ConfigError: the docker config cannot be read, or has no entry for ``host``.
    """
    if docker_config is not None:
        try:
            entries = read_docker_config_file(docker_config)
        except OSError as exc:
            raise ConfigError(str(docker_config), None, exc.strerror or "cannot be read") from None
        keyring = BasicKeyring()
        keyring.add(None, entries)
        found = keyring.lookup(f"{host}/seed")
        if not found:
            raise ConfigError(str(docker_config), "auths", f"no credentials for {host}")
        return found[0]
    for secret in workload.secrets:
        if secret.username:
            return Credentials(secret.username, secret.password)
    return None


async def _resolve(client: RegistryClient, ref: str, creds: Sequence[Credentials | None]) -> str:
    """``ok``, ``missing`` or ``refused``, trying each credential on a refusal."""
    parsed = parse_normalized(ref)
    for one in creds:
        try:
            await client.resolve(parsed, one)
        except RegistryNotFoundError:
            return "missing"
        except RegistryAuthError:
            continue
        return "ok"
    return "refused"


def _names(refs: list[str]) -> str:
    shown = ", ".join(sorted(refs)[:SHOWN])
    return shown + (f" and {len(refs) - SHOWN} more" if len(refs) > SHOWN else "")
