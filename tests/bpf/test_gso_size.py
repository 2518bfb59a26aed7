"""A GSO packet's segments must fit the network's MTU (bpf/lib/encap.h, gso_fits). The size
check on single frames skipped GSO packets whole, and gso_size is the sender's: a sandbox with
CAP_NET_RAW (Docker's default) sets any through PACKET_VNET_HDR. The packet was encapsulated
and left whole (FIXED_GSO), to be cut on the way into segments over the MTU, DF set.

BPF_PROG_TEST_RUN takes a gso_size but no GSO type, and adjust_room refuses a GSO skb of no
type: a packet that passes the check ends as a helper failure here, one that does not as
too_big. (That a real GSO packet is encapsulated whole: test_big_tcp, test_bench_cc.)"""

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.bpf.conftest import EP_IFINDEX, EP_IP, EP_MAC, REMOTE_IP, REMOTE_MAC, TC_ACT_SHOT, VNI
from tests.bpf.test_local_copies import drops

MTU = 1450                   # the harness's networks and endpoints
TCP_TS = TCP(sport=40000, dport=80, options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])  # 32 bytes


def super_packet(l4, size=3000):
    frame = Ether(src=EP_MAC, dst=REMOTE_MAC) / IP(src=EP_IP, dst=REMOTE_IP) / l4
    return bytes(frame / Raw(b"x" * (size - len(frame))))


def judged(hx, l4, gso_size, size=3000) -> str:
    """Which of the drops the super-packet was counted under."""
    before = {r: drops(hx, VNI, r) for r in ("TOO_BIG", "HELPER", "GSO_SEGS")}
    assert hx.run_tc("from_endpoint", super_packet(l4, size), EP_IFINDEX, gso_size=gso_size)[0] == TC_ACT_SHOT
    (reason,) = [r for r in before if drops(hx, VNI, r) == before[r] + 1]
    return reason


def test_segments_that_fit_go_on_to_be_encapsulated(hx):
    assert judged(hx, TCP(sport=40000, dport=80), MTU - 40) == "HELPER"
    assert judged(hx, TCP_TS, MTU - 52) == "HELPER"
    assert judged(hx, UDP(sport=40000, dport=7), MTU - 28) == "HELPER"


def test_segments_over_the_mtu_are_dropped_as_too_big(hx):
    assert judged(hx, TCP(sport=40000, dport=80), MTU - 39) == "TOO_BIG"
    assert judged(hx, TCP_TS, MTU - 51) == "TOO_BIG", "the TCP options count"
    assert judged(hx, UDP(sport=40000, dport=7), MTU - 27) == "TOO_BIG"
    assert judged(hx, TCP(sport=40000, dport=80), 2900) == "TOO_BIG"


def test_a_gso_size_that_would_cut_a_packet_into_thousands_of_frames_is_dropped(hx):
    """The kernel sets no lower bound on a packet socket's TCP gso_size: with 1, one 64 KB send
    became about 64,000 frames on the underlay, cut in softirq outside the sender's CPU share
    (a review found it). More than DP_GSO_SEGS_MAX (2,048) segments is gso_segs; a stack's own
    TCP, which keeps to the device's gso_max_segs, never comes near."""
    tcp, udp = TCP(sport=40000, dport=80), UDP(sport=40000, dport=7)
    assert judged(hx, tcp, 1) == "GSO_SEGS", "3,000 bytes: 2,946 segments of 1 byte"
    assert judged(hx, udp, 1) == "GSO_SEGS"
    assert judged(hx, tcp, 2) == "HELPER", "1,473 segments of 2: on to be encapsulated"
    at = 14 + 20 + 20 + 2048          # (BPF_PROG_TEST_RUN takes a page at most)
    assert judged(hx, tcp, 1, at) == "HELPER", "2,048 segments"
    assert judged(hx, tcp, 1, at + 1) == "GSO_SEGS", "2,049"


def test_a_flooded_gso_packet_is_held_to_the_same(hx):
    """Unknown unicast is flooded (flood.c): the same checks, in the flood's own program."""
    from tests.bpf.test_flood import members

    def flooded(gso_size: int) -> str:
        frame = Ether(src=EP_MAC, dst="02:00:00:00:99:99") / IP(src=EP_IP, dst=REMOTE_IP) / TCP(sport=40000, dport=80)
        before = {r: drops(hx, VNI, r) for r in ("TOO_BIG", "GSO_SEGS", "HELPER", "REDIRECT")}
        hx.run_tc("from_endpoint", bytes(frame / Raw(b"x" * (3000 - len(frame)))), EP_IFINDEX, gso_size=gso_size)
        return next((r for r in before if drops(hx, VNI, r) > before[r]), "neither")
    with members(hx, 1, 2):
        assert flooded(1) == "GSO_SEGS"
        assert flooded(MTU) == "TOO_BIG"
        assert flooded(2) in ("HELPER", "REDIRECT"), "on to the copies (each fails here, as in judged)"
