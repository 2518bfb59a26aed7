"""bench/cluster: the control plane on a 3-member etcd cluster (the lab's).

    .venv/bin/python -m bench.cluster [--endpoints 100000] [--rate 1000] [--seconds 60]
                                      [--writers 16] [--per-txn 10]

Three lab hosts with agents, an etcd member per underlay host e1..e3, and two
registry-only hosts (f1, f2: namespaces that own their VTEP address and run
nothing) that every endpoint lives on, so each write changes all three
agents' maps.

1. Start-up: N endpoints in the registry, h1's agent restarted, cold (its
   view on disk removed: a host's first start, a full read of the registry)
   and warm (from the view its stop wrote, agent/cache.py): process start to
   synced (wall clock), the registry read and the map sync the agent reports,
   its peak RSS.
2. Sustained updates: endpoints created at --rate per second for --seconds by
   --writers threads, in transactions of the registry's own shape (record +
   both IPAM claims), first one endpoint per transaction, then --per-txn;
   every 10th is timed from just before its write until its FDB entry is in
   each host's map: median, p99, max per host, and the rate reached.
3. Leader kill: the etcd leader is SIGKILLed and one endpoint written at once
   (retried until a new leader takes it); the time from the kill to its entry
   on every host.
Writes bench/results/cluster.json and cluster.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import ipaddress
import multiprocessing
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time

from bench.cluster_report import table
from bench.run import machine, save
from dataplane.agent import cache, client, process
from dataplane.core import model
from dataplane.core.keys import mac_key
from dataplane.kernel import netlink
from dataplane.node import Node
from dataplane.registry import Endpoint, Host, open_registry
from dataplane.registry.kv import Txn
from dataplane.registry.store import key
from lab import topology as lab

DP = [sys.executable, "-m", "dataplane.cli"]
HOSTS = [lab.host_ns(i) for i in (1, 2, 3)]
FAKE = {"f1": "198.18.0.101", "f2": "198.18.0.102"}
NET, VNI, SUBNET = "bench", 4000, ipaddress.IPv4Network("10.64.0.0/14")
MAP = 262144


def log(msg: str) -> None:
    print(f"bench/cluster: {msg}", file=sys.stderr, flush=True)


def in_reg(fn, *args):
    """fn(registry, *args) from a namespace on the underlay, as a host would call."""
    def run():
        reg = open_registry(lab.registry_url("etcd"))
        try:
            return fn(reg, *args)
        finally:
            reg.close()
    return netlink.call_in_netns("dpl-f1", run)


def setup(n_max: int) -> None:
    lab.down()
    lab.up(3, [256], per_host=0, registry="etcd", etcd_members=3, lease_ttl=10)
    for i, (name, ip) in enumerate(FAKE.items(), 1):
        lab.underlay_host(f"dpl-{name}", f"ul-{name}", lab.UPLINK, ip)
    url = lab.registry_url("etcd")
    for i, ns in enumerate(HOSTS, 1):          # maps large enough for everything the run writes
        subprocess.run(DP + ["--netns", ns, "down"], check=True, capture_output=True)
        subprocess.run(DP + ["--netns", ns, "up", "--underlay", lab.UPLINK, "--registry", url, "--host-name", f"h{i}",
                             "--map-size", f"DP_MAP_FDB={MAP}", "--map-size", f"DP_MAP_NEIGH={MAP}"],
                       check=True, capture_output=True)

    def hosts(reg):
        reg.network_create(NET, VNI, str(SUBNET))
        for name, ip in FAKE.items():
            reg.host_register(Host.make(name, ip), reg.kv.lease_grant(3600))
    in_reg(hosts)


def endpoint(i: int) -> Endpoint:
    ip = SUBNET.network_address + 2 + i
    return Endpoint.make(f"b{i}", NET, "f1" if i % 2 else "f2", model.mac_for_ip(ip), str(ip))


def write(reg, eps: list[Endpoint]) -> None:
    t = Txn()
    for e in eps:
        t.put(key("endpoints", e.id), e.to_json()).put(key("ipam", NET, e.ip), e.id.encode())
        t.put(key("macs", NET, e.mac), e.id.encode())
    if not reg.kv.commit(t)[0]:
        raise RuntimeError("bulk write refused")


def populate(n: int) -> float:
    def work(reg):
        t0 = time.monotonic()
        for i in range(0, n, 40):              # 120 operations a transaction (etcd's default limit is 128)
            write(reg, [endpoint(j) for j in range(i, min(n, i + 40))])
            if i and i % 20000 == 0:
                log(f"registered {i}/{n}")
        return time.monotonic() - t0
    return in_reg(work)


def startup(n: int, warm: bool) -> dict:
    """h1's agent stopped (which writes its view to disk) and started again:
    warm, from that view; cold, with it removed first (a host's first start)."""
    url = lab.registry_url("etcd")
    for ns in HOSTS:
        st = client.call(ns, "status")
        assert st["installed"]["fdb"] >= n or _wait_installed(ns, n), st["installed"]
    process.stop(HOSTS[0])
    if not warm:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(cache.path(HOSTS[0]))
    t0 = time.monotonic()
    process.spawn(HOSTS[0], HOSTS[0], url, "h1", 10, quiet=True)
    wall = time.monotonic() - t0
    st = client.call(HOSTS[0], "status")
    assert st["warm_start"] == warm, st["warm_start"]
    while st["claims_pending"]:         # a cold start's IPAM claims, read after its sync
        assert time.monotonic() - t0 < 60, "the IPAM claims were not read within 60 s"
        time.sleep(0.02)
        st = client.call(HOSTS[0], "status")
    whole = time.monotonic() - t0
    return {"endpoints": n, "warm": warm, "agent_start_to_synced_s": round(wall, 2),
            "agent_start_to_claims_s": round(whole, 2), "claims_read_ms": st["last_claims_ms"],
            "snapshot_ms": st["last_snapshot_ms"], "sync_to_maps_ms": st["last_sync_ms"],
            "rss_peak_mib": round(st["rss_peak_kib"] / 1024, 1), "installed_fdb": st["installed"]["fdb"]}


def p99(v: list[float]) -> float:
    """The 99th percentile of sorted v (the sample at 0.99 of the way, rounded down)."""
    return v[min(len(v) - 1, int(0.99 * (len(v) - 1)))]


def summary(runs: list[dict]) -> dict:
    """The median run of each measure, and every run."""
    med = {k: statistics.median(r[k] for r in runs) for k in ("agent_start_to_synced_s", "agent_start_to_claims_s",
                                                               "snapshot_ms", "sync_to_maps_ms", "rss_peak_mib")}
    return {**runs[0], **med, "runs": runs}


def _wait_installed(ns: str, n: int, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.call(ns, "status")["installed"]["fdb"] >= n:
            return True
        time.sleep(0.5)
    return False


def _poll_host(ns: str, q, out) -> None:
    """One host's timer, in a process of its own so the writers' threads never
    hold its GIL: (mac, write time, etcd's answer time) arrive on q, None ends;
    each is timed until its FDB entry is in ns's map. Sends ([(ms from the write,
    write time, ms from etcd's answer)], not seen in 10 s)."""
    pending: dict[str, tuple[float, float]] = {}
    lat, missing, stopping = [], 0, False
    with Node(ns).maps() as m:
        out.send("ready")
        while not stopping or pending:
            with contextlib.suppress(queue.Empty):
                while True:
                    item = q.get_nowait()
                    if item is None:
                        stopping = True
                    else:
                        pending[item[0]] = item[1:]
            now = time.perf_counter()
            for mac, (t, t_ack) in list(pending.items()):
                if m.dp_fdb.get(mac_key(VNI, mac)) is not None:
                    seen = time.perf_counter()
                    lat.append(((seen - t) * 1000, t, (seen - t_ack) * 1000))
                elif now - t < 10:
                    continue
                else:
                    missing += 1
                del pending[mac]
            time.sleep(0.001)
    out.send((lat, missing))


class Watcher:
    """Times sampled endpoints from their write to their FDB entry on every host,
    one process per host (perf_counter is CLOCK_MONOTONIC: one clock for all)."""

    def __init__(self):
        ctx = multiprocessing.get_context("spawn")
        self.queues = {ns: ctx.Queue() for ns in HOSTS}
        self.pipes = {ns: ctx.Pipe(duplex=False) for ns in HOSTS}
        self.procs = [ctx.Process(target=_poll_host, args=(ns, self.queues[ns], self.pipes[ns][1]), daemon=True)
                      for ns in HOSTS]
        for p in self.procs:
            p.start()
        for rd, _ in self.pipes.values():       # started and imported before anything is timed
            assert rd.recv() == "ready"

    def expect(self, e: Endpoint, t_write: float, t_ack: float) -> None:
        for q in self.queues.values():
            q.put((e.mac, t_write, t_ack))

    def finish(self) -> dict:
        """{ns: (sorted _poll_host samples, missing)} once every pending entry is seen or given up."""
        for q in self.queues.values():
            q.put(None)
        res = {}
        for ns, (rd, _) in self.pipes.items():
            lat, missing = rd.recv()
            res[ns] = (sorted(lat), missing)
        for p in self.procs:
            p.join(timeout=30)
        return res


def _slow_turns(ns: str, since: int) -> list[str]:
    """The agent's "slow turn" warnings logged after byte offset since."""
    with open(process.log_path(ns), "rb") as f:
        f.seek(since)
        return [ln.decode(errors="replace").strip() for ln in f if b"slow turn" in ln]


def _cpu_s(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each process has used so far; gone ones left out."""
    out = {}
    for name, pid in pids.items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def _processes(w: "Watcher") -> dict[str, int]:
    """Who shares the machine during a sustained run: agents, etcd members, the
    writers (this process) and the timers (one process per host)."""
    pids = {f"agent {ns}": process.running_pid(ns) for ns in HOSTS}
    pids.update({f"etcd {m['name']}": m["pid"] for m in lab.etcd_members() if m["pid"]})
    pids["writers"] = os.getpid()
    pids.update({f"timer {ns}": p.pid for ns, p in zip(HOSTS, w.procs)})
    return {k: v for k, v in pids.items() if v}


def raft_term() -> int:
    """The cluster's election term: it grows by one (or more) with every election."""
    return max((m["raft_term"] or 0) for m in lab.etcd_members())


def sustained(start: int, rate: int, seconds: float, writers: int = 16, per_txn: int = 1) -> dict:
    """rate endpoints/s for seconds, by writers threads, per_txn endpoints in each transaction."""
    term0 = raft_term()
    logs0 = {ns: os.path.getsize(process.log_path(ns)) for ns in HOSTS}
    w = Watcher()
    done = [0] * writers
    per = rate / writers
    commits: list[float] = []        # ms from a timed write's start to etcd's answer

    ready = threading.Barrier(writers + 1)       # the writers connected, and this thread: timing starts

    def writer(reg, k: int):
        reg.kv.range_exact(key("networks", NET))     # connected and logged in before anything is timed
        reg.kv.open_channels(wait_s=5)               # and writing over gRPC, as the agents do
        ready.wait()
        i, t0 = k * per_txn, time.perf_counter()
        while True:
            due = t0 + done[k] / per
            now = time.perf_counter()
            if now - t0 >= seconds:
                break
            if due > now:
                time.sleep(due - now)
            eps = [endpoint(start + j) for j in range(i, i + per_txn)]
            tw = time.perf_counter()
            write(reg, eps)
            took = (time.perf_counter() - tw) * 1000
            for j, e in enumerate(eps, i):
                if j % 10 == 0:
                    w.expect(e, tw, tw + took / 1000)
                    commits.append(took)
            done[k] += per_txn
            i += writers * per_txn
    threads = [threading.Thread(target=in_reg, args=(writer, k)) for k in range(writers)]
    for t in threads:
        t.start()
    pids = _processes(w)
    ready.wait()
    t0, t_start, cpu0 = time.monotonic(), time.perf_counter(), _cpu_s(pids)
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    cpu1 = _cpu_s(pids)
    per_host = {}
    for ns, (timed, missing) in w.finish().items():
        v = [ms for ms, _, _ in timed]
        after = sorted(ms for _, _, ms in timed)
        per_host[ns] = {"n": len(v), "missing": missing, "median_ms": round(statistics.median(v), 1),
                        "p99_ms": round(p99(v), 1), "max_ms": round(v[-1], 1),
                        # from etcd's answer to the writer: the agents' own part (and the wait for the
                        # watch's delivery), without etcd's commit
                        "after_ack_median_ms": round(statistics.median(after), 1),
                        "after_ack_p99_ms": round(p99(after), 1),
                        # when the slowest were written (s into the run): a stall shows as one instant
                        "slowest": [(round(t - t_start, 2), round(ms)) for ms, t, _ in timed[-40:]]}
    commits.sort()
    return {"target_per_s": rate, "achieved_per_s": round(sum(done) / took, 1), "seconds": round(took, 1),
            "written": sum(done), "writers": writers, "per_txn": per_txn, "per_host": per_host,
            "elections": raft_term() - term0, "slow_turns": {ns: _slow_turns(ns, logs0[ns]) for ns in HOSTS},
            # % of one CPU each process took while the writers ran (clock ticks: fine over a minute)
            "cpu_percent": {k: round(100 * (cpu1[k] - cpu0[k]) / took) for k in cpu1 if k in cpu0},
            "commit_median_ms": round(statistics.median(commits), 1),
            "commit_p99_ms": round(p99(commits), 1),
            "commit_max_ms": round(commits[-1], 1)}


def leader_kill(i: int) -> dict:
    members = lab.etcd_members()
    leader = next(m["name"] for m in members if m["leader"])
    e = endpoint(i)
    t0 = time.perf_counter()
    lab.stop_etcd(lab.load(), leader, sig=signal.SIGKILL)

    def retry(reg):
        while True:
            try:
                write(reg, [e])
                return time.perf_counter()
            except Exception:   # noqa: BLE001 - no leader yet: that is what is measured
                time.sleep(0.01)
    committed = in_reg(retry)
    seen = {}
    maps = {ns: Node(ns).maps() for ns in HOSTS}
    while len(seen) < len(HOSTS) and time.perf_counter() - t0 < 60:
        for ns, m in maps.items():
            if ns not in seen and m.dp_fdb.get(mac_key(VNI, e.mac)) is not None:
                seen[ns] = round((time.perf_counter() - t0) * 1000)
        time.sleep(0.002)
    for m in maps.values():
        m.close()
    lab.start_etcd(lab.load(), leader)
    return {"killed": leader, "write_committed_ms": round((committed - t0) * 1000),
            "visible_ms": seen, "converged_ms": max(seen.values()) if len(seen) == len(HOSTS) else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/cluster", description="control plane on a 3-member etcd cluster")
    p.add_argument("--endpoints", type=int, default=100000, help="endpoints in the registry at start-up")
    p.add_argument("--rate", type=int, default=1000, help="registry updates per second to sustain")
    p.add_argument("--seconds", type=float, default=60, help="how long to sustain them")
    p.add_argument("--writers", type=int, default=16, help="writer threads (each a host writing)")
    p.add_argument("--per-txn", type=int, default=10, help="endpoints per transaction in the batched run")
    p.add_argument("--starts", type=int, default=5, help="agent restarts, cold and warm each (median reported)")
    p.add_argument("--parts", default="startup,single,batched,leader",
                   help="which parts to run, comma-separated (startup, single, batched, leader)")
    p.add_argument("--out", default="cluster", help="results name under bench/results")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts or parts - {"startup", "single", "batched", "leader"}:
        p.error(f"--parts: one or more of startup, single, batched, leader, not {args.parts!r}")
    if args.endpoints + 2 * args.rate * args.seconds + 10 > min(MAP, SUBNET.num_addresses - 4):
        p.error("more endpoints than the maps or the subnet hold")
    res = {"machine": machine(), "args": vars(args)}
    try:
        log("lab: 3 hosts, 3 etcd members, 2 registry-only hosts")
        setup(args.endpoints)
        log(f"writing {args.endpoints} endpoints")
        res["populate_s"] = round(populate(args.endpoints), 1)
        for ns in HOSTS:
            assert _wait_installed(ns, args.endpoints), f"{ns} did not install {args.endpoints}"
        if "startup" in parts:
            log(f"start-up sync, cold then warm, {args.starts} times")
            runs = [(startup(args.endpoints, warm=False), startup(args.endpoints, warm=True))
                    for _ in range(args.starts)]
            for i, name in enumerate(("startup_cold", "startup_warm")):
                res[name] = summary([r[i] for r in runs])
        n = args.endpoints
        for key, per in (("sustained_single", 1), ("sustained_batched", args.per_txn)):
            if key.split("_")[1] not in parts:
                continue
            log(f"sustained updates: {args.rate}/s for {args.seconds:.0f} s, {per} per transaction")
            res[key] = sustained(n, args.rate, args.seconds, args.writers, per)
            n += res[key]["written"] + args.writers * per
        if "leader" in parts:
            log("leader kill")
            res["leader_kill"] = leader_kill(n + 5)
    finally:
        lab.down()
    save(res, table(res), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
