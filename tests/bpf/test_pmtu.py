"""Path MTU across the overlay (issue 16, item 3): a DF frame over the network
MTU comes back to its sender as ICMP "fragmentation needed" with the MTU."""

import ctypes

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.bpf.conftest import EP_IFINDEX, EP_IP, EP_MAC, REMOTE_IP, REMOTE_MAC, TC_ACT_REDIRECT, TC_ACT_SHOT, VNI

MTU = 1450


def big(df=True, l4=None, size=1500):
    ip = IP(src=EP_IP, dst=REMOTE_IP, flags="DF" if df else 0, id=7)
    frame = Ether(src=EP_MAC, dst=REMOTE_MAC) / ip / (l4 or TCP(sport=40000, dport=80, flags="A"))
    return frame / Raw(b"p" * (size - len(frame[IP])))


def test_df_frame_over_the_mtu_gets_frag_needed_back(hx):
    frame = big()
    before = hx.stats(VNI)
    ret, out = hx.run_tc("from_endpoint", bytes(frame), EP_IFINDEX)
    assert ret == TC_ACT_REDIRECT, "back out of the host side: into the sandbox"
    r = Ether(out)
    assert (r.dst, r.src) == (EP_MAC, REMOTE_MAC)
    assert (r[IP].src, r[IP].dst, r[IP].proto) == (REMOTE_IP, EP_IP, 1)
    assert (r[ICMP].type, r[ICMP].code, r[ICMP].nexthopmtu) == (3, 4, MTU)
    assert bytes(r[ICMP].payload)[:28] == bytes(frame[IP])[:28], "quotes the header and 8 bytes"
    # Checksums as the sandbox's stack will check them.
    again = Ether(bytes(r))
    del again[IP].chksum, again[ICMP].chksum
    again = Ether(bytes(again))
    assert (again[IP].chksum, again[ICMP].chksum) == (r[IP].chksum, r[ICMP].chksum)
    after = hx.stats(VNI)
    assert after["frag_needed"] == before["frag_needed"] + 1
    assert after["tx_packets"] == before["tx_packets"], "nothing was encapsulated"


def test_the_endpoints_own_entry_carries_the_mtu(hx):
    """from_endpoint reads the MTU from dp_endpoint (no dp_networks lookup per frame)."""
    ep = hx.maps.dp_endpoints.get(ctypes.c_uint32(EP_IFINDEX))
    old = ep.mtu
    ep.mtu = 1000
    hx.maps.dp_endpoints.put(ctypes.c_uint32(EP_IFINDEX), ep)
    try:
        ret, out = hx.run_tc("from_endpoint", bytes(big(size=1100)), EP_IFINDEX)
        assert ret == TC_ACT_REDIRECT and Ether(out)[ICMP].nexthopmtu == 1000
    finally:
        ep.mtu = old
        hx.maps.dp_endpoints.put(ctypes.c_uint32(EP_IFINDEX), ep)


def test_ping_with_df_gets_it_too_but_no_icmp_error_about_an_icmp_error(hx):
    ret, out = hx.run_tc("from_endpoint", bytes(big(l4=ICMP(type=8))), EP_IFINDEX)
    assert ret == TC_ACT_REDIRECT and Ether(out)[ICMP].type == 3
    idx = int(hx.drop.DP_DROP_TOO_BIG)
    before = hx.stats(VNI)["drops"][idx]
    assert hx.run_tc("from_endpoint", bytes(big(l4=ICMP(type=3, code=1))), EP_IFINDEX)[0] == TC_ACT_SHOT
    assert hx.stats(VNI)["drops"][idx] == before + 1


def test_without_df_the_frame_is_dropped_and_counted(hx):
    idx = int(hx.drop.DP_DROP_TOO_BIG)
    before = hx.stats(VNI)
    assert hx.run_tc("from_endpoint", bytes(big(df=False, l4=UDP(sport=1, dport=2))), EP_IFINDEX)[0] == TC_ACT_SHOT
    after = hx.stats(VNI)
    assert after["drops"][idx] == before["drops"][idx] + 1 and after["frag_needed"] == before["frag_needed"]


def test_at_the_mtu_the_frame_is_encapsulated(hx):
    ret, out = hx.run_tc("from_endpoint", bytes(big(size=MTU)), EP_IFINDEX)
    assert ret == TC_ACT_REDIRECT and len(out) == 50 + 14 + MTU
