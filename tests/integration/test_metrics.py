"""The agent's Prometheus endpoint (issue 17, item 1), scraped as Prometheus
would, from the lab's switch namespace: a spoofed frame shows up in
dataplane_drops_total{reason="spoof_mac"}, promtool accepts the exposition,
/healthz says whether the agent is synced."""

import re
import shutil
import subprocess
import time

import pytest

from dataplane.node import rxgro
from lab import topology as lab
from lab.traffic import ping
from tests.conftest import IN_CI
from tests.integration.conftest import FETCH, ended_by, in_ns, make_lab, reaped, sandbox, scrape, stats, value

SPOOF = """
import sys
from scapy.all import Ether, IP, UDP, Raw, sendp
src_mac, src_ip, dst_mac, dst_ip = sys.argv[1:5]
n = int(sys.argv[5]) if len(sys.argv) > 5 else 5
sendp([Ether(src=src_mac, dst=dst_mac) / IP(src=src_ip, dst=dst_ip) / UDP(dport=9) / Raw(b"spoof")] * n,
      iface="eth0", verbose=False)
"""


@pytest.fixture(scope="module")
def info():
    yield from make_lab(2, [256], per_host=1, registry="sqlite")


def test_a_spoofed_frame_is_in_the_drop_metric(info):
    url = next(h["metrics_url"] for h in info["hosts"] if h["name"] == "h1")
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    assert ping(a["name"], b["ip"], count=1)[0] == 1
    code, body = scrape(url)
    assert code == 200
    before = value(body, "dataplane_drops_total", reason="spoof_mac", vni="256")
    # Every reason of a served VNI is there from the start, at 0 too (before: a series first seen
    # at 5 showed increase() nothing for those 5).
    assert before is not None and value(body, "dataplane_drops_total", reason="bad_ip", vni="256") == 0
    r = in_ns(a["name"], SPOOF, "02:42:0a:01:00:fe", a["ip"], b["mac"], b["ip"])
    assert r.returncode == 0, r.stderr
    _, body = scrape(url)
    assert value(body, "dataplane_drops_total", reason="spoof_mac", vni="256") == before + 5
    assert stats("dpl-h1", 256)["drops"]["spoof_mac"] == before + 5, "the same count as `dataplane stats`"
    assert value(body, "dataplane_tx_packets_total", vni="256") >= 1
    assert value(body, "dataplane_agent_synced") == 1 and value(body, "dataplane_registry_connected") == 1
    assert value(body, "dataplane_registry_grpc_commits_total") == 0, "SQLite: every write is a file's"
    assert value(body, "dataplane_map_entries", map="dp_endpoints") == 2, "the sandbox's port and the gateway's"
    assert value(body, "dataplane_map_capacity", map="dp_fdb") == 65536
    assert value(body, "process_resident_memory_bytes") > 10e6
    assert value(body, "process_start_time_seconds") > 0


# `agent status` keys that are no count: names, addresses, lists a count stands for.
NOT_COUNTS = {"host", "pid", "busy", "registry", "watch_member", "watch_transport", "lease", "map_error",
              "metrics_served", "metrics_error", "metrics_web_config_served", "metrics_web_error",
              "bad_records_recent", "rss_kib", "rss_peak_kib"}


def _status_as_metrics(st: dict) -> dict:
    """Each count of `agent status`, as the metric (name, labels) that must say the same."""
    n = len
    same = {("dataplane_agent_synced", ()): int(st["synced"]),
            ("dataplane_registry_connected", ()): int(st["connected"]),
            ("dataplane_registry_revision", ()): st["revision"],
            ("dataplane_registry_lease_ttl_seconds", ()): st["lease_ttl"],
            ("dataplane_registry_lease_live", ()): int(st["lease_live"]),
            ("dataplane_agent_last_sync_seconds", ()): st["last_sync_ms"] / 1000,
            ("dataplane_agent_last_snapshot_read_seconds", ()): st["last_snapshot_ms"] / 1000,
            ("dataplane_agent_last_claims_read_seconds", ()): st["last_claims_ms"] / 1000,
            ("dataplane_agent_warm_start", ()): int(st["warm_start"]),
            ("dataplane_registry_claims_pending", ()): int(bool(st["claims_pending"])),
            ("dataplane_vnis_failing", ()): n(st["vni_errors"]),
            ("dataplane_registry_skipped_endpoints", ()): n(st["skipped_endpoints"]),
            ("dataplane_endpoint_conflicts", ()): n(st["conflicts"]),
            ("dataplane_agent_operations_in_flight", ()): n(st["in_flight"]),
            ("dataplane_flood_over_limit", ()): n(st["over_limit"]),
            ("dataplane_remote_map_full_total", ()): st["installed"]["map_full"]}
    for kind in ("networks", "hosts", "endpoints"):
        v = st[kind]
        same[("dataplane_registry_view_objects", (("kind", kind),))] = v if isinstance(v, int) else n(v)
    for kind in ("fdb", "neigh"):
        same[("dataplane_remote_entries", (("kind", kind),))] = st["installed"][kind]
    counters = {"events": "registry_events", "aged": "fdb_aged", "registry_errors": "registry_errors",
                "errors": "reconcile_errors", "repairs": "repairs", "vanished": "endpoints_vanished",
                "bad_records": "registry_bad_records", "resyncs": "registry_resyncs",
                "reconnects": "registry_reconnects"}
    for key, name in counters.items():
        same[(f"dataplane_{name}_total", ())] = st[key]
    for key, v in st["registry_transport"].items():
        same[(f"dataplane_registry_{key}_total", ())] = v
    punts = {"received": "agent_punts_received", "looked_up": "agent_punts_looked_up",
             "repaired": "agent_punts_repaired", "flooded": "agent_punt_flood_copies",
             "flood_limited": "agent_punts_flood_limited", "send_errors": "agent_punt_send_errors"}
    for key, v in st["punts"].items():
        k = (f"dataplane_{punts[key]}_total", ()) if key in punts else ("dataplane_agent_punts_total",
                                                                         (("outcome", key),))
        same[k] = v
    covered = set(counters) | {"synced", "connected", "registered", "revision", "lease_ttl", "lease_live", "last_sync_ms",
                               "last_snapshot_ms",
                               "last_claims_ms", "warm_start", "claims_pending", "vni_errors", "skipped_endpoints",
                               "conflicts", "in_flight", "over_limit", "installed", "networks", "hosts", "endpoints",
                               "registry_transport", "punts", "watch_lag_s"}
    assert set(st) - NOT_COUNTS - covered == set(), "a count of `agent status` no metric says"
    return same


def test_what_agent_status_counts_prometheus_sees(info):
    """Each count `agent status` gives is a metric with the same value (before: aged-out
    entries, remote writes a full map refused and the agent's failed registry requests
    were in status only, and lease errors were counted as reconcile errors; then the view's
    sizes, sync timings, skipped endpoints, broadcast limits and the lease were status only)."""
    from dataplane.agent import client
    url = next(h["metrics_url"] for h in info["hosts"] if h["name"] == "h1")
    st = client.call("dpl-h1", "status")
    _, body = scrape(url)
    for (name, labels), want in _status_as_metrics(st).items():
        got = value(body, name, **dict(labels))
        assert got is not None and abs(got - want) < 0.002, (name, labels, got, want)
    assert abs(value(body, "dataplane_registry_watch_lag_seconds") - st["watch_lag_s"]) < 5
    assert value(body, "dataplane_registry_lease_live") == 1
    assert value(body, "dataplane_fastpath_attached", program="from_overlay") == 1
    assert value(body, "dataplane_receive_gro") == 1
    lost = rxgro.dropped("dpl-h1")
    assert lost is not None and value(body, "dataplane_tunnel_device_dropped_total") == lost
    assert value(body, "dataplane_build_info", version=__import__("dataplane").__version__) == 1
    for source in ("stats", "maps", "uplink", "programs", "agent"):
        assert value(body, "dataplane_scrape_success", source=source) == 1, source
    outcomes = sum(v for v in (value(body, "dataplane_agent_punts_total", outcome=o) for o in
                               ("resolved", "local", "unresolved", "stale", "rate_limited", "lookup_limited")))
    assert outcomes <= value(body, "dataplane_agent_punts_received_total"), "the outcomes partition the received"


def test_promtool_accepts_the_exposition(info):
    if not shutil.which("promtool"):
        if IN_CI:
            pytest.fail("CI=true but promtool (Debian package prometheus) is not installed", pytrace=False)
        pytest.skip("promtool not installed")
    _, body = scrape(info["hosts"][0]["metrics_url"])
    r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_healthz_is_200_only_when_synced(info):
    base = info["hosts"][1]["metrics_url"].removesuffix("/metrics")
    assert scrape(base + "/healthz")[0] == 200
    # An agent stopped with SIGSTOP answers nothing; one that cannot reach its registry says 503.
    from dataplane.agent import process
    pid = process.running_pid("dpl-h2")
    import os
    import signal
    os.kill(pid, signal.SIGSTOP)
    try:
        r = in_ns(lab.UNDERLAY_NS, FETCH.replace("timeout=10", "timeout=1"), base + "/healthz")
        assert r.returncode != 0, "a stopped agent is not healthy"
    finally:
        os.kill(pid, signal.SIGCONT)
    time.sleep(0.2)
    assert scrape(base + "/healthz")[0] == 200


def test_the_programs_cost_is_exported_while_the_kernel_counts_it(info):
    """The kernel's BPF statistics (what bench/ reports as ns per run) reach Prometheus and
    `dataplane status`: runs and run time per program, moving only while the kernel counts
    (here: kernel.bpf_stats_enabled), and a gauge that says what the sysctl is. Where the
    sysctl was 1 already (someone counting), the off half is left out rather than stop them."""
    from bench.profile import BPF_STATS, bpf_stats
    from tests.integration.conftest import dp, dp_json
    url = next(h["metrics_url"] for h in info["hosts"] if h["name"] == "h1")
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)

    def read() -> tuple[float, dict]:
        _, body = scrape(url)
        return value(body, "dataplane_bpf_stats_enabled"), {
            p: (value(body, "dataplane_program_runs_total", program=p),
                value(body, "dataplane_program_run_seconds_total", program=p))
            for p in ("from_endpoint", "from_overlay")}

    with open(BPF_STATS) as f:
        was = f.read().strip()
    enabled, before = read()
    assert enabled == int(was) and all(v is not None for pair in before.values() for v in pair), before
    if was == "0":
        assert ping(a["name"], b["ip"], count=3, interval=0.1)[0] == 3
        assert read()[1] == before, "counted with the sysctl off (or a BPF_ENABLE_STATS handle is open)"
    with bpf_stats():                                   # on, then as it was
        assert ping(a["name"], b["ip"], count=5, interval=0.1)[0] == 5
        enabled, after = read()
        progs = {p["program"]: p for p in dp_json("--netns", "dpl-h1", "status")["programs"]}
        table = dp("--netns", "dpl-h1", "status").stdout
    assert enabled == 1
    for p in ("from_endpoint", "from_overlay"):       # the requests out, the replies in
        (r0, t0), (r1, t1) = before[p], after[p]
        assert r1 >= r0 + 5 and 0 < t1 - t0 < 0.01 * (r1 - r0), (p, before[p], after[p])
        assert progs[p]["runs"] >= r1 and 0 < progs[p]["ns_per_run"] < 10**7, progs[p]
    assert "NS_PER_RUN" in table, table


def test_every_dashboard_query_names_an_exported_metric(info):
    """docs/grafana/dataplane.json (issue 17, item 2): each metric its queries and
    variables read is one a live agent exports."""
    import json
    import pathlib
    _, body = scrape(info["hosts"][0]["metrics_url"])
    exported = {m.group(1) for m in re.finditer(r"^# TYPE (\S+) ", body, re.M)}
    exported |= {n + "_total" for n in exported}          # counters are declared without the suffix
    dash = json.loads((pathlib.Path(__file__).parents[2] / "docs/grafana/dataplane.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    used = {n for e in exprs for n in re.findall(r"\b((?:dataplane|process)_[a-z_]+)", e)}
    assert len(used) >= 15
    assert not used - exported, f"not exported: {sorted(used - exported)}"


def test_the_alert_rules_load_and_name_exported_metrics(info):
    """docs/prometheus/alerts.yml: promtool loads it, and each metric a rule reads is one a live
    agent exports (a renamed metric would leave an alert that can never fire)."""
    import pathlib
    if not shutil.which("promtool"):
        if IN_CI:
            pytest.fail("CI=true but promtool (Debian package prometheus) is not installed", pytrace=False)
        pytest.skip("promtool not installed")
    path = pathlib.Path(__file__).parents[2] / "docs/prometheus/alerts.yml"
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    _, body = scrape(info["hosts"][0]["metrics_url"])
    exported = {m.group(1) for m in re.finditer(r"^# TYPE (\S+) ", body, re.M)}
    exported |= {n + "_total" for n in exported}
    exprs = re.findall(r"^\s*expr: (.*)$", path.read_text(), re.M)
    used = {n for e in exprs for n in re.findall(r"\b(dataplane_[a-z_]+)", e)}
    assert len(exprs) >= 10 and not used - exported, f"not exported: {sorted(used - exported)}"


def _monitor(*args, as_json: bool = True) -> subprocess.Popen:
    import sys
    p = subprocess.Popen([sys.executable, "-m", "dataplane.cli", "--netns", "dpl-h1", "monitor",
                          *(["-o", "json"] if as_json else []), "--timeout", "20", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    from dataplane.node import Node, monitor
    import ctypes
    from tests.integration.conftest import wait_for
    with Node("dpl-h1").maps() as m:
        assert wait_for(lambda: m.dp_config.get(ctypes.c_uint32(0)).flags & monitor.MASK), "events switched on"
    return p


def _first_event(monitor_args: tuple, sends: list[tuple]) -> dict:
    """The first event `monitor -c 1 -o json` with monitor_args shows while each (namespace,
    script, *argv) of sends runs, in order."""
    import json
    mon = _monitor(*monitor_args, "-c", "1")
    try:
        for ns, script, *argv in sends:
            r = in_ns(ns, script, *argv)
            assert r.returncode == 0, r.stderr
        out, err = mon.communicate(timeout=30)
    finally:
        if mon.poll() is None:
            mon.kill()
    assert mon.returncode == 0, err
    return json.loads(out.splitlines()[0])


def _events_off() -> bool:
    import ctypes
    from dataplane.node import Node, monitor
    with Node("dpl-h1").maps() as m:
        return not m.dp_config.get(ctypes.c_uint32(0)).flags & monitor.MASK


def test_monitor_shows_a_spoofed_frame_as_a_drop(info):
    """Issue 17, item 3: `dataplane monitor --type drop -o json`, one object a line."""
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    ev = _first_event(("--type", "drop"), [(a["name"], SPOOF, "02:42:0a:01:00:fe", a["ip"], b["mac"], b["ip"])])
    assert (ev["type"], ev["reason"], ev["vni"]) == ("drop", "spoof_mac", 256), ev
    assert (ev["src_mac"], ev["src_ip"], ev["dst_ip"], ev["proto"], ev["dst_port"]) == (
        "02:42:0a:01:00:fe", a["ip"], b["ip"], "udp", 9), ev
    assert ev["interface"] and ev["interface"].startswith("dp"), ev
    assert _events_off(), "the monitor switched the events off when it ended"


def test_monitor_says_what_it_lost_however_it_ends(info):
    """Over --rate the fast path writes no event and counts it. The monitor says how many, as a
    {"type": "lost"} record under -o json and on stderr otherwise, also when ^C ends it (before:
    only in text mode, and only when -c or --timeout ended it)."""
    import json
    import signal
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    for as_json in (True, False):
        with reaped(_monitor("--type", "drop", "--rate", "1", as_json=as_json)) as mon:
            # 100 drops at once: the meter lets a burst of 64 through, then one a second
            r = in_ns(a["name"], SPOOF, "02:42:0a:01:00:fe", a["ip"], b["mac"], b["ip"], "100")
            assert r.returncode == 0, r.stderr
            out, err = ended_by(mon, signal.SIGINT)
        assert mon.returncode == 0, err
        if as_json:
            records = [json.loads(line) for line in out.splitlines()]
            lost = [e for e in records if e["type"] == "lost"]
            assert lost and lost[-1]["total"] == sum(e["count"] for e in lost) >= 1, records
            assert lost[-1]["vni"] is None and lost[-1]["time"] >= records[0]["time"], lost
            assert any(e["type"] == "drop" for e in records), "the one the rate let through"
        else:
            assert re.search(r"monitor: \d+ events lost", err), err
        assert _events_off()


def test_monitor_traces_forwarded_frames_with_the_inner_frame(info):
    import json
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    mon = _monitor("--type", "trace", "-c", "2")
    try:
        ping(a["name"], b["ip"], count=3)
        out, err = mon.communicate(timeout=30)
    finally:
        if mon.poll() is None:
            mon.kill()
    evs = [json.loads(line) for line in out.splitlines()]
    assert len(evs) == 2 and all(e["type"] == "trace" for e in evs), out + err
    enc = [e for e in evs if "inner" in e]
    assert enc, f"an encapsulated frame on its way out: {evs}"
    assert enc[0]["vxlan_vni"] == 256 and enc[0]["inner"]["proto"] == "icmp", enc[0]
    assert _events_off()


def test_a_killed_monitor_leaves_nothing_on_for_long(info):
    import os
    import signal
    from dataplane.agent import client
    mon = _monitor("--type", "drop,trace")
    os.kill(mon.pid, signal.SIGKILL)
    mon.wait()
    assert not _events_off()
    # The agent's next tick (fdb age/4, at most 10 s) switches them off.
    from tests.integration.conftest import wait_for
    assert wait_for(_events_off, timeout=15), client.call("dpl-h1", "status")["punts"]


def test_status_is_the_node_at_a_glance(info):
    """Issue 17, item 6."""
    from tests.integration.conftest import dp, dp_json
    out = dp_json("--netns", "dpl-h1", "status")
    progs = {p["program"]: p for p in out["programs"]}
    assert progs["from_overlay"]["attached"] == f"tcx ingress {lab.UPLINK}" and progs["from_overlay"]["loaded"]
    assert progs["from_endpoint"]["attached"] == "tcx ingress, 1/1 endpoints"
    assert progs["flood_remote_vteps"]["attached"] == "tail call"
    assert progs["dp_clock"]["attached"] == "test runs (clock)"
    import ctypes
    import time
    from dataplane.kernel import clock
    from dataplane.node import Node
    with Node("dpl-h1").maps() as m:       # `up` calibrated the fast path's jiffies clock (kernel/clock.py)
        cfg = m.dp_config.get(ctypes.c_uint32(0))
        assert cfg.clock_ns_per_jiffy == clock.tick_ns(clock.config_hz()) and cfg.clock_offset_ns
        stamps = [v.updated_ns for _, v in m.dp_nexthops.items()] + [v.last_seen_ns for _, v in m.dp_learned.items()]
    now = time.monotonic_ns()
    assert stamps and all(now - 600 * 10**9 < t <= now for t in stamps), (now, stamps)
    maps = {m["map"]: m for m in out["maps"]}
    assert maps["dp_endpoints"]["entries"] == 2 and maps["dp_fdb"]["capacity"] == 65536   # a sandbox, the gateway
    assert out["agent"]["synced"] and out["agent"]["connected"]
    assert out["networks"] == [{"vni": 256, "subnet": "10.1.0.0/24", "mtu": 1450, "endpoints": 1, "peers": 1}]
    assert out["errors"] == []
    text = dp("--netns", "dpl-h1", "status").stdout
    assert "VTEP 198.18.0.1:4789" in text and "from_overlay" in text and "errors    none" in text


def test_stats_watch_gives_rates_and_vni_filters_every_listing(info):
    """Issue 17, item 5."""
    import json
    import signal
    import sys
    from tests.integration.conftest import dp_json
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    w = subprocess.Popen([sys.executable, "-m", "dataplane.cli", "--netns", "dpl-h1", "stats", "--watch",
                          "--interval", "0.5", "--vni", "256", "-o", "json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        first = w.stdout.readline()                    # the first reading is in: it watches
        ping(a["name"], b["ip"], count=10, interval=0.1)
        time.sleep(0.6)
    finally:
        w.send_signal(signal.SIGINT)
        try:
            out = w.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            # Seen once in a full run (2026-12-03): say where it hung (the CLI prints its stacks on SIGUSR1).
            w.send_signal(signal.SIGUSR1)
            time.sleep(1)
            w.kill()
            raise AssertionError(f"stats --watch did not end within 10 s of SIGINT; its threads:\n{w.communicate()[1]}")
    lines = [json.loads(x) for x in (first + out).splitlines()]
    assert len(lines) >= 2 and all([r["vni"] for r in x["vnis"]] == [256] for x in lines), lines
    assert max(x["vnis"][0]["rx_pps"] for x in lines) > 0 and max(x["vnis"][0]["tx_bps"] for x in lines) > 0
    assert [r["vni"] for r in dp_json("--netns", "dpl-h1", "stats", "--vni", "256")] == [256]
    for cmd in (("fdb", "list"), ("peer", "list"), ("endpoint", "list")):
        assert dp_json("--netns", "dpl-h1", *cmd, "--vni", "999") == [], cmd
        assert dp_json("--netns", "dpl-h1", *cmd, "--vni", "256"), cmd


def _capture(tmp_path, name: str, *args) -> tuple[str, subprocess.Popen]:
    import sys
    path = str(tmp_path / name)
    p = subprocess.Popen([sys.executable, "-m", "dataplane.cli", "--netns", "dpl-h1", "capture", "--vni", "256",
                          "-w", path, "--timeout", "20", "-o", "json", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stderr.readline().startswith("capture:"), "the sockets are open"
    return path, p


def test_capture_of_the_uplink_is_vxlan_vni_256_that_tshark_decodes_cleanly(info, tmp_path):
    """Issue 17, item 4: both directions of a ping, as VXLAN on the uplink."""
    import json
    from lab import capture
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    path, p = _capture(tmp_path, "outer.pcap", "-c", "4")
    ping(a["name"], b["ip"], count=3)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0 and json.loads(out)["frames"] == 4, err
    rows = capture.decode(path)
    assert [r["vxlan.vni"] for r in rows] == ["256"] * 4
    assert {r["ip.src"] for r in rows} == {lab.vtep_ip(1), lab.vtep_ip(2)}, "both directions"
    assert all(s.endswith("vxlan:eth:ethertype:ip:icmp:data") for s in capture.inner_protocols(path))
    assert capture.problems(rows) == []


def test_capture_inner_sees_what_redirect_peer_delivers(info, tmp_path):
    """--inner reads the sandbox's own interface: the echo replies the fast path puts
    straight into the sandbox (bpf_redirect_peer) are there too."""
    import json
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    path, p = _capture(tmp_path, "inner.pcap", "--inner", "--endpoint", a["id"], "-c", "4")
    ping(a["name"], b["ip"], count=3)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0 and json.loads(out)["frames"] == 4, err
    r = subprocess.run(["tshark", "-r", path, "-n", "-T", "fields", "-e", "icmp.type", "-e", "ip.src"],
                       capture_output=True, text=True, check=True)
    seen = {tuple(line.split("\t")) for line in r.stdout.split("\n") if line}
    assert ("8", a["ip"]) in seen and ("0", b["ip"]) in seen, seen


UNKNOWN_VNI = """
import sys
from scapy.all import Ether, IP, UDP, Raw, sendp
from scapy.layers.vxlan import VXLAN
dst_mac, dst_ip, iface = sys.argv[1:4]
inner = Ether(src="02:42:0a:01:00:99", dst="02:42:0a:01:00:0b") / IP(src="10.1.0.99", dst="10.1.0.11") / Raw(b"x")
sendp(Ether(dst=dst_mac) / IP(src="198.18.0.2", dst=dst_ip) / UDP(sport=50000, dport=4789) / VXLAN(flags=0x08, vni=777) / inner,
      iface=iface, verbose=False)
"""


def test_monitor_vni_0_shows_the_drops_of_no_vni(info):
    """`monitor --vni 0` shows what belongs to no VNI (a frame of a VNI this node does not
    serve), as `stats --vni 0` does; it was refused as a bad VNI."""
    from dataplane.kernel import netlink
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    ev = _first_event(("--type", "drop", "--vni", "0"), [
        (a["name"], SPOOF, "02:42:0a:01:00:fe", a["ip"], b["mac"], b["ip"]),     # VNI 256's: not shown
        (lab.UNDERLAY_NS, UNKNOWN_VNI, netlink.link_info("dpl-h1", "ul0")["mac"], lab.vtep_ip(1), "ul-h1")])
    assert (ev["type"], ev["reason"], ev["vni"], ev.get("vxlan_vni")) == ("drop", "unknown_vni", 0, 777), ev


def test_another_xdp_program_in_place_of_the_guard_is_not_ours(info):
    """The guard's attached gauge read any XDP program as ours: another tool's attached in its
    place (netlink replaces without asking) left dataplane_fastpath_attached{program="xdp_guard"}
    at 1 and `status` saying it was attached, so DataplaneFastPathDetached never fired."""
    import os
    from dataplane.kernel import bpfsys, netlink
    from tests.integration.conftest import dp, dp_json
    url = next(h["metrics_url"] for h in info["hosts"] if h["name"] == "h1")
    uplink = netlink.link_index("dpl-h1", lab.UPLINK)
    dp("--netns", "dpl-h1", "up", "--xdp-guard")
    fd = None
    try:
        assert value(scrape(url)[1], "dataplane_fastpath_attached", program="xdp_guard") == 1
        xdp_pass = bytes.fromhex("b700000002000000" "9500000000000000")      # r0 = XDP_PASS; exit
        fd = bpfsys.prog_load(6, xdp_pass, "GPL", 0, "other_tool")
        netlink.xdp_attach("dpl-h1", uplink, fd)
        assert value(scrape(url)[1], "dataplane_fastpath_attached", program="xdp_guard") == 0
        progs = {p["program"]: p for p in dp_json("--netns", "dpl-h1", "status")["programs"]}
        assert progs["xdp_guard"]["attached"] == "not attached"
    finally:
        if fd is not None:
            os.close(fd)
        dp("--netns", "dpl-h1", "up", "--no-xdp-guard")
    assert not netlink.xdp_attached("dpl-h1", uplink)
