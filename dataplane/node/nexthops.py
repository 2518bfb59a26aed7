"""Next hops toward peer VTEPs: primed when a peer appears, so the first
flooded frame already has outer MACs; the fast path refreshes them from the
FIB afterwards. The control plane's only writer of dp_nexthops."""

from __future__ import annotations

import ctypes
import logging
import time

from dataplane.core import abi, model
from dataplane.core.errors import UsageError
from dataplane.core.keys import be32, ip_str
from dataplane.core.state import NodeState
from dataplane.kernel import netlink
from dataplane.kernel.maps import NodeMaps

_S = abi.load().structs
STATIC = int(abi.load().enums["dp_nh_flag"].DP_NH_STATIC)
log = logging.getLogger(__name__)


def routed_many(netns: str | None, st: NodeState, ips) -> dict[str, bool]:
    """For each peer: is it reached through the uplink (the only way the fast path sends)?"""
    return {ip: oif == st.uplink.ifindex for ip, oif in netlink.routes_oif(netns, ips).items()}


def prime(m: NodeMaps, st: NodeState, netns: str | None, ip: str, timeout: float = 1.0) -> None:
    """Resolve the peer's next hop now (the kernel ARPs for it)."""
    oif, via = netlink.route_oif(netns, ip)
    if oif != st.uplink.ifindex:
        raise UsageError(f"peer {ip} is not reached through {st.config.underlay}")
    mac = netlink.wait_neigh(netns, oif, via, timeout=timeout)
    if not mac:
        log.warning("%s does not answer ARP yet; resolved on first use", via)
        return
    nh = _S["dp_nexthop"](ifindex=oif, updated_ns=time.monotonic_ns())
    ctypes.memmove(nh.smac, model.mac_bytes(st.uplink.mac), 6)
    ctypes.memmove(nh.dmac, model.mac_bytes(mac), 6)
    m.dp_nexthops.put(ctypes.c_uint32(be32(ip)), nh)


IDLE_NS = 600 * 10**9        # an entry of no peer, not refreshed this long, is pruned (prune)


def known_vteps(st: NodeState) -> set[str]:
    """Every VTEP the node has as a peer now: its flood lists', static and registry peers, and
    those parted but still accepted (NodeState.parted)."""
    out = set()
    for table in (st.flooded, st.peers, st.registry_peers, st.parted):
        for vteps in table.values():
            out.update(vteps)
    return out


def prune(m: NodeMaps, st: NodeState, now_ns: int) -> int:
    """dp_nexthops' entries of VTEPs that are no peer of the node now and were not refreshed for
    IDLE_NS; how many went. The fast path adds an entry for every VTEP it sends to (peers that
    left, learned MACs' with the peer check off) and never removes one: a plain hash of
    DP_MAP_NEXTHOPS entries, which once full refused new peers' (their ARP and flooded copies
    dropped as no_nexthop; a review found it). An entry pruned is resolved again on first use.
    Static entries (DP_NH_STATIC) stay."""
    known, stale = known_vteps(st), []
    for key, nh in m.dp_nexthops.items():
        if ip_str(key.value) in known or nh.flags & STATIC or now_ns - nh.updated_ns <= IDLE_NS:
            continue
        stale.append(ctypes.c_uint32(key.value))
    if stale:
        m.dp_nexthops.delete_many(stale)
    return len(stale)
