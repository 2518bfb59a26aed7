"""What from_overlay refuses from a VTEP it does accept (issue 15, items 2-4):
a source MAC the registry places elsewhere, ARP that contradicts dp_neigh,
ethertypes the network does not carry, and bytes past the outer UDP length."""

from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from tests import packets as P
from tests.bpf.conftest import (EP2_IP, EP2_MAC, EP_IP, EP_MAC, LOCAL_IP, OTHER_PEER_IP, PEER_IP, REMOTE_IP,
                                REMOTE_MAC, TC_ACT_REDIRECT, TC_ACT_SHOT, VNI)

ATTACKER_MAC = "02:42:0a:01:00:66"


def drops(hx, reason: str) -> int:
    return hx.stats(VNI)["drops"][int(hx.drop[f"DP_DROP_{reason}"])]


def refused(hx, frame, reason: str) -> None:
    before = drops(hx, reason)
    assert hx.run_tc("from_overlay", bytes(frame))[0] == TC_ACT_SHOT
    assert drops(hx, reason) == before + 1, reason


def test_registry_mac_from_another_vtep_is_dropped_and_never_learned(hx):
    """REMOTE_MAC lives behind PEER_IP (a static dp_fdb entry, as the agent writes from the registry)."""
    forged = P.vxlan(P.inner_ipv4(REMOTE_MAC, EP_MAC, REMOTE_IP, EP_IP), VNI, OTHER_PEER_IP, LOCAL_IP)
    refused(hx, forged, "VTEP_MISMATCH")
    assert hx.maps.dp_learned.get(hx.mac_key(VNI, REMOTE_MAC)) is None
    genuine = P.vxlan(P.inner_ipv4(REMOTE_MAC, EP_MAC, REMOTE_IP, EP_IP), VNI, PEER_IP, LOCAL_IP)
    assert hx.run_tc("from_overlay", bytes(genuine))[0] == TC_ACT_REDIRECT
    assert hx.maps.dp_learned.get(hx.mac_key(VNI, REMOTE_MAC)) is None, "a registry MAC is not learned"


def test_gratuitous_arp_claiming_another_endpoints_address_is_dropped(hx):
    """The attack of the issue, from a VTEP the peer check admits: a gratuitous
    ARP that gives EP2's address to the attacker's MAC."""
    garp = Ether(src=ATTACKER_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=2, hwsrc=ATTACKER_MAC, psrc=EP2_IP, hwdst="ff:ff:ff:ff:ff:ff", pdst=EP2_IP)
    refused(hx, P.vxlan(garp, VNI, PEER_IP, LOCAL_IP), "ARP_SPOOF")
    assert hx.maps.dp_learned.get(hx.mac_key(VNI, ATTACKER_MAC)) is None, "a refused frame teaches nothing"


def test_arp_sender_mac_other_than_the_frames_source_is_dropped(hx):
    arp = Ether(src=REMOTE_MAC, dst=EP_MAC) / ARP(op=2, hwsrc=EP2_MAC, psrc=REMOTE_IP, hwdst=EP_MAC, pdst=EP_IP)
    refused(hx, P.vxlan(arp, VNI, PEER_IP, LOCAL_IP), "ARP_SPOOF")


def test_malformed_inner_arp_is_dropped(hx):
    arp = Ether(src=REMOTE_MAC, dst=EP_MAC) / ARP(op=2, ptype=0x86DD, hwsrc=REMOTE_MAC, psrc=REMOTE_IP,
                                                  hwdst=EP_MAC, pdst=EP_IP)
    refused(hx, P.vxlan(arp, VNI, PEER_IP, LOCAL_IP), "BAD_ARP")
    short = Ether(src=REMOTE_MAC, dst=EP_MAC, type=0x0806) / Raw(b"\x00\x01\x08\x00")
    refused(hx, P.vxlan(short, VNI, PEER_IP, LOCAL_IP), "TRUNCATED")


def test_consistent_arp_reply_is_delivered(hx):
    reply = P.arp_reply(REMOTE_MAC, REMOTE_IP, EP_MAC, EP_IP)
    ret, out = hx.run_tc("from_overlay", bytes(P.vxlan(reply, VNI, PEER_IP, LOCAL_IP)))
    assert ret == TC_ACT_REDIRECT and out == bytes(reply)


def test_inner_ethertypes_the_network_does_not_carry_are_dropped(hx):
    for ethertype in (0x86DD, 0x8100, 0x88CC):
        inner = Ether(src=REMOTE_MAC, dst=EP_MAC, type=ethertype) / Raw(b"x" * 46)
        refused(hx, P.vxlan(inner, VNI, PEER_IP, LOCAL_IP), "UNSUPPORTED_L3")


def test_bytes_past_the_outer_udp_length_are_not_delivered(hx):
    inner = P.inner_ipv4(REMOTE_MAC, EP_MAC, REMOTE_IP, EP_IP)
    frame = bytes(P.vxlan(inner, VNI, PEER_IP, LOCAL_IP)) + b"SMUGGLED-TRAILER"
    ret, out = hx.run_tc("from_overlay", frame)
    assert ret == TC_ACT_REDIRECT
    assert out == bytes(inner), "the inner frame is what the outer UDP length says, no more"


def test_a_short_inner_ipv4_frame_is_truncated_and_teaches_nothing(hx):
    """An inner frame that says IPv4 but holds less than an IPv4 header: counted as
    truncated, before learning. It was learned from, then counted as a helper failure
    (decapsulation refused it), which sent operators looking at the kernel."""
    short = Ether(src=ATTACKER_MAC, dst=EP_MAC, type=0x0800) / Raw(b"\x45" + b"\x00" * 9)
    refused(hx, P.vxlan(short, VNI, PEER_IP, LOCAL_IP), "TRUNCATED")
    assert hx.maps.dp_learned.get(hx.mac_key(VNI, ATTACKER_MAC)) is None, "a refused frame teaches nothing"
