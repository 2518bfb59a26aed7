"""state.load_shared: one parse per version of the node's state file, the same object for
every reader until the file's bytes change, whoever changed them; load() stays a private copy."""

from __future__ import annotations

import os
from dataclasses import asdict

import pytest

from dataplane.core import state
from dataplane.core.errors import DataplaneError, NotFound
from dataplane.core.state import LocalEndpoint, NodeConfig, NodeState, Uplink
from dataplane.node.base import Node


@pytest.fixture
def saved(tmp_path, monkeypatch) -> NodeState:
    monkeypatch.setattr(state, "RUN_ROOT", str(tmp_path / "run"))
    monkeypatch.setattr(state, "_shared", {})
    st = NodeState(node="n1", netns="n1", pin_dir="/sys/fs/bpf/x",
                   config=NodeConfig(underlay="eth0", local_ip="10.0.0.1"),
                   uplink=Uplink(ifindex=2, mtu=1500, mac="02:00:00:00:00:01", gso_max=65536))
    st.endpoints["a"] = LocalEndpoint(name="a", vni=256, ip="10.1.0.2", mac="02:00:00:00:00:02",
                                      host_ifname="dp0123456789")
    state.save(st)
    return st


def test_readers_share_one_parse_until_the_file_changes(saved, monkeypatch):
    parses = []
    real = state._parse
    monkeypatch.setattr(state, "_parse", lambda node, raw: parses.append(node) or real(node, raw))
    first = state.load_shared("n1")
    assert state.load_shared("n1") is first and Node("n1").require_up(shared=True) is first
    assert len(parses) == 1 and asdict(first) == asdict(saved)
    mine = state.load("n1")
    assert mine is not first and asdict(mine) == asdict(first), "load() must stay a private copy"
    mine.endpoints["b"] = LocalEndpoint(name="b", vni=256, ip="10.1.0.3", mac="02:00:00:00:00:03",
                                        host_ifname="dp9876543210")
    assert "b" not in state.load_shared("n1").endpoints, "a change not saved reached the shared state"
    state.save(mine)                                   # saved: the next reader sees it
    now = state.load_shared("n1")
    assert now is not first and set(now.endpoints) == {"a", "b"} and len(parses) == 3


def test_a_write_by_another_process_is_seen(saved):
    first = state.load_shared("n1")
    path = os.path.join(state.node_dir("n1"), "state.json")
    d = asdict(saved)
    d["endpoints"]["a"]["ifindex"] = 7                 # same length as 0: only the bytes differ
    state.write_json(path, d)
    assert state.load_shared("n1").endpoints["a"].ifindex == 7 and first.endpoints["a"].ifindex == 0


def test_a_node_taken_down_or_damaged_is_said_so(saved):
    state.load_shared("n1")
    path = os.path.join(state.node_dir("n1"), "state.json")
    with open(path, "wb") as f:
        f.write(b"{")
    with pytest.raises(DataplaneError, match="damaged"):
        state.load_shared("n1")
    os.unlink(path)
    assert state.load_shared("n1") is None
    with pytest.raises(NotFound, match="not up"):
        Node("n1").require_up(shared=True)
