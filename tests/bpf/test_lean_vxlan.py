"""bench/lean_vxlan.c, bench.lean's yardstick, does the job it stands for: its
encapsulation writes exactly what the reference encapsulation (csrc,
byte-identical to the fast path) writes, source port included, and its
decapsulation gives back the inner frame of a reference-encapsulated one and
refuses what the fast path's parser refuses for frames without IP options
(and trailing bytes, which ours trims). A yardstick that skipped work would
flatter it against ours."""

from __future__ import annotations

import pytest

from tests import packets as P
from tests.bpf.conftest import EP_IP, EP_MAC, LOCAL_IP, NH_DMAC, NH_SMAC, PEER_IP, REMOTE_IP, REMOTE_MAC, VNI
from tests.conftest import require_privileges

TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7
OUT_IF, PEER_IF = 900, 1000


@pytest.fixture(scope="module")
def lean():
    require_privileges()
    from bench.lean import Lean, outer_template
    ln = Lean()
    outer, words = outer_template(NH_SMAC, NH_DMAC, LOCAL_IP, PEER_IP, VNI)
    ln.configure(0, mac=REMOTE_MAC, ifindex=OUT_IF, outer=outer, csum_words=words)
    ln.configure(1, mac=EP_MAC, ifindex=PEER_IF, local_ip=LOCAL_IP)
    yield ln
    ln.close()


def _run(lean, prog: str, frame: bytes):
    from dataplane.core import cwire
    return cwire.prog_test_run(lean.fds[prog], frame)


@pytest.mark.parametrize("payload", [18, 1000])
@pytest.mark.parametrize("proto,sport", [("udp", 10000), ("udp", 10001), ("tcp", 40000), ("icmp", None)])
def test_encapsulation_matches_the_reference_byte_for_byte(lean, payload, proto, sport):
    from dataplane.core import cwire
    frame = P.inner_ipv4(EP_MAC, REMOTE_MAC, EP_IP, REMOTE_IP, payload=b"x" * payload, proto=proto)
    if sport:
        frame.payload.payload.sport = sport     # the flow hash reads the ports: each a different source port
    inner = bytes(frame)
    r = _run(lean, "from_endpoint", inner)
    assert r.retval == TC_ACT_REDIRECT
    assert r.data == cwire.encap(inner, smac=NH_SMAC, dmac=NH_DMAC, src=LOCAL_IP, dst=PEER_IP, vni=VNI)


def test_encapsulation_passes_other_destinations(lean):
    inner = bytes(P.inner_ipv4(EP_MAC, "02:42:0a:01:00:99", EP_IP, REMOTE_IP, payload=b"x" * 18))
    r = _run(lean, "from_endpoint", inner)
    assert (r.retval, r.data) == (TC_ACT_OK, inner)


def test_decapsulation_gives_back_the_inner_frame(lean):
    from dataplane.core import cwire
    inner = bytes(P.inner_ipv4(REMOTE_MAC, EP_MAC, REMOTE_IP, EP_IP, payload=b"x" * 18))
    pkt = cwire.encap(inner, smac=NH_DMAC, dmac=NH_SMAC, src=PEER_IP, dst=LOCAL_IP, vni=VNI)
    r = _run(lean, "from_overlay", pkt)
    assert (r.retval, r.data) == (TC_ACT_REDIRECT, inner)


def _mangled(what: str) -> bytes:
    from dataplane.core import cwire
    inner = bytes(P.inner_ipv4(REMOTE_MAC, "02:42:0a:01:00:99" if what == "inner_mac" else EP_MAC,
                               REMOTE_IP, EP_IP, payload=b"x" * 18))
    pkt = bytearray(cwire.encap(inner, smac=NH_DMAC, dmac=NH_SMAC, src=PEER_IP,
                                dst=PEER_IP if what == "not_ours" else LOCAL_IP,
                                vni=VNI + 1 if what == "vni" else VNI,
                                dport=4790 if what == "port" else cwire.DEFAULT_PORT))
    if what == "no_i_flag":
        pkt[42] = 0
    if what == "fragment":
        pkt[20] |= 0x20                      # MF
    if what in ("udp_len", "ip_len"):           # one length off by one, the other left as it was
        at = 38 if what == "udp_len" else 16
        pkt[at:at + 2] = (int.from_bytes(pkt[at:at + 2], "big") - 1).to_bytes(2, "big")
    if what == "ip_len_0":                      # a GSO packet's marks on a frame that is none
        pkt[16:18], pkt[38:40] = b"\0\0", b"\xff\xff"
    if what == "padded":
        pkt += b"\0" * 4                       # bytes past the IPv4 length
    if what == "outer_type":
        pkt[12:14] = b"\x86\xdd"
    if what == "ip_options":
        pkt[14] = 0x46
    if what == "outer_proto":
        pkt[23] = 6
    if what == "inner_type":
        pkt[62:64] = b"\x08\x06"
    return bytes(pkt)


@pytest.mark.parametrize("what,verdict", [
    ("vni", TC_ACT_SHOT), ("inner_mac", TC_ACT_SHOT), ("no_i_flag", TC_ACT_SHOT), ("fragment", TC_ACT_SHOT),
    ("udp_len", TC_ACT_SHOT), ("ip_len", TC_ACT_SHOT), ("ip_len_0", TC_ACT_SHOT), ("padded", TC_ACT_SHOT),
    ("inner_type", TC_ACT_SHOT), ("port", TC_ACT_OK), ("not_ours", TC_ACT_OK), ("outer_type", TC_ACT_OK),
    ("ip_options", TC_ACT_OK), ("outer_proto", TC_ACT_OK)])
def test_decapsulation_refuses_what_is_not_its_network(lean, what, verdict):
    assert _run(lean, "from_overlay", _mangled(what)).retval == verdict
