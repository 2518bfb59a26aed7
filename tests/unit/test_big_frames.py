"""GSO super-packets over 64 KB (IPv4 BIG TCP) through the parser the fast
path shares with csrc/: IPv4 length 0 with UDP length 0xffff (what the fast
path writes) or 0 (the kernel's and URO's way) means "the frame's length";
anything else, or a length of 0 on a frame that fits 16 bits, is dropped."""

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from dataplane.core import cwire

LOCAL, PEER = "198.18.0.2", "198.18.0.1"
HEADERS = 14 + 20 + 8 + 8  # outer Ethernet, IPv4, UDP, VXLAN


def inner(payload_len):
    return bytes(Ether(src="02:42:0a:01:00:0b", dst="02:42:0a:01:00:15")
                 / IP(src="10.1.0.11", dst="10.1.0.21", len=0) / TCP(sport=40000, dport=5201)
                 / Raw(b"\x5a" * payload_len))


def frame(inner_bytes, udp_len, ip_len=0):
    outer = (Ether(src="02:00:00:00:00:aa", dst="02:00:00:00:00:bb")
             / IP(src=PEER, dst=LOCAL, len=ip_len, ttl=64, flags="DF")
             / UDP(sport=50000, dport=4789, len=udp_len, chksum=0) / VXLAN(flags=0x08, vni=256))
    return bytes(outer) + inner_bytes


@pytest.mark.parametrize("udp_len", [0xFFFF, 0])
def test_super_packet_decodes_whole(udp_len):
    body = inner(150_000)
    d = cwire.decap(frame(body, udp_len))
    assert d.vni == 256 and d.src == PEER
    assert d.inner == body, "the inner frame is everything after the outer headers"


@pytest.mark.parametrize("udp_len", [1, 8, 30, 0x8000, 0xFFFE])
def test_super_packet_with_another_udp_length_is_dropped(udp_len):
    with pytest.raises(cwire.WireError) as e:
        cwire.decap(frame(inner(150_000), udp_len))
    assert e.value.reason == "bad_ip"


@pytest.mark.parametrize("payload", [100, 0xFFFF - HEADERS - 54])
def test_zero_length_on_a_frame_under_64k_is_dropped(payload):
    """Only a frame too long for the field may leave it 0."""
    f = frame(inner(payload), 0xFFFF)
    assert len(f) <= 14 + 0xFFFF
    with pytest.raises(cwire.WireError) as e:
        cwire.decap(f)
    assert e.value.reason == "bad_ip"


def test_one_byte_over_64k_is_the_boundary():
    # IPv4 payload of exactly 65536 bytes: the first that needs total length 0.
    body = inner(0x10000 - 20 - 8 - 8 - 54)
    f = frame(body, 0xFFFF)
    assert len(f) == 14 + 0x10000
    assert cwire.decap(f).inner == body
