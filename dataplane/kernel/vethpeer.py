"""Where the other end of a veth is when it has left the node's namespace: a Docker peer
the engine moved into a container and renamed, found from the end we keep."""

from __future__ import annotations

import os

from dataplane.core.errors import NotFound
from dataplane.kernel.netlink import _kerr, _nlerror, ipr


def veth_peer(netns: str | None, ifname: str) -> tuple[int | None, int | None]:
    """(namespace id, ifindex) of a veth's other end as netns sees it: no id while that end
    is in netns itself."""
    with ipr(netns) as s:
        found = s.link_lookup(ifname=ifname)
        if not found:
            raise NotFound(f"interface {ifname!r} not found in {netns or 'the host namespace'}")
        try:
            link = s.get_links(found[0])[0]
        except _nlerror() as e:
            raise _kerr(f"read interface {ifname}", e) from None
    return link.get_attr("IFLA_LINK_NETNSID"), link.get_attr("IFLA_LINK")


def process_namespaces(netns: str | None) -> dict[int, tuple[str, int]]:
    """{namespace id in netns: (/proc/PID/ns/net, its inode)} for the namespaces netns has
    an id for (one with a link into netns has one) and some process lives in: how a
    namespace with no name we can see (a container's, whose engine may keep its mounts
    private) is reached. One RTM_GETNSID per namespace; asking assigns no id. The inode
    lets a user check that the path still leads there (PIDs are reused)."""
    out, seen = {}, set()
    with ipr(netns) as s:
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            try:
                ino = os.stat(f"/proc/{pid}/ns/net").st_ino
                if ino in seen:
                    continue
                nsid = (s.get_netnsid(pid=pid) or {}).get("nsid")
            except (OSError, _nlerror()):          # gone (another process may lead there), or not ours
                continue
            seen.add(ino)
            if nsid is not None and nsid < 0x80000000:
                out.setdefault(nsid, (f"/proc/{pid}/ns/net", ino))
    return out
