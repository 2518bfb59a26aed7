"""Commands fail in one line with a non-zero exit, never a traceback, when the node's state
cannot be read (not root, damaged) or the agent cannot be talked to (denied, silent)."""

from __future__ import annotations

import socket

import pytest

from dataplane.agent import client
from dataplane.cli.main import main
from dataplane.core import state


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "RUN_ROOT", str(tmp_path / "run"))
    monkeypatch.setattr(state, "LIB_ROOT", str(tmp_path / "lib"))
    return tmp_path


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("dataplane: error: ") and err.count("\n") == 1, err
    return err


def test_a_state_that_cannot_be_read_or_is_damaged(roots, capsys):
    path = roots / "run" / "host" / "state.json"
    path.mkdir(parents=True)                 # open() fails as it does for a user who is not root
    assert main(["status"]) != 0
    assert "cannot read the state of node host" in one_line(capsys)
    path.rmdir()
    path.write_text("{")
    assert main(["status"]) == 1
    assert "is damaged" in one_line(capsys)


class Denied(socket.socket):
    def connect(self, path):
        raise PermissionError(13, "Permission denied")


class Silent(socket.socket):
    def connect(self, path):
        pass

    def sendall(self, data):
        pass

    def recv(self, n):
        raise TimeoutError("timed out")


def test_an_agent_that_cannot_be_talked_to(roots, capsys, monkeypatch):
    monkeypatch.setattr(client.socket, "socket", Denied)
    assert main(["agent", "status"]) == 5
    assert "cannot talk to the agent of node host: Permission denied" in one_line(capsys)
    monkeypatch.setattr(client.socket, "socket", Silent)
    assert main(["agent", "status"]) == 1
    assert "did not answer 'status'" in one_line(capsys)


def test_up_refuses_what_its_agent_would_before_making_anything(roots, capsys, monkeypatch, tmp_path):
    """A default host name over the name rules (a cloud VM's hostname) or a lease TTL out of
    range: exit 2 from `up` itself (before: everything was made, then the agent it started
    exited 2 and `up` rolled back, or a TTL of 0 was silently the default)."""
    from dataplane.node import vtep
    monkeypatch.setattr(vtep, "up", lambda *a, **kw: pytest.fail("up went on to make the node"))
    url = f"sqlite://{tmp_path}/reg.db"
    monkeypatch.setattr(socket, "gethostname", lambda: "aks-nodepool1-12345678-vmss000000x")
    assert main(["up", "--registry", url]) == 2
    assert "give --host-name" in one_line(capsys)
    for ttl in ("0", "1", "5000"):
        assert main(["up", "--registry", url, "--host-name", "h1", "--lease-ttl", ttl]) == 2
        assert "--lease-ttl" in one_line(capsys)
    from types import SimpleNamespace
    from dataplane.agent import process
    from dataplane.node import Node
    monkeypatch.setattr(Node, "state", lambda self: SimpleNamespace(host_name="h1", registry=url))
    monkeypatch.setattr(process, "running_pid", lambda node: 4242)
    assert main(["up", "--registry", url, "--host-name", "h2"]) == 4, "renamed under its running agent"
    assert "is host h1 in the registry and its agent runs" in one_line(capsys)


def test_down_of_a_vni_twice_is_idempotent(roots, capsys, monkeypatch):
    """`down --vni 20` when 20 is not (or no longer) up: exit 0, said, the rest of the node
    as it was (before: exit 3, "VNI 20 is not up on this node", although the help says idempotent)."""
    import json
    from dataplane.core.state import NodeConfig, NodeState, ServedNetwork, Uplink
    state.save(NodeState(node="host", netns=None, pin_dir=str(roots / "pins"),
                         config=NodeConfig(underlay="eth0", local_ip="192.0.2.1"),
                         uplink=Uplink(ifindex=2, mtu=1500, mac="02:00:00:00:00:01", gso_max=65536),
                         networks={10: ServedNetwork(vni=10, subnet="10.0.10.0/24", mtu=1450, slot=1)}))
    assert main(["down", "--vni", "20", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"was_up": True, "vnis": [], "not_up": [20]}
    assert list(state.load("host").networks) == [10]
