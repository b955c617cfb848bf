"""Hostile credential, registry and CLI inputs (fuzzer reproducers): each is a typed error naming
the file or field, never a traceback, and never quotes a secret."""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from kubelet_sim.cli.commands import bench as bench_command
from kubelet_sim.core.credentials import Credentials
from kubelet_sim.credentials.dockerconfig import parse_config_json, parse_dockercfg
from kubelet_sim.credentials.plugin_config import (
    MAX_NESTING_DEPTH,
    CredentialProvider,
    ExecEnvVar,
    load_credential_provider_config,
    parse_credential_provider_config,
    plugin_executable,
)
from kubelet_sim.credentials.plugins import PluginProvider, _PluginFailed, decode_response
from kubelet_sim.errors import ConfigError, RegistryAuthError
from kubelet_sim.node.httpserver import parse_listen
from kubelet_sim.registry.auth import basic_header
from kubelet_sim.registry.boundary import parse_retry_after
from kubelet_sim.registry.hosts import registry_hosts
from kubelet_sim.workloads.compare import compare_markdown, compare_reports, load_report
from kubelet_sim.workloads.report import SCHEMA

SECRET = "s3cr3t-Pa55"
V1 = "credentialprovider.kubelet.k8s.io/v1"
HEAD = "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\n"


def provider_yaml(**fields: str) -> str:
    """A valid one-provider config, with ``fields`` replacing (or adding) provider keys."""
    values = {
        "name": "ecr",
        "matchImages": '["*.example.com"]',
        "defaultCacheDuration": '"12h"',
        "apiVersion": V1,
        **fields,
    }
    lines = [f"    {key}: {value}" for key, value in values.items()]
    return HEAD + "providers:\n  - " + "\n".join(lines).lstrip() + "\n"


def bomb(levels: int = 12) -> str:
    text = 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]\n'
    for n in range(1, levels):
        text += f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]\n"
    return HEAD + text


def config_error(data: str | bytes) -> ConfigError:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    with pytest.raises(ConfigError) as info:
        parse_credential_provider_config(raw, source="providers.yaml")
    assert str(info.value).startswith("providers.yaml")
    return info.value


# -- CredentialProviderConfig ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        pytest.param("[" * 487, None, "cannot parse", id="deep-flow-nesting"),
        pytest.param(
            "- " * 5000 + "x", None, f"more than {MAX_NESTING_DEPTH} levels", id="deep-block"
        ),
        pytest.param("5: {}", "5", 'unknown field "5"', id="int-key"),
        pytest.param("? [a]\n: b", None, "cannot parse", id="unhashable-key"),
        pytest.param(
            HEAD.replace("kubelet.config.k8s.io/v1", "{}"),
            "apiVersion",
            "unexpected apiVersion: <object>",
            id="apiversion-object",
        ),
        pytest.param("kind: !!binary bG8=", "kind", "<bytes>", id="binary-kind"),
        pytest.param("kind: &m {k: *m}", None, "alias refers to itself", id="recursive-alias"),
        pytest.param("kind: !!bool x", "kind", "invalid !!bool value", id="bad-bool-tag"),
        pytest.param("kind: !!timestamp x", "kind", "invalid !!timestamp", id="bad-timestamp-tag"),
        pytest.param("kind: 2001-13-01", "kind", "invalid !!timestamp", id="impossible-date"),
        pytest.param("kind: " + "1" * 5000, "kind", "integer out of range", id="huge-int"),
        pytest.param(bomb(), None, "excessive aliasing", id="alias-bomb"),
        pytest.param("kind: [\x00]", None, "control characters", id="nul-byte"),
        pytest.param(b"kind: \xff", None, "not UTF-8", id="not-utf8"),
        pytest.param(
            provider_yaml(args="0", env="8"),
            "providers[0].env",
            "list of {name, value}",
            id="args-and-env-int",
        ),
        pytest.param(
            provider_yaml(args="0"), "providers[0].args", "list of strings", id="args-int"
        ),
        pytest.param(
            provider_yaml(args='["x", "a\\0b"]'), "providers[0].args[1]", "NUL", id="nul-arg"
        ),
        pytest.param(
            provider_yaml(env='[{name: "A=B", value: v}]'),
            "providers[0].env[0].name",
            "'='",
            id="equals-in-env-name",
        ),
        pytest.param(
            provider_yaml(defaultCacheDuration="!!timestamp 2001-02-30"),
            "providers[0].defaultCacheDuration",
            "invalid !!timestamp",
            id="duration-bad-date",
        ),
        pytest.param(
            provider_yaml(matchImages="[*a]"), None, "undefined alias", id="undefined-alias"
        ),
    ],
)
def test_provider_config_hostile_is_a_config_error(
    text: str | bytes, field: str | None, message: str
) -> None:
    error = config_error(text)
    assert error.field == field
    assert message in str(error)


VALUE = "providers[0].env[0].value"


@pytest.mark.parametrize(
    ("value", "fields"),
    [
        pytest.param(f'"{SECRET}\\0"', (VALUE,), id="nul-in-value"),
        # libyaml refuses the escape itself; PyYAML's own parser builds the lone surrogate.
        pytest.param(f'"{SECRET}\\ud800"', (None, VALUE), id="surrogate-in-value"),
        pytest.param(f"!{SECRET} x", (None,), id="secret-as-tag"),
        pytest.param(f'"{SECRET}\\q"', (None,), id="bad-escape"),
        pytest.param(f"!!int {SECRET}", (VALUE,), id="int-tag"),
        pytest.param(f"!!timestamp {SECRET}", (VALUE,), id="timestamp-tag"),
    ],
)
def test_provider_config_errors_never_show_env_values(
    value: str, fields: tuple[str | None, ...]
) -> None:
    error = config_error(provider_yaml(env=f"[{{name: TOKEN, value: {value}}}]"))
    assert error.field in fields
    assert SECRET not in str(error)


def test_provider_config_surrogate_name_is_refused() -> None:
    error = config_error(provider_yaml(name='"a\\ud800"'))
    assert error.field in (None, "providers[0].name")
    assert "surrogate" in str(error) or "Unicode" in str(error)


def test_provider_config_load_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unable to read") as info:
        load_credential_provider_config(tmp_path / ("a" * 300))
    assert info.value.file == str(tmp_path / ("a" * 300))
    with pytest.raises(ConfigError, match="plugin binary executable") as info:
        plugin_executable(tmp_path, "p" * 300)
    assert info.value.file == str(tmp_path / ("p" * 300))


def test_provider_config_with_a_few_aliases_is_accepted() -> None:
    text = provider_yaml(matchImages='&m ["*.example.com"]') + textwrap.indent(
        '- name: other\n  matchImages: *m\n  defaultCacheDuration: "1h"\n  apiVersion: ' + V1,
        "  ",
    )
    first, second = parse_credential_provider_config(text.encode(), source="c.yaml")
    assert first.match_images == second.match_images == ("*.example.com",)


# -- plugin answers --------------------------------------------------------------------------


def plugin_answer(auth: dict[str, dict[str, str]]) -> bytes:
    doc = {"kind": "CredentialProviderResponse", "apiVersion": V1, "cacheKeyType": "Image"}
    return json.dumps({**doc, "auth": auth}).encode()


@pytest.mark.parametrize(
    "stdout",
    [
        pytest.param(b"[" * 978, id="deep-brackets"),
        pytest.param(b'{"apiVersion": ' + b"1" * 5000 + b"}", id="huge-int"),
        pytest.param(b'{"apiVersion": "\xff"}', id="not-utf8"),
        pytest.param(
            plugin_answer({"r.io": {"username": "u", "password": SECRET + "\ud800"}}),
            id="surrogate-password",
        ),
        pytest.param(plugin_answer({"r.io\ud800": {"password": SECRET}}), id="surrogate-key"),
        pytest.param(b'{"apiVersion": "' + SECRET.encode() + b'\\u0000"}', id="control-version"),
    ],
)
def test_plugin_answer_hostile_is_a_plugin_failure(stdout: bytes) -> None:
    with pytest.raises(_PluginFailed) as info:
        decode_response(stdout, V1)
    assert SECRET not in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "env", "args"),
    [
        pytest.param("print('[' * 978)", (), (), id="deep-answer"),
        pytest.param("print('{}')", (ExecEnvVar("A=B", SECRET),), (), id="env-name-with-equals"),
        pytest.param("print('{}')", (), (f"{SECRET}\0",), id="nul-in-arg"),
    ],
)
async def test_plugin_failures_give_no_credentials(
    tmp_path: Path, body: str, env: tuple[ExecEnvVar, ...], args: tuple[str, ...]
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    plugin = bin_dir / "p"
    plugin.write_text(f"#!{sys.executable}\nimport sys\nsys.stdin.read()\n{body}\n")
    plugin.chmod(0o755)
    config = CredentialProvider("p", ("*.example.com",), 60.0, V1, args, env)
    provider = PluginProvider(config, bin_dir, environ=dict(os.environ))
    with capture_logs() as logs:
        assert await provider.provide("a.example.com/app") == {}
    assert [entry["event"] for entry in logs] == ["credential_provider.failed"]
    assert SECRET not in repr(logs)


# -- docker config.json and basic auth -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        pytest.param(b"1" * 4301, None, "expected a JSON object", id="huge-int-document"),
        pytest.param(
            b'{"auths": {"r.io": {"password": ' + b"1" * 4301 + b"}}}",
            'auths["r.io"].password',
            "expected a string",
            id="huge-int-password",
        ),
        pytest.param(
            f'{{"auths": {{"r.io": {{"password": "{SECRET}\\ud800"}}}}}}'.encode(),
            'auths["r.io"].password',
            "lone surrogate",
            id="surrogate-password",
        ),
        pytest.param(
            b'{"auths": {"r.io": {"identitytoken": "\\udfff' + SECRET.encode() + b'"}}}',
            'auths["r.io"].identitytoken',
            "lone surrogate",
            id="surrogate-token",
        ),
        pytest.param(b"[" * 5000, None, "nested too deeply", id="deep-brackets"),
    ],
)
def test_docker_config_hostile_is_a_config_error(
    data: bytes, field: str | None, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_json(data, source="/root/.docker/config.json")
    assert info.value.field == field
    assert message in str(info.value)
    assert str(info.value).startswith("/root/.docker/config.json")
    assert SECRET not in str(info.value)


def test_docker_config_huge_int_in_an_ignored_field_is_skipped() -> None:
    entries = parse_config_json(b'{"x": ' + b"9" * 5000 + b', "auths": {"r.io": {}}}')
    assert list(entries) == ["r.io"]
    assert parse_dockercfg(b'{"r.io": {"email": "e", "x": ' + b"9" * 5000 + b"}}")["r.io"].email


@pytest.mark.parametrize(
    "creds",
    [
        pytest.param(Credentials("u", SECRET + "\ud800"), id="surrogate-password"),
        pytest.param(Credentials("\udc80u", SECRET), id="surrogate-username"),
    ],
)
def test_basic_auth_with_unencodable_credentials(creds: Credentials) -> None:
    with pytest.raises(RegistryAuthError, match="not valid Unicode") as info:
        basic_header(creds)
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None


# -- hosts.toml ------------------------------------------------------------------------------


def test_registry_name_too_long_for_a_folder(tmp_path: Path) -> None:
    registry = "a" * 256
    with pytest.raises(ConfigError, match="File name too long") as info:
        registry_hosts(registry, tmp_path)
    assert (info.value.file, info.value.field) == (str(tmp_path), "registry")


@pytest.mark.parametrize(
    "toml",
    [
        pytest.param("r=1" + "0" * 4300, id="huge-decimal"),
        pytest.param(
            'server = "https://r.io"\n[host."https://m.io"]\nx = ' + "9" * 5000, id="table"
        ),
    ],
)
def test_hosts_toml_huge_integer(tmp_path: Path, toml: str) -> None:
    folder = tmp_path / "r.io"
    folder.mkdir()
    (folder / "hosts.toml").write_text(toml)
    with pytest.raises(ConfigError, match="more than 4300 digits") as info:
        registry_hosts("r.io", tmp_path)
    assert info.value.file == str(folder / "hosts.toml")


# -- registry answers and CLI flags ----------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("Mon, 1 Jan 99999999999 00:00:00 GMT", id="year-overflow"),
        pytest.param("\xb2", id="superscript-two"),
        pytest.param("1\u0663", id="arabic-indic-digit"),
        pytest.param("Mon, 30 Feb 2024 00:00:00 GMT", id="impossible-date"),
    ],
)
def test_bad_retry_after_is_ignored(value: str) -> None:
    assert parse_retry_after(value, now=0.0) is None


def test_retry_after_digits() -> None:
    assert parse_retry_after(" 12 ", now=0.0) == 12.0
    assert parse_retry_after("9" * 5000, now=0.0) == float("inf")  # the caller caps it


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param("0:\xb2", "'0:\xb2'", id="superscript-port"),
        pytest.param("0:" + "9" * 5000, "'0:999", id="huge-port"),
        pytest.param("0:65536", "'0:65536'", id="port-out-of-range"),
        pytest.param("[::1]:-1", "'[::1]:-1'", id="negative-port"),
    ],
)
def test_listen_flag(value: str, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_listen(value)
    assert info.value.field == "--listen"
    assert shown in str(info.value)
    assert len(str(info.value)) < 300


def test_listen_flag_valid() -> None:
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("127.0.0.1:65535") == ("127.0.0.1", 65535)


# -- bench --compare -------------------------------------------------------------------------

REPORT: dict[str, Any] = {
    "schema": SCHEMA,
    "workload": {"name": "smoke"},
    "summary": {
        "nodes": 3, "pods_ready": 9, "makespan": 1.25, "arrival_lag": {"max": 0.02},
        "time_to_ready": {"p50": 0.087, "p90": 0.2, "p99": 0.241, "max": 0.3},
        "pulls": 13, "pull_errors": 4, "cache_hits": 2, "bytes_pulled": 8388608,
        "registry_requests": 56, "registry_retries": 0, "backoffs": 4,
        "peak_pulls_in_flight_max": 3, "resources": {"cpu_seconds": 0.4, "peak_rss_mib": 75.0},
    },
    "groups": {"[/x]": {"time_to_ready": {"p50": 0.1, "p99": 0.2}, "makespan": 1.0}},
}  # fmt: skip


def write_report(path: Path, change: Any) -> Path:
    doc = copy.deepcopy(REPORT)
    change(doc)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param(lambda d: d.pop("workload"), "workload.name", id="no-workload"),
        pytest.param(lambda d: d.update(workload=[]), "workload.name", id="workload-list"),
        pytest.param(lambda d: d["workload"].update(name=5), "workload.name", id="name-int"),
        pytest.param(
            lambda d: d["summary"].update(nodes=10**400), "summary (nodes)", id="huge-int-figure"
        ),
    ],
)
def test_compare_report_checked(tmp_path: Path, change: Any, field: str) -> None:
    path = write_report(tmp_path / "a.json", change)
    with pytest.raises(ConfigError) as info:
        load_report(path)
    assert (info.value.file, info.value.field) == (str(path), field)


@pytest.mark.parametrize("output", ["json", "markdown", "text"])
def test_compare_extreme_figures_and_markup_names(tmp_path: Path, output: str) -> None:
    def big(sign: int) -> Any:
        def change(doc: dict[str, Any]) -> None:
            doc["workload"]["name"] = "[bold]x[/]y[/z]"
            doc["summary"].update(nodes=sign * 10**308, bytes_pulled=sign * 10**308)
            doc["summary"]["time_to_ready"]["p50"] = sign * 10**308

        return change

    a = write_report(tmp_path / "a.json", big(-1))
    b = write_report(tmp_path / "b.json", big(1))
    rows = {row.figure: row for row in compare_reports(load_report(a), load_report(b))}
    assert rows["nodes"].change == float("inf")
    assert "[bold]x[/]y[/z]" in compare_markdown(load_report(a), load_report(b))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert bench_command._compare(argparse.Namespace(compare=[a, b], output=output)) == 0
    assert "[/x]" in out.getvalue()
