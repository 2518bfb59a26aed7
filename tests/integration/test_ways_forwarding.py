"""node/forwarding.py on a real namespace: a way out of the node other than its uplink (an
interface of a default route; here one with a dot in its name, as a VLAN's) gets IPv4
forwarding while the node has a gateway, the value found kept and put back when the last
gateway goes, but left on where the host has forwarding on for all interfaces (as Docker sets
it) or the interface is the uplink now. Without it, egress never worked on a host whose default
route is not the underlay's interface: the world's replies arrive there. (The rules that keep
such an interface to the routers: test_gwrules_backends, test_egress.)"""

import subprocess
from types import SimpleNamespace

import pytest

from dataplane.kernel import netlink
from dataplane.node import forwarding

NS = "dpl-t-ways"
MG = "mg.0"


@pytest.fixture
def ns():
    netlink.ns_delete(NS)
    netlink.ns_create(NS)
    try:
        # (a new namespace copies the host's: a host that forwards would start these at 1)
        netlink.sysctl(NS, "net.ipv4.conf.all.forwarding", "0")
        for a, b in (("ul0", "ul1"), (MG, "mg.1")):
            netlink.veth_create(NS, a, NS, b, "02:00:00:00:00:01", 1500)
            netlink.link_up(NS, a)
        netlink.link_up(NS, MG, "192.0.2.201", 30)
        subprocess.run(["ip", "-n", NS, "route", "add", "default", "via", "192.0.2.202"], check=True)
        yield SimpleNamespace(netns=NS)
    finally:
        netlink.ns_delete(NS)


def fwd(ifname: str) -> str:
    return subprocess.run(["ip", "netns", "exec", NS, "cat", f"/proc/sys/net/ipv4/conf/{ifname}/forwarding"],
                          capture_output=True, text=True, check=True).stdout.strip()


def node_state(underlay="ul0"):
    return SimpleNamespace(config=SimpleNamespace(underlay=underlay), ways_forwarding={})


def test_a_default_routes_interface_forwards_while_there_is_a_gateway(ns):
    st = node_state()
    assert fwd(MG) == "0" and fwd("ul0") == "0"
    assert forwarding.due(ns, st, [MG, "ul0"])
    assert forwarding.note(ns, st) is True and st.ways_forwarding == {MG: "0"}, "the uplink is vtep.py's"
    assert forwarding.confined(st) == [MG] and fwd(MG) == "0", "noted: confined by the rules before it forwards"
    said = forwarding.apply(ns, st)
    assert len(said) == 1 and MG in said[0], said
    assert fwd(MG) == "1" and fwd("ul0") == "0"
    assert forwarding.note(ns, st) is False and forwarding.apply(ns, st) == [] and not forwarding.due(ns, st, [MG])
    forwarding.restore(ns, st)
    assert fwd(MG) == "0" and st.ways_forwarding == {}


def test_left_on_where_the_host_turned_it_on_for_all_the_interface_went_or_is_the_uplink(ns):
    st = node_state()
    forwarding.note(ns, st)
    forwarding.apply(ns, st)
    netlink.sysctl(NS, "net.ipv4.conf.all.forwarding", "1")
    assert forwarding.due(ns, st, [MG]), "records of a host that forwards all: to forget"
    assert forwarding.note(ns, st) is True and forwarding.confined(st) == [], "its own choice: not confined"
    forwarding.restore(ns, st)
    assert fwd(MG) == "1"
    netlink.sysctl(NS, "net.ipv4.conf.all.forwarding", "0")
    assert fwd(MG) == "0"
    forwarding.note(ns, st)
    forwarding.apply(ns, st)
    netlink.link_delete(NS, MG)
    forwarding.restore(ns, st)            # nothing to put back, and no error
    assert st.ways_forwarding == {}
    up = node_state(underlay="ul0")
    up.ways_forwarding = {"ul0": "0"}     # recorded as a way out, the underlay since (up --restore --underlay)
    netlink.sysctl(NS, netlink.conf_key("ul0", "forwarding"), "1")
    forwarding.restore(ns, up)
    assert fwd("ul0") == "1", "the uplink's forwarding is vtep.py's to put back"
