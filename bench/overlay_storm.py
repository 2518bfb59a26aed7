"""bench/overlay_storm: what floods from the underlay cost the receiving host, with and without its
overlay storm meters (`up --overlay-storm-rate`, `--overlay-storm-peer-rate`), in one run.

    .venv/bin/python -m bench.overlay_storm [--rounds 4] [--seconds 3] [--rate 20000] [--budget 100000]
        [--peer-budget COPIES (default: half of --budget, as up's)]

Two lab hosts on the lab's SQLite registry, VNI 256, --per-host sandboxes each. h2 runs without
storm control (`up --storm-rate 0`: a host of an older version, or one whose operator turned it
off, which is what the receiver's meter is for), and its first sandbox sends 64-byte broadcasts
at --rate frames/s from the C generator; h2 encapsulates each once toward h1, which copies it to
each of its sandboxes. The modes take turns round by round: h1's meters off (the host's too), and
at --budget copies/s for the network with --peer-budget for one peer (h2 is the one peer here)
and the host's at its default. Per mode:
the frames h1 took, the copies it made into its sandboxes, the frames its
meters refused (`overlay_storm`, `overlay_storm_peer`), and the whole machine's busy CPU (wall time x CPUs less
/proc/uptime's idle, as bench.run) as a share of one CPU.

Writes bench/results/<--out>.json and .md (overlay_storm by default).
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import statistics
import subprocess
import sys

from bench.run import Busy, _in, headline, machine, save
from dataplane.core.model import OVERLAY_HOST_RATE_DEFAULT
from dataplane.node import Node, choices, readout
from lab import topology as lab

VNI = 256
H1, H2 = "dpl-h1", "dpl-h2"
DATAPLANE = [sys.executable, "-m", "dataplane.cli"]


def log(msg: str) -> None:
    print(f"bench/overlay_storm: {msg}", file=sys.stderr, flush=True)


def counters() -> dict:
    s = next(s for s in readout.stats(Node(H1)) if s["vni"] == VNI)
    refused = s["drops"].get("overlay_storm", 0) + s["drops"].get("overlay_storm_peer", 0)    # any of the meters
    return {"frames": s["rx_packets"], "copies": s["local_packets"], "metered": refused}


def up(node: str, *args: str) -> None:
    """`dataplane up` again on a running lab host, with one setting changed."""
    subprocess.run(DATAPLANE + ["--netns", node, "up", *args], check=True, capture_output=True)


def one(sender: dict, dst: str, seconds: float, rate: int) -> dict:
    before = counters()
    with Busy() as busy:
        sent = json.loads(_in(sender["name"], [sys.executable, "-m", "bench.gen", "send", "--dst-mac",
                                               "ff:ff:ff:ff:ff:ff", "--src-ip", sender["ip"], "--dst-ip", dst,
                                               "--seconds", str(seconds), "--rate", str(rate), "--flows", "1"],
                              check=True).stdout)
    after = counters()
    per_s = {k: (after[k] - before[k]) / sent["seconds"] for k in after}
    return {"sent": sent["packets"] / sent["seconds"], **per_s,
            "busy_cpu": busy.ns / 1e9 / sent["seconds"]}


def table(r: dict) -> str:
    a = r["args"]
    out = [f"{headline(r['machine'])}. Command: `.venv/bin/python -m bench.overlay_storm --rounds {a['rounds']} "
           f"--seconds {a['seconds']} --rate {a['rate']} --budget {a['budget']} "
           f"--peer-budget {a.get('peer_budget', 0)} --per-host {a['per_host']} "
           f"--out {a['out']}`. "
           f"h1 has {r['n_local']} local ports in VNI {VNI}. Medians of {a['rounds']} alternating rounds.", "",
           "| h1's overlay storm meter | broadcasts sent by h2's sandbox, /s | taken by h1, /s | copies into h1's "
           "sandboxes, /s | refused (`overlay_storm` and `_peer`), /s | busy CPU, whole machine, CPUs |",
           "|---|---|---|---|---|---|"]
    for mode, rows in r["samples"].items():
        m = {k: statistics.median(x[k] for x in rows) for k in rows[0]}
        out.append(f"| {mode} | {m['sent']:,.0f} | {m['frames']:,.0f} | {m['copies']:,.0f} | {m['metered']:,.0f} | "
                   f"{m['busy_cpu']:.2f} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/overlay_storm", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=3)
    p.add_argument("--rate", type=int, default=20000, help="broadcast frames/s h2's sandbox sends")
    p.add_argument("--budget", type=int, default=100000, help="h1's --overlay-storm-rate in the metered mode")
    p.add_argument("--peer-budget", type=int, default=None,
                   help="h1's --overlay-storm-peer-rate in the metered mode (0: none; default: half of --budget)")
    p.add_argument("--per-host", type=int, default=lab.MAX_PER_HOST)
    p.add_argument("--out", default="overlay_storm", help="results name (default: %(default)s)")
    args = p.parse_args(argv)
    if args.peer_budget is None:
        args.peer_budget = choices.derived_peer_rate(args.budget)
    if args.rounds < 1 or args.seconds <= 0 or args.rate < 1 or args.budget < 1 or args.peer_budget < 0:
        p.error("--rounds >= 1, --seconds > 0, --rate >= 1, --budget >= 1, --peer-budget >= 0")
    metered = f"{args.budget:,} copies/s" + (f", {args.peer_budget:,} a peer" if args.peer_budget else "")
    # Off: every overlay storm meter (the host's too); metered: the host's at its default.
    modes = {"off": ("0", "0", "0"), metered: (str(args.budget), str(args.peer_budget), str(OVERLAY_HOST_RATE_DEFAULT))}
    res = {"machine": machine(), "args": vars(args), "samples": {m: [] for m in modes}}
    lab.down()
    try:
        log(f"lab: 2 hosts, VNI {VNI}, {args.per_host} sandboxes each")
        lab.up(2, [VNI], per_host=args.per_host)
        up(H2, "--storm-rate", "0")
        sender = next(s for s in lab.ls()["sandboxes"] if s["host"] == "h2" and s["vni"] == VNI)
        dst = str(ipaddress.IPv4Network(Node(H1).state().networks[VNI].subnet).broadcast_address)
        with Node(H1).maps() as m:
            res["n_local"] = m.dp_networks.get(ctypes.c_uint32(VNI)).n_local
        for i in range(args.rounds):
            for mode in (list(modes) if i % 2 == 0 else list(modes)[::-1]):
                net, peer, host = modes[mode]
                up(H1, "--overlay-storm-rate", net, "--overlay-storm-peer-rate", peer,
                   "--overlay-storm-host-rate", host)
                row = one(sender, dst, args.seconds, args.rate)
                res["samples"][mode].append(row)
                log(f"round {i + 1}/{args.rounds}: {mode}: " + ", ".join(f"{k} {v:,.1f}" for k, v in row.items()))
    finally:
        lab.down()
    save(res, table(res), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
