"""Credential provider plugins: config validation, exec protocol, cache, timeouts, bad answers."""

from __future__ import annotations

import json
import os
import shlex
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from kubelet_sim.credentials.metrics import CredentialMetrics
from kubelet_sim.credentials.plugin_config import (
    CredentialProvider,
    ExecEnvVar,
    load_credential_provider_config,
    parse_credential_provider_config,
)
from kubelet_sim.credentials.plugins import PluginProvider, decode_response
from kubelet_sim.errors import ConfigError

V1 = "credentialprovider.kubelet.k8s.io/v1"
PLUGIN_PASSWORD = "plugin-Pa55-SECRET"


def write_plugin(bin_dir: Path, name: str, body: str) -> Path:
    """An executable Python plugin; ``body`` sees ``request`` (the decoded stdin) and ``argv``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        "request = json.load(sys.stdin)\n"
        "argv = sys.argv[1:]\n" + textwrap.dedent(body)
    )
    path.chmod(0o755)
    return path


def answer(
    auth: dict[str, dict[str, str]],
    *,
    key_type: str = "Registry",
    duration: str | None = "1h",
    api_version: str = V1,
) -> str:
    doc: dict[str, object] = {
        "kind": "CredentialProviderResponse",
        "apiVersion": api_version,
        "cacheKeyType": key_type,
        "auth": auth,
    }
    if duration is not None:
        doc["cacheDuration"] = duration
    return f"print({json.dumps(json.dumps(doc))})\n"


def provider(
    name: str = "test-plugin",
    match: tuple[str, ...] = ("*.example.com", "registry.local:5000"),
    *,
    default_cache: float = 600.0,
    args: tuple[str, ...] = (),
) -> CredentialProvider:
    return CredentialProvider(name, match, default_cache, V1, args)


GOOD = """
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps({"request": request, "argv": argv, "env": os.environ.get("PLUGIN_ENV")}) + "\\n")
"""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_exec_protocol_args_env_and_registry_cache(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    body = GOOD + answer({"*.example.com": {"username": "u", "password": PLUGIN_PASSWORD}})
    write_plugin(tmp_path / "bin", "test-plugin", body)
    clock = Clock()
    config = replace(
        provider(args=("get-credentials", "--v=2")),
        env=(ExecEnvVar("PLUGIN_ENV", "from-config"),),
    )
    plugin = PluginProvider(
        config, tmp_path / "bin", clock=clock, environ={**os.environ, "RECORD": str(record)}
    )
    got = await plugin.provide("a.example.com/team/app")
    assert got["*.example.com"].password == PLUGIN_PASSWORD
    (line,) = record.read_text().splitlines()
    seen = json.loads(line)
    assert seen["request"] == {
        "kind": "CredentialProviderRequest",
        "apiVersion": V1,
        "image": "a.example.com/team/app",
    }
    assert seen["argv"] == ["get-credentials", "--v=2"]
    assert seen["env"] == "from-config"
    # Registry cache key: another repository on the same host is answered from the cache.
    assert await plugin.provide("a.example.com/other") == got
    assert plugin.execs == 1
    clock.now += 3601  # past cacheDuration
    await plugin.provide("a.example.com/other")
    assert plugin.execs == 2


@pytest.mark.parametrize(
    ("key_type", "duration", "default_cache", "second_image", "execs"),
    [
        pytest.param("Image", "1h", 600.0, "a.example.com/app", 1, id="image-same"),
        pytest.param("Image", "1h", 600.0, "a.example.com/other", 2, id="image-other"),
        pytest.param("Global", "1h", 600.0, "b.example.com/x", 1, id="global"),
        pytest.param("Registry", "0s", 600.0, "a.example.com/app", 2, id="duration-zero"),
        pytest.param("Registry", None, 600.0, "a.example.com/app", 1, id="default-duration"),
        pytest.param("Registry", None, 0.0, "a.example.com/app", 2, id="default-zero"),
    ],
)
@pytest.mark.anyio
async def test_cache_key_types_and_durations(
    tmp_path: Path,
    key_type: str,
    duration: str | None,
    default_cache: float,
    second_image: str,
    execs: int,
) -> None:
    body = answer(
        {"*.example.com": {"username": "u", "password": "p"}}, key_type=key_type, duration=duration
    )
    write_plugin(tmp_path / "bin", "test-plugin", body)
    plugin = PluginProvider(provider(default_cache=default_cache), tmp_path / "bin")
    assert await plugin.provide("a.example.com/app")
    assert await plugin.provide(second_image)
    assert plugin.execs == execs


@pytest.mark.anyio
async def test_images_outside_match_images_never_exec(tmp_path: Path) -> None:
    write_plugin(tmp_path / "bin", "test-plugin", "raise SystemExit(3)\n")
    plugin = PluginProvider(provider(), tmp_path / "bin")
    for image in ("example.com/app", "registry.local/app", "registry.local:5001/app"):
        assert await plugin.provide(image) == {}
    assert plugin.execs == 0


@pytest.mark.anyio
async def test_identical_concurrent_requests_share_one_exec(tmp_path: Path) -> None:
    # The exec outlasts the four requests' start-up by far (they all start before it is spawned).
    body = "time.sleep(0.1)\n" + answer({"registry.local:5000": {"username": "u", "password": "p"}})
    write_plugin(tmp_path / "bin", "test-plugin", body)
    plugin = PluginProvider(provider(), tmp_path / "bin")
    results = []

    async def one() -> None:
        results.append(await plugin.provide("registry.local:5000/app"))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(one)
    assert plugin.execs == 1
    assert all(r == results[0] and r for r in results)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_a_cancelled_first_request_hands_the_exec_over_to_a_waiter(tmp_path: Path) -> None:
    """The caller whose exec others wait for is cancelled: a waiter must not get ``{}`` (no
    credentials, so an anonymous pull) but run the plugin itself and get its answer."""
    started = tmp_path / "started"
    body = (
        f"if not os.path.exists({str(started)!r}):\n"
        f"    open({str(started)!r}, 'w').close()\n"
        "    time.sleep(60)\n"
        + answer({"registry.local:5000": {"username": "u", "password": PLUGIN_PASSWORD}})
    )
    write_plugin(tmp_path / "bin", "test-plugin", body)
    plugin = PluginProvider(provider(), tmp_path / "bin")
    image = "registry.local:5000/app"
    results = []

    async def waiter() -> None:
        results.append(await plugin.provide(image))

    async with anyio.create_task_group() as tg:
        first = anyio.CancelScope()

        async def first_request() -> None:
            with first:
                await plugin.provide(image)

        tg.start_soon(first_request)
        with anyio.fail_after(30):
            while not started.exists():  # noqa: ASYNC110 - a subprocess gives no event to await
                await anyio.sleep(0.01)
        tg.start_soon(waiter)
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert plugin._execs.statistics().waiting == 2  # both wait for the first exec
        first.cancel()
    assert first.cancelled_caught
    assert len(results) == 2
    assert all(r["registry.local:5000"].password == PLUGIN_PASSWORD for r in results)
    assert plugin.execs == 2  # the cancelled exec and one take-over shared by both waiters


SLOW_PLUGIN = "time.sleep(30)\n"
FAILURES = [
    pytest.param(SLOW_PLUGIN, "context deadline exceeded", True, id="slow-plugin-timeout"),
    pytest.param(f"print('garbage {PLUGIN_PASSWORD}')\n", "error reading GVK", False, id="garbage"),
    pytest.param(
        f"sys.stderr.write('{PLUGIN_PASSWORD}')\nsys.exit(2)\n", "exit status 2", True, id="exit"
    ),
    pytest.param(
        answer({"r": {"username": "u", "password": PLUGIN_PASSWORD}}, api_version="v9"),
        "did not match expected apiVersion",
        False,
        id="api-version-mismatch",
    ),
    pytest.param(
        answer({"r": {"username": "u", "password": PLUGIN_PASSWORD}}, key_type="Forever"),
        "did not return a valid cacheKeyType",
        False,
        id="bad-cache-key-type",
    ),
    pytest.param(
        "print(json.dumps({'kind': 'CredentialProviderResponse', 'apiVersion': '"
        + V1
        + "', 'cacheKeyType': 'Image', 'auth': {}, 'extra': '"
        + PLUGIN_PASSWORD
        + "'}))\n",
        "error decoding credential provider plugin response",
        False,
        id="unknown-field",
    ),
]


@pytest.mark.parametrize(("body", "message", "counted"), FAILURES)
@pytest.mark.anyio
async def test_failures_give_no_credentials_a_log_and_never_the_output(
    tmp_path: Path, body: str, message: str, counted: bool
) -> None:
    write_plugin(tmp_path / "bin", "test-plugin", body)
    registry = CollectorRegistry()
    metrics = CredentialMetrics(registry)
    # A short timeout only for the plugin that must time out (it sleeps 30 s, so any timeout is hit);
    # the others must fail for their own reason even when a loaded machine is slow to start their
    # interpreter.
    timeout = 0.2 if body == SLOW_PLUGIN else 30.0
    plugin = PluginProvider(provider(), tmp_path / "bin", timeout=timeout, metrics=metrics)
    started = anyio.current_time()
    with capture_logs() as logs:
        assert await plugin.provide("registry.local:5000/app") == {}
    assert anyio.current_time() - started < 10  # the slow plugin was killed at the timeout
    (failure,) = [e for e in logs if e["event"] == "credential_provider.failed"]
    assert message in failure["error"]
    assert failure["plugin"] == "test-plugin"
    assert PLUGIN_PASSWORD not in repr(logs)
    errors = registry.get_sample_value(
        "kubelet_credential_provider_plugin_errors_total", {"plugin_name": "test-plugin"}
    )
    assert (errors or 0) == (1 if counted else 0)
    duration = registry.get_sample_value(
        "kubelet_credential_provider_plugin_duration_count", {"plugin_name": "test-plugin"}
    )
    assert duration == 1
    assert plugin.execs == 1


@pytest.mark.anyio
async def test_a_plugin_past_its_timeout_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    # A shell plugin: it has written its pid within a few milliseconds of the spawn, far inside
    # the timeout even on a loaded machine (a Python one needs its interpreter start first), and
    # ``exec`` keeps that pid for the process that outlives the timeout.
    plugin_path = tmp_path / "bin" / "test-plugin"
    plugin_path.parent.mkdir(parents=True)
    plugin_path.write_text(f"#!/bin/sh\necho $$ > {shlex.quote(str(pid_file))}\nexec sleep 60\n")
    plugin_path.chmod(0o755)
    plugin = PluginProvider(provider(), tmp_path / "bin", timeout=0.3)
    assert await plugin.provide("registry.local:5000/app") == {}
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_decode_response_reads_entries() -> None:
    raw = json.dumps(
        {
            "kind": "CredentialProviderResponse",
            "apiVersion": V1,
            "cacheKeyType": "Image",
            "cacheDuration": "90s",
            "auth": {"r.io": {"username": "u", "password": "p"}},
        }
    ).encode()
    response = decode_response(raw, V1)
    assert (response.cache_key_type, response.cache_duration) == ("Image", 90.0)
    assert response.auth["r.io"].username == "u"
    assert "'p'" not in repr(response)


CONFIG = """
apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: ecr-credential-provider
    matchImages: ["*.dkr.ecr.*.amazonaws.com", "registry.io:8080/path"]
    defaultCacheDuration: "12h"
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    args: ["get-credentials"]
    env:
      - name: AWS_PROFILE
        value: secret-profile
"""


def test_config_parses() -> None:
    (parsed,) = parse_credential_provider_config(CONFIG.encode(), source="c.yaml")
    assert parsed.name == "ecr-credential-provider"
    assert parsed.match_images == ("*.dkr.ecr.*.amazonaws.com", "registry.io:8080/path")
    assert parsed.default_cache_duration == 12 * 3600
    assert parsed.args == ("get-credentials",)
    assert parsed.env[0].name == "AWS_PROFILE"
    assert "secret-profile" not in repr(parsed)


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        pytest.param(
            ("  - name: ecr-credential-provider", "  - name: a/b"),
            "providers[0].name",
            "cannot contain '/'",
            id="slash-in-name",
        ),
        pytest.param(
            (
                'matchImages: ["*.dkr.ecr.*.amazonaws.com", "registry.io:8080/path"]',
                "matchImages: []",
            ),
            "providers[0].matchImages",
            "at least 1 item in matchImages is required",
            id="no-match-images",
        ),
        pytest.param(
            ('defaultCacheDuration: "12h"', 'defaultCacheDuration: "-1s"'),
            "providers[0].defaultCacheDuration",
            "greater than or equal to 0",
            id="negative-duration",
        ),
        pytest.param(
            ('defaultCacheDuration: "12h"', 'defaultCacheDuration: "12"'),
            "providers[0].defaultCacheDuration",
            "missing unit",
            id="bad-duration",
        ),
        pytest.param(
            (
                "apiVersion: credentialprovider.kubelet.k8s.io/v1",
                "apiVersion: credentialprovider.kubelet.k8s.io/v2",
            ),
            "providers[0].apiVersion",
            "Unsupported value",
            id="bad-plugin-api",
        ),
        pytest.param(
            ("kind: CredentialProviderConfig", "kind: Other"), "kind", "wrong Kind", id="wrong-kind"
        ),
        pytest.param(("    args:", "    argz:"), "providers[0].argz", "unknown field", id="strict"),
        pytest.param(
            ("    args:", "    tokenAttributes: {serviceAccountTokenAudience: a}\n    args:"),
            "providers[0].tokenAttributes",
            "not supported",
            id="token-attributes",
        ),
    ],
)
def test_config_validation(change: tuple[str, str], field: str, message: str) -> None:
    text = CONFIG.replace(*change)
    assert text != CONFIG
    with pytest.raises(ConfigError, match=message) as info:
        parse_credential_provider_config(text.encode(), source="c.yaml")
    assert info.value.field == field


def test_config_folder_merges_in_lexical_order_and_refuses_duplicates(tmp_path: Path) -> None:
    folder = tmp_path / "conf.d"
    folder.mkdir()
    (folder / "b.yaml").write_text(CONFIG)
    (folder / "a.json").write_text(
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "CredentialProviderConfig",
                "providers": [
                    {
                        "name": "first",
                        "matchImages": ["r.io"],
                        "defaultCacheDuration": "0s",
                        "apiVersion": V1,
                    }
                ],
            }
        )
    )
    (folder / "ignored.txt").write_text("not read")
    config = load_credential_provider_config(folder)
    assert [p.name for p in config.providers] == ["first", "ecr-credential-provider"]
    assert config.config_hash.startswith("sha256:")
    assert config.config_hash != load_credential_provider_config(folder / "b.yaml").config_hash
    (folder / "c.yml").write_text(CONFIG)
    with pytest.raises(ConfigError, match='duplicate provider name "ecr-credential-provider"'):
        load_credential_provider_config(folder)


def test_missing_executable_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    with pytest.raises(ConfigError, match="did not exist"):
        PluginProvider(provider(), tmp_path / "bin")
    with pytest.raises(ConfigError, match="directory did not exist"):
        PluginProvider(provider(), tmp_path / "nowhere")
