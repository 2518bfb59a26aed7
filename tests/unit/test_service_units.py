"""The systemd units `dataplane service install` writes: the agent supervised
(Type=notify, Restart=always) after the node is restored from /var/lib, the
Docker driver socket-activated; uninstall removes exactly them."""

from __future__ import annotations

import configparser
import json

import pytest

from dataplane.cli.main import main
from dataplane.agent.units import PLUGIN_SOCKET, units


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
    # A node taken down is skipped at boot: ExecStartPre had nothing to restore and the unit
    # restarted every second, for good.
    assert u["Unit"]["ConditionPathExists"] == "/var/lib/dataplane/host/node.json"
    assert parse(units("dpl-x", registry=False)["dataplane-dpl-x.service"])["Unit"]["ConditionPathExists"] == \
        "/var/lib/dataplane/dpl-x/node.json"


def test_the_docker_driver_is_socket_activated_after_the_node():
    files = units("dpl-x", docker=True)
    sock, svc = parse(files["dataplane-dpl-x-docker.socket"]), parse(files["dataplane-dpl-x-docker.service"])
    assert sock["Socket"]["ListenStream"] == PLUGIN_SOCKET and sock["Socket"]["SocketMode"] == "0600"
    assert "dataplane-dpl-x.service" in svc["Unit"]["Wants"] and "dataplane-dpl-x.service" in svc["Unit"]["After"]
    # Not Requires (nor the socket PartOf the driver): stopping or restarting the node's unit took
    # the socket down, and starting it did not bring it back ("plugin not found" until a reboot).
    assert "dataplane-dpl-x.service" not in svc["Unit"].get("Requires", "") and "PartOf" not in sock["Unit"]
    assert "--netns dpl-x docker-plugin" in svc["Service"]["ExecStart"]


@pytest.fixture
def brought_up(tmp_path, monkeypatch):
    """Node "host" as `up` left it for the next boot (node.json), in a directory of the test's."""
    from dataplane.core import state
    monkeypatch.setattr(state, "LIB_ROOT", str(tmp_path / "lib"))
    state.save_boot("host", {"underlay": "eth0", "registry": "sqlite:///x/registry.db"})
    units_dir = tmp_path / "units"
    units_dir.mkdir()
    return units_dir


def test_install_refuses_a_node_never_brought_up_or_docker_without_a_registry(brought_up, capsys):
    """(before: the units were written, and at boot `up --restore` failed, or an agent started
    against the default registry for a node that runs none)"""
    from dataplane.core import state
    state.save_boot("host", {"underlay": "eth0", "registry": None})
    assert main(["service", "install", "--docker", "--unit-dir", str(brought_up)]) == 2
    assert "has no registry" in capsys.readouterr().err
    assert main(["--netns", "dpl-never-up", "service", "install", "--unit-dir", str(brought_up)]) == 3
    assert "was never brought up" in capsys.readouterr().err
    assert list(brought_up.iterdir()) == []


def test_a_node_without_a_registry_gets_a_unit_that_only_restores_it(brought_up, capsys):
    """(before: refused, so such a node did not come back after a reboot)"""
    from dataplane.core import state
    state.save_boot("host", {"underlay": "eth0", "registry": None})
    assert main(["service", "install", "--unit-dir", str(brought_up), "-o", "json"]) == 0
    assert [p.rsplit("/", 1)[1] for p in json.loads(capsys.readouterr().out)["written"]] == ["dataplane.service"]
    u = parse((brought_up / "dataplane.service").read_text())
    assert u["Service"]["Type"] == "oneshot" and u["Service"]["RemainAfterExit"] == "yes"
    assert u["Service"]["ExecStart"].endswith("up --restore --no-agent")
    assert "agent run" not in (brought_up / "dataplane.service").read_text()
    assert "ExecStop" not in u["Service"], "stopping the unit must not take the node down (down forgets it)"


def test_install_and_uninstall(brought_up, capsys):
    tmp_path = brought_up
    assert main(["service", "install", "--docker", "--unit-dir", str(tmp_path), "-o", "json"]) == 0
    written = json.loads(capsys.readouterr().out)["written"]
    assert sorted(p.rsplit("/", 1)[1] for p in written) == sorted(units(docker=True))
    assert main(["service", "uninstall", "--unit-dir", str(tmp_path), "-o", "json"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["removed"]) == sorted(written)
    assert list(tmp_path.iterdir()) == []


def test_a_second_nodes_docker_driver_is_refused(brought_up, capsys):
    """Every node's Docker socket unit listens on the one plugin path: a second one failed to bind
    or took it over, and Docker reached one node only under the driver name `dataplane`."""
    from dataplane.core import state
    state.save_boot("dpl-x", {"underlay": "eth0", "registry": "sqlite:///x/registry.db"})
    assert main(["service", "install", "--docker", "--unit-dir", str(brought_up)]) == 0
    capsys.readouterr()
    assert main(["service", "install", "--docker", "--unit-dir", str(brought_up)]) == 0, "the same node again"
    before = sorted(p.name for p in brought_up.iterdir())
    assert main(["--netns", "dpl-x", "service", "install", "--docker", "--unit-dir", str(brought_up)]) == 2
    assert "dataplane-docker.socket already serves" in capsys.readouterr().err
    assert sorted(p.name for p in brought_up.iterdir()) == before, "nothing written"
    assert main(["--netns", "dpl-x", "service", "install", "--unit-dir", str(brought_up)]) == 0, "without --docker"


def test_install_into_a_bad_directory_fails_in_one_line_and_writes_nothing(brought_up, capsys):
    """A --unit-dir that cannot hold the units: one error line and a non-zero exit, not a
    traceback; and a failure at the second unit leaves not even the first."""
    tmp_path = brought_up
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["service", "install", "--unit-dir", str(blocker / "units")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("dataplane: error: cannot write the units") and err.count("\n") == 1, err
    (tmp_path / "dataplane-docker.socket.new").mkdir()       # the second unit cannot be written
    assert main(["service", "install", "--docker", "--unit-dir", str(tmp_path)]) == 4
    assert "dataplane-docker.socket.new" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataplane-docker.socket.new", "file"]
    (tmp_path / "dataplane-docker.socket.new").rmdir()
    (tmp_path / "dataplane-docker.socket").mkdir()           # a unit's own name taken by a directory
    assert main(["service", "install", "--docker", "--unit-dir", str(tmp_path)]) == 4
    assert f"({tmp_path / 'dataplane-docker.socket'})" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataplane-docker.socket", "file"]


def test_cni_install_into_a_bad_directory_fails_in_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["cni", "install", "--bin-dir", str(blocker / "bin")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("dataplane: error: cannot install the CNI plugin") and err.count("\n") == 1, err
    (tmp_path / "dataplane.tmp").mkdir()
    assert main(["cni", "install", "--bin-dir", str(tmp_path)]) == 4
    assert not (tmp_path / "dataplane").exists()


def test_the_agents_unit_name_is_the_units_file_name():
    """process.unit_name is how `down` and ExecStartPre know the unit's cgroup."""
    from dataplane.agent import process
    from dataplane.agent import units as service_units
    for netns, node in ((None, "host"), ("dpl-h1", "dpl-h1")):
        assert process.unit_name(node) in service_units.units(netns)


def test_a_late_underlay_never_leaves_the_node_failed_for_good():
    """At boot the underlay may get its address after network-online.target (DHCP on an
    allow-hotplug interface). Restart=always with systemd's default start limit (5 in 10 s) left
    the unit failed after five quick tries, and the oneshot unit of a node without a registry
    had no Restart at all: the overlay stayed down until someone stepped in."""
    for registry in (True, False):
        u = parse(units("dpl-x", docker=registry, registry=registry)["dataplane-dpl-x.service"])
        assert u["Unit"]["StartLimitIntervalSec"] == "0", registry
        assert u["Service"]["Restart"] in ("always", "on-failure"), registry
    svc = parse(units("dpl-x", docker=True)["dataplane-dpl-x-docker.service"])
    assert svc["Unit"]["StartLimitIntervalSec"] == "0" and "docker.service" in svc["Unit"]["Before"]


def test_uninstall_refuses_units_still_enabled(brought_up, capsys):
    """It deleted the files of enabled, running units: the agent went on unsupervised, the
    wants/ links dangled, and `systemctl disable`, which `down` tells one to run, then failed."""
    assert main(["service", "install", "--unit-dir", str(brought_up)]) == 0
    wants = brought_up / "multi-user.target.wants"
    wants.mkdir()
    (wants / "dataplane.service").symlink_to(brought_up / "dataplane.service")      # systemctl enable
    capsys.readouterr()
    assert main(["service", "uninstall", "--unit-dir", str(brought_up)]) == 2
    assert "systemctl disable --now dataplane.service" in capsys.readouterr().err
    assert (brought_up / "dataplane.service").exists()
    (wants / "dataplane.service").unlink()
    assert main(["service", "uninstall", "--unit-dir", str(brought_up)]) == 0


def test_up_says_when_the_installed_unit_is_of_the_other_kind(brought_up, capsys):
    """The kind of unit is chosen at install time: a node given a registry since (down, then up
    with one) kept a unit that starts no agent at boot, and nothing said so."""
    from dataplane.agent import process
    from dataplane.core import state
    assert main(["service", "install", "--unit-dir", str(brought_up)]) == 0          # with a registry
    assert process.installed_unit_mismatch("host", True, str(brought_up)) is None
    assert "start an agent" in process.installed_unit_mismatch("host", False, str(brought_up))
    state.save_boot("host", {"underlay": "eth0", "registry": None})
    assert main(["service", "install", "--unit-dir", str(brought_up)]) == 0          # without
    assert "start no agent" in process.installed_unit_mismatch("host", True, str(brought_up))
    assert process.installed_unit_mismatch("dpl-none", True, str(brought_up)) is None, "none installed"


def test_up_restore_says_when_the_installed_units_are_an_older_versions(brought_up, capsys):
    """Units an older version installed kept what it wrote (Requires= and PartOf= on the Docker
    driver, which took its socket down for good at `systemctl stop dataplane`; no
    ConditionPathExists=) until the operator happened to run `service install` again. Now
    `up --restore` (ExecStartPre: the journal, at every boot) names them; where this copy is
    installed (the command's path) does not count."""
    from types import SimpleNamespace
    from dataplane.agent import control, units as agent_units
    assert main(["service", "install", "--docker", "--unit-dir", str(brought_up)]) == 0
    node, st = SimpleNamespace(name="host"), SimpleNamespace(registry="sqlite:///x/registry.db")
    assert agent_units.stale("host", True, str(brought_up)) == []
    svc = brought_up / "dataplane.service"
    svc.write_text(svc.read_text().replace(agent_units.command(), "/opt/elsewhere/bin/dataplane"))
    assert agent_units.stale("host", True, str(brought_up)) == [], "installed elsewhere: the same unit"
    capsys.readouterr()
    control._check_unit(node, st, str(brought_up))
    assert capsys.readouterr().err == ""
    drv = brought_up / "dataplane-docker.service"
    drv.write_text(drv.read_text().replace("Wants=dataplane.service", "Requires=dataplane.service"))
    svc.write_text(svc.read_text().replace("ConditionPathExists=", "#ConditionPathExists="))
    assert agent_units.stale("host", True, str(brought_up)) == ["dataplane.service", "dataplane-docker.service"]
    control._check_unit(node, st, str(brought_up))
    err = capsys.readouterr().err
    assert "dataplane.service, dataplane-docker.service differ from what this version writes" in err, err
    assert "`dataplane service install --docker` again" in err, err
    assert main(["service", "install", "--docker", "--unit-dir", str(brought_up)]) == 0
    assert agent_units.stale("host", True, str(brought_up)) == []


def test_a_stuck_agent_is_restarted_by_systemds_watchdog(tmp_path):
    """A hung agent (a deadlock in its main loop) was left as it was: the unit now has a
    watchdog, and the agent pings it (WATCHDOG=1) at half its period, only when systemd asked it."""
    import socket
    from dataplane.agent import sdnotify
    assert parse(units()["dataplane.service"])["Service"]["WatchdogSec"] == "120"
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    got = []

    def heard():
        try:
            while True:
                got.append(sock.recv(100).decode())
        except TimeoutError:
            return got
    import os
    os.environ["NOTIFY_SOCKET"] = path
    try:
        dog = sdnotify.Watchdog({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
        for now in (10.0, 10.5, 11.0, 11.2):
            dog.ping(now)
        assert heard() == ["WATCHDOG=1", "WATCHDOG=1"], "at 10 and at 11: every half of 2 s"
        for env in ({}, {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}):       # not asked; asked of another
            sdnotify.Watchdog(env).ping(100.0)
        assert heard() == ["WATCHDOG=1", "WATCHDOG=1"]
    finally:
        del os.environ["NOTIFY_SOCKET"]
        sock.close()
