"""bench/scale: the fast path's cost as a VNI grows, in one run.

    .venv/bin/python -m bench.scale [--vteps 100] [--macs 10000] [--local 1000] [--rounds 3] [--seconds 3]

Two lab hosts with agents on the lab's SQLite registry, one sandbox each on VNI
4001 (10.80.0.0/16). The VNI is measured small (those two endpoints) and big
(--macs more endpoints on --vteps - 1 registry-only hosts: namespaces on the
underlay that own their VTEP address and drop VXLAN, so h1 floods to --vteps
VTEPs and holds --macs + 1 remote MACs), alternating, --rounds times each:

- unicast: 64-byte frames h1 -> h2 from the C generator, unthrottled: frames/s
  received, and from_endpoint's and from_overlay's ns per run (the kernel's BPF
  statistics);
- broadcast: 64-byte frames to ff:ff:ff:ff:ff:ff from h1's sandbox at --bcast-rate
  a second (under the default storm control): from_endpoint's ns per frame,
  the flood's tail calls and every copy included, and the copies sent per frame.

Then each host gets --local endpoints in all (--local - 1 more sandboxes, made
through its agent), and the same alternating rounds run again: the local-
endpoint rows compare two phases of one run, not interleaved rounds, so they
carry the machine's drift between the phases as well.

Writes bench/results/scale.json and scale.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import subprocess
import sys
import time

from bench.profile import _prog_times, bpf_stats, ns_per_run
from bench.run import _in, headline, machine, pps64, save, vni_counter
from dataplane.agent import client
from dataplane.registry import Endpoint, Host, open_registry
from dataplane.registry.kv import Txn
from dataplane.registry.store import key
from lab import topology as lab

NET, VNI, SUBNET = "scale", 4001, ipaddress.IPv4Network("10.80.0.0/16")
H1, H2 = lab.host_ns(1), lab.host_ns(2)


def log(msg: str) -> None:
    print(f"bench/scale: {msg}", file=sys.stderr, flush=True)


def fake_ip(i: int) -> str:
    return str(lab.VTEP_NET.network_address + 100 + i)   # the registry-only hosts' VTEPs: .101-.249


def setup(vteps: int) -> tuple[dict, dict]:
    lab.down()
    lab.up(2, [256], per_host=0, registry="sqlite")
    reg = open_registry(lab.registry_url("sqlite"))
    try:
        reg.network_create(NET, VNI, str(SUBNET))
        for i in range(1, vteps):
            ns = f"{lab.PREFIX}f{i}"
            lab.underlay_host(ns, f"ul-f{i}", lab.UPLINK, fake_ip(i))
            subprocess.run(["ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-p", "udp", "--dport", "4789",
                            "-j", "DROP"], check=True)
            reg.host_register(Host.make(f"f{i}", fake_ip(i)), reg.kv.lease_grant(3600))
    finally:
        reg.close()
    a = client.call(H1, "endpoint_add", id=f"{H1}-sc", vni=VNI)
    b = client.call(H2, "endpoint_add", id=f"{H2}-sc", vni=VNI)
    a, b = {"name": a["netns"], "ip": a["ip"]}, {"name": b["netns"], "ip": b["ip"]}   # name: the sandbox's namespace
    _in(a["name"], ["ping", "-c", "2", "-i", "0.2", b["ip"]], check=True)      # its neighbour entry, for the generator
    return a, b


def fakes(macs: int, vteps: int) -> list[Endpoint]:
    out = []
    for i in range(macs):
        ip = SUBNET.network_address + 4096 + i     # above the 2 x 1024 local endpoints the IPAM gives out from the bottom
        out.append(Endpoint.make(f"sc{i}", NET, f"f{1 + i % (vteps - 1)}", f"02:80:{i >> 16 & 255:02x}:"
                                 f"{i >> 8 & 255:02x}:{i & 255:02x}:01", str(ip)))
    return out


def grow(eps: list[Endpoint], present: bool) -> None:
    """The registry-only endpoints written (present) or deleted, 40 a transaction."""
    reg = open_registry(lab.registry_url("sqlite"))
    try:
        for i in range(0, len(eps), 40):
            t = Txn()
            for e in eps[i:i + 40]:
                ks = (key("endpoints", e.id), key("ipam", NET, e.ip), key("macs", NET, e.mac))
                if present:
                    t.put(ks[0], e.to_json()).put(ks[1], e.id.encode()).put(ks[2], e.id.encode())
                else:
                    for k in ks:
                        t.delete(k)
            reg.kv.commit(t)
    finally:
        reg.close()


def add_locals(n: int, h1_times: list | None = None) -> None:
    """n - 1 more endpoints on each of h1 and h2 (sandboxes and all, through the agents);
    h1_times gets the seconds each of h1's adds took."""
    t0 = time.monotonic()
    for i in range(1, n):
        for ns in (H1, H2):
            t = time.monotonic()
            client.call(ns, "endpoint_add", id=f"{ns}-l{i}", vni=VNI)
            if ns == H1 and h1_times is not None:
                h1_times.append(time.monotonic() - t)
        if i % 100 == 0 or i == n - 1:
            log(f"local endpoints: {i + 1}/{n} per host ({time.monotonic() - t0:.0f} s)")


def wait_fdb(ns: str, want: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.call(ns, "status")["installed"]["fdb"] == want:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{ns}: FDB did not reach {want} entries")


def unicast(a: dict, b: dict, seconds: float) -> dict:
    _in(a["name"], ["ping", "-c", "1", "-W", "1", b["ip"]])    # the generator's neighbour entry, fresh
    before = _prog_times()
    pps, cpu_ns = pps64(a, b, seconds)
    ns = {k: round(v, 1) for k, v in ns_per_run(before, _prog_times()).items()}
    return {"pps": round(pps), "cpu_ns_per_frame": round(cpu_ns), "from_endpoint_ns": ns.get("from_endpoint"),
            "from_overlay_ns": ns.get("from_overlay")}


def broadcast(a: dict, seconds: float, rate: int) -> dict:
    before, tx0 = _prog_times(), vni_counter(H1, VNI, "tx_packets")
    sent = json.loads(_in(a["name"], [sys.executable, "-m", "bench.gen", "send", "--dst-mac", "ff:ff:ff:ff:ff:ff",
                                      "--src-ip", a["ip"], "--dst-ip", str(SUBNET.broadcast_address),
                                      "--seconds", str(seconds), "--rate", str(rate), "--flows", "1"],
                          check=True).stdout)
    time.sleep(0.2)
    ns = {k: round(v, 1) for k, v in ns_per_run(before, _prog_times()).items()}
    return {"frames": sent["packets"], "from_endpoint_ns": ns.get("from_endpoint"),
            "copies_per_frame": round((vni_counter(H1, VNI, "tx_packets") - tx0) / max(1, sent["packets"]), 1)}


def med(rows: list[dict], k: str):
    vals = [r[k] for r in rows if r.get(k) is not None]
    return round(statistics.median(vals), 1) if vals else None


def table(r: dict) -> str:
    m, a = r["machine"], r["args"]
    out = [f"{headline(m)}. Command: `.venv/bin/python -m "
           f"bench.scale --vteps {a['vteps']} --macs {a['macs']} --local {a.get('local', 1)} --rounds {a['rounds']} "
           f"--seconds {a['seconds']} --bcast-rate {a['bcast_rate']}`. Medians of {a['rounds']} alternating rounds "
           "per phase.", "",
           "| VNI 4001 | local endpoints per host | remote MACs | flood list | 64-byte unicast, kpps | from_endpoint ns | "
           "from_overlay ns | broadcast: from_endpoint ns per frame | copies per frame |",
           "|---|---|---|---|---|---|---|---|---|"]
    phases = [("small", "big", 1)] + ([("small_local", "big_local", a["local"])] if "small_local" in r else [])
    for pair in phases:
        for name in pair[:2]:
            s = r[name]
            u, b = s["unicast"], s["broadcast"]
            out.append(f"| {name.split('_')[0]} | {pair[2]} | {s['remote_macs']} | {s['flood']} VTEPs | "
                       f"{med(u, 'pps') / 1000:.0f} | {med(u, 'from_endpoint_ns')} | {med(u, 'from_overlay_ns')} | "
                       f"{med(b, 'from_endpoint_ns')} | {med(b, 'copies_per_frame')} |")
    out.append("")
    for small, big, n in phases:
        ratio = med(r[big]["unicast"], "pps") / med(r[small]["unicast"], "pps")
        out.append(f"Unicast rate big / small at {n} local endpoint(s) per host: {ratio:.2f}x (each round: "
                   + ", ".join(f"{x['pps'] / 1000:.0f}" for x in r[small]["unicast"]) + " small; "
                   + ", ".join(f"{x['pps'] / 1000:.0f}" for x in r[big]["unicast"]) + " big kpps).")
    if len(phases) > 1:
        for name in ("small", "big"):
            ratio = med(r[f"{name}_local"]["unicast"], "pps") / med(r[name]["unicast"], "pps")
            out.append(f"Unicast rate {name} VNI, {a['local']} / 1 local endpoints per host: {ratio:.2f}x.")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/scale", description="the fast path's cost as a VNI grows")
    p.add_argument("--vteps", type=int, default=100, help="VTEPs in the big VNI's flood list (h2 and registry-only hosts)")
    p.add_argument("--macs", type=int, default=10000, help="remote MACs added to the big VNI")
    p.add_argument("--local", type=int, default=1000, help="endpoints per host in the second phase (1: none)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3)
    p.add_argument("--bcast-rate", type=int, default=500, help="broadcast frames/s (the default storm control "
                                                                  "lets 1000/s through)")
    args = p.parse_args(argv)
    if not 2 <= args.vteps <= 150 or not 1 <= args.macs <= 60000 or not 1 <= args.local <= 1024:
        p.error("--vteps 2..150, --macs 1..60000, --local 1..1024")
    res = {"machine": machine(), "args": vars(args)}
    try:
        with bpf_stats():
            log(f"lab: 2 hosts, {args.vteps - 1} registry-only hosts")
            a, b = setup(args.vteps)
            eps = fakes(args.macs, args.vteps)
            base = client.call(H1, "status")["installed"]["fdb"]
            phases = [(1, "")] + ([(args.local, "_local")] if args.local > 1 else [])
            for phase, suffix in phases:
                if suffix:
                    grow(eps, False)                # phase 1 ended big
                    add_locals(args.local)
                    base += args.local - 1          # h2's new endpoints, on h1
                    wait_fdb(H1, base)
                small = {"remote_macs": phase, "flood": 1, "unicast": [], "broadcast": []}
                big = {"remote_macs": phase + args.macs, "flood": args.vteps, "unicast": [], "broadcast": []}
                for r in range(args.rounds):
                    for state, present in ((small, False), (big, True)):
                        grow(eps, present)
                        wait_fdb(H1, base + (args.macs if present else 0))
                        log(f"{phase} local endpoint(s) per host, round {r + 1}: {'big' if present else 'small'}")
                        state["unicast"].append(unicast(a, b, args.seconds))
                        state["broadcast"].append(broadcast(a, args.seconds, args.bcast_rate))
                res["small" + suffix], res["big" + suffix] = small, big
    finally:
        lab.down()
    save(res, table(res), "scale")
    return 0


if __name__ == "__main__":
    sys.exit(main())
