"""One suite, both backends (SQLite file, real etcd): networks, IPAM, leases,
watch, concurrency and malformed records."""

from __future__ import annotations

import threading
import time

import pytest

from dataplane.core.errors import Conflict, NotFound, UsageError
from dataplane.registry import Host, change, open_registry
from dataplane.registry.kv import Txn
from dataplane.registry.store import key


def test_network_create_get_list_rm(reg):
    net = reg.network_create("net1", 256)
    assert (net.subnet, net.gateway, net.mtu, net.port) == ("10.1.0.0/24", "10.1.0.1", 1450, 4789)
    assert reg.network("net1") == net
    assert reg.network_by_vni(256) == net
    assert [n.name for n in reg.networks()] == ["net1"]
    assert reg.network_create("net1", 256, exist_ok=True) == net
    with pytest.raises(Conflict, match="exists"):
        reg.network_create("net1", 256)
    with pytest.raises(Conflict, match="VNI 256 belongs to network net1"):
        reg.network_create("other", 256)
    reg.network_rm("net1")
    with pytest.raises(NotFound):
        reg.network("net1")
    assert reg.network_by_vni(256) is None
    reg.network_create("other", 256)   # the VNI is free again


def test_a_network_goes_with_its_gateways_host_addresses(reg):
    """Each host's router holds an address of its own in the subnet, registered as the endpoint
    dpgw.<VNI>.<host> (agent/routers.py) while the network is served there, which it is until
    the network goes: counted as the network's endpoints, they kept `network rm` refusing for
    good. They go with it, claims and all; any other endpoint still keeps it."""
    reg.network_create("n", 256)
    reg.endpoint_create("dpgw.256.h1", "n", "h1")
    reg.endpoint_create("dpgw.256.h2", "n", "h2")
    reg.endpoint_create("dpgw.256.h3", "n", "h1")        # not h1's router's: an endpoint like another
    with pytest.raises(Conflict, match="has 1 endpoint.*dpgw.256.h3"):
        reg.network_rm("n")
    reg.endpoint_rm("dpgw.256.h3")
    reg.network_rm("n")
    assert reg.endpoints() == [] and reg.snapshot().ipam == {} and reg.snapshot().macs == {}
    reg.network_create("n", 256)
    assert reg.endpoint_create("dpgw.256.h1", "n", "h1").ip == "10.1.0.2", "its address free again"


@pytest.mark.parametrize("args, msg", [
    (("n", 0), "bad VNI"), (("n", 16777216), "bad VNI"), (("n", 5, "10.0.0.0/33"), "bad subnet"),
    (("n", 5, "10.0.0.0/24", "10.0.1.1"), "not a host address"), (("bad name!", 5), "bad network name"),
    (("n", 5, None, None, 100), "bad MTU"), (("n", 5, None, None, None, 0), "bad UDP port"),
    # created, then unreadable (its gateway 224.0.0.1 refused on every read): not listed, not removable
    (("n", 5, "224.0.0.0/24"), "must not overlap"), (("n", 5, "127.0.0.0/24"), "must not overlap"),
    (("n", 5, "0.0.0.0/8"), "must not overlap"),
])
def test_network_validation(reg, args, msg):
    with pytest.raises(UsageError, match=msg):
        reg.network_create(*args)
    assert reg.networks() == []
    assert reg.snapshot().bad == [], "nothing stored"


def test_ipam_next_free_skips_reserved_and_reuses_released(reg):
    reg.network_create("n", 300, "10.9.0.0/29", gateway="10.9.0.2")
    ips = [reg.endpoint_create(f"e{i}", "n", "h1").ip for i in range(5)]
    assert ips == ["10.9.0.1", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
    with pytest.raises(Conflict, match="no free address"):
        reg.endpoint_create("e5", "n", "h1")
    reg.endpoint_rm("e2")
    assert reg.endpoint_create("e6", "n", "h2").ip == "10.9.0.4"
    ep = reg.endpoint("e6")
    assert (ep.host, ep.mac) == ("h2", "02:42:0a:09:00:04")


def test_endpoint_conflicts_and_validation(reg):
    reg.network_create("n", 301)
    reg.endpoint_create("a", "n", "h1", ip="10.1.45.10", mac="02:00:00:00:00:0a")
    with pytest.raises(Conflict, match="endpoint a exists"):
        reg.endpoint_create("a", "n", "h1")
    with pytest.raises(Conflict, match="address 10.1.45.10 is in use on n by a"):
        reg.endpoint_create("b", "n", "h1", ip="10.1.45.10")
    with pytest.raises(Conflict, match="MAC 02:00:00:00:00:0a is in use"):
        reg.endpoint_create("b", "n", "h1", ip="10.1.45.11", mac="02:00:00:00:00:0a")
    for kw, msg in [({"ip": "10.1.46.1"}, "not a free host address"), ({"ip": "10.1.45.1"}, "reserved"),
                    ({"mac": "01:00:00:00:00:01"}, "bad MAC"), ({"ip": "x"}, "bad endpoint address"),
                    ({"mac": "02:42:0A:01:2D:01"}, "the gateway's")]:    # 10.1.45.1's: every router holds it
        with pytest.raises(UsageError, match=msg):
            reg.endpoint_create("b", "n", "h1", **kw)
    with pytest.raises(NotFound):
        reg.endpoint_create("b", "nonet", "h1")
    with pytest.raises(Conflict, match="has 1 endpoint"):
        reg.network_rm("n")
    assert [e.id for e in reg.endpoints()] == ["a"]


def test_a_move_commits_only_under_its_mark(reg):
    """The old host (or an abort) taking the mark back makes the mover's commit fail:
    make before break, never a move its old host refused."""
    reg.network_create("n", 304)
    reg.endpoint_create("a", "n", "h1")
    with pytest.raises(Conflict, match="taken back"):
        reg.endpoint_move("a", "h2")                   # no mark at all
    reg.endpoint_move_begin("a", "h2")
    reg.endpoint_move_abort("a", "h2")
    with pytest.raises(Conflict, match="taken back"):
        reg.endpoint_move("a", "h2")
    assert reg.endpoint("a").host == "h1"


def test_move_is_one_write(reg):
    reg.network_create("n", 302)
    ep = reg.endpoint_create("a", "n", "h1")
    reg.endpoint_move_begin("a", "h2")
    rev = reg.snapshot().rev
    moved = reg.endpoint_move("a", "h2")
    assert (moved.ip, moved.mac, moved.host) == (ep.ip, ep.mac, "h2")
    events = next(iter(reg.watch(rev + 1)))
    assert [(e.key, change(e).record.host) for e in events] == [(key("endpoints", "a"), "h2")]
    snap = reg.snapshot()
    assert snap.macs == {f"n/{ep.mac}": "a"} and snap.ipam == {f"n/{ep.ip}": "a"}, "claims unchanged"


def test_concurrent_allocation_loses_nothing(registry_url):
    """Two writers (own connections, as two agents have) allocate at once."""
    setup = open_registry(registry_url)
    setup.network_create("n", 303, "10.3.0.0/24")
    results, errors = {}, []

    def writer(tag):
        r = open_registry(registry_url)
        try:
            results[tag] = [r.endpoint_create(f"{tag}{i}", "n", tag).ip for i in range(40)]
        except Exception as e:  # reported below
            errors.append(e)
        finally:
            r.close()
    threads = [threading.Thread(target=writer, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ips = results["a"] + results["b"]
    assert len(set(ips)) == 80
    stored = setup.endpoints(network="n")
    assert sorted(e.ip for e in stored) == sorted(ips)
    setup.close()


def test_lease_expiry_removes_host_and_is_watched(reg):
    rev = reg.snapshot().rev
    lease = reg.kv.lease_grant(2)
    reg.host_register(Host.make("h1", "198.18.0.1"), lease)
    assert [h.name for h in reg.hosts()] == ["h1"]
    assert reg.kv.lease_keepalive(lease)
    deadline = time.monotonic() + 10
    while reg.hosts() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert reg.hosts() == []
    assert not reg.kv.lease_keepalive(lease)
    seen = []
    w = reg.watch(rev + 1)
    for batch in w:
        seen += [(e.key, e.value is None) for e in batch]
        if (key("hosts", "h1"), True) in seen:
            break
    w.close()
    assert seen == [(key("hosts", "h1"), False), (key("hosts", "h1"), True)]


def test_revoke_removes_at_once(reg):
    lease = reg.kv.lease_grant(30)
    reg.host_register(Host.make("h1", "198.18.0.1"), lease)
    reg.kv.lease_revoke(lease)
    assert reg.hosts() == []


def test_watch_replays_in_order_from_a_revision(reg):
    rev = reg.snapshot().rev
    reg.network_create("n", 304)
    reg.endpoint_create("a", "n", "h1")
    reg.endpoint_rm("a")
    got = []
    w = reg.watch(rev + 1)
    for batch in w:
        got += [c for c in map(change, batch) if c and c.kind in ("networks", "endpoints")]
        if len(got) >= 3:
            break
    w.close()
    assert [(c.kind, c.name, c.record is None) for c in got] == [
        ("networks", "n", False), ("endpoints", "a", False), ("endpoints", "a", True)]
    assert got[0].rev < got[1].rev < got[2].rev


def test_malformed_records_are_listed_not_fatal(reg):
    reg.network_create("n", 305)
    reg.endpoint_create("good", "n", "h1")
    bad = {key("endpoints", "junk"): b"{not json", key("endpoints", "vni"): b'{"id": "vni"}',
           key("networks", "big"): b'{"name": "big", "vni": 99999999, "subnet": "10.0.0.0/24", '
                                   b'"gateway": "10.0.0.1", "mtu": 1450, "port": 4789}',
           key("endpoints", "liar"): b'{"id": "other", "network": "n", "host": "h1", '
                                     b'"mac": "02:00:00:00:00:01", "ip": "10.1.49.9"}'}
    txn = Txn()
    for k, v in bad.items():
        txn.put(k, v)
    assert reg.kv.commit(txn)[0]
    snap = reg.snapshot()
    assert list(snap.endpoints) == ["good"] and list(snap.networks) == ["n"]
    assert sorted(b.split(":")[0] for b in snap.bad) == sorted(bad)
    assert any("bad VNI" in b for b in snap.bad) and any("names itself" in b for b in snap.bad)


def test_a_network_record_this_version_cannot_read_is_removed_by_name(reg):
    """A network an older version let in (a multicast subnet: its gateway refused on every read)
    was listed nowhere, `network rm` failed on reading it, and its VNI stayed taken for good."""
    raw = (b'{"name": "bad", "vni": 5, "subnet": "224.0.0.0/24", "gateway": "224.0.0.1", '
           b'"mtu": 1450, "port": 4789}')
    assert reg.kv.commit(Txn().put(key("networks", "bad"), raw).put(key("vnis", 5), b"bad"))[0]
    with pytest.raises(Conflict, match="VNI 5 belongs to network bad"):
        reg.network_create("other", 5)
    reg.network_create("n", 6)
    reg.endpoint_create("e1", "n", "h1")
    assert reg.kv.commit(Txn().put(key("endpoints", "e2"), reg.kv.get(key("endpoints", "e1")).value
                                   .replace(b'"e1"', b'"e2"').replace(b'"n"', b'"bad"')))[0]
    with pytest.raises(Conflict, match="in use"):
        reg.network_rm("bad")                               # an endpoint names it: not yet
    assert reg.kv.commit(Txn().delete(key("endpoints", "e2")))[0]
    assert reg.network_rm("bad") is None
    assert reg.snapshot().bad == [] and reg.kv.get(key("vnis", 5)) is None
    assert reg.network_create("other", 5).vni == 5
    with pytest.raises(NotFound):
        reg.network_rm("bad")


def test_listing_networks_or_endpoints_reads_only_their_prefix(reg):
    """networks() and endpoints() read their own records, not a whole snapshot (the claims,
    two of every three keys, and every other kind): the agent lists networks under its lock."""
    from dataplane.registry.store import key
    reg.network_create("n1", 300)
    reg.endpoint_create("e1", "n1", "h1")
    read = []
    real = reg.kv.range_many

    def range_many(prefixes, then=None):
        read.extend(prefixes)
        return real(prefixes, then)
    reg.kv.range_many = range_many
    assert [n.name for n in reg.networks()] == ["n1"]
    assert [e.id for e in reg.endpoints(network="n1")] == ["e1"]
    assert read == [key("networks", ""), key("endpoints", "")]
