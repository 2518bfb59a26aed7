"""What the maps should hold, as a pure function of the registry view and
the node's own state: no I/O, no clock, so it is unit-tested on tables of
cases and serves the start-up sweep and every watch event alike.

For each VNI in scope: the static FDB ({MAC -> VTEP}) and neighbour ({IP ->
MAC}) entries of the endpoints on other live hosts, and the flood list (the
VTEPs of those hosts). Which VNIs to start serving (a registry network this
node does not serve yet) and to stop serving (gone from the registry, no
local endpoint left). Endpoints refused (their MAC or address clashes with
an endpoint already placed, or is not claimed by them in the IPAM), and
VNIs that cannot be fully served (a peer VTEP the uplink does not route),
each with a reason; one bad VNI never stops the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LocalFacts:
    """What reconcile needs of the node."""
    me: str                                   # this host's registry name
    port: int                                 # this VTEP's UDP port
    served: frozenset[int]                    # VNIs the node serves now
    local: dict[int, list[tuple[str, str, str]]]   # vni -> [(endpoint name, mac, ip)] on this node
    unroutable: frozenset[str] = frozenset()  # VTEPs not reached through the uplink
    # vni -> [(record id, mac, ip)]: its gateway router's host address here (agent/routers.py), owned
    # like the endpoints' but keeping no VNI served (the gateway goes with the VNI).
    routers: dict[int, list[tuple[str, str, str]]] = field(default_factory=dict)


@dataclass
class VniEntries:
    fdb: dict[str, str] = field(default_factory=dict)     # mac -> vtep
    neigh: dict[str, str] = field(default_factory=dict)   # ip -> mac
    flood: list[str] = field(default_factory=list)        # vteps, sorted


@dataclass
class Desired:
    entries: dict[int, VniEntries] = field(default_factory=dict)  # every VNI in scope
    serve: dict[int, object] = field(default_factory=dict)        # vni -> records.Network to start serving
    unserve: set[int] = field(default_factory=set)
    skipped: dict[str, str] = field(default_factory=dict)         # endpoint id -> why
    errors: dict[int, str] = field(default_factory=dict)          # vni -> why it is served only in part
    other_port: dict[str, int] = field(default_factory=dict)      # network name -> its port (not served)


def desired(view, facts: LocalFacts, vnis=None) -> Desired:
    """The entries for vnis (None: every VNI the registry or the node knows)."""
    out = Desired()
    by_vni = {}
    for n in view.networks.values():
        if n.port == facts.port:
            by_vni[n.vni] = n
        elif n.vni not in facts.served:
            out.other_port[n.name] = n.port
    scope = set(by_vni) | set(facts.served) if vnis is None else set(vnis)
    by_net: dict[str, list] = {}                 # one pass over the endpoints, not one per VNI
    names = {by_vni[v].name for v in scope if v in by_vni}
    for e in view.endpoints.values():
        if e.network in names:
            by_net.setdefault(e.network, []).append(e)
    vteps = {name: h.vtep for name, h in view.hosts.items() if name != facts.me and h.vtep not in facts.unroutable}
    for vni in sorted(scope):
        net = by_vni.get(vni)
        if net is None:
            out.entries[vni] = VniEntries()
            if vni in facts.served and not facts.local.get(vni):
                out.unserve.add(vni)
            continue
        if vni not in facts.served:
            out.serve[vni] = net
        out.entries[vni] = _entries(view, facts, net, out, by_net.get(net.name, ()), vteps)
    return out


def _verdict(view, facts: LocalFacts, net, e, local: dict) -> tuple[str | None, str | None]:
    """(VTEP to install e behind, None) or (None, why not; None when e is not
    remote at all). Each endpoint is judged on its own: the IPAM claims make a
    MAC and an address belong to one endpoint of a network, so no two remote
    endpoints can compete for an entry."""
    if e.network != net.name or e.host == facts.me or e.moving_to == facts.me:
        return None, None                 # ours, or becoming ours: a local endpoint, not a remote one
    h = view.hosts.get(e.host)
    if h is None:
        return None, None                 # its host is dead or gone
    clash = local.get(("mac", e.mac)) or local.get(("ip", e.ip))
    if clash:
        return None, f"MAC {e.mac} / address {e.ip} on {net.name} clashes with {clash}"
    if view.macs.get(f"{net.name}/{e.mac}") != e.id or view.ipam.get(f"{net.name}/{e.ip}") != e.id:
        if view.claims_pending:
            return None, (f"MAC {e.mac} / address {e.ip} on {net.name} is claimed by another endpoint record "
                          "too; the IPAM claims (not read yet) will say which")
        return None, f"MAC {e.mac} / address {e.ip} on {net.name} is not claimed in the IPAM"
    if h.vtep in facts.unroutable:
        return None, "unroutable"
    return h.vtep, None


def _local_owners(facts: LocalFacts, vni: int) -> dict:
    owner = {}
    for name, mac, ip in facts.local.get(vni, []) + facts.routers.get(vni, []):
        owner[("mac", mac)] = owner[("ip", ip)] = name
    return owner


def _entries(view, facts: LocalFacts, net, out: Desired, eps, vteps: dict[str, str]) -> VniEntries:
    """vteps: host name -> VTEP address, of the live hosts other than this one whose VTEP is routed."""
    local = _local_owners(facts, net.vni)
    ent = VniEntries()
    unroutable = set()
    # The common case decided inline (100,000 endpoints: 4x faster); anything else by _verdict:
    # a live, routed host other than this one, an endpoint not moving here, both claims naming
    # it, and no local endpoint holding its MAC or address.
    macs, ipam, me, pre, fdb, neigh = view.macs, view.ipam, facts.me, net.name + "/", ent.fdb, ent.neigh
    for e in eps:
        v = vteps.get(e.host)
        if v is not None and e.moving_to != me:
            mac, ip, eid = e.mac, e.ip, e.id
            if macs.get(pre + mac) == eid and ipam.get(pre + ip) == eid and \
                    not (local and (("mac", mac) in local or ("ip", ip) in local)):
                fdb[mac] = v
                neigh[ip] = mac
                continue
        vtep, why = _verdict(view, facts, net, e, local)
        if vtep is not None:
            ent.fdb[e.mac] = vtep
            ent.neigh[e.ip] = e.mac
        elif why == "unroutable":
            unroutable.add(view.hosts[e.host].vtep)
        elif why:
            out.skipped[e.id] = why
    ent.flood = sorted(set(ent.fdb.values()))
    if unroutable:
        out.errors[net.vni] = f"VTEP {', '.join(sorted(unroutable))} not reached through the uplink"
    return ent


@dataclass
class Patch:
    """Entries of some MACs and addresses of one VNI: a value to install, or None to remove."""
    fdb: dict[str, str | None] = field(default_factory=dict)
    neigh: dict[str, str | None] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    unroutable: set[str] = field(default_factory=set)
    judged: set[str] = field(default_factory=set)     # endpoint ids given a verdict (or found gone)


def patch(view, facts: LocalFacts, vni: int, keys) -> Patch:
    """What the entries of keys ({("mac", m), ("ip", i), ("ep", id)}) of a served VNI should be:
    the same verdicts as desired() gives, for the endpoints holding those claims
    only, so one endpoint's change costs the same in a VNI of 10 or 100,000."""
    out = Patch()
    net = view.network_of_vni(vni)
    if net is None or net.port != facts.port:
        return out
    local = _local_owners(facts, vni)
    for kind, value in keys:
        if kind == "ep":                  # the record itself: judged, so a refused one is reported
            out.judged.add(value)
            e = view.endpoints.get(value)
            why = _verdict(view, facts, net, e, local)[1] if e is not None else None
            if why and why != "unroutable":
                out.skipped[e.id] = why
            continue
        claims = view.macs if kind == "mac" else view.ipam
        e = view.endpoints.get(claims.get(f"{net.name}/{value}"))
        vtep, why = _verdict(view, facts, net, e, local) if e is not None else (None, None)
        if e is not None:
            out.judged.add(e.id)
        if why and why != "unroutable":
            out.skipped[e.id] = why
        elif why:
            out.unroutable.add(view.hosts[e.host].vtep)
        if kind == "mac":
            out.fdb[value] = vtep if vtep is not None and e.mac == value else None
        else:
            out.neigh[value] = e.mac if vtep is not None and e.ip == value else None
    return out
