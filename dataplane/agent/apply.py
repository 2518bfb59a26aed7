"""Make the node equal what reconcile.desired() says, VNI by VNI: a failure
on one VNI is reported for it and never stops the others."""

from __future__ import annotations

from dataplane.agent.reconcile import Desired
from dataplane.core.errors import DataplaneError
from dataplane.node import Node, networks, vtep
from dataplane.node.fdb import RemoteTable


def apply(node: Node, remote: RemoteTable, d: Desired) -> dict[int, str]:
    """Serve, unserve and write entries; returns {vni: error} for VNIs that failed."""
    failed: dict[int, str] = {}
    for vni, net in d.serve.items():
        try:
            networks.ensure_served(node, vni, net.subnet, net.mtu)
        except DataplaneError as e:
            failed[vni] = f"cannot serve: {e}"
    for vni in d.unserve:
        try:
            vtep.unserve(node, vni)
        except DataplaneError as e:
            failed[vni] = f"cannot stop serving: {e}"
    st = node.require_up(shared=True)
    for vni, ent in d.entries.items():
        if vni in failed:
            continue
        try:
            remote.apply(vni, ent.fdb, ent.neigh, own_ips(st, vni))
            if vni in st.networks and vni not in d.unserve and st.registry_peers.get(vni, []) != ent.flood:
                networks.set_registry_peers(node, vni, ent.flood)
        except DataplaneError as e:
            failed[vni] = str(e)
    return failed


def apply_patches(node: Node, remote: RemoteTable, patches: dict, st) -> dict[int, str]:
    """Write single entries ({vni: reconcile.Patch}) and the flood lists they
    change, st being the node's state as read for them; {vni: error} for VNIs that failed."""
    failed: dict[int, str] = {}
    for vni, p in patches.items():
        try:
            flood = remote.patch(vni, p.fdb, p.neigh, own_ips(st, vni))
            if vni in st.networks and st.registry_peers.get(vni, []) != flood:
                networks.set_registry_peers(node, vni, flood)
        except DataplaneError as e:
            failed[vni] = str(e)
    return failed


def own_ips(st, vni: int) -> frozenset[str]:
    """The VNI's addresses whose neighbour entries are this node's own: its endpoints' and its
    gateway router's host address (a remote record's removal must not take one of those)."""
    router = st.router_ip(vni)
    return frozenset([e.ip for e in st.local_endpoints(vni)] + ([router] if router else []))
