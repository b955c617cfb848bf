"""Shared pytest configuration: the anyio backend default and the real-registry fixtures.

The registry fixtures start the real CNCF distribution registry (``docker-registry serve``) on a free
loopback port with storage in a temporary folder. If the binary is missing, tests that need it FAIL
with the install hint; they are skipped only when ``KUBELET_SIM_SKIP_REGISTRY_TESTS=1`` is set
(an explicit opt-out that CI never sets).
"""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from kubelet_sim.cli.main import configure_logging
from kubelet_sim.sim.registry import (
    HTPASSWD_USERS,
    INSTALL_HINT,
    REGISTRY_BINARY,
    RegistryConfig,
    RegistryFactory,
    RegistryProcess,
    TLSConfig,
    write_htpasswd,
)
from kubelet_sim.sim.tls import TLSMaterial, make_tls_material

SKIP_ENV = "KUBELET_SIM_SKIP_REGISTRY_TESTS"


def pytest_configure(config: pytest.Config) -> None:
    """Collect cyclic garbage less often than CPython's default (every 700 net allocations).

    A run makes millions of short-lived objects (hypothesis data, parametrize tables, log event
    dicts) while holding every test module and item, so the default spent about 2.5 s of the unit
    run in the collector, mostly in full collections walking that long-lived heap; at 10,000 it
    spends about 1 s. Cycles are still collected, a little later. (``gc.freeze()`` after collection
    saves about as much, but hides the frozen objects from ``gc.get_referrers``, which makes
    hypothesis' ``register_random`` warn falsely when hypothesis is first imported after it.)
    """
    gc.set_threshold(10_000, 10, 10)


@pytest.fixture(autouse=True)
def _test_logging() -> None:
    """Library log lines go to stderr as JSON at debug level, reset before every test: a CLI test
    that configures a higher level must not hide log lines from the next test's capture_logs()."""
    configure_logging("debug", json_lines=True)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio unless a module overrides this (trio's MockClock for virtual time)."""
    return "asyncio"


def _require_registry_binary() -> None:
    if shutil.which(REGISTRY_BINARY) is None:
        if os.environ.get(SKIP_ENV) == "1":
            pytest.skip(f"{SKIP_ENV}=1 and {INSTALL_HINT}")
        pytest.fail(INSTALL_HINT, pytrace=False)


@pytest.fixture(scope="session")
def registry_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryFactory]:
    """Start registries from composable configs; all are stopped at the end of the session.

    Call it with keyword fields of :class:`RegistryConfig` (``tls=``, ``htpasswd=``, ``token=``,
    ``redirect_baseurl=``); storage goes to a fresh temporary folder unless ``storage_dir`` is given.
    """
    started: list[RegistryProcess] = []

    def start(**fields: object) -> RegistryProcess:
        _require_registry_binary()
        workdir = tmp_path_factory.mktemp("registry")
        storage = fields.pop("storage_dir", workdir / "storage")
        config = replace(RegistryConfig(storage_dir=Path(str(storage))), **fields)  # type: ignore[arg-type]
        process = RegistryProcess(config, workdir).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def registry(registry_factory: RegistryFactory) -> RegistryProcess:
    """A plain-HTTP registry without auth, shared by the session (use unique repository names)."""
    return registry_factory()


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TLSMaterial:
    """A self-signed CA and a server certificate for 127.0.0.1."""
    return make_tls_material(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def htpasswd_registry(
    registry_factory: RegistryFactory,
    tls_material: TLSMaterial,
    tmp_path_factory: pytest.TempPathFactory,
) -> RegistryProcess:
    """A registry with htpasswd basic auth over TLS (CA in ``tls_material.ca_cert``)."""
    htpasswd = write_htpasswd(tmp_path_factory.mktemp("htpasswd") / "htpasswd", HTPASSWD_USERS)
    return registry_factory(
        htpasswd=htpasswd,
        tls=TLSConfig(tls_material.server_cert, tls_material.server_key),
    )
