"""bench/run: dataplane against the kernel's vxlan device + bridge and against
plain routing, in one lab and one run, modes alternating round by round.

    ./run bench           # or: .venv/bin/python -m bench.run [--rounds N] [--seconds S]

Figures per mode: single-stream TCP (iperf3; --tcp-repeats runs per round,
the modes taking turns run by run), 4-stream TCP, 64-byte packet rate
with the C generator (csrc/gen.c: AF_PACKET sendmmsg in one sandbox, a
counter in the other), whole-machine CPU time per packet during that run,
latency p50/p99 (sockperf ping-pong, round trip; once where the scheduler puts
the two ends and once with both on CPU 0: on this guest a wake-up on the other
CPU is most of a round trip and lands in one of two modes, so the first row
reads the hypervisor as much as the path), and whole-machine CPU time
per Gbit with TCP paced at --paced-gbps (a load every mode sustains; --paced-repeats
runs per round, the modes taking turns: one run swings by 10-15% here). CPU
time is wall time x CPUs less the idle time of /proc/uptime, which the kernel
counts at idle entry and exit: /proc/stat's tick samples alias with a paced
sender (the same mode read 12 and 240 CPU-ms per Gbit in consecutive runs).

Writes bench/results/latest.json (every sample), latest.md (medians, and
ratios with a 95% bootstrap interval, with the machine, kernel and TCP
congestion control they came from) and latest.png
(needs matplotlib: the `bench` extra); --out NAME writes NAME.* instead."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

from bench import baselines
from lab import topology as lab
from dataplane.kernel import gso as linkgso
from dataplane.node import Node, readout
from lab.traffic import iperf, iperf_processes, ping
from lab.unwind import unwind_on_sigterm

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) // 1024 // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
        cc = f.read().strip()  # new namespaces start with the host's: it is every sandbox's default
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": cpu, "mem_gib": mem,
            "tcp_cc_default": cc, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def headline(m: dict) -> str:
    """A result's first words: the machine() it ran on and when."""
    return f"Kernel {m['kernel']}, {m['cpus']} CPUs ({m['cpu_model']}); {m['date']}"


def _aff(affinity: str | None) -> list[str]:
    """iperf3's -A client,server: both ends on CPUs of the caller's choosing."""
    return ["-A", affinity] if affinity else []


def tcp(a: dict, b: dict, seconds: int, streams: int = 1, affinity: str | None = None) -> float:
    """Gbit/s of `streams` flows from a to b, one iperf3 process each, with the sandboxes' default
    congestion control (baselines.congestion_control; not iperf3's -C, which measured neither)."""
    args = ["-t", str(seconds), *_aff(affinity)]
    runs = iperf_processes(b["name"], a["name"], b["ip"], streams, args)
    return sum(r["end"]["sum_received"]["bits_per_second"] for r in runs) / 1e9


def _in(ns: str, argv: list[str], **kw):
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, **kw)


def vni_counter(ns: str, vni: int, name: str) -> int:
    """One of a VNI's counters on the node in ns (readout.stats: summed over CPUs), 0 if it has none."""
    return next((r.get(name, 0) for r in readout.stats(Node(ns)) if r.get("vni") == vni), 0)


def next_hop_mac(ns: str, ip: str) -> str:
    """The MAC a frame from ns toward ip is addressed to (its gateway's or its own)."""
    route = json.loads(_in(ns, ["ip", "-j", "route", "get", ip]).stdout)[0]
    via = route.get("gateway", ip)
    for n in json.loads(_in(ns, ["ip", "-j", "neigh", "show", via]).stdout):
        if n.get("lladdr"):
            return n["lladdr"]
    raise RuntimeError(f"{ns}: no neighbour entry for {via}")


def _idle_s() -> float:
    """All CPUs' idle time so far, s (/proc/uptime's second field: counted at idle entry and
    exit, not sampled by the tick, which a paced sender aliases with)."""
    with open("/proc/uptime") as f:
        return float(f.read().split()[1])


class Busy:
    """Busy CPU time over a block, ns: wall time x CPUs less idle time."""

    def __enter__(self):
        self.t0, self.i0 = time.monotonic(), _idle_s()
        return self

    def __exit__(self, *exc):
        self.ns = max(0.0, (time.monotonic() - self.t0) * os.cpu_count() - (_idle_s() - self.i0)) * 1e9


def cpu_per_gbit(a: dict, b: dict, seconds: int, rate_gbps: float, affinity: str | None = None) -> float:
    """Busy CPU ms of the whole machine per Gbit delivered, TCP paced at rate_gbps (a load
    every mode sustains, so the modes do the same work and only its cost differs)."""
    with Busy() as busy:
        res = iperf(b["name"], a["name"], b["ip"], ["-t", str(seconds), "-b", f"{rate_gbps}G", *_aff(affinity)])
    gbit = res["end"]["sum_received"]["bytes"] * 8 / 1e9
    return busy.ns / 1e6 / max(gbit, 1e-9)


def pps64(a: dict, b: dict, seconds: float) -> tuple[float, float]:
    """64-byte frames/s received in b from the C generator in a, unthrottled,
    and the whole machine's CPU ns per received frame meanwhile."""
    gen = [sys.executable, "-m", "bench.gen"]
    counter = subprocess.Popen(["ip", "netns", "exec", b["name"], *gen, "count", "--seconds", str(seconds + 1.5)],
                               stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    with Busy() as busy:
        sent = json.loads(_in(a["name"], [*gen, "send", "--dst-mac", next_hop_mac(a["name"], b["ip"]),
                                          "--src-ip", a["ip"], "--dst-ip", b["ip"], "--seconds", str(seconds)],
                              check=True).stdout)
    busy_ns = busy.ns
    got = json.loads(counter.communicate(timeout=seconds + 10)[0])
    return got["packets"] / sent["seconds"], busy_ns / max(1, got["packets"])


def latency_us(a: dict, b: dict, seconds: int = 3, cpu: int | None = None) -> tuple[float, float]:
    """Round-trip p50 and p99 of 64-byte UDP ping-pong (sockperf --full-rtt); cpu: both ends
    on that CPU (taskset), else where the scheduler puts them."""
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    srv = subprocess.Popen(["ip", "netns", "exec", b["name"], *pin, "sockperf", "sr", "-i", b["ip"], "-p", "11111"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = _in(a["name"], [*pin, "sockperf", "pp", "-i", b["ip"], "-p", "11111", "-t", str(seconds), "-m", "64",
                              "--full-rtt"]).stdout
    finally:
        srv.terminate()
        srv.wait()
    pct = {}
    for line in out.splitlines():
        if "---> percentile" in line:
            _, rest = line.split("percentile", 1)
            k, v = rest.split("=")
            pct[float(k)] = float(v)
    return pct[50.0], pct[99.0]


def turns(order: tuple[str, ...], n: int, run) -> dict[str, list[float]]:
    """n runs of run(mode) per mode, the modes taking turns run by run (order, then reversed)."""
    out: dict[str, list[float]] = {m: [] for m in order}
    for i in range(n):
        for mode in (order if i % 2 == 0 else tuple(reversed(order))):
            out[mode].append(run(mode))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/run")
    p.add_argument("--rounds", type=int, default=9,
                   help="rounds; every mode runs each workload in each round")
    p.add_argument("--seconds", type=int, default=4, help="length of each TCP run")
    p.add_argument("--tcp-repeats", type=int, default=3,
                   help="single-stream TCP runs per mode and round, the modes taking turns run by run: "
                        "the noisiest figure gets the most samples")
    p.add_argument("--cc", help="every sandbox's default TCP congestion control (default: the kernel's; the "
                   "ratios depend on it: BBR paces, cubic does not)")
    p.add_argument("--paced-gbps", type=float, default=4.0,
                   help="TCP rate for the CPU-per-Gbit row, one every mode sustains (default: %(default)s)")
    p.add_argument("--paced-repeats", type=int, default=3,
                   help="paced runs per mode and round for the CPU-per-Gbit row, the modes taking turns run by "
                        "run: a paced run's busy time swings by 10-15%% from run to run here")
    p.add_argument("--affinity", metavar="C,S",
                   help="CPUs for the iperf3 client and server in every TCP run of every mode (iperf3 -A C,S): "
                        "takes the scheduler's placement of sender and receiver, which makes routing's "
                        "single-stream runs bimodal here, out of the TCP rows")
    p.add_argument("--out", default="latest", help="results name: bench/results/NAME.{json,md,png}")
    p.add_argument("--xdp-guard", action="store_true", help="attach the XDP guard on dataplane uplinks")
    p.add_argument("--gso-max-size", type=int, default=linkgso.BIG_TCP_SIZE,
                   help="IPv4 GSO limit (BIG TCP above 65536) of the routing and dataplane paths; the kernel "
                        "vxlan path stays at 65536, the most it carries")
    p.add_argument("--nic-like", action="store_true",
                   help="underlay links that behave as NICs in every mode (lab/nic.py): frames at most an MTU "
                        "on the wire and GRO at each host's uplink, as between real hosts")
    args = p.parse_args(argv)
    if min(args.rounds, args.seconds, args.tcp_repeats, args.paced_repeats) < 1:
        p.error("--rounds, --seconds, --tcp-repeats and --paced-repeats must be at least 1")

    unwind_on_sigterm()      # the host's congestion control list is restored
    lab.down()
    samples: dict[str, dict[str, list[float]]] = {m: {k: [] for k, *_ in METRICS} for m in baselines.MODES}
    try:
        pairs = baselines.up(args.gso_max_size, args.nic_like, args.xdp_guard)
        for mode, (a, b) in pairs.items():
            assert ping(a["name"], b["ip"], count=2)[0] == 2, f"{mode}: no connectivity"
        with baselines.congestion_control(pairs, args.cc):
            rounds(args, pairs, samples)
    finally:
        lab.down()
    report(args, samples)
    return 0


def rounds(args, pairs: dict, samples: dict) -> None:
    """Every workload of every mode, args.rounds times, the modes taking turns."""
    for r in range(args.rounds):
        order = baselines.MODES if r % 2 == 0 else tuple(reversed(baselines.MODES))
        single = turns(order, args.tcp_repeats,
                       lambda m: tcp(*pairs[m], args.seconds, affinity=args.affinity))
        got: dict[str, dict[str, float]] = {}
        for mode in order:
            a, b = pairs[mode]
            g = got[mode] = {"tcp4_gbps": tcp(a, b, args.seconds, streams=4, affinity=args.affinity)}
            g["pps64"], g["cpu_ns_per_pkt"] = pps64(a, b, max(2, args.seconds // 2))
            g["lat_p50_us"], g["lat_p99_us"] = latency_us(a, b)
            g["lat1_p50_us"], g["lat1_p99_us"] = latency_us(a, b, cpu=0)
        paced = turns(order, args.paced_repeats,
                      lambda m: cpu_per_gbit(*pairs[m], args.seconds, args.paced_gbps, args.affinity))
        for mode in order:
            g = got[mode]
            samples[mode]["tcp_gbps"].extend(single[mode])
            samples[mode]["cpu_ms_per_gbit"].extend(paced[mode])
            for k, v in g.items():
                samples[mode][k].append(v)
            print(f"round {r + 1}/{args.rounds} {mode:9s} TCP {'/'.join(f'{x:.2f}' for x in single[mode])} "
                  f"(1 stream) {g['tcp4_gbps']:5.2f} (4) Gbit/s  64B {g['pps64'] / 1e3:6.0f} kpps "
                  f"{g['cpu_ns_per_pkt']:5.0f} ns/pkt  RTT p50/p99 {g['lat_p50_us']:.1f}/{g['lat_p99_us']:.1f} us "
                  f"(one CPU {g['lat1_p50_us']:.1f}/{g['lat1_p99_us']:.1f})  "
                  f"{'/'.join(f'{x:.1f}' for x in paced[mode])} CPU-ms/Gbit at {args.paced_gbps:g} Gbit/s",
                  file=sys.stderr, flush=True)


def report(args, samples: dict) -> None:
    med = {m: {k: statistics.median(v) for k, v in d.items()} for m, d in samples.items()}
    ours = med["dataplane"]
    ratios = {f"vs_{m}": {k: ours[k] / med[m][k] for k in ours} for m in ("vxlan", "routing")}
    ci = {f"vs_{m}": {k: ratio_ci(samples["dataplane"][k], samples[m][k]) for k in ours} for m in ("vxlan", "routing")}
    result = {"machine": machine(), "args": vars(args), "samples": samples, "median": med, "ratios": ratios,
              "ratio_ci95": ci, "cc_how": "every sandbox's default" if args.cc else None}
    save(result, table(result), args.out)
    chart(result, args.out)


def ratio_ci(ours: list[float], theirs: list[float], n: int = 4000, seed: int = 1) -> tuple[float, float]:
    """95% interval of median(ours) / median(theirs), by bootstrap: both sample
    sets resampled with replacement n times (a fixed seed, so a result file
    always gives the same interval)."""
    rng = random.Random(seed)
    r = sorted(statistics.median(rng.choices(ours, k=len(ours))) /
               statistics.median(rng.choices(theirs, k=len(theirs))) for _ in range(n))
    return r[int(0.025 * n)], r[int(0.975 * n) - 1]


def ratio_rows(ratios: dict, label: str = "ratio") -> list[str]:
    """A markdown table of {name: (median, (lo, hi))}: each ratio with its 95% interval."""
    return ["", f"| {label} | median | 95% interval |", "|---|---|---|"] + \
        [f"| {k} | {v[0]:.2f}x | {v[1][0]:.2f}-{v[1][1]:.2f} |" for k, v in ratios.items()]


def save(result: dict, md: str, name: str) -> None:
    """bench/results/<name>.json and <name>.md, and the table on stdout."""
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(OUT, f"{name}.md"), "w") as f:
        f.write(md)
    print(md)


def save_samples(samples: dict, args, table, name: str) -> None:
    """Each mode's samples with their medians, the machine and the arguments, saved as name
    with table(result) as its markdown."""
    med = {m: {k: statistics.median(v) for k, v in d.items()} for m, d in samples.items()}
    res = {"machine": machine(), "args": vars(args), "samples": samples, "median": med}
    save(res, table(res), name)


METRICS = [  # key, label, format, scale for the table
    ("tcp_gbps", "single-stream TCP, Gbit/s", "{:.2f}", 1),
    ("tcp4_gbps", "4-stream TCP (4 iperf3 processes), Gbit/s", "{:.2f}", 1),
    ("pps64", "64-byte packets, kpps received (C generator)", "{:.0f}", 1e-3),
    ("cpu_ns_per_pkt", "CPU per 64-byte packet, ns, whole machine (lower is better)", "{:.0f}", 1),
    ("cpu_ms_per_gbit", "CPU per Gbit, TCP paced at a fixed rate, ms, whole machine (lower is better)",
     "{:.1f}", 1),
    ("lat_p50_us", "UDP round trip p50, us (lower is better)", "{:.1f}", 1),
    ("lat_p99_us", "UDP round trip p99, us (lower is better)", "{:.1f}", 1),
    ("lat1_p50_us", "UDP round trip p50 with both ends on one CPU, us (lower is better)", "{:.1f}", 1),
    ("lat1_p99_us", "UDP round trip p99 with both ends on one CPU, us (lower is better)", "{:.1f}", 1),
]


def present(med: dict) -> list[tuple]:
    """The METRICS rows a result has (a result file from before a row lacks it)."""
    return [row for row in METRICS if row[0] in med["dataplane"]]


def chart(res: dict, name: str) -> None:
    """One bar group per metric, normalised to the kernel vxlan device."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib missing (pip install -e .[bench]); no chart", file=sys.stderr)
        return
    med = res["median"]
    rows = [(k, lbl.split(",")[0].replace(" with both ends", ",")) for k, lbl, *_ in present(med)]
    keys = [k for k, _ in rows]
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.27
    for i, mode in enumerate(("routing", "vxlan", "dataplane")):
        vals = [med[mode][k] / med["vxlan"][k] for k in keys]
        ax.bar([x + (i - 1) * width for x in range(len(keys))], vals, width, label=mode)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(keys)), [lbl for _, lbl in rows], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("relative to kernel vxlan + bridge")
    m = res["machine"]
    ax.set_title(f"dataplane vs kernel vxlan vs routing: kernel {m['kernel']}, {m['cpus']} CPUs, {m['date']}",
                 fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, f"{name}.png"), dpi=110)
    plt.close(fig)


def _gso_note(size: int) -> str:
    if size <= linkgso.LEGACY_MAX:
        return "IPv4 GSO limit 65536 (no BIG TCP) in every mode"
    return f"IPv4 GSO limit {size} (BIG TCP) for routing and dataplane, 65536 for vxlan (the most it carries)"


def table(res: dict) -> str:
    m, med, rat, ci = res["machine"], res["median"], res["ratios"], res.get("ratio_ci95")
    reps, paced = res["args"].get("tcp_repeats", 1), res["args"].get("paced_repeats", 1)
    out = [f"Kernel {m['kernel']}, {m['cpus']} CPUs ({m['cpu_model']}), {m['mem_gib']} GiB; {m['date']}; "
           f"medians of {res['args']['rounds']} alternating rounds ({reps} single-stream TCP runs and {paced} paced runs "
           f"per mode and round); "
           f"ratios with their 95% bootstrap interval; 2 hosts as namespaces on veth + bridge underlays"
           + (" that behave as NICs (at most an MTU per frame on the wire, GRO at each uplink: --nic-like); "
              if res["args"].get("nic_like") else "; ") +
           f"TCP congestion control {res['args'].get('cc') or m.get('tcp_cc_default', '?')}"
           f"{' (iperf3 -C)' if res['args'].get('cc') and not res.get('cc_how') else ''}; "
           f"{_gso_note(res['args'].get('gso_max_size', linkgso.LEGACY_MAX))}"
           + (f"; iperf3 client and server on CPUs {res['args']['affinity']} in every mode (-A)"
              if res["args"].get("affinity") else "") + ".", "",
           "| metric | routing (no overlay) | kernel vxlan + bridge | dataplane | dataplane / vxlan | dataplane / routing |",
           "|---|---|---|---|---|---|"]
    for k, name, fmt, scale in present(med):
        vals = [fmt.format(med[x][k] * scale) for x in ("routing", "vxlan", "dataplane")]
        cells = []
        for vs in ("vs_vxlan", "vs_routing"):
            lo_hi = f" ({ci[vs][k][0]:.2f}-{ci[vs][k][1]:.2f})" if ci else ""
            cells.append(f"{rat[vs][k]:.2f}x{lo_hi}")
        out.append(f"| {name} | {' | '.join(vals)} | {' | '.join(cells)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
