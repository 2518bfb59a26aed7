"""The fast path's clock (dp_now_ns in bpf/lib/common.h) is jiffies, which the
verifier inlines into one load, scaled to CLOCK_MONOTONIC: jiffies * tick +
offset. calibrate() works out both from the pinned dp_clock program, run by
BPF_PROG_TEST_RUN, which reads jiffies and the coarse monotonic clock in one
go. Both move at the tick, so the scaled jiffies stay within a tick of
time.monotonic_ns(), the agent's timebase, for as long as the system runs.
(0, 0) means "not calibrated": the programs then call bpf_ktime_get_coarse_ns()."""

from __future__ import annotations

import gzip
import logging
import os
import struct
import time

from dataplane.core import cwire
from dataplane.core.errors import DataplaneError
from dataplane.kernel import loader

log = logging.getLogger(__name__)

NSEC = 1_000_000_000
PROBES = 8
KNOWN_HZ = (100, 250, 300, 1000)
_CTX = bytes(192)                    # struct __sk_buff, all zero: cb[] comes back filled
_FRAME = bytes(12) + b"\x08\x00" + bytes(50)
_CB = 48                             # offset of __sk_buff.cb[]


def tick_ns(hz: int) -> int:
    """The kernel's TICK_NSEC: what one jiffy adds to CLOCK_MONOTONIC."""
    return (NSEC + hz // 2) // hz


def config_hz() -> int | None:
    """CONFIG_HZ from the running kernel's configuration, if it can be read."""
    for path, opener in (("/proc/config.gz", gzip.open), (f"/boot/config-{os.uname().release}", open)):
        try:
            with opener(path, "rt") as f:
                for line in f:
                    if line.startswith("CONFIG_HZ="):
                        return int(line.split("=", 1)[1])
        except (OSError, ValueError, EOFError):
            continue
    return None


def probe(fd: int) -> tuple[int, int] | None:
    """(jiffies, coarse CLOCK_MONOTONIC ns) read together; None if a tick fell between."""
    out = cwire.prog_test_run(fd, _FRAME, _CTX).ctx
    j_lo, j_hi, ns_lo, ns_hi, moved = struct.unpack_from("<5I", out, _CB)
    if moved:
        return None
    return j_lo | j_hi << 32, ns_lo | ns_hi << 32


def _probes(fd: int, n: int) -> list[tuple[int, int]]:
    got = [p for p in (probe(fd) for _ in range(n)) if p is not None]
    if not got:
        raise DataplaneError("dp_clock: every probe straddled a tick")
    return got


def measured_hz(fd: int, wait_s: float = 0.1) -> int:
    """HZ from two probes wait_s apart (for kernels whose configuration is not readable)."""
    j1, ns1 = _probes(fd, 1)[0]
    time.sleep(wait_s)
    j2, ns2 = _probes(fd, 1)[0]
    hz = (j2 - j1) * NSEC / max(ns2 - ns1, 1)
    near = min(KNOWN_HZ, key=lambda k: abs(k - hz))
    return near if abs(near - hz) <= 0.06 * near else round(hz)


def offset(fd: int, tick: int) -> int:
    """CLOCK_MONOTONIC less jiffies * tick (mod 2^64). A probe can see the new jiffy
    before the clock it moves with: that one reads a tick low, so the largest wins."""
    return max(ns - j * tick for j, ns in _probes(fd, PROBES)) % (1 << 64)


def calibrate(pin_dir: str) -> tuple[int, int]:
    """(clock_ns_per_jiffy, clock_offset_ns) for dp_config, checked against
    time.monotonic_ns(); (0, 0) if they cannot be had or do not agree."""
    try:
        fd = loader.open_prog(pin_dir, "dp_clock")
        try:
            tick = tick_ns(config_hz() or measured_hz(fd))
            off = offset(fd, tick)
            j, _ = _probes(fd, 1)[0]
        finally:
            os.close(fd)
    except DataplaneError as e:
        log.warning("fast-path clock not calibrated (%s): the programs read the coarse clock by helper", e)
        return 0, 0
    lag = time.monotonic_ns() - (j * tick + off) % (1 << 64)
    if not -tick <= lag <= 3 * tick:
        log.warning("fast-path clock not calibrated: jiffies scaled by %d ns are %d ns off CLOCK_MONOTONIC",
                    tick, lag)
        return 0, 0
    return tick, off
