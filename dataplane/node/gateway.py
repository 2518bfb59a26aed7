"""A VNI's way out of the overlay (egress) for endpoints this node makes
itself and CNI containers with "ipMasq": a veth pair in the node's namespace.

The router side (dpgw<vni hex>) holds the network's gateway address and a MAC
derived from it, the same on every host, so a sandbox's default route and
ARP entry are right wherever it runs. The port side (dpgp<vni hex>) is
served by from_endpoint like any endpoint's host side, with two
differences: its dp_endpoint has DP_EP_ROUTER (the world's replies carry any
source address), and its dp_local_macs value has DP_LOCAL_ROUTER (its peer is
in this namespace, where bpf_redirect_peer refuses to go: frames leave by the
port instead). Sandboxes' ARP for the gateway is answered from dp_neigh. The
kernel routes, iptables masquerades the subnet's traffic to anywhere else
(SNAT to the host's address), and conntrack brings replies back through the
router side, whose ARP for the sandbox is answered by the fast path too.
East-west traffic never comes here (the subnet is on-link in every sandbox)
but for a published port of the same network reached by the host's address
(hairpin), which the router sends back into the subnet masqueraded (node/gwrules.py).

The router also holds its host's own address in the subnet (set_address), which the agent
registers like an endpoint (agent/routers.py), so other hosts reach it by its MAC. It is what
masquerading into the subnet picks (the gateway's address is a /32 beside it), so the target
of a DNAT back into the subnet (kube-proxy's ClusterIP, a published port) replies to the host
whose conntrack holds the connection, wherever that target lives: with the gateway's address,
every host's, the reply of a target on another host went to that host's router, which had no
such connection. The fast path gives frames to that MAC the router's own (DP_LOCAL_ALIAS), and
the router's frames to other hosts that MAC as their source (bpf/lib/router.h).

It is not a LocalEndpoint (no sandbox; only its host address has a registry record): it
lives in NodeState.gateways (its host address in NodeState.router_ips), made on the first
endpoint that wants egress and removed with its VNI. Docker containers do not use it:
libnetwork gives them docker_gwbridge.
"""

from __future__ import annotations

import ipaddress

from dataplane.core import abi, model, state
from dataplane.core.errors import Conflict, DataplaneError, KernelError, NotFound
from dataplane.core.state import Gateway, NodeState
from dataplane.kernel import netlink
from dataplane.kernel.maps import NodeMaps
from dataplane.node import endpoints, fdb, forwarding, gwrules
from dataplane.node.base import Node

ROUTER_FLAG = int(abi.load().enums["dp_ep_flag"].DP_EP_ROUTER)
LOCAL_ROUTER = abi.load().constants["DP_LOCAL_ROUTER"]
LOCAL_ALIAS = abi.load().constants["DP_LOCAL_ALIAS"]


def names(vni: int) -> tuple[str, str]:
    return f"dpgw{vni:06x}", f"dpgp{vni:06x}"


def ensure(node: Node, vni: int, gateway: str) -> Gateway:
    """The VNI's gateway on this node, made if missing (idempotent)."""
    gw = node.require_up(shared=True).gateways.get(vni)
    if gw is not None and gw.ip == gateway and netlink.link_index(node.netns, gw.port) is not None:
        return gw                # made: no lock, and no save of an unchanged state
    with node.changing() as (st, m):
        net = st.networks.get(vni)
        if net is None:
            raise NotFound(f"VNI {vni} is not up on this node")
        gw = st.gateways.get(vni)
        if gw is not None and gw.ip == gateway and netlink.link_index(node.netns, gw.port) is not None:
            return gw
        subnet = ipaddress.IPv4Network(net.subnet)
        _refuse_overlap(st, vni, subnet)
        _refuse_host_routes(node.netns, vni, subnet)
        gwrules.require_iptables()         # before anything is made
        if gw is not None:                 # half gone, or another address: made again
            del st.gateways[vni]
            _destroy(node, m, st, gw, st.router_ips.pop(vni, None))
        router, port = names(vni)
        gw = Gateway(vni=vni, ip=str(model.parse_ipv4(gateway, "gateway")), subnet=str(subnet),
                     mac=model.mac_for_ip(ipaddress.IPv4Address(gateway)), router=router, port=port)
        st.gateways[vni] = gw
        state.save(st)                     # the intent first: a crash leaves something down can find
        try:
            _create(node, m, st, gw, subnet.prefixlen, net.mtu)
        except BaseException:
            del st.gateways[vni]
            if not st.gateways:
                forwarding.restore(node, st)          # before the rules that confine it go
            _destroy(node, m, st, gw)
            state.save(st)
            raise
        return gw


def _refuse_overlap(st: NodeState, vni: int, subnet: ipaddress.IPv4Network) -> None:
    """Networks are isolated, so their subnets may overlap; their gateways on one node may not.
    Both routers would hold connected routes for the same addresses in this namespace, and the
    world's replies (conntrack, masquerade) would reach whichever network the kernel picks."""
    for other in st.gateways.values():
        if other.vni != vni and subnet.overlaps(ipaddress.IPv4Network(other.subnet)):
            raise Conflict(f"VNI {vni}'s subnet {subnet} overlaps {other.subnet} of VNI {other.vni}, which has "
                           f"a way out on this node already: two gateways for overlapping subnets cannot share "
                           f"the node's routing table; make one of the networks --internal, or give it a subnet "
                           f"of its own")


def _refuse_host_routes(ns, vni: int, subnet: ipaddress.IPv4Network) -> None:
    """Nor may a gateway's subnet hold a route the node had already, as wide or narrower (its LAN,
    docker0, a blackhole): the router's connected route would take those addresses from it, or
    lose them to the narrower one (the world's replies to sandboxes with them went there). A
    wider one (a VPN's 10.0.0.0/8, OpenVPN's 0.0.0.0/1) keeps its other addresses: allowed."""
    for prefix, dev in netlink.routes_overlapping(ns, str(subnet)):
        if ipaddress.IPv4Network(prefix).subnet_of(subnet) and not (dev or "").startswith("dpgw"):
            where = f"dev {dev}" if dev else "no interface"
            raise Conflict(f"VNI {vni}'s subnet {subnet} overlaps this host's route to {prefix} ({where}): a way "
                           f"out for it would take those addresses from that route, or lose its own to it; give "
                           f"the network a subnet of its own, or make it --internal")


def _create(node: Node, m: NodeMaps, st: NodeState, gw: Gateway, prefixlen: int, mtu: int) -> list[str]:
    """Its interfaces, entries and programs, after its rules (they name interfaces: the router
    is never up without them); what the rules' write mended, in words."""
    ns = node.netns
    forwarding.note(node, st)            # the ways out to confine, before they forward (apply, last)
    said = gwrules.sync(ns, st.gateways.values(), forwarding.confined(st))
    gw.ifindex = netlink.veth_create(ns, gw.port, ns, gw.router, gw.mac, mtu)
    for ifname in (gw.port, gw.router):
        netlink.sysctl(ns, f"net.ipv6.conf.{ifname}.disable_ipv6", "1")
    _router_sysctls(ns, gw)
    netlink.link_up(ns, gw.router, gw.ip, prefixlen)
    _address(ns, gw, st.router_ip(gw.vni))
    write_entries(m, st, gw)
    endpoints.attach_port(node, st, gw.ifindex)
    return said + forwarding.apply(node, st)


def _router_sysctls(ns, gw: Gateway) -> None:
    """It forwards; its ARP requests name its own address, the gateway's (arp_announce 2). With
    the kernel's default they name the source of the packet that waits for the answer when that
    is one of the host's addresses: a hairpin's reply, whose DNAT undone makes the source the
    host's published address, and the fast path drops an ARP from the router's port that does
    not give the gateway's address (spoof_ip), so the reply never left."""
    netlink.sysctl(ns, f"net.ipv4.conf.{gw.router}.forwarding", "1")
    netlink.sysctl(ns, f"net.ipv4.conf.{gw.router}.arp_announce", "2")
    # The host's address takes over the subnet's route when the gateway's /prefix goes (_address).
    netlink.sysctl(ns, f"net.ipv4.conf.{gw.router}.promote_secondaries", "1")


def _address(ns, gw: Gateway, host_ip: str | None) -> None:
    """The router's addresses: with the host's own (set_address), that one with the subnet's
    prefix, the one masquerading and the router's ARP pick (the first primary of the subnet),
    and the gateway's as a /32; without, the gateway's with the prefix (the router as an older
    version made it, and before the registry gave the host an address)."""
    plen = ipaddress.IPv4Network(gw.subnet).prefixlen
    netlink.addrs_set(ns, gw.router, [(host_ip, plen), (gw.ip, 32)] if host_ip else [(gw.ip, plen)])


def write_entries(m: NodeMaps, st: NodeState, gw: Gateway) -> None:
    """Its port as an endpoint of the VNI that routes (DP_EP_ROUTER), its MAC and address
    local (fdb.py's maps, written there): DP_LOCAL_ROUTER makes frames leave by the port. The
    port's address is the one the router's ARP names: the host's where it has one."""
    net = st.networks[gw.vni]
    host_ip = st.router_ip(gw.vni)
    endpoints.write_port(m, gw.ifindex, gw.vni, host_ip or gw.ip, gw.mac, net.slot, net.mtu, ROUTER_FLAG)
    fdb.local_put(m, gw.vni, gw.mac, gw.ip, gw.ifindex | LOCAL_ROUTER)
    if host_ip:
        fdb.local_put(m, gw.vni, model.mac_for_ip(host_ip), host_ip, gw.ifindex | LOCAL_ROUTER | LOCAL_ALIAS)


def set_address(node: Node, vni: int, ip: str | None) -> bool:
    """The host's own address on the VNI's router (the agent's registry record of it), or none;
    False if the VNI has no gateway here. On the router only over programs that handle its MAC
    (NodeState.router_alias); over older ones the router is put back as they expect."""
    with node.changing() as (st, m):
        gw = st.gateways.get(vni)
        if gw is None:
            st.router_ips.pop(vni, None)
            return False
        old = st.router_ips.pop(vni, None)
        if ip:
            st.router_ips[vni] = ip
        if old and old != st.router_ip(vni):
            fdb.local_drop(m, vni, model.mac_for_ip(old), old)
        if gw.ifindex:
            _address(node.netns, gw, st.router_ip(vni))
            write_entries(m, st, gw)
        return True


def _destroy(node: Node, m: NodeMaps, st: NodeState, gw: Gateway, host_ip: str | None = None) -> list[str]:
    """Remove whatever part of it exists (its map entries too, unless the maps went with a
    teardown that stopped part-way: the interfaces and rules are removed all the same). The
    rules are written for the gateways st keeps (gw among them if it is to be made again), with
    the ways out its forwarding confines; what that write mended, in words. host_ip: its host
    address's entries go too."""
    try:
        if gw.ifindex:
            endpoints.forget_port(m, gw.ifindex)
        fdb.local_drop(m, gw.vni, gw.mac, gw.ip)
        if host_ip:
            fdb.local_drop(m, gw.vni, model.mac_for_ip(host_ip), host_ip)
    except NotFound:
        pass
    if not node.netns or netlink.ns_exists(node.netns):
        try:
            netlink.link_delete(node.netns, gw.port)      # its peer goes with it
        except BaseException:
            try:                                          # whatever the link did: no rule left for its subnet
                gwrules.sync(node.netns, st.gateways.values(), forwarding.confined(st))
            except DataplaneError:
                pass                                      # the link's error is the one reported
            raise
        return gwrules.sync(node.netns, st.gateways.values(), forwarding.confined(st))
    return []


def repair(node: Node, m: NodeMaps, st: NodeState) -> list[str]:
    """At start-up (sweep.py): each gateway's interfaces, entries and rules made again
    where a crash or a hand left them missing (all of it idempotent)."""
    done = []
    links = set(netlink.link_names(node.netns))
    for vni, gw in list(st.gateways.items()):
        net = st.networks.get(vni)
        if net is None:
            done += remove(node, m, st, vni)
            done.append(f"gateway of VNI {vni}: the VNI is not served; removed")
        elif gw.port not in links or gw.router not in links:
            done += _destroy(node, m, st, gw, st.router_ips.get(vni))
            done += _create(node, m, st, gw, ipaddress.IPv4Network(gw.subnet).prefixlen, net.mtu)
            done.append(f"gateway of VNI {vni}: its interfaces were missing; made again")
        elif netlink.link_index(node.netns, gw.port) != gw.ifindex:
            # Cut short after its veth was made: the intent (saved before, ifindex 0) outlived a
            # crash, and what came after the veth (the router's address, the port's entries
            # and programs, the rules) may be missing. Taken for whole, it was served at
            # ifindex 0 for good: the port's real entry swept as a stray, no programs on it.
            done += _destroy(node, m, st, gw, st.router_ips.get(vni))
            done += _create(node, m, st, gw, ipaddress.IPv4Network(gw.subnet).prefixlen, net.mtu)
            done.append(f"gateway of VNI {vni}: its creation was cut short; made again")
        else:
            _router_sysctls(node.netns, gw)     # (one an older version made lacks arp_announce)
            _address(node.netns, gw, st.router_ip(vni))
            write_entries(m, st, gw)
    # Every gateway's rules as they should be: what a flush took, an older version's layout (moved
    # into our chains), rules of a VNI with no gateway here (a removal that failed part-way left
    # them, to take effect again for whatever later had that subnet or router name).
    # (And the ways out's forwarding, a default route having moved while the agent was down.)
    if st.gateways:
        forwarding.note(node, st)
    else:
        forwarding.restore(node, st)
    try:
        done += gwrules.sync(node.netns, st.gateways.values(), forwarding.confined(st))
    except KernelError:
        if st.gateways:
            raise                   # (none: an iptables that cannot list, or its lock held; the next sweep)
    return done + forwarding.apply(node, st)


def remove(node: Node, m: NodeMaps, st: NodeState, vni: int, sandboxes=()) -> list[str]:
    """With its VNI (the caller holds the node's lock and saves st), or where its VNI is no longer
    served (repair). sandboxes: the addresses of the VNI's endpoints removed with it, whose
    connections (through the gateway) go with it. What the rules' write mended, in words."""
    gw = st.gateways.pop(vni, None)
    if not st.gateways:
        forwarding.restore(node, st)          # first: before the rules that confine it go
    if gw is None:
        return []
    host_ip = st.router_ips.pop(vni, None)
    done = _destroy(node, m, st, gw, host_ip)
    endpoints.forget_connections(node, {gw.ip, *([host_ip] if host_ip else []), *sandboxes})
    return done
