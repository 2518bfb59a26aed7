"""Thousands of random and truncated frames thrown at a live host's uplink,
with the XDP guard attached: nothing crashes, drops are counted by reason,
and sandboxes keep talking afterwards."""

import ctypes
import time

import pytest

from lab import topology as lab
from dataplane.kernel import netlink, tcx
from dataplane.node import Node
from lab.traffic import ping, tcp_transfer
from tests.integration.conftest import dp, dp_json, in_ns, make_lab, sandbox, scrape, stats, value

# Frames are injected on the underlay side of h1's uplink: whatever the wire carries.
WIRE = "ul-h1"

BARRAGE = """
import random, sys
from scapy.all import Ether, IP, UDP, Raw, sendp
from scapy.layers.vxlan import VXLAN
dst_mac, dst_ip, n, iface = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rnd = random.Random(7)
inner = Ether(src="02:42:0a:01:00:99", dst="02:42:0a:01:00:0b") / IP(src="10.1.0.99", dst="10.1.0.11") / UDP() / Raw(b"x" * 32)
def vx(vni=256, flags=0x08):
    return Ether(dst=dst_mac) / IP(src="198.18.0.200", dst=dst_ip) / UDP(sport=50000, dport=4789) / VXLAN(flags=flags, vni=vni) / inner
good = bytes(vx())
frames = []
for cut in range(14, len(good)):                      # every truncation, inside every header
    frames.append(good[:cut])
frames += [bytes(vx(flags=rnd.choice([0, 0x0C, 0x88, 0xFF]))) for _ in range(n // 4)]
frames += [bytes(vx(vni=rnd.randrange(1000, 1 << 24))) for _ in range(n // 4)]
frames += [good[:42] + bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 200))) for _ in range(n // 4)]
frames += [bytes.fromhex(dst_mac.replace(":", "")) + bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 300)))
           for _ in range(n // 4)]
sendp([Raw(f) for f in frames], iface=iface, verbose=False)
print(len(frames))
"""


@pytest.fixture(scope="module")
def info():
    yield from make_lab(2, [256], per_host=1, xdp_guard=True)


def test_barrage_is_dropped_counted_and_harmless(info):
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    assert netlink.xdp_attached("dpl-h1", netlink.link_index("dpl-h1", "ul0"))
    before = stats("dpl-h1", 0)["drops"]
    vni_before = stats("dpl-h1", 256)
    h1_mac = netlink.link_info("dpl-h1", "ul0")["mac"]
    r = in_ns(lab.UNDERLAY_NS, BARRAGE, h1_mac, "198.18.0.1", 4000, WIRE)
    assert r.returncode == 0, r.stderr
    sent = int(r.stdout.strip())
    assert sent > 4000
    after = stats("dpl-h1", 0)["drops"]
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta.get("truncated", 0) >= 40, delta      # cuts inside the IP, UDP, VXLAN and inner headers
    assert delta.get("bad_vxlan_flags", 0) >= 900, delta
    assert delta.get("unknown_vni", 0) >= 900, delta
    assert sum(delta.values()) >= 2000, delta
    vni_after = stats("dpl-h1", 256)
    assert vni_after["rx_packets"] == vni_before["rx_packets"], "no junk frame was delivered into VNI 256"
    # Still forwarding, both ways, and still attached.
    assert ping(a["name"], b["ip"])[0] == 3
    assert tcp_transfer(a["name"], b["name"], a["ip"], 1 << 20) == 1 << 20
    assert "from_overlay" in tcx.names("dpl-h1", netlink.link_index("dpl-h1", "ul0"))
    assert netlink.xdp_attached("dpl-h1", netlink.link_index("dpl-h1", "ul0")), "the guard is still attached"


TAGGED = """
import sys
from scapy.all import Dot1Q, Ether, IP, UDP, Raw, sendp
smac, dmac, src, dst = sys.argv[1:5]
sendp([Ether(src=smac, dst=dmac) / Dot1Q(vlan=100, prio=5) / IP(src=src, dst=dst) / UDP(dport=9) / Raw(b"t")] * 5,
      iface="eth0", verbose=False)
"""


def test_a_sandboxs_vlan_tagged_frames_are_dropped(info):
    """The stack takes an 802.1Q tag into the skb's metadata before tc, so the program saw a
    plain IPv4 frame from the sandbox, sent it on, and the tag rode along: into the outer
    frame (an underlay VLAN of the sandbox's choosing) or a neighbour sandbox. Now dropped
    as unsupported_l3."""
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    a_mac = netlink.link_info(a["netns"], "eth0")["mac"]
    b_mac = netlink.link_info(b["netns"], "eth0")["mac"]
    before = stats("dpl-h1", 256)
    r = in_ns(a["netns"], TAGGED, a_mac, b_mac, a["ip"], b["ip"])
    assert r.returncode == 0, r.stderr
    after = stats("dpl-h1", 256)
    assert after["drops"].get("unsupported_l3", 0) - before["drops"].get("unsupported_l3", 0) == 5, after["drops"]
    assert after["tx_packets"] == before["tx_packets"], "a tagged frame went out over the overlay"
    assert ping(a["name"], b["ip"])[0] == 3


VXLAN_TO = """
import sys
from scapy.all import Dot1Q, Ether, IP, UDP, Raw, sendp
from scapy.layers.vxlan import VXLAN
dst_mac, vtep, src_vtep, inner_src, inner_sip, inner_dst, inner_ip, tag, iface = sys.argv[1:10]
inner = Ether(src=inner_src, dst=inner_dst) / IP(src=inner_sip, dst=inner_ip) / UDP(dport=9) / Raw(b"v")
outer = Ether(dst=dst_mac) / Dot1Q(vlan=int(tag)) if int(tag) else Ether(dst=dst_mac)
sendp([outer / IP(src=src_vtep, dst=vtep) / UDP(sport=50001, dport=4789) / VXLAN(flags=0x08, vni=256) / inner] * 4,
      iface=iface, verbose=False)
"""


def test_vxlan_tagged_for_another_vlan_is_not_decapsulated(info):
    """VXLAN arriving with an 802.1Q tag belongs to that VLAN's interface, not to the
    uplink: it is left to the kernel (which drops it here: no such VLAN) instead of being
    decapsulated into the sandbox with the tag kept. The same frame untagged is delivered."""
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    a_mac = netlink.link_info(a["netns"], "eth0")["mac"]
    b_mac = netlink.link_info(b["netns"], "eth0")["mac"]
    h1_mac = netlink.link_info("dpl-h1", "ul0")["mac"]
    for tag, delivered in ((0, 4), (7, 0)):              # as h2 would send it, then tagged
        before, drops = stats("dpl-h1", 256)["rx_packets"], (stats("dpl-h1", 0)["drops"], stats("dpl-h1", 256)["drops"])
        r = in_ns(lab.UNDERLAY_NS, VXLAN_TO, h1_mac, lab.vtep_ip(1), lab.vtep_ip(2), b_mac, b["ip"], a_mac, a["ip"],
                  tag, WIRE)
        assert r.returncode == 0, r.stderr
        assert stats("dpl-h1", 256)["rx_packets"] - before == delivered, \
            (f"tag {tag}", drops, stats("dpl-h1", 0)["drops"], stats("dpl-h1", 256)["drops"])


def settled(counts, done, timeout: float = 5.0) -> tuple:
    """counts() once done(counts()), or once it has stopped changing for 0.3 s (frames still in
    the underlay's queues are counted late on a loaded machine); every figure of one reading."""
    deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        now = counts()
        if done(now):
            return now
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 0.3:
            return now
        time.sleep(0.05)
    return counts()


BROADCASTS = """
import socket, sys, time
from scapy.all import Ether, IP, UDP, Raw
from scapy.layers.vxlan import VXLAN
dst_mac, vtep, src_vtep, inner_src, inner_sip, n, iface = sys.argv[1:8]
inner = Ether(src=inner_src, dst="ff:ff:ff:ff:ff:ff") / IP(src=inner_sip, dst="255.255.255.255") / UDP(dport=9)
frame = bytes(Ether(dst=dst_mac) / IP(src=src_vtep, dst=vtep) / UDP(sport=50002, dport=4789)
              / VXLAN(flags=0x08, vni=256) / inner / Raw(b"s" * 18))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
t0 = time.monotonic()
for _ in range(int(n)):
    s.send(frame)
print(time.monotonic() - t0)
"""


def blast(n: int, src_vtep: str, inner_src: str, inner_ip: str) -> tuple[int, int, float]:
    """n broadcasts into h1's VNI 256 from src_vtep (inner source inner_src, inner_ip), sent at once
    on the wire: the frames flooded and the frames metered once the counts settle, and the
    seconds the sender took to send them."""
    h1_mac = netlink.link_info("dpl-h1", "ul0")["mac"]

    def metered(s: dict) -> int:
        return s["drops"].get("overlay_storm", 0) + s["drops"].get("overlay_storm_peer", 0)

    def counts():
        s = stats("dpl-h1", 256)
        return s["rx_packets"] - before["rx_packets"], metered(s) - before_metered
    before = stats("dpl-h1", 256)
    before_metered = metered(before)
    r = in_ns(lab.UNDERLAY_NS, BROADCASTS, h1_mac, lab.vtep_ip(1), src_vtep, inner_src, inner_ip, n, WIRE)
    assert r.returncode == 0, r.stderr
    return (*settled(counts, lambda c: sum(c) >= n), float(r.stdout))


def test_broadcasts_from_the_underlay_are_metered_at_the_receiver(info):
    """A host without storm control (`--storm-rate 0`), or a forger of a peer's address, made h1 copy
    every broadcast to its endpoints of the VNI, unmetered. `up --overlay-storm-rate` on the
    running node sets the per-network budget in copies: of 2,000 broadcasts sent at once, no
    more pass than the budget allows in the time they took to send (with half a second for them
    to arrive, and its 0.1-s burst), and the rest are counted `overlay_storm`. At 0 (off) none is
    metered. Frames lost on the wire (a veth's XDP ring, a loaded machine) are neither: at most
    10% of them may be.
    (n_local is 1 here, so "in copies" is the BPF tests' to show: tests/bpf/test_flood.py.)"""
    b = sandbox(info, "h2", 256)
    b_mac = netlink.link_info(b["netns"], "eth0")["mac"]
    with Node("dpl-h1").maps() as m:
        n_local = m.dp_networks.get(ctypes.c_uint32(256)).n_local
    assert n_local >= 1
    rate = 200
    try:
        # The network's meter alone (a peer's share would be half of it: tests/bpf/test_flood.py).
        dp("--netns", "dpl-h1", "up", "--overlay-storm-rate", str(rate), "--overlay-storm-peer-rate", "0")
        passed, metered, took = blast(2000, lab.vtep_ip(2), b_mac, b["ip"])
        assert 0.9 * 2000 <= passed + metered <= 2000, (passed, metered)   # the rest lost on the wire, if any
        assert metered > 0 and passed * n_local <= rate * (took + 0.5) + rate * 0.1 + n_local, (passed, took)
        dp("--netns", "dpl-h1", "up", "--overlay-storm-rate", "0")
        passed, metered, _ = blast(500, lab.vtep_ip(2), b_mac, b["ip"])
        assert passed >= 0.9 * 500 and metered == 0, (passed, metered)
    finally:
        dp("--netns", "dpl-h1", "up", "--overlay-storm-rate", "100000", "--overlay-storm-peer-rate", "auto")


TWO_PEERS = """
import socket, sys, time
from scapy.all import Ether, IP, UDP, Raw
from scapy.layers.vxlan import VXLAN
dst_mac, vtep, iface, n, every = sys.argv[1:6]
def frame(src_vtep, inner_src, inner_sip):
    inner = Ether(src=inner_src, dst="ff:ff:ff:ff:ff:ff") / IP(src=inner_sip, dst="255.255.255.255") / UDP(dport=9)
    return bytes(Ether(dst=dst_mac) / IP(src=src_vtep, dst=vtep) / UDP(sport=50004, dport=4789)
                 / VXLAN(flags=0x08, vni=256) / inner / Raw(b"p" * 18))
noisy, quiet = frame(*sys.argv[6:9]), frame(*sys.argv[9:12])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
t0 = time.monotonic()
for i in range(int(n)):
    s.send(quiet if i % int(every) == int(every) // 2 else noisy)
print(time.monotonic() - t0)
"""

# Counts the UDP datagrams to port 9 by source address until SIGTERM, then prints them.
COUNT_BY_SOURCE = """
import json, signal, socket, sys
counts = {}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9))
def done(*_):
    print(json.dumps(counts)); sys.exit(0)
signal.signal(signal.SIGTERM, done)
print("ready", flush=True)
while True:
    _, (ip, _) = s.recvfrom(2048)
    counts[ip] = counts.get(ip, 0) + 1
"""


def test_one_peers_broadcasts_take_only_its_share_of_the_networks_budget(info):
    """One host that does not meter its floods used up the network's whole budget at h1, and the
    VNI's other hosts' broadcasts into h1 were dropped with its own while it lasted. With
    `--overlay-storm-peer-rate` each peer has a budget of its own in the network, here half the
    network's. h2 floods 2,000 broadcasts at once, and among them another peer (an address of no
    host's, let in with the peer check off: the lab has two hosts) sends 10, within its own burst:
    h1's sandbox receives all 10 of those (about none before: h2 held the network's budget), and
    of h2's no more than its share allows."""
    import json
    import signal
    import subprocess
    import sys
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    b_mac = netlink.link_info(b["netns"], "eth0")["mac"]
    h1_mac = netlink.link_info("dpl-h1", "ul0")["mac"]
    rate, quiet_ip = 200, "10.1.0.77"
    before = stats("dpl-h1", 256)
    listener = subprocess.Popen(["ip", "netns", "exec", a["netns"], sys.executable, "-c", COUNT_BY_SOURCE],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "ready"
        dp("--netns", "dpl-h1", "up", "--overlay-storm-rate", str(2 * rate), "--overlay-storm-peer-rate", str(rate),
           "--no-peer-check")
        r = in_ns(lab.UNDERLAY_NS, TWO_PEERS, h1_mac, lab.vtep_ip(1), WIRE, 2000, 200,
                  lab.vtep_ip(2), b_mac, b["ip"], "198.18.0.77", "02:42:0a:01:00:77", quiet_ip)
        assert r.returncode == 0, r.stderr
        took = float(r.stdout)
        time.sleep(1)
        listener.send_signal(signal.SIGTERM)
        got = json.loads(listener.communicate(timeout=10)[0])
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
        dp("--netns", "dpl-h1", "up", "--overlay-storm-rate", "100000", "--overlay-storm-peer-rate", "auto",
           "--peer-check")
    assert got.get(quiet_ip, 0) >= 9, f"the other peer's broadcasts received: {got}"   # one may be lost on the wire
    assert 0 < got.get(b["ip"], 0) <= rate * (took + 0.5) + rate * 0.1 + 1, (got, took)
    # Whose floods were refused: h2's address with its count, in `stats` and the metrics (before: only
    # that some peer's were). The other peer, never over its share, is not listed.
    row = next(s for s in dp_json("--netns", "dpl-h1", "stats") if s["vni"] == 256)
    peers, h2 = row["overlay_storm_peers"], lab.vtep_ip(2)
    refused = row["drops"]["overlay_storm_peer"] - before["drops"].get("overlay_storm_peer", 0)
    assert list(peers) == [h2] and peers[h2] - before["overlay_storm_peers"].get(h2, 0) == refused > 1000, peers
    table = dp("--netns", "dpl-h1", "stats").stdout
    assert "OVERLAY_STORM_PEERS" in table.splitlines()[0] and f"{h2}={peers[h2]}" in table, table
    _, body = scrape(next(h["metrics_url"] for h in info["hosts"] if h["name"] == "h1"))
    assert value(body, "dataplane_overlay_storm_peer_refused_total", vni="256", peer=h2) == peers[h2]
    assert value(body, "dataplane_overlay_storm_peer_refused_total", peer="198.18.0.77") is None


SOURCES = """
import socket, sys, time
from scapy.all import Ether, IP, UDP, Raw
from scapy.layers.vxlan import VXLAN
dst_mac, vtep, src_vtep, inner_dst, inner_ip, n, iface = sys.argv[1:8]
frame = bytearray(bytes(Ether(dst=dst_mac) / IP(src=src_vtep, dst=vtep) / UDP(sport=50003, dport=4789)
                        / VXLAN(flags=0x08, vni=256) / Ether(src="02:42:0b:00:00:00", dst=inner_dst)
                        / IP(src="10.1.0.250", dst=inner_ip) / UDP(dport=9) / Raw(b"m" * 18)))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
t0 = time.monotonic()
for i in range(int(n)):
    frame[59:62] = i.to_bytes(3, "big")        # the inner source MAC (at 50 + 6): a new unowned one each
    s.send(frame)
print(time.monotonic() - t0)
"""


def test_random_source_macs_from_a_peer_are_learned_within_the_budget(info):
    """A peer's address (forged here) sending from a new source MAC each frame had every one
    learned, churning h1's learned entries at line rate. `up --learn-rate` on the running node
    bounds what is learned (the rate times the time taken, and its burst of a second's worth);
    every frame that arrives is still delivered, and each one not learned from is counted."""
    a = sandbox(info, "h1", 256)
    a_mac = netlink.link_info(a["netns"], "eth0")["mac"]
    h1_mac = netlink.link_info("dpl-h1", "ul0")["mac"]

    def learned() -> int:
        with Node("dpl-h1").maps() as m:
            return sum(1 for k in m.dp_learned.keys() if k.vni == 256 and bytes(k.mac)[:3] == bytes.fromhex("02420b"))

    rate = 50
    try:
        dp("--netns", "dpl-h1", "up", "--learn-rate", str(rate))
        before, t0 = stats("dpl-h1", 256), time.monotonic()
        assert learned() == 0

        def counts():
            s = stats("dpl-h1", 256)
            return s["rx_packets"] - before["rx_packets"], learned(), s["learn_limited"] - before["learn_limited"]
        r = in_ns(lab.UNDERLAY_NS, SOURCES, h1_mac, lab.vtep_ip(1), lab.vtep_ip(2), a_mac, a["ip"], 2000, WIRE)
        assert r.returncode == 0, r.stderr
        delivered, new, limited = settled(counts, lambda c: c[0] >= 2000 and c[1] + c[2] >= 2000)
        took = time.monotonic() - t0
        assert delivered >= 0.9 * 2000, ("every frame delivered (the rest lost on the wire, if any)",
                                          stats("dpl-h1", 256)["drops"], stats("dpl-h1", 0)["drops"], r.stderr)
        assert 0 < new <= rate * took + rate, (new, took)
        # Each frame not learned from is counted (one per new source); other frames of the VNI
        # (a sandbox's ARP, say) are delivered without being learned from or counted.
        assert 0.9 * 2000 <= new + limited <= delivered, (new, limited, delivered)
    finally:
        dp("--netns", "dpl-h1", "up", "--learn-rate", "1000")
        with Node("dpl-h1").maps() as m:
            for k in [k for k in m.dp_learned.keys() if bytes(k.mac)[:3] == bytes.fromhex("02420b")]:
                m.dp_learned.delete(k)
