"""Connection-tracking entries of addresses that stop being what they were (pyroute2's
Conntrack, from a thread inside the node's namespace).

A sandbox's connections through its network's gateway are masqueraded (node/gwrules.py) and a
published port's are DNATed to it, and both live on in the node's conntrack after the sandbox
is gone: an established TCP entry for days. A new sandbox given the same address (the next
endpoint, or another network given the subnet here) then receives the world's replies to the
old one's connections. As libnetwork does when it releases an endpoint's addresses, the entries
go with the address: those it began (original source) and those it answered (reply source:
connections DNATed to it)."""

from __future__ import annotations

import errno
import ipaddress
import os

from dataplane.core.errors import KernelError
from dataplane.kernel.netns import call_in_netns


def _here(net: ipaddress.IPv4Network) -> int:
    from pyroute2 import Conntrack  # noqa: PLC0415 (netlink._nlerror says why)
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple  # noqa: PLC0415
    one = str(net.network_address) if net.prefixlen == 32 else None
    gone = 0
    with Conntrack() as ct:
        for side in ("tuple_orig", "tuple_reply"):
            # One address: the kernel picks the entries (CTA_FILTER, Linux 5.8+); a subnet: all read.
            picked = ct.dump_entries(**{side: NFCTAttrTuple(saddr=one)}) if one else ct.dump_entries()
            for e in list(picked):
                t = getattr(e, side)
                if t is None or not t.saddr or ipaddress.ip_address(t.saddr) not in net:
                    continue
                try:
                    ct.delete(e)
                    gone += 1
                except NetlinkError as err:
                    if err.code != errno.ENOENT:       # (gone meanwhile, or on the first side's pass)
                        raise OSError(err.code, os.strerror(err.code)) from None
    return gone


def forget(netns: str | None, net: str) -> int:
    """Delete the conntrack entries of the address or subnet net, as source of either direction;
    how many went. A table the kernel has no module for holds nothing to forget (0)."""
    try:
        return call_in_netns(netns, _here, ipaddress.IPv4Network(net, strict=False))
    except FileNotFoundError:
        return 0                     # no nf_conntrack_netlink: no entries either
    except OSError as e:
        raise KernelError(f"forget the connections of {net}: {e.strerror or e} (errno {e.errno})") from None
