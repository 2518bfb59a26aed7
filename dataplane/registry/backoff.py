"""Retry pacing for registry clients: exponential backoff with full jitter.

The n-th wait after a failure is uniform in [0, min(cap, base * 2**n)], so
hundreds of agents that lost the same etcd member spread their reconnects
instead of arriving together every fixed interval; reset() after a success
starts over from base.
"""

from __future__ import annotations

import random
import threading
import time

from dataplane.registry.kv import transient

BASE_S = 0.2
CAP_S = 5.0
LOST_WINDOW_S = 5.0      # a registry write whose replies are lost is retried this long (ipam.py, reserve.py)
RETRY_PAUSE_S = 0.05     # the first pause after a lost reply; each next one twice as long, at most 1 s


class Backoff:
    def __init__(self, base: float = BASE_S, cap: float = CAP_S, rng: random.Random | None = None):
        if not 0 < base <= cap:
            raise ValueError(f"backoff needs 0 < base <= cap (base {base}, cap {cap})")
        self.base, self.cap = float(base), float(cap)
        self.rng = rng or random.Random()   # a seeded Random makes the waits repeatable
        self.attempt = 0                    # failures since the last reset()

    def ceiling(self) -> float:
        """The largest wait the next call to next() can return."""
        return min(self.cap, self.base * 2 ** min(self.attempt, 62))

    def next(self) -> float:
        """The next wait in seconds, in [0, ceiling()]; the ceiling doubles each call up to cap."""
        delay = self.rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0

    def wait(self, stop: threading.Event) -> bool:
        """Sleep the next wait, or less if stop is set meanwhile; True if stop is set."""
        return stop.wait(self.next())


def pause_or_raise(lost: int, e: Exception, since: float) -> None:
    """After the lost-th lost reply (Unavailable e) of a write begun at since (time.monotonic()):
    wait, each time twice as long (at most 1 s), or give up with e once the next try would
    start more than LOST_WINDOW_S after since. It was 3 retries 50-150 ms apart, 0.3 s in all:
    an etcd leader's hand-over or an election (1-2 s) failed adds during a rolling restart."""
    pause = min(1.0, RETRY_PAUSE_S * 2 ** (lost - 1))
    if not transient(e) or time.monotonic() + pause - since > LOST_WINDOW_S:
        raise e          # refused for good (a permission, a damaged file) or out of space: at once
    time.sleep(pause)
