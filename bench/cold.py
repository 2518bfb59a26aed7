"""bench/cold: what one run of our programs costs with nothing of it in the CPU's caches.

    .venv/bin/python -m bench.cold [--rounds 300]

At a few frames a second a run costs 10-40 times its loaded figure (bench.rate_cost). This takes
that apart without a lab, by BPF_PROG_TEST_RUN on one CPU: before each measured run it reads a
96 MB buffer (the caches emptied; "cold"), or touches one byte of each of its pages (the TLB
emptied, the caches mostly not; "TLB only"). For our programs it also runs the same program on
a second frame first, one that takes the same path through other per-key entries (another
endpoint, MAC and VTEP): that run warms the code, the helpers and the shared map entries
(configuration, generations, counters), so what is left is the per-key entries' lines
("after another frame"). Beside ours: bench/lean_vxlan.c's pair (the least a VXLAN pair does;
bench.lean) and a program that only returns, which is the test run's own cold cost. "warm" is a
run right after. Medians of --rounds; each round takes every case in turn. Writes
bench/results/cold.{json,md}."""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import shutil
import statistics
import sys
import time

from bench import lean as leanpair, progcost
from bench.run import headline, machine, save
from dataplane.core import abi
from tests.bpf.conftest import tc_ctx

BUF = 96 << 20
PATHS = ("encap, owned MAC", "decap, owned source")        # progcost.PATHS
OTHER_MAC, OTHER_IP = "02:42:0a:01:00:44", "10.1.0.44"     # the warming frame's remote end
OTHER_EP_MAC, OTHER_EP_IP = "02:42:0a:01:00:55", "10.1.0.55"  # and its local one
CASES = ("cold", "TLB only", "after another frame", "warm")
TRIVIAL_C = b"int trivial(struct __sk_buff *skb) { return 0; }"


class Thrash:
    """A buffer of BUF bytes, its pages present: caches() reads all of it, tlb() a byte per page."""

    def __init__(self):
        self.buf = mmap.mmap(-1, BUF)
        self.buf.write(b"\x02" * BUF)                  # not the shared zero page: real lines
        self.view = memoryview(self.buf)

    def caches(self) -> None:
        self.buf.find(b"\x01", 0)

    def tlb(self) -> None:
        bytes(self.view[::mmap.PAGESIZE])

    def close(self) -> None:
        self.view.release()
        self.buf.close()


def other_ifindex() -> int:
    """The warming frame's endpoint: half the copies' slots away from the measured one's (the
    endpoint copies are indexed by ifindex), so it shares no cache line or page with it."""
    from tests.bpf.conftest import EP_IFINDEX  # noqa: PLC0415
    return EP_IFINDEX + abi.load().constants["DP_MAP_LOCAL_COPIES"] // 2


def second_frames(h) -> dict[str, tuple[bytes, bytes]]:
    """Per program, a frame down the same path as PATHS' through other per-key entries: from an
    endpoint of its own (other_ifindex, OTHER_EP_MAC) to OTHER_MAC, a static entry at the other
    peer, whose next hop is cached as the measured frame's is; and back."""
    from tests import packets as P  # noqa: PLC0415 - scapy, for the bench only
    from tests.bpf.conftest import LOCAL_IP, OTHER_PEER_IP, UPLINK_IFINDEX, VNI, be32  # noqa: PLC0415
    ifindex = other_ifindex()
    h.endpoint(ifindex, OTHER_EP_MAC, OTHER_EP_IP)
    h.maps.dp_fdb.put(h.mac_key(VNI, OTHER_MAC), h.S["dp_fdb_entry"](vtep=be32(OTHER_PEER_IP), flags=1))
    h.nexthop(OTHER_PEER_IP, updated_ns=time.monotonic_ns() + 3600 * 10**9)      # cached: no FIB lookup
    udp = bytes(P.inner_ipv4(OTHER_EP_MAC, OTHER_MAC, OTHER_EP_IP, OTHER_IP, payload=b"x" * 18))
    vx = bytes(P.vxlan(P.inner_ipv4(OTHER_MAC, OTHER_EP_MAC, OTHER_IP, OTHER_EP_IP, payload=b"x" * 18), VNI,
                       OTHER_PEER_IP, LOCAL_IP))
    return {"from_endpoint": (udp, tc_ctx(ifindex)), "from_overlay": (vx, tc_ctx(UPLINK_IFINDEX))}


def lean_pair() -> leanpair.Lean:
    """bench/lean_vxlan.c configured for the test harness's frames (progcost.PATHS)."""
    from tests.bpf.conftest import (EP_IFINDEX, EP_MAC, LOCAL_IP, NH_DMAC, NH_SMAC, PEER_IP,  # noqa: PLC0415
                                    REMOTE_MAC, UPLINK_IFINDEX, VNI)
    pair = leanpair.Lean()
    outer, words = leanpair.outer_template(NH_SMAC, NH_DMAC, LOCAL_IP, PEER_IP, VNI)
    pair.configure(0, mac=REMOTE_MAC, ifindex=UPLINK_IFINDEX, outer=outer, csum_words=words)
    pair.configure(1, mac=EP_MAC, ifindex=EP_IFINDEX, local_ip=LOCAL_IP)
    return pair


def measure(rounds: int, run, fds: dict, second: dict, thrash: Thrash) -> dict:
    """{path: {program: {case: [ns, ...]}}}; fds: {program name: {bpf program: fd}}."""
    out: dict = {}
    for path in PATHS:
        prog, frame, ifindex, _ = progcost.PATHS[path]
        ctx = tc_ctx(ifindex)
        verdicts = {name: run(f[prog], frame, ctx).retval for name, f in fds.items()}
        verdicts["ours, warming frame"] = run(fds["ours"][prog], *second[prog]).retval
        if len(set(verdicts.values()) - {verdicts["trivial"]}) != 1:
            raise RuntimeError(f"{path}: the frames or programs disagree on the verdict: {verdicts}")
        got = {name: {c: [] for c in CASES if name == "ours" or c != "after another frame"} for name in fds}
        for _ in range(rounds):
            for name, f in fds.items():
                fd, s = f[prog], got[name]
                thrash.caches()
                s["cold"].append(run(fd, frame, ctx).duration_ns)
                s["warm"].append(run(fd, frame, ctx).duration_ns)
                thrash.tlb()
                s["TLB only"].append(run(fd, frame, ctx).duration_ns)
                if "after another frame" in s:
                    thrash.caches()
                    run(fd, *second[prog])
                    s["after another frame"].append(run(fd, frame, ctx).duration_ns)
        out[path] = got
        print(f"bench/cold: {path}: " + ", ".join(f"{n} {statistics.median(got[n]['cold']):.0f} ns cold"
                                                 for n in got), file=sys.stderr, flush=True)
    return out


def table(res: dict) -> str:
    md = [f"{headline(res['machine'])}. Command: `.venv/bin/python -m bench.cold --rounds {res['args']['rounds']}`. "
          "One BPF_PROG_TEST_RUN's kernel-measured duration, ns, medians of the rounds; cold: after reading a "
          "96 MB buffer; TLB only: after touching a byte of each of its pages; after another frame: cold, then "
          "the program run once on a frame down the same path through other per-key entries; warm: right "
          "after a run. trivial: a program that only returns.", "",
          "| path | program | " + " | ".join(CASES) + " |", "|---|---|" + "---|" * len(CASES)]
    for path, progs in res["median"].items():
        for name, cases in progs.items():
            md.append(f"| {path} | {name} | " + " | ".join("-" if cases.get(c) is None else f"{cases[c]:,.0f}"
                                                          for c in CASES) + " |")
    return "\n".join(md) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/cold", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=300)
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds >= 1")
    import bcc  # noqa: PLC0415 - the bench needs it, importing bench.cold should not
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})     # the runs and the thrash on one CPU
    with contextlib.ExitStack() as stack:                        # undone in reverse, even on failure
        stack.callback(shutil.rmtree, progcost.pin_dir(0), ignore_errors=True)
        h = progcost._harness(0, "", True)
        stack.callback(h.close)
        pair = lean_pair()
        stack.callback(pair.close)
        trivial = bcc.BPF(text=TRIVIAL_C)
        stack.callback(trivial.cleanup)
        thrash = Thrash()
        stack.callback(thrash.close)
        tfd = trivial.load_func(b"trivial", bcc.BPF.SCHED_CLS).fd
        fds = {"ours": h.fds, "lean": pair.fds, "trivial": {p: tfd for p in leanpair.PROGS}}
        samples = measure(args.rounds, h.cwire.prog_test_run, fds, second_frames(h), thrash)
    med = {path: {n: {c: statistics.median(v) for c, v in cases.items()} for n, cases in progs.items()}
           for path, progs in samples.items()}
    res = {"machine": machine(), "args": vars(args), "samples": samples, "median": med}
    save(res, table(res), "cold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
