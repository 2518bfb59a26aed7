"""A link's IPv4 GSO/GRO size limits (IPv4 BIG TCP, Linux 6.3+), over raw rtnetlink.

pyroute2 0.9 does not name IFLA_GSO_IPV4_MAX_SIZE or IFLA_GRO_IPV4_MAX_SIZE
and iproute2 6.1 (Debian 12) cannot set them, so this module builds the two
requests itself (rtnl.py). Links are named, so the same call works in any namespace,
given by name (/run/netns/NAME) or by path (a CNI runtime's /proc/PID/ns/net).
"""

from __future__ import annotations

import struct

from dataplane.kernel import netlink, rtnl
from dataplane.core.errors import KernelError, NotFound

# linux/if_link.h; the numbers are ABI.
IFLA_GSO_MAX_SEGS = 40
IFLA_GSO_IPV4_MAX_SIZE = 63
IFLA_GRO_IPV4_MAX_SIZE = 64

LEGACY_MAX = 65536      # what every link had before BIG TCP, and the kernel's default
BIG_TCP_SIZE = 185000   # the size BIG TCP's authors suggest
VETH_MAX = 524280       # GSO_MAX_SIZE: a veth's tso_max_size


def _get(ifname: str) -> int:
    with rtnl.Rtnl() as r:
        raw = r.link_get(ifname).get(IFLA_GSO_IPV4_MAX_SIZE)
    return struct.unpack("=I", raw)[0] if raw else LEGACY_MAX  # a kernel before 6.3


def _set(ifname: str, size: int) -> None:
    val = struct.pack("=I", size)
    with rtnl.Rtnl() as r:
        r.link_set(ifname, rtnl.nla(IFLA_GSO_IPV4_MAX_SIZE, val) + rtnl.nla(IFLA_GRO_IPV4_MAX_SIZE, val))


def gso_ipv4_max(netns: str | None, ifname: str) -> int:
    """The largest IPv4 GSO packet the link takes (65536 without BIG TCP)."""
    try:
        return netlink.call_in_netns(netns, _get, ifname)
    except OSError as e:
        if e.errno == 19:  # ENODEV
            raise NotFound(f"interface {ifname!r} not found in {netns or 'the host namespace'}") from None
        raise KernelError(f"read GSO size of {ifname}: {e.strerror}") from None


def set_veth(size: int, end: tuple[str | None, str], peer: tuple[str | None, str]) -> None:
    """Both ends (netns, ifname) of a new veth get the limit size. At 64 KB
    there is nothing to set: a new link starts there."""
    if size > LEGACY_MAX:
        for netns, ifname in (end, peer):
            set_gso_ipv4_max(netns, ifname, size)


def set_gso_ipv4_max(netns: str | None, ifname: str, size: int) -> None:
    """Let the link build and take IPv4 GSO/GRO packets of up to size bytes."""
    try:
        netlink.call_in_netns(netns, _set, ifname, int(size))
    except OSError as e:
        raise KernelError(f"set IPv4 GSO/GRO size {size} on {ifname}: {e.strerror} (errno {e.errno})") from None


def max_segs(netns: str | None, ifname: str) -> int:
    """The link's gso_max_segs."""
    def here():
        with rtnl.Rtnl() as r:
            return struct.unpack("=I", r.link_get(ifname)[IFLA_GSO_MAX_SEGS])[0]
    try:
        return netlink.call_in_netns(netns, here)
    except OSError as e:
        raise KernelError(f"read gso_max_segs of {ifname}: {e.strerror} (errno {e.errno})") from None


def set_max_segs(netns: str | None, ifname: str, segs: int) -> None:
    """The most segments the link lets a GSO packet have (its gso_max_segs; 65,535 on a veth)."""
    def here():
        with rtnl.Rtnl() as r:
            r.link_set(ifname, rtnl.nla(IFLA_GSO_MAX_SEGS, struct.pack("=I", segs)))
    try:
        netlink.call_in_netns(netns, here)
    except OSError as e:
        raise KernelError(f"set gso_max_segs {segs} on {ifname}: {e.strerror} (errno {e.errno})") from None
