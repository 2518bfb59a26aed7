"""The fast path's clock: jiffies scaled by dp_config to CLOCK_MONOTONIC
(kernel/clock.py), so every stamp it writes or compares is in the agent's
timebase (time.monotonic_ns()), within a tick."""

import ctypes
import os
import time

import pytest

from dataplane.kernel import clock, loader
from dataplane.kernel.ringbuf import RingReader
from tests import packets as P
from tests.bpf.conftest import (EP_IFINDEX, EP_IP, EP_MAC, LOCAL_IP, PEER_IP, TC_ACT_REDIRECT, TC_ACT_SHOT,
                                VNI)

LEARNED_MAC, LEARNED_IP = "02:42:0a:01:00:44", "10.1.0.44"
UNKNOWN_MAC, UNKNOWN_IP = "02:42:0a:01:00:63", "10.1.0.99"


def test_calibration_is_the_kernels_tick_and_agrees_with_monotonic(harness):
    tick, off = harness.clock
    hz = clock.config_hz()
    assert hz, "this machine kind has /proc/config.gz"
    assert tick == clock.tick_ns(hz) and off != 0
    fd = loader.open_prog(harness.maps.pin_dir, "dp_clock")
    try:
        assert clock.measured_hz(fd) == hz, "the fallback for kernels without a readable config agrees"
        for _ in range(20):
            before = time.monotonic_ns()
            got = clock.probe(fd)
            after = time.monotonic_ns()
            if got:
                now = (got[0] * tick + off) % (1 << 64)
                assert before - 2 * tick <= now <= after, (before, now, after, tick)
    finally:
        os.close(fd)


@pytest.mark.parametrize("calibrated", [True, False], ids=["jiffies", "coarse-helper"])
def test_a_learned_entry_is_stamped_in_monotonic_time(hx, calibrated):
    hx.configure(clock=calibrated)
    frame = bytes(P.vxlan(P.inner_ipv4(LEARNED_MAC, EP_MAC, LEARNED_IP, EP_IP), VNI, PEER_IP, LOCAL_IP))
    before = time.monotonic_ns()
    ret, _ = hx.run_tc("from_overlay", frame, 0)
    after = time.monotonic_ns()
    assert ret == TC_ACT_REDIRECT
    stamp = hx.maps.dp_learned.get(hx.mac_key(VNI, LEARNED_MAC)).last_seen_ns
    tick = clock.tick_ns(clock.config_hz())
    assert before - 2 * tick <= stamp <= after, (before, stamp, after)
    hx.configure()


def test_the_agents_punt_lease_ends_when_monotonic_time_says(hx):
    """dp_agent.punt_until_ns is the agent's time.monotonic_ns() + its lease: the
    jiffies clock must end it then, not hours early or late."""
    r = RingReader(os.path.join(hx.maps.pin_dir, "dp_punts"))
    r.read(0, limit=10**6)
    tick = hx.clock[0]
    frame = bytes(P.inner_ipv4(EP_MAC, UNKNOWN_MAC, EP_IP, UNKNOWN_IP))
    try:
        for until, punted in ((time.monotonic_ns() - 3 * tick, False), (time.monotonic_ns() + 10**9, True)):
            hx.maps.dp_agent.put(ctypes.c_uint32(0), hx.S["dp_agent"](punt_until_ns=until))
            ret, _ = hx.run_tc("from_endpoint", frame, EP_IFINDEX)
            assert ret == TC_ACT_SHOT, (until, ret)   # punted (consumed) or flooded to nobody
            recs = r.read(0, limit=10)
            assert len(recs) == int(punted)
    finally:
        hx.configure()
        r.read(0, limit=10**6)
        r.close()
