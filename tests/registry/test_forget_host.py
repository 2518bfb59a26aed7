"""A host gone for good (its machine retired; no `dataplane down` ran): endpoint records
are not leased and only their host may remove them, so its endpoints, their addresses and
MACs, and its reservations stayed claimed for ever and `network rm` said "in use".
`registry forget-host` removes them, on SQLite and on a real etcd, and refuses while the
host is alive."""

from __future__ import annotations

import pytest

from dataplane.core.errors import Conflict
from dataplane.registry.records import Host


def test_a_host_gone_for_good_is_forgotten_and_a_live_one_is_not(reg):
    reg.network_create("n", 256, "10.9.0.0/24")
    lease = {h: reg.kv.lease_grant(60) for h in ("h1", "h2")}
    for h, ip in (("h1", "198.18.0.1"), ("h2", "198.18.0.2")):
        reg.host_register(Host.make(h, ip), lease[h])
    a = reg.endpoint_create("a", "n", "h2")
    reg.endpoint_create("b", "n", "h2")
    keep = reg.endpoint_create("c", "n", "h1")
    reg.endpoint_move_begin("c", "h2")                     # a move to the dead host, never finished
    reg.address_reserve("n", "h2", lease["h2"], ip="10.9.0.50")

    with pytest.raises(Conflict, match="host h2 is alive"):
        reg.host_forget("h2")
    assert {e.id for e in reg.endpoints(host="h2")} == {"a", "b"}

    reg.kv.lease_revoke(lease["h2"])                        # what its lease TTL running out does
    reg.address_reserve("n", "h2", lease["h1"], ip="10.9.0.51")   # a reservation still held (another lease)
    out = reg.host_forget("h2")
    assert sorted(out["endpoints_removed"]) == ["a", "b"] and out["moves_taken_back"] == ["c"], out
    assert out["reservations_released"] == 1, out
    assert reg.endpoints(host="h2") == [] and reg.reservations("n") == []
    c = reg.endpoint("c")
    assert (c.host, c.moving_to) == ("h1", None) and c.ip == keep.ip
    assert reg.endpoint_create("again", "n", "h1", ip=a.ip).ip == a.ip, "its address is free again"
    assert reg.host_forget("h2")["endpoints_removed"] == [], "idempotent"


def test_a_host_that_comes_back_while_it_is_forgotten_keeps_the_rest(reg, monkeypatch):
    """The host was found dead once, then its endpoints were removed one by one: an agent that
    registered meanwhile (a partition healed) had them removed under it, its sandboxes torn
    down (a review found it). Now it is asked again before each: the rest stay."""
    reg.network_create("n", 256, "10.9.0.0/24")
    for i in range(4):
        reg.endpoint_create(f"e{i}", "n", "h2")
    rm, came_back = reg.endpoint_rm, []

    def rm_then_register(id, **kw):
        out = rm(id, **kw)
        if not came_back:
            came_back.append(id)
            reg.host_register(Host.make("h2", "198.18.0.2"), reg.kv.lease_grant(60))
        return out
    monkeypatch.setattr(reg, "endpoint_rm", rm_then_register)
    with pytest.raises(Conflict, match="came back after 1 of its endpoints"):
        reg.host_forget("h2")
    assert len(reg.endpoints(host="h2")) == 3


def test_reservations_of_a_host_that_came_back_stay(reg, monkeypatch):
    """A host with no endpoint left, only reservations (Docker's --aux-addresses): found dead once,
    it came back before they were dropped, and lost them anyway (a review found it)."""
    reg.network_create("n", 256, "10.9.0.0/24")
    other = reg.kv.lease_grant(60)
    reg.address_reserve("n", "h3", other, ip="10.9.0.60")
    snapshot = reg.snapshot

    def snapshot_then_back(**kw):
        out = snapshot(**kw)
        reg.host_register(Host.make("h3", "198.18.0.3"), reg.kv.lease_grant(60))
        return out
    monkeypatch.setattr(reg, "snapshot", snapshot_then_back)
    with pytest.raises(Conflict, match="came back after 0 of its endpoints"):
        reg.host_forget("h3")
    assert [r["ip"] for r in reg.reservations("n")] == ["10.9.0.60"]
