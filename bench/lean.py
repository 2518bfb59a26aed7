"""bench/lean: our programs beside the least a VXLAN program pair can do, in the same traffic.

    .venv/bin/python -m bench.lean [--rounds 6] [--seconds 3] [--flows 64] [--no-bpf-stats]
    .venv/bin/python -m bench.lean --tcp [--rounds 6] [--seconds 4]

bench.pps's set-up (two lab hosts, no registry, the receiving sandbox's eth0
dropping every IPv4 frame at tc ingress, the C generator sending 64-byte
frames unthrottled from the other sandbox), with three modes alternating
round by round: plain routing; dataplane as built; and dataplane with its
two programs swapped, in place at their tcx hooks, for bench/lean_vxlan.c,
a pair that only encapsulates and decapsulates (an inlined array read, the
outer header checks, adjust_room, the header writes, a redirect; no
lookups, learning, counters or spoofing checks). The lean pair's ns per run
is the floor of an overlay built this way (tc hooks, adjust_room,
redirects) on this machine, and the whole path's CPU per frame with it the
best such an overlay could do against routing here.

Per mode: frames/s at the sink, whole-machine busy CPU ns per frame, and for
the two dataplane modes the kernel's BPF statistics per program (on for the
run unless --no-bpf-stats: they add two clock reads to every program run,
which routing does not pay). Writes bench/results/lean.{json,md} (--out
NAME: NAME.*).

--tcp runs TCP instead, in the data direction only (the ACKs still pass our
programs): per mode and round two single-stream runs and two runs paced at
--paced-gbps (whole-machine CPU per Gbit, as bench.run), BPF statistics off.
It asks whether the network's work in our programs holds a single stream back:
if it did, the lean pair would be faster (docs/BENCHMARKS.md, "The lean pair
in TCP")."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import sys

from bench.pps import Sink, alternate, lab_pairs
from bench.profile import bpf_stats
from bench.run import cpu_per_gbit, headline, ratio_ci, save_samples, tcp
from dataplane.core import cwire, model
from dataplane.core.keys import be32
from dataplane.kernel import loader, tcx
from dataplane.node import Node
from lab import topology as lab
from lab.traffic import ping

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "lean_vxlan.c")
BPF_DIR = os.path.join(os.path.dirname(HERE), "bpf")     # dp_abi.h and lib/wire.h, shared with ours
MODES = ("routing", "dataplane", "lean")
PROGS = ("from_endpoint", "from_overlay")
VNI = 256


def log(msg: str) -> None:
    print(f"bench/lean: {msg}", file=sys.stderr, flush=True)


def outer_template(smac: str, dmac: str, src: str, dst: str, vni: int) -> tuple[bytes, int]:
    """The reference encapsulation's 50 outer bytes with the per-frame fields (IPv4 total length and
    checksum, UDP source port and length) zeroed, and the IPv4 header's 16-bit words summed as they
    lie in memory (so the program adds its length and folds, whatever the byte order)."""
    hdr = bytearray(cwire.encap(bytes(64), smac=smac, dmac=dmac, src=src, dst=dst, vni=vni)[:50])
    hdr[16:18] = hdr[24:26] = hdr[34:36] = hdr[38:40] = b"\0\0"
    words = sum(int.from_bytes(hdr[i:i + 2], sys.byteorder) for i in range(14, 34, 2))
    return bytes(hdr), words


class Lean:
    """bench/lean_vxlan.c loaded; configure() fills its per-CPU array, fds[] are the two programs."""

    def __init__(self):
        import bcc  # noqa: PLC0415 - the bench needs it, importing bench.lean should not
        self.bpf = bcc.BPF(src_file=SRC.encode(), cflags=[f"-I{BPF_DIR}"])
        self.fds = {p: self.bpf.load_func(p.encode(), bcc.BPF.SCHED_CLS).fd for p in PROGS}

    def configure(self, key: int, *, mac: str, ifindex: int, outer: bytes = bytes(50), csum_words: int = 0,
                  local_ip: str = "0.0.0.0", vni: int = VNI, port: int = cwire.DEFAULT_PORT) -> None:
        t = self.bpf[b"lean_cfg"]
        v = t.sLeaf()
        ctypes.memmove(v.outer, outer, 50)
        ctypes.memmove(v.mac, model.mac_bytes(mac), 6)
        v.csum_words, v.ifindex = csum_words, ifindex
        v.local_ip = be32(local_ip)
        v.vni_word = int.from_bytes((vni << 8).to_bytes(4, "big"), sys.byteorder)
        v.port = int.from_bytes(port.to_bytes(2, "big"), sys.byteorder)
        t[ctypes.c_int(key)] = t.Leaf(*([v] * t.total_cpu))

    def close(self) -> None:
        self.bpf.cleanup()


class Hooks:
    """Puts the lean pair or ours at the two hooks the frames pass: from_endpoint at h1's endpoint
    port, from_overlay at h2's uplink (tcx replaces a program of the same name in place)."""

    def __init__(self, lean: Lean, port: int, uplink: int):
        self.lean = lean
        self.at = {"from_endpoint": (lab.host_ns(1), port), "from_overlay": (lab.host_ns(2), uplink)}

    @contextlib.contextmanager
    def around(self, mode: str):
        """For bench.pps's alternate: the mode's programs in place for its runs (routing has none)."""
        if mode != "routing":
            self.use(mode)
        yield

    def use(self, mode: str) -> None:
        for prog, (ns, idx) in self.at.items():
            if mode == "lean":
                tcx.attach(ns, idx, self.lean.fds[prog], prog)
            else:
                fd = loader.open_prog(Node(ns).pin_dir, prog)
                try:
                    tcx.attach(ns, idx, fd, prog)
                finally:
                    os.close(fd)


def setup(lean: Lean, a: dict, b: dict) -> Hooks:
    """Fill the lean pair's map for a's frames to b over the lab's uplinks; the hooks that swap them in."""
    st1, st2 = Node(lab.host_ns(1)).require_up(), Node(lab.host_ns(2)).require_up()
    port = next(e.ifindex for e in st1.endpoints.values() if e.ip == a["ip"])
    dest = next(e.ifindex for e in st2.endpoints.values() if e.ip == b["ip"])
    outer, words = outer_template(st1.uplink.mac, st2.uplink.mac, lab.vtep_ip(1), lab.vtep_ip(2), VNI)
    lean.configure(0, mac=b["mac"], ifindex=st1.uplink.ifindex, outer=outer, csum_words=words)
    lean.configure(1, mac=b["mac"], ifindex=dest, local_ip=lab.vtep_ip(2))
    return Hooks(lean, port, st2.uplink.ifindex)


def tcp_rounds(args, pairs: dict, around, samples: dict) -> None:
    """--tcp: args.rounds rounds of two passes over the modes, the order reversed every other
    pass; in each pass a single-stream run and a paced run per mode, inside around(mode). (The
    modes took turns per round before, each with both its runs back to back.)"""
    secs = max(1, round(args.seconds))
    for r in range(args.rounds):
        for p in range(2):
            for mode in (MODES if (2 * r + p) % 2 == 0 else tuple(reversed(MODES))):
                a, b = pairs[mode]
                got = samples[mode]
                with around(mode):
                    got.setdefault("tcp_gbps", []).append(tcp(a, b, secs))
                    got.setdefault("cpu_ms_per_gbit", []).append(cpu_per_gbit(a, b, secs, args.paced_gbps))
        log(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{mode} {'/'.join(f'{x:.2f}' for x in samples[mode]['tcp_gbps'][-2:])} Gbit/s "
            f"{'/'.join(f'{x:.1f}' for x in samples[mode]['cpu_ms_per_gbit'][-2:])} CPU-ms/Gbit" for mode in MODES))


ROWS = [  # key, label, scale, format
    ("pps", "frames reaching the sink, kpps", 1e-3, ".0f"),
    ("cpu_ns", "busy CPU per frame, ns (whole machine)", 1, ".0f"),
    ("from_endpoint_ns", "from_endpoint, ns per run (BPF statistics)", 1, ".0f"),
    ("from_overlay_ns", "from_overlay, ns per run", 1, ".0f"), ("bpf_ns", "both programs, ns per frame", 1, ".0f"),
    ("tcp_gbps", "single-stream TCP, Gbit/s", 1, ".2f"),
    ("cpu_ms_per_gbit", "CPU per Gbit, TCP paced, ms (whole machine; lower is better)", 1, ".1f")]


def table(res: dict) -> str:
    m, a, med = res["machine"], res["args"], res["median"]
    if a.get("tcp"):
        cmd = f"bench.lean --tcp --rounds {a['rounds']} --seconds {a['seconds']:g} --paced-gbps {a['paced_gbps']:g}"
        what = (f"Single-stream TCP and TCP paced at {a['paced_gbps']:g} Gbit/s, two runs of each per mode and "
                "round (the modes take turns run by run), from one sandbox to the other; the lean pair carries the data direction, the ACKs pass "
                "our programs.")
    else:
        cmd = (f"bench.lean --rounds {a['rounds']} --seconds {a['seconds']:g} --flows {a['flows']}"
               f"{' --no-bpf-stats' if a.get('no_bpf_stats') else ''}")
        what = ("64-byte frames from the C generator, dropped at the receiving sandbox's tc ingress (as "
                "bench.pps).")
    out = [f"{headline(m)}. Command: `.venv/bin/python -m {cmd}`. Medians of "
           f"{a['rounds']} alternating rounds, ratios with their 95% bootstrap interval. {what} lean = dataplane "
           "with bench/lean_vxlan.c's two programs in place of ours.", "",
           "| metric | routing | dataplane | lean | dataplane / lean | dataplane / routing | lean / routing |",
           "|---|---|---|---|---|---|---|"]
    for k, label, scale, fmt in [r for r in ROWS if any(r[0] in med[x] for x in MODES)]:
        vals = [f"{med[x][k] * scale:{fmt}}" if k in med[x] else "-" for x in MODES]
        cells = []
        for x, y in (("dataplane", "lean"), ("dataplane", "routing"), ("lean", "routing")):
            if k in med[x] and k in med[y]:
                lo, hi = ratio_ci(res["samples"][x][k], res["samples"][y][k])
                cells.append(f"{med[x][k] / med[y][k]:.2f}x ({lo:.2f}-{hi:.2f})")
            else:
                cells.append("-")
        out.append(f"| {label} | {' | '.join(vals)} | {' | '.join(cells)} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/lean", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=3)
    p.add_argument("--flows", type=int, default=64)
    p.add_argument("--no-bpf-stats", action="store_true",
                   help="leave the kernel's BPF statistics off: their clock reads cost every program run "
                        "something routing does not pay; the programs' ns per run go unmeasured")
    p.add_argument("--tcp", action="store_true",
                   help="single-stream and paced TCP instead of 64-byte frames (BPF statistics off)")
    p.add_argument("--paced-gbps", type=float, default=4.0, help="--tcp: the paced runs' rate (default: %(default)s)")
    p.add_argument("--out", default=None, help="results name (default: lean, or lean-tcp with --tcp)")
    args = p.parse_args(argv)
    args.out = args.out or ("lean-tcp" if args.tcp else "lean")
    if args.rounds < 2 or args.seconds <= 0 or not 1 <= args.flows <= 65535:
        p.error("--rounds >= 2, --seconds > 0, --flows 1..65535")
    samples = {m: {} for m in MODES}
    lab.down()
    with contextlib.ExitStack() as stack:      # undone in reverse, each step even if one fails
        stack.callback(lab.down)
        if not (args.no_bpf_stats or args.tcp):
            stack.enter_context(bpf_stats())
        pairs, macs = lab_pairs()
        del pairs["vxlan"]
        pairs["lean"], macs["lean"] = pairs["dataplane"], macs["dataplane"]
        lean = Lean()
        stack.callback(lean.close)
        hooks = setup(lean, *pairs["lean"])
        hooks.use("lean")
        a, b = pairs["lean"]
        assert ping(a["name"], b["ip"], count=2)[0] == 2, "lean: no connectivity"
        hooks.use("dataplane")
        if args.tcp:
            tcp_rounds(args, pairs, hooks.around, samples)
        else:
            sink = Sink()
            stack.callback(sink.close)
            for mode in ("routing", "dataplane"):
                sink.attach(pairs[mode][1]["name"], "eth0")
            alternate(args, MODES, pairs, macs, sink, samples, hooks.around, ("dataplane", "lean"), log)
    save_samples(samples, args, table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
