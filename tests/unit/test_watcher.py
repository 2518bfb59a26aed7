"""The watcher thread (agent/watcher.py) against a scripted registry: a snapshot the main loop
asked for is read even when the first try fails (before: the failed read resumed the old watch
at its revision, and the request was lost)."""

from __future__ import annotations

import queue
import threading
from types import SimpleNamespace

from dataplane.agent import sync, watcher
from dataplane.registry import Unavailable
from dataplane.registry.backoff import Backoff


class Watch:
    def __init__(self, rev: int, on_end=None):
        self.rev, self.on_end = rev, on_end

    def __iter__(self):
        if self.on_end:
            self.on_end()
        return iter(())

    def resume_rev(self) -> int:
        return self.rev + 50

    def close(self) -> None:
        pass


def test_a_wanted_snapshot_survives_a_failed_read(monkeypatch):
    opened, reads = [], []
    ag = SimpleNamespace(stopping=threading.Event(), registered=threading.Event(), want_snapshot=threading.Event(),
                         connected=threading.Event(), q=queue.Queue(), counters={"reconnects": 0},
                         _watch=None, _last_watch=None)
    ag.registered.set()

    def watch(rev):
        opened.append(rev)
        if len(opened) == 1:               # the main loop asks for a resync while this watch runs
            return Watch(rev, on_end=ag.want_snapshot.set)
        ag.stopping.set()
        return Watch(rev)

    def read_snapshot(_ag):
        reads.append(1)
        if len(reads) == 1:
            raise Unavailable("etcd: no leader")
        return SimpleNamespace(rev=200)
    ag.reg = SimpleNamespace(kv=SimpleNamespace(open_channels=lambda: None), watch=watch)
    monkeypatch.setattr(sync, "early_snapshot", lambda ag: None)
    monkeypatch.setattr(sync, "start_point", lambda ag, early: 100)
    monkeypatch.setattr(sync, "read_snapshot", read_snapshot)
    monkeypatch.setattr(Backoff, "wait", lambda self, stopping: None)
    watcher.run(ag)
    assert opened == [100, 201], "after the failed read, a snapshot: not the old watch's revision"
    assert len(reads) == 2
