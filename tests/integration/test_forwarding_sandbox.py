"""Sandboxes that send tunnelled traffic into the overlay, on links that behave as NICs:
- a NAT gateway between VNIs (DNAT of its VNI-256 address to a VNI-257 sandbox,
  masquerading on its VNI-257 port), as a proxy or a router container would be. What it
  forwards still carries the tunnel marks this kernel's decapsulation leaves
  (skb->encapsulation, the inner offsets, the UDP tunnel GSO type);
- a sandbox running its own vxlan device over the overlay (a VPN, a nested cluster).
from_endpoint's encapsulating adjust_room refuses a marked frame (EALREADY): every such
frame was dropped as a helper failure, and handing GSO packets on with their old marks
(tried) put malformed frames on the wire. Now such frames leave by the node's vxlan device
(node/rxgro.py), whose transmit is the kernel's tunnel code; without it a single frame gets
change_head and a GSO packet is counted (bpf/lib/encap.h, encap_marked)."""

import json
import os
import subprocess
from contextlib import contextmanager

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from dataplane.core import state
from dataplane.kernel import ethtool, netlink
from dataplane.node import Node, endpoints, rxgro
from lab import capture
from lab import topology as lab
from lab.traffic import ping, rx_counts as rx, tcp_transfer, tx_counts, wait_listening
from tests import packets as P
from tests.integration.conftest import dp, in_ns, make_lab, sandbox, stats

MTU = 1500
NESTED = {"h1": "192.168.77.1", "h2": "192.168.77.2"}


def sh(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def gw():
    """h2's VNI-257 endpoint moved into h2's VNI-256 sandbox, which then forwards between
    them; and a vxlan device (VNI 42) in h1's and h2's VNI-256 sandboxes, to each other."""
    for info in make_lab(2, [256, 257], per_host=1, registry="none", nic_like=True):
        a, b = sandbox(info, "h1", 256), sandbox(info, "h1", 257)
        r, r2 = sandbox(info, "h2", 256), sandbox(info, "h2", 257)
        ns = r["name"]
        sh("ip", "-n", r2["name"], "link", "set", "eth0", "netns", ns, "name", "eth1")
        sh("ip", "-n", ns, "addr", "add", f"{r2['ip']}/24", "dev", "eth1")
        sh("ip", "-n", ns, "link", "set", "eth1", "up")
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for match in (["-p", "icmp"], ["-p", "tcp", "--dport", "5300"]):
            sh("ip", "netns", "exec", ns, "iptables", "-t", "nat", "-A", "PREROUTING", "-i", "eth0", "-d", r["ip"],
               *match, "-j", "DNAT", "--to-destination", b["ip"])
        sh("ip", "netns", "exec", ns, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth1", "-j", "MASQUERADE")
        for me, other in ((a, r), (r, a)):
            sh("ip", "-n", me["name"], "link", "add", "nv0", "type", "vxlan", "id", "42", "remote", other["ip"],
               "local", me["ip"], "dstport", "4789", "dev", "eth0")
            sh("ip", "-n", me["name"], "addr", "add", f"{NESTED[me['host']]}/24", "dev", "nv0")
            sh("ip", "-n", me["name"], "link", "set", "nv0", "up")
        yield {"a": a, "b": b, "r": r}


def drops(host: str, reason: str) -> int:
    return sum(stats(f"dpl-{host}", vni)["drops"].get(reason, 0) for vni in (256, 257))


@contextmanager
def checksummed(port: str):
    """The underlay port toward a host fills in every checksum (tx off), so the capture
    on it can verify them."""
    sh("ip", "netns", "exec", lab.UNDERLAY_NS, "ethtool", "-K", port, "tx", "off")
    try:
        yield
    finally:
        sh("ip", "netns", "exec", lab.UNDERLAY_NS, "ethtool", "-K", port, "tx", "on")


def check_wire(rows: list[dict], vni: str) -> None:
    data = [row for row in rows if int(row["frame.len"]) > 1000]
    assert len(data) > 1000, f"{len(data)} full frames on the wire"
    assert {row["vxlan.vni"] for row in data} == {vni}
    assert max(int(row["frame.len"]) for row in data) <= MTU + 14
    assert not capture.problems(rows), capture.problems(rows)[:5]


def test_sandbox_ends_segment_tunnelled_gso_themselves(gw):
    for ns, ifname in ((gw["a"]["name"], "eth0"), (gw["r"]["name"], "eth1")):
        assert ethtool.features(ns, ifname, ethtool.TUNNEL_GSO) == dict.fromkeys(ethtool.TUNNEL_GSO, False)


def test_up_tells_sandboxes_an_older_version_made(gw):
    """An endpoint made before sandbox ends were told to cut tunnelled GSO keeps its
    segmentation on; the next `up` (after an upgrade; `up --restore` at boot) turns it off,
    once per node: a sandbox that turns it on again after that is left alone."""
    a, path = gw["a"], state._path("dpl-h1")
    off = dict.fromkeys(ethtool.TUNNEL_GSO, False)
    with sandbox_segments(a["name"], False):
        with state.locked("dpl-h1"):
            with open(path) as f:
                old = json.load(f)
            old.pop("ends_swept", None)                # as an older version wrote it
            state.write_json(path, old)
        r = dp("--netns", "dpl-h1", "up", "--vni", "256", "--vni", "257")
        assert ethtool.features(a["name"], "eth0", ethtool.TUNNEL_GSO) == off
        assert "1 endpoint(s) an older version made" in r.stderr, r.stderr
    with sandbox_segments(a["name"], False):
        r = dp("--netns", "dpl-h1", "up", "--vni", "256", "--vni", "257")
        assert ethtool.features(a["name"], "eth0", ethtool.TUNNEL_GSO) != off, "told twice"
        assert "older version" not in r.stderr, r.stderr


def test_up_gives_sandboxes_of_the_last_version_a_segment_limit(gw):
    """Endpoints made before sandbox ends got gso_max_segs DP_GSO_SEGS_MAX (stop 57) keep a veth's
    65,535, and under BIG TCP with a tiny MSS their TCP makes packets the fast path drops as
    gso_segs. That version's state says tunnel_gso_swept: the next `up` still gives them the
    limit (and leaves the tunnelled GSO setting, which that version made, alone)."""
    a, path = gw["a"], state._path("dpl-h1")
    sh("ip", "-n", a["name"], "link", "set", "eth0", "gso_max_segs", "65535")
    try:
        with state.locked("dpl-h1"):
            with open(path) as f:
                old = json.load(f)
            old.pop("ends_swept", None)
            state.write_json(path, {**old, "tunnel_gso_swept": True})      # as stop 57 wrote it
        with sandbox_segments(a["name"], False):
            r = dp("--netns", "dpl-h1", "up", "--vni", "256", "--vni", "257")
            assert ethtool.features(a["name"], "eth0", ethtool.TUNNEL_GSO) != dict.fromkeys(ethtool.TUNNEL_GSO, False)
        segs = json.loads(sh("ip", "-n", a["name"], "-d", "-j", "link", "show", "eth0").stdout)[0]["gso_max_segs"]
    finally:
        sh("ip", "-n", a["name"], "link", "set", "eth0", "gso_max_segs", str(endpoints.GSO_SEGS_MAX))
    assert segs == endpoints.GSO_SEGS_MAX == 2048, r.stderr
    assert "1 endpoint(s) an older version made" in r.stderr, r.stderr
    assert Node("dpl-h1").state().ends_swept == endpoints.ENDS_MADE


def test_pings_through_the_gateway_are_answered(gw):
    before = drops("h2", "helper")
    assert ping(gw["a"]["name"], gw["r"]["ip"], count=3)[0] == 3
    assert drops("h2", "helper") == before


def gro_list(on: bool) -> None:
    sh("ip", "netns", "exec", "dpl-h2", "ethtool", "-K", lab.UPLINK, "rx-gro-list", "on" if on else "off")


@pytest.mark.parametrize("rx_gro,as_list", [(False, False), (True, False), (True, True)],
                         ids=["frames", "merged", "merged-as-frag-list"])
def test_tcp_through_the_gateway_arrives_whole_and_the_wire_decodes(gw, rx_gro, as_list):
    a, b, r = gw["a"], gw["b"], gw["r"]
    dp("--netns", "dpl-h2", "up", "--vni", "256", "--vni", "257", "--rx-gro" if rx_gro else "--no-rx-gro")
    gro_list(as_list)        # the inner TCP merged as a frag list: another GSO layout
    nbytes, got = 16 << 20, []
    lost0, seen0, tx0 = drops("h2", "helper") + drops("h2", "tunnel_gso"), rx(r["name"], "eth0"), device_tx("dpl-h2")
    try:
        with checksummed("ul-h1"):
            rows, _ = capture.during(lab.UNDERLAY_NS, "ul-h1", f"udp and src host {lab.vtep_ip(2)}",
                                     lambda: got.append(tcp_transfer(b["name"], a["name"], b["ip"], nbytes,
                                                                     connect=r["ip"])), checksums=True)
    finally:
        gro_list(False)
        dp("--netns", "dpl-h2", "up", "--vni", "256", "--vni", "257", "--rx-gro")
    (n0, b0), (n1, b1) = seen0, rx(r["name"], "eth0")
    assert got == [nbytes]
    assert (device_tx("dpl-h2") - tx0 > 1000) == rx_gro, "the gateway's frames leave h2 by its device, if it has one"
    assert drops("h2", "helper") + drops("h2", "tunnel_gso") == lost0
    merged = (b1 - b0) / (n1 - n0) > 4 * MTU
    assert merged == rx_gro, f"the gateway received {n1 - n0} packets of {(b1 - b0) // (n1 - n0)} bytes"
    check_wire(rows, "257")


def device_tx(netns: str) -> int:
    """Frames the node's vxlan device (node/rxgro.py) sent; 0 without one."""
    return tx_counts(netns, rxgro.IFNAME)[0] if netlink.link_index(netns, rxgro.IFNAME) else 0


@contextmanager
def node_as(host: str, rx_gro: bool):
    dp("--netns", f"dpl-{host}", "up", "--vni", "256", "--vni", "257", "--rx-gro" if rx_gro else "--no-rx-gro")
    try:
        yield
    finally:
        dp("--netns", f"dpl-{host}", "up", "--vni", "256", "--vni", "257", "--rx-gro")


@contextmanager
def sandbox_segments(netns: str, cuts: bool):
    """The sandbox end cuts tunnelled GSO (as made), or hands it on whole (a sandbox that
    turned its segmentation back on, an endpoint made by an older version)."""
    if not cuts:
        sh("ip", "netns", "exec", netns, "ethtool", "-K", "eth0", *[x for f in ethtool.TUNNEL_GSO for x in (f, "on")])
    try:
        yield
    finally:
        ethtool.set_off(netns, "eth0", ethtool.TUNNEL_GSO)


@pytest.mark.parametrize("device,cuts", [(True, True), (True, False), (False, True)],
                         ids=["cut-in-sandbox", "cut-by-the-device", "no-device"])
def test_a_sandbox_tunnel_over_the_overlay_carries_tcp(gw, device, cuts):
    """The frames leave h1 by its vxlan device (in pieces the sandbox cut, or GSO packets
    the device's own transmit cuts) or, without the device, by change_head."""
    a, r = gw["a"], gw["r"]
    lost0, got = drops("h1", "helper") + drops("h1", "tunnel_gso"), []
    with node_as("h1", device), sandbox_segments(a["name"], cuts), checksummed("ul-h2"):
        tx0 = device_tx("dpl-h1")
        assert ping(a["name"], NESTED["h2"], count=3)[0] == 3
        cap = capture.Capture(lab.UNDERLAY_NS, "ul-h2", f"udp and src host {lab.vtep_ip(1)}")
        try:
            got.append(tcp_transfer(r["name"], a["name"], NESTED["h2"], 16 << 20, port=5301))
            pcap = cap.stop()
            rows, protos, ports = capture.decode(pcap, checksums=True), capture.inner_protocols(pcap), port_pairs(pcap)
        finally:
            cap.remove()
        through_device = device_tx("dpl-h1") - tx0
    assert got == [16 << 20]
    assert drops("h1", "helper") + drops("h1", "tunnel_gso") == lost0
    assert (through_device > 1000) == device, f"{through_device} frames left by {rxgro.IFNAME}"
    assert any(":vxlan:eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:tcp" in p for p in protos)
    check_wire(rows, "256")
    wrong = [(have, want) for have, want in ports if have != want]
    assert not wrong and len(ports) > 1000, f"{len(wrong)} of {len(ports)} frames on another source port: {wrong[:3]}"


def port_pairs(pcap: str) -> list[tuple[int, int]]:
    """(outer UDP source port, the port wire.h gives the inner flow) of each VXLAN-in-VXLAN
    frame: the kernel's transmit must choose what from_endpoint would have."""
    out = subprocess.run(["tshark", "-r", pcap, "-n", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
                          "-e", "ip.src", "-e", "ip.dst", "-e", "udp.srcport", "-e", "udp.dstport"],
                         capture_output=True, text=True, check=True).stdout
    pairs = []
    for line in out.splitlines():
        src, dst, sport, dport = (f.split(",") for f in line.split("\t"))
        if len(src) > 2:            # ours, the sandbox's, and the TCP flow's addresses
            inner = Ether() / IP(src=src[1], dst=dst[1]) / UDP(sport=int(sport[1]), dport=int(dport[1]))
            pairs.append((int(sport[0]), P.src_port(bytes(inner))))
    return pairs


SEND = """
import socket, sys
c = socket.create_connection((sys.argv[1], 5302), timeout=2)
try:
    c.sendall(b"x" * (8 << 20))
except OSError:
    pass
"""


def test_tunnelled_gso_with_no_device_to_cut_it_is_counted(gw):
    """A sandbox that hands on tunnelled GSO where the node has no vxlan device: dropped,
    and counted as tunnel_gso, not as a helper failure."""
    a, r = gw["a"], gw["r"]
    sink = subprocess.Popen(["ip", "netns", "exec", r["name"], "python3", "-c",
                             "import socket; s = socket.create_server(('', 5302)); c, _ = s.accept()\n"
                             "while c.recv(65536): pass"])
    try:
        wait_listening(r["name"], 5302)
        with node_as("h1", False), sandbox_segments(a["name"], False):
            before = drops("h1", "tunnel_gso"), drops("h1", "helper")
            sent = in_ns(a["name"], SEND, NESTED["h2"])
            assert sent.returncode == 0, sent.stderr
            after = drops("h1", "tunnel_gso"), drops("h1", "helper")
    finally:
        sink.kill()
        sink.wait()
    assert after[0] > before[0]
    assert after[1] == before[1]


CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 5303), timeout=2.5)
except OSError as e:
    print(e)
"""


def test_frames_the_vxlan_device_drops_are_told(gw):
    """Frames from_endpoint sends through the node's vxlan device count as sent in our
    statistics; the device can still drop them (down behind the node's back, or a GSO
    packet the kernel cannot cut). `dataplane status` and the metric say how many."""
    def lost() -> int:
        rows = json.loads(dp("--netns", "dpl-h1", "status", "-o", "json").stdout)["programs"]
        return next(r for r in rows if r["program"] == "gro_sink")["dropped"]

    if tuple(int(x) for x in os.uname().release.split(".")[:2]) < (6, 11):
        pytest.skip("kernels before about 6.11 do not count a down device's drops in tx_dropped")
    a = gw["a"]
    before = lost()
    sh("ip", "-n", "dpl-h1", "link", "set", rxgro.IFNAME, "down")     # no agent here to mend it
    try:
        # TCP through the sandbox's vxlan device: a partial checksum, so marked (a ping is not)
        r = in_ns(a["name"], CONNECT, NESTED["h2"])
        assert "timed out" in r.stdout, r.stdout + r.stderr
        assert lost() >= before + 2, "the SYN and at least one retransmission"
        assert f"{lost()} frames dropped on its transmit" in dp("--netns", "dpl-h1", "status").stdout
    finally:
        dp("--netns", "dpl-h1", "up", "--vni", "256", "--vni", "257", "--rx-gro")
    assert ping(a["name"], NESTED["h2"], count=1)[0] == 1
