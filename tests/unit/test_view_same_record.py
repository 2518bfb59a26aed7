"""A host's agent that restarts writes its host record again, unchanged: every other agent's
view took it as a change and recomputed every VNI with an endpoint of that host (a scan of
every endpoint in the registry, about 220 ms per restarted host at 100,000 records)."""

from __future__ import annotations

from dataplane.agent.view import RegistryView
from dataplane.registry import Endpoint, Host, Network, Snapshot
from dataplane.registry.kv import Event
from dataplane.registry.store import key


def view() -> RegistryView:
    net = Network.make("n1", 256, "10.0.0.0/24")
    e = Endpoint.make("web", "n1", "h2", "02:00:00:00:00:07", "10.0.0.7")
    snap = Snapshot(rev=40, networks={"n1": net}, hosts={"h2": Host.make("h2", "198.18.0.2")}, endpoints={e.id: e})
    v = RegistryView()
    v.load(snap)
    v.take_changes()
    return v


def test_the_same_host_record_again_changes_nothing():
    v, gone = view(), []
    assert v.apply(Event(key("hosts", "h2"), Host.make("h2", "198.18.0.2").to_json(), 41),
                   on_host_gone=gone.append) == set()
    assert v.take_changes() == (set(), {}) and gone == [] and v.rev == 41


def test_a_changed_or_deleted_host_record_still_touches_its_vnis():
    v, gone = view(), []
    assert v.apply(Event(key("hosts", "h2"), Host.make("h2", "198.18.0.9").to_json(), 41),
                   on_host_gone=gone.append) == {256}
    assert v.take_changes()[0] == {256} and [h.vtep for h in gone] == ["198.18.0.2"]
    assert v.apply(Event(key("hosts", "h2"), None, 42), on_host_gone=gone.append) == {256}
    assert "h2" not in v.hosts


def test_the_same_network_record_again_changes_nothing():
    v = view()
    assert v.apply(Event(key("networks", "n1"), Network.make("n1", 256, "10.0.0.0/24").to_json(), 41)) == set()
    assert v.take_changes() == (set(), {})


def test_a_changed_host_record_scans_the_endpoints_once():
    """Each scan of a host's VNIs walks every endpoint of the registry (55 ms at 100,000): a
    host's new record was scanned for four times, its old one's forget and note and the new
    one's again, where the name (and so the answer) is the same."""
    v, scans = view(), []
    touches = v.touches
    v.touches = lambda kind, rec: (scans.append(kind), touches(kind, rec))[1]
    assert v.apply(Event(key("hosts", "h2"), Host.make("h2", "198.18.0.9").to_json(), 41)) == {256}
    assert scans.count("hosts") == 1 and v.take_changes()[0] == {256}
    assert v.apply(Event(key("hosts", "h3"), Host.make("h3", "198.18.0.3").to_json(), 42)) == set()
    assert scans.count("hosts") == 2                      # a new host: its own scan
