"""bench/rate_cost: what a program run costs as the offered rate falls.

    .venv/bin/python -m bench.rate_cost [--rounds 3] [--owned]

The metrics and `dataplane status` show the programs' ns per run from the kernel's BPF
statistics; bench/ quotes the figure at hundreds of kpps. This measures it where most nodes
live: ICMP echo between two lab sandboxes at 1 to 500 requests a second (ping's interval),
and the 64-byte generator's full rate for contrast. Per rate and round: each program's ns
per run over the interval (both hosts' copies summed: h1's from_endpoint takes the requests,
h2's the replies), and ping's average round trip through routing, the kernel's vxlan device
and dataplane in turn (bench/baselines.py's lab). The lab has no registry, so dataplane's
remote MACs are learned; --owned gives both static entries, as a registry node has them.
Writes bench/results/rate_cost.{json,md}, with --owned rate_cost-owned.* (medians of the
rounds)."""

from __future__ import annotations

import argparse
import statistics
import sys

from bench import baselines
from bench.profile import _prog_times, bpf_stats, per_run
from bench.run import headline, machine, pps64, save
from lab import topology as lab
from lab.traffic import ping

INTERVALS = (1.0, 0.2, 0.05, 0.01, 0.002)     # ping -i, seconds
SECONDS = 4                                   # each rate's run
PROGRAMS = ("from_endpoint", "from_overlay")


def label(interval: float | None) -> str:
    return "64-byte generator, full rate" if interval is None else f"{1 / interval:.0f} echo requests/s"


def table(res: dict) -> str:
    md = (f"{headline(res['machine'])}. Command: "
          f"`.venv/bin/python -m bench.rate_cost --rounds {res['args']['rounds']}"
          f"{' --owned' if res['args'].get('owned') else ''}`. Medians of the rounds; ns "
          "per run from the kernel's BPF statistics (both hosts' copies), round trip from ping.\n\n"
          "| offered | from_endpoint, ns per run | from_overlay, ns per run | round trip avg, us: "
          + ", ".join(baselines.MODES) + " |\n|---|---|---|---|\n")
    for row in res["median"]:
        rtt = ", ".join("-" if row.get(f"rtt_{m}") is None else f"{row[f'rtt_{m}']:.0f}" for m in baselines.MODES)
        md += f"| {row['offered']} | {row['from_endpoint']:.0f} | {row['from_overlay']:.0f} | {rtt} |\n"
    return md


def rtt_us(a: dict, b: dict, interval: float) -> float | None:
    """ping's average round trip, a to b, SECONDS of echo requests every `interval` seconds."""
    _, avg = ping(a["name"], b["ip"], count=max(4, int(SECONDS / interval)), interval=interval)
    return float(avg.split()[2]) * 1000 if avg.startswith("rtt avg") else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/rate_cost")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--owned", action="store_true",
                   help="static entries for dataplane's two MACs (a registry node's path) instead of learned ones")
    args = p.parse_args(argv)
    lab.down()
    samples: dict[str, list[dict]] = {label(i): [] for i in (*INTERVALS, None)}
    try:
        with bpf_stats():
            pairs = baselines.up()
            for a, b in pairs.values():
                assert ping(a["name"], b["ip"], count=2)[0] == 2
            a, b = pairs["dataplane"]
            if args.owned:
                baselines.own(a, b)
            for r in range(args.rounds):
                for interval in (*INTERVALS, None):
                    rtt = {f"rtt_{m}": None for m in baselines.MODES}
                    for m in baselines.MODES if interval is not None else ():
                        if m != "dataplane":
                            rtt[f"rtt_{m}"] = rtt_us(*pairs[m], interval)
                    before = _prog_times()              # only dataplane's runs our programs
                    if interval is None:
                        pps64(a, b, SECONDS)
                    else:
                        rtt["rtt_dataplane"] = rtt_us(a, b, interval)
                    ns = per_run(before, _prog_times())
                    samples[label(interval)].append({**{k: ns[k] for k in PROGRAMS}, **rtt})
                    print(f"round {r + 1}/{args.rounds} {label(interval):30s} from_endpoint "
                          f"{ns['from_endpoint']:6.0f} ns  from_overlay {ns['from_overlay']:6.0f} ns  rtt "
                          + " ".join(f"{m} {rtt[f'rtt_{m}'] or 0:.0f}" for m in baselines.MODES) + " us",
                          file=sys.stderr, flush=True)
    finally:
        lab.down()
    fields = (*PROGRAMS, *(f"rtt_{m}" for m in baselines.MODES))
    med = [{"offered": k, **{f: (statistics.median(x) if None not in (x := [s[f] for s in v]) else None)
                             for f in fields}} for k, v in samples.items()]
    res = {"machine": machine(), "args": vars(args), "samples": samples, "median": med}
    save(res, table(res), "rate_cost-owned" if args.owned else "rate_cost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
