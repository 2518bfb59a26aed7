"""Garbage-collection pauses of the agent, which hold up registry events like
any slow turn of the main loop does.

A full collection walks every tracked object: with 100,000 endpoints in the
registry view that is a few hundred milliseconds on a small machine, taken at
unpredictable moments, again and again as the view grows. So the agent
freezes what is alive (gc.freeze): after each sync, and at every housekeeping
tick after a full collection, which then walks only what arrived since the
last tick (a few milliseconds at 1,000 updates a second). Each object is
walked by a full collection once, not at every one. Collections that still
take long are logged, as slow turns are. Cycles among frozen objects are never
collected: the view's records make none.
"""

from __future__ import annotations

import gc
import logging
import time

SLOW_S = 0.1
log = logging.getLogger("dataplane.agent")
_started = 0.0


def _callback(phase: str, info: dict) -> None:
    global _started
    if phase == "start":
        _started = time.monotonic()
        return
    took = time.monotonic() - _started
    if took > SLOW_S:
        log.warning("slow turn: garbage collection (generation %d) took %.0f ms", info["generation"], took * 1000)


def watch() -> None:
    """Log collections that take longer than SLOW_S. Idempotent."""
    if _callback not in gc.callbacks:
        gc.callbacks.append(_callback)


def settle() -> None:
    """Everything alive now (the view just synced) is left out of later collections."""
    gc.freeze()


def tick() -> None:
    """Housekeeping: collect what arrived since the last tick, then freeze what survived."""
    gc.collect()
    gc.freeze()
