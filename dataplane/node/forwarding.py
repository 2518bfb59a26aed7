"""IPv4 forwarding on the node's ways out (gwrules.ways_out) other than its uplink, while it has
a gateway (node/gateway.py).

Linux forwards an IPv4 packet only if the interface it arrived on forwards. The uplink is turned
on at `up` (vtep.py); the routers at their making. On a host whose default route is another
interface (a management NIC beside the underlay's, without Docker, which turns forwarding on for
all) the world's replies to a sandbox arrive there: left off, they were dropped, and egress never
worked on that host. Each value found is kept (NodeState.ways_forwarding) and put back when the
node's last gateway goes, as vtep.restore_forwarding does for the uplink.

Forwarding on such an interface forwards whatever arrives there, not only the replies: the host
would route for anyone on that network (into the underlay's, other bridges). So while it is on
by our doing, the gateways' rules confine it (gwrules.confine: what arrives there goes to a
router or nowhere, as before), written before the sysctl, removed after it is put back. Where the
host has forwarding on for all interfaces (Docker sets it, after us or before), it forwards by
its own choice: nothing is recorded, confined or put back.

The steps, under the node's lock: note() what to turn on, sync the rules with confined(), then
apply(); restore() before the last gateway's rules go.
"""

from __future__ import annotations

from dataplane.core.errors import KernelError, NotFound
from dataplane.core.state import NodeState
from dataplane.kernel import netlink
from dataplane.node import gwrules
from dataplane.node.base import Node

ALL = "net.ipv4.conf.all.forwarding"
TURNED = "IPv4 forwarding turned on for"          # apply()'s words: what moved, not a repair


def _key(ifname: str) -> str:
    return netlink.conf_key(ifname, "forwarding")


def _get(node: Node, ifname: str) -> str | None:
    try:
        return netlink.sysctl_get(node.netns, _key(ifname))
    except KernelError:
        return None                      # gone since the routes were read


def _all_on(node: Node) -> bool:
    try:
        return netlink.sysctl_get(node.netns, ALL) == "1"
    except KernelError:
        return False


def confined(st: NodeState) -> list[str]:
    """The ways whose forwarding is on by our doing: the rules keep them to the routers."""
    return sorted(st.ways_forwarding)


def due(node: Node, st: NodeState, ways: list[str]) -> bool:
    """Would note() or apply() change anything (a quick check, no lock)?"""
    if _all_on(node):
        return bool(st.ways_forwarding)
    look = (set(ways) - {st.config.underlay}) | set(st.ways_forwarding)
    return any(_get(node, w) not in (None, "1") for w in look)


def note(node: Node, st: NodeState, ways: list[str] | None = None) -> bool:
    """The ways out (ways: as read already, else read now) but the uplink whose forwarding is
    off, recorded with that value in st for apply() (the caller holds the node's lock and saves
    st); all forgotten where the host forwards on all interfaces. Whether st changed."""
    if _all_on(node):
        changed, st.ways_forwarding = bool(st.ways_forwarding), {}
        return changed
    before = dict(st.ways_forwarding)
    for way in gwrules.ways_out(node.netns) if ways is None else ways:
        value = _get(node, way)
        if way != st.config.underlay and value not in (None, "1"):
            st.ways_forwarding.setdefault(way, value)
    return st.ways_forwarding != before


def apply(node: Node, st: NodeState) -> list[str]:
    """Forwarding on for each recorded way that lacks it, once the rules confine it; in words."""
    said = []
    for way in confined(st):
        if _get(node, way) not in (None, "1"):
            netlink.sysctl(node.netns, _key(way), "1")
            said.append(f"{TURNED} {way}, a way out of the node (a default route's), "
                        f"for the world's replies to sandboxes (the gateways' rules keep it to them)")
    return said


def restore(node: Node, st: NodeState) -> None:
    """Each way's forwarding as it was before apply() (the node's last gateway goes; before its
    rules do), but left on where the host has forwarding on for all interfaces since (Docker
    does), where the interface is gone (its setting went with it) or is the uplink now."""
    if not st.ways_forwarding:
        return
    try:
        all_on = netlink.sysctl_get(node.netns, ALL) == "1"
    except KernelError:
        st.ways_forwarding = {}
        return                           # the namespace is gone: nothing to put back
    for way, old in st.ways_forwarding.items():
        if not all_on and way != st.config.underlay and netlink.link_index(node.netns, way) is not None:
            try:
                netlink.sysctl(node.netns, _key(way), old)
            except (KernelError, NotFound):
                pass                     # gone in between
    st.ways_forwarding = {}
