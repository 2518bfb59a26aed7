"""agent/pauses.py: collection is off while a bulk read is synced, on again at
the sync, or at a tick once HOLD_MAX_S has passed without one; a tick collects
and freezes what survived, so later collections do not walk it again."""

from __future__ import annotations

import gc

from dataplane.agent import pauses


def test_hold_until_the_sync_then_frozen(monkeypatch):
    assert gc.isenabled()
    try:
        pauses.hold()
        assert not gc.isenabled()
        pauses.tick()                          # a tick during the read leaves it off
        assert not gc.isenabled()
        kept = [object() for _ in range(1000)]
        frozen = gc.get_freeze_count()
        pauses.settle()
        assert gc.isenabled() and gc.get_freeze_count() >= frozen + len(kept)
    finally:
        pauses.release()
        gc.unfreeze()


def test_a_hold_that_never_syncs_ends_at_a_tick(monkeypatch):
    try:
        pauses.hold()
        monkeypatch.setattr(pauses, "HOLD_MAX_S", 0.0)
        pauses.tick()
        assert gc.isenabled()
    finally:
        pauses.release()
        gc.unfreeze()
