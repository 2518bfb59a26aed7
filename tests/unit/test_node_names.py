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


def test_the_cli_refuses_a_namespace_named_host_but_for_down():
    r = subprocess.run(DATAPLANE + ["--netns", "host", "status"], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot be a node" in r.stderr, r.stderr
    r = subprocess.run(DATAPLANE + ["--netns", "host", "down", "-o", "json"], capture_output=True, text=True)
    assert "cannot be a node" not in r.stderr


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
