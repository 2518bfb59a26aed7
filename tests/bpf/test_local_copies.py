"""The per-CPU copies of dp_endpoints, dp_local_macs and dp_networks
(bpf/lib/local.h) never outlive a change the control plane makes: every write
through kernel/maps.py retires them (dp_local_gen). Each test makes the copy
first (same frame, same CPU), changes the map, and expects the next frame to
follow the map at once."""

import ctypes
import os

import pytest

from tests import packets as P
from tests.bpf.conftest import (EP2_IFINDEX, EP2_MAC, EP2_IP, EP_IFINDEX, EP_IP, EP_MAC, LOCAL_IP, OTHER_PEER_IP,
                                PEER_IP, REMOTE_IP, REMOTE_MAC, TC_ACT_REDIRECT, TC_ACT_SHOT, VNI, be32)


@pytest.fixture(autouse=True)
def one_cpu():
    """Test runs execute on the calling CPU; the copies are per CPU."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(old)})
    yield
    os.sched_setaffinity(0, old)


def drops(hx, vni, reason):
    return hx.stats(vni)["drops"][int(getattr(hx.drop, f"DP_DROP_{reason}"))]


def dropped(hx, prog, frame, ifindex, vni, reason):
    """The next frame is dropped, and counted under reason."""
    before = drops(hx, vni, reason)
    assert hx.run_tc(prog, frame, ifindex)[0] == TC_ACT_SHOT
    assert drops(hx, vni, reason) == before + 1, reason


def warm(hx, prog, frame, ifindex, want=TC_ACT_REDIRECT):
    for _ in range(3):
        assert hx.run_tc(prog, frame, ifindex)[0] == want


def test_a_local_port_that_moves_is_followed_at_once(hx):
    frame = bytes(P.inner_ipv4(EP_MAC, EP2_MAC, EP_IP, EP2_IP))
    warm(hx, "from_endpoint", frame, EP_IFINDEX)
    before = drops(hx, VNI, "NO_DESTINATION")
    # EP2's MAC now says it is behind the sender's own port: a hairpin, dropped.
    hx.maps.dp_local_macs.put(hx.mac_key(VNI, EP2_MAC), ctypes.c_uint32(EP_IFINDEX))
    assert hx.run_tc("from_endpoint", frame, EP_IFINDEX)[0] == TC_ACT_SHOT
    assert drops(hx, VNI, "NO_DESTINATION") == before + 1
    hx.maps.dp_local_macs.put(hx.mac_key(VNI, EP2_MAC), ctypes.c_uint32(EP2_IFINDEX))
    warm(hx, "from_endpoint", frame, EP_IFINDEX)


def test_a_mac_that_stops_being_local_is_sent_to_its_vtep(hx):
    """The copy of "EP2's MAC is local" must not outlive its entry: the static
    FDB entry the registry gives it next is used at once."""
    frame = bytes(P.inner_ipv4(EP_MAC, EP2_MAC, EP_IP, EP2_IP))
    warm(hx, "from_endpoint", frame, EP_IFINDEX)
    tx = hx.stats(VNI)["tx_packets"]
    hx.maps.dp_local_macs.delete(hx.mac_key(VNI, EP2_MAC))
    hx.maps.dp_fdb.put(hx.mac_key(VNI, EP2_MAC), hx.S["dp_fdb_entry"](vtep=be32(PEER_IP), flags=1))
    try:
        assert hx.run_tc("from_endpoint", frame, EP_IFINDEX)[0] == TC_ACT_REDIRECT
        assert hx.stats(VNI)["tx_packets"] == tx + 1, "encapsulated, not delivered to the old port"
    finally:
        hx.maps.dp_fdb.delete(hx.mac_key(VNI, EP2_MAC))


def test_a_remote_mac_that_becomes_local_is_delivered_here(hx):
    """The copy of a miss ("no local port") must not outlive it either."""
    frame = bytes(P.inner_ipv4(EP_MAC, REMOTE_MAC, EP_IP, REMOTE_IP))
    warm(hx, "from_endpoint", frame, EP_IFINDEX)
    local = hx.stats(VNI)["local_packets"]
    hx.maps.dp_local_macs.put(hx.mac_key(VNI, REMOTE_MAC), ctypes.c_uint32(EP2_IFINDEX))
    try:
        assert hx.run_tc("from_endpoint", frame, EP_IFINDEX)[0] == TC_ACT_REDIRECT
        assert hx.stats(VNI)["local_packets"] == local + 1
    finally:
        hx.maps.dp_local_macs.delete(hx.mac_key(VNI, REMOTE_MAC))


def test_an_endpoint_whose_address_changes_is_checked_against_the_new_one(hx):
    frame = bytes(P.inner_ipv4(EP_MAC, REMOTE_MAC, EP_IP, REMOTE_IP))
    warm(hx, "from_endpoint", frame, EP_IFINDEX)
    ep = hx.maps.dp_endpoints.get(ctypes.c_uint32(EP_IFINDEX))
    ep.ip = be32("10.1.0.77")
    hx.maps.dp_endpoints.put(ctypes.c_uint32(EP_IFINDEX), ep)
    dropped(hx, "from_endpoint", frame, EP_IFINDEX, VNI, "SPOOF_IP")


def test_a_removed_endpoint_sends_nothing_more(hx):
    frame = bytes(P.inner_ipv4(EP_MAC, REMOTE_MAC, EP_IP, REMOTE_IP))
    warm(hx, "from_endpoint", frame, EP_IFINDEX)
    hx.maps.dp_endpoints.delete(ctypes.c_uint32(EP_IFINDEX))
    dropped(hx, "from_endpoint", frame, EP_IFINDEX, 0, "NO_ENDPOINT")


def test_a_network_no_longer_served_takes_no_frame(hx):
    frame = bytes(P.vxlan(P.inner_ipv4(REMOTE_MAC, EP_MAC, REMOTE_IP, EP_IP), VNI, PEER_IP, LOCAL_IP))
    warm(hx, "from_overlay", frame, 0)
    hx.maps.dp_networks.delete(ctypes.c_uint32(VNI))
    dropped(hx, "from_overlay", frame, 0, 0, "UNKNOWN_VNI")


def test_a_local_port_removed_under_decapsulation_is_unknown_at_once(hx):
    frame = bytes(P.vxlan(P.inner_ipv4(REMOTE_MAC, EP_MAC, REMOTE_IP, EP_IP), VNI, PEER_IP, LOCAL_IP))
    warm(hx, "from_overlay", frame, 0)
    hx.maps.dp_local_macs.delete(hx.mac_key(VNI, EP_MAC))
    dropped(hx, "from_overlay", frame, 0, VNI, "UNKNOWN_DST")


def test_the_copies_are_made_under_the_current_generation(hx):
    """Else every test above would pass with the copies switched off."""
    frame = bytes(P.inner_ipv4(EP_MAC, REMOTE_MAC, EP_IP, REMOTE_IP))
    warm(hx, "from_endpoint", frame, EP_IFINDEX)
    gen = hx.maps.dp_local_gen.get(ctypes.c_uint32(0)).value
    assert gen
    cpu = min(os.sched_getaffinity(0))
    size = hx.abi.constants["DP_MAP_LOCAL_COPIES"]
    c = hx.maps.dp_ep_copies.get(ctypes.c_uint32(EP_IFINDEX & (size - 1)))[cpu]
    assert (c.gen, c.ifindex, c.ep.vni) == (gen, EP_IFINDEX, VNI)


def test_a_remote_mac_that_moves_to_another_vtep_is_sent_there_at_once(hx):
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Ether
    frame = bytes(P.inner_ipv4(EP_MAC, REMOTE_MAC, EP_IP, REMOTE_IP))
    warm(hx, "from_endpoint", frame, EP_IFINDEX)
    assert Ether(hx.run_tc("from_endpoint", frame, EP_IFINDEX)[1])[IP].dst == PEER_IP
    key = hx.mac_key(VNI, REMOTE_MAC)
    hx.maps.dp_fdb.put(key, hx.S["dp_fdb_entry"](vtep=be32(OTHER_PEER_IP), flags=1))
    ret, out = hx.run_tc("from_endpoint", frame, EP_IFINDEX)
    assert ret == TC_ACT_REDIRECT and Ether(out)[IP].dst == OTHER_PEER_IP


def test_a_moved_owner_refuses_its_old_vtep_at_once(hx):
    frame = bytes(P.vxlan(P.inner_ipv4(REMOTE_MAC, EP_MAC, REMOTE_IP, EP_IP), VNI, PEER_IP, LOCAL_IP))
    warm(hx, "from_overlay", frame, 0)
    hx.maps.dp_fdb.put(hx.mac_key(VNI, REMOTE_MAC), hx.S["dp_fdb_entry"](vtep=be32(OTHER_PEER_IP), flags=1))
    dropped(hx, "from_overlay", frame, 0, VNI, "VTEP_MISMATCH")


def test_a_static_entry_removed_is_no_longer_used(hx):
    frame = bytes(P.inner_ipv4(EP_MAC, REMOTE_MAC, EP_IP, REMOTE_IP))
    warm(hx, "from_endpoint", frame, EP_IFINDEX)
    hx.maps.dp_fdb.delete(hx.mac_key(VNI, REMOTE_MAC))
    tx = hx.stats(VNI)["tx_packets"]
    hx.run_tc("from_endpoint", frame, EP_IFINDEX)       # unknown now: flooded to nobody (no flood list)
    assert hx.stats(VNI)["tx_packets"] == tx, "not encapsulated toward the removed entry's VTEP"


def test_a_learned_entry_the_control_plane_removes_is_learned_again_at_once(hx):
    """fdb_learn's copy ("this CPU found the entry fresh") must not outlive an aged-out
    or flushed entry: the next frame from that MAC writes it again."""
    mac = "02:42:0a:01:00:7a"
    key = hx.mac_key(VNI, mac)
    frame = bytes(P.vxlan(P.inner_ipv4(mac, EP_MAC, "10.1.0.122", EP_IP), VNI, PEER_IP, LOCAL_IP))
    warm(hx, "from_overlay", frame, 0)
    assert hx.maps.dp_learned.get(key).vtep == be32(PEER_IP)
    hx.maps.dp_learned.delete(key)
    try:
        assert hx.run_tc("from_overlay", frame, 0)[0] == TC_ACT_REDIRECT
        assert hx.maps.dp_learned.get(key) is not None, "learned again"
    finally:
        hx.maps.dp_learned.delete(key)


def test_a_mac_given_to_a_local_endpoint_is_refused_from_remote_at_once(hx):
    mac = "02:42:0a:01:00:7b"
    key = hx.mac_key(VNI, mac)
    frame = bytes(P.vxlan(P.inner_ipv4(mac, EP_MAC, "10.1.0.123", EP_IP), VNI, PEER_IP, LOCAL_IP))
    warm(hx, "from_overlay", frame, 0)
    hx.maps.dp_local_macs.put(key, ctypes.c_uint32(EP2_IFINDEX))     # as endpoint creation does
    hx.maps.dp_learned.delete(key)
    try:
        dropped(hx, "from_overlay", frame, 0, VNI, "MAC_CONFLICT")
    finally:
        hx.maps.dp_local_macs.delete(key)


def test_a_fresh_load_starts_every_generation(harness):
    """A node without a registry never writes dp_fdb: its copies must work anyway,
    and copies made by the programs a reload replaces must not survive it."""
    import shutil
    from dataplane.kernel import loader
    from dataplane.kernel.maps import NodeMaps
    pin = os.path.join(loader.PIN_ROOT, f"gens-{os.getpid()}")
    try:
        loader.load(pin, quiet=True).close()
        with NodeMaps(pin) as m:
            first = [m.dp_local_gen.get(ctypes.c_uint32(0)).value, m.dp_fdb_gen.get(ctypes.c_uint32(0)).value]
            assert all(first), first
            loader.load(pin, quiet=True).close()
            again = [m.dp_local_gen.get(ctypes.c_uint32(0)).value, m.dp_fdb_gen.get(ctypes.c_uint32(0)).value]
            assert all(a != b for a, b in zip(first, again)), (first, again)
    finally:
        shutil.rmtree(pin, ignore_errors=True)
