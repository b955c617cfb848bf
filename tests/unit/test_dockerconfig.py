"""Docker config parsing, the node's search paths, and the 5-minute cache."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from kubelet_sim.credentials.dockerconfig import (
    DockerConfigEntry,
    DockerConfigSearch,
    NodeDockerConfig,
    decode_auth_field,
    parse_config_json,
    parse_dockercfg,
)
from kubelet_sim.errors import ConfigError


def b64(text: str, *, pad: bool = True) -> str:
    encoded = base64.b64encode(text.encode()).decode()
    return encoded if pad else encoded.rstrip("=")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        pytest.param(
            {"username": "u", "password": "p", "email": "e@x"},
            DockerConfigEntry("u", "p", "e@x"),
            id="username-password",
        ),
        pytest.param({"auth": b64("user:pass")}, DockerConfigEntry("user", "pass"), id="auth"),
        pytest.param(
            {"auth": b64("user:pass:with:colons", pad=False)},
            DockerConfigEntry("user", "pass:with:colons"),
            id="auth-unpadded",
        ),
        pytest.param(
            {"username": "ignored", "password": "ignored", "auth": b64("a:b")},
            DockerConfigEntry("a", "b"),
            id="auth-overrides",
        ),
        pytest.param(
            {"Username": "u", "PASSWORD": "p"}, DockerConfigEntry("u", "p"), id="case-insensitive"
        ),
        pytest.param(
            {"identitytoken": "refresh"},
            DockerConfigEntry(identity_token="refresh"),
            id="identity-token",
        ),
        pytest.param(
            {"registrytoken": "bearer"},
            DockerConfigEntry(registry_token="bearer"),
            id="registry-token",
        ),
        pytest.param({"serveraddress": "x", "other": 1}, DockerConfigEntry(), id="unknown-ignored"),
    ],
)
def test_config_json_entries(entry: dict[str, object], expected: DockerConfigEntry) -> None:
    data = json.dumps({"auths": {"registry.io": entry}, "HttpHeaders": {"X": "y"}}).encode()
    assert parse_config_json(data) == {"registry.io": expected}


@pytest.mark.parametrize(
    ("document", "field", "message"),
    [
        pytest.param(b"{not json", None, "unmarshal json", id="not-json"),
        pytest.param(b"[]", None, "expected a JSON object", id="not-object"),
        pytest.param(b'{"auths": []}', "auths", "expected an object", id="auths-list"),
        pytest.param(
            b'{"auths": {"r.io": {"auth": "bm9jb2xvbg=="}}}',
            'auths["r.io"].auth',
            "must be formatted as base64(username:password)",
            id="auth-without-colon",
        ),
        pytest.param(
            b'{"auths": {"r.io": {"auth": "!!!"}}}',
            'auths["r.io"].auth',
            "illegal base64",
            id="auth-not-base64",
        ),
        pytest.param(
            b'{"auths": {"r.io": {"password": 5}}}',
            'auths["r.io"].password',
            "expected a string",
            id="password-not-string",
        ),
    ],
)
def test_config_json_errors(document: bytes, field: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        parse_config_json(document, source="cfg")
    assert info.value.field == field
    assert "bm9jb2xvbg" not in str(info.value)


def test_deeply_nested_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nested too deeply") as info:
        parse_config_json(b'{"auths": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", source="c.json")
    assert info.value.file == "c.json"


def test_config_json_without_auths_is_empty_and_valid() -> None:
    assert parse_config_json(b'{"credsStore": "desktop"}') == {}


def test_legacy_dockercfg_is_a_bare_map() -> None:
    data = json.dumps({"https://index.docker.io/v1/": {"auth": b64("a:b"), "email": "e"}})
    assert parse_dockercfg(data.encode()) == {
        "https://index.docker.io/v1/": DockerConfigEntry("a", "b", "e")
    }


def test_decode_auth_field_never_echoes_the_value() -> None:
    with pytest.raises(ValueError, match="must be formatted") as info:
        decode_auth_field(b64("no-colon-SECRET"))
    assert "SECRET" not in str(info.value)


def write_config(path: Path, registry: str, user: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {registry: {"auth": b64(f"{user}:pw")}}}))
    return path


def search_in(tmp_path: Path) -> DockerConfigSearch:
    return DockerConfigSearch(
        preferred=tmp_path / "root",
        working_dir=tmp_path / "cwd",
        home=tmp_path / "home",
        root=tmp_path / "slash",
    )


def test_search_order_matches_the_kubelet(tmp_path: Path) -> None:
    search = search_in(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in search.candidates()] == [
        "root/config.json",
        "cwd/config.json",
        "home/.docker/config.json",
        "slash/.docker/config.json",
        "root/.dockercfg",
        "cwd/.dockercfg",
        "home/.dockercfg",
        "slash/.dockercfg",
    ]


def test_first_valid_file_wins_invalid_ones_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "config.json").write_text("{broken")
    write_config(tmp_path / "home" / ".docker" / "config.json", "home.io", "home")
    write_config(tmp_path / "slash" / ".docker" / "config.json", "slash.io", "slash")
    entries, path = search_in(tmp_path).read()
    assert path == tmp_path / "home" / ".docker" / "config.json"
    assert list(entries) == ["home.io"]


def test_legacy_dockercfg_only_when_no_config_json_is_valid(tmp_path: Path) -> None:
    legacy = tmp_path / "cwd" / ".dockercfg"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"legacy.io": {"auth": b64("l:pw")}}))
    entries, path = search_in(tmp_path).read()
    assert path == legacy
    assert entries["legacy.io"].username == "l"
    write_config(tmp_path / "slash" / ".docker" / "config.json", "json.io", "j")
    entries, path = search_in(tmp_path).read()
    assert list(entries) == ["json.io"]


def test_nothing_found_is_empty(tmp_path: Path) -> None:
    assert search_in(tmp_path).read() == ({}, None)


def test_found_registries_are_logged_without_userinfo(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    auths = {"https://user:s3cret@userinfo.io": {"auth": b64("u:pw")}, "plain.io": {}}
    config.write_text(json.dumps({"auths": auths}))
    with capture_logs() as logs:
        entries, _ = DockerConfigSearch.only(config).read()
    assert sorted(entries) == ["https://user:s3cret@userinfo.io", "plain.io"]
    (found,) = [e for e in logs if e["event"] == "docker_config.found"]
    assert found["registries"] == ["https://<redacted>@userinfo.io", "plain.io"]
    assert "s3cret" not in repr(logs)


def test_only_explicit_files_and_folders(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    write_config(folder / "config.json", "folder.io", "f")
    assert list(DockerConfigSearch.only(folder).read()[0]) == ["folder.io"]
    legacy = tmp_path / "x.dockercfg"
    legacy.write_text(json.dumps({"legacy.io": {"username": "l", "password": "p"}}))
    assert list(DockerConfigSearch.only(legacy).read()[0]) == ["legacy.io"]


@pytest.mark.anyio
async def test_node_config_is_cached_for_five_minutes(tmp_path: Path) -> None:
    now = [1000.0]
    node = NodeDockerConfig(search_in(tmp_path), clock=lambda: now[0])
    assert await node.provide() == {}
    config = write_config(tmp_path / "root" / "config.json", "r.io", "first")
    now[0] += 299
    assert await node.provide() == {}  # the empty answer is cached too
    now[0] += 1
    assert (await node.provide())["r.io"].username == "first"
    assert node.path == config
    write_config(config, "r.io", "second")
    now[0] += 10
    assert (await node.provide())["r.io"].username == "first"
    node.invalidate()
    assert (await node.provide())["r.io"].username == "second"
    assert node.reads == 3


LONG = "a-user-name-long-enough:and-a-password-long-enough-to-wrap-at-76-columns-0123456789"


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        # Go's base64 decoders skip \r and \n: wrapped `base64` output and a trailing newline.
        pytest.param(b64(LONG)[:76] + "\n" + b64(LONG)[76:], LONG, id="wrapped-lf"),
        pytest.param(b64(LONG)[:76] + "\r\n" + b64(LONG)[76:] + "\r\n", LONG, id="wrapped-crlf"),
        pytest.param(b64("u:p") + "\n", "u:p", id="trailing-newline"),
        pytest.param(b64("u:pw", pad=False) + "\n", "u:pw", id="unpadded-trailing-newline"),
        pytest.param(b64("ab:c"), "ab:c", id="no-padding-needed"),
    ],
)
def test_decode_auth_field_skips_line_breaks_as_go_does(field: str, expected: str) -> None:
    assert decode_auth_field(field) == tuple(expected.split(":", 1))


@pytest.mark.parametrize(
    "field",
    [
        pytest.param(" " + b64("u:p"), id="leading-space"),
        pytest.param(b64("u:p") + " ", id="trailing-space"),
        pytest.param(b64("u:p")[:2] + "\t" + b64("u:p")[2:], id="inner-tab"),
        pytest.param(b64("u:pw", pad=False) + "=", id="bad-padding"),
        pytest.param("dTpw=x", id="padding-inside"),
    ],
)
def test_decode_auth_field_refuses_other_whitespace_and_bad_padding(field: str) -> None:
    with pytest.raises(ValueError, match="illegal base64 data") as info:
        decode_auth_field(field)
    assert field.strip() not in str(info.value)
