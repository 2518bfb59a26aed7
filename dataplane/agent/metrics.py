"""The agent's Prometheus endpoint: /metrics and /healthz over HTTP.

The collector reads the pinned maps and the agent's own counters at scrape
time (nothing is copied in the background): per-VNI counters and drops by
reason from dp_stats, occupancy and capacity of every hash map, whether the
uplink's programs are attached, the programs' runs and run time where the kernel
counts them, and the agent's own figures (metrics_agent.py);
dataplane_scrape_success says which of those could be read. process_* (RSS,
start time, CPU) come from
prometheus_client's process collector. Names follow Prometheus's
conventions: dataplane_ prefix, counters end in _total, seconds and bytes.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dataplane.agent import metrics_agent
from dataplane.core import abi
from dataplane.core.errors import DataplaneError
from dataplane.kernel import netlink, tcx
from dataplane.node import readout, rxgro

log = logging.getLogger("dataplane.agent")

# dp_stats field (and dp_net_meter's learn_limited) -> (metric, help); each becomes dataplane_<metric>_total{vni}
STATS = {
    "rx_packets": ("rx_packets", "Packets decapsulated and delivered to a sandbox (skbs: a GRO super-packet "
                                 "counts once)"),
    "rx_bytes": ("rx_bytes", "Inner bytes decapsulated and delivered"),
    "tx_packets": ("tx_packets", "Packets encapsulated toward a VTEP (skbs: a GSO super-packet counts once; each "
                                 "flood copy counts)"),
    "tx_bytes": ("tx_bytes", "Inner bytes encapsulated toward VTEPs"),
    "local_packets": ("local_packets", "Packets delivered endpoint to endpoint on this host (skbs: a "
                                       "super-packet counts once)"),
    "local_bytes": ("local_bytes", "Bytes delivered endpoint to endpoint on this host"),
    "arp_replies": ("arp_replies", "ARP requests answered from the neighbour map"),
    "flooded": ("floods", "Broadcast or unknown frames replicated to the flood list"),
    "punted": ("punts", "Misses handed to the agent"),
    "punt_fallback": ("punt_fallbacks", "Misses flooded because the punt ring was full"),
    "frag_needed": ("frag_needed", "ICMP fragmentation-needed sent back for DF frames over the MTU"),
    "monitor_lost": ("monitor_lost", "Monitor events not written: over the monitor's rate, or its ring full"),
    "learn_limited": ("learn_limited", "New source MACs not learned, over the network's learning rate (counted "
                                       "again each second a source keeps sending)"),
}
VNI_HELP = " (vni 0: what belongs to no VNI)"


@contextmanager
def _source(ok: dict, source: str, what: str):
    """One source of a scrape: ok[source] says whether it was read; a failure is logged and
    the scrape goes on with what the block had added before it."""
    try:
        yield
    except DataplaneError as e:
        log.warning("metrics: reading %s failed: %s", what, e)
        ok[source] = False
    else:
        ok[source] = True


class Collector:
    def __init__(self, agent):
        self.ag = agent
        self.figures = metrics_agent.AgentFigures(agent)

    def collect(self):
        ok = {}
        yield from self._stats(ok)
        yield from self._maps(ok)
        yield from self._attached(ok)
        yield from self._programs(ok)
        agent = list(self.figures.collect())
        ok["agent"] = self.figures.fresh
        s = GaugeMetricFamily("dataplane_scrape_success", "1: the source was read for this scrape; 0: it failed "
                              "(the agent's log says why) or (agent) its figures are those of an earlier scrape",
                              labels=["source"])
        for source, good in ok.items():
            s.add_metric([source], int(good))
        yield s
        yield from agent

    def _stats(self, ok: dict):
        rows = []
        with _source(ok, "stats", "counters"):
            rows = readout.stats(self.ag.node)
        for field, (name, text) in STATS.items():
            c = CounterMetricFamily(f"dataplane_{name}", text + VNI_HELP, labels=["vni"])
            for r in rows:
                c.add_metric([str(r["vni"])], r[field])
            yield c
        # Every reason of every VNI, at 0 too: a series first seen at 5 hides those 5 from increase().
        drops = CounterMetricFamily("dataplane_drops", "Frames dropped by the fast path, by reason" + VNI_HELP,
                                    labels=["vni", "reason"])
        for r in rows:
            for reason in abi.drop_names():
                drops.add_metric([str(r["vni"]), reason], r["drops"].get(reason, 0))
        yield drops
        g = GaugeMetricFamily("dataplane_flood_unreached", "Members of a VNI (VTEPs and local endpoints) its "
                              "broadcast cannot reach: past the fast path's flood limits", labels=["vni"])
        for r in rows:
            if "unreached" in r:
                g.add_metric([str(r["vni"])], r["unreached"])
        yield g
        # Only pairs with a refusal, and only the VNI's VTEPs by name (readout.peer_refusals): one
        # series per pair that ever broadcast would be up to DP_MAP_VTEPS of them, and a forger's
        # addresses one each. What to alert on is dataplane_drops_total{reason="overlay_storm_peer"}.
        peers = CounterMetricFamily("dataplane_overlay_storm_peer_refused", "Broadcasts from one peer (its outer "
                                    "source address) refused by its overlay storm meter in the VNI: whose floods "
                                    "the overlay_storm_peer drops are. A series appears at its first refusal "
                                    "(read its value, as topk does; increase() misses that first scrape's)",
                                    labels=["vni", "peer"])
        # Addresses that are no VTEP of the VNI now (forged, or a peer gone since): a sum whose members
        # come and go with the peers and the LRU's evictions, so a gauge (as a counter it went down,
        # which Prometheus reads as a reset: a false burst in rate() at every peer's return).
        unlisted = GaugeMetricFamily("dataplane_overlay_storm_unlisted_refused", "Broadcasts refused by the "
                                     "overlay storm meter from addresses that are no VTEP of the VNI (forged, or "
                                     "a peer gone since), summed as the peer meters hold them now", labels=["vni"])
        for r in rows:
            for peer, n in r.get("overlay_storm_peers", {}).items():
                if peer == "other":
                    unlisted.add_metric([str(r["vni"])], n)
                else:
                    peers.add_metric([str(r["vni"]), peer], n)
        yield peers
        yield unlisted

    def _maps(self, ok: dict):
        """What `dataplane status` shows (readout.maps: maps of the scrape's own, never the agent's
        lock or its open maps), for the maps with a count of entries in use (the hash maps)."""
        used = GaugeMetricFamily("dataplane_map_entries", "Entries in use in a fast-path hash map", labels=["map"])
        cap = GaugeMetricFamily("dataplane_map_capacity", "Entries a fast-path map holds at most", labels=["map"])
        with _source(ok, "maps", "the maps"):
            for r in readout.maps(self.ag.node):
                if r["entries"] is not None:
                    used.add_metric([r["map"]], r["entries"])
                    cap.add_metric([r["map"]], r["capacity"])
        yield used
        yield cap

    def _attached(self, ok: dict):
        """The uplink's programs: from_overlay always, xdp_guard where the node has it on
        (a detached program is the fast path gone, silently)."""
        g = GaugeMetricFamily("dataplane_fastpath_attached", "1 while the program is attached to the uplink "
                              "(xdp_guard: only on nodes with --xdp-guard)", labels=["program"])
        gro = GaugeMetricFamily("dataplane_receive_gro", "1 while a vxlan socket (dpgro0's, guarded by gro_sink, "
                                "or another vxlan device's) holds the node's UDP port, so that the uplink's GRO "
                                "merges VXLAN frames (0: they arrive one by one; `dataplane status` says why; "
                                "absent with --no-rx-gro)")
        lost = CounterMetricFamily("dataplane_tunnel_device_dropped", "Frames the node's vxlan device (dpgro0) "
                                   "dropped on transmit: frames carrying a tunnel already that from_endpoint sent "
                                   "through it (counted in dataplane_tx_packets_total) and that never left, the "
                                   "device down (counted so by kernels from about 6.11) or the packet one the kernel "
                                   "cannot segment (absent without the device)")
        with _source(ok, "uplink", "the uplink's programs"):
            st = self.ag.node.require_up()
            on_uplink = tcx.attached(self.ag.node.netns, st.uplink.ifindex)
            g.add_metric(["from_overlay"], int("from_overlay" in on_uplink))
            if st.config.xdp_guard:
                ours = netlink.xdp_attached(self.ag.node.netns, st.uplink.ifindex, "xdp_guard")
                g.add_metric(["xdp_guard"], int(ours))
            seen = rxgro.look(self.ag.node.netns, st.config.port, st.config.rx_gro)
            if st.config.rx_gro:
                gro.add_metric([], int(seen.active))
            if seen.dropped is not None:
                lost.add_metric([], seen.dropped)
        yield g
        yield gro
        yield lost

    def _programs(self, ok: dict):
        """What each program costs, as the kernel counts it while its BPF statistics are on
        (off by default: they add two clock reads to every run). rate(seconds) / rate(runs) is
        the nanoseconds per run that bench/ reports; both restart when `up` loads new code."""
        when = ("only while the kernel's BPF statistics are on: kernel.bpf_stats_enabled, or a BPF_ENABLE_STATS "
                "handle; a tail-called program stays at 0, its time is its caller's")
        on = GaugeMetricFamily("dataplane_bpf_stats_enabled", "1 while sysctl kernel.bpf_stats_enabled is 1, so "
                               "that dataplane_program_* count (a BPF_ENABLE_STATS handle turns counting on too)")
        runs = CounterMetricFamily("dataplane_program_runs", f"Runs of the fast-path program ({when})",
                                   labels=["program"])
        secs = CounterMetricFamily("dataplane_program_run_seconds", f"Time the fast-path program ran ({when})",
                                   labels=["program"])
        with _source(ok, "programs", "the programs' statistics"):
            for r in readout.program_runs(self.ag.node):
                runs.add_metric([r["program"]], r["runs"])
                secs.add_metric([r["program"]], r["run_ns"] / 1e9)
            on.add_metric([], int(readout.bpf_stats_enabled()))
        yield on
        yield runs
        yield secs


def registry_for(agent) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector(agent))
    ProcessCollector(registry=reg)
    return reg
