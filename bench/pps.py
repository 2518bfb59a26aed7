"""bench/pps: 64-byte packet rate where the path is the bottleneck, not a receiver.

    .venv/bin/python -m bench.pps [--rounds 5] [--seconds 3] [--flows 64]

bench.run's 64-byte row ends in a socket in the receiving sandbox, and its
wake-ups cap every mode near the same rate. Here the receiving sandbox's eth0
drops every IPv4 frame at tc ingress (a few lines of BPF that count and
return TC_ACT_SHOT: this kernel has no gact/matchall; ARP passes, or the
routing mode's neighbour entry for the sandbox goes stale and fails), so nothing past the
path under test is paid for. The C generator (AF_PACKET, qdisc bypassed,
--flows UDP source ports) sends unthrottled from the other sandbox; the veth
hands each frame to the backlog of the sending CPU, so the whole path runs
there, inline, and the rate is one CPU's worth of it.

Per mode (routing, kernel vxlan + bridge, dataplane, alternating round by
round) and per run: frames/s that reached the sink; whole-machine busy CPU
ns per frame (wall x CPUs less /proc/uptime's idle, as bench.run); softirq
ns per frame (/proc/stat: tick samples, unbiased under a steady load like
this one, unlike a paced sender's); and for dataplane our programs' ns per
run from the kernel's BPF statistics. The lab has no registry (as bench.run):
remote MACs are learned, so from_overlay takes the learned-MAC path, two
hash lookups longer than the registry's owned MACs. (With a registry the
VNI gets a gateway whose NAT rule puts conntrack on every frame the host
namespaces forward: the routing and vxlan baselines slowed by a quarter.) A
fourth mode, floor, drops at the
sending sandbox's own host-side veth: the generator's and the first veth's
cost, which every mode pays, so "path ns" = CPU ns - floor ns is what the
path itself costs.

Writes bench/results/pps.json and pps.md (--out NAME: NAME.*)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys

from bench import baselines
from bench.profile import _prog_times, bpf_stats, ns_per_run
from bench.run import Busy, _in, headline, next_hop_mac, ratio_ci, save_samples
from dataplane.kernel import gso as linkgso, netlink
from lab import topology as lab
from lab.traffic import ping

SINK_C = r"""
BPF_PERCPU_ARRAY(sunk, u64, 1);

int sink(struct __sk_buff *skb)
{
	int k = 0;
	u64 *n;

	/* ARP passes: a router's neighbour entry for the sandbox must stay reachable. */
	if (skb->protocol != bpf_htons(0x0800))
		return 0; /* TC_ACT_OK */
	n = sunk.lookup(&k);
	if (n)
		*n += 1;
	return 2; /* TC_ACT_SHOT */
}
"""
MODES = ("floor", *baselines.MODES)
TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"bench/pps: {msg}", file=sys.stderr, flush=True)


class Sink:
    """One loaded sink program, attached wherever frames should end; count() sums every CPU."""

    def __init__(self):
        import bcc  # noqa: PLC0415 - the bench needs it, importing bench.pps should not
        self.bpf = bcc.BPF(text=SINK_C.encode())
        self.fn = self.bpf.load_func(b"sink", bcc.BPF.SCHED_CLS)

    def attach(self, ns: str, ifname: str) -> int:
        idx = netlink.link_index(ns, ifname)
        netlink.tc_attach(ns, idx, self.fn.fd, "sink")
        return idx

    def count(self) -> int:
        return sum(self.bpf[b"sunk"][0])

    def close(self) -> None:
        self.bpf.cleanup()


def _softirq_ticks() -> int:
    with open("/proc/stat") as f:
        return int(f.readline().split()[7])   # cpu  user nice system idle iowait irq softirq


def run_once(sink: Sink, a: dict, b: dict, dst_mac: str, seconds: float, flows: int, dataplane: bool) -> dict:
    """One unthrottled run from a's sandbox toward b's address, b's frames sunk."""
    before, n0, si0 = _prog_times(), sink.count(), _softirq_ticks()
    with Busy() as busy:
        sent = json.loads(_in(a["name"], [sys.executable, "-m", "bench.gen", "send", "--dst-mac", dst_mac,
                                          "--src-ip", a["ip"], "--dst-ip", b["ip"], "--seconds", str(seconds),
                                          "--flows", str(flows)], check=True).stdout)
    got = max(1, sink.count() - n0)
    ns = ns_per_run(before, _prog_times())
    out = {"pps": got / sent["seconds"], "sent_pps": sent["pps"], "cpu_ns": busy.ns / got,
           "softirq_ns": (_softirq_ticks() - si0) * TICK_NS / got}
    if dataplane and "from_endpoint" in ns:
        out["bpf_ns"] = ns["from_endpoint"] + ns.get("from_overlay", 0.0)
        out["from_endpoint_ns"], out["from_overlay_ns"] = ns["from_endpoint"], ns.get("from_overlay")
    return out


METRICS = [  # key, label, format, scale
    ("pps", "64-byte frames reaching the sink, kpps", "{:.0f}", 1e-3),
    ("cpu_ns", "busy CPU per frame, ns, whole machine (lower is better)", "{:.0f}", 1),
    ("path_ns", "the path's own CPU per frame (CPU ns less the floor's), ns (lower is better)", "{:.0f}", 1),
    ("softirq_ns", "softirq CPU per frame, ns, /proc/stat (lower is better)", "{:.0f}", 1),
]


def table(res: dict) -> str:
    m, a, med = res["machine"], res["args"], res["median"]
    out = [f"{headline(m)}. Command: `.venv/bin/python -m "
           f"bench.pps --rounds {a['rounds']} --seconds {a['seconds']} --flows {a['flows']}`. Medians of "
           f"{a['rounds']} alternating rounds; ratios with their 95% bootstrap interval. The receiving sandbox "
           "drops every frame at tc ingress; floor drops at the sender's own host-side veth (generator + one "
           "veth). No registry: remote MACs are learned. IPv4 GSO limit 65536 everywhere.", "",
           "| metric | floor | routing | kernel vxlan + bridge | dataplane | dataplane / vxlan | dataplane / routing |",
           "|---|---|---|---|---|---|---|"]
    for k, label, fmt, scale in METRICS:
        vals = [fmt.format(med[x][k] * scale) if k in med[x] else "-" for x in MODES]
        cells = []
        for vs in ("vxlan", "routing"):
            lo, hi = ratio_ci(res["samples"]["dataplane"][k], res["samples"][vs][k])
            cells.append(f"{med['dataplane'][k] / med[vs][k]:.2f}x ({lo:.2f}-{hi:.2f})")
        out.append(f"| {label} | {' | '.join(vals)} | {' | '.join(cells)} |")
    d = med["dataplane"]
    out += ["", f"Our programs (BPF statistics, dataplane runs): from_endpoint {d['from_endpoint_ns']:.0f} ns + "
            f"from_overlay {d['from_overlay_ns']:.0f} ns = {d['bpf_ns']:.0f} ns per frame; loss between generator "
            "and sink: " + ", ".join(f"{x} {max(0.0, 100 * (1 - med[x]['pps'] / med[x]['sent_pps'])):.1f}%" for x in MODES) + "."]
    return "\n".join(out) + "\n"


def lab_pairs() -> tuple[dict, dict]:
    """The bench lab up (two hosts, VNI 256, no registry, beside the baselines): a sender and
    a receiver sandbox per mode, and the MAC each sender's frames go to, connectivity checked."""
    pairs = baselines.up(linkgso.LEGACY_MAX)
    macs = {}
    for mode, (a, b) in pairs.items():
        assert ping(a["name"], b["ip"], count=2)[0] == 2, f"{mode}: no connectivity"
        macs[mode] = next_hop_mac(a["name"], b["ip"])    # before the sink: its neighbour entry stays
    return pairs, macs


def alternate(args, modes: tuple, pairs: dict, macs: dict, sink: Sink, samples: dict, around, programs,
              say) -> None:
    """args.rounds rounds of one run_once per mode, the order reversed every other round, each
    run inside around(mode) (a context manager); programs: the modes whose BPF statistics count."""
    for r in range(args.rounds):
        line = []
        for mode in (modes if r % 2 == 0 else tuple(reversed(modes))):
            a, b = pairs[mode]
            with around(mode):
                got = run_once(sink, a, b, macs[mode], args.seconds, args.flows, mode in programs)
            for k, v in got.items():
                samples[mode].setdefault(k, []).append(v)
            line.append(f"{mode} {got['pps'] / 1e3:.0f} kpps {got['cpu_ns']:.0f} ns"
                        + (f" (programs {got['bpf_ns']:.0f})" if "bpf_ns" in got else ""))
        say(f"round {r + 1}/{args.rounds}: " + ", ".join(line))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/pps", description="64-byte packet rate with a sink that drops at tc")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3)
    p.add_argument("--flows", type=int, default=64, help="UDP source ports the generator cycles through")
    p.add_argument("--out", default="pps")
    args = p.parse_args(argv)
    if args.rounds < 2 or args.seconds <= 0 or not 1 <= args.flows <= 65535:
        p.error("--rounds >= 2, --seconds > 0, --flows 1..65535")
    samples = {m: {} for m in MODES}
    lab.down()

    @contextlib.contextmanager
    def floor_sink(mode: str):
        """floor: the sink at the sender's own host-side veth for the run."""
        if mode != "floor":
            yield
            return
        idx = sink.attach(lab.host_ns(1), "rv0")
        try:
            yield
        finally:
            netlink.clsact_delete(lab.host_ns(1), idx)

    with contextlib.ExitStack() as stack:      # undone in reverse, each step even if one fails (as bench.lean)
        stack.callback(lab.down)
        stack.enter_context(bpf_stats())
        pairs, macs = lab_pairs()
        sink = Sink()
        stack.callback(sink.close)
        for mode, (a, b) in pairs.items():
            sink.attach(b["name"], "eth0")
        pairs["floor"], macs["floor"] = pairs["routing"], macs["routing"]
        alternate(args, MODES, pairs, macs, sink, samples, floor_sink, ("dataplane",), log)
    for mode in baselines.MODES:   # each run less the floor's median
        fl = statistics.median(samples["floor"]["cpu_ns"])
        samples[mode]["path_ns"] = [x - fl for x in samples[mode]["cpu_ns"]]
    save_samples(samples, args, table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
