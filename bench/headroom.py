"""bench/headroom: does encapsulation make the kernel reallocate the head of
each packet? This kernel has no kprobes and refuses writes to the function
tracer's filter, so calls cannot be counted: perf samples the whole machine
(`perf record -a -g`) while traffic crosses dataplane at the default 64 KB GSO,
and the samples in pskb_expand_head are attributed to the program whose
bpf_skb_adjust_room led there (from_endpoint: encapsulation; from_overlay:
decapsulation) or to something else.

    .venv/bin/python -m bench.headroom [--seconds 2]

Two lab hosts, no registry, a sandbox each. Workloads from h1's sandbox to h2's:
single-stream TCP (iperf3), UDP from a socket (iperf3 -u, 1400 bytes) and
64-byte frames from the C generator (packet socket). Writes
bench/results/headroom.json and headroom.md.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys

from bench import perfstacks
from bench.run import _in, headline, machine, next_hop_mac, save, vni_counter
from lab import topology as lab

VNI = 256
H1 = lab.host_ns(1)
WHO = ("from_endpoint", "from_overlay", "flood_endpoint")


def log(msg: str) -> None:
    print(f"bench/headroom: {msg}", file=sys.stderr, flush=True)


def sampled(fn, seconds: float) -> tuple[int, collections.Counter]:
    """fn() run while perf samples every CPU for seconds: all samples, and those in
    pskb_expand_head by the program on their call chain."""
    total, hits = 0, collections.Counter()
    for frames in perfstacks.stacks(fn, seconds):
        total += 1
        if perfstacks.symbol(frames[0]) == "pskb_expand_head":
            who = next((w for f in frames for w in WHO if w in f), "other")
            via = "adjust_room" if any(perfstacks.symbol(f) == "bpf_skb_adjust_room" for f in frames) else "elsewhere"
            hits[f"{who} ({via})"] += 1
    return total, hits


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/headroom")
    p.add_argument("--seconds", type=float, default=2)
    args = p.parse_args(argv)
    res = {"machine": machine(), "args": vars(args), "workloads": {}}
    gen = [sys.executable, "-m", "bench.gen"]
    run_for = str(args.seconds + 1.5)
    try:
        lab.down()
        lab.up(2, [VNI], per_host=1, registry="none")
        info = lab.ls()
        a, b = (next(s for s in info["sandboxes"] if s["host"] == f"h{h}") for h in (1, 2))
        srv = subprocess.Popen(["ip", "netns", "exec", b["name"], "iperf3", "-s"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            _in(a["name"], ["ping", "-c", "2", "-i", "0.2", b["ip"]], check=True)
            mac = next_hop_mac(a["name"], b["ip"])
            work = {
                "tcp": ["iperf3", "-c", b["ip"], "-t", run_for],
                "udp_socket_1400": ["iperf3", "-u", "-b", "2G", "-l", "1400", "-c", b["ip"], "-t", run_for],
                "frames_64": [*gen, "send", "--dst-mac", mac, "--src-ip", a["ip"], "--dst-ip", b["ip"],
                              "--seconds", run_for],
            }
            for name, argv in work.items():
                t0 = vni_counter(H1, VNI, "tx_packets")
                total, hits = sampled(lambda argv=argv: _in(a["name"], argv), args.seconds)
                res["workloads"][name] = {"samples": total, "encapsulated": vni_counter(H1, VNI, "tx_packets") - t0,
                                          "pskb_expand_head": dict(hits),
                                          "share_pct": round(100 * sum(hits.values()) / max(1, total), 2)}
                log(f"{name}: {sum(hits.values())} of {total} samples in pskb_expand_head {dict(hits)}")
        finally:
            srv.terminate()
            srv.wait()
    finally:
        lab.down()
    m = res["machine"]
    out = [f"{headline(m)}. Command: `.venv/bin/python -m "
           f"bench.headroom --seconds {args.seconds}`: `perf record -a -g` for {args.seconds} s of each workload.", "",
           "| workload (h1's sandbox to h2's) | samples (whole machine) | in pskb_expand_head | share | by whom |",
           "|---|---|---|---|---|"]
    for name, w in res["workloads"].items():
        by = ", ".join(f"{k}: {v}" for k, v in sorted(w["pskb_expand_head"].items())) or "-"
        out.append(f"| {name} | {w['samples']} | {sum(w['pskb_expand_head'].values())} | {w['share_pct']}% | {by} |")
    save(res, "\n".join(out) + "\n", "headroom")
    return 0


if __name__ == "__main__":
    sys.exit(main())
