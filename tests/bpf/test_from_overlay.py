"""Frames arriving on the uplink, through from_overlay (tc) and xdp_guard
(XDP): the same table must get the same verdicts from both."""

import ctypes
import time

import pytest
from scapy.layers.inet import IP, UDP, IPOption
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from dataplane.kernel import bpfsys
from tests import packets as P
from tests.bpf.conftest import (EP_IFINDEX, EP_IP, EP_MAC, LOCAL_IP, OTHER_PEER_IP, OTHER_VNI, PEER_IP, REMOTE_IP,
                                REMOTE_MAC, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, VNI, XDP_DROP, XDP_PASS,
                                be32)


def good_frame(vni=VNI, src=PEER_IP, inner_src=REMOTE_MAC, **kw):
    inner = P.inner_ipv4(inner_src, EP_MAC, REMOTE_IP, EP_IP)
    return P.vxlan(inner, vni, src, LOCAL_IP, **kw), inner


def test_decap_delivers_exact_inner_frame(hx):
    frame, inner = good_frame()
    before = hx.stats(VNI)
    ret, out = hx.run_tc("from_overlay", frame)
    assert ret == TC_ACT_REDIRECT
    assert out == bytes(inner)
    assert hx.stats(VNI)["rx_packets"] == before["rx_packets"] + 1
    assert hx.stats(VNI)["rx_bytes"] == before["rx_bytes"] + len(inner)
    assert hx.run_xdp(frame)[0] == XDP_PASS


def test_learning_and_mac_move(hx):
    mac = "02:42:0a:01:00:77"
    key = hx.mac_key(VNI, mac)
    hx.run_tc("from_overlay", good_frame(inner_src=mac)[0])
    assert hx.maps.dp_learned.get(key).vtep == be32(PEER_IP)
    first = hx.maps.dp_learned.get(key).last_seen_ns
    hx.run_tc("from_overlay", good_frame(inner_src=mac, src=OTHER_PEER_IP)[0])
    moved = hx.maps.dp_learned.get(key)
    assert moved.vtep == be32(OTHER_PEER_IP), "a MAC that moved is re-learned at once"
    assert moved.last_seen_ns >= first


def test_mac_conflict_checked_whenever_the_learned_entry_would_be_written(hx):
    """The conflict check runs before every learned-entry write and is skipped
    only for a fresh, unchanged entry; the control plane deletes a MAC's learned
    entry when a local endpoint takes it (node.py), closing that window."""
    mac = "02:42:0a:01:00:79"
    key = hx.mac_key(VNI, mac)
    frame = good_frame(inner_src=mac)[0]
    idx = int(hx.drop.DP_DROP_MAC_CONFLICT)
    assert hx.run_tc("from_overlay", frame)[0] == TC_ACT_REDIRECT
    assert hx.maps.dp_learned.get(key) is not None
    # A local endpoint takes the MAC, as node._create_endpoint does it.
    hx.maps.dp_local_macs.put(key, ctypes.c_uint32(EP_IFINDEX))
    hx.maps.dp_learned.delete(key)
    before = hx.stats(VNI)["drops"][idx]
    assert hx.run_tc("from_overlay", frame)[0] == TC_ACT_SHOT
    assert hx.stats(VNI)["drops"][idx] == before + 1
    assert hx.maps.dp_learned.get(key) is None, "a conflicting source is never learned"
    # An entry due for its refresh, and a fresh one naming another VTEP, are checked again too.
    for vtep, stamp in ((PEER_IP, 1), (OTHER_PEER_IP, time.monotonic_ns())):
        e = hx.S["dp_fdb_entry"](vtep=be32(vtep), last_seen_ns=stamp)
        hx.maps.dp_learned.put(key, e)
        assert hx.run_tc("from_overlay", frame)[0] == TC_ACT_SHOT
    hx.maps.dp_local_macs.delete(key)
    hx.maps.dp_learned.delete(key)


def test_learned_entry_is_used_for_encapsulation_then_ages_out(hx):
    from tests.bpf.conftest import NH_DMAC, NH_SMAC, SPORT
    mac = "02:42:0a:01:00:78"
    hx.run_tc("from_overlay", good_frame(inner_src=mac, src=OTHER_PEER_IP)[0])
    reply = P.inner_ipv4(EP_MAC, mac, EP_IP, "10.1.0.120")
    ret, out = hx.run_tc("from_endpoint", reply, EP_IFINDEX)
    assert ret == TC_ACT_REDIRECT
    assert out == bytes(P.vxlan(reply, VNI, LOCAL_IP, OTHER_PEER_IP, outer_src_mac=NH_SMAC,
                                outer_dst_mac=NH_DMAC, sport=SPORT))
    # Age the entry: older than the FDB age it is ignored (flooded instead; no flood list -> dropped).
    # The age is made short rather than the stamp old: on a machine booted less than the default
    # 300 s ago, no stamp is older than that (the coarse clock is CLOCK_MONOTONIC).
    try:
        hx.configure(fdb_age_ns=50_000_000)
        e = hx.maps.dp_learned.get(hx.mac_key(VNI, mac))
        e.last_seen_ns = time.monotonic_ns()
        hx.maps.dp_learned.put(hx.mac_key(VNI, mac), e)
        assert hx.run_tc("from_endpoint", reply, EP_IFINDEX)[0] == TC_ACT_REDIRECT, "fresh within 50 ms"
        time.sleep(0.2)
        assert hx.run_tc("from_endpoint", reply, EP_IFINDEX)[0] == TC_ACT_SHOT, "aged out after 50 ms"
    finally:
        hx.configure()


def _truncations():
    frame = bytes(good_frame()[0])
    # Every boundary and a cut inside each header: ip | udp | vxlan | inner eth. BPF_PROG_TEST_RUN
    # refuses IPv4 frames shorter than an IP header (EINVAL); those cuts are sent at the live
    # lab instead (tests/integration/test_hostile.py).
    return [(f"cut at {n}", frame[:n]) for n in (34, 38, 42, 46, 50, 56, 63)]


NOT_OURS = [
    ("wrong UDP port", lambda: good_frame(dport=4790)[0]),
    ("other destination address", lambda: P.vxlan(good_frame()[1], VNI, PEER_IP, "198.18.0.9")),
    ("plain UDP to us", lambda: Ether() / IP(src=PEER_IP, dst=LOCAL_IP) / UDP(dport=53) / Raw(b"q" * 20)),
    ("ARP on the underlay", lambda: P.arp_request("02:00:00:00:00:01", PEER_IP, LOCAL_IP)),
    ("non-first fragment", lambda: Ether() / IP(src=PEER_IP, dst=LOCAL_IP, proto=17, frag=100) / Raw(b"z" * 30)),
]


@pytest.mark.parametrize("what,build", NOT_OURS, ids=[n[0] for n in NOT_OURS])
def test_not_ours_passes_untouched(hx, what, build):
    frame = bytes(build())
    drops = sum(hx.stats(0)["drops"]) + sum(hx.stats(VNI)["drops"])
    ret, out = hx.run_tc("from_overlay", frame)
    assert ret == TC_ACT_OK
    assert out == frame
    assert hx.run_xdp(frame)[0] == XDP_PASS
    assert sum(hx.stats(0)["drops"]) + sum(hx.stats(VNI)["drops"]) == drops


def _with_options():
    """good_frame with four bytes of outer IPv4 options (NOPs and an end of list): IHL 6."""
    frame, inner = good_frame()
    e = Ether(bytes(frame))
    e[IP].options = [IPOption(b"\x01\x01\x01\x00")]
    del e[IP].ihl, e[IP].len, e[IP].chksum
    return bytes(e), inner


def test_outer_ipv4_options_are_decapsulated_and_the_checksum_checked(hx):
    """The stack (ip_rcv) drops a frame whose IPv4 header checksum is wrong before anything reads
    it; the fast path, at tc ingress before the stack, decapsulated it. Its options are counted in
    the header's length, checksum and the bytes decapsulation takes off."""
    frame, inner = _with_options()
    assert Ether(frame)[IP].ihl == 6
    ret, out = hx.run_tc("from_overlay", frame)
    assert ret == TC_ACT_REDIRECT and out == bytes(inner)
    assert hx.run_xdp(frame)[0] == XDP_PASS
    other_port = bytearray(bytes(good_frame()[0]))
    other_port[36:38] = (4790).to_bytes(2, "big")   # not our port: the stack's to drop, untouched
    other_port[24] ^= 0x01
    assert hx.run_tc("from_overlay", bytes(other_port)) == (TC_ACT_OK, bytes(other_port))
    # The C helper's decoder is the same code (wire.h): it agrees.
    from dataplane.core import cwire
    assert cwire.decap(frame).inner == bytes(inner)
    bad = bytearray(frame)
    bad[24] ^= 0x01
    with pytest.raises(cwire.WireError, match="bad_ip"):
        cwire.decap(bytes(bad))


def _bad_frames():
    rows = [(name, f, "TRUNCATED", 0) for name, f in _truncations()]
    rows += [
        ("unknown VNI", bytes(good_frame(vni=999)[0]), "UNKNOWN_VNI", 0),
        ("flags 0x0C (GPE bit)", bytes(good_frame(flags=0x0C)[0]), "BAD_VXLAN_FLAGS", 0),
        ("flags 0x00", bytes(good_frame(flags=0x00)[0]), "BAD_VXLAN_FLAGS", 0),
        ("IPv4 ihl < 5", bytes(Ether() / IP(src=PEER_IP, dst=LOCAL_IP, ihl=4) / Raw(b"x" * 60)), "BAD_IP", 0),
        ("IPv4 version 6 in an IPv4 ethertype", bytes(Ether() / IP(src=PEER_IP, dst=LOCAL_IP, version=6) / Raw(b"x" * 60)),
         "BAD_IP", 0),
        ("multicast inner source", bytes(good_frame(inner_src="01:00:5e:00:00:01")[0]), "BAD_INNER_SMAC", VNI),
        ("zero inner source", bytes(good_frame(inner_src="00:00:00:00:00:00")[0]), "BAD_INNER_SMAC", VNI),
        ("inner source claims a local MAC", bytes(good_frame(inner_src=EP_MAC)[0]), "MAC_CONFLICT", VNI),
        ("unicast to no local endpoint", bytes(P.vxlan(P.inner_ipv4(REMOTE_MAC, "02:42:0a:01:00:99", REMOTE_IP, EP_IP),
                                                       VNI, PEER_IP, LOCAL_IP)), "UNKNOWN_DST", VNI),
    ]
    bad_sum = bytearray(bytes(good_frame()[0]))
    bad_sum[24] ^= 0x01                          # the outer IPv4 header's checksum, one bit off
    with_options = bytearray(bytes(_with_options()[0]))
    with_options[24] ^= 0x01
    rows += [("outer IPv4 checksum wrong", bytes(bad_sum), "BAD_IP", 0),
             ("outer IPv4 checksum wrong, with options", bytes(with_options), "BAD_IP", 0)]
    # A first fragment: MF set on a frame to our port.
    frag = bytearray(bytes(good_frame()[0]))
    frag[20] |= 0x20
    frag[24:26] = b"\x00\x00"
    hdr = IP(bytes(frag[14:34]))
    del hdr.chksum
    frag[14:34] = bytes(IP(bytes(hdr)))[:20]
    rows += [("first fragment to our port", bytes(frag), "FRAGMENT", 0)]
    return rows


BAD = _bad_frames()


def test_vxlan_without_df_is_decapsulated(hx):
    """DF is the sender's choice: an unfragmented frame without it is ours like any other."""
    frame, inner = good_frame(df=False)
    assert not Ether(bytes(frame))[IP].flags.DF and Ether(bytes(frame))[IP].frag == 0
    ret, out = hx.run_tc("from_overlay", frame)
    assert ret == TC_ACT_REDIRECT and out == bytes(inner)


@pytest.mark.parametrize("what,frame,reason,vni", BAD, ids=[b[0] for b in BAD])
def test_bad_overlay_frames_dropped_with_reason(hx, what, frame, reason, vni):
    idx = int(hx.drop[f"DP_DROP_{reason}"])
    before = hx.stats(vni)["drops"][idx]
    ret, _ = hx.run_tc("from_overlay", frame)
    assert ret == TC_ACT_SHOT
    assert hx.stats(vni)["drops"][idx] == before + 1


XDP_BAD = [b for b in BAD if b[2] not in ("MAC_CONFLICT", "UNKNOWN_DST")]  # the guard does not look up endpoints


@pytest.mark.parametrize("what,frame,reason,vni", XDP_BAD, ids=[b[0] for b in XDP_BAD])
def test_xdp_guard_drops_the_same_frames(hx, what, frame, reason, vni):
    idx = int(hx.drop[f"DP_DROP_{reason}"])
    before = hx.stats(vni)["drops"][idx]
    ret, _ = hx.run_xdp(frame)
    assert ret == XDP_DROP
    assert hx.stats(vni)["drops"][idx] == before + 1


UNOWNED_MAC = "02:42:0a:01:00:77"    # no dp_fdb entry: only the peer check vouches for its sender


def test_peer_check_refuses_unknown_vtep(hx):
    hx.configure(peer_check=True)
    idx = int(hx.drop.DP_DROP_UNKNOWN_PEER)
    before = hx.stats(VNI)["drops"][idx]
    frame = good_frame(src="198.18.0.66", inner_src=UNOWNED_MAC)[0]
    assert hx.run_tc("from_overlay", frame)[0] == TC_ACT_SHOT
    assert hx.run_xdp(frame)[0] == XDP_DROP
    assert hx.stats(VNI)["drops"][idx] == before + 2
    assert hx.run_tc("from_overlay", good_frame(src=PEER_IP, inner_src=UNOWNED_MAC)[0])[0] == TC_ACT_REDIRECT


def test_an_owned_mac_vouches_for_its_own_vtep_and_no_other(hx):
    """The peer check's dp_vteps lookup is skipped for a MAC dp_fdb places: its frames
    must come from that VTEP, a narrower admit than "any peer". The owner's VTEP
    passes even when dp_vteps lacks it; any other VTEP, listed or not, is refused."""
    hx.configure(peer_check=True)
    owner = "198.18.0.77"                       # in no dp_vteps entry
    hx.maps.dp_fdb.put(hx.mac_key(VNI, UNOWNED_MAC), hx.S["dp_fdb_entry"](vtep=be32(owner), flags=1))
    try:
        mismatch = int(hx.drop.DP_DROP_VTEP_MISMATCH)
        before = hx.stats(VNI)["drops"][mismatch]
        assert hx.run_tc("from_overlay", good_frame(src=owner, inner_src=UNOWNED_MAC)[0])[0] == TC_ACT_REDIRECT
        assert hx.run_xdp(good_frame(src=owner, inner_src=UNOWNED_MAC)[0])[0] == XDP_PASS
        for other in (PEER_IP, "198.18.0.66"):  # a listed peer, an unknown address
            frame = good_frame(src=other, inner_src=UNOWNED_MAC)[0]
            assert hx.run_tc("from_overlay", frame)[0] == TC_ACT_SHOT
            assert hx.run_xdp(frame)[0] == XDP_DROP
        assert hx.stats(VNI)["drops"][mismatch] == before + 4
        assert hx.maps.dp_learned.get(hx.mac_key(VNI, UNOWNED_MAC)) is None, "an owned MAC is never learned"
    finally:
        hx.maps.dp_fdb.delete(hx.mac_key(VNI, UNOWNED_MAC))


def test_unknown_vni_counts_under_vni_zero_not_the_bad_vni(hx):
    idx = int(hx.drop.DP_DROP_UNKNOWN_VNI)
    before = {v: hx.stats(v)["drops"][idx] for v in (0, VNI, OTHER_VNI)}
    hx.run_tc("from_overlay", good_frame(vni=999)[0])
    after = {v: hx.stats(v)["drops"][idx] for v in (0, VNI, OTHER_VNI)}
    assert after == {0: before[0] + 1, VNI: before[VNI], OTHER_VNI: before[OTHER_VNI]}
    # Counters are an array sized by the control plane: no frame can add an entry.
    assert bpfsys.map_info(hx.maps.dp_stats.fd).type == bpfsys.MAP_TYPES["percpu_array"]


@pytest.mark.parametrize("outer_src", [LOCAL_IP, "0.0.0.0", "127.0.0.1", "224.0.0.5", "239.1.2.3",
                                       "255.255.255.255"])
def test_an_outer_source_no_vtep_can_have_is_refused_without_the_peer_check(hx, outer_src):
    """Without the peer check (the harness's default) an unowned MAC was learned behind any outer
    source, martians too (tc runs before the stack drops them): this host's frames to that MAC
    then went to its own address, to broadcast or to a multicast group."""
    mac = "02:42:0a:01:00:78"
    frame = good_frame(src=outer_src, inner_src=mac)[0]
    before = hx.stats(VNI)["drops"][int(hx.drop.DP_DROP_UNKNOWN_PEER)]
    assert hx.run_tc("from_overlay", frame)[0] == TC_ACT_SHOT
    assert hx.run_xdp(frame)[0] == XDP_DROP
    assert hx.stats(VNI)["drops"][int(hx.drop.DP_DROP_UNKNOWN_PEER)] == before + 2
    assert hx.maps.dp_learned.get(hx.mac_key(VNI, mac)) is None
    assert hx.run_tc("from_overlay", good_frame(src="198.18.0.77", inner_src=mac)[0])[0] == TC_ACT_REDIRECT
