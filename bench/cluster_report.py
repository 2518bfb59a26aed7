"""The Markdown report of bench/cluster.py's results (bench/results/cluster.md)."""

from __future__ import annotations

from bench.run import headline


def table(r: dict) -> str:
    m, a = r["machine"], r["args"]
    out = [f"{headline(m)}. 3 hosts, 3-member etcd "
           f"(Debian etcd-server, TLS and authentication on), all on one machine. Command: `.venv/bin/python -m "
           f"bench.cluster --endpoints {a['endpoints']} --rate {a['rate']} --seconds {a['seconds']} "
           f"--writers {a['writers']} --per-txn {a['per_txn']} --starts {a.get('starts', 1)} --parts {a['parts']}`."]
    if "startup_cold" in r:
        out += ["", f"Start-up with {r['startup_cold']['endpoints']} endpoints in the registry (h1's agent "
                "restarted; medians of the runs; a cold start reads the IPAM claims after its sync):", "",
                "| start-up sync | agent start to synced (each run) | ... and the claims read | registry read | "
                "sync into maps | peak RSS |", "|---|---|---|---|---|---|"]
    for name, s in (("cold (no view on disk: a host's first start)", r.get("startup_cold")),
                    ("warm (the view on disk, then the watch)", r.get("startup_warm"))):
        if s is None:
            continue
        each = ", ".join(f"{x['agent_start_to_synced_s']:.2f}" for x in s.get("runs", [s]))
        claims = f"{s['agent_start_to_claims_s']:.2f} s" if "agent_start_to_claims_s" in s else "-"
        out.append(f"| {name} | {s['agent_start_to_synced_s']:.2f} s ({each}) | {claims} | {s['snapshot_ms']:.0f} ms | "
                   f"{s['sync_to_maps_ms']:.0f} ms | {s['rss_peak_mib']:.1f} MiB |")
    for key, what in (("sustained_single", "one endpoint per transaction"),
                      ("sustained_batched", f"{a['per_txn']} endpoints per transaction")):
        u = r.get(key)
        if u is None:
            continue
        out += ["", f"Sustained, {what}, {u['writers']} writers: {u['written']} endpoints in {u['seconds']} s, "
                f"{u['achieved_per_s']}/s (target {u['target_per_s']}/s), {u.get('elections', '?')} leader elections "
                "meanwhile. The write itself (start to etcd's "
                f"answer): median {u['commit_median_ms']} ms, p99 {u['commit_p99_ms']} ms, max {u['commit_max_ms']} ms. "
                "Write to FDB entry, every 10th timed:", "",
                "| host | n | median | p99 | max | not seen in 10 s | from etcd's answer: median | p99 |",
                "|---|---|---|---|---|---|---|---|"]
        for ns, h in u["per_host"].items():
            out.append(f"| {ns} | {h['n']} | {h['median_ms']} ms | {h['p99_ms']} ms | {h['max_ms']} ms | "
                       f"{h['missing']} | {h.get('after_ack_median_ms', '-')} ms | {h.get('after_ack_p99_ms', '-')} ms |")
        if u.get("cpu_percent"):
            out += ["", "CPU while it ran, % of one core: " +
                    ", ".join(f"{k} {v}" for k, v in u["cpu_percent"].items()) + "."]
    k = r.get("leader_kill")
    if k:
        out += ["", f"Leader kill ({k['killed']}): write committed {k['write_committed_ms']} ms after the kill, "
                    f"on every host after {k['converged_ms']} ms ({k['visible_ms']})."]
    return "\n".join(out) + "\n"
