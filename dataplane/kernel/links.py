"""Links made and brought up over raw rtnetlink (rtnl.py), each call one visit to its
namespace: one thread, one rtnetlink socket (netlink.py re-exports these). An endpoint's sandbox side is
one visit in all (sandbox_up): pyroute2 made a socket, a thread and an asyncio loop per step."""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct

from dataplane.core.errors import Conflict, NotFound
from dataplane.kernel import rtnl
from dataplane.kernel.netns import _kerr, call_in_netns


def link_index(netns: str | None, ifname: str) -> int | None:
    """ifname's index in netns (None: no such interface), by the SIOCGIFINDEX ioctl."""
    try:
        return call_in_netns(netns, _index_or_none, ifname)
    except OSError as e:
        raise _kerr(f"look up interface {ifname}", e) from None


SIOCGIFINDEX = 0x8933
_IFREQ = struct.Struct("=16si12x")     # struct ifreq: the name, then ifr_ifindex in the union


def _index_or_none(ifname: str) -> int | None:
    """In the calling thread's namespace. Only "no such device" is None (socket.if_nametoindex
    says the same for any failure, a file descriptor limit included)."""
    raw = ifname.encode()
    if not 0 < len(raw) < 16:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            return _IFREQ.unpack(fcntl.ioctl(s, SIOCGIFINDEX, _IFREQ.pack(raw, 0)))[1]
        except OSError as e:
            if e.errno == errno.ENODEV:
                return None
            raise


def veth_create(netns: str | None, name: str, peer_ns: str | None, peer_name: str, peer_mac: str, mtu: int) -> int:
    """A veth pair, up: `name` in netns, `peer_name` in peer_ns (a name or a path; None: netns)
    with peer_mac. Returns name's ifindex."""
    def here() -> int:
        fd = _ns_fd(peer_ns) if peer_ns is not None else None
        try:
            with rtnl.Rtnl() as r:
                r.veth_add(name, mtu, peer_name, peer_mac, fd)
                idx = _index_or_none(name)
                if idx is None:                  # made, and gone at once: another's delete
                    raise OSError(errno.ENODEV, "gone")
                r.link_up(idx)
                return idx
        finally:
            if fd is not None:
                os.close(fd)
    try:
        return call_in_netns(netns, here)
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise Conflict(f"interface {name!r} or {peer_name!r} exists already") from None
        raise _kerr(f"create veth {name}", e) from None


def _ns_fd(ns: str) -> int:
    try:
        return os.open(ns if ns.startswith("/") else f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"network namespace {ns!r} does not exist") from None


def link_up(netns: str | None, ifname: str, addr: str | None = None, prefixlen: int = 24) -> int:
    """ifname up, with addr/prefixlen if given (there already: fine). Its ifindex."""
    def here() -> int:
        with rtnl.Rtnl() as r:
            return _up_here(r, netns, ifname, addr, prefixlen)
    try:
        return call_in_netns(netns, here)
    except OSError as e:                  # a socket or a look-up the kernel refused
        raise _kerr(f"set {ifname} up in {netns or 'the host namespace'}", e) from None


def sandbox_up(netns: str | None, ifname: str, addr: str, prefixlen: int, routes, lo: bool = False, then=None):
    """A sandbox's side in one visit to netns (one thread, one socket): lo up (lo), ifname up
    with addr/prefixlen, the routes through it (routes_add), then then() if given; its result."""
    def here():
        with rtnl.Rtnl() as r:
            if lo:
                _up_here(r, netns, "lo", None, 0)
            idx = _up_here(r, netns, ifname, addr, prefixlen)
            _routes_here(r, netns, idx, routes)
        return then() if then else None
    try:
        return call_in_netns(netns, here)
    except OSError as e:                  # a socket or a look-up the kernel refused
        raise _kerr(f"set up {ifname} in {netns or 'the host namespace'}", e) from None


def _index_here(netns: str | None, ifname: str) -> int:
    """ifname's index in the calling thread's namespace (netns names it); NotFound if missing."""
    idx = _index_or_none(ifname)
    if idx is None:
        raise NotFound(f"interface {ifname!r} not found in {netns or 'the host namespace'}")
    return idx


def _up_here(r, netns: str | None, ifname: str, addr: str | None, prefixlen: int) -> int:
    idx = _index_here(netns, ifname)
    if addr:
        try:
            r.addr_add(idx, addr, prefixlen)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise _kerr(f"add {addr}/{prefixlen} to {ifname}", e) from None
    try:
        r.link_up(idx)
    except OSError as e:
        raise _kerr(f"set {ifname} up", e) from None
    return idx


def routes_add(netns: str | None, ifname: str, routes) -> None:
    """Routes [{"dst": CIDR, "gw": IP?}] through ifname (a CNI result's routes)."""
    if not routes:
        return

    def here() -> None:
        idx = _index_here(netns, ifname)
        with rtnl.Rtnl() as r:
            _routes_here(r, netns, idx, routes)
    try:
        call_in_netns(netns, here)
    except OSError as e:                  # a socket or a look-up the kernel refused
        raise _kerr(f"add routes through {ifname} in {netns}", e) from None


def _routes_here(r, netns: str | None, idx: int, routes) -> None:
    for rt in routes or ():
        dst = ipaddress.IPv4Network(rt["dst"], strict=False)     # as CNI results give them (Go masks them)
        try:
            r.route_add(idx, dst, rt.get("gw"))
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise _kerr(f"add route {dst} in {netns}", e) from None
