"""Next hops toward peer VTEPs: primed when a peer appears, so the first
flooded frame already has outer MACs; the fast path refreshes them from the
FIB afterwards. The control plane's only writer of dp_nexthops."""

from __future__ import annotations

import ctypes
import logging
import time

from dataplane.core import abi, model
from dataplane.core.errors import UsageError
from dataplane.core.keys import be32
from dataplane.core.state import NodeState
from dataplane.kernel import netlink
from dataplane.kernel.maps import NodeMaps

_S = abi.load().structs
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
