"""The per-host agent: keeps one node's maps equal to the registry.

Threads: the watcher (snapshot, then watch from the snapshot's revision;
on any break it starts over with a fresh snapshot), the lease keeper (host
liveness), the punt reader (misses from the fast path, see punts.py), the
API server, and the main loop, which alone applies changes: it keeps the
registry view (view.py) current, asks reconcile.py what the maps should
hold for every VNI a change touched, and applies that (apply.py). The
programs and pinned maps are the node's; the agent can stop and start at
any time while they keep forwarding.
"""

from __future__ import annotations

import logging
import queue
from collections import deque
import threading
import time

from dataplane.agent import (client, converge, deferred, housekeeping, inflight, lease, local, metrics_http, ops,
                             pauses, process, punts, restarts, sdnotify, server, slowpath, sync, watcher)
from dataplane.agent.runtime_ops import RuntimeOps
from dataplane.agent.view import RegistryView
from dataplane.core import abi, model, state
from dataplane.core.errors import Conflict, DataplaneError, NotFound
from dataplane.kernel import netlink
from dataplane.node import Node, vtep
from dataplane.node.sweep import is_repair, sweep
from dataplane.node.fdb import RemoteTable, local_neigh_keys
from dataplane.registry import Host, open_registry
from dataplane.registry.records import key

LEASE_TTL_DEFAULT = 10
# A watch silent this long is taken for dead (at most; the lease TTL if shorter). It was the TTL
# alone: with --lease-ttl 300 a watch on a member that lost power (no reset sent) went unnoticed
# for minutes while the other members kept our lease alive and served everyone else.
WATCH_DEADLINE_MAX_S = 15.0
RESYNC_EVERY_S = 60       # Agent.resync at most this often
SLOW_TURN_S = 0.1         # a main-loop turn longer than this is logged (it holds up registry events)
ENDPOINTS = key("endpoints", "")    # an endpoint event meets the hosts that left before it handled
SWEEP_JOIN_S = 15.0       # at stop, housekeeping's sweep is given this long to finish the endpoint it is on
BEAT_S = abi.load().constants["DP_AGENT_BEAT_MS"] / 1000      # dp_agent heartbeat (bpf/dp_abi.h)
LEASE_NS = abi.load().constants["DP_AGENT_LEASE_MS"] * 1_000_000
log = logging.getLogger("dataplane.agent")


class Agent:
    def __init__(self, node: Node, registry_url: str, host_name: str, lease_ttl: int = LEASE_TTL_DEFAULT):
        self.node = node
        self.url = registry_url
        self.me = model.parse_name(host_name, "host name")
        self.ttl = model.parse_lease_ttl(lease_ttl)
        self.reg = open_registry(registry_url, watch_deadline_s=min(WATCH_DEADLINE_MAX_S, max(3.0, float(self.ttl))))
        self.lock = threading.RLock()
        self.q: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.leaving = False
        self.connected = threading.Event()
        self.want_snapshot = threading.Event()  # watcher.py: the next watch starts from a snapshot
        self._resynced, self.resync_owed = -RESYNC_EVERY_S, False   # owed: asked for too soon, done when due
        self.synced = threading.Event()
        self.registered = threading.Event()    # our host record is ours: only then adopt and sync
        self.registered_rev = 0                # the revision of that record's put (lease.py)
        self._sync_at: int | None = None       # a view older than our registration: synced once it reaches this
        self._sync_warm = False                # ... and that view was the one on disk (cache.py)
        self._cache_rev, self._cache_due = 0, time.monotonic() + sync.CACHE_EVERY_S
        self._cache_writer: threading.Thread | None = None     # waits for the view-writing child
        self.sweeper: threading.Thread | None = None           # housekeeping's orphans and moves
        self.fatal: DataplaneError | None = None   # why the agent stopped for good: run() raises it
        self._watch = None
        self._last_watch = None                # the last watch opened, kept while the next is sought
        self.view_cluster = None               # the etcd cluster id the view was last verified against
        self.history_reset = False             # the store went back in time: the next snapshot starts over
        self._cache_gen = 0                    # bumped by such a reset: a view-on-disk write of before is dropped
        self._held = None                      # a message _next_message took early
        self.view = RegistryView()
        self.orphan_suspects, self.orphan_had = set(), set()   # local.drop_orphans; the node's endpoints then
        self.moving: set[str] = set()          # endpoints an `endpoint move` to this host is bringing here now
        inflight.attach(self)                  # busy, busy_changed, oplock: API operations under way
        self.orphan_scan_all = True
        self.skipped: dict[str, str] = {}      # endpoint id -> why reconcile refused it
        self.conflicts: dict[str, str] = {}    # a local runtime's endpoint another writer moved or deleted
        self.bad: deque[str] = deque(maxlen=50)   # the last records skipped as malformed: "key: why"
        self.vni_errors: dict[int, str] = {}   # VNIs served only in part, and why
        self.retries: dict[int, tuple] = {}    # such a VNI -> (backoff s, next attempt): converge.retry
        self._routed: dict[str, bool] = {}     # VTEP -> reached through the uplink
        self.counters = {"events": 0, "resyncs": 0, "bad_records": 0, "aged": 0, "errors": 0, "repairs": 0,
                         "reconnects": 0, "vanished": 0, "registry_errors": 0}
        self.punts = punts.PuntHandler(self)
        self.leases = lease.LeaseKeeper(self)
        self.last_sync_s = self.last_snapshot_s = self.last_claims_s = 0.0
        self.started = time.monotonic()
        self.warm_start = False                # synced from the cached view (cache.py), not a full read
        self.remote: RemoteTable | None = None
        self.maps = None

    # --- lifecycle -------------------------------------------------------------

    def run(self) -> None:
        st = self.node.state()
        if not st:
            raise NotFound(f"node {self.node.name} is not up: run `dataplane up` first")
        self._lock = state.hold(self.node.name, "agent.lock")      # one agent per node
        if self._lock is None:
            pid = process.running_pid(self.node.name)
            raise Conflict(f"another agent (pid {pid or '?'}) serves node {self.node.name}: stop it first "
                           "(`systemctl stop dataplane`, or `dataplane down`)")
        self.leases.start()                # the agent file names us from here on: `down` sees who serves the node
        if restarts.pause_holding(self):
            return                         # stopped while it waited (restarts.py)
        self.started = time.monotonic()
        self.vtep = Host.make(self.me, st.config.local_ip, st.config.port)
        pauses.watch()
        for line in sweep(self.node):      # what a crash (of us, or of a command) left behind
            log.warning("repaired: %s", line) if is_repair(line) else log.info("%s", line)
            self.counters["repairs"] += is_repair(line)
        st = self.node.require_up()
        # Registering and reading the registry wait on the network: under way while the maps are read back.
        threading.Thread(target=self.leases.run, name="lease", daemon=True).start()
        threading.Thread(target=watcher.run, args=(self,), name="watch", daemon=True).start()
        threading.Thread(target=netlink.preload, name="preload", daemon=True).start()   # while the read waits
        try:
            self.maps = self.node.maps()
            self.remote = RemoteTable(self.maps, local_neigh_keys(st))
            self.sender = slowpath.Sender(self.maps, st.config)
            self.punt_reader = slowpath.PuntReader(self.maps.pin_dir)
            self.server = server.Server(client.socket_path(self.node.name),
                                        {**ops.Ops(self).handlers(), **RuntimeOps(self).handlers()})
            self.server.start()
            self.metrics = metrics_http.serve(self, st.config.metrics_address, st.config.metrics_web_config)
        except BaseException:
            self.stopping.set()            # the lease keeper and the watcher end with us
            raise
        threading.Thread(target=self._read_punts, name="punts", daemon=True).start()
        log.info("host %s VTEP %s registry %s lease ttl %ss", self.me, self.vtep.vtep, self.url, self.ttl)
        try:
            self._main_loop()
        finally:
            self.stopping.set()
            for t in (self.sweeper, self.writer):   # they stop between endpoints: none left half done
                if t is not None:
                    t.join(SWEEP_JOIN_S)
            if not self.leaving:
                sync.write_cache(self, now=True)
            try:
                vtep.set_punt_until(self.maps, 0)   # nobody drains the ring now: flood misses again
            except DataplaneError as e:
                log.error("could not stop punting: %s", e)
            if self._watch:
                self._watch.close()
            self.server.stop()
            if self.metrics:
                self.metrics.stop()
            if self.leaving:
                local.leave(self)
            self.punt_reader.close()
            self.sender.close()
            self.maps.close()
            self.reg.close()
            log.info("stopped%s", " (left the registry)" if self.leaving else "")
        if self.fatal:
            raise self.fatal

    def fail(self, why: DataplaneError) -> None:
        """Stop for good: run() raises why once everything is closed (its exit code: a refusal
        by the registry is 5, as the CLI's own; it was always 4)."""
        log.error("%s", why)
        self.fatal = why
        self.stop()

    def stop(self, leave: bool = False) -> None:
        sdnotify.notify("STOPPING=1")
        self.leaving = self.leaving or leave
        self.stopping.set()
        self.q.put(("stop", None))

    def resync(self) -> None:
        """Read the whole registry again: a defect of ours may have left the view wrong. At most
        once a RESYNC_EVERY_S: a fault every snapshot meets must not turn into a stream of reads.
        One asked for sooner is owed, and made by the main loop when due: it was dropped, and
        the events a failed batch left unapplied stayed unapplied until some later resync."""
        if time.monotonic() - self._resynced < RESYNC_EVERY_S:
            if not self.resync_owed:
                log.error("resyncing again %d s after the last, not sooner", RESYNC_EVERY_S)
            self.resync_owed = True
            return
        self._resynced, self.resync_owed = time.monotonic(), False
        self.want_snapshot.set()
        self.disconnected()

    def disconnected(self) -> None:
        """The registry is unreachable: end the watch, the watcher resyncs."""
        self.connected.clear()
        if self._watch:
            self._watch.close()

    def watch_lag_s(self) -> float | None:
        """Seconds since the registry was last heard on the watch (None: no live watch)."""
        w = self._watch
        return round(w.lag_s(), 3) if w is not None and self.connected.is_set() else None

    def silence_s(self) -> float | None:
        """Seconds since the registry was last heard on a watch, live or broken (None: none opened)."""
        w = self._last_watch
        return round(w.lag_s(), 3) if w is not None else None

    def watch_member(self) -> str | None:
        """host:port of the etcd member the watch is on (None: SQLite, or no watch)."""
        w = self._watch
        if w is None or not hasattr(w, "member") or not self.connected.is_set():
            return None
        return self.reg.kv.endpoint(w.member)

    def watch_transport(self) -> str | None:
        """How the live watch reaches etcd: "grpc" or "gateway" (None: SQLite, or no watch)."""
        w = self._watch
        return w.transport if w is not None and self.connected.is_set() else None

    def _read_punts(self) -> None:
        while not self.stopping.is_set():
            room = self.punts.room()
            if not room:            # over the intake rate or the backlog full: leave punts in the
                self.stopping.wait(0.01)   # ring, whose filling up makes the fast path flood them
                continue
            try:
                batch = self.punt_reader.read(0.2, min(room, 256))
            except Exception as e:  # never let the reader die
                log.error("reading punts failed: %s: %s", type(e).__name__, e)
                self.stopping.wait(0.5)
                continue
            if batch and self.punts.offer(batch):
                self.q.put(("punts", None))

    # --- main loop -----------------------------------------------------------------

    def _main_loop(self) -> None:
        age_every = max(1.0, min(10.0, self.node.require_up().config.fdb_age_s / 4))
        next_age = time.monotonic() + age_every
        next_beat = None          # no heartbeat before the first sync: misses are flooded until then
        watchdog = sdnotify.Watchdog()
        while not self.stopping.is_set():
            wake = min(next_age, next_beat or next_age)
            kind, data = self._next_message(max(0.01, wake - time.monotonic()))
            t0 = time.monotonic()
            try:
                if kind == "snapshot":
                    self._apply_snapshot(data)
                elif kind in ("cached", "early"):
                    sync.load_cached(self, data, warm=kind == "cached")
                elif kind == "claims":
                    sync.load_claims(self, data)
                elif kind == "punts" and self.punts.run_slice():
                    self.q.put(("punts", None))     # the rest after what came meanwhile
                elif kind == "looked_up":
                    self.punts.looked_up(data)
                elif kind == "events":
                    self._apply_events(data)
                elif kind == "recheck":
                    with self.lock:
                        local.recheck(self, data)
            except DataplaneError as e:
                self.counters["errors"] += 1
                log.error("%s", e)
                if kind == "events":     # the batch's later events were not applied: read it all again
                    self.resync()
            except Exception:  # noqa: BLE001 - a defect of ours: its traceback, then the registry read again
                self.counters["errors"] += 1
                log.exception("handling %s failed; resyncing from a snapshot", kind)
                self.resync()
            now = time.monotonic()
            if next_beat is None and self.synced.is_set():
                next_beat = now                     # synced: misses come to us from now on
            if next_beat is not None:
                watchdog.ping(now)                  # (systemd counts from READY=1, sent at the first sync)
                restarts.note_uptime(self, now)
            if now - t0 > SLOW_TURN_S:
                log.warning("slow turn: %s took %.0f ms", kind, (now - t0) * 1000)
            try:                     # as for a message: an error here is logged, the agent goes on
                if next_beat is not None and now >= next_beat:
                    next_beat = now + BEAT_S
                    vtep.set_punt_until(self.maps, time.monotonic_ns() + LEASE_NS)
                if now >= next_age:
                    next_age = now + age_every
                    housekeeping.tick(self, slow_s=SLOW_TURN_S)
            except DataplaneError as e:
                self.counters["errors"] += 1
                log.error("%s", e)
            try:
                converge.retry(self, slow_s=SLOW_TURN_S)
            except DataplaneError as e:
                self.counters["errors"] += 1
                log.error("%s", e)
            if now >= self._cache_due:
                sync.write_cache(self)
            if self.resync_owed:
                self.resync()
            deferred.start(self)            # registry writes a turn decided under the lock, made without it

    def _next_message(self, timeout: float):
        """The next message in queue order, consecutive event batches merged (one reconcile for all);
        a message that ends a run of batches is held back and comes next, never after a later batch."""
        if self._held is not None:
            msg, self._held = self._held, None
        else:
            try:
                msg = self.q.get(timeout=timeout)
            except queue.Empty:
                return "tick", None
        if msg[0] != "events":
            return msg
        batch = list(msg[1])
        while True:
            try:
                nxt = self.q.get_nowait()
            except queue.Empty:
                break
            if nxt[0] != "events":
                self._held = nxt
                break
            batch += nxt[1]
        return "events", batch

    def _apply_snapshot(self, snap) -> None:
        sync.apply_snapshot(self, snap)

    def _apply_events(self, events) -> None:
        with self.lock:
            mine = dict(self.node.require_up(shared=True).endpoints)   # once a batch; kept true as sandboxes go
            gone: list = []        # hosts that left, handled together before the next endpoint event
            with self.view.deferring_hosts():
                for ev in events:
                    if gone and ev.key.startswith(ENDPOINTS):
                        local.hosts_gone(self, gone, mine)
                        gone = []
                    self.counters["events"] += 1
                    self.view.apply(ev, on_bad=self._bad_record, on_host_gone=gone.append,
                                    on_endpoint=lambda name, rec: local.endpoint_event(self, name, rec, mine))
                if gone:
                    local.hosts_gone(self, gone, mine)
                converge.pending(self)
            if self._sync_at is not None and self.view.rev >= self._sync_at:
                self._sync_at = None           # a view older than our registration has caught up with it
                sync.finish(self, self.view.rev, warm=self._sync_warm)

    def _bad_record(self, k: str, why: str) -> None:
        self.bad.append(f"{k!r}: {why}")
        self.counters["bad_records"] += 1
        log.warning("skipped bad record %s: %s", k, why)

