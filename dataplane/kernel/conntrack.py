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
import os
from collections.abc import Iterable

from dataplane.core.errors import KernelError
from dataplane.kernel.netns import call_in_netns

# Up to this many addresses, each is asked for by itself (CTA_FILTER, Linux 5.8+: the kernel
# walks its table and sends the matches); more, and the table is read once and matched here
# (pyroute2 decodes about 4,000 entries a second on this machine: a big table takes seconds).
FILTERED_MAX = 32
# No ctnetlink (nf_conntrack_netlink not loaded, nor loadable): no entries we could read either.
_NO_TABLE = (errno.EOPNOTSUPP, errno.EPROTONOSUPPORT, errno.ENOENT)


def _picked(ct, addrs: frozenset[str]):
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple  # noqa: PLC0415 (netlink._nlerror says why)
    if len(addrs) > FILTERED_MAX:
        return [e for e in ct.dump_entries()
                if e.tuple_orig.saddr in addrs or (e.tuple_reply and e.tuple_reply.saddr in addrs)]
    return [e for a in sorted(addrs) for side in ("tuple_orig", "tuple_reply")
            for e in ct.dump_entries(**{side: NFCTAttrTuple(saddr=a)})]


def _here(addrs: frozenset[str]) -> tuple[int, int]:
    from pyroute2 import Conntrack  # noqa: PLC0415
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415
    gone = failed = 0
    try:
        with Conntrack() as ct:
            ct.asyncore.local.keep_event_loop = True    # one event loop for every call (a new one each: 60% more)
            seen = set()
            for e in _picked(ct, addrs):
                if e.id in seen:                        # (both its sides matched, or two addresses)
                    continue
                seen.add(e.id)
                try:
                    ct.delete(e)
                    gone += 1
                except NetlinkError as err:
                    # ENOENT: gone meanwhile. Others: pyroute2 gives a delete the ports of TCP and
                    # UDP only (an SCTP or GRE entry's tuple is refused): those time out instead.
                    failed += err.code != errno.ENOENT
    except NetlinkError as err:
        if err.code in _NO_TABLE:
            return 0, 0
        raise OSError(err.code, os.strerror(err.code)) from None
    return gone, failed


def forget(netns: str | None, addrs: Iterable[str]) -> tuple[int, int]:
    """Delete the conntrack entries whose original or reply source is one of the IPv4 addresses:
    (deleted, not deleted). KernelError if the table could not be read."""
    addrs = frozenset(addrs)
    if not addrs:
        return 0, 0
    try:
        return call_in_netns(netns, _here, addrs)
    except OSError as e:
        raise KernelError(f"forget the connections of {', '.join(sorted(addrs)[:3])}"
                          f"{'...' if len(addrs) > 3 else ''}: {e.strerror or e} (errno {e.errno})") from None
