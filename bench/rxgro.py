"""bench/rxgro: what receive GRO (node/rxgro.py) is worth between hosts with NICs.

    .venv/bin/python -m bench.rxgro [--rounds N] [--repeats R] [--seconds S]

One lab whose underlay links behave as NICs (lab/nic.py: at most an MTU per frame on the
wire, GRO at each host's uplink), in four modes taking turns run by run: plain routing, the
kernel vxlan device + bridge, dataplane as built, and dataplane with its receive-GRO device
removed from both hosts (as every version before it ran). Per run: single-stream TCP
(iperf3, 64 KB GSO) and the average size of what the receiving sandbox's eth0 took in (an
MTU's worth: nothing merged). Writes bench/results/rxgro.{json,md} (--out NAME: NAME.*)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from bench import baselines
from bench.run import headline, machine, ratio_ci, ratio_rows, save, tcp
from dataplane.kernel import gso as linkgso, loader
from dataplane.node import Node, rxgro
from lab import topology as lab
from lab.traffic import rx_counts

MODES = ("routing", "vxlan", "dataplane", "no_rx_gro")
NAMES = {"routing": "routing (no overlay)", "vxlan": "kernel vxlan + bridge", "dataplane": "dataplane",
         "no_rx_gro": "dataplane without receive GRO"}


def _gro(on: bool) -> None:
    for h in (1, 2):
        node = Node(lab.host_ns(h))
        if not on:
            rxgro.remove(node)
            continue
        fd = loader.open_prog(node.pin_dir, "gro_sink")
        try:
            st = node.require_up()
            rxgro.ensure(node, st, fd)
            if st.rx_gro != rxgro.ON:
                raise RuntimeError(f"{node.name}: receive GRO {st.rx_gro}")
        finally:
            os.close(fd)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/rxgro")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2, help="single-stream runs per mode and round")
    p.add_argument("--seconds", type=int, default=4)
    p.add_argument("--out", default="rxgro")
    args = p.parse_args(argv)
    samples = {m: {"tcp_gbps": [], "rx_avg_bytes": []} for m in MODES}
    lab.down()
    try:
        pairs = baselines.up(linkgso.LEGACY_MAX, nic_like=True)
        pairs["no_rx_gro"] = pairs["dataplane"]
        gro_on = True
        for r in range(args.rounds):
            for _ in range(args.repeats):
                for mode in (MODES if r % 2 == 0 else tuple(reversed(MODES))):
                    if mode in ("dataplane", "no_rx_gro") and gro_on != (mode == "dataplane"):
                        gro_on = mode == "dataplane"
                        _gro(gro_on)
                    a, b = pairs[mode]
                    n0, b0 = rx_counts(b["name"], "eth0")
                    g = tcp(a, b, args.seconds)
                    n1, b1 = rx_counts(b["name"], "eth0")
                    samples[mode]["tcp_gbps"].append(g)
                    samples[mode]["rx_avg_bytes"].append((b1 - b0) / max(n1 - n0, 1))
                    print(f"round {r + 1}/{args.rounds} {mode:10s} {g:6.2f} Gbit/s, received "
                          f"{samples[mode]['rx_avg_bytes'][-1]:7.0f} B per packet", file=sys.stderr, flush=True)
    finally:
        lab.down()
    med = {m: {k: statistics.median(v) for k, v in d.items()} for m, d in samples.items()}
    t = {m: samples[m]["tcp_gbps"] for m in MODES}
    ratios = {f"{x}/{y}": (med[x]["tcp_gbps"] / med[y]["tcp_gbps"], ratio_ci(t[x], t[y]))
              for x, y in (("dataplane", "vxlan"), ("dataplane", "routing"), ("no_rx_gro", "vxlan"),
                           ("no_rx_gro", "routing"), ("dataplane", "no_rx_gro"))}
    result = {"machine": machine(), "args": vars(args), "samples": samples, "median": med,
              "ratios": {k: {"median": v[0], "ci95": v[1]} for k, v in ratios.items()}}
    n = args.rounds * args.repeats
    md = [f"{headline(result['machine'])}. Command: `.venv/bin/python -m bench.rxgro --rounds {args.rounds} "
          f"--repeats {args.repeats} --seconds {args.seconds}`. Underlay links that behave as NICs (lab/nic.py), "
          f"IPv4 GSO limit 65536 in every mode; medians of {n} single-stream runs per mode, modes taking turns.", "",
          "| mode | single-stream TCP, Gbit/s | received per packet, bytes |", "|---|---|---|"]
    md += [f"| {NAMES[m]} | {med[m]['tcp_gbps']:.2f} | {med[m]['rx_avg_bytes']:.0f} |" for m in MODES]
    md += ratio_rows(ratios, "ratio (single-stream TCP)")
    save(result, "\n".join(md) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
