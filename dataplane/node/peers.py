"""Static peers (`--peer`, `dataplane peer add`): remote VTEPs a VNI floods to
when no registry tells us who shares it."""

from __future__ import annotations

from dataplane.core import abi, model
from dataplane.core.errors import Conflict, NotFound, UsageError
from dataplane.core.state import NodeState
from dataplane.kernel.maps import NodeMaps
from dataplane.node import networks, nexthops
from dataplane.node.base import Node, require_root


def add_to(m: NodeMaps, st: NodeState, vni: int, ip: str) -> bool:
    lst = st.peers.setdefault(vni, [])
    if ip in lst:
        return False
    if len(lst) >= abi.load().constants["DP_MAX_FLOOD"]:
        raise Conflict(f"VNI {vni} has the maximum of {len(lst)} peers")
    lst.append(ip)
    networks.sync(m, st, vni)
    return True


def add(node: Node, ip: str, vnis=None) -> list[int]:
    require_root()
    ip = str(model.parse_ipv4(ip, "peer address"))
    with node.changing() as (st, m):
        if ip == st.config.local_ip:
            raise UsageError(f"peer {ip} is this node's own address")
        added = [v for v in networks.vnis_of(st, vnis) if add_to(m, st, v, ip)]
        nexthops.prime(m, st, node.netns, ip)
        return added


def remove(node: Node, ip: str, vnis=None) -> list[int]:
    require_root()
    ip = str(model.parse_ipv4(ip, "peer address"))
    with node.changing() as (st, m):
        removed = []
        for v in networks.vnis_of(st, vnis):
            lst = st.peers.get(v, [])
            if ip in lst:
                lst.remove(ip)
                networks.sync(m, st, v)  # also drops its dp_vteps entry
                removed.append(v)
        if not removed:
            raise NotFound(f"peer {ip} is not configured")
        return removed


def listing(st: NodeState) -> list[dict]:
    """Static peers and, with a registry, the agent's, one row per VNI and VTEP."""
    rows = [{"vni": v, "peer": ip, "source": "static"} for v, lst in st.peers.items() for ip in lst]
    rows += [{"vni": v, "peer": ip, "source": "registry"} for v, lst in st.registry_peers.items() for ip in lst]
    return sorted(rows, key=lambda r: (r["vni"], r["peer"], r["source"]))
