"""``kubelet-sim kubeconfig``: the kubeconfig it prints, and its refusals naming the flag."""

from __future__ import annotations

import pytest
import yaml

from kubelet_sim.cli.commands.kubeconfig import kubeconfig
from kubelet_sim.cli.main import main
from kubelet_sim.errors import ConfigError


def test_the_kubeconfig_points_its_current_context_at_the_server() -> None:
    doc = yaml.safe_load(kubeconfig("http://127.0.0.1:10255/", namespace="team-a"))
    assert doc["current-context"] == "kubelet-sim"
    assert doc["clusters"] == [
        {"name": "kubelet-sim", "cluster": {"server": "http://127.0.0.1:10255"}}
    ]
    (context,) = doc["contexts"]
    assert context["context"] == {
        "cluster": "kubelet-sim",
        "user": "kubelet-sim",
        "namespace": "team-a",
    }
    assert doc["users"] == [{"name": "kubelet-sim", "user": {}}]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        pytest.param({"server": "127.0.0.1:10255"}, "--server", id="no-scheme"),
        pytest.param({"server": "ftp://127.0.0.1:1"}, "--server", id="scheme"),
        pytest.param({"server": "http://127.0.0.1:99999"}, "--server", id="port"),
        pytest.param({"server": "http://u:p@127.0.0.1:1"}, "--server", id="userinfo"),
        pytest.param({"server": "http://127.0.0.1:1/api"}, "--server", id="path"),
        pytest.param({"name": "a b"}, "--name", id="name"),
        pytest.param({"namespace": "Team_A"}, "--namespace", id="namespace"),
        pytest.param({"namespace": "a" * 64}, "--namespace", id="namespace-too-long"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(args: dict[str, str], field: str) -> None:
    server = args.pop("server", "http://127.0.0.1:10255")
    with pytest.raises(ConfigError) as info:
        kubeconfig(server, **args)
    assert info.value.field == field


def test_the_command_prints_it_and_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kubeconfig", "--server", "http://127.0.0.1:1"]) == 0
    assert 'server: "http://127.0.0.1:1"' in capsys.readouterr().out
    assert main(["kubeconfig", "--namespace", "Bad"]) == 1
    assert "--namespace" in capsys.readouterr().err
