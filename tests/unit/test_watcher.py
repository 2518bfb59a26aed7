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


def agent():
    ag = SimpleNamespace(me="h1", stopping=threading.Event(), registered=threading.Event(),
                         want_snapshot=threading.Event(), connected=threading.Event(), q=queue.Queue(),
                         counters={"reconnects": 0}, _watch=None, _last_watch=None, view_cluster=None,
                         history_reset=False)
    ag.registered.set()
    return ag


def run_scripted(monkeypatch, ag, watch, read_snapshot) -> None:
    """watcher.run against watch(rev) and read_snapshot(ag), from revision 100, a store at 500."""
    ag.reg = SimpleNamespace(kv=SimpleNamespace(open_channels=lambda: None, range_exact=lambda k: (500, [])),
                             watch=watch)
    monkeypatch.setattr(sync, "early_snapshot", lambda ag: None)
    monkeypatch.setattr(sync, "start_point", lambda ag, early: 100)
    monkeypatch.setattr(sync, "read_snapshot", read_snapshot)
    monkeypatch.setattr(Backoff, "wait", lambda self, stopping: None)
    watcher.run(ag)


def test_a_wanted_snapshot_survives_a_failed_read(monkeypatch):
    opened, reads = [], []
    ag = agent()

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
    run_scripted(monkeypatch, ag, watch, read_snapshot)
    assert opened == [100, 201], "after the failed read, a snapshot: not the old watch's revision"
    assert len(reads) == 2


def test_a_store_that_went_back_in_time_is_read_whole(monkeypatch):
    """etcd restored from a backup: its revision is below the one the watch would resume at
    (and its cluster id new). etcd would take the future start revision silently and send
    nothing until it got there; the watcher reads a snapshot instead, marked history_reset
    (before: it resumed, and the view stayed the old history's)."""
    ag = agent()
    heads = iter([(150, "c1"), (40, "c2"), (96, "c2")])    # fine; restored; fine again
    opened, reads = [], []
    kv = SimpleNamespace(open_channels=lambda: None, cluster_id="c1")

    def range_exact(k):
        head, kv.cluster_id = next(heads)
        return head, []

    def watch(rev):
        opened.append(rev)
        if len(opened) == 3:
            ag.stopping.set()
        return Watch(rev)
    kv.range_exact = range_exact
    ag.reg = SimpleNamespace(kv=kv, watch=watch)
    monkeypatch.setattr(sync, "early_snapshot", lambda ag: None)
    monkeypatch.setattr(sync, "start_point", lambda ag, early: 100)
    monkeypatch.setattr(sync, "read_snapshot", lambda ag: reads.append(1) or SimpleNamespace(rev=45))
    monkeypatch.setattr(Backoff, "wait", lambda self, stopping: None)
    watcher.run(ag)
    assert opened == [100, 46, 96] and len(reads) == 1, "after the restore: a snapshot, not a resume at 150"
    assert ag.history_reset and ag.q.get_nowait()[1].rev == 45


def test_reconnects_count_connections_made_again_not_tries(monkeypatch):
    """dataplane_registry_reconnects_total ("connections re-established") went up at every failed
    try: ~25 a minute through an outage while nothing reconnected."""
    ag = agent()
    opened = []

    def watch(rev):
        opened.append(rev)
        if len(opened) < 6:
            raise Unavailable("etcd: connection refused")     # five failed tries: one outage
        if len(opened) == 7:
            ag.stopping.set()
        return Watch(rev, on_end=lambda: (_ for _ in ()).throw(Unavailable("member gone")))
    ag.reg = SimpleNamespace(kv=SimpleNamespace(open_channels=lambda: None, range_exact=lambda k: (500, [])),
                             watch=watch)
    monkeypatch.setattr(sync, "early_snapshot", lambda ag: None)
    monkeypatch.setattr(sync, "start_point", lambda ag, early: 100)
    monkeypatch.setattr(Backoff, "wait", lambda self, stopping: None)
    watcher.run(ag)
    assert ag.counters["reconnects"] == 2, "once after the outage (five tries), once after the watch broke again"


def test_a_starts_first_snapshot_is_no_resync(monkeypatch):
    """dataplane_registry_resyncs_total ("taken after a broken watch") was 1 after every cold start."""
    from dataplane.registry import Snapshot
    from dataplane.agent.view import RegistryView
    monkeypatch.setattr(sync, "finish", lambda ag, rev, warm: None)
    ag = SimpleNamespace(lock=threading.RLock(), view=RegistryView(), history_reset=False, view_cluster=None,
                         reg=SimpleNamespace(kv=SimpleNamespace()), _cache_rev=0, _cache_gen=0,
                         synced=threading.Event(), node=SimpleNamespace(name="t"),
                         counters={"resyncs": 0, "bad_records": 0}, _sync_at=None, bad=[], _routed=set())
    sync.apply_snapshot(ag, Snapshot(rev=40))
    assert ag.counters["resyncs"] == 0
    ag.synced.set()
    sync.apply_snapshot(ag, Snapshot(rev=60))
    assert ag.counters["resyncs"] == 1


def test_a_snapshot_without_this_hosts_record_has_it_written_again(monkeypatch):
    """A snapshot read after this host registered (a resync after a restore, or a delete the
    watch missed) that lacks its record: the lease keeper writes it again (its keepalives alone
    never would). Not for a snapshot read before the registration (early_snapshot), which
    cannot have it, nor while not registered (the keeper is at it)."""
    from dataplane.registry import Host, Snapshot
    from dataplane.agent.view import RegistryView
    monkeypatch.setattr(sync, "finish", lambda ag, rev, warm: None)

    def asked(snap, registered=True, registered_rev=30):
        ag = SimpleNamespace(lock=threading.RLock(), view=RegistryView(), history_reset=False, view_cluster=None,
                             reg=SimpleNamespace(kv=SimpleNamespace()), _cache_rev=0, _cache_gen=0,
                             synced=threading.Event(), node=SimpleNamespace(name="t"), me="h1",
                             registered=threading.Event(), registered_rev=registered_rev,
                             leases=SimpleNamespace(reregister=threading.Event()),
                             counters={"resyncs": 0, "bad_records": 0}, _sync_at=None, bad=[], _routed=set())
        if registered:
            ag.registered.set()
        sync.apply_snapshot(ag, snap)
        return ag.leases.reregister.is_set()
    mine = {"h1": Host.make("h1", "198.18.0.1")}
    assert asked(Snapshot(rev=40)), "its record gone from a store read after it registered"
    assert not asked(Snapshot(rev=40, hosts=mine))
    assert not asked(Snapshot(rev=20)), "read before it registered"
    assert not asked(Snapshot(rev=40), registered=False)


def test_a_resync_asked_for_while_a_watch_opens_is_made(monkeypatch):
    """The main loop's resync (a batch that failed part-way) sets want_snapshot and closes the
    watch; asked while the watcher was opening one, there was none to close, and the new watch
    ran on: the rest of the failed batch stayed unapplied until it broke (a review found it)."""
    opened, reads, ran_on = [], [], []
    ag = agent()

    class Running:                          # a live watch: events until closed
        def __init__(self, rev):
            self.rev, self.closed = rev, threading.Event()

        def __iter__(self):
            if not self.closed.wait(1.0):
                ran_on.append(self.rev)
                ag.stopping.set()
            return iter(())

        def resume_rev(self):
            return self.rev

        def close(self):
            self.closed.set()

    def watch(rev):
        opened.append(rev)
        if len(opened) == 1:
            ag.want_snapshot.set()         # asked while this one opened (ag._watch still None)
            return Running(rev)
        ag.stopping.set()
        return Watch(rev)

    def read_snapshot(_ag):
        reads.append(1)
        return SimpleNamespace(rev=300)
    run_scripted(monkeypatch, ag, watch, read_snapshot)
    assert not ran_on, "the watch opened meanwhile ran on"
    assert opened == [100, 301] and len(reads) == 1, "the resync read a snapshot and watched from it"
