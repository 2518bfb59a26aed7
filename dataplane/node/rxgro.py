"""Receive GRO for the overlay: a kernel vxlan device that carries nothing.

GRO on the uplink merges a flow's VXLAN frames only for a UDP port that a kernel tunnel
socket has claimed (its gro_receive callback). Without one, every frame a NIC delivers
(an MTU's worth) runs from_overlay and the sandbox's IP and TCP one by one: TCP across
hosts ran at 0.61x the kernel vxlan device's rate (bench.rxgro; docs/BENCHMARKS.md,
"Between hosts with NICs"). A collect_md vxlan device on our port is such a socket. Frames never go
through it: GRO runs before tc, and from_overlay decapsulates and redirects what is ours.
What reaches the device's socket is VXLAN that from_overlay let by (to another address
of the host); `gro_sink` at the device's tcx ingress drops all of it.

One vxlan socket per port and namespace: where another vxlan device holds the port,
the node goes without (said at `up`, on gro_sink's row of `dataplane status`, in the
metric dataplane_receive_gro and in the state).
"""

from __future__ import annotations

from dataplane.core.errors import DataplaneError
from dataplane.core.notice import notice
from dataplane.core.state import NodeState
from dataplane.kernel import netlink, tcx
from dataplane.node.base import Node

IFNAME = "dpgro0"        # not an endpoint port's name (sweep.py's dp + 10 hex digits)
ON = "on"


def ensure(node: Node, st: NodeState, sink_fd: int) -> None:
    """Make (or keep) the device on the node's port with gro_sink attached; st.rx_gro
    says how it went ("on", or "off: why"). The sink is in place before the device goes up
    (its socket opens then). Never fails `up`: GRO is speed, not function."""
    try:
        ifindex = netlink.vxlan_external(node.netns, IFNAME, st.config.port)
        try:
            netlink.sysctl(node.netns, f"net.ipv6.conf.{IFNAME}.disable_ipv6", "1")
        except DataplaneError:
            pass                     # IPv6 is off in this namespace: nothing to keep off
        tcx.attach(node.netns, ifindex, sink_fd, "gro_sink")
        netlink.link_up(node.netns, IFNAME)     # EADDRINUSE: another vxlan device holds the port
    except DataplaneError as e:
        remove(node)                 # not kept half made
        why = str(e) + (f" (another vxlan device holds UDP port {st.config.port})"
                        if "Address already in use" in str(e) else "")
        st.rx_gro = f"off: {why}"
        notice(f"receive GRO is off: {why}")
        return
    st.rx_gro = ON


def remove(node: Node) -> None:
    """The device goes (its program with it); nothing to do if it is not there."""
    netlink.link_delete(node.netns, IFNAME)


def active(netns: str | None) -> bool:
    """The device is there with gro_sink at its ingress (what status and metrics show)."""
    ifindex = netlink.link_index(netns, IFNAME)
    return bool(ifindex) and "gro_sink" in tcx.names(netns, ifindex)
