"""The systemd units `dataplane service install` writes: the agent supervised
(Type=notify, Restart=always) after the node is restored from /var/lib, the
Docker driver socket-activated; uninstall removes exactly them."""

from __future__ import annotations

import configparser
import json

from dataplane.cli.main import main
from dataplane.cli.service_cmds import PLUGIN_SOCKET, units


def parse(text: str) -> configparser.ConfigParser:
    c = configparser.ConfigParser(strict=False, interpolation=None)
    c.optionxform = str
    c.read_string(text)
    return c


def test_the_node_unit_restores_then_supervises_the_agent():
    u = parse(units()["dataplane.service"])
    assert u["Service"]["Type"] == "notify" and u["Service"]["Restart"] == "always"
    assert u["Service"]["ExecStartPre"].endswith("up --restore --no-agent")
    assert u["Service"]["ExecStart"].endswith("agent run")
    assert u["Service"]["KillMode"] == "process", "stopping the agent must not stop what it does not own"
    assert "network-online.target" in u["Unit"]["After"]


def test_the_docker_driver_is_socket_activated_after_the_node():
    files = units("dpl-x", docker=True)
    sock, svc = parse(files["dataplane-dpl-x-docker.socket"]), parse(files["dataplane-dpl-x-docker.service"])
    assert sock["Socket"]["ListenStream"] == PLUGIN_SOCKET and sock["Socket"]["SocketMode"] == "0600"
    assert "dataplane-dpl-x.service" in svc["Unit"]["Requires"] and "dataplane-dpl-x.service" in svc["Unit"]["After"]
    assert "--netns dpl-x docker-plugin" in svc["Service"]["ExecStart"]


def test_install_and_uninstall(tmp_path, capsys):
    assert main(["service", "install", "--docker", "--unit-dir", str(tmp_path), "-o", "json"]) == 0
    written = json.loads(capsys.readouterr().out)["written"]
    assert sorted(p.rsplit("/", 1)[1] for p in written) == sorted(units(docker=True))
    assert main(["service", "uninstall", "--unit-dir", str(tmp_path), "-o", "json"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["removed"]) == sorted(written)
    assert list(tmp_path.iterdir()) == []
