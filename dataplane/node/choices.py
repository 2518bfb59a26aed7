"""What `up` takes when it is not told: the node's host name in the registry, and the MTU of
the uplink it would use (control.up sizes a new registry network by it before the node is up);
and the fast path's meters it is told, checked (fpconfig.py writes them to dp_meters)."""

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


# The fast path's meters `up` sets: NodeConfig field, what it is called in an error, its unit.
METERS = (("storm_rate", "storm-control rate", "frames"), ("storm_burst", "storm-control burst", "frames"),
          ("overlay_storm_rate", "overlay storm rate", "copies"),
          ("overlay_storm_host_rate", "host overlay storm rate", "copies"),
          ("overlay_storm_peer_rate", "peer overlay storm rate", "copies"), ("learn_rate", "learning rate", "MACs"))
METER_FIELDS = tuple(f for f, _, _ in METERS)


def peer_rate(c) -> int:
    """NodeConfig c's overlay storm rate for one peer in a network: as set, else half the network's
    (so 0, no meter of its own, when the network's is off): a state or boot file of a version
    before the meter has none, and its network rate (0, or one raised or lowered) decides."""
    if c.overlay_storm_peer_rate is not None:
        return c.overlay_storm_peer_rate
    return derived_peer_rate(c.overlay_storm_rate)


def derived_peer_rate(network_rate: int) -> int:
    """One peer's share of a network's overlay storm rate when none is set: half, rounded up."""
    return (network_rate + 1) // 2


DERIVED = "auto"      # the peer overlay storm rate's way back to "half the network's" (peer_rate)


def meters(given: dict | None) -> dict[str, int | None]:
    """The meters' settings given ({field: value}, a value None or absent: keep the node's), checked
    (exit 2 on a bad one); unknown fields are refused. The peer overlay storm rate may be "auto":
    None, half the network's."""
    given = {k: v for k, v in (given or {}).items() if v is not None}
    unknown = set(given) - set(METER_FIELDS)
    if unknown:
        raise UsageError(f"unknown meter setting(s): {', '.join(sorted(unknown))}")
    return {f: None if f == "overlay_storm_peer_rate" and given[f] == DERIVED
            else model.parse_storm(given[f], what, unit) for f, what, unit in METERS if f in given}
