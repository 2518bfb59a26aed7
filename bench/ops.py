"""bench/ops: what an operator's commands take as a host's endpoints grow.

    .venv/bin/python -m bench.ops [--local 1000] [--repeats 3] [--out ops]

bench.scale's lab (two hosts with agents on the lab's SQLite registry, VNI 4001). With one
endpoint per host, then with --local per host (made through the agents), it times on h1:
`dataplane status`, `stats`, `endpoint ls` and `fdb ls` (each -o json, the whole CLI process,
--repeats times), a Prometheus scrape of h1's agent from the underlay, the agent's CPU while
idle for 10 s, its resident memory, and the seconds from its SIGKILL to its first sync when
started again (--repeats times); and each of h1's adds on the way (medians of the first and
the last 100). Then `dataplane down` of h1 once, with its endpoints. Wall times, medians of
the repeats. Writes bench/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

from bench import scale
from bench.run import headline, machine, save
from lab.unwind import unwind_on_sigterm
from dataplane.agent import control, process
from dataplane.core import procs
from dataplane.node import Node
from lab import topology as lab

H1 = scale.H1
COMMANDS = [("status", ["status"]), ("stats", ["stats"]), ("endpoint ls", ["endpoint", "ls"]),
            ("fdb ls", ["fdb", "ls"])]
FETCH = """
import sys, time, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
for _ in range(int(sys.argv[2])):
    t0 = time.monotonic()
    with opener.open(sys.argv[1], timeout=60) as r:
        r.read()
    print(time.monotonic() - t0)
"""


def dataplane(*args: str) -> float:
    """Seconds one `dataplane --netns h1 ARGS -o json` took, start to exit; it must succeed."""
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "dataplane.cli", "--netns", H1, *args, "-o", "json"],
                       capture_output=True, text=True)
    took = time.monotonic() - t0
    if r.returncode:
        raise RuntimeError(f"dataplane {' '.join(args)}: {r.stderr.strip()}")
    return took


def scrapes(repeats: int) -> list[float]:
    url = f"http://{lab.vtep_ip(1)}:{lab.METRICS_PORT}/metrics"
    r = subprocess.run(["ip", "netns", "exec", lab.UNDERLAY_NS, sys.executable, "-c", FETCH, url, str(repeats)],
                       capture_output=True, text=True, check=True)
    return [float(x) for x in r.stdout.split()]


def agent_cpu(seconds: float = 10) -> float:
    """The h1 agent's CPU time per second of wall time while nothing is asked of it."""
    pid = process.running_pid(H1)

    def cpu() -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")      # utime + stime
    c0, t0 = cpu(), time.monotonic()
    time.sleep(seconds)
    return (cpu() - c0) / (time.monotonic() - t0)


def agent_rss_mib() -> float:
    """The h1 agent's resident memory."""
    with open(f"/proc/{process.running_pid(H1)}/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def agent_restart() -> float:
    """h1's agent killed (as a crash would), then started again: seconds to its first sync."""
    procs.terminate(process.running_pid(H1), first=signal.SIGKILL)
    t0 = time.monotonic()
    control.spawn_agent(Node(H1), Node(H1).require_up(), quiet=True)
    return time.monotonic() - t0


def phase(repeats: int) -> dict:
    out = {name: [dataplane(*argv) for _ in range(repeats)] for name, argv in COMMANDS}
    out["scrape"] = scrapes(repeats)
    out["agent_cpu"] = agent_cpu()
    out["agent_rss_mib"] = agent_rss_mib()
    out["agent_restart"] = [agent_restart() for _ in range(repeats)]
    return out


def table(r: dict) -> str:
    m, a = r["machine"], r["args"]
    med = statistics.median
    lines = [f"{headline(m)}. Command: `.venv/bin/python -m bench.ops --local {a['local']} --repeats "
             f"{a['repeats']}`. Wall time of the whole CLI process (Python's start included), medians of "
             f"{a['repeats']}; the scrape from the underlay namespace.", "",
             f"| h1 | 1 endpoint per host | {a['local']} endpoints per host |", "|---|---|---|"]
    for name, _ in COMMANDS + [("scrape", None)]:
        what = f"`dataplane {name} -o json`, s" if name != "scrape" else "Prometheus scrape of the agent, s"
        lines.append(f"| {what} | {med(r['one'][name]):.3f} | {med(r['many'][name]):.3f} |")
    lines.append(f"| agent CPU while idle, % of a CPU | {100 * r['one']['agent_cpu']:.1f} | "
                 f"{100 * r['many']['agent_cpu']:.1f} |")
    lines.append(f"| agent's resident memory, MiB | {r['one']['agent_rss_mib']:.0f} | "
                 f"{r['many']['agent_rss_mib']:.0f} |")
    adds = r["adds"]
    k = max(1, min(100, len(adds) // 2))       # the first and the last k, apart when there are 2k
    lines.append(f"| an endpoint added through the agent, ms (the first {k} adds; the last {k}) | "
                 f"{1000 * med(adds[:k]):.0f} | {1000 * med(adds[-k:]):.0f} |")
    lines.append(f"| agent killed and started again, s to its first sync | {med(r['one']['agent_restart']):.2f} | "
                 f"{med(r['many']['agent_restart']):.2f} |")
    lines.append(f"| `dataplane down`, s | - | {r['down_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/ops", description="operator commands as endpoints grow")
    p.add_argument("--local", type=int, default=1000, help="endpoints per host in the second phase")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="ops")
    args = p.parse_args(argv)
    if not 2 <= args.local <= 1024 or not 1 <= args.repeats <= 20:
        p.error("--local 2..1024, --repeats 1..20")
    unwind_on_sigterm()
    res = {"machine": machine(), "args": vars(args)}
    try:
        scale.setup(2)
        res["one"] = phase(args.repeats)
        res["adds"] = []
        scale.add_locals(args.local, res["adds"])
        res["many"] = phase(args.repeats)
        scale.log(f"dataplane down of h1 with {args.local} endpoints")
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "dataplane.cli", "--netns", H1, "down"], check=True,
                       stdout=subprocess.DEVNULL)
        res["down_s"] = time.monotonic() - t0
    finally:
        lab.down()
    save(res, table(res), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
