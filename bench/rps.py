"""bench/rps: does steering a sandbox's sending port to one CPU per flow (RPS) pay?

    .venv/bin/python -m bench.rps [--rounds N] [--seconds S] [--paced-gbps G]

Single-stream TCP reorders on every path here: the sender transmits from both CPUs (the
process, and softirq as ACKs arrive), each into its own CPU's veth backlog, so segments
overtake each other and every retransmission is spurious (docs/BENCHMARKS.md, "Reordering,
not loss"). RPS on the host side of the sending sandbox's veth (rps_cpus: both CPUs) queues
a flow's frames to one CPU whichever CPU sent them. This runs plain routing and dataplane
(64 KB GSO, the lab of bench.run) with RPS off and on at that port, the four variants
taking turns, and reports single-stream Gbit/s, the sender's TCPSACKReorder per run and
whole-machine CPU per Gbit at a paced rate. Writes bench/results/rps.{json,md}."""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from bench import baselines
from bench.run import cpu_per_gbit, headline, machine, ratio_ci, ratio_rows, save, tcp
from dataplane.kernel import gso as linkgso
from dataplane.node import Node
from lab import topology as lab
from lab.traffic import nstat

VARIANTS = ("routing", "routing+rps", "dataplane", "dataplane+rps")


def reorders(ns: str) -> int:
    return nstat(ns, "TcpExtTCPSACKReorder")


def cpumask(n: int) -> str:
    """All of n CPUs as rps_cpus takes them: hex, 32 bits a group, comma-separated."""
    h = format((1 << n) - 1, "x")
    return ",".join(h[max(0, i - 8):i] for i in range(len(h), 0, -8)[::-1])


def set_rps(port: str, on: bool) -> None:
    mask = cpumask(os.cpu_count() or 1) if on else "0"
    lab.run_checked(["ip", "netns", "exec", lab.host_ns(1), "sh", "-c",
                     f"echo {mask} > /sys/class/net/{port}/queues/rx-0/rps_cpus"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/rps")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=int, default=4)
    p.add_argument("--paced-gbps", type=float, default=4.0)
    p.add_argument("--out", default="rps")
    args = p.parse_args(argv)
    keys = ("tcp_gbps", "reorders", "cpu_ms_per_gbit")
    samples = {v: {k: [] for k in keys} for v in VARIANTS}
    lab.down()
    try:
        pairs = baselines.up(linkgso.LEGACY_MAX)
        ports = {"routing": "rv0", "dataplane": next(iter(Node(lab.host_ns(1)).state().endpoints.values())).host_ifname}
        for r in range(args.rounds):
            for v in (VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))):
                mode = v.split("+")[0]
                set_rps(ports[mode], v.endswith("+rps"))
                a, b = pairs[mode]
                r0 = reorders(a["name"])
                samples[v]["tcp_gbps"].append(tcp(a, b, args.seconds))
                samples[v]["reorders"].append(reorders(a["name"]) - r0)
                samples[v]["cpu_ms_per_gbit"].append(cpu_per_gbit(a, b, args.seconds, args.paced_gbps))
                print(f"round {r + 1}/{args.rounds} {v:14s} " + ", ".join(f"{k} {samples[v][k][-1]:.1f}" for k in keys),
                      file=sys.stderr, flush=True)
                set_rps(ports[mode], False)
    finally:
        lab.down()
    med = {v: {k: statistics.median(x) for k, x in d.items()} for v, d in samples.items()}
    ratios = {f"{x} / {y}, {k}": (med[x][k] / med[y][k], ratio_ci(samples[x][k], samples[y][k]))
              for x, y in (("dataplane+rps", "dataplane"), ("routing+rps", "routing"),
                           ("dataplane", "routing"), ("dataplane+rps", "routing"))
              for k in ("tcp_gbps", "cpu_ms_per_gbit")}
    result = {"machine": machine(), "args": vars(args), "samples": samples, "median": med,
              "ratios": {k: {"median": v[0], "ci95": v[1]} for k, v in ratios.items()}}
    md = [f"{headline(result['machine'])}. Command: `.venv/bin/python -m bench.rps --rounds {args.rounds} "
          f"--seconds {args.seconds} --paced-gbps {args.paced_gbps}`. bench.run's lab (veth + bridge underlays, "
          f"IPv4 GSO limit 65536); RPS over all CPUs on the sending sandbox's host-side port, or not; medians of "
          f"{args.rounds} runs per variant, the variants taking turns.", "",
          "| variant | single-stream TCP, Gbit/s | sender's TCPSACKReorder per run | CPU per paced Gbit, ms |",
          "|---|---|---|---|"]
    md += [f"| {v} | {med[v]['tcp_gbps']:.2f} | {med[v]['reorders']:.0f} | {med[v]['cpu_ms_per_gbit']:.1f} |"
           for v in VARIANTS]
    md += ratio_rows(ratios)
    save(result, "\n".join(md) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
