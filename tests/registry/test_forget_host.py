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
