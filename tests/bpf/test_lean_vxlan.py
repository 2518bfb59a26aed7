"""bench/lean_vxlan.c, bench.lean's yardstick, does the job it stands for: its
encapsulation writes what the reference encapsulation (csrc, byte-identical to
the fast path) writes, but for the source port, and its decapsulation gives
back the inner frame of a reference-encapsulated one. A yardstick that skipped
work would flatter it against ours."""

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
    ln.configure(1, mac=EP_MAC, ifindex=PEER_IF)
    yield ln
    ln.close()


def _run(lean, prog: str, frame: bytes):
    from dataplane.core import cwire
    return cwire.prog_test_run(lean.fds[prog], frame)


@pytest.mark.parametrize("payload", [18, 1000])
def test_encapsulation_matches_the_reference_but_for_the_source_port(lean, payload):
    from dataplane.core import cwire
    inner = bytes(P.inner_ipv4(EP_MAC, REMOTE_MAC, EP_IP, REMOTE_IP, payload=b"x" * payload))
    r = _run(lean, "from_endpoint", inner)
    assert r.retval == TC_ACT_REDIRECT
    want = cwire.encap(inner, smac=NH_SMAC, dmac=NH_DMAC, src=LOCAL_IP, dst=PEER_IP, vni=VNI)
    assert len(r.data) == len(want)
    assert r.data[:34] + r.data[36:] == want[:34] + want[36:]
    assert 49152 <= int.from_bytes(r.data[34:36], "big")
    d = cwire.decap(r.data, PEER_IP)
    assert d and d.vni == VNI and d.inner == inner


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


@pytest.mark.parametrize("what", ["vni", "inner_mac", "port"])
def test_decapsulation_refuses_what_is_not_its_network(lean, what):
    from dataplane.core import cwire
    inner = bytes(P.inner_ipv4(REMOTE_MAC, "02:42:0a:01:00:99" if what == "inner_mac" else EP_MAC,
                               REMOTE_IP, EP_IP, payload=b"x" * 18))
    pkt = cwire.encap(inner, smac=NH_DMAC, dmac=NH_SMAC, src=PEER_IP, dst=LOCAL_IP,
                      vni=VNI + 1 if what == "vni" else VNI, dport=4790 if what == "port" else cwire.DEFAULT_PORT)
    r = _run(lean, "from_overlay", pkt)
    assert r.retval == (TC_ACT_OK if what == "port" else TC_ACT_SHOT)
