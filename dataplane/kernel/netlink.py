"""Links, tc, XDP, routes and neighbours over pyroute2; links made and brought up, and routes
added, are links.py's (raw rtnetlink, re-exported here). With netns.py, links.py, rtnl.py and
gso.py, the only modules that speak netlink.

Every function takes the network namespace it works in (None: the one this
process runs in). Idempotent operations treat "exists"/"missing" as outcomes;
any other kernel error becomes a KernelError naming the object and errno.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import time
from contextlib import contextmanager

from dataplane.core.errors import NotFound

INGRESS = "ffff:fff2"
EGRESS = "ffff:fff3"
XDP_FLAGS_DRV_MODE = 1 << 2
NTF_USE = 0x01                # linux/neighbour.h
NUD_VALID = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # reachable stale delay probe permanent noarp


# Namespaces live in netns.py; callers reach them through this module too.
from dataplane.kernel.netns import (  # noqa: E402,F401
    _kerr, call_in_netns, conf_key, enter_netns, ns_create, ns_delete, ns_exec, ns_exists, ns_list, ns_path_exists,
    sysctl, sysctl_get, udp_port_free)
# Links made and brought up: links.py (raw rtnetlink).
from dataplane.kernel.links import (  # noqa: E402,F401
    link_index, link_up, routes_add, sandbox_up, veth_create)


def _nlerror() -> type:
    """pyroute2's NetlinkError. pyroute2 is imported by the first netlink call,
    not with this module: its import takes ~0.12 s, a third of a CLI command's
    start, and an agent's cold start reads the registry before it needs netlink.
    (An except clause evaluates this only once its try raised, by when ipr() has
    imported pyroute2.)"""
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415
    return NetlinkError


def preload() -> None:
    """Import pyroute2 now (from a thread: an agent does it while its registry read waits on etcd).
    IPRoute's import brings the exceptions and netns modules with it."""
    from pyroute2 import IPRoute  # noqa: PLC0415,F401


def _rtnl_fd() -> int:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE).detach()


@contextmanager
def ipr(netns: str | None):
    """An rtnetlink socket inside netns (which must exist). The socket is made by
    a thread that entered netns (a socket stays in the namespace it was made in):
    pyroute2's own netns= forks a helper for each socket, 30-150 ms in an agent
    of a few hundred MB, which stalled its main loop on every tick."""
    from pyroute2 import IPRoute  # noqa: PLC0415 - see _nlerror
    sock = IPRoute(fileno=call_in_netns(netns, _rtnl_fd)) if netns else IPRoute()
    try:
        yield sock
    finally:
        sock.close()


# --- links ----------------------------------------------------------------

def link_info(netns: str | None, ifname: str) -> dict:
    with ipr(netns) as s:
        found = s.link_lookup(ifname=ifname)
        if not found:
            raise NotFound(f"interface {ifname!r} not found in {netns or 'the host namespace'}")
        link = s.get_links(found[0])[0]
        addrs = [a.get_attr("IFA_ADDRESS") for a in s.get_addr(index=found[0], family=2)]
    return {
        "index": found[0],
        "name": ifname,
        "mtu": link.get_attr("IFLA_MTU"),
        "mac": link.get_attr("IFLA_ADDRESS"),
        "up": bool(link["flags"] & 1),
        "ipv4": addrs,
    }


def link_names(netns: str | None) -> list[str]:
    """Every interface name in netns: the C library's dump (if_nameindex), from a thread in
    the namespace. pyroute2 decoded every attribute of every link, which with 1,000
    endpoints was a third of an agent's time (each endpoint_add and every tick list them)."""
    return sorted(link_indexes(netns))


def link_indexes(netns: str | None) -> dict[str, int]:
    """{name: ifindex} of every interface in netns, in one dump (if_nameindex, as link_names)."""
    return {name: i for i, name in call_in_netns(netns, socket.if_nameindex)}


def _route_ifnames(s, r) -> list[str]:
    """A route's interfaces: its own, else each nexthop's of a multipath one (none: a blackhole)."""
    oifs = [r.get_attr("RTA_OIF")] + [h.get("oif") for h in (r.get_attr("RTA_MULTIPATH") or [])]
    return [s.get_links(oif)[0].get_attr("IFLA_IFNAME") for oif in oifs if oif]


def default_route_ifnames(netns: str | None) -> list[str]:
    """The interfaces of every IPv4 default route (each nexthop of a multipath one too)."""
    out = []
    with ipr(netns) as s:
        for r in s.get_default_routes(family=2):
            for name in _route_ifnames(s, r):
                if name not in out:
                    out.append(name)
    return out


def routes_overlapping(netns: str | None, subnet: str) -> list[tuple[str, str | None]]:
    """The main table's IPv4 routes but default ones whose destination overlaps subnet:
    [(prefix, the interface of the route or its first nexthop; None for one with none, a
    blackhole)], each once."""
    want, out = ipaddress.IPv4Network(subnet), []
    with ipr(netns) as s:
        for r in s.get_routes(family=2, table=254):
            if not r["dst_len"]:
                continue
            prefix = ipaddress.IPv4Network(f"{r.get_attr('RTA_DST')}/{r['dst_len']}", strict=False)
            if not prefix.overlaps(want):
                continue
            name = next(iter(_route_ifnames(s, r)), None)
            if (str(prefix), name) not in out:
                out.append((str(prefix), name))
    return out


def default_route_ifname(netns: str | None) -> str | None:
    with ipr(netns) as s:
        for r in s.get_default_routes(family=2):
            oif = r.get_attr("RTA_OIF")
            if oif:
                return s.get_links(oif)[0].get_attr("IFLA_IFNAME")
    return None


def link_delete(netns: str | None, ifname: str) -> bool:
    with ipr(netns) as s:
        found = s.link_lookup(ifname=ifname)
        if not found:
            return False
        try:
            s.link("del", index=found[0])
        except _nlerror() as e:
            if e.code != errno.ENODEV:
                raise _kerr(f"delete interface {ifname}", e) from None
    return True


def addrs_set(netns: str | None, ifname: str, want: list[tuple[str, int]]) -> bool:
    """ifname's IPv4 addresses made exactly want ([(address, prefixlen)]): the missing added in
    that order, then the others deleted (a primary deleted takes its secondaries with it unless
    the interface's promote_secondaries is on). Whether anything changed."""
    with ipr(netns) as s:
        found = s.link_lookup(ifname=ifname)
        if not found:
            raise NotFound(f"interface {ifname!r} not found in {netns or 'the host namespace'}")
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in s.get_addr(index=found[0], family=2)}
        try:
            for ip, plen in want:
                if (ip, plen) not in have:
                    s.addr("add", index=found[0], address=ip, prefixlen=plen)
            for ip, plen in have - set(want):
                s.addr("del", index=found[0], address=ip, prefixlen=plen)
        except _nlerror() as e:
            raise _kerr(f"set the addresses of {ifname}", e) from None
    return have != set(want)


# --- tc and XDP -------------------------------------------------------------

def routes_missing(netns: str | None, routes) -> list[str]:
    """Those of routes [{"dst": CIDR, "gw": IP?}] (IPv4) that netns's main table lacks: no route
    to exactly that prefix, or none through the gateway given (CNI CHECK). The default route's
    gateway is not compared: a container on several networks has one, from the network attached
    first, and routes_add leaves a route that exists alone."""
    want = [(ipaddress.IPv4Network(r["dst"], strict=False), r.get("gw")) for r in routes]
    if not want:
        return []
    with ipr(netns) as s:
        have = {(ipaddress.IPv4Network(f"{r.get_attr('RTA_DST') or '0.0.0.0'}/{r['dst_len']}", strict=False),
                 r.get_attr("RTA_GATEWAY")) for r in s.route("dump", family=socket.AF_INET, table=254)}
    return [f"{dst}" + (f" via {gw}" if gw else "") for dst, gw in want
            if not any(d == dst and (not gw or g == gw or dst.prefixlen == 0) for d, g in have)]


def tc_attach(netns: str | None, ifindex: int, prog_fd: int, prog_name: str, parent: str = INGRESS) -> None:
    """Attach (or atomically replace) our direct-action filter at prio 1, handle 1."""
    with ipr(netns) as s:
        try:
            s.tc("add", "clsact", ifindex)
        except _nlerror() as e:
            if e.code != errno.EEXIST:
                raise _kerr(f"add clsact on ifindex {ifindex}", e) from None
        try:
            s.tc("replace-filter", "bpf", ifindex, ":1", fd=prog_fd, name=prog_name,
                 parent=parent, classid=1, direct_action=True, prio=1)
        except _nlerror() as e:
            raise _kerr(f"attach {prog_name} to ifindex {ifindex}", e) from None


def tc_detach(netns: str | None, ifindex: int, parent: str = INGRESS) -> None:
    with ipr(netns) as s:
        try:
            s.tc("del-filter", "bpf", ifindex, ":1", parent=parent, prio=1)
        except _nlerror() as e:
            if e.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                raise _kerr(f"detach filter from ifindex {ifindex}", e) from None


def tc_filter_names(netns: str | None, ifindex: int, parent: str = INGRESS) -> list[str]:
    return tc_filter_names_of(netns, [ifindex], parent)[ifindex]


def tc_filter_names_of(netns: str | None, ifindexes: list[int], parent: str = INGRESS) -> dict[int, list[str]]:
    """{ifindex: names of the cls_bpf filters at parent} through one socket ([] where the
    interface or its qdisc is gone); no socket at all for no interfaces."""
    if not ifindexes:
        return {}
    out = {}
    with ipr(netns) as s:
        for ifindex in ifindexes:
            try:
                filters = s.get_filters(ifindex, parent=parent)
            except _nlerror():
                filters = []
            out[ifindex] = [n for f in filters if (n := f.get_nested("TCA_OPTIONS", "TCA_BPF_NAME"))]
    return out


def clsact_delete(netns: str | None, ifindex: int) -> None:
    with ipr(netns) as s:
        try:
            s.tc("del", "clsact", ifindex)
        except _nlerror() as e:
            if e.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                raise _kerr(f"delete clsact on ifindex {ifindex}", e) from None


def xdp_attach(netns: str | None, ifindex: int, prog_fd: int) -> None:
    with ipr(netns) as s:
        try:
            s.link("set", index=ifindex, xdp={"attrs": [("IFLA_XDP_FD", prog_fd),
                                                         ("IFLA_XDP_FLAGS", XDP_FLAGS_DRV_MODE)]})
        except _nlerror() as e:
            raise _kerr(f"attach XDP (native) to ifindex {ifindex}", e) from None


def xdp_detach(netns: str | None, ifindex: int) -> None:
    with ipr(netns) as s:
        try:
            s.link("set", index=ifindex, xdp={"attrs": [("IFLA_XDP_FD", -1),
                                                         ("IFLA_XDP_FLAGS", XDP_FLAGS_DRV_MODE)]})
        except _nlerror() as e:
            if e.code != errno.ENODEV:
                raise _kerr(f"detach XDP from ifindex {ifindex}", e) from None


def xdp_attached(netns: str | None, ifindex: int, name: str | None = None) -> bool:
    """An XDP program at ifindex (one called name, if given: another tool's program in its place
    read as ours, and the attached gauge never went to 0). False too for an interface that is
    gone (an ifindex the state kept from before)."""
    with ipr(netns) as s:
        try:
            xdp = s.get_links(ifindex)[0].get_attr("IFLA_XDP")
        except _nlerror() as e:
            if e.code == errno.ENODEV:
                return False
            raise _kerr(f"read XDP of ifindex {ifindex}", e) from None
    prog_id = dict(xdp["attrs"]).get("IFLA_XDP_PROG_ID") if xdp else None
    if not prog_id or name is None:
        return bool(prog_id)
    from dataplane.kernel import bpfsys  # noqa: PLC0415 - only this reads a program's name
    return bpfsys.prog_name_by_id(prog_id) == name


# --- neighbours -----------------------------------------------------------

def neigh_resolve(netns: str | None, ifindex: int, ip: str) -> None:
    """Ask the kernel to resolve ip on ifindex (NTF_USE): it sends the ARP, we send nothing."""
    with ipr(netns) as s:
        try:
            s.neigh("add", dst=ip, ifindex=ifindex, flags=NTF_USE, state=0)
        except _nlerror() as e:
            if e.code not in (errno.EEXIST,):
                raise _kerr(f"resolve neighbour {ip}", e) from None


def neigh_mac(netns: str | None, ifindex: int, ip: str) -> str | None:
    with ipr(netns) as s:
        for n in s.get_neighbours(ifindex=ifindex, dst=ip, family=2):
            if n["state"] & NUD_VALID and n.get_attr("NDA_LLADDR"):
                return n.get_attr("NDA_LLADDR")
    return None


def route_oif(netns: str | None, ip: str) -> tuple[int, str]:
    """(egress ifindex, next-hop address) the kernel would use toward ip."""
    with ipr(netns) as s:
        try:
            r = s.route("get", dst=ip)[0]
        except _nlerror() as e:
            raise _kerr(f"route to {ip}", e) from None
    return r.get_attr("RTA_OIF"), (r.get_attr("RTA_GATEWAY") or ip)


def routes_oif(netns: str | None, ips) -> dict[str, int | None]:
    """route_oif's egress ifindex for each of ips (None: no route), on one socket:
    an agent's start asks this of every host in the registry."""
    out: dict[str, int | None] = {}
    with ipr(netns) as s:
        for ip in ips:
            try:
                out[ip] = s.route("get", dst=ip)[0].get_attr("RTA_OIF")
            except _nlerror():
                out[ip] = None
    return out


def wait_neigh(netns: str | None, ifindex: int, ip: str, timeout: float = 2.0) -> str | None:
    neigh_resolve(netns, ifindex, ip)
    deadline = time.monotonic() + timeout
    while True:
        mac = neigh_mac(netns, ifindex, ip)
        if mac or time.monotonic() > deadline:
            return mac
        time.sleep(0.02)
