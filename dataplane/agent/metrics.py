"""The agent's Prometheus endpoint: /metrics and /healthz over HTTP.

The collector reads the pinned maps and the agent's own counters at scrape
time (nothing is copied in the background): per-VNI counters and drops by
reason from dp_stats, occupancy and capacity of every hash map, and the
agent's registry state. process_* (RSS, start time, CPU) come from
prometheus_client's process collector. Names follow Prometheus's
conventions: dataplane_ prefix, counters end in _total, seconds and bytes.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dataplane.core import model
from dataplane.core.errors import DataplaneError, UsageError
from dataplane.node import readout

log = logging.getLogger("dataplane.agent")

# dp_stats field -> (metric, help); each becomes dataplane_<metric>_total{vni}
STATS = {
    "rx_packets": ("rx_packets", "Frames decapsulated and delivered to a sandbox"),
    "rx_bytes": ("rx_bytes", "Inner bytes decapsulated and delivered"),
    "tx_packets": ("tx_packets", "Frames encapsulated toward a VTEP (each flood copy counts)"),
    "tx_bytes": ("tx_bytes", "Inner bytes encapsulated toward VTEPs"),
    "local_packets": ("local_packets", "Frames delivered endpoint to endpoint on this host"),
    "local_bytes": ("local_bytes", "Bytes delivered endpoint to endpoint on this host"),
    "arp_replies": ("arp_replies", "ARP requests answered from the neighbour map"),
    "flooded": ("floods", "Broadcast or unknown frames replicated to the flood list"),
    "punted": ("punts", "Misses handed to the agent"),
    "punt_fallback": ("punt_fallbacks", "Misses flooded because the punt ring was full"),
    "frag_needed": ("frag_needed", "ICMP fragmentation-needed sent back for DF frames over the MTU"),
}
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
    "repairs": ("repairs", "Leftovers of a crash repaired at start"),
    "vanished": ("endpoints_vanished", "Endpoints removed because their interface disappeared"),
}


class Collector:
    def __init__(self, agent):
        self.ag = agent

    def collect(self):
        ag = self.ag
        try:
            rows = readout.stats(ag.node)
        except DataplaneError as e:
            log.warning("metrics: reading counters failed: %s", e)
            rows = []
        for field, (name, text) in STATS.items():
            c = CounterMetricFamily(f"dataplane_{name}", text, labels=["vni"])
            for r in rows:
                c.add_metric([str(r["vni"])], r[field])
            yield c
        drops = CounterMetricFamily("dataplane_drops", "Frames dropped by the fast path, by reason",
                                    labels=["vni", "reason"])
        for r in rows:
            for reason, n in r["drops"].items():
                drops.add_metric([str(r["vni"]), reason], n)
        yield drops
        yield from self._maps()
        yield from self._agent()

    def _maps(self):
        """What `dataplane status` shows (readout.maps: maps of the scrape's own, never the agent's
        lock or its open maps), for the maps with a count of entries in use (the hash maps)."""
        used = GaugeMetricFamily("dataplane_map_entries", "Entries in use in a fast-path hash map", labels=["map"])
        cap = GaugeMetricFamily("dataplane_map_capacity", "Entries a fast-path map holds at most", labels=["map"])
        try:
            for r in readout.maps(self.ag.node):
                if r["entries"] is not None:
                    used.add_metric([r["map"]], r["entries"])
                    cap.add_metric([r["map"]], r["capacity"])
        except DataplaneError as e:
            log.warning("metrics: reading the maps failed: %s", e)
        yield used
        yield cap

    def _agent(self):
        ag = self.ag
        with ag.lock:           # a consistent copy of the agent's own figures, taken at once
            inst = ag.remote.counts() if ag.remote else {}
            counters, punts = dict(ag.counters), dict(ag.punts.counts)
            n_errors, n_conflicts, rev = len(ag.vni_errors), len(ag.conflicts), ag.view.rev
        yield _gauge("dataplane_registry_connected", "1 while the registry connection (watch) is live",
                     ag.connected.is_set())
        yield _gauge("dataplane_agent_synced", "1 once the agent has applied a full registry snapshot",
                     ag.synced.is_set())
        yield _gauge("dataplane_registry_revision", "Registry revision the agent's view is at", rev)
        lag = ag.watch_lag_s()
        yield _gauge("dataplane_registry_watch_lag_seconds",
                     "Seconds since the registry was last heard on the watch (absent: no live watch)", lag)
        yield _gauge("dataplane_vnis_failing", "VNIs served only in part (agent status vni_errors)", n_errors)
        yield _gauge("dataplane_endpoint_conflicts", "Local runtime endpoints another writer moved or deleted",
                     n_conflicts)
        g = GaugeMetricFamily("dataplane_remote_entries", "Remote entries installed from the registry",
                              labels=["kind"])
        for kind in ("fdb", "neigh"):
            g.add_metric([kind], inst.get(kind, 0))
        yield g
        c = CounterMetricFamily("dataplane_remote_map_full", "Batches of remote entries a full map refused in "
                                "part (the VNI is retried whole; agent status map_error says which map)")
        c.add_metric([], inst.get("map_full", 0))
        yield c
        for key, (name, text) in COUNTERS.items():
            c = CounterMetricFamily(f"dataplane_{name}", text)
            c.add_metric([], counters.get(key, 0))
            yield c
        transport = ag.reg.kv.transport_counts()
        for name, text in (("grpc_commits", "Registry transactions committed over etcd's gRPC API "
                                            "(the rest went through its JSON gateway)"),
                           ("grpc_read_fallbacks", "Bulk registry reads gRPC could not do, done through etcd's "
                                                   "JSON gateway"),
                           ("grpc_watches", "Registry watches opened over etcd's gRPC API (the rest through "
                                            "its JSON gateway)")):
            c = CounterMetricFamily(f"dataplane_registry_{name}", text)
            c.add_metric([], transport.get(name, 0))
            yield c
        c = CounterMetricFamily("dataplane_agent_punts", "Punted misses the agent handled, by outcome",
                                labels=["outcome"])
        for outcome, n in punts.items():
            c.add_metric([outcome], n)
        yield c


def _gauge(name: str, text: str, value):
    g = GaugeMetricFamily(name, text)
    if value is not None:
        g.add_metric([], float(value))
    return g


def registry_for(agent) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector(agent))
    ProcessCollector(registry=reg)
    return reg


def serve(agent, address: str) -> "Server | None":
    """Start serving on address ("": nowhere); a failure is logged, never fatal."""
    if not address:
        return None
    try:
        srv = Server(agent, address)
    except DataplaneError as e:
        log.error("%s", e)
        return None
    srv.start()
    return srv


class Server:
    """GET /metrics (text format 0.0.4) and /healthz (200 only when synced and
    connected to the registry), on a thread of its own."""

    def __init__(self, agent, address: str):
        host, port = model.parse_host_port(address, "metrics address")
        registry = registry_for(agent)
        scraping = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def do_GET(self):  # noqa: N802 - the http.server API
                if self.path.split("?")[0] == "/metrics":
                    with scraping:       # one scrape at a time; the agent's lock only for a copy
                        body, code = generate_latest(registry), 200
                    ctype = "text/plain; version=0.0.4; charset=utf-8"
                elif self.path == "/healthz":
                    ok = agent.synced.is_set() and agent.connected.is_set()
                    body, code, ctype = (b"ok\n" if ok else b"not synced or registry unreachable\n",
                                         200 if ok else 503, "text/plain")
                else:
                    body, code, ctype = b"not found\n", 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise UsageError(f"cannot serve metrics on {address}: {e}") from None
        self.httpd.daemon_threads = True
        self.address = f"{host}:{self.httpd.server_address[1]}"

    def start(self) -> None:
        threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True).start()
        log.info("metrics on http://%s/metrics", self.address)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
