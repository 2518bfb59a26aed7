"""A namespace named "host" was taken for the host's own node: the same pins, state, agent
socket and systemd unit (process.running_pid and unit_name read the name "host" as no
namespace). The CLI refuses it, with what to do, before anything is read or made; `down`
still removes such a node an older version let in, and neither node acts on the other's state."""

import subprocess

import pytest

from dataplane.core import state
from dataplane.core.errors import Conflict
from dataplane.node import HOST_NODE, Node
from tests.integration.conftest import DATAPLANE


def test_the_cli_refuses_a_namespace_named_host_but_for_down(monkeypatch):
    r = subprocess.run(DATAPLANE + ["--netns", "host", "status"], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot be a node" in r.stderr and "--netns host down" in r.stderr, r.stderr
    from dataplane.cli import main, node_cmds
    reached = []
    monkeypatch.setattr(node_cmds, "cmd_down", lambda args: reached.append(args.netns) or 0)   # nothing removed
    assert main.main(["--netns", "host", "down"]) == 0 and reached == ["host"]


def test_up_refuses_a_new_node_in_a_namespace_named_host(monkeypatch):
    """Not only the CLI: vtep.up, which the lab, the benches and the tests call too."""
    from dataplane.core.errors import UsageError
    from dataplane.node import vtep
    monkeypatch.setattr(vtep, "require_root", lambda: None)
    monkeypatch.setattr(state, "load", lambda name: None)
    with pytest.raises(UsageError, match="cannot be a node"):
        vtep.up(Node("host"), [256])


@pytest.mark.parametrize("netns,saved", [(None, "host"), ("host", None)])
def test_neither_node_acts_on_the_others_state(monkeypatch, netns, saved):
    """`down` of the host node on the state of a namespace "host" removed the programs and links of
    the uplink's ifindex in the host's own namespace (review finding), and the other way round."""
    st = state.NodeState(node=HOST_NODE, netns=saved, pin_dir="/nonexistent", config=None, uplink=None)
    monkeypatch.setattr(state, "load", lambda name: st)
    monkeypatch.setattr(state, "load_shared", lambda name: st)
    node = Node(netns)
    with pytest.raises(Conflict, match="down` removes it"):
        node.state()
    with pytest.raises(Conflict):
        node.require_up(shared=True)
    assert Node(saved).state() is st
