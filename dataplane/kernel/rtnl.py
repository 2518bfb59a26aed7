"""Raw rtnetlink requests, made in the calling thread's namespace: the few an endpoint's
creation needs (a veth pair, a link up, an address, a route) and gso.py's two.

pyroute2 builds a socket with an asyncio loop of its own and decodes every attribute of every
reply: 1-2 ms a call in a quiet process, a third of an endpoint add in the agent (py-spy,
2026-12-06). These requests are a few dozen bytes each, answered by an acknowledgement.
The numbers are ABI (linux/netlink.h, rtnetlink.h, if_link.h, veth.h, if_addr.h).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 18, 20, 24
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST = 254, 4, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
IFF_UP = 0x1

NLMSG = struct.Struct("=IHHII")          # length, type, flags, sequence, port
IFINFO = struct.Struct("=BxHiII")        # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")        # family, prefix length, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")     # family, dst len, src len, tos, table, protocol, scope, type, flags
_NLA = struct.Struct("=HH")


def nla(kind: int, payload: bytes) -> bytes:
    pad = (-(_NLA.size + len(payload))) % 4
    return _NLA.pack(_NLA.size + len(payload), kind) + payload + b"\0" * pad


def attrs(buf: bytes) -> dict[int, bytes]:
    """{type: payload} of a run of attributes (the nested and byte-order flags cleared)."""
    out, off = {}, 0
    while off + _NLA.size <= len(buf):
        ln, kind = _NLA.unpack_from(buf, off)
        if ln < _NLA.size:
            break
        out[kind & 0x3FFF] = buf[off + _NLA.size: off + ln]
        off += (ln + 3) & ~3
    return out


def _name(ifname: str) -> bytes:
    return nla(IFLA_IFNAME, ifname.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return nla(kind, struct.pack("=I", value))


def ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


class Rtnl:
    """One NETLINK_ROUTE socket in the namespace of the thread that opened it, for requests
    one after another. OSError(errno) for a request the kernel refused."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        self.seq = 0

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes) -> bytes:
        """Send one request and wait for its answer: the reply message (a GET), or b"" for an
        acknowledgement."""
        self.seq += 1
        self.sock.send(NLMSG.pack(NLMSG.size + len(body), kind, NLM_F_REQUEST | flags, self.seq, 0) + body)
        while True:
            data, off = self.sock.recv(1 << 16), 0
            while off + NLMSG.size <= len(data):
                ln, typ, _, seq, _ = NLMSG.unpack_from(data, off)
                msg, off = data[off:off + ln], off + ((ln + 3) & ~3)
                if ln < NLMSG.size or seq != self.seq:
                    continue                     # not ours (an earlier request's late part)
                if typ == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", msg, NLMSG.size)[0]
                    if err:
                        raise OSError(err, os.strerror(err))
                    return b""
                if typ != NLMSG_DONE:
                    return msg

    def link_get(self, ifname: str) -> dict[int, bytes]:
        """The attributes of link ifname."""
        reply = self.request(RTM_GETLINK, 0, ifinfo() + _name(ifname))
        return attrs(reply[NLMSG.size + IFINFO.size:])

    def link_set(self, ifname: str, extra: bytes) -> None:
        self.request(RTM_NEWLINK, NLM_F_ACK, ifinfo() + _name(ifname) + extra)

    def link_up(self, index: int) -> None:
        self.request(RTM_NEWLINK, NLM_F_ACK, ifinfo(index, IFF_UP, IFF_UP))

    def veth_add(self, name: str, mtu: int, peer_name: str, peer_mac: str, peer_ns_fd: int | None) -> None:
        """A veth pair: name here, peer_name with peer_mac in the namespace of peer_ns_fd (None: here)."""
        peer = ifinfo() + _name(peer_name) + nla(IFLA_ADDRESS, bytes.fromhex(peer_mac.replace(":", ""))) \
            + _u32(IFLA_MTU, mtu) + (_u32(IFLA_NET_NS_FD, peer_ns_fd) if peer_ns_fd is not None else b"")
        info = nla(IFLA_INFO_KIND, b"veth") + nla(IFLA_INFO_DATA, nla(VETH_INFO_PEER, peer))
        self.request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                     ifinfo() + _name(name) + _u32(IFLA_MTU, mtu) + nla(IFLA_LINKINFO, info))

    def addr_add(self, index: int, ip: str, prefixlen: int) -> None:
        raw = ipaddress.IPv4Address(ip).packed
        self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                     _IFADDR.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
                     + nla(IFA_LOCAL, raw) + nla(IFA_ADDRESS, raw))

    def route_add(self, index: int, dst: ipaddress.IPv4Network, gateway: str | None) -> None:
        """A main-table route to dst out of index, through gateway or on the link (as `ip route add`)."""
        scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        body = _RTMSG.pack(socket.AF_INET, dst.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope, RTN_UNICAST, 0)
        if dst.prefixlen:
            body += nla(RTA_DST, dst.network_address.packed)
        body += _u32(RTA_OIF, index)
        if gateway:
            body += nla(RTA_GATEWAY, ipaddress.IPv4Address(gateway).packed)
        self.request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)
