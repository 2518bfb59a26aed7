"""Frames a sandbox sends, through the real from_endpoint program."""

import ctypes

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from tests import packets as P
from tests.bpf.conftest import (EP2_IFINDEX, EP2_MAC, EP_IFINDEX, EP_IP, EP_MAC, LOCAL_IP, NH_DMAC, NH_SMAC,
                                PEER_IP, REMOTE_IP, REMOTE_MAC, SPORT, TC_ACT_REDIRECT, TC_ACT_SHOT, VNI,
                                be32)


def test_unicast_to_remote_is_encapsulated_byte_exact(hx):
    inner = P.inner_ipv4(EP_MAC, REMOTE_MAC, EP_IP, REMOTE_IP)
    before = hx.stats(VNI)
    ret, out = hx.run_tc("from_endpoint", inner, EP_IFINDEX)
    assert ret == TC_ACT_REDIRECT
    want = P.vxlan(inner, VNI, LOCAL_IP, PEER_IP, outer_src_mac=NH_SMAC, outer_dst_mac=NH_DMAC, sport=SPORT)
    assert out == bytes(want), (Ether(out).show(dump=True), want.show(dump=True))
    after = hx.stats(VNI)
    assert after["tx_packets"] == before["tx_packets"] + 1
    assert after["tx_bytes"] == before["tx_bytes"] + len(inner)


def test_source_port_is_flow_hashed_within_range(hx):
    hx.configure(src_port=(49152, 65535))
    ports = {}
    for i in range(32):
        inner = P.inner_ipv4(EP_MAC, REMOTE_MAC, EP_IP, REMOTE_IP)
        inner[IP].payload.sport = 40000 + i
        ret, out = hx.run_tc("from_endpoint", inner, EP_IFINDEX)
        assert ret == TC_ACT_REDIRECT
        sport = Ether(out)["UDP"].sport
        assert 49152 <= sport <= 65535
        again = Ether(hx.run_tc("from_endpoint", inner, EP_IFINDEX)[1])["UDP"].sport
        assert again == sport, "same flow, same source port"
        ports[i] = sport
    assert len(set(ports.values())) > 16, "flows spread over the range"


def test_arp_request_for_known_ip_answered_locally(hx):
    req = P.arp_request(EP_MAC, EP_IP, REMOTE_IP)
    before = hx.stats(VNI)["arp_replies"]
    ret, out = hx.run_tc("from_endpoint", req, EP_IFINDEX)
    assert ret == TC_ACT_REDIRECT
    assert out[:42] == bytes(P.arp_reply(REMOTE_MAC, REMOTE_IP, EP_MAC, EP_IP))[:42]
    assert hx.stats(VNI)["arp_replies"] == before + 1


def test_local_delivery_within_vni_is_untouched(hx):
    frame = P.inner_ipv4(EP_MAC, EP2_MAC, EP_IP, "10.1.0.12")
    ret, out = hx.run_tc("from_endpoint", frame, EP_IFINDEX)
    assert ret == TC_ACT_REDIRECT
    assert out == bytes(frame)


def test_unicast_arp_reply_to_remote_uses_change_head(hx):
    reply = P.arp_reply(EP_MAC, EP_IP, REMOTE_MAC, REMOTE_IP)
    ret, out = hx.run_tc("from_endpoint", reply, EP_IFINDEX)
    assert ret == TC_ACT_REDIRECT
    want = P.vxlan(reply, VNI, LOCAL_IP, PEER_IP, outer_src_mac=NH_SMAC, outer_dst_mac=NH_DMAC, sport=SPORT)
    assert out == bytes(want)


DROPS = [
    ("spoofed source MAC", lambda: P.inner_ipv4("02:42:0a:01:00:99", REMOTE_MAC, EP_IP, REMOTE_IP), "SPOOF_MAC"),
    ("spoofed source IP", lambda: P.inner_ipv4(EP_MAC, REMOTE_MAC, "10.1.0.99", REMOTE_IP), "SPOOF_IP"),
    ("ARP with a foreign sender IP", lambda: P.arp_request(EP_MAC, "10.1.0.99", REMOTE_IP), "SPOOF_IP"),
    ("ARP with a foreign sender MAC", lambda: Ether(src=EP_MAC, dst="ff:ff:ff:ff:ff:ff") /
     P.arp_request("02:42:0a:01:00:99", EP_IP, REMOTE_IP)["ARP"], "SPOOF_MAC"),
    ("IPv6", lambda: Ether(src=EP_MAC, dst=REMOTE_MAC) / IPv6() / Raw(b"x" * 20), "UNSUPPORTED_L3"),
    ("IPv4 ihl < 5", lambda: Ether(src=EP_MAC, dst=REMOTE_MAC) / IP(src=EP_IP, dst=REMOTE_IP, ihl=4) / Raw(b"x" * 20),
     "BAD_IP"),
    ("ARP truncated after its header", lambda: Ether(bytes(P.arp_request(EP_MAC, EP_IP, REMOTE_IP))[:30]), "TRUNCATED"),
    ("ARP for IPv6 protocol type", lambda: Ether(src=EP_MAC, dst="ff:ff:ff:ff:ff:ff") /
     P.arp_request(EP_MAC, EP_IP, REMOTE_IP)["ARP"].__class__(op=1, ptype=0x86DD, hwsrc=EP_MAC, psrc=EP_IP),
     "BAD_ARP"),
    ("non-GSO frame over the MTU", lambda: P.inner_ipv4(EP_MAC, REMOTE_MAC, EP_IP, REMOTE_IP, payload=b"x" * 1500),
     "TOO_BIG"),
]


@pytest.mark.parametrize("what,build,reason", DROPS, ids=[d[0] for d in DROPS])
def test_bad_frames_from_endpoint_dropped_with_reason(hx, what, build, reason):
    idx = int(hx.drop[f"DP_DROP_{reason}"])
    before = hx.stats(VNI)["drops"][idx]
    ret, _ = hx.run_tc("from_endpoint", build(), EP_IFINDEX)
    assert ret == TC_ACT_SHOT
    assert hx.stats(VNI)["drops"][idx] == before + 1


def test_frame_on_unknown_interface_dropped(hx):
    idx = int(hx.drop.DP_DROP_NO_ENDPOINT)
    before = hx.stats(0)["drops"][idx]
    ret, _ = hx.run_tc("from_endpoint", P.inner_ipv4(EP_MAC, REMOTE_MAC, EP_IP, REMOTE_IP), 4242)
    assert ret == TC_ACT_SHOT
    assert hx.stats(0)["drops"][idx] == before + 1


def test_other_vni_mac_is_not_local(hx):
    """EP2's MAC registered only on VNI 257: a VNI 256 endpoint cannot deliver to it locally."""
    hx.maps.dp_local_macs.delete(hx.mac_key(VNI, EP2_MAC))
    hx.maps.dp_local_macs.put(hx.mac_key(257, EP2_MAC), ctypes.c_uint32(EP2_IFINDEX))
    frame = P.inner_ipv4(EP_MAC, EP2_MAC, EP_IP, "10.1.0.12")
    ret, out = hx.run_tc("from_endpoint", frame, EP_IFINDEX)
    # Unknown on VNI 256: flooded (no flood list, no other local port) -> nowhere to go.
    assert ret == TC_ACT_SHOT
    assert out[:14] == bytes(frame)[:14]
