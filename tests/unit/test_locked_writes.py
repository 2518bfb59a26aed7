"""Registry writes the agent makes under its lock give up on lost replies within
local.LOCKED_WINDOW_S, not backoff.LOST_WINDOW_S (5 s): the main loop waits on that lock,
so a registry without a leader held every event and punt for 5 s per such write (review
finding of stop 47). A real SQLite registry whose commits lose their replies."""

from __future__ import annotations

import threading
import time

from dataplane.agent import local
from dataplane.registry import Unavailable, backoff
from tests.unit.test_view_ahead import registry_with_web_on_h2


def lose_every_commit(monkeypatch, kv) -> list:
    tries = []

    def commit(txn):
        tries.append(time.monotonic())
        raise Unavailable("etcd: no leader")
    monkeypatch.setattr(kv, "commit", commit)
    return tries


def test_a_stuck_move_taken_back_under_the_lock_gives_up_soon(tmp_path, monkeypatch):
    ag = registry_with_web_on_h2(tmp_path, monkeypatch)
    try:
        ag.reg.endpoint_move_begin("web", "h1")             # a move to h1 with no sandbox here
        ag.view.load(ag.reg.snapshot())
        tries = lose_every_commit(monkeypatch, ag.reg.kv)
        t0 = time.monotonic()
        with ag.lock:
            local.settle_moves(ag)
        held = time.monotonic() - t0
        assert len(tries) >= 2, "a lost reply is still tried again"
        assert held < local.LOCKED_WINDOW_S + 0.6, f"the lock was held {held:.1f} s"
        monkeypatch.undo()
        local.settle_moves(ag)                              # the next settle takes it back
        assert ag.reg.endpoint("web").moving_to is None
    finally:
        ag.reg.close()


def test_a_lost_window_is_the_threads_own_and_ends_with_its_block():
    seen = {}

    def other():
        seen["other"] = getattr(backoff._window, "s", None)
    with backoff.lost_window(0.5):
        t = threading.Thread(target=other)
        t.start()
        t.join()
        with backoff.lost_window(0.1):
            seen["inner"] = backoff._window.s
        seen["outer"] = backoff._window.s
    assert seen == {"other": None, "inner": 0.1, "outer": 0.5}
    assert backoff._window.s is None
    since = time.monotonic() - 0.45
    with backoff.lost_window(0.5):
        try:
            backoff.pause_or_raise(1, Unavailable("x"), since)      # 0.45 + 0.05 pause: still inside
            backoff.pause_or_raise(2, Unavailable("x"), since)      # + 0.1: past it
            raised = False
        except Unavailable:
            raised = True
    assert raised
