"""kernel/netlink against the kernel: the names a namespace holds, read with the C library's
dump, equal what a full rtnetlink dump decodes (pyroute2), as links come and go; and what
links.py and rtnl.py make (namespaces, veth pairs, a sandbox's side, GSO limits) read back
with iproute2."""

import json
import os

import pytest

from dataplane.core.errors import Conflict, KernelError, NotFound
from dataplane.kernel import gso, netlink

NS = "dpl-t-links"


@pytest.fixture
def ns():
    netlink.ns_delete(NS)
    netlink.ns_create(NS)
    try:
        yield NS
    finally:
        netlink.ns_delete(NS)


def full_dump(ns: str) -> list[str]:
    with netlink.ipr(ns) as s:
        return sorted(link.get_attr("IFLA_IFNAME") for link in s.get_links())


def test_link_names_lists_what_the_kernel_holds(ns):
    for i in range(40):
        netlink.ns_exec(ns, ["ip", "link", "add", f"tva{i}", "type", "veth", "peer", "name", f"tvb{i}"], check=True)
    names = netlink.link_names(ns)
    assert names == full_dump(ns) and len(names) == 81        # lo and 40 pairs
    assert netlink.link_delete(ns, "tva7")                   # its peer goes with it
    names = netlink.link_names(ns)
    assert "tva7" not in names and "tvb7" not in names and names == full_dump(ns)


def test_link_names_of_a_missing_namespace_is_not_found():
    with pytest.raises(NotFound):
        netlink.link_names("dpl-t-no-such")


# --- links.py and rtnl.py: what an endpoint's creation asks of the kernel ----------------------

PEER = "dpl-t-links-p"


@pytest.fixture
def pair(ns):
    netlink.ns_delete(PEER)
    try:
        yield ns, PEER
    finally:
        netlink.ns_delete(PEER)


def ip_json(ns: str, *args: str):
    r = netlink.ns_exec(ns, ["ip", "-j", *args], capture_output=True, text=True, check=True)
    return json.loads(r.stdout or "[]")


def test_a_namespace_is_made_without_a_fork_with_its_sysctls_and_seen_by_ip_netns(pair, monkeypatch):
    _, peer = pair
    mine = os.stat("/proc/thread-self/ns/net").st_ino
    monkeypatch.setattr(os, "fork", lambda: pytest.fail("a process was forked to make a namespace"))
    netlink.ns_create(peer, {"net.ipv6.conf.default.disable_ipv6": 1, "net.ipv4.ip_forward": 1})
    monkeypatch.undo()
    assert os.stat("/proc/thread-self/ns/net").st_ino == mine, "the caller's thread changed namespace"
    assert peer in netlink.ns_list() and netlink.sysctl_get(peer, "net.ipv4.ip_forward") == "1"
    # an interface born in it takes the namespace's defaults (a new mount namespace sees it too)
    netlink.ns_exec(peer, ["ip", "link", "add", "tva", "type", "veth", "peer", "name", "tvb"], check=True)
    assert netlink.sysctl_get(peer, "net.ipv6.conf.tva.disable_ipv6") == "1"
    with pytest.raises(Conflict):
        netlink.ns_create(peer)


def test_a_namespace_whose_sysctl_is_refused_is_not_left(pair):
    _, peer = pair
    with pytest.raises(KernelError, match="create network namespace .*: sysctl net.ipv4.no_such_setting=1"):
        netlink.ns_create(peer, {"net.ipv4.no_such_setting": 1})
    assert not netlink.ns_exists(peer) and peer not in netlink.ns_list()


def test_a_veth_pair_into_another_namespace_is_up_with_its_mac_and_mtu(pair):
    ns, peer = pair
    netlink.ns_create(peer)
    idx = netlink.veth_create(ns, "tvh", f"/run/netns/{peer}", "eth0", "02:aa:bb:cc:dd:01", 1400)
    [host] = ip_json(ns, "link", "show", "tvh")
    [inner] = ip_json(peer, "link", "show", "eth0")
    assert host["ifindex"] == idx == netlink.link_index(ns, "tvh") and host["mtu"] == 1400
    assert "UP" in host["flags"] and inner["mtu"] == 1400 and inner["address"] == "02:aa:bb:cc:dd:01"
    assert netlink.link_index(ns, "eth0") is None and netlink.link_index(peer, "eth0") == inner["ifindex"]
    with pytest.raises(Conflict):
        netlink.veth_create(ns, "tvh", peer, "eth1", "02:aa:bb:cc:dd:02", 1400)
    with pytest.raises(NotFound):
        netlink.veth_create(ns, "tvx", "dpl-t-no-such", "eth1", "02:aa:bb:cc:dd:02", 1400)
    assert netlink.link_index(ns, "tvx") is None
    idx = netlink.veth_create(ns, "tvc", None, "tvd", "02:aa:bb:cc:dd:03", 1500)      # both ends here
    assert netlink.link_index(ns, "tvd") and [ln["address"] for ln in ip_json(ns, "link", "show", "tvd")] == \
        ["02:aa:bb:cc:dd:03"]


def test_a_sandbox_side_comes_up_with_its_address_and_routes_and_again_changes_nothing(pair):
    ns, peer = pair
    netlink.ns_create(peer)
    netlink.veth_create(ns, "tvh", peer, "eth0", "02:aa:bb:cc:dd:01", 1450)
    routes = [{"dst": "0.0.0.0/0", "gw": "10.77.0.1"}, {"dst": "10.78.0.0/16"},
              {"dst": "10.79.1.0/24", "gw": "10.77.0.9"}]
    ran = []
    for _ in range(2):
        netlink.sandbox_up(peer, "eth0", "10.77.0.5", 24, routes, lo=True,
                           then=lambda: ran.append(os.stat("/proc/thread-self/ns/net").st_ino))
    assert ran == [os.stat(f"/run/netns/{peer}").st_ino] * 2, "then() did not run inside the namespace"
    links = {ln["ifname"]: ln for ln in ip_json(peer, "link", "show")}
    assert "UP" in links["lo"]["flags"] and "UP" in links["eth0"]["flags"]
    addrs = [(a["local"], a["prefixlen"]) for x in ip_json(peer, "-4", "addr", "show", "eth0") for a in x["addr_info"]]
    assert addrs == [("10.77.0.5", 24)]
    got = {(r["dst"], r.get("gateway"), r.get("scope")) for r in ip_json(peer, "route", "show")}
    assert {("default", "10.77.0.1", None), ("10.78.0.0/16", None, "link"), ("10.79.1.0/24", "10.77.0.9", None)} <= got
    assert netlink.routes_missing(peer, routes) == []
    with pytest.raises(KernelError, match="add route 10.80.0.0/16"):    # a gateway off the link
        netlink.routes_add(peer, "eth0", [{"dst": "10.80.0.0/16", "gw": "192.0.2.1"}])
    with pytest.raises(NotFound):
        netlink.sandbox_up(peer, "eth9", "10.77.0.6", 24, [])


def test_gso_limits_are_read_and_set_over_raw_rtnetlink(ns):
    netlink.ns_exec(ns, ["ip", "link", "add", "tva", "type", "veth", "peer", "name", "tvb"], check=True)
    assert gso.gso_ipv4_max(ns, "tva") == gso.LEGACY_MAX
    gso.set_gso_ipv4_max(ns, "tva", gso.BIG_TCP_SIZE)       # (iproute2 6.1 does not show it)
    assert gso.gso_ipv4_max(ns, "tva") == gso.BIG_TCP_SIZE and gso.gso_ipv4_max(ns, "tvb") == gso.LEGACY_MAX
    with pytest.raises(NotFound):
        gso.gso_ipv4_max(ns, "tvz")


def test_routes_overlapping_a_subnet_are_read_from_the_main_table(ns):
    """node/gateway.py refuses a way out for a subnet that overlaps one: broader or narrower,
    a blackhole (no interface) and a multipath route's first nexthop too; default routes and
    other tables' routes do not count."""
    netlink.ns_exec(ns, ["ip", "link", "add", "tva", "type", "veth", "peer", "name", "tvb"], check=True)
    for cmd in (["link", "set", "tva", "up"], ["link", "set", "tvb", "up"],
                ["addr", "add", "10.60.0.1/24", "dev", "tva"], ["addr", "add", "10.61.0.1/24", "dev", "tvb"],
                ["route", "add", "default", "via", "10.60.0.2"],
                ["route", "add", "10.70.0.0/16", "via", "10.60.0.2"], ["route", "add", "blackhole", "10.70.9.0/24"],
                ["route", "add", "10.71.0.0/24", "nexthop", "via", "10.61.0.2", "nexthop", "via", "10.60.0.2"],
                ["route", "add", "10.72.0.0/24", "dev", "tva", "table", "100"]):
        netlink.ns_exec(ns, ["ip"] + cmd, check=True)
    assert sorted(netlink.routes_overlapping(ns, "10.70.9.0/25")) == [("10.70.0.0/16", "tva"), ("10.70.9.0/24", None)]
    assert sorted(netlink.routes_overlapping(ns, "10.0.0.0/8")) == [
        ("10.60.0.0/24", "tva"), ("10.61.0.0/24", "tvb"), ("10.70.0.0/16", "tva"), ("10.70.9.0/24", None),
        ("10.71.0.0/24", "tvb")]
    assert netlink.routes_overlapping(ns, "10.72.0.0/24") == [], "table 100 is not the main table"
    assert netlink.routes_overlapping(ns, "192.0.2.0/24") == [], "nor is the default route an overlap"
