"""What `up` takes when it is not told: the node's host name in the registry, and the MTU of
the uplink it would use (control.up sizes a new registry network by it before the node is up)."""

from __future__ import annotations

import socket

from dataplane.core import model
from dataplane.core.errors import UsageError
from dataplane.kernel import netlink
from dataplane.node.base import Node


def host_name_for(node: Node, given: str | None, kept: str | None = None) -> str:
    """The node's name in the registry: given, else the one it had, else its namespace's or the
    machine's short hostname; refused (exit 2) if it breaks the name rules, as the agent would."""
    from_hostname = not (given or kept or node.netns)
    name = given or kept or node.netns or socket.gethostname().split(".")[0]
    try:
        return model.parse_name(name, "host name")
    except UsageError as e:
        if not from_hostname:
            raise
        raise UsageError(f"{e} (taken from this machine's hostname): give --host-name") from None


def uplink_mtu(node: Node, underlay: str | None = None) -> int:
    """The MTU of the uplink `up` would take (the node's, the one named, or the default route's)."""
    st = node.state()
    if st:
        return st.uplink.mtu
    underlay = underlay or netlink.default_route_ifname(node.netns)
    if not underlay:
        raise UsageError("no --underlay given and no default route to take it from")
    model.parse_ifname(underlay)
    return netlink.link_info(node.netns, underlay)["mtu"]
