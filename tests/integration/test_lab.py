"""End to end on three hosts: traffic, isolation, anti-spoofing, broadcast,
the wire format as tshark reads it, listings, and reload without loss."""

import subprocess
import sys
import threading
import time

import pytest

from lab import capture, topology as lab
from dataplane.kernel import netlink, tcx
from lab.traffic import iperf_processes, ping, tcp_transfer
from tests.integration.conftest import dp, dp_json, in_ns, make_lab, sandbox, stats


@pytest.fixture(scope="module")
def info():
    # Static peers: this module proves the data path alone (flooding, learning);
    # test_cluster.py runs the same lab with a registry and agents.
    yield from make_lab(3, [256, 257], per_host=1, registry="none")


def test_ping_across_hosts(info):
    a = sandbox(info, "h1", 256)
    for h in ("h2", "h3"):
        got, _ = ping(a["name"], sandbox(info, h, 256)["ip"])
        assert got == 3


def test_tcp_across_hosts_byte_exact(info):
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    assert tcp_transfer(b["name"], a["name"], b["ip"], 8 << 20) == 8 << 20


def test_iperf_processes_are_one_flow_each_and_all_are_counted(info):
    """bench.run's 4-stream row: one iperf3 process per flow (iperf3 3.12 runs -P on one thread)."""
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    runs = iperf_processes(b["name"], a["name"], b["ip"], 3, ["-t", "1"])
    assert len(runs) == 3
    assert len({r["start"]["connected"][0]["remote_port"] for r in runs}) == 3
    assert all(r["end"]["sum_received"]["bytes"] > 0 for r in runs)


def test_bench_round_trip_with_both_ends_on_one_cpu(info):
    """bench.run's one-CPU round-trip row: both sockperf ends run on CPU 0 while it measures,
    and it answers."""
    from bench.run import latency_us
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("rtt", latency_us(a, b, seconds=2, cpu=0)))
    t.start()
    seen = {}
    try:
        deadline = time.monotonic() + 2.0
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            for pid in subprocess.run(["pgrep", "-x", "sockperf"], capture_output=True, text=True).stdout.split():
                try:
                    with open(f"/proc/{pid}/status") as f:
                        seen[pid] = next(ln.split()[1] for ln in f if ln.startswith("Cpus_allowed_list"))
                except (FileNotFoundError, StopIteration):
                    pass
    finally:
        t.join()
    assert len(seen) == 2 and set(seen.values()) == {"0"}, seen
    p50, p99 = got["rtt"]
    assert 0 < p50 <= p99 < 100_000


def test_a_sandbox_whose_mtu_is_too_big_learns_the_path_mtu(info):
    """Issue 16, item 3: a sandbox (both veth ends) set to 1500 on a 1450 network. Its DF
    frames over 1450 get ICMP "fragmentation needed" (mtu 1450) from the fast path instead
    of vanishing, so ping -M do says so and TCP across the path completes."""
    from dataplane.node import Node
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    ep = Node("dpl-h1").state().endpoints[a["id"]]
    mtu = Node("dpl-h1").state().networks[256].mtu
    before = stats("dpl-h1", 256)
    try:
        for ns, ifname in (("dpl-h1", ep.host_ifname), (a["netns"], "eth0")):
            lab.run_checked(["ip", "-n", ns, "link", "set", ifname, "mtu", "1500"])
        r = netlink.ns_exec(a["netns"], ["ping", "-c", "2", "-i", "0.2", "-M", "do", "-s", "1472", "-W", "1", b["ip"]],
                            capture_output=True, text=True)
        assert f"mtu = {mtu}" in r.stdout + r.stderr or f"mtu={mtu}" in r.stdout + r.stderr, r.stdout + r.stderr
        assert stats("dpl-h1", 256)["frag_needed"] > before["frag_needed"]
        assert tcp_transfer(b["name"], a["name"], b["ip"], 4 << 20) == 4 << 20
    finally:
        for ns, ifname in (("dpl-h1", ep.host_ifname), (a["netns"], "eth0")):
            lab.run_checked(["ip", "-n", ns, "link", "set", ifname, "mtu", str(mtu)])
        lab.run_checked(["ip", "-n", a["netns"], "route", "flush", "cache"])


def test_vnis_are_isolated(info):
    a, x = sandbox(info, "h1", 256), sandbox(info, "h2", 257)
    before = stats("dpl-h2", 257)["rx_packets"]
    netlink.ns_exec(a["name"], ["ip", "route", "add", "10.1.1.0/24", "dev", "eth0"], check=True)
    try:
        got, _ = ping(a["name"], x["ip"], count=2)
    finally:
        netlink.ns_exec(a["name"], ["ip", "route", "del", "10.1.1.0/24", "dev", "eth0"])
    assert got == 0
    assert stats("dpl-h2", 257)["rx_packets"] == before


SPOOF = """
import sys
from scapy.all import Ether, IP, UDP, Raw, sendp
src_mac, src_ip, dst_mac, dst_ip = sys.argv[1:5]
sendp([Ether(src=src_mac, dst=dst_mac) / IP(src=src_ip, dst=dst_ip) / UDP(dport=9) / Raw(b"spoof")] * 20,
      iface="eth0", verbose=False)
"""


LISTEN = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 9)); s.settimeout(1.5)
print("ready", flush=True); n = 0
try:
    while True:
        s.recv(100); n += 1
except socket.timeout:
    pass
print(n)
"""


@pytest.mark.parametrize("field", ["mac", "ip"])
def test_spoofed_source_is_dropped_and_counted(info, field):
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    assert ping(a["name"], b["ip"], count=1)[0] == 1  # b's MAC is known: the spoofed frames are unicast
    src_mac = "02:42:0a:01:00:fe" if field == "mac" else a["mac"]
    src_ip = "10.1.0.254" if field == "ip" else a["ip"]
    before = stats("dpl-h1", 256)["drops"].get(f"spoof_{field}", 0)
    listener = subprocess.Popen(["ip", "netns", "exec", b["name"], sys.executable, "-c", LISTEN, b["ip"]],
                                stdout=subprocess.PIPE, text=True)
    assert listener.stdout.readline().strip() == "ready"
    r = in_ns(a["name"], SPOOF, src_mac, src_ip, b["mac"], b["ip"])
    assert r.returncode == 0, r.stderr
    received = int(listener.communicate(timeout=10)[0].strip())
    assert stats("dpl-h1", 256)["drops"].get(f"spoof_{field}", 0) == before + 20
    assert received == 0, "no spoofed datagram reached the other sandbox"


def test_unspoofed_datagrams_do_arrive(info):
    """The same sender and listener with honest addresses: proves the test above can see arrivals."""
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    assert ping(a["name"], b["ip"], count=1)[0] == 1
    listener = subprocess.Popen(["ip", "netns", "exec", b["name"], sys.executable, "-c", LISTEN, b["ip"]],
                                stdout=subprocess.PIPE, text=True)
    assert listener.stdout.readline().strip() == "ready"
    assert in_ns(a["name"], SPOOF, a["mac"], a["ip"], b["mac"], b["ip"]).returncode == 0
    assert int(listener.communicate(timeout=10)[0].strip()) == 20


def test_broadcast_arp_reaches_every_host(info):
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    netlink.ns_exec(a["name"], ["ip", "neigh", "flush", "dev", "eth0"], check=True)
    flooded = stats("dpl-h1", 256)["flooded"]
    h3_local = stats("dpl-h3", 256)["local_packets"]
    got, _ = ping(a["name"], b["ip"], count=1)
    assert got == 1
    assert stats("dpl-h1", 256)["flooded"] >= flooded + 1
    assert stats("dpl-h3", 256)["local_packets"] >= h3_local + 1, "the ARP broadcast also reached h3's sandbox"


def test_capture_is_clean_vxlan_for_tshark(info):
    """Every kind of frame the fast path emits: unicast ICMP, TCP from GSO
    super-packets, ARP broadcast replicated to each peer, on each VNI."""
    a, b, c = (sandbox(info, h, 256) for h in ("h1", "h2", "h3"))
    x, y = sandbox(info, "h1", 257), sandbox(info, "h2", 257)

    def traffic():
        netlink.ns_exec(a["name"], ["ip", "neigh", "flush", "dev", "eth0"])
        netlink.ns_exec(x["name"], ["ip", "neigh", "flush", "dev", "eth0"])
        assert ping(a["name"], b["ip"])[0] == 3
        assert ping(c["name"], a["ip"])[0] == 3
        assert ping(x["name"], y["ip"])[0] == 3
        assert tcp_transfer(b["name"], a["name"], b["ip"], 1 << 20) == 1 << 20
    rows, protos = capture.during(lab.UNDERLAY_NS, lab.BRIDGE, "udp port 4789", traffic)
    vx = [r for r in rows if r["vxlan.vni"]]
    assert len(vx) == len(rows) > 10
    assert {r["vxlan.vni"] for r in vx} == {"256", "257"}
    assert {r["vxlan.flags"] for r in vx} == {"0x0800"}
    # Reordering by veth backlogs when the sender migrates between CPUs shows
    # up as TCP sequence notes; those are reported, the frames must be clean.
    assert capture.problems(rows) == [], capture.flow_notes(rows)
    for inner in ("arp", "ip:icmp", "ip:tcp"):
        assert any(f":vxlan:eth:ethertype:{inner}" in p for p in protos), inner
    arp_dsts = {r["ip.dst"] for r, p in zip(rows, protos) if r["ip.src"] == lab.vtep_ip(1) and p.endswith(":arp")}
    assert {lab.vtep_ip(2), lab.vtep_ip(3)} <= arp_dsts, "the broadcast was replicated to each peer"
    # veths carry GSO super-packets unsegmented, so the capture holds them whole:
    # outer lengths must still be right for tshark to find nothing malformed.
    assert max(int(r["frame.len"]) for r in vx) > 1514 + 50, "a TCP GSO super-packet was captured"
    assert all(49152 <= int(r["udp.srcport"]) <= 65535 for r in vx)


def test_json_listings(info):
    ls = dp_json("lab", "ls")
    assert {h["name"] for h in ls["hosts"]} == {"h1", "h2", "h3"}
    assert {h["vtep"] for h in ls["hosts"]} == {"198.18.0.1", "198.18.0.2", "198.18.0.3"}
    assert {(s["host"], s["vni"]) for s in ls["sandboxes"]} == {(h, v) for h in ("h1", "h2", "h3") for v in (256, 257)}
    assert all({"name", "netns", "host", "vni", "ip", "mac"} <= s.keys() for s in ls["sandboxes"])
    eps = dp_json("--netns", "dpl-h1", "endpoint", "list")
    assert {e["vni"] for e in eps} == {256, 257}
    peers = dp_json("--netns", "dpl-h1", "peer", "list")
    assert {(p["vni"], p["peer"]) for p in peers} == {(v, ip) for v in (256, 257) for ip in ("198.18.0.2", "198.18.0.3")}
    before = {s["vni"]: s for s in dp_json("--netns", "dpl-h1", "stats")}
    for vni in (256, 257):
        src, dst = sandbox(info, "h1", vni), sandbox(info, "h2", vni)
        assert ping(src["name"], dst["ip"], count=2)[0] == 2
    st = {s["vni"]: s for s in dp_json("--netns", "dpl-h1", "stats")}
    assert set(st) == {0, 256, 257}
    for vni in (256, 257):   # two echo requests out, two replies in, on this VNI's row
        assert st[vni]["tx_packets"] - before[vni]["tx_packets"] >= 2, st[vni]
        assert st[vni]["rx_packets"] - before[vni]["rx_packets"] >= 2, st[vni]
        assert st[vni]["tx_bytes"] > before[vni]["tx_bytes"] and st[vni]["rx_bytes"] > before[vni]["rx_bytes"]
    assert st[0]["rx_packets"] == st[0]["tx_packets"] == 0, "VNI 0 holds only what belongs to no VNI"
    fdb = dp_json("--netns", "dpl-h1", "fdb", "list")
    assert any(r["where"] == "local" for r in fdb)
    assert any(r["state"] == "learned" and r["where"].startswith("198.18.0.") for r in fdb)


def test_lab_exec_runs_in_the_sandbox(info):
    a = sandbox(info, "h1", 256)
    r = dp("lab", "exec", "h1-v256-1", "--", "ip", "-4", "-o", "addr", "show", "eth0", check=False)
    assert r.returncode == 0 and a["ip"] in r.stdout


def test_second_up_replaces_programs_without_loss(info):
    """A ping stream at 100/s runs while h1's programs are compiled and swapped in."""
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    result = {}

    def stream():
        r = netlink.ns_exec(a["name"], ["ping", "-c", "300", "-i", "0.01", "-W", "1", b["ip"]],
                            capture_output=True, text=True)
        result["out"] = r.stdout

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.3)
    dp("--netns", "dpl-h1", "up", "--vni", "256", "--underlay", "ul0")
    t.join()
    assert " 300 received" in result["out"], result["out"][-300:]
    assert "from_overlay" in tcx.names("dpl-h1", netlink.link_index("dpl-h1", "ul0"))


def test_endpoint_add_and_rm_on_a_live_host(info):
    r = dp("--netns", "dpl-h3", "endpoint", "add", "dpl-extra", "--vni", "256", "--ip", "10.1.0.99")
    assert "10.1.0.99" in r.stdout
    try:
        assert ping(sandbox(info, "h1", 256)["name"], "10.1.0.99")[0] == 3
    finally:
        dp("--netns", "dpl-h3", "endpoint", "rm", "dpl-extra")
    assert not netlink.ns_exists("dpl-h3.dpl-extra")
    assert all(e["id"] != "dpl-extra" for e in dp_json("--netns", "dpl-h3", "endpoint", "list"))


def test_mac_taken_by_a_local_endpoint_stops_being_learned(info):
    """h3 has learned h1's sandbox MAC from its traffic. An endpoint on h3 that
    takes that MAC deletes the learned entry (the fast path only re-checks for
    conflicts when it would write one), and h1's frames carrying it are then
    dropped on h3 as mac_conflict."""
    a, c = sandbox(info, "h1", 256), sandbox(info, "h3", 256)
    assert ping(a["name"], c["ip"])[0] == 3
    learned = [r for r in dp_json("--netns", "dpl-h3", "fdb", "list")
               if r["mac"] == a["mac"] and r["vni"] == 256]
    assert [r["state"] for r in learned] == ["learned"], learned
    dp("--netns", "dpl-h3", "endpoint", "add", "dpl-twin", "--vni", "256", "--ip", "10.1.0.98", "--mac", a["mac"])
    try:
        rows = [r for r in dp_json("--netns", "dpl-h3", "fdb", "list") if r["mac"] == a["mac"] and r["vni"] == 256]
        assert [r["where"] for r in rows] == ["local"], rows
        before = stats("dpl-h3", 256)["drops"].get("mac_conflict", 0)
        ping(a["name"], c["ip"], count=2)
        assert stats("dpl-h3", 256)["drops"].get("mac_conflict", 0) >= before + 2
    finally:
        dp("--netns", "dpl-h3", "endpoint", "rm", "dpl-twin")
    # h3 learns h1's MAC again once the twin is gone.
    for _ in range(3):
        if ping(a["name"], c["ip"], count=1)[0] == 1:
            break
    assert ping(a["name"], c["ip"])[0] == 3


def test_a_killed_monitor_on_a_node_without_an_agent_is_cleared_by_up(info):
    """No agent here to notice: the next `up` (idempotent) switches the events off."""
    import ctypes
    import os
    import signal
    from dataplane.node import Node, monitor
    from tests.integration.conftest import wait_for

    def bits() -> int:
        with Node("dpl-h1").maps() as m:
            return m.dp_config.get(ctypes.c_uint32(0)).flags & monitor.MASK
    mon = subprocess.Popen([sys.executable, "-m", "dataplane.cli", "--netns", "dpl-h1", "monitor", "--type", "drop",
                            "--timeout", "30"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(bits)
    finally:
        os.kill(mon.pid, signal.SIGKILL)
        mon.wait()
    assert bits(), "left on by the killed monitor"
    dp("--netns", "dpl-h1", "up", "--vni", "256", "--no-registry")
    assert not bits()
