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

BASE_S = 0.2
CAP_S = 5.0
LOST_RETRIES = 3         # retries of a registry commit whose reply was lost (ipam.py, reserve.py)
RETRY_PAUSE_S = 0.05     # times the retry number


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


def pause_or_raise(lost: int, e: Exception) -> None:
    """After the lost-th lost reply (Unavailable e): wait a little, or give up with it."""
    if lost > LOST_RETRIES:
        raise e
    time.sleep(RETRY_PAUSE_S * lost)
