"""The agent's own figures for /metrics (metrics.py serves them): registry state, the
view, the lease, its counters and the punts it handled. Every count `agent status`
gives is here too (tests/integration/test_metrics.py holds the two to the same values).

The figures that need the agent's lock are copied under it, but a scrape never waits
long for it: a turn of the main loop holds it (whole-VNI convergence, the loop's own
registry calls during an outage), and a
scrape that outlasts Prometheus's timeout reads as a dead agent just when it matters.
After a second the last copy is served and dataplane_scrape_success{source="agent"}
(metrics.py) says 0."""

from __future__ import annotations

import logging
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dataplane.core.errors import DataplaneError
from dataplane.core.version import VERSION
from dataplane.node import networks

log = logging.getLogger("dataplane.agent")
LOCK_WAIT_S = 1.0

COUNTERS = {   # agent.counters key -> (metric, help)
    "events": ("registry_events", "Registry watch events applied"),
    "resyncs": ("registry_resyncs", "Full registry snapshots taken after a broken watch"),
    "bad_records": ("registry_bad_records", "Registry records skipped as malformed"),
    "errors": ("reconcile_errors", "Errors in the agent's main loop, each logged: applying registry changes "
                                   "to the maps, punts, housekeeping"),
    "registry_errors": ("registry_errors", "Registry requests of the agent's own that failed, each logged and "
                                           "tried again: registering and keeping its lease, reading the claims"),
    "aged": ("fdb_aged", "Learned FDB entries aged out"),
    "reconnects": ("registry_reconnects", "Registry connections re-established"),
    "repairs": ("repairs", "Leftovers of a crash repaired at start, the node's vxlan device made again "
                           "after something undid it, and gateways' iptables rules put back after a flush"),
    "vanished": ("endpoints_vanished", "Endpoints removed because their interface disappeared"),
}
# Punts the agent took from the ring end in exactly one of these (they sum to the received ones,
# but for those still queued).
PUNT_OUTCOMES = ("resolved", "local", "unresolved", "stale", "rate_limited", "lookup_limited")
PUNT_OTHER = {   # punts counts key -> (metric, help): parts of an outcome, or sends
    "received": ("agent_punts_received", "Punted misses the agent took from the ring"),
    "looked_up": ("agent_punts_looked_up", "Resolved punts the registry answered (the agent's view had not "
                                           "caught up)"),
    "repaired": ("agent_punts_repaired", "Resolved punts whose remote map entry had gone and was written again"),
    "flooded": ("agent_punt_flood_copies", "Copies of unresolved punts the agent sent to the flood list"),
    "flood_limited": ("agent_punts_flood_limited", "Unresolved punts dropped: over the flood copies' budget"),
    "send_errors": ("agent_punt_send_errors", "Sends of punted frames toward a VTEP that failed"),
}


class AgentFigures:
    def __init__(self, agent):
        self.ag = agent
        self._last: dict = {}
        self.fresh = False         # the last collect() read the figures under the lock
        self._said_busy = -60.0    # when a busy lock was last logged (once a minute at most)

    def _copy(self) -> tuple[dict, bool]:
        """What needs the lock, as one consistent copy; (copy, fresh)."""
        ag = self.ag
        if not ag.lock.acquire(timeout=LOCK_WAIT_S):
            now = time.monotonic()
            if now - self._said_busy >= 60:
                self._said_busy = now
                log.warning("metrics: the agent's lock was held over %.0f s (a long turn of the main loop): "
                            "serving the last scrape's figures", LOCK_WAIT_S)
            return self._last, False
        try:
            self._last = {
                "installed": ag.remote.counts() if ag.remote else {}, "counters": dict(ag.counters),
                "punts": dict(ag.punts.counts), "vni_errors": len(ag.vni_errors), "conflicts": len(ag.conflicts),
                "rev": ag.view.rev, "claims_pending": int(bool(ag.view.claims_pending)),
                "view": {"networks": len(ag.view.networks), "hosts": len(ag.view.hosts),
                         "endpoints": len(ag.view.endpoints)},
                "skipped": len(ag.skipped)}
        finally:
            ag.lock.release()
        return self._last, True

    def collect(self):
        ag = self.ag
        c, self.fresh = self._copy()
        yield _gauge("dataplane_build_info", "The agent's version (always 1)", 1, labels={"version": VERSION})
        yield _gauge("dataplane_registry_connected", "1 while the registry connection (watch) is live",
                     ag.connected.is_set())
        yield _gauge("dataplane_agent_synced", "1 once the agent has applied a full registry snapshot",
                     ag.synced.is_set())
        yield _gauge("dataplane_registry_lease_live", "1 while the host's registration is kept alive (its lease "
                     "renewed); 0: other hosts will drop this host's entries when it lapses", ag.leases.live)
        yield _gauge("dataplane_registry_lease_ttl_seconds", "The host registration's lease TTL", ag.ttl)
        yield _gauge("dataplane_registry_watch_lag_seconds", "Seconds since the registry was last heard on a "
                     "watch, live or broken (absent: none was ever opened)", ag.silence_s())
        yield _gauge("dataplane_agent_operations_in_flight", "Endpoint operations under way (add, rm, move, a "
                     "runtime's attach or detach): one stuck shows here for as long", len(ag.busy))
        yield _gauge("dataplane_agent_warm_start", "1: the last sync started from the view on disk, not a full read",
                     ag.warm_start)
        for name, text, s in (("last_sync", "How long the last full sync into the maps took", ag.last_sync_s),
                              ("last_snapshot_read", "How long the last full registry read took",
                               ag.last_snapshot_s),
                              ("last_claims_read", "How long the last read of the IPAM claims took",
                               ag.last_claims_s)):
            yield _gauge(f"dataplane_agent_{name}_seconds", text, s)
        if not c:
            return
        yield _gauge("dataplane_registry_revision", "Registry revision the agent's view is at", c["rev"])
        yield _gauge("dataplane_registry_claims_pending", "1 while the view lacks the IPAM claims (read after a "
                     "cold start's sync)", c["claims_pending"])
        g = GaugeMetricFamily("dataplane_registry_view_objects", "Records in the agent's view of the registry",
                              labels=["kind"])
        for kind, n in c["view"].items():
            g.add_metric([kind], n)
        yield g
        yield _gauge("dataplane_vnis_failing", "VNIs served only in part (agent status vni_errors)", c["vni_errors"])
        yield _gauge("dataplane_endpoint_conflicts", "Local runtime endpoints another writer moved or deleted",
                     c["conflicts"])
        yield _gauge("dataplane_registry_skipped_endpoints", "Registry endpoints the agent refused to install "
                     "(agent status skipped_endpoints says why)", c["skipped"])
        g = GaugeMetricFamily("dataplane_remote_entries", "Remote entries installed from the registry",
                              labels=["kind"])
        for kind in ("fdb", "neigh"):
            g.add_metric([kind], c["installed"].get(kind, 0))
        yield g
        yield _counter("dataplane_remote_map_full", "Batches of remote entries a full map refused in part (the "
                       "VNI is retried whole; agent status map_error says which map)",
                       c["installed"].get("map_full", 0))
        for key, (name, text) in COUNTERS.items():
            yield _counter(f"dataplane_{name}", text, c["counters"].get(key, 0))
        yield from self._transport()
        p = CounterMetricFamily("dataplane_agent_punts", "Punted misses the agent handled, by how each ended "
                                "(the outcomes partition the received ones)", labels=["outcome"])
        for outcome in PUNT_OUTCOMES:
            p.add_metric([outcome], c["punts"].get(outcome, 0))
        yield p
        for key, (name, text) in PUNT_OTHER.items():
            yield _counter(f"dataplane_{name}", text, c["punts"].get(key, 0))
        yield from self._over_limit()

    def _transport(self):
        transport = self.ag.reg.kv.transport_counts()
        for name, text in (("grpc_commits", "Registry transactions committed over etcd's gRPC API "
                                            "(the rest went through its JSON gateway)"),
                           ("grpc_read_fallbacks", "Bulk registry reads gRPC could not do, done through etcd's "
                                                   "JSON gateway"),
                           ("grpc_watches", "Registry watches opened over etcd's gRPC API (the rest through "
                                            "its JSON gateway)")):
            yield _counter(f"dataplane_registry_{name}", text, transport.get(name, 0))

    def _over_limit(self):
        try:
            n = len(networks.over_limit(self.ag.node.require_up()))
        except DataplaneError as e:
            log.warning("metrics: reading the node's state failed: %s", e)
            return
        yield _gauge("dataplane_flood_over_limit", "Broadcast limits exceeded, one per VNI and limit (VTEPs, "
                     "local endpoints, a CPU's backlog: agent status over_limit lists them)", n)


def _gauge(name: str, text: str, value, labels: dict | None = None):
    g = GaugeMetricFamily(name, text, labels=list(labels or ()))
    if value is not None:
        g.add_metric(list((labels or {}).values()), float(value))
    return g


def _counter(name: str, text: str, value):
    c = CounterMetricFamily(name, text)
    c.add_metric([], value)
    return c
