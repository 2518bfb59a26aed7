"""A host whose lease lapsed comes back and makes an endpoint; this agent's watch lags, so a
punt for the new MAC is looked up, which puts the host in the view ahead of its watch event.
That event is then an unchanged record (no change since d4de77e): the host's other endpoints
must be reconciled when the look-up brings the host back, or they are never installed (found
by review: VNI 300's endpoint and the looked-up VNI's other endpoint stayed missing). The view
is real, on a real SQLite registry; the maps are RemoteTable's bookkeeping over dicts."""

from __future__ import annotations

import time
from types import SimpleNamespace

from dataplane.agent import apply as applymod
from dataplane.agent import converge, punts
from dataplane.agent.reconcile import desired
from dataplane.node.fdb import RemoteTable
from dataplane.registry.records import Host
from tests.unit.test_punt_lookups import punt
from tests.unit.test_remote_table import FakeMaps
from tests.unit.test_view_ahead import Agent


def test_a_host_a_lookup_brings_back_has_all_its_entries_installed(tmp_path, monkeypatch):
    ag = Agent(f"sqlite://{tmp_path}/r.db", "h1")
    st = SimpleNamespace(networks={}, config=SimpleNamespace(port=4789), registry_peers={}, endpoints={}, gateways={},
                         local_endpoints=lambda v: [], router_ip=lambda v: None)
    ag.node = SimpleNamespace(require_up=lambda shared=False: st, netns=None)
    ag._routed = {"198.18.0.2": True, "198.18.0.1": True}
    ag.remote = RemoteTable(FakeMaps(), set())
    ag.skipped, ag.vni_errors, ag.counters = {}, {}, {"bad_records": 0}
    ag.sender = SimpleNamespace(send=lambda *a: None)
    monkeypatch.setattr(applymod.networks, "ensure_served",
                        lambda node, vni, subnet, mtu: st.networks.__setitem__(vni, 1))
    monkeypatch.setattr(applymod.networks, "set_registry_peers",
                        lambda node, vni, f: st.registry_peers.__setitem__(vni, f))
    reg = ag.reg
    try:
        reg.network_create("n", 256, "10.9.0.0/24")
        reg.network_create("m", 300, "10.8.0.0/24")
        reg.host_register(Host.make("h1", "198.18.0.1"), reg.kv.lease_grant(60))
        lease = reg.kv.lease_grant(60)
        reg.host_register(Host.make("h2", "198.18.0.2"), lease)
        reg.endpoint_create("a", "n", "h2")
        reg.endpoint_create("b", "m", "h2")
        ag.view.load(reg.snapshot())
        converge.whole(ag)

        def catch_up():
            head = reg.kv.range("/dataplane/")[0]
            w = reg.watch(ag.view.rev + 1)
            try:
                while ag.view.rev < head:
                    for ev in next(w):
                        ag.view.apply(ev)
                    converge.pending(ag)
            finally:
                w.close()
        reg.kv.lease_revoke(lease)                    # h2 gone: its entries go
        catch_up()
        assert not any(ag.remote.fdb.values())
        reg.host_register(Host.make("h2", "198.18.0.2"), reg.kv.lease_grant(60))    # back
        c = reg.endpoint_create("c", "n", "h2")       # with a new endpoint; our watch lags
        h = punts.PuntHandler(ag)
        k = ("n", "macs", c.mac)
        found = h.lookups.read(k)
        h.lookups.pending[k] = (1, [(punt(c.mac), time.monotonic_ns())])
        h.looked_up((k, 256, 1, found))
        catch_up()                                    # h2's put (unchanged by now), c's put
        want = desired(ag.view, converge.facts(ag, st))
        assert {v: e for v, e in ag.remote.fdb.items() if e} == {v: e.fdb for v, e in want.entries.items() if e.fdb}
        assert set(ag.remote.fdb[300]) == {reg.endpoint("b").mac} and len(ag.remote.fdb[256]) == 2
        assert st.registry_peers == {256: ["198.18.0.2"], 300: ["198.18.0.2"]}
    finally:
        reg.close()
