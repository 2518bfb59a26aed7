"""Endpoints on this node: a veth whose inner end is the sandbox's interface,
the fast path attached to its host end, and its map entries. The only writer
of dp_endpoints (the MAC and neighbour entries are fdb.py's)."""

from __future__ import annotations

import ctypes
import hashlib
import ipaddress
import os
import socket

from dataplane.core import abi, model, state
from dataplane.core.errors import Conflict, DataplaneError, KernelError, NotFound, UsageError
from dataplane.core.keys import be32
from dataplane.core.notice import notice
from dataplane.core.state import LocalEndpoint, NodeState
from dataplane.kernel import conntrack, ethtool, gso, linkbatch, loader, netlink, tcx, vethpeer
from dataplane.kernel.maps import NodeMaps
from dataplane.node import fdb, networks
from dataplane.node.base import Node, require_root

_S = abi.load().structs
GSO_SEGS_MAX = abi.load().constants["DP_GSO_SEGS_MAX"]
ENDS_MADE = 2        # what _create sets at a sandbox end: tunnelled GSO cut (1), gso_max_segs (2)


def host_ifname(endpoint: str) -> str:
    return "dp" + hashlib.sha1(endpoint.encode()).hexdigest()[:10]


def own_netns(node: Node, name: str) -> str:
    """The namespace of a sandbox we make: the endpoint's name on a host, and
    qualified by the node on a node that is itself a namespace (the lab's hosts
    share one kernel, so an endpoint moving between two of them has a sandbox
    on both for a moment)."""
    return name if node.netns is None else f"{node.netns}.{name}"


def sandbox_netns(ep: LocalEndpoint) -> str:
    return ep.netns or ep.name          # states written before netns was recorded


def sandbox_end(node: Node, ep: LocalEndpoint) -> tuple[str | None, str]:
    """(namespace, interface) of the endpoint's sandbox end: the runtime's (CNI), the node's
    until the engine moves it (Docker), or the sandbox namespace we make."""
    sb = ep.sandbox or {}
    if "netns" in sb:
        return sb["netns"], sb["ifname"]
    if "peer" in sb:
        return node.netns, sb["peer"]
    return sandbox_netns(ep), "eth0"


def mend_sandbox_ends(node: Node, st: NodeState) -> list[str]:
    """Once per node and version (st.ends_swept < ENDS_MADE): the sandbox ends of endpoints an
    older version made get what _create sets now: tunnel segmentation off, and no more GSO
    segments than the fast path takes (a veth's 65,535 let BIG TCP under a tiny MSS make packets
    dropped as gso_segs). A Docker peer the engine moved is found through its host end
    (moved_peer). An end out of reach keeps its settings until the endpoint is made again: a
    namespace gone, one no process lives in, or an interface there that is not ours (its MAC
    another). What was done, for sweep."""
    told, out, spaces = 0, [], None
    for ep in st.endpoints.values():
        if ep.phase != "ready":
            continue
        (netns, ifname), index, ino = sandbox_end(node, ep), None, None
        try:
            if "peer" in (ep.sandbox or {}) and netlink.link_index(netns, ifname) is None:
                spaces = vethpeer.process_namespaces(node.netns) if spaces is None else spaces
                netns, index, ino = moved_peer(node, ep, spaces)
            told += netlink.call_in_netns(netns, _mend_here, ifname, index, ep.mac, ino, st.ends_swept < 1)
        except (NotFound, KernelError, OSError) as e:
            out.append(f"endpoint {ep.name}: its sandbox end keeps an older version's settings ({e}); "
                       "made again, it will not")
    st.ends_swept = ENDS_MADE
    return ([f"{told} endpoint(s) an older version made: their sandbox ends cut tunnelled GSO and "
             f"make GSO packets of at most {GSO_SEGS_MAX} segments now"] if told else []) + out


def _mend_here(ifname: str, index: int | None, mac: str, ino: int | None, cut: bool) -> bool:
    """In the calling thread's namespace (one thread throughout, so a /proc/PID path cannot
    lead elsewhere halfway): tunnel segmentation off at ifname (or the interface numbered
    index) if cut (not yet done once), and its gso_max_segs down to GSO_SEGS_MAX, where
    either is not so and the interface has the endpoint's MAC (True then). ino: the
    namespace's inode when a process's path led here, checked first."""
    if ino is not None and os.stat("/proc/thread-self/ns/net").st_ino != ino:
        raise NotFound("the process that led to its namespace is gone")
    try:
        name = socket.if_indextoname(index) if index else ifname
    except OSError:
        raise NotFound(f"no interface {index} in its namespace") from None
    segments = cut and any(ethtool.features(None, name, ethtool.TUNNEL_GSO).values())
    too_many = gso.max_segs(None, name) > GSO_SEGS_MAX
    if not (segments or too_many):
        return False
    if netlink.link_info(None, name)["mac"] != mac:
        raise NotFound(f"{name} there is not its interface")
    if segments:
        ethtool.set_off(None, name, ethtool.TUNNEL_GSO)
    if too_many:
        gso.set_max_segs(None, name, GSO_SEGS_MAX)
    return True


def moved_peer(node: Node, ep: LocalEndpoint, spaces: dict) -> tuple[str, int, int]:
    """(/proc/PID/ns/net, the peer's ifindex there, the namespace's inode) of a Docker
    endpoint's peer after the engine moved it into the container and renamed it: the
    namespace by the id the host end's link names (spaces: vethpeer.process_namespaces),
    the interface by its index. The state records neither (Join hands Docker the peer's
    name; the sandbox key is Docker's)."""
    nsid, index = vethpeer.veth_peer(node.netns, ep.host_ifname)
    if nsid is None or nsid not in spaces or not index:
        raise NotFound("no process in the namespace its peer was moved to")
    path, ino = spaces[nsid]
    return path, index, ino


def add(node: Node, name: str, vni, ip=None, mac=None, sandbox: dict | None = None,
        prefixlen: int | None = None, routes=()) -> LocalEndpoint:
    """An endpoint on VNI vni. With no sandbox, a new namespace `name` with
    eth0 in it (the CLI and the lab); otherwise see LocalEndpoint.sandbox.
    Nothing is left behind if any step fails."""
    require_root()
    name = model.parse_name(name, "endpoint name")
    vni = model.parse_vni(vni)
    mac = model.parse_mac(mac) if mac is not None else None
    sandbox = model.parse_sandbox(sandbox)
    with node.changing() as (st, m):
        net = st.networks.get(vni)
        if not net:
            raise NotFound(f"VNI {vni} is not up on this node: run `dataplane up --vni {vni}`")
        old = st.endpoints.get(name)
        if old is not None and old.phase != "ready":     # left by a crash: clear it, then go on
            destroy(node, m, old)
            del st.endpoints[name]
        if name in st.endpoints:
            raise Conflict(f"endpoint {name!r} exists already")
        netns = None if sandbox is not None else own_netns(node, name)
        if netns and netlink.ns_exists(netns):
            raise Conflict(f"network namespace {netns!r} exists already")
        subnet = ipaddress.IPv4Network(net.subnet)
        ip = pick_ip(subnet, {e.ip for e in st.local_endpoints(vni)}, ip)
        mac = mac or model.mac_for_ip(ipaddress.IPv4Address(ip))
        if any(e.mac == mac for e in st.local_endpoints(vni)):
            raise Conflict(f"MAC {mac} is in use on VNI {vni}")
        ep = LocalEndpoint(name=name, vni=vni, ip=ip, mac=mac, host_ifname=host_ifname(name), sandbox=sandbox,
                           netns=netns, phase="creating")
        st.endpoints[name] = ep
        state.save(st)                      # the intent is on disk before anything is made
        try:
            _create(node, m, st, ep, prefixlen or subnet.prefixlen, net.mtu, routes)
        except BaseException:
            destroy(node, m, ep)
            del st.endpoints[name]
            state.save(st)                  # the block fails, so changing() saves nothing: the intent goes now
            raise
        ep.phase = "ready"
        networks.sync(m, st, vni)
        return ep


def pick_ip(subnet: ipaddress.IPv4Network, used: set, ip) -> str:
    gateway = str(next(subnet.hosts()))  # .1 stays free for a gateway, as Docker keeps it
    if ip is not None:
        addr = model.parse_ipv4(ip, "endpoint address")
        if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
            raise UsageError(f"address {addr} is not a host address of {subnet}")
        if str(addr) in used:
            raise Conflict(f"address {addr} is in use on this network")
        return str(addr)
    for host in subnet.hosts():
        if str(host) != gateway and str(host) not in used:
            return str(host)
    raise Conflict(f"subnet {subnet} has no free address")


def _create(node: Node, m: NodeMaps, st: NodeState, ep: LocalEndpoint, prefixlen: int, mtu: int, routes) -> None:
    sb, inner = ep.sandbox or {}, sandbox_end(node, ep)
    ns, ifname = inner

    def cut() -> None:         # in ns. Tunnelled GSO packets are cut at the sandbox's end: ours cannot
        ethtool.set_off(None, ifname, ethtool.TUNNEL_GSO)    # go around their tunnel
    if "netns" in sb:          # CNI: straight into the runtime's namespace
        if not netlink.ns_path_exists(ns):
            raise NotFound(f"network namespace {ns} does not exist")
        ep.ifindex = netlink.veth_create(node.netns, ep.host_ifname, *inner, ep.mac, mtu)
        netlink.sandbox_up(ns, ifname, ep.ip, prefixlen, routes, then=cut)
    elif "peer" in sb:         # Docker: the engine moves and addresses the peer
        ep.ifindex = netlink.veth_create(node.netns, ep.host_ifname, *inner, ep.mac, mtu)
        ethtool.set_off(*inner, ethtool.TUNNEL_GSO)
    else:                      # ours; eth0 is born in it with IPv6 off
        netlink.ns_create(ns, {"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1})
        ep.ifindex = netlink.veth_create(node.netns, ep.host_ifname, *inner, ep.mac, mtu)
        netlink.sandbox_up(ns, ifname, ep.ip, prefixlen, routes, lo=True, then=cut)
    netlink.sysctl(node.netns, f"net.ipv6.conf.{ep.host_ifname}.disable_ipv6", "1")
    # GSO packets as large as the uplink sends (BIG TCP where it has it): the fast
    # path carries them whole, and a larger limit would only make the uplink segment.
    gso.set_veth(st.uplink.gso_max, (node.netns, ep.host_ifname), inner)
    # No more segments than the fast path takes (encap.h gso_fits): under a tiny MSS the
    # sandbox's TCP makes smaller packets, not ones dropped as gso_segs.
    gso.set_max_segs(*inner, GSO_SEGS_MAX)
    write_entries(m, st, ep)
    attach_port(node, st, ep.ifindex)


def attach_port(node: Node, st: NodeState, ifindex: int) -> None:
    """from_endpoint at the ingress of a port (an endpoint's host side, or a gateway's): at tcx,
    or as a cls_bpf filter while the programs pinned are an older version's (st.hook)."""
    fd = loader.open_prog(node.pin_dir, "from_endpoint")
    try:
        if st.hook == "tcx":
            tcx.attach(node.netns, ifindex, fd, "from_endpoint")
        else:
            netlink.tc_attach(node.netns, ifindex, fd, "from_endpoint")
    finally:
        os.close(fd)


def write_entries(m: NodeMaps, st: NodeState, ep: LocalEndpoint) -> None:
    """The endpoint's map entries: dp_endpoints here, MAC and neighbour in fdb.py."""
    net = st.networks[ep.vni]
    write_port(m, ep.ifindex, ep.vni, ep.ip, ep.mac, net.slot, net.mtu)
    fdb.local_add(m, ep)


def write_port(m: NodeMaps, ifindex: int, vni: int, ip: str, mac: str, slot: int, mtu: int, flags: int = 0) -> None:
    """dp_endpoints[ifindex]: what from_endpoint knows of the port (an endpoint's, or a gateway's);
    slot and mtu are its network's (a served network's MTU never changes)."""
    val = _S["dp_endpoint"](vni=vni, ip=be32(ip), slot=slot, mtu=mtu, flags=flags)
    ctypes.memmove(val.mac, model.mac_bytes(mac), 6)
    m.dp_endpoints.put(ctypes.c_uint32(ifindex), val)


def forget_port(m: NodeMaps, ifindex: int) -> None:
    m.dp_endpoints.delete(ctypes.c_uint32(ifindex))


def destroy(node: Node, m: NodeMaps, ep: LocalEndpoint, links_gone: bool = False) -> None:
    """Undo an endpoint, whatever part of it exists. Safe to call twice. links_gone: the node's
    namespace was deleted (`down` saw it gone: no process of ours holds it), its links with it."""
    try:
        if ep.ifindex:
            m.dp_endpoints.delete(ctypes.c_uint32(ep.ifindex))
        fdb.local_remove(m, ep)
    except NotFound:
        pass  # maps already gone (node torn down)
    if not links_gone:
        netlink.link_delete(node.netns, ep.host_ifname)
    if not ep.sandbox:          # the namespace is ours only without a runtime's sandbox
        netlink.ns_delete(sandbox_netns(ep))


def destroy_all(node: Node, m: NodeMaps, eps: list[LocalEndpoint], links_gone: bool, quiet: bool) -> list[str]:
    """destroy() for every endpoint at `down`, their ports deleted in batches (linkbatch: one
    at a time, 1,000 took 53 s, bench.ops); the errors, each said, none raised."""
    errors = []
    if len(eps) >= 100:
        notice(f"removing {len(eps)} endpoints...", quiet)
    if not links_gone:
        try:
            linkbatch.delete(node.netns, [ep.host_ifname for ep in eps])
            links_gone = True
        except DataplaneError:
            pass                             # each port goes by itself below, its error said there
    for ep in eps:
        try:
            destroy(node, m, ep, links_gone)
        except DataplaneError as e:
            errors.append(str(e))
    return errors


def clear_debris(node: Node, m: NodeMaps, name: str) -> list[str]:
    """What a crash left of an endpoint the state does not know: its host-side
    veth, and its sandbox namespace once that holds nothing but lo (a
    namespace with other interfaces is not debris: it is left alone)."""
    gone = []
    if netlink.link_delete(node.netns, host_ifname(name)):
        gone.append(f"link {host_ifname(name)}")
    ns = own_netns(node, name)
    if netlink.ns_exists(ns) and netlink.link_names(ns) in ([], ["lo"]):
        netlink.ns_delete(ns)
        gone.append(f"namespace {ns}")
    return gone


def forget_strays(m: NodeMaps, st: NodeState) -> list[str]:
    """dp_endpoints entries of interfaces that are no endpoint of the state."""
    keep = {e.ifindex for e in st.endpoints.values() if e.phase == "ready"} | {g.ifindex for g in st.gateways.values()}
    stray = [k.value for k, _ in m.dp_endpoints.items() if k.value not in keep]
    for ifx in stray:
        m.dp_endpoints.delete(ctypes.c_uint32(ifx))
    return [f"dp_endpoints[{ifx}]" for ifx in stray]


def remove(node: Node, name: str) -> LocalEndpoint:
    require_root()
    with node.changing() as (st, m):
        ep = st.endpoints.pop(name, None)
        if ep is None:
            raise NotFound(f"endpoint {name!r} not found")
        destroy(node, m, ep)
        networks.sync(m, st, ep.vni)
        if ep.vni in st.gateways:           # its connections out (and published ports') end with it
            forget_connections(node, [ep.ip])
        return ep


def forget_connections(node: Node, addrs) -> None:
    """The node's conntrack entries of addresses whose sandboxes (or router) are gone
    (kernel/conntrack.py says why). On a removal's way, which must not fail for it: what
    could not be forgotten is said, and times out instead."""
    if node.netns and not netlink.ns_exists(node.netns):
        return                               # (deleted: its conntrack went with it)
    try:
        _, failed = conntrack.forget(node.netns, addrs)
        why = f"{failed} connection(s) of a removed sandbox could not be deleted" if failed else ""
    except Exception as e:                   # noqa: BLE001 - any: the removal goes on
        why = str(e)
    if why:
        notice(f"warning: {why}: they time out instead")


def in_maps(node: Node, ep: LocalEndpoint) -> bool:
    """The fast path knows this endpoint (by its veth, MAC and address)."""
    with node.maps() as m:
        return present(m, ep)


def present(m: NodeMaps, ep: LocalEndpoint) -> bool:
    val = m.dp_endpoints.get(ctypes.c_uint32(ep.ifindex))
    return (val is not None and val.vni == ep.vni and bytes(val.mac) == model.mac_bytes(ep.mac)
            and fdb.local_present(m, ep))


def listing(node: Node) -> list[dict]:
    st = node.require_up()
    return [dict(e.to_dict(), node=node.name) for _, e in sorted(st.endpoints.items())]
