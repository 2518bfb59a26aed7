"""A punted miss the agent's view cannot place is looked up in the registry by
another thread (agent/lookups.py): the main loop goes on while the registry is
slow, one look-up serves every frame waiting for the same MAC, and an answer
the watch has overtaken meanwhile is not put back into the view. The registry
is a real SQLite one; its reads are held at a chosen point to stand for a slow
etcd member."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from dataplane.agent import lookups, punts, slowpath
from dataplane.core import model
from dataplane.registry.kv import Txn
from dataplane.registry.records import Host
from tests.unit.test_view_ahead import Agent

H2 = "198.18.0.2"


@pytest.fixture
def ag(tmp_path, monkeypatch):
    a = Agent(f"sqlite://{tmp_path}/registry.db", "h1")
    a.connected, a.stopping = threading.Event(), threading.Event()
    a.connected.set()
    a.sent, a.converged = [], []
    a.sender = SimpleNamespace(send=lambda vni, vtep, frame: a.sent.append((vni, vtep, frame)))
    a.remote = SimpleNamespace(repair=lambda *args: 0)
    monkeypatch.setattr(punts.converge, "whole", lambda ag, vnis=None: a.converged.append(("whole", vnis)))
    monkeypatch.setattr(punts.converge, "single", lambda ag, fine: a.converged.append(("single", fine)))
    monkeypatch.setattr(punts.networks, "flood_list", lambda st, vni: [H2])
    a.reg.network_create("n", 256, "10.9.0.0/24")
    for name, ip in (("h1", "198.18.0.1"), ("h2", H2)):
        a.reg.host_register(Host.make(name, ip), a.reg.kv.lease_grant(60))
    a.view.load(a.reg.snapshot())
    yield a
    a.stopping.set()
    a.reg.close()


def punt(mac: str, n: int = 0) -> slowpath.Punt:
    frame = model.mac_bytes(mac) + bytes.fromhex("02000000aa01") + b"\x08\x00" + bytes([n]) * 46
    return slowpath.Punt(vni=256, ifindex=7, reason=slowpath.UNKNOWN_DST, frame=frame, age_ns=0)


def held_reads(monkeypatch, ag):
    """ag's registry reads wait for the returned go event; there is set when one waits.
    Returns (there, go, the keys read)."""
    there, go, real, keys = threading.Event(), threading.Event(), ag.reg.kv.get, []

    def get(k, *a, **kw):
        keys.append(k)
        there.set()
        assert go.wait(20)
        return real(k, *a, **kw)
    monkeypatch.setattr(ag.reg.kv, "get", get)
    return there, go, keys


def answer(ag, h: punts.PuntHandler) -> None:
    kind, data = ag.q.get(timeout=10)
    assert kind == "looked_up"
    h.looked_up(data)


def test_the_main_loop_goes_on_while_a_lookup_waits_on_the_registry(ag, monkeypatch):
    """Before, the main loop made the three reads itself, under the agent's lock: a slow
    member held registry events, the heartbeat and every other punt for each read."""
    web = ag.reg.endpoint_create("web", "n", "h2")        # the watch has not brought it yet
    there, go, _ = held_reads(monkeypatch, ag)
    h = punts.PuntHandler(ag)
    t = threading.Thread(target=h.handle, args=([punt(web.mac)],))
    try:
        t.start()
        assert there.wait(5)
        t.join(2)
        assert not t.is_alive(), "the main loop waits on the registry read"
        assert ag.lock.acquire(timeout=1)
        ag.lock.release()
        assert ag.sent == []
    finally:
        go.set()
        t.join(10)
    answer(ag, h)
    assert ag.sent == [(256, H2, punt(web.mac).frame)]
    assert ag.view.endpoints["web"] == web
    assert ag.converged == [("single", {256: {("mac", web.mac), ("ip", web.ip), ("ep", "web")}})], \
        "the looked-up endpoint's entries alone, not its whole VNI"
    assert h.counts["looked_up"] == 1 and h.counts["resolved"] == 1


def test_frames_waiting_for_one_mac_share_one_lookup(ag, monkeypatch):
    web = ag.reg.endpoint_create("web", "n", "h2")
    there, go, keys = held_reads(monkeypatch, ag)
    h = punts.PuntHandler(ag)
    h.handle([punt(web.mac, i) for i in range(3)])
    assert there.wait(5)
    h.handle([punt(web.mac, 3)])
    go.set()
    answer(ag, h)
    assert [f for _, _, f in ag.sent] == [punt(web.mac, i).frame for i in range(4)]
    assert sum("/macs/" in k for k in keys) == 1, keys
    assert h.counts["looked_up"] == 4 and h.counts["lookup_limited"] == 0


def test_a_mac_nobody_owns_is_flooded_once_the_registry_says_so(ag):
    h = punts.PuntHandler(ag)
    h.handle([punt("02:00:00:00:99:99")])
    answer(ag, h)
    assert ag.sent == [(256, H2, punt("02:00:00:00:99:99").frame)]
    assert h.counts["unresolved"] == 1 and h.counts["looked_up"] == 0


def arp(ip: str) -> slowpath.Punt:
    """An ARP request from 10.9.0.200 for ip."""
    frame = (b"\xff" * 6 + bytes.fromhex("02000000aa01") + b"\x08\x06" + bytes.fromhex("0001080006040001")
             + bytes.fromhex("02000000aa01") + bytes([10, 9, 0, 200]) + b"\0" * 6 + bytes(map(int, ip.split("."))))
    return slowpath.Punt(vni=256, ifindex=7, reason=slowpath.ARP_MISS, frame=frame, age_ns=0)


def test_an_arp_request_is_looked_up_by_its_address(ag):
    web = ag.reg.endpoint_create("web", "n", "h2")
    h = punts.PuntHandler(ag)
    h.handle([arp(web.ip)])
    answer(ag, h)
    assert ag.sent == [(256, H2, arp(web.ip).frame)] and h.counts["looked_up"] == 1


def test_an_answer_older_than_what_the_view_has_seen_is_not_put_back(ag, monkeypatch):
    """The claim and the record are read; the endpoint is removed and its host registers
    again before the host's record is read; the view has the removal, not the host's put.
    The answer's newest revision (the host's) is past the view, its claim's is not: it must
    not bring the removed endpoint back."""
    rev0 = ag.view.rev
    web = ag.reg.endpoint_create("web", "n", "h2")
    real, at_host, go = ag.reg.kv.get, threading.Event(), threading.Event()

    def get(k, *a, **kw):
        if k.endswith("/hosts/h2") and threading.current_thread().name == "lookups":
            at_host.set()
            assert go.wait(20)
        return real(k, *a, **kw)
    monkeypatch.setattr(ag.reg.kv, "get", get)
    h = punts.PuntHandler(ag)
    h.handle([punt(web.mac)])
    assert at_host.wait(5)
    ag.reg.endpoint_rm("web")
    removed = ag.reg.kv.range_exact("/dataplane/hosts/h2")[0]
    item = ag.reg.kv.get("/dataplane/hosts/h2")            # h2 registers again (its agent restarted)
    assert ag.reg.kv.commit(Txn().put(item.key, item.value, ag.reg.kv.lease_grant(60)))[0]
    go.set()
    w = ag.reg.watch(rev0 + 1)                              # the watch has come as far as the removal
    try:
        while ag.view.rev < removed:
            for ev in next(w):
                if ev.rev <= removed:
                    ag.view.apply(ev, on_endpoint=lambda name, rec: None)
    finally:
        w.close()
    assert "web" not in ag.view.endpoints and ag.view.rev < ag.reg.kv.range_exact("/dataplane/hosts/h2")[0]
    answer(ag, h)
    assert "web" not in ag.view.endpoints, "the answer put the removed endpoint back"
    assert h.counts["looked_up"] == 0 and h.counts["unresolved"] == 1


def test_an_answer_does_not_undo_a_write_of_ours_ahead_of_the_watch(ag, monkeypatch):
    web = ag.reg.endpoint_create("web", "n", "h2")
    there, go, _ = held_reads(monkeypatch, ag)
    h = punts.PuntHandler(ag)
    h.handle([punt(web.mac)])
    assert there.wait(5)
    with ag.lock:                                  # our own removal of it, its event still to come
        ag.view.wrote("web", None, ag.view.rev + 5)
    go.set()
    answer(ag, h)
    assert "web" not in ag.view.endpoints and h.counts["looked_up"] == 0


def test_lookups_given_up_make_room_for_new_ones(ag, monkeypatch):
    """Reads that hang while the watch still looks live: once the room for look-ups is full,
    those asked longer ago than a punt stays fresh are given up (their frames counted stale),
    not every later miss refused until the registry answers."""
    monkeypatch.setattr(lookups, "PENDING_MAX", 2)
    there, go, _ = held_reads(monkeypatch, ag)
    h = punts.PuntHandler(ag)
    try:
        h.handle([punt("02:00:00:00:99:01"), punt("02:00:00:00:99:02")])
        assert there.wait(5)
        h.handle([punt("02:00:00:00:99:03")])
        assert h.counts["lookup_limited"] == 1 and len(h.lookups.pending) == 2
        monkeypatch.setattr(slowpath, "STALE_NS", 0)       # the two are past fresh now
        h.handle([punt("02:00:00:00:99:04")])
        assert h.counts["stale"] == 2 and list(h.lookups.pending) == [("n", "macs", "02:00:00:00:99:04")]
    finally:
        go.set()
    for _ in range(3):                                     # the given-up answers find nothing held
        answer(ag, h)
    assert h.counts["stale"] == 3 and ag.sent == []


def test_an_answer_the_watch_overtook_is_not_put_back(ag, monkeypatch):
    """Read, then removed, and the removal's event applied before the answer is handled:
    the endpoint must not come back into the view (the frame is flooded as unknown)."""
    rev0 = ag.view.rev
    web = ag.reg.endpoint_create("web", "n", "h2")
    h = punts.PuntHandler(ag)
    h.handle([punt(web.mac)])
    kind, data = ag.q.get(timeout=10)
    assert kind == "looked_up"
    ag.reg.endpoint_rm("web")
    ag.apply_events_after(rev0, until=ag.reg.kv.range_exact("/dataplane/hosts/h2")[0])  # the store's revision
    assert "web" not in ag.view.endpoints
    h.looked_up(data)
    assert "web" not in ag.view.endpoints and h.counts["looked_up"] == 0
    assert h.counts["unresolved"] == 1


def test_the_node_state_is_read_only_for_a_flood(ag, monkeypatch):
    """A batch of punts read the node's whole state file first (2.3 ms at 1,000 endpoints), which
    only a flood uses: the punt rate the agent could take fell as the node grew."""
    web = ag.reg.endpoint_create("web", "n", "h2")
    ag.view.load(ag.reg.snapshot())
    reads = []
    monkeypatch.setattr(ag.node, "require_up", lambda shared=False: reads.append(1) or SimpleNamespace())
    h = punts.PuntHandler(ag)
    h.handle([punt(web.mac), punt(web.mac, 1)])
    assert len(ag.sent) == 2 and reads == []
    ag.connected.clear()                    # no look-up: the unknown are flooded
    h.handle([punt("02:00:00:00:99:01"), punt("02:00:00:00:99:02")])
    assert h.counts["unresolved"] == 2 and reads == [1]
