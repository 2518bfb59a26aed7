"""Becoming synced: a full snapshot from the registry, or a warm start from
the view on disk (cache.py) that the watch brings up to the revision of this
agent's own registration. Either way it ends in finish(): adopt the node's
endpoints (first time), settle moves, reconcile every VNI, tell systemd.
Also the view's periodic write to disk."""

from __future__ import annotations

import logging
import os
import threading
import time

from dataplane.agent import cache, converge, local, pauses, sdnotify
from dataplane.registry import Snapshot
from dataplane.registry.backoff import Backoff

CACHE_EVERY_S = 60.0      # the registry view is written to disk at most this often, and at stop
log = logging.getLogger("dataplane.agent")


def _note_bad(ag, snap: Snapshot) -> None:
    for bad in snap.bad:
        log.warning("skipped bad record %s", bad)
        ag.bad.append(bad)
    ag.counters["bad_records"] += len(snap.bad)


def _load_view(ag, snap: Snapshot) -> None:
    _note_bad(ag, snap)
    ag.view.load(snap)
    ag._routed.clear()


def apply_snapshot(ag, snap: Snapshot) -> None:
    """A full snapshot: the view is whole at its revision. After the store went back in time
    (watcher.went_back) the agent's own writes held ahead of the watch belong to the old
    history, and so does the view on disk: both go."""
    with ag.lock:
        cluster = getattr(ag.reg.kv, "cluster_id", None)
        # A linearizable read is never behind a revision seen: a lower one is a store gone back,
        # however the snapshot came to be read (went_back, a resync asked for, a failed read).
        if ag.history_reset or snap.rev < ag.view.rev or (ag.view_cluster and cluster and cluster != ag.view_cluster):
            ag.history_reset = False
            ag.view.ahead.clear()
            ag._cache_rev = 0
            ag._cache_gen += 1             # a write already under way is of the old history: dropped
            cache.discard(ag.node.name)
        _load_view(ag, snap)
        # Our record gone from a store read after we registered (a restore, a delete the watch
        # missed): written again, as local.hosts_gone has it for the watch's events.
        leases = getattr(ag, "leases", None)
        if leases and ag.registered.is_set() and snap.rev >= (getattr(ag, "registered_rev", None) or 0) \
                and ag.me not in snap.hosts:
            leases.reregister.set()
        if ag.synced.is_set():             # a start's first read is no resync (every cold start counted 1)
            ag.counters["resyncs"] += 1
        ag._sync_at = None
        finish(ag, snap.rev, warm=False)


def read_snapshot(ag, claims: bool = True) -> Snapshot:
    """The whole registry (claims=False: without the IPAM claims), with collection
    held off until its sync (finish) or a failed read."""
    t0 = time.monotonic()
    pauses.hold()
    try:
        snap = ag.reg.snapshot(claims=claims)
    except BaseException:
        pauses.release()
        raise
    ag.last_snapshot_s = time.monotonic() - t0
    return snap


def early_snapshot(ag) -> Snapshot | None:
    """A first start (no view on disk to start warm from) reads the registry
    while the lease keeper registers the host: the read no longer waits on
    the registration's round trips. Once the host is registered it is loaded
    as the view on disk is (load_cached): nothing is adopted or reconciled
    before the watch has brought it to the registration's revision. None:
    there is a view on disk, or the read failed (the watcher reads again
    once registered). From etcd the IPAM claims are left out: two of every
    three keys (at 100,000 endpoints two thirds of etcd's CPU for the read and a
    third of ours); the records alone say what a registry kept by its own
    transactions holds, and the claims, read once synced (read_claims), settle
    the rest. SQLite reads everything in one range anyway: all of it at once."""
    if os.path.exists(cache.path(ag.node.name)):
        return None
    try:
        return read_snapshot(ag, claims=not ag.reg.kv.ranges_apart)
    except Exception as e:  # noqa: BLE001 - the read after registering says why, if it fails again
        log.debug("early registry read failed: %s: %s", type(e).__name__, e)
        return None


def start_point(ag, early: Snapshot | None) -> int | None:
    """The watcher, once registered: the revision to watch from. A cold start's
    early read is older than our registration: queued to be loaded as the view
    on disk is, synced once the watch has brought it to the registration's
    revision (adopting needs the name ours, now). Else the view on disk
    (cached_start). None: take a snapshot (or the agent is stopping)."""
    if ag.stopping.is_set():
        if early is not None:
            pauses.release()
        return None
    if early is not None:
        ag.q.put(("early", early))
        return early.rev + 1
    return cached_start(ag)


def cached_start(ag) -> int | None:
    """The watcher, once registered: queue the view on disk if it may be used
    (cache.load), and return the revision to watch from; None: take a snapshot."""
    pauses.hold()                       # until the sync (finish)
    snap = cache.load(ag.node.name, getattr(ag.reg.kv, "cluster_id", None), ag.registered_rev)
    if snap is None:
        pauses.release()
        return None
    ag.q.put(("cached", snap))
    return snap.rev + 1


def load_cached(ag, snap: Snapshot, warm: bool = True) -> None:
    """A view older than our registration (warm: the one on disk; else a cold
    start's early read): as it was at snap.rev, brought up to date by the watch;
    the maps are left as they are until it reaches our registration."""
    with ag.lock:
        _load_view(ag, snap)
        ag._sync_at, ag._sync_warm = ag.registered_rev, warm
    log.info("registry view %s at revision %d (%d endpoints); catching up to %d",
             "read from disk" if warm else "read while registering", snap.rev, len(snap.endpoints), ag._sync_at)
    if snap.rev >= ag._sync_at:         # read after all (the registration was quicker): whole already
        ag._sync_at = None
        finish(ag, snap.rev, warm=warm)


def finish(ag, rev: int, warm: bool) -> None:
    """The view is whole at rev: adopt (the first time), settle moves, reconcile every VNI; synced."""
    t0 = time.monotonic()
    first = not ag.synced.is_set()
    with ag.lock:
        if first:
            local.adopt(ag)
        local.settle_moves(ag)
        ag.orphan_scan_all = True       # the view is new: every record of ours is looked at
        converge.whole(ag)
    pauses.settle()
    ag.last_sync_s = time.monotonic() - t0
    ag.warm_start = warm
    if first and ag.view.claims_pending:    # a cold start's view (early_snapshot): claims next
        threading.Thread(target=read_claims, args=(ag,), name="claims", daemon=True).start()
    ag.synced.set()
    if first:       # systemd: up only now, and the API says synced by the time it hears it
        sdnotify.notify(f"READY=1\nSTATUS=synced revision {rev}")
    log.info("synced revision %d%s: %d networks, %d hosts, %d endpoints in %.0f ms (%.2f s after start)", rev,
             " (warm: the view on disk and the watch)" if warm else "", len(ag.view.networks),
             len(ag.view.hosts), len(ag.view.endpoints), ag.last_sync_s * 1000, time.monotonic() - ag.started)


def read_claims(ag) -> None:
    """The IPAM claims for a view loaded without them: read (again, backing off,
    until the agent stops) and queued for the main loop (load_claims)."""
    backoff = Backoff()
    while not ag.stopping.is_set():
        try:
            t0 = time.monotonic()
            claims = ag.reg.claims()
            ag.last_claims_s = time.monotonic() - t0
            ag.q.put(("claims", claims))
            return
        except Exception as e:  # noqa: BLE001 - whatever it was, the view needs them: try again
            ag.counters["registry_errors"] += 1      # claims_pending in status says what is still missing
            log.warning("reading the IPAM claims failed (%s: %s); trying again", type(e).__name__, e)
        backoff.wait(ag.stopping)


def load_claims(ag, claims: Snapshot) -> None:
    """The claims read: into the view, then every VNI reconciled again (what the
    records alone could not settle: a MAC or address two records claim, a record
    its claims do not name)."""
    t0 = time.monotonic()
    with ag.lock:
        if not ag.view.claims_pending:      # a snapshot with claims came first
            return
        _note_bad(ag, claims)
        ag.view.load_claims(claims)
        converge.whole(ag)
    log.info("IPAM claims read at revision %d (%d MACs, %d addresses) in %.0f ms; reconciled in %.0f ms",
             claims.rev, len(claims.macs), len(claims.ipam), ag.last_claims_s * 1000, (time.monotonic() - t0) * 1000)


def write_cache(ag, now: bool = False) -> None:
    """Write the view to disk if it changed since: by a forked child (cache.fork_save), or
    (now: at stop) in this thread from a copy taken under the lock. Only a synced view of
    an etcd registry is written."""
    ag._cache_due = time.monotonic() + CACHE_EVERY_S
    writing = ag._cache_writer
    if writing is not None and writing.is_alive():
        if not now:
            return                          # the last one's child is still at it
        writing.join(cache.WRITE_TIMEOUT_S + 5)   # the last word at stop is this one's (the waiter
        # takes the agent's lock: never called holding it)
    cluster = getattr(ag.reg.kv, "cluster_id", None)
    if cluster is None or not ag.synced.is_set() or ag.view.rev == ag._cache_rev or ag.view.claims_pending:
        return
    try:
        with ag.lock:
            rev, gen, bad = ag.view.rev, ag._cache_gen, list(ag.bad)
            if now:
                view = cache.copy(ag.view)
            else:                           # made and written by a child: the main loop goes on
                child = cache.fork_save(ag.node.name, ag.view, cluster, bad)
        if now:
            cache.save(ag.node.name, cache.dump(view, cluster, bad))
    except OSError as e:
        log.warning("could not write the registry view to disk: %s", e)
        return
    if now:
        _cache_written(ag, rev, gen)
    else:
        ag._cache_writer = threading.Thread(target=_cache_written, args=(ag, rev, gen, child), name="cache", daemon=True)
        ag._cache_writer.start()


def _cache_written(ag, rev: int, gen: int, child: tuple[int, int] | None = None) -> None:
    """The view at rev is on disk (once child, if any, is done): unless the history was reset
    since (gen), when what was written is of the old one and goes."""
    try:
        if child is not None:
            cache.wait_saved(ag.node.name, *child)
    except OSError as e:
        log.warning("could not write the registry view to disk: %s", e)
        return
    with ag.lock:
        if gen != ag._cache_gen:
            cache.discard(ag.node.name)
            return
        ag._cache_rev = rev
