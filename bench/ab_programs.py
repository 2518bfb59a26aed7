"""bench/ab_programs: our programs' ns per run (kernel BPF statistics) and the frame and TCP rates,
for whichever checkout is on PYTHONPATH: run it on two commits to compare them on one machine.

    PYTHONPATH=<checkout> .venv/bin/python <checkout>/bench/ab_programs.py

Two lab hosts (no registry), 5 rounds of 2 s of 64-byte frames (C generator) and 3 s of TCP;
prints the medians and each round's ns per run."""
import statistics, sys
from bench.profile import _prog_times, bpf_stats, ns_per_run
from bench.run import pps64, tcp
from lab import topology as lab
def per_run(before, after):
    return {n: round(v, 1) for n, v in ns_per_run(before, after).items()}
lab.down()
try:
    with bpf_stats():
        lab.up(2, [256], per_host=1, registry="none")
        info = lab.ls()
        a, b = (next(s for s in info["sandboxes"] if s["host"] == f"h{h}") for h in (1, 2))
        from lab.traffic import ping
        ping(a["name"], b["ip"], count=2)
        res = {"from_endpoint": [], "from_overlay": [], "pps": [], "tcp": []}
        for r in range(5):
            before = _prog_times()
            pps, _ = pps64(a, b, 2)
            ns = per_run(before, _prog_times())
            res["from_endpoint"].append(ns.get("from_endpoint")); res["from_overlay"].append(ns.get("from_overlay"))
            res["pps"].append(pps)
            res["tcp"].append(tcp(a, b, 3))
        print({k: round(statistics.median(v), 1) for k, v in res.items()}, res["from_endpoint"], res["from_overlay"])
finally:
    lab.down()
