"""Receive GRO for the overlay: a kernel vxlan device that receives nothing.

GRO on the uplink merges a flow's VXLAN frames only for a UDP port that a kernel tunnel
socket has claimed (its gro_receive callback). Without one, every frame a NIC delivers
(an MTU's worth) runs from_overlay and the sandbox's IP and TCP one by one: TCP across
hosts ran at 0.61x the kernel vxlan device's rate (bench.rxgro; docs/BENCHMARKS.md,
"Between hosts with NICs"). A collect_md vxlan device on our port is such a socket. No frame
is received through it: GRO runs before tc, and from_overlay decapsulates and redirects what
is ours. What reaches the device's socket is VXLAN that from_overlay let by (to another address
of the host, or IPv6); `gro_sink` at the device's tcx ingress drops all of it. It does
transmit: frames that carry a tunnel of their own leave by it (bpf/lib/encap.h, encap_marked;
dp_config.tunnel_ifindex), so its outer source ports are the node's range and its MTU the
networks' largest.

One vxlan socket per port and namespace. Where another vxlan device holds the port, its
socket does the merging (and what it is given is its own); where something else holds it,
the node goes without, and where plain sockets held it, the device is made once none
does (`freed`: the agent's tick and start; `up` makes it anyway).
Either is said at `up`, on gro_sink's row of `dataplane status`, in the metric
dataplane_receive_gro and in the state.
"""

from __future__ import annotations

import ctypes
import errno
from typing import NamedTuple

from dataplane.core import model
from dataplane.core.errors import DataplaneError
from dataplane.core.notice import notice
from dataplane.core.state import NodeState
from dataplane.kernel import netlink, tcx, vxlandev
from dataplane.kernel.maps import NodeMaps
from dataplane.node.base import Node

IFNAME = "dpgro0"        # not an endpoint port's name (sweep.py's dp + 10 hex digits)
ON = "on"
HELD = "off: UDP port {} is held by a socket that is not a vxlan device"   # st.rx_gro: taken when freed


def ensure(node: Node, st: NodeState, sink_fd: int) -> int:
    """Make (or keep) the device on the node's port with gro_sink attached; st.rx_gro says
    how it went ("on", "through X", or "off: why"). The sink is in place before the device
    goes up (its socket opens then). Never fails `up`: GRO is speed, not function. Returns
    the device's ifindex while it is on (dp_config.tunnel_ifindex, bpf/lib/encap.h), else 0."""
    port = st.config.port
    if not st.config.rx_gro:
        remove(node)
        st.rx_gro = "off: --no-rx-gro"
        return 0
    try:
        lo, hi = st.config.src_port_min, st.config.src_port_max
        # [lo, hi) as wire.h's vxlan_src_port; the kernel takes lo == hi for its default range
        ifindex = vxlandev.vxlan_external(node.netns, IFNAME, port, (lo, hi if hi > lo else min(lo + 1, 65535)),
                                          min(st.uplink.mtu - model.ENCAP_LEN, model.MTU_MAX))
        try:
            netlink.sysctl(node.netns, f"net.ipv6.conf.{IFNAME}.disable_ipv6", "1")
        except DataplaneError:
            pass                     # IPv6 is off in this namespace: nothing to keep off
        tcx.attach(node.netns, ifindex, sink_fd, "gro_sink")
        netlink.link_up(node.netns, IFNAME)     # EADDRINUSE: another socket holds the port
    except DataplaneError as e:
        try:
            remove(node)             # not kept half made
        except DataplaneError:
            pass
        held = holder(node.netns, port)
        if held and held[0] != IFNAME:
            st.rx_gro = f"through {held[0]}"
            notice(f"UDP port {port} is vxlan device {held[0]}'s: receive GRO goes through its socket")
        else:
            # Refused the port, or a socket has it now: plain sockets' (freed takes it back
            # when they go). Ours still up (remove failed too) is not merging, and not another's.
            taken = not held and (getattr(e, "errno", None) == errno.EADDRINUSE
                                  or _port_free(node.netns, port) is False)
            st.rx_gro = f"{HELD.format(port)} ({e})" if taken else f"off: {e}"
            notice(f"receive GRO is {st.rx_gro}")
        return 0
    st.rx_gro = ON
    return ifindex


def intact(node: Node, st: NodeState, m: NodeMaps) -> bool:
    """As ensure left it: the device up on the node's port with gro_sink, and the fast path
    sending through it (fpconfig.set_tunnel_dev); or the node goes without it (st.rx_gro: by
    choice, or the port is another's). Cheap enough for the agent's every tick: one link, its
    tcx list, one map entry. fpconfig.repair_rx_gro mends what is not."""
    if st.rx_gro != ON:
        return True
    dev = vxlandev.vxlan_ports(node.netns, IFNAME).get(IFNAME)
    cfg = m.dp_config.get(ctypes.c_uint32(0))
    return (dev is not None and dev.port == st.config.port and dev.up and _guarded(node.netns, dev.ifindex)
            and cfg is not None and cfg.tunnel_ifindex == dev.ifindex)


def freed(node: Node, st: NodeState) -> bool:
    """The node went without the device because a plain socket held the port, and nothing
    holds it now: time to make it (fpconfig.repair_rx_gro). Unlike another vxlan device, whose
    socket merges our frames while it holds the port (and which may be coming back, as
    flannel's does when flannel restarts), a plain socket left the node with no GRO at all.
    One read of the namespace's UDP sockets while that is so, nothing otherwise."""
    return (st.config.rx_gro and st.rx_gro.startswith(HELD.format(st.config.port))
            and _port_free(node.netns, st.config.port) is True)


def _port_free(netns: str | None, port: int) -> bool | None:
    """netlink.udp_port_free, or None where the sockets cannot be read (the namespace gone):
    neither `up` nor the agent's tick fails for want of this answer."""
    try:
        return netlink.udp_port_free(netns, port)
    except DataplaneError:
        return None


def remove(node: Node) -> None:
    """The device goes (its program with it); nothing to do if it is not there."""
    netlink.link_delete(node.netns, IFNAME)


class Look(NamedTuple):
    """What a status or a scrape shows of the device: from one read of dpgro0's link (the whole
    dump of links only when it is not the one on the port), its tcx list only where it is."""
    holder: tuple[str, int] | None    # (name, ifindex) of the vxlan device up on the node's port
    guarded: bool                     # the holder is dpgro0 and gro_sink is at its ingress
    dropped: int | None               # dpgro0's transmit drops; None without it

    @property
    def active(self) -> bool:
        """A vxlan socket holds the port, and if it is ours, gro_sink guards it (what the metric says)."""
        return self.holder is not None and (self.holder[0] != IFNAME or self.guarded)


def look(netns: str | None, port: int, rx_gro: bool = True, guard: bool = True) -> Look:
    """Without rx_gro (a node that goes without the device) no other holder is looked for: that
    is a read of every link, endpoints included. guard=False leaves `guarded` False unread."""
    ours = vxlandev.vxlan_ports(netns, IFNAME).get(IFNAME)
    if ours is not None and ours.port == port and ours.up:
        return Look((IFNAME, ours.ifindex), guard and _guarded(netns, ours.ifindex), ours.tx_dropped)
    dropped = ours.tx_dropped if ours is not None else None
    for name, dev in vxlandev.vxlan_ports(netns).items() if rx_gro else ():
        if name != IFNAME and dev.port == port and dev.up:
            return Look((name, dev.ifindex), False, dropped)
    return Look(None, False, dropped)


def holder(netns: str | None, port: int) -> tuple[str, int] | None:
    """(name, ifindex) of the vxlan device that is up on `port` in netns (its socket holds the
    port), if any. Ours is read alone first: the whole dump only when it is not the one."""
    return look(netns, port, guard=False).holder


def _guarded(netns: str | None, ifindex: int) -> bool:
    return "gro_sink" in tcx.names(netns, ifindex)


def active(netns: str | None, port: int) -> bool:
    return look(netns, port).active


def dropped(netns: str | None) -> int | None:
    """Frames the device dropped on transmit: what from_endpoint sent through it (and counted as
    sent) that never left, because it was down or held a tunnelled GSO packet the kernel cannot
    segment (DESIGN: inner UDP merged as a frag list). None without the device."""
    dev = vxlandev.vxlan_ports(netns, IFNAME).get(IFNAME)
    return dev.tx_dropped if dev is not None else None


def describe(st: NodeState, seen: Look) -> str:
    """gro_sink's row in `dataplane status`, from look()."""
    if not st.config.rx_gro:
        return "not attached (receive GRO off: --no-rx-gro)"
    if seen.holder and seen.holder[0] == IFNAME:
        return f"tcx ingress {IFNAME} (receive GRO)" if seen.guarded \
            else f"not attached: {IFNAME} is up without it (run `dataplane up`)"
    if seen.holder:
        return f"not attached (receive GRO through vxlan device {seen.holder[0]})"
    why = st.rx_gro if st.rx_gro.startswith("off: ") else f"off: no vxlan device is up on UDP port {st.config.port}"
    return f"not attached (receive GRO {why})"
