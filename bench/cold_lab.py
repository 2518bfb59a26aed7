"""bench/cold_lab: our programs beside the lean pair at a few frames a second, in the lab.

    .venv/bin/python -m bench.cold_lab [--rounds 4] [--variant NAME=CFLAGS ...]

bench.cold takes a cold run apart by test runs; this is the same question in real traffic.
bench.lean's set-up without the sink (two lab hosts, VNI 256, no registry: the remote MAC is
learned): ping from one sandbox to the other at 20 and 100 requests a second, with our
programs as built, bench/lean_vxlan.c's pair at the two hooks the requests pass (h1's endpoint
port, h2's uplink; the replies pass ours), or ours built with a variant's -DDP_* flags (both
hosts reloaded in place, as bench.monitor_cost does), taking turns round by round. Per rate and
program: the kernel's BPF statistics of the two programs the requests pass, by program id (ns
per run), and ping's average round trip. Writes bench/results/cold_lab.{json,md} (--out NAME:
NAME.*; medians of the rounds)."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import statistics
import sys
import time

from bench import baselines, lean as leanpair
from bench.monitor_cost import reload
from bench.pps import lab_pairs
from bench.profile import _prog_times, bpf_stats
from bench.rate_cost import rtt_us
from bench.run import headline, machine, save
from dataplane.kernel import bpfsys, loader, netns
from dataplane.node import Node
from lab import topology as lab
from lab.traffic import ping

RATES = (20, 100)                      # echo requests a second
VNI = 256
FIELDS = ("from_endpoint", "from_overlay", "rtt_us")


def prog_id(fd: int) -> int:
    return bpfsys.prog_info(fd)["id"]


def pinned_id(ns: str, prog: str) -> int:
    fd = loader.open_prog(Node(ns).pin_dir, prog)
    try:
        return prog_id(fd)
    finally:
        os.close(fd)


def per_run_by_id(before: dict, after: dict, ids: tuple[int, int]) -> tuple[float | None, float | None]:
    """ns per run of each of ids between two _prog_times() (None if it did not run)."""
    out = []
    for pid in ids:
        ns, cnt = (after[pid][i] - before[pid][i] for i in (1, 2))
        out.append(ns / cnt if cnt else None)
    return out[0], out[1]


def medians(samples: dict) -> list[dict]:
    """Per rate and program, the median of each figure over the turns that have it (None if none
    has), and how many turns had no reply; rows by rate, programs in the order they came."""
    rows = []
    for key, turns in samples.items():
        rate, name = key.split()
        row = {"rate": int(rate), "program": name, "turns": len(turns),
               "no_reply": sum(t["rtt_us"] is None for t in turns)}
        for f in FIELDS:
            got = [t[f] for t in turns if t[f] is not None]
            row[f] = statistics.median(got) if got else None
        rows.append(row)
    return sorted(rows, key=lambda row: row["rate"])


def command(a: dict) -> str:
    """The command line that makes a run with arguments a (vars of the parsed arguments)."""
    cmd = f"bench.cold_lab --rounds {a['rounds']}" + (" --owned" if a.get("owned") else "")
    cmd += "".join(f" --variant {shlex.quote(v)}" for v in a["variant"])
    return cmd + (f" --out {a['out']}" if a.get("out", "cold_lab") != "cold_lab" else "")


def table(res: dict) -> str:
    md = [f"{headline(res['machine'])}. Command: `.venv/bin/python -m {command(res['args'])}`. Medians of the "
          "rounds. ns per run of the two programs the echo requests pass (h1's endpoint port, h2's uplink), from "
          "the kernel's BPF statistics; round trip from ping. The replies pass ours as built, or the row's "
          "variant (both hosts run it). - : no figure.", "",
          "| requests/s | programs | from_endpoint, ns per run | from_overlay, ns per run | round trip avg, us |",
          "|---|---|---|---|---|"]
    for row in res["median"]:
        cells = ["-" if row[f] is None else f"{row[f]:,.0f}" for f in FIELDS]
        lost = f" ({row['no_reply']} of {row['turns']} turns without a reply)" if row.get("no_reply") else ""
        md.append(f"| {row['rate']} | {row['program']} | {' | '.join(cells)}{lost} |")
    return "\n".join(md) + "\n"


def variant(text: str) -> tuple[str, str]:
    name, sep, flags = text.partition("=")
    if not (sep and re.fullmatch(r"[A-Za-z0-9_.-]+", name) and name not in ("ours", "lean") and flags.split()
            and all(f.startswith("-DDP_") for f in flags.split())):
        raise argparse.ArgumentTypeError(f"{text!r}: NAME=CFLAGS, a name of letters, digits, '_.-' other than "
                                         "ours and lean, and at least one flag, each -DDP_...")
    return name, flags


def connected(a: dict, b: dict, name: str) -> None:
    """a reaches b (a reply to one of three requests, three tries a second apart), or RuntimeError."""
    for _ in range(3):
        if ping(a["name"], b["ip"], count=3)[0]:
            return
        time.sleep(1)
    raise RuntimeError(f"{name}: {a['name']} does not reach {b['ip']}")


def rounds(args, pairs: dict, pair: leanpair.Lean, samples: dict) -> None:
    a, b = pairs["dataplane"]
    hooks = leanpair.setup(pair, a, b)
    # The lean pair passes a's ARP to h1's stack: neither end's entry for the other may need ARP
    # (a's probe of b would go unanswered, and so would b's of a, whose reply a sends).
    for x, y in ((a, b), (b, a)):
        netns.ns_exec(x["name"], ["ip", "neigh", "replace", y["ip"], "lladdr", y["mac"], "dev", "eth0",
                                  "nud", "permanent"], check=True)
    if args.owned:
        baselines.own(a, b, VNI)
    builds = {"ours": "", **dict(args.variant)}
    order = [*builds, "lean"]
    for r in range(args.rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            reload(builds.get(name, ""))
            hooks.use("lean" if name == "lean" else "dataplane")
            ids = ((prog_id(pair.fds["from_endpoint"]), prog_id(pair.fds["from_overlay"])) if name == "lean" else
                   (pinned_id(lab.host_ns(1), "from_endpoint"), pinned_id(lab.host_ns(2), "from_overlay")))
            connected(a, b, name)
            for rate in RATES:
                before = _prog_times()
                rtt = rtt_us(a, b, 1 / rate)
                fe, fo = per_run_by_id(before, _prog_times(), ids)
                got = {"from_endpoint": fe, "from_overlay": fo, "rtt_us": rtt}
                samples.setdefault(f"{rate} {name}", []).append(got)
                print(f"bench/cold_lab: round {r + 1}/{args.rounds} {rate}/s {name}: from_endpoint {fe or 0:.0f} "
                      f"ns, from_overlay {fo or 0:.0f} ns, round trip {rtt or 0:.0f} us", file=sys.stderr, flush=True)
    reload("")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/cold_lab", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--variant", type=variant, action="append", default=[],
                   help="NAME=CFLAGS: ours built with these -DDP_* flags as one more row (repeatable)")
    p.add_argument("--owned", action="store_true",
                   help="static entries for the two MACs (a registry node's path) instead of learned ones")
    p.add_argument("--out", default="cold_lab")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds >= 1")
    samples: dict[str, list] = {}
    lab.down()
    with contextlib.ExitStack() as stack:
        stack.callback(lab.down)
        stack.enter_context(bpf_stats())
        pairs, _ = lab_pairs()
        pair = leanpair.Lean()
        stack.callback(pair.close)
        rounds(args, pairs, pair, samples)
    med = medians(samples)
    res = {"machine": machine(), "args": {**vars(args), "variant": [f"{n}={f}" for n, f in args.variant]},
           "samples": samples, "median": med}
    save(res, table(res), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
