"""The learning budget (bpf/lib/fdb.h, learn_allow): a peer, or a forger of its address,
sending from random source MACs had every one learned, at line rate, churning the LRU map of
learned entries and pushing out what other hosts' frames had taught. Now a network learns new
MACs within its rate; over it the frame is delivered, its source not learned, and
counted (learn_limited). A refresh or a move of what is learned is free."""

import time

import pytest

from tests import packets as P
from tests.bpf.conftest import EP_IP, EP_MAC, LOCAL_IP, OTHER_PEER_IP, PEER_IP, TC_ACT_REDIRECT, VNI, be32
from tests.bpf.test_local_copies import one_cpu  # noqa: F401 (an autouse fixture: the copies are per CPU)

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


def test_a_move_and_a_refresh_are_free(hx, budget):
    """A first version charged moves too: a flood of new MACs that spent the budget then kept every
    moved MAC's replies going to its old host until the entry aged out (review finding)."""
    macs = [mac(i) for i in range(10)]
    for m in macs:
        hx.run_tc("from_overlay", from_vtep(PEER_IP, m), 0)
    first = macs[0]
    assert learned(hx, [first]) == [first] and learned(hx, macs[6:]) == [], "the budget is spent"
    before = limited(hx)
    hx.run_tc("from_overlay", from_vtep(OTHER_PEER_IP, first), 0)     # moved
    assert hx.maps.dp_learned.get(hx.mac_key(VNI, first)).vtep == be32(OTHER_PEER_IP), "followed at once"
    assert limited(hx) == before
    stamp = hx.maps.dp_learned.get(hx.mac_key(VNI, first)).last_seen_ns
    time.sleep(1.1)                         # due for its refresh (DP_LEARN_REFRESH_NS); the budget is still spent
    hx.run_tc("from_overlay", from_vtep(OTHER_PEER_IP, first), 0)
    assert hx.maps.dp_learned.get(hx.mac_key(VNI, first)).last_seen_ns > stamp, "refreshed"
    assert limited(hx) == before


def test_a_refused_source_is_asked_about_again_once_a_second(hx, budget):
    """The CPU's learning copy holds a refusal for a second: a refused source's frames do not each
    take the slow path (a dp_learned lookup, the meter, an atomic add on a shared line)."""
    for i in range(6):
        hx.run_tc("from_overlay", from_vtep(PEER_IP, mac(i)), 0)      # the budget spent
    before = limited(hx)
    for _ in range(20):
        assert hx.run_tc("from_overlay", from_vtep(PEER_IP, mac(50)), 0)[0] == TC_ACT_REDIRECT
    assert limited(hx) - before == 1 and learned(hx, [mac(50)]) == []
    time.sleep(1.1)
    hx.run_tc("from_overlay", from_vtep(PEER_IP, mac(50)), 0)
    assert limited(hx) - before == 2, "asked again after the second"


def test_no_budget_at_zero(hx, budget):
    hx.configure(learn_ns=(0, 0))
    macs = [mac(i) for i in range(40)]
    before = limited(hx)
    for m in macs:
        hx.run_tc("from_overlay", from_vtep(PEER_IP, m), 0)
    assert learned(hx, macs) == macs and limited(hx) == before
