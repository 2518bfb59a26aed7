"""`monitor`, `capture`, `stats` and `status`: what the node is doing, now and over time."""

from __future__ import annotations

import json
import signal
import sys
import time

from dataplane.agent import client, process
from dataplane.cli.node_cmds import node_of
from dataplane.cli.output import add_output, add_vni_filter, by_vni, emit, is_json, say, vni_filter
from dataplane.core import model
from dataplane.core.errors import DataplaneError, UsageError
from dataplane.node import capture, choices, monitor, networks, readout

STATS_COLUMNS = ["vni", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "local_packets", "arp_replies",
                 "flooded", "drops"]
RATE_COLUMNS = ["vni", "rx_pps", "rx_bps", "tx_pps", "tx_bps", "local_pps", "drops_per_s", "top_drop"]


def cmd_stats(args):
    node = node_of(args)
    if not args.watch:
        rows = by_vni(args, readout.stats(node))
        peers = ["overlay_storm_peers"] if any(r.get("overlay_storm_peers") for r in rows) else []
        emit(args, rows, STATS_COLUMNS + peers)
        return 0
    if not 0.1 <= args.interval <= 3600:
        raise UsageError("--interval must be 0.1..3600 s")
    by_vni(args, [])                     # a bad --vni said now, not after the first interval
    prev, t0 = {r["vni"]: r for r in readout.stats(node)}, time.monotonic()
    try:
        while True:
            time.sleep(args.interval)
            now, t1 = {r["vni"]: r for r in readout.stats(node)}, time.monotonic()
            rows = by_vni(args, [rates(prev.get(v), r, t1 - t0) for v, r in sorted(now.items())])
            if is_json(args):
                print(json.dumps({"time": round(time.time(), 3), "interval_s": round(t1 - t0, 3), "vnis": rows}),
                      flush=True)
            else:
                print(time.strftime("%H:%M:%S"))
                emit(args, rows, RATE_COLUMNS)
                print(flush=True)
            prev, t0 = now, t1
    except (KeyboardInterrupt, BrokenPipeError):
        return 0


def rates(old: dict | None, new: dict, dt: float) -> dict:
    """Per-second rates between two readings of one VNI's counters."""
    old = old or {k: 0 for k in new}
    d = lambda k: max(0, new[k] - old.get(k, 0)) / dt  # noqa: E731 - counters only grow (a new slot restarts)
    drops = {r: max(0, n - (old.get("drops") or {}).get(r, 0)) for r, n in new["drops"].items()}   # (as d)
    top = max(drops.items(), key=lambda kv: kv[1], default=(None, 0))
    return {"vni": new["vni"], "rx_pps": round(d("rx_packets")), "rx_bps": round(d("rx_bytes") * 8),
            "tx_pps": round(d("tx_packets")), "tx_bps": round(d("tx_bytes") * 8),
            "local_pps": round(d("local_packets")), "drops_per_s": round(sum(drops.values()) / dt),
            "top_drop": top[0] if top[1] > 0 else None}


def _metrics_errors(c, a: dict) -> list[str]:
    """What `status` says of the agent's /metrics: a port (or web config) it could not open or
    read, and an address or web config changed by `up` since the agent started (it takes them
    at its start)."""
    out = [f"metrics: {a[k]}" for k in ("metrics_error", "metrics_web_error") if a.get(k)]
    if a.get("metrics_error"):                      # it serves nothing: the line above says why
        return out
    restart = f"restart the agent {process.RESTART}"
    served = a.get("metrics_served")
    web = a.get("metrics_web_config_served")       # (an older agent: none, whatever the node says)
    if "metrics_served" in a and (served or "") != (c.metrics_address or ""):
        out.append(f"metrics: configured {c.metrics_address or 'off'}, the agent serves {served or 'none'}: {restart}")
    elif served and (web or "") != (c.metrics_web_config or ""):
        out.append(f"metrics: configured with web config {c.metrics_web_config or 'none'}, the agent serves with "
                   f"{web or 'none'}: {restart}")
    return out


def cmd_status(args):
    """One screen: node, programs, maps, agent and registry, VNIs, last errors."""
    node = node_of(args)
    st = node.require_up()
    c = st.config
    out = {"node": st.node, "vtep": f"{c.local_ip}:{c.port}", "underlay": c.underlay, "uplink_mtu": st.uplink.mtu,
           "peer_check": c.peer_check, "vxlan_guard": c.vxlan_guard, "storm_rate": c.storm_rate,
           "overlay_storm_rate": c.overlay_storm_rate, "overlay_storm_host_rate": c.overlay_storm_host_rate,
           "overlay_storm_peer_rate": choices.peer_rate(c),
           "learn_rate": c.learn_rate,
           "registry": st.registry, "host": st.host_name,
           "metrics": c.metrics_address or None, "metrics_web_config": c.metrics_web_config or None,
           "networks": [{"vni": v, "subnet": n.subnet, "mtu": n.mtu,
                         "endpoints": len(st.local_endpoints(v)), "peers": len(networks.flood_list(st, v))}
                        for v, n in sorted(st.networks.items())],
           "programs": readout.programs(node), "maps": readout.maps(node), "agent": None, "errors": []}
    if st.registry:
        try:
            a = client.call(node.name, "status")
            out["agent"] = {k: a.get(k) for k in ("pid", "synced", "connected", "revision", "watch_lag_s",
                                                   "watch_member", "hosts", "endpoints", "installed", "punts")}
            out["errors"] = ([f"VNI {v}: {e}" for v, e in a.get("vni_errors", {}).items()]
                             + [f"endpoint {k}: {e}" for k, e in a.get("conflicts", {}).items()]
                             + list(a.get("over_limit", [])) + a.get("bad_records_recent", [])[-3:]
                             + ([f"maps: {a['map_error']}"] if a.get("map_error") else [])
                             + _metrics_errors(c, a))
        except DataplaneError as e:
            out["errors"].append(f"agent: {e} (last log line: {process.log_tail(node.name)})")
    if is_json(args):
        emit(args, out)
        return 0
    agent = out["agent"]
    print(f"node      {out['node']}: VTEP {out['vtep']} on {out['underlay']} (MTU {out['uplink_mtu']}), "
          f"peer check {'on' if c.peer_check else 'off'}, VXLAN guard {'on' if c.vxlan_guard else 'OFF'}, "
          f"storm control {f'{c.storm_rate}/s' if c.storm_rate else 'off'}, from the underlay "
          f"{f'{c.overlay_storm_rate} copies/s' if c.overlay_storm_rate else 'off'} per network "
          f"({f'{c.overlay_storm_host_rate}' if c.overlay_storm_host_rate else 'no limit'} for the host, "
          f"{out['overlay_storm_peer_rate'] or 'no limit'} for a peer"
          f"{'' if c.overlay_storm_peer_rate is not None else ', half the network rate'}), "
          f"learning {f'{c.learn_rate} MACs/s' if c.learn_rate else 'unlimited'}")
    print(f"registry  {out['registry'] or 'none (static peers)'}" + (
        f"; agent pid {agent['pid']}, {'synced' if agent['synced'] else 'NOT SYNCED'}, "
        f"{'connected' if agent['connected'] else 'DISCONNECTED'}, revision {agent['revision']}, "
        f"{len(agent['hosts'])} hosts, {agent['endpoints']} endpoints" if agent else ""))
    web = f", TLS and passwords as {c.metrics_web_config}" if out["metrics"] and c.metrics_web_config else ""
    print(f"metrics   {out['metrics'] or 'off'}{web}\n")
    emit(args, out["networks"], ["vni", "subnet", "mtu", "endpoints", "peers"])
    print()
    counted = any(r.get("ns_per_run") for r in out["programs"])     # the kernel's BPF statistics were on
    emit(args, [dict(r, attached=f"{r['attached']}; {r['dropped']} frames dropped on its transmit")
                if r.get("dropped") else r for r in out["programs"]],
         ["program", "id", "loaded"] + (["runs", "ns_per_run"] if counted else []) + ["attached"])
    print()
    emit(args, [m for m in out["maps"] if m["entries"] is not None], ["map", "kind", "entries", "capacity"])
    print("\nerrors    " + ("\n          ".join(out["errors"]) if out["errors"] else "none"))
    return 0


def _line(ev: dict) -> str:
    where = f"{ev['interface'] or ev['ifindex']}"
    flow = ""
    if "src_ip" in ev:
        ports = (f":{ev['src_port']} -> {ev['dst_ip']}:{ev['dst_port']}" if "src_port" in ev
                 else f" -> {ev['dst_ip']}")
        flow = f" {ev.get('proto', '')} {ev['src_ip']}{ports}"
    inner = ev.get("inner") or {}
    if inner:
        flow += f" [VNI {ev.get('vxlan_vni')}: {inner.get('src_mac')} -> {inner.get('dst_mac')}"
        flow += (f" {inner.get('proto', inner.get('ethertype'))} {inner.get('src_ip', '')} -> {inner.get('dst_ip', '')}]")
    macs = f"{ev.get('src_mac', '?')} -> {ev.get('dst_mac', '?')}"
    return f"{ev['type']:5} {ev['reason']:16} vni {ev['vni']:<8} {where:14} {ev['len']:5}B {macs}{flow}"


def cmd_monitor(args):
    node = node_of(args)
    flags = monitor.parse_types(args.type)
    vni = vni_filter(args.vni)
    _limits(args)
    _stop_like_interrupt()          # so the events are switched off on the way out
    shown, reported = 0, 0

    def report_lost(events) -> None:
        """Events the fast path could not write since the last report: a gap in what was shown."""
        nonlocal reported
        n, was = events.lost(vni), reported
        if n > was:
            reported = n             # first: a signal during the print must not report them twice
            if is_json(args):
                print(json.dumps({"time": round(time.time(), 6), "type": "lost", "vni": vni, "count": n - was,
                                  "total": n}), flush=True)
            else:
                print(f"monitor: {n - was} events lost (the fast path could not write them: rate or ring "
                      "full)", file=sys.stderr, flush=True)
    try:
        with monitor.running(node, flags, sample=args.sample, rate=args.rate) as events:
            if not is_json(args):
                print(f"monitor: {args.type} events on node {node.name}; ^C to stop", file=sys.stderr, flush=True)
            end = time.monotonic() + args.timeout if args.timeout else None
            check = time.monotonic() + 1
            try:
                while args.count is None or shown < args.count:
                    if end is not None and time.monotonic() >= end:
                        break
                    for ev in events.read(0.2):
                        if vni is not None and ev["vni"] != vni:
                            continue
                        print(json.dumps(ev) if is_json(args) else _line(ev), flush=True)
                        shown += 1
                        if args.count is not None and shown >= args.count:
                            break
                    if time.monotonic() >= check:       # said as they happen, once a second at most
                        report_lost(events)
                        check = time.monotonic() + 1
            except KeyboardInterrupt:
                pass
            report_lost(events)
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
    return 0


def _stop_like_interrupt() -> None:
    """SIGTERM and SIGHUP (kill, timeout(1), a closed SSH session) end the command like ^C, its
    cleanup run: the default handlers exit at once (a capture's buffered frames were lost)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))


def _limits(args) -> None:
    """-c and --timeout end a capture or a monitor: 0 or less would be "never" or "at once"."""
    if args.count is not None and args.count < 1:
        raise UsageError(f"bad --count {args.count}: at least 1")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"bad --timeout {args.timeout:g}: more than 0 seconds")


def cmd_capture(args):
    node = node_of(args)
    vni = model.parse_vni(args.vni)
    _limits(args)
    _stop_like_interrupt()          # the pcap is flushed and closed, the summary printed
    what = (f"endpoint {args.endpoint}" if args.endpoint else "every endpoint") if args.inner else "the uplink"
    n = capture.run(node, vni, args.write, count=args.count, timeout=args.timeout, endpoint=args.endpoint,
                    inner=args.inner, started=lambda: print(f"capture: VNI {vni} on {what} of node {node.name} "
                                                            f"into {args.write}; ^C to stop", file=sys.stderr,
                                                            flush=True))
    say(args, f"capture: {n} frames written to {args.write}", {"file": args.write, "frames": n, "vni": vni})
    return 0


def register(sub) -> None:
    c = sub.add_parser("capture", help="write a VNI's frames to a pcap file (VXLAN on the uplink, or --inner)")
    c.add_argument("--vni", required=True, help="the VNI whose frames to capture")
    c.add_argument("-w", "--write", required=True, metavar="FILE", help="pcap file to write")
    c.add_argument("-c", "--count", type=int, help="stop after this many frames")
    c.add_argument("--timeout", type=float, help="stop after this many seconds")
    c.add_argument("--inner", action="store_true",
                   help="the inner frames as each sandbox sends and receives them, not the VXLAN frames")
    c.add_argument("--endpoint", help="with --inner: only this endpoint")
    add_output(c)
    c.set_defaults(func=cmd_capture)
    st = sub.add_parser("stats", help="per-VNI counters and drops by reason (VNI 0: no VNI)")
    add_vni_filter(st)
    st.add_argument("--watch", action="store_true", help="print rates (pps, bit/s, drops/s) every --interval")
    st.add_argument("--interval", type=float, default=2.0, help="seconds between readings (default: %(default)s)")
    add_output(st)
    st.set_defaults(func=cmd_stats)
    s = sub.add_parser("status", help="the node at a glance: programs, maps, agent, registry, VNIs, errors")
    add_output(s)
    s.set_defaults(func=cmd_status)

    m = sub.add_parser("monitor", help="stream the fast path's drops, punts and sampled forwarded frames")
    m.add_argument("--type", default="drop",
                   help=f"events to show, comma-separated: {', '.join(monitor.TYPES)} (default: %(default)s)")
    m.add_argument("--vni", help="only events of this VNI (0: those of no VNI, as a frame of a VNI this node "
                                 "does not serve)")
    m.add_argument("--sample", type=int, default=1, help="trace one forwarded frame in N (default: every one)")
    m.add_argument("--rate", type=int, default=10000,
                   help="events per second the fast path may write at most (default: %(default)s)")
    m.add_argument("-c", "--count", type=int, help="stop after this many events")
    m.add_argument("--timeout", type=float, help="stop after this many seconds")
    add_output(m)
    m.set_defaults(func=cmd_monitor)
