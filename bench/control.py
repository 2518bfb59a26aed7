"""bench/control: the control plane, per registry backend (SQLite file, real etcd).

    .venv/bin/python -m bench.control [--endpoints 10000] [--converge 1000] [--backend sqlite|etcd ...]

1. Full sync: N endpoints on two other hosts are written to the registry,
   then `dataplane up` starts the agent on a fresh node; reported: the
   agent's snapshot read and its map writes (batch updates), and its
   resident memory afterwards.
2. Convergence: with that agent running, endpoints are written one at a
   time from this process (host A) and their FDB entry is polled in the
   node's map (host B); reported: median and p99 from the write to the entry.

A node namespace dpl-bc with an uplink to dpl-bcp; etcd runs in dpl-bcp on
198.18.2.2, so the agent reaches it over its uplink like a real host.
Writes bench/results/control.json and control.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.run import headline, machine, save
from dataplane.agent import process as agentctl, client as api
from lab import etcd as etcd_server, topology as lab
from dataplane.kernel import netlink
from dataplane.core.keys import mac_key
from dataplane.node import Node
from dataplane.registry import Host, open_registry

NS, PEER_NS = "dpl-bc", "dpl-bcp"
NODE_IP, PEER_IP, PEER_IP2 = "198.18.2.1", "198.18.2.2", "198.18.2.3"
DP = [sys.executable, "-m", "dataplane.cli"]


def topology():
    for ns in (NS, PEER_NS):
        netlink.ns_delete(ns)
        netlink.ns_create(ns)
    lab.run_checked(["ip", "-n", NS, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", PEER_NS])
    netlink.link_up(NS, "ul0", NODE_IP, 24)
    netlink.link_up(PEER_NS, "lo")
    netlink.link_up(PEER_NS, "ul0", PEER_IP, 24)
    lab.run_checked(["ip", "-n", PEER_NS, "addr", "add", f"{PEER_IP2}/24", "dev", "ul0"])


def teardown():
    subprocess.run(DP + ["--netns", NS, "down"], capture_output=True)
    for ns in (NS, PEER_NS):
        netlink.ns_delete(ns)


def in_peer(fn, *args):
    return netlink.call_in_netns(PEER_NS, fn, *args)


def populate(url: str, n: int) -> float:
    def work():
        reg = open_registry(url)
        try:
            reg.network_create("bench", 4000, "10.64.0.0/16")
            for i, ip in enumerate((PEER_IP, PEER_IP2)):
                reg.host_register(Host.make(f"remote{i}", ip), reg.kv.lease_grant(3600))
            t0 = time.monotonic()
            for i in range(n):
                reg.endpoint_create(f"e{i}", "bench", f"remote{i % 2}")
                if i and i % 2000 == 0:
                    print(f"  registered {i}/{n} endpoints", file=sys.stderr, flush=True)
            return time.monotonic() - t0
        finally:
            reg.close()
    return in_peer(work)


def converge(url: str, n: int) -> list[float]:
    """ms from the registry write (before the call) to the entry in the node's dp_fdb."""
    maps = Node(NS).maps()

    def work():
        reg = open_registry(url)
        out = []
        try:
            for i in range(n):
                t0 = time.perf_counter()
                ep = reg.endpoint_create(f"c{i}", "bench", f"remote{i % 2}")
                k = mac_key(4000, ep.mac)
                while maps.dp_fdb.get(k) is None:
                    if time.perf_counter() - t0 > 5:
                        raise RuntimeError(f"endpoint c{i} did not converge in 5 s")
                    time.sleep(0.0002)
                out.append((time.perf_counter() - t0) * 1000)
        finally:
            reg.close()
        return out
    try:
        return in_peer(work)
    finally:
        maps.close()


def pct(v: list[float], q: float) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def bench_backend(backend: str, n: int, nconv: int, tmp: str) -> dict:
    print(f"[{backend}] topology, registry, {n} endpoints", file=sys.stderr, flush=True)
    topology()
    etcd_pid = None
    try:
        if backend == "etcd":
            etcd_pid = etcd_server.start(os.path.join(tmp, "etcd"), PEER_IP, 2379, 2380, netns=PEER_NS,
                                         log_path=os.path.join(tmp, "etcd.log"))
            url = f"etcd://{PEER_IP}:2379"
        else:
            url = f"sqlite://{tmp}/registry.db"
        write_s = populate(url, n)
        t0 = time.monotonic()
        subprocess.run(DP + ["--netns", NS, "up", "--underlay", "ul0", "--registry", url, "--host-name", "bench"],
                       check=True, capture_output=True)
        up_s = time.monotonic() - t0
        st = api.call(NS, "status")
        assert st["installed"]["fdb"] == n, st["installed"]
        print(f"[{backend}] synced {n}: snapshot {st['last_snapshot_ms']} ms, maps {st['last_sync_ms']} ms, "
              f"rss {st['rss_kib'] // 1024} MiB; convergence x{nconv}", file=sys.stderr, flush=True)
        lat = converge(url, nconv)
        st2 = api.call(NS, "status")
        # Agent start-up on a running node: process start to first full sync
        # (imports, registry snapshot, diff against the maps that are already right).
        agentctl.stop(NS)
        t0 = time.monotonic()
        agentctl.spawn(NS, NS, url, "bench", 10, quiet=True)
        restart_s = time.monotonic() - t0
        st3 = api.call(NS, "status")
        return {"registry": url, "endpoints": n, "registry_write_s": round(write_s, 2),
                "up_with_agent_s": round(up_s, 2), "snapshot_ms": st["last_snapshot_ms"],
                "sync_to_maps_ms": st["last_sync_ms"], "agent_rss_mib": round(st2["rss_kib"] / 1024, 1),
                "agent_peak_rss_mib": round(st2["rss_peak_kib"] / 1024, 1),
                "agent_start_s": round(restart_s, 2), "agent_start_peak_rss_mib": round(st3["rss_peak_kib"] / 1024, 1),
                "converge_ms": {"median": round(statistics.median(lat), 2), "p99": round(pct(lat, 0.99), 2),
                                "max": round(max(lat), 2), "n": len(lat)}}
    finally:
        teardown()
        if etcd_pid:
            etcd_server.stop(etcd_pid)


def table(res: dict) -> str:
    m = res["machine"]
    out = [f"{headline(m)}.", "",
           "| registry | endpoints | `up` with agent | agent start | snapshot read | sync into maps "
           "| agent RSS (peak) | convergence median | p99 |",
           "|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["backends"].items():
        c = r["converge_ms"]
        out.append(f"| {name} | {r['endpoints']} | {r['up_with_agent_s']:.2f} s | {r['agent_start_s']:.2f} s | "
                   f"{r['snapshot_ms']:.0f} ms | {r['sync_to_maps_ms']:.0f} ms | "
                   f"{r['agent_rss_mib']:.0f} MiB ({r['agent_peak_rss_mib']:.0f}) | "
                   f"{c['median']:.1f} ms | {c['p99']:.1f} ms (n={c['n']}) |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/control")
    p.add_argument("--endpoints", type=int, default=10000)
    p.add_argument("--converge", type=int, default=1000)
    p.add_argument("--backend", action="append", choices=("sqlite", "etcd"))
    args = p.parse_args(argv)
    res = {"machine": machine(), "args": vars(args), "backends": {}}
    for b in args.backend or ["sqlite", "etcd"]:
        with tempfile.TemporaryDirectory(prefix="dp-bench-") as tmp:
            res["backends"][b] = bench_backend(b, args.endpoints, args.converge, tmp)
    save(res, table(res), "control")
    return 0


if __name__ == "__main__":
    sys.exit(main())
