"""bench/run: dataplane against the kernel's vxlan device + bridge and against
plain routing, in one lab and one run, modes alternating round by round.

    make bench            # or: .venv/bin/python -m bench.run [--rounds N] [--seconds S]

Writes bench/results/latest.json and latest.md (medians and ratios, with the
machine and kernel they came from)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from bench import baselines
from dataplane import lab
from dataplane.traffic import iperf, ping

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) // 1024 // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": cpu, "mem_gib": mem,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def tcp(a: dict, b: dict, seconds: int, streams: int = 1) -> float:
    res = iperf(b["name"], a["name"], b["ip"], ["-t", str(seconds), "-P", str(streams)])
    return res["end"]["sum_received"]["bits_per_second"] / 1e9


def udp64(a: dict, b: dict, seconds: int) -> float:
    """Packets/s received of 64-byte frames (18-byte UDP payload), sender unthrottled."""
    res = iperf(b["name"], a["name"], b["ip"], ["-u", "-b", "0", "-l", "18", "-t", str(seconds)])
    s = res["end"]["sum"]
    return (s["packets"] - s["lost_packets"]) / s["seconds"]


def rtt_us(a: dict, b: dict) -> float:
    r = subprocess.run(["ip", "netns", "exec", a["name"], "ping", "-c", "200", "-i", "0.005", "-q", b["ip"]],
                       capture_output=True, text=True)
    avg = r.stdout.rsplit("=", 1)[-1].split("/")[1]
    return float(avg) * 1000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5, help="length of each TCP run")
    p.add_argument("--xdp-guard", action="store_true", help="attach the XDP guard on dataplane uplinks")
    args = p.parse_args(argv)

    lab.down()
    samples: dict[str, dict[str, list[float]]] = {m: {"tcp_gbps": [], "udp64_pps": [], "rtt_us": []}
                                                  for m in baselines.MODES}
    try:
        lab.up(2, [256], per_host=1, xdp_guard=args.xdp_guard, registry="none")  # data path only
        info = lab.ls()
        pairs = baselines.setup(2)
        pairs["dataplane"] = [next(s for s in info["sandboxes"] if s["host"] == f"h{h}") for h in (1, 2)]
        for mode, (a, b) in pairs.items():
            assert ping(a["name"], b["ip"], count=2)[0] == 2, f"{mode}: no connectivity"
        for r in range(args.rounds):
            order = baselines.MODES if r % 2 == 0 else tuple(reversed(baselines.MODES))
            for mode in order:
                a, b = pairs[mode]
                t = tcp(a, b, args.seconds)
                u = udp64(a, b, max(2, args.seconds // 2))
                l = rtt_us(a, b)
                for k, v in (("tcp_gbps", t), ("udp64_pps", u), ("rtt_us", l)):
                    samples[mode][k].append(v)
                print(f"round {r + 1}/{args.rounds} {mode:9s} TCP {t:6.2f} Gbit/s  UDP-64 {u / 1e3:7.1f} kpps  "
                      f"RTT {l:6.1f} us", file=sys.stderr, flush=True)
    finally:
        lab.down()

    med = {m: {k: statistics.median(v) for k, v in d.items()} for m, d in samples.items()}
    ours = med["dataplane"]
    ratios = {f"vs_{m}": {k: ours[k] / med[m][k] for k in ours} for m in ("vxlan", "routing")}
    result = {"machine": machine(), "args": vars(args), "samples": samples, "median": med, "ratios": ratios}
    save(result, table(result), "latest")
    return 0


def save(result: dict, md: str, name: str) -> None:
    """bench/results/<name>.json and <name>.md, and the table on stdout."""
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(OUT, f"{name}.md"), "w") as f:
        f.write(md)
    print(md)


def table(res: dict) -> str:
    m, med, rat = res["machine"], res["median"], res["ratios"]
    rows = [("single-stream TCP, Gbit/s", "tcp_gbps", "{:.2f}"), ("64-byte UDP, kpps received", "udp64_pps", "{:.0f}"),
            ("ping RTT avg, us (lower is better)", "rtt_us", "{:.1f}")]
    out = [f"Kernel {m['kernel']}, {m['cpus']} CPUs ({m['cpu_model']}), {m['mem_gib']} GiB; {m['date']}; "
           f"medians of {res['args']['rounds']} alternating rounds; 2 hosts as namespaces on veth + bridge underlays.", "",
           "| metric | routing (no overlay) | kernel vxlan + bridge | dataplane | dataplane / vxlan | dataplane / routing |",
           "|---|---|---|---|---|---|"]
    for name, k, fmt in rows:
        scale = 1e-3 if k == "udp64_pps" else 1
        vals = [fmt.format(med[x][k] * scale) for x in ("routing", "vxlan", "dataplane")]
        out.append(f"| {name} | {' | '.join(vals)} | {rat['vs_vxlan'][k]:.2f}x | {rat['vs_routing'][k]:.2f}x |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
