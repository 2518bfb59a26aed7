"""The learning budget (bpf/lib/fdb.h, learn_allow): a peer, or a forger of its address,
sending from random source MACs had every one learned, at line rate, churning the LRU map of
learned entries and pushing out what other hosts' frames had taught. Now a network learns new
or moved MACs within its rate; over it the frame is delivered, its source not learned, and
counted (learn_limited). A refresh of what is learned is free."""

import time

import pytest

from tests import packets as P
from tests.bpf.conftest import EP_IP, EP_MAC, LOCAL_IP, OTHER_PEER_IP, PEER_IP, TC_ACT_REDIRECT, VNI, be32

INTERVAL = 10 * 10**9                           # 0.1 MAC/s: nothing earned while a test runs ...
BURST = 5 * INTERVAL                            # ... and 5 ahead: 6 back to back


def mac(i: int) -> str:
    return f"02:42:0a:09:{i >> 8:02x}:{i & 0xff:02x}"      # no static entry: learned only


def from_vtep(vtep: str, src: str) -> bytes:
    return bytes(P.vxlan(P.inner_ipv4(src, EP_MAC, "10.1.0.124", EP_IP), VNI, vtep, LOCAL_IP))


@pytest.fixture
def budget(hx):
    """The meter with its state cleared, and the test's learned entries gone after."""
    hx.meter_state(VNI)
    hx.configure(learn_ns=(INTERVAL, BURST))
    yield
    hx.configure()
    for i in range(100):
        hx.maps.dp_learned.delete(hx.mac_key(VNI, mac(i)))


def learned(hx, macs) -> list[str]:
    return [m for m in macs if hx.maps.dp_learned.get(hx.mac_key(VNI, m)) is not None]


def limited(hx) -> int:
    return hx.stats(VNI)["learn_limited"]


def test_random_source_macs_are_learned_within_the_budget_and_still_delivered(hx, budget):
    macs = [mac(i) for i in range(40)]
    before = limited(hx)
    for m in macs:
        assert hx.run_tc("from_overlay", from_vtep(PEER_IP, m), 0)[0] == TC_ACT_REDIRECT, "delivered all the same"
    got = learned(hx, macs)
    assert got == macs[:6], "the first and the burst"
    assert limited(hx) - before == 40 - len(got)


def test_a_move_is_charged_and_a_refresh_is_free(hx, budget):
    macs = [mac(i) for i in range(10)]
    for m in macs:
        hx.run_tc("from_overlay", from_vtep(PEER_IP, m), 0)
    first = macs[0]
    assert learned(hx, [first]) == [first]
    before = limited(hx)
    hx.run_tc("from_overlay", from_vtep(OTHER_PEER_IP, first), 0)     # moved, with the budget spent
    assert hx.maps.dp_learned.get(hx.mac_key(VNI, first)).vtep == be32(PEER_IP), "the move waits for the budget"
    assert limited(hx) - before == 1
    stamp = hx.maps.dp_learned.get(hx.mac_key(VNI, first)).last_seen_ns
    time.sleep(1.1)                         # due for its refresh (DP_LEARN_REFRESH_NS); the budget is still spent
    before = limited(hx)
    hx.run_tc("from_overlay", from_vtep(PEER_IP, first), 0)
    assert hx.maps.dp_learned.get(hx.mac_key(VNI, first)).last_seen_ns > stamp, "refreshed"
    assert limited(hx) == before


def test_no_budget_at_zero(hx, budget):
    hx.configure(learn_ns=(0, 0))
    macs = [mac(i) for i in range(40)]
    before = limited(hx)
    for m in macs:
        hx.run_tc("from_overlay", from_vtep(PEER_IP, m), 0)
    assert learned(hx, macs) == macs and limited(hx) == before
