"""node/forwarding.py on a real namespace: a way out of the node other than its uplink (an
interface of a default route) gets IPv4 forwarding while the node has a gateway, the value
found kept and put back when the last gateway goes, but left on where the host has forwarding
on for all interfaces since (as Docker sets it). Without it, egress never worked on a host whose
default route is not the underlay's interface: the world's replies arrive there."""

import subprocess
from types import SimpleNamespace

import pytest

from dataplane.kernel import netlink
from dataplane.node import forwarding

NS = "dpl-t-ways"


@pytest.fixture
def ns():
    netlink.ns_delete(NS)
    netlink.ns_create(NS)
    try:
        for a, b in (("ul0", "ul1"), ("mgmt0", "mgmt1")):
            netlink.veth_create(NS, a, NS, b, "02:00:00:00:00:01", 1500)
            netlink.link_up(NS, a)
        netlink.link_up(NS, "mgmt0", "192.0.2.201", 30)
        subprocess.run(["ip", "-n", NS, "route", "add", "default", "via", "192.0.2.202"], check=True)
        yield SimpleNamespace(netns=NS)
    finally:
        netlink.ns_delete(NS)


def fwd(ifname: str) -> str:
    return netlink.sysctl_get(NS, f"net.ipv4.conf.{ifname}.forwarding")


def test_a_default_routes_interface_forwards_while_there_is_a_gateway(ns):
    st = SimpleNamespace(config=SimpleNamespace(underlay="ul0"), ways_forwarding={})
    assert fwd("mgmt0") == "0" and fwd("ul0") == "0"
    assert forwarding.wanted(ns, st) == ["mgmt0"], "the uplink is vtep.py's"
    said = forwarding.on(ns, st)
    assert len(said) == 1 and "mgmt0" in said[0], said
    assert fwd("mgmt0") == "1" and fwd("ul0") == "0"
    assert st.ways_forwarding == {"mgmt0": "0"}
    assert forwarding.on(ns, st) == [] and forwarding.wanted(ns, st) == [], "once"
    forwarding.restore(ns, st)
    assert fwd("mgmt0") == "0" and st.ways_forwarding == {}


def test_left_on_where_the_host_turned_it_on_for_all_or_the_interface_went(ns):
    st = SimpleNamespace(config=SimpleNamespace(underlay="ul0"), ways_forwarding={})
    forwarding.on(ns, st)
    netlink.sysctl(NS, "net.ipv4.conf.all.forwarding", "1")
    forwarding.restore(ns, st)
    assert fwd("mgmt0") == "1" and st.ways_forwarding == {}
    netlink.sysctl(NS, "net.ipv4.conf.all.forwarding", "0")
    assert fwd("mgmt0") == "0"
    forwarding.on(ns, st)
    netlink.link_delete(NS, "mgmt0")
    forwarding.restore(ns, st)            # nothing to put back, and no error
    assert st.ways_forwarding == {}
