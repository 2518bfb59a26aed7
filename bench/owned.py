"""bench/owned: the registry node's path against the bench labs' learned one, in one run.

    .venv/bin/python -m bench.owned [--rounds 6] [--seconds 3]

The bench labs have no registry, so dataplane's remote MACs are learned and every frame
takes the learned path's lookups (from_endpoint: the static entry's copy, then the learned
destination's; from_overlay: the peer check and learning). A node with a registry has static
entries for them (owned MACs). bench.pps's set-up (the receiving sandbox's eth0 dropping every
IPv4 frame, the C generator unthrottled from the other), dataplane only, taking turns round by
round: learned (no static entries; b relearned at h1 by two pings from b), and owned (static
entries for both MACs, bench/baselines.own). Per turn: frames/s at the sink, whole-machine busy
CPU ns per frame and our programs' ns per run. Writes bench/results/owned.{json,md}."""

from __future__ import annotations

import argparse
import contextlib
import sys

from bench import baselines
from bench.pps import Sink, lab_pairs, run_once
from bench.profile import bpf_stats
from bench.run import headline, ratio_ci, save_samples
from dataplane.core.keys import be32, mac_key
from dataplane.node import Node
from lab import topology as lab
from lab.traffic import ping

MODES = ("learned", "owned")
VNI = 256
ROWS = (("pps", "frames reaching the sink, kpps", 1e-3, ".0f"), ("cpu_ns", "busy CPU per frame, ns", 1, ".0f"),
        ("from_endpoint_ns", "from_endpoint, ns per run", 1, ".0f"),
        ("from_overlay_ns", "from_overlay, ns per run", 1, ".0f"), ("bpf_ns", "both programs, ns per frame", 1, ".0f"))


def learned(a: dict, b: dict) -> None:
    """No static entries for the pair's MACs; h1 learns b's again (h2 learns a's from the first frame)."""
    for host, mac in ((1, b["mac"]), (2, a["mac"])):
        with Node(lab.host_ns(host)).maps() as m:
            m.dp_fdb.delete(mac_key(VNI, mac))
    ping(b["name"], a["ip"], count=2)           # the replies are sunk; the requests teach h1
    with Node(lab.host_ns(1)).maps() as m:
        got = m.dp_learned.get(mac_key(VNI, b["mac"]))
    if got is None or got.vtep != be32(lab.vtep_ip(2)):
        raise RuntimeError(f"h1 did not learn {b['mac']} at {lab.vtep_ip(2)}: the turn would measure flooding")


def table(res: dict) -> str:
    a, med = res["args"], res["median"]
    out = [f"{headline(res['machine'])}. Command: `.venv/bin/python -m bench.owned --rounds {a['rounds']} "
           f"--seconds {a['seconds']:g}`. Medians of {a['rounds']} alternating rounds, the ratio with its 95% "
           "bootstrap interval. 64-byte frames from the C generator, dropped at the receiving sandbox's tc "
           "ingress (bench.pps); learned: remote MACs learned (the bench labs' path); owned: static entries "
           "(a registry node's).", "",
           "| metric | learned | owned | owned / learned |", "|---|---|---|---|"]
    for k, label, scale, fmt in ROWS:
        lo, hi = ratio_ci(res["samples"]["owned"][k], res["samples"]["learned"][k])
        out.append(f"| {label} | {med['learned'][k] * scale:{fmt}} | {med['owned'][k] * scale:{fmt}} | "
                   f"{med['owned'][k] / med['learned'][k]:.2f}x ({lo:.2f}-{hi:.2f}) |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/owned", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=3)
    args = p.parse_args(argv)
    if args.rounds < 2 or args.seconds <= 0:
        p.error("--rounds >= 2, --seconds > 0")
    samples: dict = {m: {} for m in MODES}
    lab.down()
    with contextlib.ExitStack() as stack:
        stack.callback(lab.down)
        stack.enter_context(bpf_stats())
        pairs, macs = lab_pairs()
        a, b = pairs["dataplane"]
        sink = Sink()
        stack.callback(sink.close)
        sink.attach(b["name"], "eth0")
        for r in range(args.rounds):
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                if mode == "owned":
                    baselines.own(a, b, VNI)
                else:
                    learned(a, b)
                got = run_once(sink, a, b, macs["dataplane"], args.seconds, flows=64, dataplane=True)
                for k, v in got.items():
                    samples[mode].setdefault(k, []).append(v)
                print(f"bench/owned: round {r + 1}/{args.rounds} {mode}: {got['pps'] / 1e3:.0f} kpps, "
                      f"{got['bpf_ns']:.0f} ns in our programs", file=sys.stderr, flush=True)
    save_samples(samples, args, table, "owned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
