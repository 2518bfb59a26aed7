"""Hosts that leave together (a rack's leases lapsing at once) are handled together: the
agent's event batch forgets what was learned behind all their VTEPs in one pass over
dp_learned and settles moves once, where it made a pass (130 ms with a full learned map then) and a
scan of the view per host. A run is cut by an endpoint event, so what that event meets is what
it met before: the departures before it already settled. Claims (a lapsed host's reservations
go with it, in the same revision) do not cut it."""

from __future__ import annotations

import ctypes
from types import SimpleNamespace

import pytest

from dataplane.agent import local, main as agent_main
from dataplane.core import abi
from dataplane.core.keys import be32
from dataplane.registry.kv import Event
from dataplane.registry.records import Endpoint, Host, key

_S = abi.load().structs
LIVE = "198.18.0.2"


class Learned:
    """dp_learned's part of NodeMaps: entries by MAC, counting the passes over them."""

    def __init__(self, vteps: list[str], per_vtep: int = 3):
        self.passes, self.entries = 0, {}
        for i, vtep in enumerate(vteps):
            for j in range(per_vtep):
                k, v = _S["dp_mac_key"](vni=256), _S["dp_fdb_entry"](vtep=be32(vtep))
                ctypes.memmove(k.mac, bytes([2, 0, 0, 0, i, j]), 6)
                self.entries[bytes(k)] = (k, v)

    spec = SimpleNamespace(key=_S["dp_mac_key"])

    def raw_chunks(self):
        """Map.raw_chunks: keys and values back to back, here all in one chunk."""
        self.passes += 1
        rows = list(self.entries.values())
        yield b"".join(bytes(k) for k, _ in rows), b"".join(bytes(v) for _, v in rows)

    def delete_packed(self, keys: bytes):
        size = ctypes.sizeof(self.spec.key)
        for i in range(0, len(keys), size):
            del self.entries[keys[i:i + size]]


@pytest.fixture
def agent(tmp_path, monkeypatch):
    ag = agent_main.Agent(SimpleNamespace(name="t", netns=None), f"sqlite://{tmp_path}/reg.db", "h1")
    ag.node = SimpleNamespace(name="t", netns=None, require_up=lambda shared=False: SimpleNamespace(endpoints={}))
    monkeypatch.setattr(agent_main.converge, "pending", lambda ag: None)
    settled = []
    monkeypatch.setattr(local, "settle_moves", lambda ag, mine=None: settled.append(sorted(ag.view.endpoints)))
    ag.settled = settled
    hosts = [("h2", LIVE)] + [(f"r{i}", f"198.18.1.{i}") for i in range(1, 11)]
    ag.view.apply(Event(key("networks", "n"), b'{"name": "n", "vni": 256, "subnet": "10.9.0.0/24"}', 1))
    for rev, (name, ip) in enumerate(hosts, start=2):
        ag.view.apply(Event(key("hosts", name), Host.make(name, ip).to_json(), rev))
    ag.maps = SimpleNamespace(dp_learned=Learned([ip for _, ip in hosts]))
    yield ag
    ag.reg.close()


def test_hosts_leaving_together_cost_one_pass_over_what_was_learned(agent):
    events = []
    for i in range(1, 11):      # as etcd deletes a lapsed lease's keys: the host, then its reservation
        events += [Event(key("hosts", f"r{i}"), None, 100 + i),
                   Event(key("ipam", "n", f"10.9.0.{100 + i}"), None, 100 + i)]
    agent._apply_events(events)
    learned = agent.maps.dp_learned
    assert learned.passes == 1, f"{learned.passes} passes over dp_learned for one run of departures"
    assert len(agent.settled) == 1
    assert {v.vtep for _, v in learned.entries.values()} == {be32(LIVE)}, "what the live host's VTEP taught stays"
    assert len(learned.entries) == 3


def test_another_kind_of_event_meets_the_departures_before_it_settled(agent):
    ep = Endpoint.make("x", "n", "h2", "02:00:00:00:00:09", "10.9.0.9")
    agent._apply_events([Event(key("hosts", "r1"), None, 100), Event(key("hosts", "r2"), None, 101),
                         Event(key("endpoints", "x"), ep.to_json(), 102), Event(key("hosts", "r3"), None, 103)])
    assert agent.settled == [[], ["x"]], "the first run must settle before the endpoint event is applied"
    assert agent.maps.dp_learned.passes == 2
    left = {v.vtep for _, v in agent.maps.dp_learned.entries.values()}
    assert not left & {be32(f"198.18.1.{i}") for i in (1, 2, 3)} and be32("198.18.1.4") in left


def test_a_failure_to_forget_what_was_learned_costs_no_later_event(agent):
    """The learned map unreadable (a KernelError) while hosts leave: the error left the batch's
    later events unapplied, with the watch already past them and nothing reading them again."""
    from dataplane.core.errors import KernelError

    def broken():
        raise KernelError("dp_learned: pinned map not found")
        yield
    agent.maps.dp_learned.raw_chunks = broken
    ep = Endpoint.make("x", "n", "h2", "02:00:00:00:00:09", "10.9.0.9")
    agent._apply_events([Event(key("hosts", "r1"), None, 100), Event(key("endpoints", "x"), ep.to_json(), 101)])
    assert "x" in agent.view.endpoints and "r1" not in agent.view.hosts

