"""The fast path's configuration, from the node's state: dp_config (this module is its only
writer, the loader aside) and dp_meters; the device frames with a tunnel of their own leave by;
the monitor's switch; and all of it put back as saved after a re-run of `up` that failed."""

from __future__ import annotations

import ctypes
import os
import socket

from dataplane.core import abi, model, state
from dataplane.core.errors import DataplaneError, NotFound
from dataplane.core.keys import be32
from dataplane.core.notice import notice
from dataplane.core.state import NodeState
from dataplane.kernel import clock, loader, netlink
from dataplane.kernel.maps import NodeMaps
from dataplane.node import choices, rxgro, vxlanguard
from dataplane.node.base import Node

_S = abi.load().structs
_F = abi.load().enums["dp_cfg_flag"]
_MON = int(_F.DP_CFG_MON_DROP) | int(_F.DP_CFG_MON_PUNT) | int(_F.DP_CFG_MON_TRACE)


def write_config(m: NodeMaps, st: NodeState) -> None:
    c = st.config
    flags = int(_F.DP_CFG_PEER_CHECK) if c.peer_check else 0
    val = _S["dp_config"](local_ip=be32(c.local_ip), port=socket.htons(c.port),
                          src_port_min=c.src_port_min, src_port_max=c.src_port_max,
                          flags=flags, uplink_ifindex=st.uplink.ifindex,
                          fdb_age_ns=c.fdb_age_s * 1_000_000_000)
    if c.storm_rate:
        val.storm_interval_ns = 1_000_000_000 // c.storm_rate
        val.storm_burst_ns = val.storm_interval_ns * max(c.storm_burst, 1)
    old = m.dp_config.get(ctypes.c_uint32(0))
    if old is not None:                 # a running monitor's settings are its own (set_monitor)
        val.flags |= old.flags & _MON
        val.mon_interval_ns, val.mon_sample = old.mon_interval_ns, old.mon_sample
        val.tunnel_ifindex = old.tunnel_ifindex     # rxgro.set_tunnel_dev's, until it says again
    if old is not None and old.clock_ns_per_jiffy:      # the kernel's clock: as calibrated for this boot
        val.clock_ns_per_jiffy, val.clock_offset_ns = old.clock_ns_per_jiffy, old.clock_offset_ns
    else:
        val.clock_ns_per_jiffy, val.clock_offset_ns = clock.calibrate(st.pin_dir)
    m.dp_config.put(ctypes.c_uint32(0), val)
    try:
        m.dp_meters.put(ctypes.c_uint32(0), _meters(c))
    except NotFound:        # unpinned to be made anew by a load that then failed (kernel/maps.py remade):
        pass                # the programs attached keep the old map and its settings; the next `up` makes it


def _meters(c) -> ctypes.Structure:
    """dp_meters (dp_abi_meters.h) for NodeConfig c: the overlay storm meters' intervals per copy
    (each network's, the host's, a peer's in a network) with a burst of OVERLAY_STORM_BURST_S, the learning meter's per
    MAC with a second's worth at once; 0: that meter off."""
    val = _S["dp_meters"]()
    burst_ns = int(model.OVERLAY_STORM_BURST_S * 1_000_000_000)
    if c.overlay_storm_rate:
        val.overlay_storm_interval_ns, val.overlay_storm_burst_ns = 1_000_000_000 // c.overlay_storm_rate, burst_ns
    if c.overlay_storm_host_rate:
        val.overlay_host_interval_ns, val.overlay_host_burst_ns = 1_000_000_000 // c.overlay_storm_host_rate, burst_ns
    peer = choices.peer_rate(c)
    if peer:
        val.overlay_peer_interval_ns, val.overlay_peer_burst_ns = 1_000_000_000 // peer, burst_ns
    if c.learn_rate:
        val.learn_interval_ns = 1_000_000_000 // c.learn_rate
        val.learn_burst_ns = val.learn_interval_ns * c.learn_rate
    return val


def set_tunnel_dev(m: NodeMaps, ifindex: int) -> None:
    """The device frames with a tunnel of their own leave by (rxgro.ensure's answer; 0: none)."""
    cur = m.dp_config.get(ctypes.c_uint32(0))
    cur.tunnel_ifindex = ifindex
    m.dp_config.put(ctypes.c_uint32(0), cur)


def repair_rx_gro(node: Node, st: NodeState, m: NodeMaps) -> list[str]:
    """The node's vxlan device made (or brought up, or given its sink) again where something
    undid it behind the node's back, or made where a plain socket held the port and has let
    it go (rxgro.freed), and the fast path pointed at it: meanwhile a frame that carries a
    tunnel of its own went to a device gone or down, lost uncounted, and receive GRO was off.
    What was done, one line (nothing: intact and not freed). Run by sweep.py (every `up`, the
    agent's start) and by the agent's housekeeping tick. Where it cannot be made (a socket
    holds the port) the node goes without, as `up` itself would: st.rx_gro says why, and the
    line says it was not made."""
    if rxgro.freed(node, st):
        why = f"UDP port {st.config.port} is free again"
    elif rxgro.intact(node, st, m):
        return []
    else:
        why = "undone behind the node's back"
    fd = loader.open_prog(node.pin_dir, "gro_sink")
    try:
        set_tunnel_dev(m, rxgro.ensure(node, st, fd))
    finally:
        os.close(fd)
    return [f"{rxgro.IFNAME}: {why}; " +
            ("made" if st.rx_gro == rxgro.ON else f"not made, receive GRO {st.rx_gro}")]


def set_monitor(m: NodeMaps, flags: int, sample: int, interval_ns: int) -> None:
    """Events on (flags: DP_CFG_MON_* bits) or off (0): node/monitor.py's switch."""
    cur = m.dp_config.get(ctypes.c_uint32(0))
    if cur is None:
        raise NotFound("the fast path has no configuration: is the node up?")
    cur.flags = (cur.flags & ~_MON) | (flags & _MON)
    cur.mon_sample, cur.mon_interval_ns = sample, interval_ns
    m.dp_config.put(ctypes.c_uint32(0), cur)


def config_back(node: Node, tried: NodeState, had_xdp: bool) -> None:
    """A re-run of `up` that failed part-way (an attach, dpgro0): the fast path back as the saved
    state has it, which status shows and the next `up` starts from. dp_config and dp_meters (the
    new settings, written first, stayed in force unsaved: a peer check or storm control other
    than what status said); the guard rule (a new port's removed the old port's; a run that
    turned it on added it); the XDP guard the run attached (had_xdp: the uplink had an XDP
    program before, which is left alone); dpgro0 on the saved port, or none. Each step on its
    own: one that fails is said and the others are still made."""
    try:
        saved = state.load(node.name)
    except DataplaneError as e:
        notice(f"the fast path may keep this up's settings ({e}): run `dataplane up` again")
        return
    if saved is None:
        return
    saved.uplink = tried.uplink              # the interface the run found (and attached to)
    c, t = saved.config, tried.config

    def guard():
        if t.port != c.port:
            vxlanguard.remove(node.netns, t.underlay, t.port)
        if c.vxlan_guard:
            vxlanguard.at_up(node.netns, c.underlay, c.port)
        else:
            vxlanguard.remove(node.netns, c.underlay, c.port)

    def xdp():
        if t.xdp_guard and not c.xdp_guard and not had_xdp:
            netlink.xdp_detach(node.netns, tried.uplink.ifindex)

    def fast_path():
        with node.maps() as m:
            write_config(m, saved)
            if c.rx_gro:
                repair_rx_gro(node, saved, m)       # nothing when dpgro0 is as the saved state had it
            else:
                rxgro.remove(node)
                set_tunnel_dev(m, 0)
    for what, step in (("the VXLAN guard rule", guard), ("the XDP guard", xdp), ("the configuration", fast_path)):
        try:
            step()
        except DataplaneError as e:
            notice(f"{what} may be as this up left it ({e}): run `dataplane up` again")
