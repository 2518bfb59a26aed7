"""Snapshots (store.Registry.snapshot): the five prefixes read at one revision,
on etcd over gRPC (registry/etcd_grpc.py) with the JSON gateway as the way
back; both ways give the same records, malformed ones listed, never fatal."""

from __future__ import annotations

import pytest

from dataplane.registry import Endpoint, open_registry
from dataplane.registry.kv import Txn
from dataplane.registry.store import key


def fill(reg, n: int = 300) -> None:
    reg.network_create("n1", 256, "10.64.0.0/16")
    for i in range(0, n, 40):
        t = Txn()
        for j in range(i, min(n, i + 40)):
            e = Endpoint.make(f"b{j}", "n1", "h2", f"02:42:0a:40:{j >> 8:02x}:{j & 255:02x}",
                              f"10.64.{1 + j // 200}.{1 + j % 200}")
            t.put(key("endpoints", e.id), e.to_json()).put(key("ipam", "n1", e.ip), e.id.encode())
            t.put(key("macs", "n1", e.mac), e.id.encode())
        assert reg.kv.commit(t)[0]
    reg.kv.commit(Txn().put(key("endpoints", "junk"), b"{not json"))


def test_a_snapshot_holds_every_record_at_one_revision(reg):
    fill(reg)
    snap = reg.snapshot()
    assert len(snap.endpoints) == 300 and len(snap.macs) == 300 and len(snap.ipam) == 300
    assert snap.networks["n1"].vni == 256 and snap.bad and "junk" in snap.bad[0]
    assert snap.rev == reg.kv.range_exact("/dataplane/none")[0]


def test_records_and_claims_read_apart_add_up_to_a_snapshot(reg):
    """snapshot(claims=False) then claims(): every record and claim once, each bad record
    reported by the read that holds it, and only there."""
    fill(reg)
    reg.kv.commit(Txn().put(key("networks", "broken"), b"{not json"))
    records, claims = reg.snapshot(claims=False), reg.claims()
    assert not records.claims_read and records.macs == {} and records.ipam == {}
    assert len(records.endpoints) == 300 and set(records.networks) == {"n1"}
    assert len(claims.macs) == 300 and len(claims.ipam) == 300 and claims.networks == {}
    assert any("junk" in b for b in records.bad) and any("broken" in b for b in records.bad)
    assert claims.bad == [], "a bad record is reported by the read that holds it, not again"


@pytest.fixture
def etcd_registry_url(etcd_url):
    """gRPC is etcd's: these run on the session's etcd only, from an empty keyspace."""
    from tests.registry.conftest import _b64
    from dataplane.registry.store import PREFIX
    reg = open_registry(etcd_url)
    reg.kv._post("/kv/deleterange", {"key": _b64(PREFIX), "range_end": _b64(PREFIX[:-1] + "0")})
    reg.close()
    return etcd_url


def test_grpc_and_the_gateway_read_the_same(etcd_registry_url):
    reg = open_registry(etcd_registry_url)
    try:
        fill(reg)
        over_grpc = reg.snapshot()
        assert reg.kv.grpc_fallbacks == 0, "the read went over gRPC"
        reg.kv.use_grpc = False
        over_json = reg.snapshot()
        assert over_grpc.rev == over_json.rev
        for part in ("networks", "hosts", "endpoints", "macs", "ipam", "bad"):
            assert getattr(over_grpc, part) == getattr(over_json, part), part
    finally:
        reg.close()


def test_a_member_that_refuses_grpc_is_read_through_the_gateway(etcd_registry_url, monkeypatch):
    """A proxy that speaks only HTTP/1.1 in front of etcd, say: the snapshot goes on."""
    from dataplane.registry import etcd_grpc
    reg = open_registry(etcd_registry_url)
    try:
        fill(reg, 40)

        def refuse(*a, **kw):
            raise etcd_grpc.GrpcUnavailable("UNAVAILABLE: HTTP/1.1 only")
        monkeypatch.setattr(etcd_grpc.Channels, "range", refuse)
        snap = reg.snapshot()
        assert len(snap.endpoints) == 40 and reg.kv.grpc_fallbacks == 5, "every prefix read through the gateway"
    finally:
        reg.close()
