"""The agent's Prometheus endpoint (issue 17, item 1), scraped as Prometheus
would, from the lab's switch namespace: a spoofed frame shows up in
dataplane_drops_total{reason="spoof_mac"}, promtool accepts the exposition,
/healthz says whether the agent is synced."""

import re
import shutil
import subprocess
import time

import pytest

from lab import topology as lab
from lab.traffic import ping
from tests.conftest import IN_CI
from tests.integration.conftest import in_ns, make_lab, sandbox, stats

FETCH = """
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=10)
    code, body = r.status, r.read()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
sys.stdout.write(f"{code}\\n"); sys.stdout.flush(); sys.stdout.buffer.write(body)
"""
SPOOF = """
import sys
from scapy.all import Ether, IP, UDP, Raw, sendp
src_mac, src_ip, dst_mac, dst_ip = sys.argv[1:5]
sendp([Ether(src=src_mac, dst=dst_mac) / IP(src=src_ip, dst=dst_ip) / UDP(dport=9) / Raw(b"spoof")] * 5,
      iface="eth0", verbose=False)
"""


@pytest.fixture(scope="module")
def info():
    yield from make_lab(2, [256], per_host=1, registry="sqlite")


def scrape(url: str) -> tuple[int, str]:
    r = in_ns(lab.UNDERLAY_NS, FETCH, url)
    assert r.returncode == 0, r.stderr
    code, _, body = r.stdout.partition("\n")
    return int(code), body


def value(body: str, name: str, **labels) -> float | None:
    for line in body.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if m and m.group(1) == name and all(f'{k}="{v}"' in (m.group(2) or "") for k, v in labels.items()):
            return float(m.group(3))
    return None


def test_a_spoofed_frame_is_in_the_drop_metric(info):
    url = next(h["metrics_url"] for h in info["hosts"] if h["name"] == "h1")
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    assert ping(a["name"], b["ip"], count=1)[0] == 1
    code, body = scrape(url)
    assert code == 200
    before = value(body, "dataplane_drops_total", reason="spoof_mac", vni="256") or 0
    r = in_ns(a["name"], SPOOF, "02:42:0a:01:00:fe", a["ip"], b["mac"], b["ip"])
    assert r.returncode == 0, r.stderr
    _, body = scrape(url)
    assert value(body, "dataplane_drops_total", reason="spoof_mac", vni="256") == before + 5
    assert stats("dpl-h1", 256)["drops"]["spoof_mac"] == before + 5, "the same count as `dataplane stats`"
    assert value(body, "dataplane_tx_packets_total", vni="256") >= 1
    assert value(body, "dataplane_agent_synced") == 1 and value(body, "dataplane_registry_connected") == 1
    assert value(body, "dataplane_map_entries", map="dp_endpoints") == 1
    assert value(body, "dataplane_map_capacity", map="dp_fdb") == 65536
    assert value(body, "process_resident_memory_bytes") > 10e6
    assert value(body, "process_start_time_seconds") > 0


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
