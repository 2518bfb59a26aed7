"""Issue 16, item 1 (endpoint add): an endpoint made by `dataplane endpoint add`
reaches the world (the lab switch's 198.18.0.254) through its host's gateway
for the VNI, with the host's address as the source (SNAT); east-west traffic
stays on the overlay; an internal network has no way out; the gateway goes
with its VNI and comes back after a crash took its interfaces."""

from __future__ import annotations

import contextlib
import ipaddress
import shlex
import subprocess
import sys
import time

import pytest

from dataplane.kernel import netlink
from dataplane.node import Node, readout
from lab import capture
from lab import topology as lab
from lab.traffic import ping
from tests.integration.conftest import TICK_S, dp, dp_json, make_lab, sandbox, stats, wait_for

H1, H2 = lab.host_ns(1), lab.host_ns(2)
SERVE = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7077)); s.listen(1); s.settimeout(20)
c, peer = s.accept(); c.sendall(peer[0].encode()); c.close()
"""
ASK = """
import socket, sys
c = socket.create_connection((sys.argv[1], 7077), timeout=10); print(c.recv(100).decode())
"""


@pytest.fixture(scope="module")
def info():
    # A learned entry's life of 8 s makes the agents' housekeeping tick every 2 s, not 10: the
    # tests of repairs wait for ticks. Registry mode learns no owned MAC, so nothing else changes.
    yield from make_lab(2, [256], per_host=1, registry="sqlite", fdb_age=TICK_S * 4)


def in_ns(ns: str, code: str, *args, **kw):
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_an_endpoint_reaches_the_world_as_its_host(info):
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    routes = subprocess.run(["ip", "netns", "exec", a["netns"], "ip", "route"], capture_output=True, text=True).stdout
    assert "default via 10.1.0.1 dev eth0" in routes, routes
    cap = capture.Capture(lab.UNDERLAY_NS, lab.BRIDGE, "icmp")
    try:
        received, _ = ping(a["name"], lab.WORLD_IP, 3, 1.0)     # a second apart: the capture is ready
        pcap = cap.stop()
        r = subprocess.run(["tshark", "-r", pcap, "-n", "-T", "fields", "-e", "ip.src", "-Y", "icmp.type == 8"],
                           capture_output=True, text=True, check=True)
    finally:
        cap.remove()
    assert received == 3, "the sandbox pings the world"
    assert set(r.stdout.split()) == {lab.vtep_ip(1)}, f"the world sees the host's address (SNAT): {r.stdout}"
    # TCP too, and the world's server sees h1's address as the peer
    srv = in_ns(lab.UNDERLAY_NS, SERVE, lab.WORLD_IP)
    try:
        time.sleep(0.5)
        cli = in_ns(a["netns"], ASK, lab.WORLD_IP)
        out, err = cli.communicate(timeout=30)
    finally:
        srv.wait(timeout=30)
    assert out.strip() == lab.vtep_ip(1), (out, err)
    # east-west: on-link, over VXLAN, never through the gateway
    via = subprocess.run(["ip", "netns", "exec", a["netns"], "ip", "route", "get", b["ip"]],
                         capture_output=True, text=True).stdout
    assert "via" not in via, via
    before = stats(H1, 256)["tx_packets"]
    assert ping(a["name"], b["ip"], 3, 0.2)[0] == 3
    assert stats(H1, 256)["tx_packets"] >= before + 3, "east-west went over the overlay"
    rows = readout.fdb(Node(H1))
    assert [r["mac"] for r in rows if r["state"] == "gateway"] == ["02:42:0a:01:00:01"], rows


def test_an_internal_network_has_no_way_out(info):
    dp("network", "create", "closed", "--vni", "300", "--subnet", "10.30.0.0/24", "--internal",
       "--registry", lab.registry_url("sqlite"))
    try:
        ep = dp_json("--netns", H1, "endpoint", "add", "dpl-shut", "--network", "closed")
        routes = subprocess.run(["ip", "netns", "exec", ep["netns"], "ip", "route"],
                                capture_output=True, text=True).stdout
        assert "default" not in routes, routes
        assert ping(ep["netns"], lab.WORLD_IP, 2, 0.2)[0] == 0
        assert f"dpgw{300:06x}" not in netlink.link_names(H1), "no gateway for an internal network"
    finally:
        dp("--netns", H1, "endpoint", "rm", "dpl-shut", check=False)
        dp("network", "rm", "closed", "--registry", lab.registry_url("sqlite"), check=False)


def test_the_gateway_comes_back_after_a_crash_and_goes_with_its_vni(info):
    from dataplane.agent import process
    a = sandbox(info, "h1", 256)
    router, port = f"dpgw{256:06x}", f"dpgp{256:06x}"
    assert port in netlink.link_names(H1)
    process.stop(H1)
    netlink.link_delete(H1, port)                  # what a crash or a hand might leave
    process.spawn(H1, H1, lab.registry_url("sqlite", host="h1"), "h1", 10, quiet=True)
    assert {router, port} <= set(netlink.link_names(H1)), "the agent's start-up sweep made it again"
    assert ping(a["name"], lab.WORLD_IP, 2, 0.2)[0] == 2
    assert _host_address(H1) in netlink.link_info(H1, router)["ipv4"], "its host address with it"

    url = lab.registry_url("sqlite")
    dp("network", "create", "brief", "--vni", "301", "--subnet", "10.31.0.0/24", "--registry", url)
    dp("--netns", H1, "endpoint", "add", "dpl-brief", "--network", "brief")
    assert f"dpgp{301:06x}" in netlink.link_names(H1)
    assert "dpgw.301.h1" in {e["id"] for e in dp_json("--netns", H1, "endpoint", "list", "--routers")}, "at once"
    dp("--netns", H1, "endpoint", "rm", "dpl-brief")
    dp("network", "rm", "brief", "--registry", url)        # the router's record does not hold it
    assert wait_for(lambda: 301 not in Node(H1).require_up().networks, timeout=15)
    assert f"dpgp{301:06x}" not in netlink.link_names(H1), "the gateway went with its VNI"
    assert 301 not in Node(H1).require_up().gateways and 301 not in Node(H1).require_up().router_ips
    assert not [e for e in dp_json("--netns", H1, "endpoint", "list", "--routers") if e["id"].startswith("dpgw.301")]
    rules = netlink.ns_exec(H1, ["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    assert "vni 301" not in rules and "vni 256" in rules, rules


def test_a_gateway_cut_short_after_its_veth_was_made_is_made_again(info):
    """The gateway's intent is saved (ifindex 0) before its veth is made, its index only with
    the whole: an agent killed in between left an intent with ifindex 0 beside interfaces that
    were there, part set up. The start-up sweep took it for whole and served the port at
    ifindex 0 (the port's real entry then swept as a stray); nothing addressed the router or
    attached the programs, and no later add mended it: the VNI had no way out on that host."""
    import ctypes
    import json
    from dataplane.agent import process
    from dataplane.kernel import tcx
    a = sandbox(info, "h1", 256)
    router, port = f"dpgw{256:06x}", f"dpgp{256:06x}"
    process.stop(H1)
    path = f"/run/dataplane/{H1}/state.json"
    with open(path) as f:
        st = json.load(f)
    (key,) = [k for k, g in st["gateways"].items() if g["vni"] == 256]
    st["gateways"][key]["ifindex"] = 0
    with open(path, "w") as f:
        json.dump(st, f)
    netlink.ns_exec(H1, ["ip", "addr", "flush", "dev", router], check=True)   # cut before its address
    process.spawn(H1, H1, lab.registry_url("sqlite", host="h1"), "h1", 10, quiet=True)
    ifindex = netlink.link_index(H1, port)
    assert Node(H1).require_up().gateways[256].ifindex == ifindex
    with Node(H1).maps() as m:
        assert m.dp_endpoints.get(ctypes.c_uint32(ifindex)) is not None, "the port is served"
    assert tcx.ids(H1, ifindex), "the port runs from_endpoint"
    assert ping(a["name"], lab.WORLD_IP, 2, 0.2)[0] == 2


ROGUE = """
import sys
from scapy.all import Ether, IP, UDP, Raw, send
from scapy.layers.vxlan import VXLAN
vtep, smac, dmac, sip, dip = sys.argv[1:6]
inner = Ether(src=smac, dst=dmac) / IP(src=sip, dst=dip) / UDP(sport=4000, dport=9) / Raw(b"x" * 32)
send(IP(dst=vtep) / UDP(sport=40000, dport=4789) / VXLAN(flags=8, vni=256) / inner, count=20, verbose=False)
"""


def test_no_container_sends_vxlan_into_the_overlay_through_the_hosts_nat(info):
    """A container behind any NAT of its host (Docker's docker_gwbridge, here a plain namespace
    masqueraded as Docker does) sends VXLAN to a peer's port: it arrived from the host's VTEP
    address, passed the peer and owner checks (an inner source MAC of that host) and went into
    the VNI it named. node/vxlanguard.py's rule drops it before it leaves."""
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    uplink = Node(H1).require_up().config.underlay
    nat = ["-s", "172.31.255.0/30", "-o", uplink, "-j", "MASQUERADE"]
    netlink.ns_exec(None, ["ip", "netns", "add", "dpl-rogue"], check=True)
    try:
        for argv in (["ip", "-n", H1, "link", "add", "dpl-rg0", "type", "veth", "peer", "name", "eth0",
                      "netns", "dpl-rogue"],
                     ["ip", "-n", H1, "addr", "add", "172.31.255.1/30", "dev", "dpl-rg0"],
                     ["ip", "-n", H1, "link", "set", "dpl-rg0", "up"],
                     ["ip", "-n", "dpl-rogue", "addr", "add", "172.31.255.2/30", "dev", "eth0"],
                     ["ip", "-n", "dpl-rogue", "link", "set", "eth0", "up"],
                     ["ip", "-n", "dpl-rogue", "route", "add", "default", "via", "172.31.255.1"]):
            netlink.ns_exec(None, argv, check=True)
        netlink.sysctl(H1, "net.ipv4.conf.dpl-rg0.forwarding", "1")
        netlink.ns_exec(H1, ["iptables", "-t", "nat", "-A", "POSTROUTING"] + nat, check=True)
        before = stats(H2, 256)["rx_packets"]
        r = subprocess.run(["ip", "netns", "exec", "dpl-rogue", sys.executable, "-c", ROGUE, lab.vtep_ip(2),
                            a["mac"], b["mac"], a["ip"], b["ip"]], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        time.sleep(0.5)
        assert stats(H2, 256)["rx_packets"] == before, "a container's VXLAN reached VNI 256 on h2"
        rules = netlink.ns_exec(H1, ["iptables", "-t", "mangle", "-L", "FORWARD", "-v", "-x", "-n"],
                                capture_output=True, text=True).stdout
        dropped = [line.split()[0] for line in rules.splitlines() if "dpt:4789" in line]
        assert dropped and int(dropped[0]) >= 20, rules
    finally:
        netlink.ns_exec(H1, ["iptables", "-t", "nat", "-D", "POSTROUTING"] + nat, capture_output=True)
        netlink.ns_delete("dpl-rogue")


def test_a_gateway_for_a_subnet_that_overlaps_another_gateways_is_refused(info):
    """Two networks may share a subnet (they are isolated); two gateways on one node may not:
    both routers would hold the same connected route, and the world's replies for one network
    would go to the other. The endpoint is refused whole, with both VNIs named; an internal
    network on the same subnet (no gateway) is fine."""
    url = lab.registry_url("sqlite")
    assert 256 in Node(H1).require_up().gateways
    subnet = Node(H1).require_up().networks[256].subnet
    dp("network", "create", "twin", "--vni", "302", "--subnet", subnet, "--registry", url)
    dp("network", "create", "twin-in", "--vni", "303", "--subnet", subnet, "--internal", "--registry", url)
    try:
        r = dp("--netns", H1, "endpoint", "add", "dpl-twin", "--network", "twin", check=False)
        assert r.returncode != 0, r.stdout
        assert "overlaps" in r.stderr and "VNI 302" in r.stderr and "VNI 256" in r.stderr, r.stderr
        assert "dpl-twin" not in {e["id"] for e in dp_json("--netns", H1, "endpoint", "list")}
        assert not {f"dpgw{302:06x}", f"dpgp{302:06x}"} & set(netlink.link_names(H1))
        assert not [n for n in netlink.ns_list() if n.endswith("dpl-twin")], "no sandbox left behind"
        assert 302 not in Node(H1).require_up().gateways
        ep = dp_json("--netns", H1, "endpoint", "add", "dpl-twin-in", "--network", "twin-in")
        assert ipaddress.IPv4Address(ep["ip"]) in ipaddress.IPv4Network(subnet)
    finally:
        for e in ("dpl-twin", "dpl-twin-in"):
            dp("--netns", H1, "endpoint", "rm", e, check=False)
        for n in ("twin", "twin-in"):
            dp("network", "rm", n, "--registry", url, check=False)


def test_a_gateway_for_a_subnet_that_holds_a_route_of_the_host_is_refused(info):
    """A route the host had already, as wide as the subnet or narrower (its LAN, docker0, a
    blackhole): the router's connected route would take those addresses from it, or lose them to
    the narrower one. Refused whole, the route named; an internal network there is fine. A wider
    route (a VPN's 10.0.0.0/8) keeps its other addresses: the same endpoint gets its way out."""
    url = lab.registry_url("sqlite")
    dp("network", "create", "lanlike", "--vni", "305", "--subnet", "10.77.1.0/24", "--registry", url)
    dp("network", "create", "lanlike-in", "--vni", "306", "--subnet", "10.77.1.0/24", "--internal", "--registry", url)

    @contextlib.contextmanager
    def route(prefix):
        subprocess.run(["ip", "-n", H1, "route", "add", prefix, "via", lab.WORLD_IP], check=True)
        try:
            yield
        finally:
            subprocess.run(["ip", "-n", H1, "route", "del", prefix], check=True)
    try:
        for prefix in ("10.77.1.0/24", "10.77.1.128/25"):
            with route(prefix):
                r = dp("--netns", H1, "endpoint", "add", "dpl-lan", "--network", "lanlike", check=False)
            assert r.returncode == 4, (r.returncode, r.stdout, r.stderr)
            assert f"overlaps this host's route to {prefix}" in r.stderr and "VNI 305" in r.stderr, r.stderr
            assert "dpl-lan" not in {e["id"] for e in dp_json("--netns", H1, "endpoint", "list")}
            assert not {f"dpgw{305:06x}", f"dpgp{305:06x}"} & set(netlink.link_names(H1)), "nothing made"
            assert not [n for n in netlink.ns_list() if n.endswith("dpl-lan")], "no sandbox left behind"
        with route("10.77.1.0/24"):
            dp("--netns", H1, "endpoint", "add", "dpl-lan-in", "--network", "lanlike-in")
        with route("10.77.0.0/16"):
            dp("--netns", H1, "endpoint", "add", "dpl-lan", "--network", "lanlike")
            assert 305 in Node(H1).require_up().gateways
    finally:
        for e in ("dpl-lan", "dpl-lan-in"):
            dp("--netns", H1, "endpoint", "rm", e, check=False)
        for n in ("lanlike", "lanlike-in"):
            dp("network", "rm", n, "--registry", url, check=False)


def test_a_published_port_is_reached_by_its_own_networks_sandboxes(info):
    """Hairpin: a sandbox reaches a port that another sandbox of its network publishes on their
    host's address. The connection goes to the router and is sent back by it to the target,
    whose reply went straight back on-link, from its own address, which the client had not asked
    for (the connection hung: nothing in our fast path undoes the DNAT, as the bridge's
    br_netfilter does for a Linux bridge). It is now masqueraded to the gateway's address, so
    the reply comes back through the router. From another host it leaves by that host's own
    way out and is not a hairpin (the target sees that host's address)."""
    a, far = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    near = dp_json("--netns", H1, "endpoint", "add", "dpl-hairpin", "--vni", "256")
    try:
        assert _reach_published_port(a, near) == _host_address(H1)
        assert _reach_published_port(a, far) == lab.vtep_ip(2)
    finally:
        dp("--netns", H1, "endpoint", "rm", "dpl-hairpin", check=False)


CLUSTER_IP = "10.96.0.10"          # a Kubernetes service address, outside every subnet of the lab


def test_a_service_address_reaches_a_sandbox_of_its_network_on_another_host(info):
    """kube-proxy's ClusterIP: h2 sends its sandbox's connection to a service address (DNAT in
    h2's namespace) to a sandbox of the same network on h1. Masqueraded to the gateway's address,
    which every host's router holds, the target's reply went to h1's router, which had no such
    connection: it timed out. Each router now has an address of its host's own in the subnet,
    registered like an endpoint, and masquerading picks it, so the reply goes back to h2."""
    far = sandbox(info, "h2", 256)
    assert _through_h2(info, far["netns"], CLUSTER_IP) == _host_address(H2)


def test_a_node_port_reaches_a_sandbox_on_another_host(info):
    """kube-proxy's NodePort (externalTrafficPolicy Cluster): the world connects to h2's address,
    which h2 sends on to a sandbox on h1, masqueraded by kube-proxy's own MASQUERADE rule. That
    took the gateway's address too (the first address of the router in the subnet), and timed out
    the same way; now it takes h2's host address."""
    kube = ["POSTROUTING", "-p", "tcp", "--dport", "7077", "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE"]
    netlink.ns_exec(H2, ["iptables", "-t", "nat", "-I"] + kube, check=True)
    try:
        assert _through_h2(info, lab.UNDERLAY_NS, lab.vtep_ip(2)) == _host_address(H2)
    finally:
        netlink.ns_exec(H2, ["iptables", "-t", "nat", "-D"] + kube, capture_output=True)


def _through_h2(info, client_ns: str, to: str) -> str:
    """client_ns connects to to:7078, which h2 DNATs to a listener of h1's sandbox on VNI 256;
    the address the listener saw the connection come from."""
    return _dnat_reach(sandbox(info, "h1", 256), H2, client_ns, to)


def _host_address(ns: str) -> str:
    """The host's own address on VNI 256 (its router's, registered as dpgw.256.<host>), once
    the agent has it."""
    host = "h1" if ns == H1 else "h2"

    def registered():
        listed = dp_json("--netns", ns, "endpoint", "list", "--routers")
        return {e["id"]: e["ip"] for e in listed}.get(f"dpgw.256.{host}")
    assert wait_for(lambda: registered() and Node(ns).require_up().router_ips.get(256) == registered(),
                    TICK_S * 3, 0.2), f"{host}'s router address registered and on its router"
    return registered()


def test_a_down_that_stopped_part_way_can_be_finished(info):
    """A `down` that failed part-way has removed the pins but kept the node's state (so it can
    be run again). Run again, it failed on every try: the gateway's map entries could not be
    removed from maps that were gone, so its veth pair and iptables rules, the state and the
    boot record stayed. Here h2's pins go as that first try left them."""
    from dataplane.core import state
    from dataplane.kernel import loader
    assert 256 in Node(H2).require_up().gateways
    loader.remove_pins(Node(H2).pin_dir)
    r = dp("--netns", H2, "down", check=False)
    assert r.returncode == 0, r.stderr
    assert Node(H2).state() is None and state.load_boot(H2) is None
    assert not {f"dpgw{256:06x}", f"dpgp{256:06x}"} & set(netlink.link_names(H2))
    for table in ("nat", "filter", "mangle"):
        rules = netlink.ns_exec(H2, ["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        assert "dataplane egress" not in rules and "DATAPLANE" not in rules, rules


def test_two_networks_with_gateways_on_one_host_stay_apart(info):
    """Each network's way out leads to the world, never into another network: with gateways
    for two VNIs on one host, the kernel routed a sandbox's packet for the other subnet from
    one router to the other (FORWARD accepted anything from a router to elsewhere) and the
    second port sent it into the other VNI, masqueraded as its gateway."""
    url = lab.registry_url("sqlite")
    a = sandbox(info, "h1", 256)
    dp("network", "create", "apart", "--vni", "304", "--subnet", "10.34.0.0/24", "--registry", url)
    try:
        other = dp_json("--netns", H1, "endpoint", "add", "dpl-apart", "--network", "apart")
        assert {256, 304} <= set(Node(H1).require_up().gateways)
        assert ping(other["netns"], lab.WORLD_IP, 2, 0.2)[0] == 2, "its own way out works"
        assert ping(a["name"], other["ip"], 3, 0.2)[0] == 0, "VNI 256 reached VNI 304 through the gateways"
        assert ping(other["netns"], a["ip"], 3, 0.2)[0] == 0, "and the other way"
        _reach_published_port(a, other)
        with _docker_user(["-j", "ACCEPT"]):      # an operator's ACCEPT there cannot undo the isolation
            assert ping(a["name"], other["ip"], 3, 0.2)[0] == 0, "an ACCEPT in DOCKER-USER joined the networks"
    finally:
        dp("--netns", H1, "endpoint", "rm", "dpl-apart", check=False)
        dp("network", "rm", "apart", "--registry", url, check=False)


SEND_UDP = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0)); s.sendto(b"x", (sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 9))
"""


def _tracked(ns: str, subnet: str) -> list[tuple[str, str]]:
    """(original source, reply source) of the namespace's conntrack entries either of which is
    in subnet."""
    from pyroute2 import Conntrack
    from dataplane.kernel.netns import call_in_netns
    net = ipaddress.ip_network(subnet)

    def here():
        with Conntrack() as ct:
            return [(e.tuple_orig.saddr, e.tuple_reply.saddr) for e in ct.dump_entries()]
    return sorted(t for t in call_in_netns(ns, here) if any(ipaddress.ip_address(a) in net for a in t))


def test_a_sandboxs_connections_are_forgotten_with_it(info):
    """A connection a sandbox began through its gateway (masqueraded), or one DNATed to it,
    stayed in the host's conntrack after the sandbox went, an established one for days, and a
    new sandbox given the address received the world's replies to it. The entries go with the
    endpoint, and the router's with its gateway."""
    url, subnet = lab.registry_url("sqlite"), "10.35.0.0/24"
    dp("network", "create", "tracked", "--vni", "305", "--subnet", subnet, "--registry", url)
    dnat, ep = ["-p", "udp", "-d", lab.WORLD_IP, "--dport", "4242", "-j", "DNAT", "--to-destination"], None
    try:
        ep = dp_json("--netns", H1, "endpoint", "add", "dpl-tracked", "--network", "tracked")
        host_ip = Node(H1).require_up().router_ips[305]      # the host's own address in the subnet
        in_ns(ep["netns"], SEND_UDP, ep["ip"], lab.WORLD_IP).communicate(timeout=30)
        # One the host sends to an address DNATed to the sandbox: its reply source is the sandbox's.
        netlink.ns_exec(H1, ["iptables", "-t", "nat", "-A", "OUTPUT", *dnat, ep["ip"]], check=True)
        in_ns(H1, SEND_UDP, "0.0.0.0", lab.WORLD_IP, "4242").communicate(timeout=30)
        mine = lambda: [t for t in _tracked(H1, subnet) if ep["ip"] in t]    # noqa: E731
        assert wait_for(lambda: len(mine()) == 2, timeout=10), _tracked(H1, subnet)
        assert [t[0] for t in mine()].count(ep["ip"]) == 1, "one it began, one DNATed to it"
        dp("--netns", H1, "endpoint", "rm", "dpl-tracked")
        assert _tracked(H1, subnet) == [], "the endpoint's entries went with it, those DNATed to it too"
        in_ns(H1, SEND_UDP, host_ip, lab.WORLD_IP).communicate(timeout=30)
        assert wait_for(lambda: [t[0] for t in _tracked(H1, subnet)] == [host_ip], timeout=10), _tracked(H1, subnet)
        dp("network", "rm", "tracked", "--registry", url)
        assert wait_for(lambda: 305 not in Node(H1).require_up().gateways, timeout=15)
        assert _tracked(H1, subnet) == [], "the router's entries went with its gateway"
    finally:
        if ep:
            netlink.ns_exec(H1, ["iptables", "-t", "nat", "-D", "OUTPUT", *dnat, ep["ip"]], check=False)
        dp("--netns", H1, "endpoint", "rm", "dpl-tracked", check=False)
        dp("network", "rm", "tracked", "--registry", url, check=False)


def _reach_published_port(a, other) -> str:
    """A port of a's published on h1's address (DNAT, as CNI's portmap or Docker does) is reached
    from the other network's sandbox through that address, as it is from anywhere: the DROP
    between routers let DNAT by (before, it dropped it, a review found; a Kubernetes ClusterIP of
    a pod in another network went the same way). The peer a's server saw is returned."""
    return _dnat_reach(a, H1, other["netns"], lab.vtep_ip(1))


def _dnat_reach(a, host_ns: str, client_ns: str, to: str) -> str:
    """client_ns connects to to:7078, which host_ns DNATs to a listener of sandbox a; the
    address the listener saw the connection come from."""
    dnat = ["PREROUTING", "-d", to, "-p", "tcp", "--dport", "7078", "-j", "DNAT", "--to-destination", f"{a['ip']}:7077"]
    netlink.ns_exec(host_ns, ["iptables", "-t", "nat", "-A"] + dnat, check=True)
    srv = in_ns(a["netns"], SERVE, a["ip"])
    try:
        time.sleep(0.5)                         # the listener is up
        cli = in_ns(client_ns, TRY.replace("7077", "7078"), to)
        out, err = cli.communicate(timeout=30)
        assert out.startswith("reached"), (out, err)
        return out.split()[1]
    finally:
        netlink.ns_exec(host_ns, ["iptables", "-t", "nat", "-D"] + dnat, capture_output=True)
        srv.kill()
        srv.communicate()


TRY = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], 7077), timeout=3)
    print("reached", c.recv(100).decode())
except OSError as e:
    print("refused or dropped:", e)
"""


def test_the_underlay_reaches_a_sandbox_only_through_published_ports(info):
    """The gateway's rules let replies and published ports in by the router, and closed nothing
    else: with FORWARD's policy ACCEPT (a host without Docker: CNI, `endpoint add`), a machine
    on the underlay that routed the subnet via h1 reached every port of every sandbox of the VNI,
    unpublished (a review found it). The world connects here to a sandbox's listener with such
    a route: dropped at the router now (before: "reached 198.18.0.254"), also when DOCKER-USER
    says ACCEPT to everything (an operator's broad rule, there since Docker's start: the closing
    DROP sits above it). The sandbox's own connections out, and their replies, still pass."""
    a = sandbox(info, "h1", 256)
    subnet = Node(H1).require_up().gateways[256].subnet
    route = ["ip", "netns", "exec", lab.UNDERLAY_NS, "ip", "route"]
    subprocess.run(route + ["add", subnet, "via", lab.vtep_ip(1)], check=True)
    try:
        _unreached_from_the_world(a)
        with _docker_user(["-j", "ACCEPT"]):
            _unreached_from_the_world(a)
    finally:
        subprocess.run(route + ["del", subnet], capture_output=True)
    assert ping(a["name"], lab.WORLD_IP, 2, 0.2)[0] == 2, "its own way out works"


def _unreached_from_the_world(a) -> None:
    srv = in_ns(a["netns"], SERVE, a["ip"])
    try:
        time.sleep(0.5)                         # the listener is up
        cli = in_ns(lab.UNDERLAY_NS, TRY, a["ip"])
        out, err = cli.communicate(timeout=30)
        assert out.startswith("refused or dropped"), (out, err)
    finally:
        srv.kill()
        srv.communicate()


def test_rules_left_for_a_vni_without_a_gateway_are_removed(info):
    """A gateway's removal that failed part-way (the xtables lock held past its wait, a link that
    would not go) left its rules, tagged for its VNI, for good: they took effect again for
    whatever later had that subnet or router name. The sweep (at the agent's start and every
    `up`) removes rules tagged for a VNI that has no gateway on the node."""
    from dataplane.node.sweep import sweep
    stray = ["-s", "10.99.0.0/24", "!", "-d", "10.99.0.0/24", "-m", "comment", "--comment",
             "dataplane egress vni 999", "-j", "MASQUERADE"]
    netlink.ns_exec(H1, ["iptables", "-t", "nat", "-A", "POSTROUTING"] + stray, check=True)
    try:
        done = sweep(Node(H1))
        assert "iptables rules of VNI 999, which has no gateway here; removed" in done, done
        assert not _ours("nat", 999)
        assert _ours("nat"), "VNI 256's own rules stay"
    finally:
        netlink.ns_exec(H1, ["iptables", "-t", "nat", "-D", "POSTROUTING"] + stray, capture_output=True)


def _ours(table: str, vni: int = 256) -> list[str]:
    out = netlink.ns_exec(H1, ["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"dataplane egress vni {vni}" in line]


def test_rules_a_firewall_reload_took_away_are_put_back_in_order(info):
    """A firewall's reload or an `iptables -F` takes the gateway's rules away behind the agent's
    back (egress stops; with FORWARD's policy ACCEPT one network's router could reach another's):
    the agent's housekeeping puts them back within a tick (2 s here): the jumps a flush of
    FORWARD and POSTROUTING took, the contents of our chains, a rule of ours in the wrong place.
    Someone else's rule above our jumps stays there."""
    a = sandbox(info, "h1", 256)
    chains = (("mangle", "DATAPLANE-ISOLATION"), ("filter", "DATAPLANE-FORWARD"), ("nat", "DATAPLANE-POSTROUTING"))
    before = {c: _chain(*c) for c in chains}
    iso, fwd, nat = before.values()
    ways = [r for r in iso if "-j RETURN" in r]       # the node's ways out (gwrules.ways_out): the uplink here
    assert len(iso) == 3 + len(ways) and ways and all("-j DROP" in r for r in iso if r not in ways), before
    assert len(nat) == 2, before
    assert len(fwd) == 2 and all("-j ACCEPT" in r for r in fwd), before

    def whole() -> bool:
        return {c: _chain(*c) for c in chains} == before and _jumped()
    for flush in (["-t", "nat", "-F", "POSTROUTING"], ["-F", "FORWARD"], ["-t", "mangle", "-F", "FORWARD"],
                  ["-t", "mangle", "-F", "DATAPLANE-ISOLATION"], ["-F", "DATAPLANE-FORWARD"]):
        logged = _repaired()
        netlink.ns_exec(H1, ["iptables"] + flush, check=True)
        assert wait_for(lambda: _repaired() > logged and whole(), timeout=30), (flush, _forward())
        assert ping(a["name"], lab.WORLD_IP, 2, 0.2)[0] == 2
    foreign = ["FORWARD", "-s", "192.0.2.99/32", "-j", "ACCEPT"]     # someone's rule above ours (TEST-NET)
    netlink.ns_exec(H1, ["iptables", "-I"] + foreign[:1] + ["1"] + foreign[1:], check=True)
    try:
        logged = _repaired()
        out = shlex.split(fwd[-1])
        netlink.ns_exec(H1, ["iptables", "-D"] + out[1:], check=True)
        netlink.ns_exec(H1, ["iptables", "-I", out[1], "1"] + out[2:], check=True)   # out of order
        assert wait_for(lambda: _repaired() > logged and whole(), timeout=30), _chain("filter", "DATAPLANE-FORWARD")
        assert _forward()[0] == foreign[1:], "a rule above our jumps is someone else's to place"
    finally:
        netlink.ns_exec(H1, ["iptables", "-D"] + foreign, check=True)


def _chain(table: str, chain: str) -> list[str]:
    out = netlink.ns_exec(H1, ["iptables", "-t", table, "-S", chain], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.startswith("-A ")]


def test_an_operators_docker_user_rules_apply_to_a_sandboxs_way_out(info):
    """Docker's DOCKER-USER chain is where an operator's rules go to apply before any of
    Docker's, to every container: the gateway's ACCEPTs went in above its jump, so a DROP there
    left our sandboxes' traffic alone (a review found it). Their jump now goes just below it."""
    a = sandbox(info, "h1", 256)
    with _docker_user(["-d", lab.WORLD_IP, "-j", "DROP"], flush=True):
        targets = [r[-1] for r in _forward()]
        assert targets == ["DOCKER-USER", "DATAPLANE-FORWARD"], targets
        assert ping(a["name"], lab.WORLD_IP, 2, 0.2)[0] == 0, "the operator's DROP applies"
    assert ping(a["name"], lab.WORLD_IP, 2, 0.2)[0] == 2


@contextlib.contextmanager
def _docker_user(rule: list[str], flush: bool = False):
    """A DOCKER-USER chain holding rule, jumped to first as Docker's start does (after a flush of
    FORWARD, if flush: then once the agent has put our jump back); removed after."""
    ipt = ["iptables", "-w", "5"]
    logged = _repaired()
    netlink.ns_exec(H1, ipt + ["-N", "DOCKER-USER"], check=True)
    try:
        netlink.ns_exec(H1, ipt + ["-A", "DOCKER-USER"] + rule, check=True)
        if flush:
            netlink.ns_exec(H1, ipt + ["-F", "FORWARD"], check=True)
        netlink.ns_exec(H1, ipt + ["-I", "FORWARD", "1", "-j", "DOCKER-USER"], check=True)
        assert not flush or wait_for(lambda: _repaired() > logged and _jumped(), timeout=30), _forward()
        yield
    finally:
        netlink.ns_exec(H1, ipt + ["-D", "FORWARD", "-j", "DOCKER-USER"], capture_output=True)
        netlink.ns_exec(H1, ipt + ["-F", "DOCKER-USER"], capture_output=True)
        netlink.ns_exec(H1, ipt + ["-X", "DOCKER-USER"], capture_output=True)


def _repaired() -> int:
    from dataplane.agent import process
    with open(process.log_path(H1)) as f:
        return f.read().count("repaired: iptables rules of the gateway")


def _forward() -> list[list[str]]:
    out = netlink.ns_exec(H1, ["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    return [shlex.split(line)[2:] for line in out.splitlines() if line.startswith("-A ")]


def _jumped() -> bool:
    return ("-j DATAPLANE-POSTROUTING" in "\n".join(_chain("nat", "POSTROUTING"))
            and "-j DATAPLANE-ISOLATION" in "\n".join(_chain("mangle", "FORWARD"))
            and any(r[-1] == "DATAPLANE-FORWARD" for r in _forward()))


def test_a_sandbox_reaches_no_other_bridge_of_its_host(info):
    """filter's ACCEPT out of a router, jumped to above Docker's rules, let a sandbox into any
    other interface of its host: docker0's containers on ports never published, libvirt's or
    podman's bridges, past ufw's forward policy. Its new connections leave by the node's ways out
    only (its default route's interface, the uplink): here a bridge with a listener behind it."""
    a = sandbox(info, "h1", 256)
    other, br = "dpl-br9", "dplbr9"

    def ip(*args, ns=H1):
        subprocess.run(["ip", "netns", "exec", ns, "ip", *args], check=True, capture_output=True)
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        ip("link", "add", br, "type", "bridge")
        ip("link", "add", "dplbr9a", "type", "veth", "peer", "name", "eth0", "netns", other)
        ip("link", "set", "dplbr9a", "master", br, "up")
        ip("addr", "add", "172.30.9.1/24", "dev", br)
        ip("link", "set", br, "up")
        netlink.sysctl(H1, f"net.ipv4.conf.{br}.forwarding", "1")      # as Docker's ip_forward=1 gives docker0
        ip("addr", "add", "172.30.9.2/24", "dev", "eth0", ns=other)
        ip("link", "set", "eth0", "up", ns=other)
        ip("link", "set", "lo", "up", ns=other)
        ip("route", "add", "default", "via", "172.30.9.1", ns=other)
        srv = in_ns(other, SERVE, "172.30.9.2")
        time.sleep(0.5)
        cli = in_ns(a["netns"], ASK.replace("timeout=10", "timeout=3"), "172.30.9.2")
        out, err = cli.communicate(timeout=30)
        srv.kill()                       # never reached: not waited out
        srv.wait(timeout=30)
        assert cli.returncode != 0 and not out.strip(), f"the sandbox reached the other bridge: {out!r}"
        assert ("timed out" in err) or ("refused" in err), err
    finally:
        subprocess.run(["ip", "netns", "exec", H1, "ip", "link", "del", br], capture_output=True)
        subprocess.run(["ip", "netns", "exec", H1, "ip", "link", "del", "dplbr9a"], capture_output=True)
        subprocess.run(["ip", "netns", "del", other], capture_output=True)


ECHO = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7077)); s.listen(1); s.settimeout(20)
c, _ = s.accept(); c.settimeout(20); c.sendall(c.recv(100))
"""
LATER = """
import os, socket, sys, time
c = socket.create_connection((sys.argv[1], 7077), timeout=5); print("connected", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
c.settimeout(3); c.sendall(b"again")
try:
    print("answered", c.recv(100).decode())
except OSError as e:
    print("dropped:", e)
"""


def test_a_connection_let_in_while_the_rules_were_gone_ends_when_they_are_back(info, tmp_path):
    """A firewall's flush takes our rules away until the agent's next tick. A machine on the
    underlay that routes the subnet via the host connected to a sandbox's unpublished port in
    that gap, and the connection lived on as ESTABLISHED once the rules were back (for days:
    conntrack's TCP timeout). Into a router it is now by direction: it ends with the repair."""
    import os
    import signal
    from dataplane.agent import process
    from dataplane.node import gwrules
    a = sandbox(info, "h1", 256)
    gateways = Node(H1).require_up().gateways.values()
    subnet = Node(H1).require_up().gateways[256].subnet
    route = ["ip", "netns", "exec", lab.UNDERLAY_NS, "ip", "route"]
    go = tmp_path / "go"
    pid = process.running_pid(H1)
    subprocess.run(route + ["add", subnet, "via", lab.vtep_ip(1)], check=True)
    os.kill(pid, signal.SIGSTOP)                        # no repair by the agent during the gap
    srv = cli = None
    try:
        netlink.ns_exec(H1, ["iptables", "-t", "mangle", "-F", gwrules.ISOLATION], check=True)
        srv = in_ns(a["netns"], ECHO, a["ip"])
        time.sleep(0.5)
        cli = in_ns(lab.UNDERLAY_NS, LATER, a["ip"], str(go))
        assert cli.stdout.readline().strip() == "connected", "the gap let it in"
        assert gwrules.sync(H1, gateways), "the rules put back, as the agent's tick does"
        go.touch()
        out, err = cli.communicate(timeout=30)
        assert out.startswith("dropped"), (out, err)
    finally:
        os.kill(pid, signal.SIGCONT)
        subprocess.run(route + ["del", subnet], capture_output=True)
        for p in (cli, srv):
            if p is not None:
                p.kill()
                p.communicate()
    assert ping(a["name"], lab.WORLD_IP, 2, 0.2)[0] == 2, "its own way out works"


def test_egress_works_on_a_host_whose_default_route_is_not_the_underlays(info):
    """A host with two interfaces (a management NIC with the default route, the underlay's for
    VXLAN) and no Docker to turn forwarding on for all: the world's replies to a sandbox arrive
    on the management NIC, and were dropped there (Linux forwards only what arrives on an
    interface that forwards). The agent's tick turns forwarding on for the new way out, and the
    gateways' rules keep it to the routers: on, it forwarded whatever arrived there, so a
    machine on the management network reached the underlay's through the host."""
    a = sandbox(info, "h1", 256)
    world, h2 = "203.0.113.9", lab.vtep_ip(2)
    fwd = netlink.conf_key("dpl-mg0", "forwarding")

    def ip(*args, ns=H1):
        subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)
    ip("link", "add", "dpl-mg0", "type", "veth", "peer", "name", "dpl-mg1", "netns", lab.UNDERLAY_NS)
    try:
        netlink.sysctl(H1, fwd, "0")           # (a namespace made on a host that forwards starts at 1)
        ip("addr", "add", "172.31.254.1/30", "dev", "dpl-mg0")
        ip("link", "set", "dpl-mg0", "up")
        ip("addr", "add", "172.31.254.2/30", "dev", "dpl-mg1", ns=lab.UNDERLAY_NS)
        ip("addr", "add", f"{world}/32", "dev", "dpl-mg1", ns=lab.UNDERLAY_NS)
        ip("link", "set", "dpl-mg1", "up", ns=lab.UNDERLAY_NS)
        ip("route", "add", "default", "via", "172.31.254.2")
        assert wait_for(lambda: ping(a["name"], world, 1, 0.2)[0] == 1, timeout=20, every=0.5), \
            "the sandbox reaches the world by the default route's interface"
        assert netlink.sysctl_get(H1, fwd) == "1"
        if netlink.sysctl_get(H1, "net.ipv4.conf.all.forwarding") == "1":
            return                                  # the host forwards on all by its own choice: not ours
        assert Node(H1).require_up().ways_forwarding == {"dpl-mg0": "0"}, "kept, to be put back"
        # A machine on the management network routing to h2's underlay address through h1 (h2's
        # replies come back by the switch): not forwarded.
        ip("route", "add", f"{h2}/32", "via", "172.31.254.1", ns=lab.UNDERLAY_NS)
        ip("route", "add", "172.31.254.0/30", "via", lab.WORLD_IP, ns=lab.host_ns(2))
        got = netlink.ns_exec(lab.UNDERLAY_NS, ["ping", "-c", "2", "-i", "0.2", "-W", "1", h2],
                              capture_output=True, text=True).stdout
        assert " 0 received" in got, f"h1 routed the management network into the underlay's: {got}"
    finally:
        subprocess.run(["ip", "-n", lab.host_ns(2), "route", "del", "172.31.254.0/30"], capture_output=True)
        subprocess.run(["ip", "-n", H1, "route", "del", "default"], capture_output=True)
        subprocess.run(["ip", "-n", H1, "link", "del", "dpl-mg0"], capture_output=True)
