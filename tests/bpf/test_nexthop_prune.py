"""node/nexthops.prune on the real dp_nexthops: the fast path adds an entry for every VTEP it
sends to and never removes one, so over a cluster's life (peers that leave, learned MACs'
VTEPs with the peer check off) the plain hash filled, and full it refused new peers' entries:
their ARP and flooded copies were dropped as no_nexthop (a review found it). The agent's
housekeeping now removes entries of VTEPs that are no peer now and were not refreshed for
IDLE_NS; a peer's, a static one and a fresh one stay."""

import ctypes
import time
from types import SimpleNamespace

from dataplane.kernel import bpfsys
from dataplane.node import nexthops
from tests.bpf.conftest import be32


def state(**peers):
    return SimpleNamespace(flooded=peers.get("flooded", {}), peers=peers.get("peers", {}),
                           registry_peers=peers.get("registry_peers", {}), parted=peers.get("parted", {}))


def present(hx, ip: str) -> bool:
    return hx.maps.dp_nexthops.get(ctypes.c_uint32(be32(ip))) is not None


def test_idle_entries_of_vteps_that_are_no_peer_go(hx):
    now = time.monotonic_ns()
    idle = now - nexthops.IDLE_NS - 10**9
    for k in hx.maps.dp_nexthops.keys():
        hx.maps.dp_nexthops.delete(k)
    hx.nexthop("192.0.2.11", updated_ns=idle)       # a flood list's
    hx.nexthop("192.0.2.12", updated_ns=idle)       # a static peer's
    hx.nexthop("192.0.2.13", updated_ns=idle)       # parted, still accepted
    hx.nexthop("192.0.2.14", updated_ns=idle, flags=nexthops.STATIC)
    hx.nexthop("192.0.2.15", updated_ns=now)        # no peer, but used just now
    hx.nexthop("192.0.2.16", updated_ns=idle)       # a peer that left
    st = state(flooded={256: ["192.0.2.11"]}, peers={257: ["192.0.2.12"]}, parted={256: {"192.0.2.13": 1.0}})
    assert nexthops.prune(hx.maps, st, now) == 1
    assert not present(hx, "192.0.2.16")
    assert all(present(hx, f"192.0.2.{i}") for i in range(11, 16))
    assert nexthops.prune(hx.maps, st, now) == 0


def test_a_table_full_of_departed_vteps_makes_room(hx):
    m, now = hx.maps.dp_nexthops, time.monotonic_ns()
    for k in m.keys():
        m.delete(k)
    size = bpfsys.map_info(m.fd).max_entries
    idle = now - nexthops.IDLE_NS - 10**9
    nh = hx.S["dp_nexthop"](ifindex=1, updated_ns=idle)
    m.put_many([(ctypes.c_uint32(be32(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")), nh)
                for i in range(1, size + 1)])
    assert m.count() == size
    peer = "10.0.0.7"
    assert nexthops.prune(hx.maps, state(registry_peers={256: [peer]}), now) == size - 1
    assert m.count() == 1 and present(hx, peer)
