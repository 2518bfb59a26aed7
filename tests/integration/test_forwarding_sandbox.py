"""A sandbox that sends overlay traffic on into the overlay: here a NAT gateway between VNIs
(DNAT of its VNI-256 address to a VNI-257 sandbox, masquerading on its VNI-257 port), as a
proxy or a router container would be. What it forwards reaches from_endpoint still carrying
the tunnel marks that this kernel's decapsulation leaves (skb->encapsulation, the inner
offsets, the UDP tunnel GSO type); the encapsulating adjust_room refused every such frame
(EALREADY) and each was dropped as a helper failure, pings included. Between hosts with NICs
only GRO-merged packets carry the marks; in the lab every frame from another host does."""

import subprocess

import pytest

from lab import capture
from lab import topology as lab
from lab.traffic import ping, rx_counts as rx, tcp_transfer
from tests.integration.conftest import dp, make_lab, sandbox, stats

MTU = 1500
H1_WIRE = "ul-h1"            # dpl-ul's end of h1's link: what h1 receives, cut to the MTU


@pytest.fixture(scope="module")
def gw():
    """h2's VNI-257 endpoint moved into h2's VNI-256 sandbox, which then forwards between them."""
    for info in make_lab(2, [256, 257], per_host=1, registry="none", nic_like=True):
        a, b = sandbox(info, "h1", 256), sandbox(info, "h1", 257)
        r, r2 = sandbox(info, "h2", 256), sandbox(info, "h2", 257)
        ns = r["name"]
        for argv in (["ip", "-n", r2["name"], "link", "set", "eth0", "netns", ns, "name", "eth1"],
                     ["ip", "-n", ns, "addr", "add", f"{r2['ip']}/24", "dev", "eth1"],
                     ["ip", "-n", ns, "link", "set", "eth1", "up"],
                     ["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                     ["ip", "netns", "exec", ns, "iptables", "-t", "nat", "-A", "PREROUTING", "-i", "eth0",
                      "-d", r["ip"], "-j", "DNAT", "--to-destination", b["ip"]],
                     ["ip", "netns", "exec", ns, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth1",
                      "-j", "MASQUERADE"]):
            subprocess.run(argv, check=True, capture_output=True)
        yield {"a": a, "b": b, "r": r}


def helper_drops() -> int:
    return sum(stats("dpl-h2", vni)["drops"].get("helper", 0) for vni in (256, 257))


def test_pings_through_the_gateway_are_answered(gw):
    before = helper_drops()
    assert ping(gw["a"]["name"], gw["r"]["ip"], count=3)[0] == 3
    assert helper_drops() == before


def gro_list(on: bool) -> None:
    subprocess.run(["ip", "netns", "exec", "dpl-h2", "ethtool", "-K", lab.UPLINK, "rx-gro-list", "on" if on else "off"],
                   check=True, capture_output=True)


@pytest.mark.parametrize("rx_gro,as_list", [(False, False), (True, False), (True, True)],
                         ids=["frames", "merged", "merged-as-frag-list"])
def test_tcp_through_the_gateway_arrives_whole_and_the_wire_decodes(gw, rx_gro, as_list):
    a, b, r = gw["a"], gw["b"], gw["r"]
    dp("--netns", "dpl-h2", "up", "--vni", "256", "--vni", "257", "--rx-gro" if rx_gro else "--no-rx-gro")
    gro_list(as_list)        # the inner TCP merged as a frag list: another GSO layout to cut
    nbytes, got = 16 << 20, []
    drops0, seen0 = helper_drops(), rx(r["name"], "eth0")
    try:
        rows, _ = capture.during(lab.UNDERLAY_NS, H1_WIRE, f"udp and src host {lab.vtep_ip(2)}",
                                 lambda: got.append(tcp_transfer(b["name"], a["name"], b["ip"], nbytes,
                                                                 connect=r["ip"])))
    finally:
        gro_list(False)
        dp("--netns", "dpl-h2", "up", "--vni", "256", "--vni", "257", "--rx-gro")
    (n0, b0), (n1, b1) = seen0, rx(r["name"], "eth0")
    assert got == [nbytes]
    assert helper_drops() == drops0
    merged = (b1 - b0) / (n1 - n0) > 4 * MTU
    assert merged == rx_gro, f"the gateway received {n1 - n0} packets of {(b1 - b0) // (n1 - n0)} bytes"
    data = [row for row in rows if int(row["frame.len"]) > 1000]
    assert len(data) > 1000, f"{len(data)} full frames from h2 on the wire"
    assert {row["vxlan.vni"] for row in data} == {"257"}
    assert max(int(row["frame.len"]) for row in data) <= MTU + 14
    assert not capture.problems(data), capture.problems(data)[:5]
