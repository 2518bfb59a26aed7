"""bench/profile: where the CPU goes in each bench workload, per mode.

    .venv/bin/python -m bench.profile [--workload tcp|pps64|rr ...] [--seconds 3]

For each workload (single-stream TCP, 64-byte rate with the C generator,
sockperf ping-pong) and each mode (dataplane, kernel vxlan + bridge, plain
routing) it runs the workload on the bench lab and records the whole
machine with `perf record -a -g` for the middle seconds of the run. Writes
bench/results/profile-<workload>.md: the figure measured meanwhile, the
top symbols by self time and, for dataplane, each of our programs' runs and
nanoseconds per run from the kernel's BPF statistics (kernel.bpf_stats_enabled,
on for the run, then as it was), so a missed target is explained by a profile. The lab
is bench.run's: BIG TCP at --gso-max-size for routing and dataplane.
Needs Debian's linux-perf and bpftool (scripts/bootstrap.sh installs them)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

from bench import baselines
from bench.run import OUT, latency_us, machine, pps64, tcp
from dataplane.kernel import loader as fastpath, gso as linkgso
from lab import topology as lab
from lab.traffic import ping

TOP = 18
BPF_STATS = "/proc/sys/kernel/bpf_stats_enabled"
OURS = set(fastpath.TC_PROGRAMS) | set(fastpath.XDP_PROGRAMS)


@contextlib.contextmanager
def bpf_stats():
    """The kernel's BPF run statistics on for the block, then as they were (someone else may be
    counting too)."""
    with open(BPF_STATS) as f:
        was = f.read().strip()
    with open(BPF_STATS, "w") as f:
        f.write("1")
    try:
        yield
    finally:
        with open(BPF_STATS, "w") as f:
            f.write(was)


def shown_programs() -> list[dict]:
    """Every loaded BPF program, as `bpftool -j prog show` describes it."""
    r = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def _prog_times() -> dict[int, tuple[str, int, int]]:
    """id -> (name, run_time_ns, run_cnt) of each of our loaded programs."""
    return {p["id"]: (p["name"], p.get("run_time_ns", 0), p.get("run_cnt", 0))
            for p in shown_programs() if p.get("name") in OURS}


def ns_per_run(before: dict, after: dict) -> dict[str, float]:
    """ns per run of each program name between two _prog_times() (all loaded copies summed);
    names that did not run are left out."""
    tot: dict[str, list[int]] = {}
    for pid, (name, ns, cnt) in after.items():
        _, ns0, cnt0 = before.get(pid, (name, 0, 0))
        t = tot.setdefault(name, [0, 0])
        t[0] += ns - ns0
        t[1] += cnt - cnt0
    return {n: ns / cnt for n, (ns, cnt) in tot.items() if cnt}


def per_run(before: dict, after: dict) -> dict[str, float]:
    """ns_per_run with from_endpoint and from_overlay always there (0 if it did not run)."""
    return {"from_endpoint": 0.0, "from_overlay": 0.0} | ns_per_run(before, after)


def _prog_table(before: dict, after: dict, seconds: float) -> str:
    rows = ["| program (id) | runs/s | ns per run | % of one CPU |", "|---|---|---|---|"]
    for pid, (name, ns, cnt) in sorted(after.items(), key=lambda kv: kv[1][0]):
        _, ns0, cnt0 = before.get(pid, (name, 0, 0))
        d_ns, d_cnt = ns - ns0, cnt - cnt0
        if d_cnt:
            rows.append(f"| {name} ({pid}) | {d_cnt / seconds:,.0f} | {d_ns / d_cnt:.0f} | "
                        f"{100 * d_ns / (seconds * 1e9):.1f} |")
    return "\n".join(rows)


def _workload(name: str, a: dict, b: dict, seconds: int) -> str:
    if name == "tcp":
        return f"{tcp(a, b, seconds):.2f} Gbit/s"
    if name == "pps64":
        ping(a["name"], b["ip"], count=1)        # the generator addresses the next hop's MAC: learn it
        pps, ns = pps64(a, b, seconds)
        return f"{pps / 1e3:.0f} kpps, {ns:.0f} CPU ns/packet"
    p50, p99 = latency_us(a, b, seconds)
    return f"RTT p50 {p50:.1f} us, p99 {p99:.1f} us"


def profile(name: str, mode: str, a: dict, b: dict, seconds: int, tmp: str) -> tuple[str, str, str]:
    """(figure during the run, perf report top symbols, our programs' run times)."""
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("fig", _workload(name, a, b, seconds + 3)))
    t.start()
    time.sleep(1.5)
    data = os.path.join(tmp, f"{name}-{mode}.data")
    with bpf_stats():
        before, t0 = _prog_times(), time.monotonic()
        subprocess.run(["perf", "record", "-a", "-g", "-o", data, "--", "sleep", str(seconds)],
                       capture_output=True, check=True)
        progs = _prog_table(before, _prog_times(), time.monotonic() - t0)
    t.join()
    rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "symbol", "--stdio",
                          "-g", "none", "--percent-limit", "0.5"], capture_output=True, text=True, check=True).stdout
    rows = [re.sub(r"(\s+-)+\s*$", "", line) for line in rep.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    return out.get("fig", "?"), "\n".join(rows[:TOP]), progs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/profile")
    p.add_argument("--workload", action="append", choices=("tcp", "pps64", "rr"))
    p.add_argument("--seconds", type=int, default=3)
    p.add_argument("--gso-max-size", type=int, default=linkgso.BIG_TCP_SIZE,
                   help="as in bench.run: the IPv4 GSO limit of the routing and dataplane paths")
    args = p.parse_args(argv)
    workloads = args.workload or ["tcp", "pps64", "rr"]
    m = machine()
    lab.down()
    try:
        pairs = baselines.up(args.gso_max_size)
        with tempfile.TemporaryDirectory(prefix="dp-perf-") as tmp:
            for w in workloads:
                md = [f"# Profile: {w} (`python -m bench.profile --workload {w}`)", "",
                      f"`perf record -a -g` for {args.seconds} s inside the run, `perf report --no-children "
                      f"--sort symbol`; kernel {m['kernel']}, {m['cpus']} vCPUs, {m['date']}; IPv4 GSO limit "
                      f"{args.gso_max_size} for routing and dataplane.", ""]
                for mode in ("dataplane", "vxlan", "routing"):
                    a, b = pairs[mode]
                    print(f"profile {w} {mode}...", file=sys.stderr, flush=True)
                    fig, top, progs = profile(w, mode, a, b, args.seconds, tmp)
                    md += [f"## {mode}: {fig}", "```", top, "```", ""]
                    if mode == "dataplane":
                        md += ["Our programs while perf recorded (BPF statistics):", "", progs, ""]
                with open(os.path.join(OUT, f"profile-{w}.md"), "w") as f:
                    f.write("\n".join(md))
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
