"""The invariant of the control plane, checked from outside it: on every host
the pinned maps hold exactly what the registry says (remote FDB and neighbour
entries, flood lists, local endpoints and their MACs). Computed here from a
registry snapshot and the maps themselves, not through the agent's reconcile,
so a bug there cannot hide in both."""

from __future__ import annotations


from dataplane.core import model
from dataplane.core.keys import ip_str
from dataplane.kernel import netlink
from dataplane.node import Node
from dataplane.registry import open_registry
from dataplane.registry.records import router_id
from dataplane.registry.reserve import parse_reservation
from lab import topology as lab


def snapshot(url: str):
    def run():
        reg = open_registry(url)
        try:
            return reg.snapshot()
        finally:
            reg.close()
    return netlink.call_in_netns(lab.registry_netns(), run)


def expected(snap, me: str) -> dict:
    """What host `me`'s maps must hold, by VNI."""
    vtep = {h.name: h.vtep for h in snap.hosts.values()}
    want = {}
    for net in snap.networks.values():
        eps = [e for e in snap.endpoints.values() if e.network == net.name]
        remote = [e for e in eps if e.host != me and e.host in vtep and e.moving_to != me
                  and snap.macs.get(f"{net.name}/{e.mac}") == e.id and snap.ipam.get(f"{net.name}/{e.ip}") == e.id]
        local = [e for e in eps if e.host == me]
        want[net.vni] = {"fdb": {e.mac: vtep[e.host] for e in remote},
                         "neigh": {e.ip: e.mac for e in remote + local},
                         "flood": sorted({vtep[e.host] for e in remote}),
                         "local": {e.id: e.mac for e in local}}
    return want


def actual(ns: str) -> tuple[dict, list[str]]:
    """What ns's maps hold, per VNI, and what is wrong with the node's own entries.
    The node's state and its maps are read one after the other, so a change under
    way (an endpoint moving away: its MAC entry gone, the state not yet written)
    can show for a moment: said as a problem, which a caller waiting for none
    looks at again, not raised."""
    node = Node(ns)
    st = node.require_up()
    have, issues = {}, []
    with node.maps() as m:
        nets = {k.value: v for k, v in m.dp_networks.items()}
        flood = {}
        for k, v in m.dp_flood.items():
            if k.vni in nets and k.index < nets[k.vni].n_flood:
                flood.setdefault(k.vni, []).append(ip_str(v.value))
        fdb, neigh = {}, {}
        for k, v in m.dp_fdb.items():
            fdb.setdefault(k.vni, {})[model.mac_str(k.mac)] = ip_str(v.vtep)
        for k, v in m.dp_neigh.items():
            neigh.setdefault(k.vni, {})[ip_str(k.ip)] = model.mac_str(v.mac)
        local_macs = {(k.vni, model.mac_str(k.mac)) for k, _ in m.dp_local_macs.items()}
    for gw in st.gateways.values():       # the node's own way out (node/gateway.py), not the registry's
        if neigh.get(gw.vni, {}).pop(gw.ip, None) != gw.mac:
            issues.append(f"{ns}: gateway {gw.ip} has no neighbour entry")
        if (gw.vni, gw.mac) not in local_macs:
            issues.append(f"{ns}: gateway {gw.ip} has no local MAC entry")
    for vni in set(nets) | set(fdb) | set(neigh):
        eps = {e.name: e.mac for e in st.local_endpoints(vni)}
        if st.router_ip(vni):             # its router's host address, registered (agent/routers.py)
            eps[router_id(vni, st.host_name)] = model.mac_for_ip(st.router_ip(vni))
        have[vni] = {"fdb": fdb.get(vni, {}), "neigh": neigh.get(vni, {}), "flood": sorted(flood.get(vni, [])),
                     "local": eps}
        if not all((vni, mac) in local_macs for mac in eps.values()):
            issues.append(f"{ns}: a local MAC is missing in dp_local_macs")
    return have, issues


def registry_problems(snap) -> list[str]:
    """The registry against itself: every endpoint on an existing network holding
    its own claims, and no claim without its endpoint."""
    out = []
    for e in snap.endpoints.values():
        if e.network not in snap.networks:
            out.append(f"endpoint {e.id} outlives its network {e.network}")
        for kind, k in (("macs", f"{e.network}/{e.mac}"), ("ipam", f"{e.network}/{e.ip}")):
            if getattr(snap, kind).get(k) != e.id:
                out.append(f"endpoint {e.id}: {kind} claim {k} is {getattr(snap, kind).get(k)}")
    for kind in ("macs", "ipam"):
        for k, owner in getattr(snap, kind).items():
            if owner not in snap.endpoints and not (kind == "ipam" and parse_reservation(owner)):
                out.append(f"{kind} claim {k} held by {owner}, which does not exist")
    return out


def problems(url: str, hosts: dict[str, str]) -> list[str]:
    """hosts: registry host name -> node namespace. Every difference, one line each."""
    snap = snapshot(url)
    out = registry_problems(snap)
    for name, ns in hosts.items():
        want, (have, issues) = expected(snap, name), actual(ns)
        out += issues
        for vni in sorted(set(want) | set(have)):
            w = want.get(vni, {"fdb": {}, "neigh": {}, "flood": [], "local": {}})
            h = have.get(vni, {"fdb": {}, "neigh": {}, "flood": [], "local": {}})
            for part in ("fdb", "neigh", "flood", "local"):
                if w[part] != h[part]:
                    out.append(f"{name} VNI {vni} {part}: registry says {w[part]}, maps hold {h[part]}")
    return out
