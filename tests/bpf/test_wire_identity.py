"""One table of frames, encapsulated three ways: built field by field with
scapy (plus a Python model of the flow hash), by the C helper, and by the
real from_endpoint program through BPF_PROG_TEST_RUN. All three must be the
same bytes; then hypothesis draws random inner frames, sizes and VNIs."""

import ctypes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from dataplane.core import cwire
from tests import packets as P
from tests.bpf.conftest import (EP_IFINDEX, EP_IP, EP_MAC, LOCAL_IP, NH_DMAC, NH_SMAC, PEER_IP, REMOTE_IP,
                                REMOTE_MAC, TC_ACT_REDIRECT, VNI, be32)

LO, HI = 49152, 65535


@pytest.fixture
def hashed(hx):
    """The fast path with the full source port range (the harness pins it to one port)."""
    hx.configure(src_port=(LO, HI))
    yield hx
    hx.configure()


def three_ways(hx, inner: bytes, vni: int = VNI):
    by_scapy = bytes(P.vxlan(Ether(inner), vni, LOCAL_IP, PEER_IP, outer_src_mac=NH_SMAC,
                             outer_dst_mac=NH_DMAC, sport=P.src_port(inner, LO, HI)))
    by_c = cwire.encap(inner, smac=NH_SMAC, dmac=NH_DMAC, src=LOCAL_IP, dst=PEER_IP, vni=vni,
                       sport_min=LO, sport_max=HI)
    ret, by_bpf = hx.run_tc("from_endpoint", inner, EP_IFINDEX)
    assert ret == TC_ACT_REDIRECT
    return by_scapy, by_c, by_bpf


def inner(l4, payload=b"x" * 18, dst=REMOTE_MAC, flags=0):
    return bytes(Ether(src=EP_MAC, dst=dst) / IP(src=EP_IP, dst=REMOTE_IP, flags=flags) / l4 / Raw(payload))


TABLE = {
    "udp": inner(UDP(sport=40000, dport=7)),
    "tcp": inner(TCP(sport=40001, dport=80, flags="S")),
    "icmp": inner(ICMP()),
    "udp-minimum": inner(UDP(sport=1, dport=2), b""),
    "udp-1400": inner(UDP(sport=5, dport=6), b"\xa5" * 1400),
    "ip-fragment": inner(UDP(sport=7, dport=8), b"y" * 64, flags="MF"),
    "ip-options": bytes(Ether(src=EP_MAC, dst=REMOTE_MAC)
                        / IP(src=EP_IP, dst=REMOTE_IP, options=b"\x01\x01\x01\x00") / UDP(sport=9, dport=10)),
    "arp-reply": bytes(P.arp_reply(EP_MAC, EP_IP, REMOTE_MAC, REMOTE_IP)),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_table_same_bytes_three_ways(hashed, name):
    by_scapy, by_c, by_bpf = three_ways(hashed, TABLE[name])
    assert by_c == by_scapy, (name, Ether(by_c).show(dump=True))
    assert by_bpf == by_scapy, (name, Ether(by_bpf).show(dump=True))


def test_c_decap_reads_back_what_the_fast_path_wrote(hashed):
    for name, frame in TABLE.items():
        _, _, by_bpf = three_ways(hashed, frame)
        d = cwire.decap(by_bpf)
        assert (d.vni, d.src, d.dst, d.dport, d.inner) == (VNI, LOCAL_IP, PEER_IP, 4789, frame), name
        assert LO <= d.sport <= HI


def test_optional_udp_checksum_is_what_scapy_computes():
    frame = TABLE["udp"]
    with_sum = cwire.encap(frame, smac=NH_SMAC, dmac=NH_DMAC, src=LOCAL_IP, dst=PEER_IP, vni=VNI, udp_csum=True)
    pkt = Ether(with_sum)
    got = pkt[UDP].chksum
    del pkt[UDP].chksum
    assert got != 0 and got == Ether(bytes(pkt))[UDP].chksum
    for odd in (b"", b"z", b"zz" * 100 + b"z"):  # odd-length payloads pad with a zero byte
        f = inner(UDP(sport=3, dport=4), odd)
        p = Ether(cwire.encap(f, smac=NH_SMAC, dmac=NH_DMAC, src=LOCAL_IP, dst=PEER_IP, vni=VNI, udp_csum=True))
        got = p[UDP].chksum
        del p[UDP].chksum
        assert got == Ether(bytes(p))[UDP].chksum


def _scapy_ipv4_csum(frame: bytes) -> int:
    """The outer IPv4 checksum as scapy computes it itself (the field deleted, the header rebuilt)."""
    ip = Ether(frame)[IP].copy()
    ip.remove_payload()
    del ip.chksum
    return IP(bytes(ip)).chksum


def test_ipv4_checksum_matches_scapy():
    """Both the checksum the C helper wrote into the frame and the one it computes
    for a bare header equal scapy's own computation, not a value read back."""
    for name, frame in TABLE.items():
        c = cwire.encap(frame, smac=NH_SMAC, dmac=NH_DMAC, src=LOCAL_IP, dst=PEER_IP, vni=VNI)
        want = _scapy_ipv4_csum(c)
        assert Ether(c)[IP].chksum == want, name
        assert cwire.ipv4_csum(c[14:24] + b"\xde\xad" + c[26:34]) == want, f"{name}: the check field is ignored"


def set_vni(hx, vni: int):
    """Move the test endpoint (and the remote MAC's FDB entry) to another VNI."""
    m, S = hx.maps, hx.S
    ep = m.dp_endpoints.get(ctypes.c_uint32(EP_IFINDEX))
    ep.vni = vni
    ep.slot = hx.slot(vni)
    m.dp_endpoints.put(ctypes.c_uint32(EP_IFINDEX), ep)
    m.dp_networks.put(ctypes.c_uint32(vni), hx.network(vni))
    m.dp_fdb.put(hx.mac_key(vni, REMOTE_MAC), S["dp_fdb_entry"](vtep=be32(PEER_IP), flags=1))


def drop_vni(hx, vni: int):
    set_vni(hx, VNI)
    if vni != VNI:
        hx.maps.dp_networks.delete(ctypes.c_uint32(vni))
        hx.maps.dp_fdb.delete(hx.mac_key(vni, REMOTE_MAC))


l4s = st.one_of(
    st.builds(lambda s, d: UDP(sport=s, dport=d), st.integers(0, 65535), st.integers(0, 65535)),
    st.builds(lambda s, d, f: TCP(sport=s, dport=d, flags=f), st.integers(0, 65535), st.integers(0, 65535),
              st.sampled_from(["S", "A", "PA", "F"])),
    st.just(ICMP()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(l4=l4s, payload=st.binary(max_size=1400), vni=st.integers(1, 16777215), tos=st.integers(0, 255),
       mf=st.booleans(), offset=st.sampled_from([0, 0, 0, 185]))
def test_random_frames_same_bytes_three_ways(hashed, l4, payload, vni, tos, mf, offset):
    frame = bytes(Ether(src=EP_MAC, dst=REMOTE_MAC) / IP(src=EP_IP, dst=REMOTE_IP, tos=tos, frag=offset,
                                                         flags="MF" if mf else 0) / l4 / Raw(payload))
    set_vni(hashed, vni)
    try:
        by_scapy, by_c, by_bpf = three_ways(hashed, frame, vni)
    finally:
        drop_vni(hashed, vni)
    assert by_c == by_scapy
    assert by_bpf == by_scapy
    assert cwire.decap(by_bpf).inner == frame
