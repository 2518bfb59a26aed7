"""bench/callees: where our programs' time goes, by what they call. perf
samples the whole machine (bench/perfstacks.py) while the C generator sends
64-byte frames from h1's sandbox to h2's; each sample with one of our programs
on its stack is counted under the function the program called (a helper, a
map's lookup) or under the program's own code when it is the leaf, and those
are placed by their offset in the program's JIT image.

    .venv/bin/python -m bench.callees [--seconds 4]

Two lab hosts, no registry, a sandbox each (as bench.headroom). Writes
bench/results/callees.json and callees.md.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys

from bench import perfstacks
from bench.profile import shown_programs
from bench.run import _in, headline, machine, next_hop_mac, save
from lab import topology as lab

PROGRAMS = ("from_endpoint", "from_overlay")
OWN = "(the program's own code)"


def attribute(samples: list[list[str]], prog: str) -> dict:
    """Samples with prog on the stack: how many, by the function prog called, by leaf
    function, and the program's own samples by JIT offset."""
    callee, leaf, offsets, n = collections.Counter(), collections.Counter(), collections.Counter(), 0
    for frames in samples:
        k = next((i for i, f in enumerate(frames) if f.startswith("bpf_prog_") and f"_{prog}+" in f), None)
        if k is None:
            continue
        n += 1
        callee[perfstacks.symbol(frames[k - 1]) if k else OWN] += 1
        leaf[perfstacks.symbol(frames[0])] += 1
        if not k:
            offsets[frames[0].split("+", 1)[1]] += 1
    return {"samples": n, "callees": dict(callee.most_common()), "leaves": dict(leaf.most_common(15)),
            "own_offsets": dict(offsets.most_common(10))}


def table(prog: str, r: dict) -> list[str]:
    n = max(1, r["samples"])
    out = [f"## {prog}: {r['samples']} samples with it on the stack", "",
           "| called from the program | share of its samples |", "|---|---|"]
    out += [f"| {name} | {100 * c / n:.1f}% |" for name, c in r["callees"].items() if 100 * c / n >= 0.5]
    own = max(1, r["callees"].get(OWN, 0))
    out += ["", "Leaf functions: " + ", ".join(f"{s} {100 * c / n:.1f}%" for s, c in r["leaves"].items()) + ".",
            "The program's own samples at its ten busiest JIT offsets: "
            + ", ".join(f"{o} {100 * c / own:.1f}%" for o, c in r["own_offsets"].items()) + ".", ""]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/callees")
    p.add_argument("--seconds", type=float, default=4)
    args = p.parse_args(argv)
    res = {"machine": machine(), "args": vars(args), "programs": {}}
    try:
        lab.down()
        lab.up(2, [256], per_host=1, registry="none")
        info = lab.ls()
        a, b = (next(s for s in info["sandboxes"] if s["host"] == f"h{h}") for h in (1, 2))
        _in(a["name"], ["ping", "-c", "2", "-i", "0.2", b["ip"]], check=True)
        gen = [sys.executable, "-m", "bench.gen", "send", "--dst-mac", next_hop_mac(a["name"], b["ip"]),
               "--src-ip", a["ip"], "--dst-ip", b["ip"], "--seconds", str(args.seconds + 1.5)]
        samples = perfstacks.stacks(lambda: _in(a["name"], gen), args.seconds)
        sizes = _jit_sizes()
    finally:
        lab.down()
    m = res["machine"]
    out = [f"{headline(m)}. Command: `.venv/bin/python -m "
           f"bench.callees --seconds {args.seconds}`: `perf record -a -g` (cpu-clock) for {args.seconds} s of "
           "64-byte frames from the C generator, h1's sandbox to h2's. JIT image sizes: "
           + ", ".join(f"{k} {v} bytes" for k, v in sizes.items()) + ".", ""]
    for prog in PROGRAMS:
        res["programs"][prog] = dict(attribute(samples, prog), jit_bytes=sizes[prog])
        out += table(prog, res["programs"][prog])
    save(res, "\n".join(out), "callees")
    return 0


def _jit_sizes() -> dict[str, int | None]:
    """The JIT image size of a loaded program of each of PROGRAMS' names (one bpftool call),
    None where none is found."""
    try:
        shown = shown_programs()
    except (subprocess.CalledProcessError, ValueError):
        shown = []
    return {prog: next((p.get("bytes_jited") for p in shown if p.get("name") == prog), None) for prog in PROGRAMS}


if __name__ == "__main__":
    sys.exit(main())
