"""bench/monitor_cost: what the monitor's event code costs when no monitor runs.

    .venv/bin/python -m bench.monitor_cost [--rounds 5] [--seconds 4]

Two lab hosts, the fast path loaded in turn as built (event code in, no
monitor running) and with it compiled out (-DDP_NO_MONITOR), alternating
each round, and in each: single-stream TCP, the 64-byte frame rate with the
C generator, and the machine's CPU ns per received frame; during the frame
rate, the kernel's BPF statistics (kernel.bpf_stats_enabled) give the ns per
run of from_endpoint and from_overlay, the precise figure (throughput on a
2-CPU machine varies by 10% run to run). Writes
bench/results/monitor_cost.{json,md} with the medians and the ratio
(as built / compiled out)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from bench.profile import _prog_times, bpf_stats, per_run
from bench.run import machine, pps64, save, tcp
from dataplane.node import Node, vtep
from lab import topology as lab
from lab.traffic import ping

VARIANTS = {"as built": "", "compiled out": "-DDP_NO_MONITOR"}


def reload(cflags: str) -> None:
    """Both lab hosts' programs built with cflags (-DDP_* flags), reloaded in place; the
    environment's DP_BPF_CFLAGS as it was afterwards."""
    was = os.environ.get("DP_BPF_CFLAGS")
    os.environ["DP_BPF_CFLAGS"] = cflags
    try:
        for i in (1, 2):
            vtep.up(Node(lab.host_ns(i)), [256], quiet=True)
    finally:
        if was is None:
            os.environ.pop("DP_BPF_CFLAGS", None)
        else:
            os.environ["DP_BPF_CFLAGS"] = was


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/monitor_cost")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=4)
    args = p.parse_args(argv)
    lab.down()
    samples = {v: {"tcp_gbps": [], "pps64": [], "cpu_ns_per_pkt": [], "from_endpoint_ns": [],
                   "from_overlay_ns": []} for v in VARIANTS}
    try:
        with bpf_stats():
            lab.up(2, [256], per_host=1, registry="none")
            info = lab.ls()
            a, b = (next(s for s in info["sandboxes"] if s["host"] == f"h{h}") for h in (1, 2))
            for r in range(args.rounds):
                for v in (VARIANTS if r % 2 == 0 else dict(reversed(VARIANTS.items()))):
                    reload(VARIANTS[v])
                    assert ping(a["name"], b["ip"], count=2)[0] == 2
                    t = tcp(a, b, args.seconds)
                    before = _prog_times()
                    pps, cpu = pps64(a, b, max(2, args.seconds // 2))
                    ns = per_run(before, _prog_times())
                    for k, x in (("tcp_gbps", t), ("pps64", pps), ("cpu_ns_per_pkt", cpu),
                                 ("from_endpoint_ns", ns["from_endpoint"]), ("from_overlay_ns", ns["from_overlay"])):
                        samples[v][k].append(x)
                    print(f"round {r + 1}/{args.rounds} {v:12s} TCP {t:5.2f} Gbit/s  64B {pps / 1e3:6.0f} kpps "
                          f"{cpu:5.0f} ns/pkt  from_endpoint {ns['from_endpoint']:.0f} ns/run  "
                          f"from_overlay {ns['from_overlay']:.0f} ns/run", file=sys.stderr, flush=True)
    finally:
        os.environ.pop("DP_BPF_CFLAGS", None)
        lab.down()
    med = {v: {k: statistics.median(x) for k, x in d.items()} for v, d in samples.items()}
    ratio = {k: med["as built"][k] / med["compiled out"][k] for k in med["as built"]}
    result = {"machine": machine(), "args": vars(args), "samples": samples, "median": med, "ratio": ratio}
    m = result["machine"]
    md = (f"Kernel {m.get('kernel')}, {m.get('cpus')} CPUs; {m.get('cpu_model')}; {m.get('date')}. Command: "
          f"`.venv/bin/python -m bench.monitor_cost --rounds {args.rounds} --seconds {args.seconds}`.\n\n"
          "| metric | event code in, no monitor | compiled out | ratio |\n|---|---|---|---|\n")
    for k, unit, scale in (("from_endpoint_ns", "ns/run", 1), ("from_overlay_ns", "ns/run", 1),
                           ("tcp_gbps", "Gbit/s", 1), ("pps64", "kpps", 1e3), ("cpu_ns_per_pkt", "ns", 1)):
        md += (f"| {k} | {med['as built'][k] / scale:.2f} {unit} | {med['compiled out'][k] / scale:.2f} {unit} "
               f"| {ratio[k]:.3f} |\n")
    save(result, md, "monitor_cost")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
