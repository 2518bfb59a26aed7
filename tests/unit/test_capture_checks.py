"""capture.problems() against pcaps written by scapy and dissected by the
real tshark: it must flag a broken frame and must not flag TCP reordering."""

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.utils import wrpcap

from lab import capture


def outer(inner, vni=256):
    return (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
            / IP(src="198.18.0.1", dst="198.18.0.2", flags="DF")
            / UDP(sport=50000, dport=4789) / VXLAN(vni=vni, flags=0x08) / inner)


def seg(seq, payload=b"x" * 100):
    return (Ether(src="02:aa:00:00:00:01", dst="02:aa:00:00:00:02")
            / IP(src="10.0.0.2", dst="10.0.0.3") / TCP(sport=40000, dport=5001, seq=seq, ack=1, flags="A")
            / payload)


def rows_of(tmp_path, frames):
    path = tmp_path / "c.pcap"
    wrpcap(str(path), frames)
    return capture.decode(str(path))


def test_reordered_tcp_is_a_flow_note_not_a_problem(tmp_path):
    frames = [outer(seg(1000)), outer(seg(1200)), outer(seg(1100)), outer(seg(1300))]
    rows = rows_of(tmp_path, frames)
    assert capture.problems(rows) == []
    assert capture.flow_notes(rows), "tshark saw the reordering"


def test_truncated_inner_frame_is_a_problem(tmp_path):
    good = bytes(outer(seg(1000)))
    cut = bytearray(good[:14 + 20 + 8 + 8 + 14 + 10])  # inner IPv4 header cut short
    ip = Ether(bytes(cut))[IP]
    frames = [Ether(bytes(cut))]
    rows = rows_of(tmp_path, frames)
    assert ip.len > len(cut) - 14
    assert any("malformed" in p or "expert" in p for p in capture.problems(rows)), rows


def test_bad_outer_checksum_and_flags_are_problems(tmp_path):
    f = outer(seg(1000))
    f[IP].chksum = 0x1234
    f[VXLAN].flags = 0x0C
    rows = rows_of(tmp_path, [f])
    got = capture.problems(rows)
    assert any("checksum" in p for p in got) and any("VXLAN flags" in p for p in got), got
