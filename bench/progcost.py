"""What each program path costs per run, and what the per-CPU copies and the
jiffies clock take off it: the real programs, loaded once per variant under a
private pin directory (tests/bpf's harness and its map contents), each run by
BPF_PROG_TEST_RUN one frame at a time (a frame the program changes cannot be
repeated in place), the kernel's duration averaged over a batch. Variants run
in interleaved batches in one process, so the machine's drift falls on all
alike; each difference is the median of per-round differences.

Variants: default; no copies (-DDP_NO_COPIES: the hash maps every frame);
coarse clock (dp_config without the jiffies calibration: the helper call);
both off (the fast path as of e8c146a in these respects).

    .venv/bin/python -m bench.progcost [--rounds 20] [--batch 1000]

A test run's skb has 66 bytes of headroom, so encapsulation never reallocates
here (frames from packet and UDP sockets do; bench.pps has that), and redirects
are returned, not carried out. Writes bench/results/progcost.{json,md}."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time

from bench.run import machine
from dataplane.kernel import loader as fastpath
from tests import packets as P
from tests.bpf.conftest import (EP2_IP, EP2_MAC, EP_IFINDEX, EP_IP, EP_MAC, LOCAL_IP, PEER_IP, REMOTE_IP,
                                REMOTE_MAC, UPLINK_IFINDEX, VNI, Harness, be32, tc_ctx)

LEARNED_MAC, LEARNED_IP = "02:42:0a:01:00:33", "10.1.0.33"
VARIANTS = {"default": ("", True), "no copies": ("-DDP_NO_COPIES", True),
            "coarse clock": ("", False), "neither": ("-DDP_NO_COPIES", False)}


def _udp(src_mac, dst_mac, src_ip, dst_ip) -> bytes:
    return bytes(P.inner_ipv4(src_mac, dst_mac, src_ip, dst_ip, payload=b"x" * 18))   # a 64-byte frame


def _vxlan(src_mac, src_ip) -> bytes:
    return bytes(P.vxlan(P.inner_ipv4(src_mac, EP_MAC, src_ip, EP_IP, payload=b"x" * 18), VNI, PEER_IP, LOCAL_IP))


PATHS = {   # name: (program, frame, ingress ifindex, what it is)
    "encap, owned MAC": ("from_endpoint", _udp(EP_MAC, REMOTE_MAC, EP_IP, REMOTE_IP), EP_IFINDEX,
                         "to a remote MAC with a static (registry) entry"),
    "encap, learned MAC": ("from_endpoint", _udp(EP_MAC, LEARNED_MAC, EP_IP, LEARNED_IP), EP_IFINDEX,
                           "to a remote MAC known from a learned entry"),
    "local delivery": ("from_endpoint", _udp(EP_MAC, EP2_MAC, EP_IP, EP2_IP), EP_IFINDEX,
                       "to another endpoint on the host"),
    "decap, owned source": ("from_overlay", _vxlan(REMOTE_MAC, REMOTE_IP), UPLINK_IFINDEX,
                            "from a MAC with a static entry, to a local endpoint"),
    "decap, learned source": ("from_overlay", _vxlan(LEARNED_MAC, LEARNED_IP), UPLINK_IFINDEX,
                              "from a MAC known by learning, to a local endpoint"),
}


def pin_dir(i: int) -> str:
    """Where _harness(i, ...) pins its maps (removed by whoever made it)."""
    return os.path.join(fastpath.PIN_ROOT, f"progcost-{os.getpid()}-{i}")


def _harness(i: int, cflags: str, clock: bool) -> Harness:
    os.environ["DP_BPF_CFLAGS"] = cflags
    try:
        h = Harness(pin_dir(i))
    finally:
        os.environ.pop("DP_BPF_CFLAGS", None)
    h.baseline()
    h.configure(clock=clock)
    S, m = h.S, h.maps
    far = time.monotonic_ns() + 3600 * 10**9       # a next hop fresh for the whole run: no FIB lookups
    # Stamped now: the fast path refreshes it once a second, as it does a learned entry in use.
    m.dp_learned.put(h.mac_key(VNI, LEARNED_MAC), S["dp_fdb_entry"](vtep=be32(PEER_IP), last_seen_ns=time.monotonic_ns()))
    h.nexthop(PEER_IP, updated_ns=far)     # a cached next hop, as the FIB leaves them
    return h


def measure(rounds: int, batch: int) -> dict:
    hs = [_harness(i, *v) for i, v in enumerate(VARIANTS.values())]
    try:
        run = hs[0].cwire.prog_test_run
        out = {}
        for path, (prog, frame, ifindex, _) in PATHS.items():
            ctx = tc_ctx(ifindex)
            verdicts = {run(h.fds[prog], frame, ctx).retval for h in hs}
            if len(verdicts) != 1:
                raise RuntimeError(f"{path}: the variants disagree on the verdict: {verdicts}")
            means = {name: [] for name in VARIANTS}
            for _ in range(rounds):
                for name, h in zip(VARIANTS, hs):
                    fd = h.fds[prog]
                    means[name].append(sum(run(fd, frame, ctx).duration_ns for _ in range(batch)) / batch)
            out[path] = {"samples": means, "median": {n: statistics.median(v) for n, v in means.items()},
                         "diff": {n: statistics.median([a - b for a, b in zip(means[n], means["neither"])])
                                  for n in VARIANTS}}
            print(f"  {path}: " + ", ".join(f"{n} {statistics.median(v):.0f} ns" for n, v in means.items()),
                  flush=True)
        return out
    finally:
        for h in hs:
            pin = h.maps.pin_dir
            h.close()
            shutil.rmtree(pin, ignore_errors=True)


def report(res: dict, meta: dict) -> str:
    m = meta["machine"]
    lines = [f"Kernel {m['kernel']}, {m['cpus']} CPUs ({m['cpu_model']}); {meta['date']}. Command: `{meta['command']}`. Mean kernel-measured duration "
             f"of one BPF_PROG_TEST_RUN, over batches of {meta['batch']}; medians of {meta['rounds']} rounds, "
             "the variants' batches interleaved; in brackets, the median per-round difference from \"neither\".",
             "",
             "| path | " + " | ".join(VARIANTS) + " |",
             "|---|" + "---|" * len(VARIANTS)]
    for path, r in res.items():
        cells = [f"{r['median'][n]:.0f} ns" + ("" if n == "neither" else f" ({r['diff'][n]:+.0f})") for n in VARIANTS]
        lines.append(f"| {path}: {PATHS[path][3]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--out", default="progcost")
    a = p.parse_args()
    res = measure(a.rounds, a.batch)
    meta = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "command": f".venv/bin/python -m bench.progcost --rounds {a.rounds} --batch {a.batch}",
            "rounds": a.rounds, "batch": a.batch}
    md = report(res, meta)
    os.makedirs("bench/results", exist_ok=True)
    with open(f"bench/results/{a.out}.json", "w") as f:
        json.dump({"meta": meta, "results": res}, f, indent=1)
    with open(f"bench/results/{a.out}.md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
