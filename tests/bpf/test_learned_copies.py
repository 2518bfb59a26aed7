"""The per-CPU copies of the two hash lookups a network without a registry makes
per frame: where a learned MAC lives (bpf/lib/fdb.h, learned_vtep) and whether
a VTEP is one of the VNI's peers (bpf/lib/local.h, vtep_is_peer). Each test
makes the copy first (same frame, same CPU), then changes the map or lets time
pass, and expects the next frame to follow."""

import ctypes
import os
import time

from scapy.layers.inet import IP
from scapy.layers.l2 import Ether

from tests import packets as P
from tests.bpf.conftest import (EP_IFINDEX, EP_IP, EP_MAC, LOCAL_IP, OTHER_PEER_IP, PEER_IP, TC_ACT_REDIRECT, VNI,
                                XDP_DROP, XDP_PASS, be32)
from tests.bpf.test_local_copies import dropped, one_cpu, warm  # noqa: F401 (one_cpu: an autouse fixture)

MAC, IP_ADDR = "02:42:0a:01:00:7c", "10.1.0.124"      # no static entry: learned only
TO_MAC = bytes(P.inner_ipv4(EP_MAC, MAC, EP_IP, IP_ADDR))


def from_vtep(vtep, mac=MAC):
    return bytes(P.vxlan(P.inner_ipv4(mac, EP_MAC, IP_ADDR, EP_IP), VNI, vtep, LOCAL_IP))


def sent_to(hx):
    """The outer destination of the next frame toward MAC, or None if it was not encapsulated."""
    tx = hx.stats(VNI)["tx_packets"]
    ret, out = hx.run_tc("from_endpoint", TO_MAC, EP_IFINDEX)
    if hx.stats(VNI)["tx_packets"] == tx:
        return None
    assert ret == TC_ACT_REDIRECT
    return Ether(out)[IP].dst


def learned_at(hx, vtep):
    warm(hx, "from_overlay", from_vtep(vtep), 0)
    assert hx.maps.dp_learned.get(hx.mac_key(VNI, MAC)).vtep == be32(vtep)
    for _ in range(3):
        assert sent_to(hx) == vtep


def copy_on_this_cpu(hx, name, match):
    """The entry of per-CPU map name on this CPU for which match(entry) holds, if any."""
    cpu = min(os.sched_getaffinity(0))
    m = getattr(hx.maps, name)
    for i in range(hx.abi.constants["DP_MAP_LOCAL_COPIES"]):
        c = m.get(ctypes.c_uint32(i))[cpu]
        if c.gen and match(c):
            return c
    return None


def test_a_learned_destination_is_sent_from_a_copy(hx):
    """Else the tests below would pass with the copy switched off."""
    learned_at(hx, PEER_IP)
    key = bytes(hx.mac_key(VNI, MAC))
    c = copy_on_this_cpu(hx, "dp_dst_copies", lambda c: bytes(c.key) == key)
    assert c is not None
    assert (c.gen, c.vtep) == (hx.maps.dp_local_gen.get(ctypes.c_uint32(0)).value, be32(PEER_IP))


def test_a_learned_destination_the_control_plane_removes_is_not_used(hx):
    learned_at(hx, PEER_IP)
    hx.maps.dp_learned.delete(hx.mac_key(VNI, MAC))      # aged out or flushed by the agent
    assert sent_to(hx) is None


def test_a_move_this_cpu_learns_is_followed_at_once(hx):
    learned_at(hx, PEER_IP)
    assert hx.run_tc("from_overlay", from_vtep(OTHER_PEER_IP), 0)[0] == TC_ACT_REDIRECT
    assert sent_to(hx) == OTHER_PEER_IP


def moved_by_another_cpu(hx):
    """dp_learned says MAC is at OTHER_PEER_IP, written as the fast path writes: no generation."""
    from dataplane.kernel import bpfsys
    moved = hx.S["dp_fdb_entry"](vtep=be32(OTHER_PEER_IP), last_seen_ns=time.monotonic_ns())
    bpfsys.update(hx.maps.dp_learned.fd, hx.mac_key(VNI, MAC), moved, bpfsys.BPF_ANY, what="dp_learned")


def test_a_move_another_cpu_learned_first_is_followed_on_the_next_frame_from_there(hx):
    """This CPU's frame from the new VTEP finds the entry already moved (nothing to write),
    and still retires this CPU's copy of the old place."""
    learned_at(hx, PEER_IP)
    moved_by_another_cpu(hx)
    assert hx.run_tc("from_overlay", from_vtep(OTHER_PEER_IP), 0)[0] == TC_ACT_REDIRECT
    assert sent_to(hx) == OTHER_PEER_IP


def test_a_move_another_cpu_learns_is_followed_within_the_refresh(hx):
    """Another CPU's write reaches no generation: this CPU's copy holds for at most
    DP_LEARN_REFRESH_NS after its lookup."""
    learned_at(hx, PEER_IP)
    moved_by_another_cpu(hx)
    deadline = time.monotonic() + hx.abi.constants["DP_LEARN_REFRESH_NS"] / 1e9 + 0.5
    while sent_to(hx) != OTHER_PEER_IP:
        assert time.monotonic() < deadline, "still sent to the old VTEP past the refresh"
        time.sleep(0.05)


def test_a_learned_destination_past_its_age_is_not_used(hx):
    """The copy lasts no longer than the entry would: its age, not the refresh, ends it here."""
    age = 2 * 10**9
    hx.configure(fdb_age_ns=age)
    left = 0.5                                            # and the copy's other bound, the refresh, is 1 s
    entry = hx.S["dp_fdb_entry"](vtep=be32(PEER_IP), last_seen_ns=time.monotonic_ns() - age + int(left * 1e9))
    hx.maps.dp_learned.put(hx.mac_key(VNI, MAC), entry)
    assert sent_to(hx) == PEER_IP                         # the copy is made now
    time.sleep(left + 0.25)                               # past the age, within the refresh
    assert sent_to(hx) is None


def test_a_peer_removed_is_refused_at_once(hx):
    hx.configure(peer_check=True)
    warm(hx, "from_overlay", from_vtep(PEER_IP), 0)
    assert copy_on_this_cpu(hx, "dp_vtep_copies", lambda c: (c.key.vni, c.key.ip, c.found)
                            == (VNI, be32(PEER_IP), 1)) is not None
    hx.maps.dp_vteps.delete(hx.S["dp_ip_key"](vni=VNI, ip=be32(PEER_IP)))   # restored by the next baseline
    dropped(hx, "from_overlay", from_vtep(PEER_IP), 0, VNI, "UNKNOWN_PEER")


def test_a_peer_added_is_admitted_at_once(hx):
    hx.configure(peer_check=True)
    key = hx.S["dp_ip_key"](vni=VNI, ip=be32(OTHER_PEER_IP))
    for _ in range(3):
        dropped(hx, "from_overlay", from_vtep(OTHER_PEER_IP), 0, VNI, "UNKNOWN_PEER")
    hx.maps.dp_vteps.put(key, ctypes.c_uint32(1))
    try:
        assert hx.run_tc("from_overlay", from_vtep(OTHER_PEER_IP), 0)[0] == TC_ACT_REDIRECT
    finally:
        hx.maps.dp_vteps.delete(key)


def test_the_xdp_guard_refuses_a_removed_peer_at_once(hx):
    hx.configure(peer_check=True)
    for _ in range(3):
        assert hx.run_xdp(from_vtep(PEER_IP))[0] == XDP_PASS
    hx.maps.dp_vteps.delete(hx.S["dp_ip_key"](vni=VNI, ip=be32(PEER_IP)))   # restored by the next baseline
    assert hx.run_xdp(from_vtep(PEER_IP))[0] == XDP_DROP
