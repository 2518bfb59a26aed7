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

While a snapshot (or the view on disk) is read and synced, collection is off
(hold): building 400,000 objects set off full collections again and again,
0.3-0.7 s of a 1.4-1.9 s read. The sync's end turns it on (settle); so does
the housekeeping tick if no sync came within HOLD_MAX_S.
"""

from __future__ import annotations

import gc
import logging
import time

SLOW_S = 0.1
HOLD_MAX_S = 30.0
log = logging.getLogger("dataplane.agent")
_started = 0.0
_held_since: float | None = None


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


def hold() -> None:
    """No collection until settle() or release(): a bulk read is under way."""
    global _held_since
    if _held_since is None:
        _held_since = time.monotonic()
        gc.disable()


def release() -> None:
    global _held_since
    if _held_since is not None:
        _held_since = None
        gc.enable()


def settle() -> None:
    """Everything alive now (the view just synced) is left out of later collections."""
    gc.freeze()
    release()


def tick() -> None:
    """Housekeeping: collect what arrived since the last tick, then freeze what survived."""
    if _held_since is not None:
        if time.monotonic() - _held_since < HOLD_MAX_S:
            return
        release()                       # a read that never led to a sync
    gc.collect()
    gc.freeze()
