"""The agent's watcher thread: snapshot, then watch from the snapshot's revision,
forever. A watch that ends (member dead, stuck or cut off: the client notices
within its deadline) is resumed from the last revision it delivered on the next
member, with no snapshot; only a compaction (history gone), an error, the
main loop asking (Agent.resync: a defect of ours may have left the view wrong)
or a store that went back in time (went_back: restored from a backup) forces
one. Retries back off with full jitter: hundreds of hosts must not reconnect
in step."""

from __future__ import annotations

import logging

from dataplane.agent import sync
from dataplane.registry import Compacted, Unavailable
from dataplane.registry.backoff import Backoff
from dataplane.registry.store import key

log = logging.getLogger("dataplane.agent")


def run(ag) -> None:
    early = sync.early_snapshot(ag)        # a cold start reads while the host registers
    ag.reg.kv.open_channels()              # our writes go over gRPC once connected (kv_etcd.commit)
    while not ag.registered.is_set() and not ag.stopping.is_set():
        ag.registered.wait(0.02)
    backoff, resume = Backoff(), sync.start_point(ag, early)
    lost = False                           # the watch broke: its next opening is a reconnect
    while not ag.stopping.is_set():
        try:
            # Never resume from an older watch than this turn's: a snapshot read that fails must
            # leave resume None (read again next turn), not fall back to the last watch's revision.
            ag._watch = None
            if ag.want_snapshot.is_set() or (resume is not None and went_back(ag, resume)):
                resume = None
            if resume is None:
                ag.want_snapshot.clear()
                snap = sync.read_snapshot(ag)
                ag.q.put(("snapshot", snap))
                resume = snap.rev + 1
            ag._watch = ag._last_watch = ag.reg.watch(resume)
            if ag.want_snapshot.is_set():  # a resync asked for while it opened: disconnected() found
                ag._watch.close()          # no watch to close, and this one ran on (a review found it)
                continue
            ag.view_cluster = getattr(ag.reg.kv, "cluster_id", None)
            ag.connected.set()
            if lost:                       # (counted on each failed try, an outage climbed ~25 a minute)
                ag.counters["reconnects"] += 1
                lost = False
            backoff.reset()
            for batch in ag._watch:
                ag.q.put(("events", batch))
            resume = ag._watch.resume_rev()        # closed by Agent.disconnected()
        except Compacted as e:
            log.warning("watch history compacted (%s); resyncing", e)
            resume = None
        except Unavailable as e:
            if ag.connected.is_set():
                log.warning("watch ended (%s); resuming", e)
            resume = ag._watch.resume_rev() if ag._watch else resume
            lost = True
        except Exception as e:  # never let the watcher die; start over from a snapshot
            log.error("watch failed: %s: %s", type(e).__name__, e)
            resume = None
        ag.connected.clear()
        backoff.wait(ag.stopping)


def went_back(ag, resume: int) -> bool:
    """Before a watch resumes at `resume`: has the store gone back in time (restored from a
    backup: its revision below what the view has seen) or become another cluster? etcd takes a
    start revision from the future without a word and sends nothing until it gets there, so
    the view would stay as it was, wrong, and be written to disk as the new store's. Then
    the view is read whole again (history_reset: the agent's own writes held ahead of the
    watch, of the old history, go). The read is linearizable: never behind a revision seen."""
    head, _ = ag.reg.kv.range_exact(key("hosts", ag.me))
    cluster = getattr(ag.reg.kv, "cluster_id", None)
    seen = ag.view_cluster
    if head >= resume - 1 and (seen is None or cluster == seen):
        return False
    log.warning("the registry went back from revision %d to %d%s (restored from a backup?): reading it whole",
                resume - 1, head, f", cluster {seen} is now {cluster}" if seen and cluster != seen else "")
    ag.history_reset = True
    return True
