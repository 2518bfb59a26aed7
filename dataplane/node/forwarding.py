"""IPv4 forwarding on the node's ways out (gwrules.ways_out) other than its uplink, while it has
a gateway (node/gateway.py).

Linux forwards an IPv4 packet only if the interface it arrived on forwards. The uplink is turned
on at `up` (vtep.py); the routers at their making. On a host whose default route is another
interface (a management NIC beside the underlay's, without Docker, which turns forwarding on for
all) the world's replies to a sandbox arrive there: left off, they were dropped, and egress never
worked on that host. Each value found is kept (NodeState.ways_forwarding) and put back when the
node's last gateway goes, as vtep.restore_forwarding does for the uplink.
"""

from __future__ import annotations

from dataplane.core.errors import KernelError, NotFound
from dataplane.core.state import NodeState
from dataplane.kernel import netlink
from dataplane.node import gwrules
from dataplane.node.base import Node


def _key(ifname: str) -> str:
    return f"net.ipv4.conf.{ifname}.forwarding"


def wanted(node: Node, st: NodeState, ways: list[str] | None = None) -> list[str]:
    """The ways out (ways: as read already, else read now) but the uplink whose forwarding is
    off: what on() would turn on."""
    out = []
    for way in gwrules.ways_out(node.netns) if ways is None else ways:
        if way == st.config.underlay:
            continue
        try:
            if netlink.sysctl_get(node.netns, _key(way)) != "1":
                out.append(way)
        except KernelError:
            continue                     # gone since the routes were read
    return out


def on(node: Node, st: NodeState, ways: list[str] | None = None) -> list[str]:
    """Forwarding on for each way out that lacks it, its value before kept in st (the caller
    holds the node's lock and saves st); what was turned on, in words."""
    said = []
    for way in wanted(node, st, ways):
        old = netlink.sysctl_get(node.netns, _key(way))
        st.ways_forwarding.setdefault(way, old)
        netlink.sysctl(node.netns, _key(way), "1")
        said.append(f"IPv4 forwarding turned on for {way}, a way out of the node (a default route's): "
                    f"the world's replies to sandboxes arrive there")
    return said


def restore(node: Node, st: NodeState) -> None:
    """Each way's forwarding as it was before on() (the node's last gateway is gone), but left
    on where the host has forwarding on for all interfaces since (Docker does), or where the
    interface is gone (its setting went with it)."""
    if not st.ways_forwarding:
        return
    try:
        all_on = netlink.sysctl_get(node.netns, "net.ipv4.conf.all.forwarding") == "1"
    except KernelError:
        return                           # the namespace is gone: nothing to put back
    for way, old in st.ways_forwarding.items():
        if not all_on and netlink.link_index(node.netns, way) is not None:
            try:
                netlink.sysctl(node.netns, _key(way), old)
            except (KernelError, NotFound):
                pass                     # gone in between
    st.ways_forwarding = {}
