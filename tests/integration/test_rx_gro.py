"""Receive GRO with no kernel vxlan device on the data path (node/rxgro.py). On an underlay
whose links behave as NICs do (lab/nic.py: at most an MTU per frame on the wire, GRO at each
host's uplink), a TCP flow reaches the sandbox merged, as it would through the kernel's vxlan
device; before, every wire frame went up the sandbox's stack alone. The device that lends
its socket hands nothing to the host, `up` goes on without it where another vxlan device
holds the port, and it goes with `down`."""

import ctypes
import os
import subprocess
import sys

import pytest

from dataplane.core import state
from dataplane.kernel import loader, netlink, tcx
from dataplane.node import Node, fpconfig, readout, rxgro
from lab import topology as lab
from lab.traffic import nstat, rx_counts as rx, tcp_transfer
from tests.integration.conftest import dp, in_ns, make_lab, sandbox, wait_for

MTU = 1500


@pytest.fixture(scope="module")
def info():
    yield from make_lab(2, [256], per_host=1, registry="none", nic_like=True)


def gro_row(ns: str) -> str:
    return next(r["attached"] for r in readout.programs(Node(ns)) if r["program"] == "gro_sink")


def test_a_flow_crosses_the_wire_in_mtu_frames_and_arrives_merged(info):
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    wire0, got0 = rx("dpl-h2", lab.UPLINK), rx(b["name"], "eth0")
    assert tcp_transfer(b["name"], a["name"], b["ip"], 32 << 20) == 32 << 20
    (wn, wb), (gn, gb) = [(x1 - x0, y1 - y0) for (x0, y0), (x1, y1) in
                          ((wire0, rx("dpl-h2", lab.UPLINK)), (got0, rx(b["name"], "eth0")))]
    assert wb / wn <= MTU + 14, f"the wire carried {wb // wn}-byte frames on average: the lab is not NIC-like"
    assert gb / gn > 4 * MTU, f"the sandbox received {gn} packets of {gb // gn} bytes on average: not merged"


def test_the_device_is_up_with_the_sink_and_said_so(info):
    ifindex = netlink.link_index("dpl-h2", rxgro.IFNAME)
    assert ifindex and tcx.names("dpl-h2", ifindex) == ["gro_sink"]
    assert gro_row("dpl-h2") == f"tcx ingress {rxgro.IFNAME} (receive GRO)"


def test_status_reads_the_device_once(info, monkeypatch):
    """gro_sink's row and the device's drops come from one read of its link (before: two)."""
    from dataplane.kernel import vxlandev
    reads, read = [], vxlandev._read
    monkeypatch.setattr(vxlandev, "_read", lambda *a: (reads.append(a), read(*a))[1])
    row = next(r for r in readout.programs(Node("dpl-h2")) if r["program"] == "gro_sink")
    assert row["attached"] == f"tcx ingress {rxgro.IFNAME} (receive GRO)" and isinstance(row["dropped"], int)
    assert reads == [("dpl-h2", rxgro.IFNAME)]


def test_rewriting_the_configuration_keeps_the_device(info):
    """`up` on a running node writes dp_config again before it looks at the device: the fast
    path goes on sending through it meanwhile (before, 0 until rxgro.ensure answered, and a
    tunnelled GSO packet in that window was dropped)."""
    node = Node("dpl-h2")
    ifindex = netlink.link_index("dpl-h2", rxgro.IFNAME)
    with state.locked("dpl-h2"), node.maps() as m:
        try:
            fpconfig.write_config(m, node.state())
            assert m.dp_config.get(ctypes.c_uint32(0)).tunnel_ifindex == ifindex
        finally:
            fpconfig.set_tunnel_dev(m, ifindex)         # as up leaves it, whatever the above did


SEND = """
import sys
from scapy.all import Ether, IP, UDP, ICMP, sendp
from scapy.layers.vxlan import VXLAN
mac, ip, iface = sys.argv[1], sys.argv[2], sys.argv[3]
inner = Ether(src="02:42:0a:01:00:99", dst="ff:ff:ff:ff:ff:ff") / IP(src="198.18.0.250", dst=ip) / ICMP()
sendp(Ether(dst=mac) / IP(src="198.18.0.250", dst=ip) / UDP(sport=50000, dport=4789) / VXLAN(flags=0x08, vni=256) / inner,
      iface=iface, count=5, verbose=False)
"""


def echoes(ns: str) -> int:
    return nstat(ns, "IcmpInEchos")


def test_vxlan_to_another_host_address_reaches_the_device_and_no_further(info):
    other = "198.18.0.102"            # h2's, not its VTEP: from_overlay lets VXLAN to it by
    subprocess.run(["ip", "-n", "dpl-h2", "addr", "add", f"{other}/24", "dev", lab.UPLINK], check=True)
    mac = netlink.link_info("dpl-h2", lab.UPLINK)["mac"]

    def send_five() -> tuple[int, int]:
        """(frames the device took, echoes the host counted) for five frames."""
        taken0, echo0 = rx("dpl-h2", rxgro.IFNAME)[0], echoes("dpl-h2")
        r = in_ns(lab.UNDERLAY_NS, SEND, mac, other, "ul-h2")
        assert r.returncode == 0, r.stderr
        assert wait_for(lambda: rx("dpl-h2", rxgro.IFNAME)[0] - taken0 >= 5, timeout=5)
        wait_for(lambda: echoes("dpl-h2") - echo0 >= 5, timeout=1)     # time to arrive, were they let in
        return rx("dpl-h2", rxgro.IFNAME)[0] - taken0, echoes("dpl-h2") - echo0

    ifindex = netlink.link_index("dpl-h2", rxgro.IFNAME)
    try:
        assert send_five() == (5, 0), "a frame the GRO device decapsulated reached the host's stack"
        tcx.detach("dpl-h2", ifindex, "gro_sink")    # the control: without the sink the host answers
        assert send_five() == (5, 5)
    finally:
        fd = loader.open_prog(Node("dpl-h2").pin_dir, "gro_sink")
        try:
            tcx.attach("dpl-h2", ifindex, fd, "gro_sink")
        finally:
            os.close(fd)
        subprocess.run(["ip", "-n", "dpl-h2", "addr", "del", f"{other}/24", "dev", lab.UPLINK], check=False)
    assert gro_row("dpl-h2") == f"tcx ingress {rxgro.IFNAME} (receive GRO)"


HOLD = "import socket, time; s = socket.socket(2, 2); s.bind(('0.0.0.0', 4789)); print('held', flush=True); time.sleep(60)"


def test_up_goes_on_where_the_port_is_taken_and_takes_it_back(info):
    netlink.link_delete("dpl-h1", rxgro.IFNAME)
    # Another vxlan device on the port: its socket merges for us, and up says so.
    subprocess.run(["ip", "-n", "dpl-h1", "link", "add", "vxother", "type", "vxlan", "id", "7", "dstport", "4789"],
                   check=True)
    try:
        subprocess.run(["ip", "-n", "dpl-h1", "link", "set", "vxother", "up"], check=True)
        r = dp("--netns", "dpl-h1", "up", "--vni", "256")
        assert "receive GRO goes through its socket" in r.stderr and "vxother" in r.stderr, r.stderr
        assert not netlink.link_index("dpl-h1", rxgro.IFNAME), "a device that could not come up was kept"
        assert gro_row("dpl-h1") == "not attached (receive GRO through vxlan device vxother)"
        assert rxgro.active("dpl-h1", 4789)
    finally:
        netlink.link_delete("dpl-h1", "vxother")
    # A plain UDP socket on the port: no GRO at all, and up says that.
    holder = subprocess.Popen(["ip", "netns", "exec", "dpl-h1", sys.executable, "-c", HOLD],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = dp("--netns", "dpl-h1", "up", "--vni", "256")
        assert "receive GRO is off: UDP port 4789 is held by a socket that is not a vxlan device" in r.stderr \
            and "Address already in use" in r.stderr, r.stderr
        assert gro_row("dpl-h1").startswith("not attached (receive GRO off: "), gro_row("dpl-h1")
        assert not rxgro.active("dpl-h1", 4789) and not netlink.link_index("dpl-h1", rxgro.IFNAME)
    finally:
        holder.kill()
        holder.wait()
    dp("--netns", "dpl-h1", "up", "--vni", "256")
    assert gro_row("dpl-h1") == f"tcx ingress {rxgro.IFNAME} (receive GRO)"
    ifindex = netlink.link_index("dpl-h1", rxgro.IFNAME)
    dp("--netns", "dpl-h1", "up", "--vni", "256")          # again: the same device, one sink
    assert netlink.link_index("dpl-h1", rxgro.IFNAME) == ifindex and tcx.names("dpl-h1", ifindex) == ["gro_sink"]


def test_no_rx_gro_turns_it_off_and_the_choice_stays(info):
    dp("--netns", "dpl-h1", "up", "--vni", "256", "--no-rx-gro")
    assert not netlink.link_index("dpl-h1", rxgro.IFNAME)
    assert gro_row("dpl-h1") == "not attached (receive GRO off: --no-rx-gro)"
    dp("--netns", "dpl-h1", "up", "--vni", "256")              # a running node keeps what it was told
    assert not netlink.link_index("dpl-h1", rxgro.IFNAME)
    assert Node("dpl-h1").state().config.rx_gro is False
    dp("--netns", "dpl-h1", "up", "--vni", "256", "--rx-gro")
    assert gro_row("dpl-h1") == f"tcx ingress {rxgro.IFNAME} (receive GRO)"


def test_without_it_udp_gro_leaves_our_datagrams_alone(info):
    """UDP forwarding and list GRO would merge VXLAN datagrams into one that from_overlay
    takes for a single frame (the rest lost); the kernel merges only datagrams with a UDP
    checksum, and ours carry none. The wire fills in checksums (tx off), so frames arrive
    unmarked, as from a NIC: GRO passes over a datagram the lab's segmentation marked."""
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    features = ("rx-udp-gro-forwarding", "rx-gro-list")

    def set_features(state: str) -> None:
        try:
            for f in features:
                subprocess.run(["ip", "netns", "exec", "dpl-h2", "ethtool", "-K", lab.UPLINK, f, state], check=True)
        finally:
            subprocess.run(["ip", "netns", "exec", lab.UNDERLAY_NS, "ethtool", "-K", "ul-h2", "tx",
                            "off" if state == "on" else "on"], check=True, capture_output=True)

    dp("--netns", "dpl-h2", "up", "--vni", "256", "--no-rx-gro")
    try:
        set_features("on")
        (n0, b0) = rx(b["name"], "eth0")
        assert tcp_transfer(b["name"], a["name"], b["ip"], 16 << 20) == 16 << 20
        (n1, b1) = rx(b["name"], "eth0")
    finally:
        try:
            set_features("off")
        finally:
            dp("--netns", "dpl-h2", "up", "--vni", "256", "--rx-gro")
    assert (b1 - b0) / (n1 - n0) <= MTU + 14, f"{n1 - n0} packets of {(b1 - b0) // (n1 - n0)} bytes: merged"


def test_down_takes_it_away(info):
    dp("--netns", "dpl-h2", "down")
    assert not netlink.link_index("dpl-h2", rxgro.IFNAME)
