"""A VNI whose entries a full map refused ("short") was reconciled whole again after every
single change of any VNI: 360 ms a registry event with 7 VNIs of 10,000 remote MACs over
the 65,536-entry maps (a helper's audit, fake maps). Now only after a change removed entries
or the node's own endpoints or gateways went (room was made); otherwise converge.retry's
backoff takes it."""

from __future__ import annotations

from types import SimpleNamespace

from dataplane.agent import converge
from dataplane.node.fdb import RemoteTable
from tests.unit.test_remote_table import FakeMaps


def agent(remote, endpoints: int = 2) -> SimpleNamespace:
    st = SimpleNamespace(networks={256: None}, endpoints={f"e{i}": None for i in range(endpoints)}, gateways={})
    return SimpleNamespace(node=SimpleNamespace(require_up=lambda shared=False: st),
                           remote=remote, skipped={}, counters={"bad_records": 0}, vni_errors={}, view=None)


def patched(monkeypatch, calls):
    monkeypatch.setattr(converge, "facts", lambda ag, st: None)
    monkeypatch.setattr(converge, "patch", lambda view, lf, v, keys: SimpleNamespace(
        judged=set(), skipped={}, unroutable=set()))
    monkeypatch.setattr(converge, "apply_patches", lambda node, remote, patches, st: {})
    monkeypatch.setattr(converge, "whole", lambda ag, vnis: calls.append(sorted(vnis)))


def test_a_short_vni_waits_for_its_retry_unless_room_was_made(monkeypatch):
    calls = []
    patched(monkeypatch, calls)
    remote = RemoteTable(FakeMaps(), set())
    remote.short = {300}
    fine = {256: {("mac", "02:00:00:00:00:01")}}
    converge.single(agent(remote), fine)
    converge.single(agent(remote), fine)
    assert calls == []
    remote.freed = True                     # a change removed entries of ours
    converge.single(agent(remote), fine)
    assert calls == [[300]]
    converge.single(agent(remote, endpoints=1), fine)     # one of the node's own endpoints went
    assert calls == [[300], [300]]
    converge.single(agent(remote, endpoints=1), fine)
    assert calls == [[300], [300]]


def test_the_table_says_when_a_change_removed_entries():
    t = RemoteTable(FakeMaps(), set())         # its bookkeeping (test_remote_table.py)
    t.patch(256, {"02:00:00:00:00:01": "198.18.0.2"}, {"10.0.0.1": "02:00:00:00:00:01"})
    assert not t.room_made(0)
    t.patch(256, {"02:00:00:00:00:01": None}, {"10.0.0.1": None})
    assert t.room_made(0) and not t.room_made(0)
    t.apply(256, {"02:00:00:00:00:02": "198.18.0.2"}, {})
    assert not t.room_made(0)
    t.apply(256, {}, {})
    assert t.room_made(0)
    assert not t.room_made(3) and t.room_made(2) and not t.room_made(2)
