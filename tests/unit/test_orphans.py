"""local.drop_orphans on a real (SQLite) registry: a record of this host with no
sandbox here goes, found by a full scan after a sync and afterwards only among
the records events wrote for this host (endpoint_changed notes them), so a
tick does not walk the whole view."""

from __future__ import annotations

import queue
import threading
from types import SimpleNamespace

from dataplane.agent import inflight, local
from dataplane.agent.view import RegistryView
from dataplane.registry import open_registry
from dataplane.registry.records import Host


class Agent:
    def __init__(self, url: str):
        self.reg = open_registry(url)
        self.me = "h1"
        self.reg.network_create("n", 256, "10.9.0.0/24")
        for name, ip in (("h1", "198.18.0.1"), ("h2", "198.18.0.2")):
            self.reg.host_register(Host.make(name, ip), self.reg.kv.lease_grant(60))
        self.sandboxes: dict = {}
        self.gateways: dict = {}
        self.node = SimpleNamespace(
            require_up=lambda shared=False: SimpleNamespace(endpoints=self.sandboxes, gateways=self.gateways))
        self.view = RegistryView()
        self.lock = threading.RLock()
        self.moving: set[str] = set()
        self.q = queue.Queue()
        inflight.attach(self)
        self.orphan_suspects: set[str] = set()
        self.orphan_had: set[str] = set()
        self.orphan_scan_all = True
        self.stopping, self.connected = threading.Event(), threading.Event()
        self.connected.set()

    def create(self, eid: str, host: str):
        rec = self.reg.endpoint_create(eid, "n", host)
        self.view.endpoints[eid] = rec
        return rec

    def in_registry(self) -> set[str]:
        return {e.id for e in self.reg.endpoints()}


def test_a_gateways_host_address_is_ours_while_the_gateway_lives(tmp_path):
    """The record dpgw.<VNI>.<host> of a gateway's host address (agent/routers.py) has no
    sandbox: it stays while this host has the gateway (at a sync's full scan, and when the
    sweep notes it), and goes once the gateway has gone (the VNI left this host)."""
    ag = Agent(f"sqlite://{tmp_path}/registry.db")
    try:
        ag.gateways[256] = object()
        router = ag.create("dpgw.256.h1", "h1")
        ag.create("dpgw.256.h2", "h2")
        local.drop_orphans(ag)                       # after a sync: all of them
        local.endpoint_changed(ag, "dpgw.256.h1", router, ag.sandboxes)
        local.drop_orphans(ag)
        assert ag.in_registry() == {"dpgw.256.h1", "dpgw.256.h2"}
        del ag.gateways[256]
        local.drop_orphans(ag)                       # gone from what is ours since the last sweep
        assert ag.in_registry() == {"dpgw.256.h2"}
    finally:
        ag.reg.close()


def test_a_sync_scans_every_record_then_only_what_events_wrote(tmp_path):
    ag = Agent(f"sqlite://{tmp_path}/registry.db")
    try:
        ag.create("kept", "h1")
        ag.sandboxes["kept"] = object()
        ag.create("orphan", "h1")
        ag.create("theirs", "h2")
        local.drop_orphans(ag)                       # after a sync: all of them
        assert ag.in_registry() == {"kept", "theirs"}
        assert not ag.orphan_scan_all

        # A record this host registered whose sandbox never came (the reply was lost):
        # not looked at until an event says it was written for this host.
        late = ag.create("late", "h1")
        local.drop_orphans(ag)
        assert "late" in ag.in_registry(), "a tick after the sync walks only noted records"
        local.endpoint_changed(ag, "late", late, ag.sandboxes)
        assert ag.orphan_suspects == {"late"}
        local.drop_orphans(ag)
        assert ag.in_registry() == {"kept", "theirs"} and not ag.orphan_suspects

        # A noted record whose sandbox exists by the tick stays; another host's is never noted.
        soon = ag.create("soon", "h1")
        local.endpoint_changed(ag, "soon", soon, ag.sandboxes)
        ag.sandboxes["soon"] = object()
        other = ag.create("other", "h2")
        local.endpoint_changed(ag, "other", other, ag.sandboxes)
        assert ag.orphan_suspects == {"soon"}
        local.drop_orphans(ag)
        assert ag.in_registry() == {"kept", "theirs", "soon", "other"}

        # A sandbox that goes from the node with no event (its interface vanished): its record goes.
        del ag.sandboxes["soon"]
        local.drop_orphans(ag)
        assert ag.in_registry() == {"kept", "theirs", "other"}
    finally:
        ag.reg.close()


def test_a_sandbox_made_and_gone_between_two_sweeps_loses_its_record(tmp_path):
    """An endpoint attached and gone before any sweep saw it (its interface vanished at once,
    housekeeping removed it): neither orphan_had nor an event names its record; note_gone does.
    Before, it stayed in the registry until the agent restarted (CI: the integration test)."""
    ag = Agent(f"sqlite://{tmp_path}/registry.db")
    try:
        local.drop_orphans(ag)                       # the sync's full scan is spent
        rec = ag.create("brief", "h1")
        ep = SimpleNamespace(name="brief", vni=256, mac=rec.mac, ip=rec.ip)
        with ag.lock:
            local.note_gone(ag, ep)                  # as housekeeping.tick, for a vanished interface
        local.drop_orphans(ag)
        assert ag.in_registry() == set()
    finally:
        ag.reg.close()


def test_a_sandbox_settle_moves_removes_leaves_the_batchs_list(tmp_path, monkeypatch, caplog):
    """A host leaving in the middle of an event batch settles moves (local.hosts_gone):
    a sandbox it removes must leave the batch's list of local endpoints, or a later event
    of the batch for that endpoint removes it again and logs an error."""
    from dataplane.core.errors import NotFound
    ag = Agent(f"sqlite://{tmp_path}/registry.db")
    removed = []

    def remove(node, name):
        if name not in ag.sandboxes:
            raise NotFound(f"endpoint {name} is not on this node")
        del ag.sandboxes[name]
        removed.append(name)
    monkeypatch.setattr(local.endpoints, "remove", remove)
    ag.node = SimpleNamespace(                       # a copy, as read
        require_up=lambda shared=False: SimpleNamespace(endpoints=dict(ag.sandboxes), gateways={}))
    try:
        rec = ag.create("x", "h2")                   # its move to h2 committed while we were away
        ag.sandboxes["x"] = SimpleNamespace(name="x", vni=256, mac=rec.mac, ip=rec.ip, sandbox=None, phase="ready")
        mine = ag.node.require_up().endpoints        # what the batch read at its start
        local.settle_moves(ag, mine)
        local.endpoint_changed(ag, "x", rec, mine)    # a later event of the same batch
        assert removed == ["x"] and "x" not in mine
        assert ag.view.take_changes()[1] == {256: {("ep", "x"), ("mac", rec.mac), ("ip", rec.ip)}}, \
            "the batch's end must reconcile what the removed sandbox held"
        assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    finally:
        ag.reg.close()


def test_an_orphan_already_gone_from_the_registry_leaves_the_view(tmp_path):
    """Our own removal whose event is still to come (a lost reply's estimated revision
    keeps it in the view): the sweep finds it gone and drops it, instead of logging "cannot
    remove orphan record" and trying again every tick until the watch catches up."""
    ag = Agent(f"sqlite://{tmp_path}/registry.db")
    try:
        ag.create("gone", "h1")
        ag.reg.endpoint_rm("gone")
        local.drop_orphans(ag)
        assert "gone" not in ag.view.endpoints and not ag.orphan_suspects
    finally:
        ag.reg.close()


def held_removals(monkeypatch, ag):
    """ag's registry endpoint_rm waits for go; there is set when one waits. Returns (there, go)."""
    there, go, real = threading.Event(), threading.Event(), ag.reg.endpoint_rm

    def endpoint_rm(*a, **kw):
        there.set()
        assert go.wait(20)
        return real(*a, **kw)
    monkeypatch.setattr(ag.reg, "endpoint_rm", endpoint_rm)
    return there, go


def test_housekeeping_does_not_wait_on_the_registry_for_an_orphan(tmp_path, monkeypatch):
    """Before, housekeeping removed orphan records (and took back unfinished moves) itself,
    under the agent's lock: a registry slow to answer held registry events, punts and the
    fast path's heartbeat for a timeout per record. Now a sweep thread removes them, each
    endpoint busy meanwhile (inflight.working_on)."""
    from dataplane.agent import housekeeping
    monkeypatch.setattr(housekeeping.networks, "prune_parted", lambda node: None)
    monkeypatch.setattr(housekeeping, "vanished", lambda node: [])
    monkeypatch.setattr(housekeeping, "age_learned", lambda maps, age, now: 0)
    monkeypatch.setattr(housekeeping.monitor, "clear_if_abandoned", lambda node: None)
    monkeypatch.setattr(housekeeping.rxgro, "intact", lambda node, st, maps: True)
    monkeypatch.setattr(housekeeping.rxgro, "freed", lambda node, st: False)
    monkeypatch.setattr(housekeeping.pauses, "tick", lambda: None)
    monkeypatch.setattr(housekeeping, "_mend_vxlan_guard", lambda ag, st: None)
    monkeypatch.setattr(housekeeping, "_prune_nexthops", lambda ag, st: None)
    ag = Agent(f"sqlite://{tmp_path}/registry.db")
    ag.node.state = lambda: SimpleNamespace(config=SimpleNamespace(fdb_age_s=300), gateways={})
    ag.maps, ag.counters, ag.sweeper = None, {"aged": 0}, None
    ag.synced = threading.Event()
    ag.synced.set()
    there, go = held_removals(monkeypatch, ag)
    try:
        ag.create("orphan", "h1")
        out: list = []
        t = threading.Thread(target=lambda: out.append(housekeeping.tick(ag)))
        t.start()
        assert there.wait(5)
        t.join(2)
        assert not t.is_alive(), "housekeeping waits on the registry"
        assert len(out) == 1, "the tick raised"
        assert ag.lock.acquire(timeout=1), "the agent's lock is held across the registry call"
        ag.lock.release()
        assert "orphan" in ag.busy
        go.set()
        ag.sweeper.join(10)
        assert ag.in_registry() == set() and "orphan" not in ag.view.endpoints and not ag.busy
        assert ag.q.get_nowait() == ("recheck", "orphan")
    finally:
        go.set()
        ag.reg.close()


def test_a_sweep_stops_between_endpoints_when_the_agent_stops(tmp_path, monkeypatch):
    """At stop the agent waits for the sweep, which finishes the endpoint it is on and leaves
    the rest as suspects (not a removal cut off by the interpreter's exit halfway)."""
    ag = Agent(f"sqlite://{tmp_path}/registry.db")
    there, go = held_removals(monkeypatch, ag)
    try:
        ag.create("a", "h1")
        ag.create("b", "h1")
        t = threading.Thread(target=local.drop_orphans, args=(ag,))
        t.start()
        assert there.wait(5)
        ag.stopping.set()
        go.set()
        t.join(10)
        assert len(ag.in_registry()) == 1 and ag.orphan_suspects == ag.in_registry()
    finally:
        go.set()
        ag.reg.close()


def test_a_sandbox_whose_interface_vanished_has_its_entries_reconciled(tmp_path, monkeypatch):
    """A runtime's container kept here against a record another writer gave to h2 (its entries
    for h2 left out meanwhile), then its interface vanishes: housekeeping removes it and the
    MAC and address get h2's entries (before: nothing wrote them until a whole reconcile)."""
    from dataplane.agent import converge, housekeeping
    monkeypatch.setattr(housekeeping.networks, "prune_parted", lambda node: None)
    monkeypatch.setattr(housekeeping, "age_learned", lambda maps, age, now: 0)
    monkeypatch.setattr(housekeeping.monitor, "clear_if_abandoned", lambda node: None)
    monkeypatch.setattr(housekeeping.rxgro, "intact", lambda node, st, maps: True)
    monkeypatch.setattr(housekeeping.rxgro, "freed", lambda node, st: False)
    monkeypatch.setattr(housekeeping.pauses, "tick", lambda: None)
    monkeypatch.setattr(housekeeping, "_mend_vxlan_guard", lambda ag, st: None)
    monkeypatch.setattr(housekeeping, "_prune_nexthops", lambda ag, st: None)
    ag = Agent(f"sqlite://{tmp_path}/registry.db")
    ag.node.state = lambda: SimpleNamespace(config=SimpleNamespace(fdb_age_s=300), gateways={})
    ag.maps, ag.counters, ag.sweeper, ag.synced = None, {"vanished": 0}, None, threading.Event()
    rec = ag.create("web", "h2")
    ag.sandboxes["web"] = SimpleNamespace(name="web", vni=256, mac=rec.mac, ip=rec.ip)

    def vanished(node):
        return [ag.sandboxes.pop("web")]
    monkeypatch.setattr(housekeeping, "vanished", vanished)
    calls = []
    monkeypatch.setattr(converge, "single", lambda ag_, fine: calls.append(fine))
    try:
        housekeeping.tick(ag)
        assert calls == [{256: {("ep", "web"), ("mac", rec.mac), ("ip", rec.ip)}}]
    finally:
        ag.reg.close()
