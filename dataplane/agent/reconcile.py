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
    for vni in sorted(scope):
        net = by_vni.get(vni)
        if net is None:
            out.entries[vni] = VniEntries()
            if vni in facts.served and not facts.local.get(vni):
                out.unserve.add(vni)
            continue
        if vni not in facts.served:
            out.serve[vni] = net
        out.entries[vni] = _entries(view, facts, net, out)
    return out


def _entries(view, facts: LocalFacts, net, out: Desired) -> VniEntries:
    owner = {}
    for name, mac, ip in facts.local.get(net.vni, []):
        owner[("mac", mac)] = owner[("ip", ip)] = name
    ent = VniEntries()
    vteps, unroutable = set(), set()
    for e in sorted(view.endpoints.values(), key=lambda e: e.id):
        if e.network != net.name or e.host == facts.me or e.moving_to == facts.me:
            continue                  # ours, or becoming ours: a local endpoint, not a remote one
        h = view.hosts.get(e.host)
        if h is None:
            continue                  # its host is dead or gone
        clash = owner.get(("mac", e.mac)) or owner.get(("ip", e.ip))
        if clash:
            out.skipped[e.id] = f"MAC {e.mac} / address {e.ip} on {net.name} clashes with {clash}"
            continue
        if view.macs.get(f"{net.name}/{e.mac}") != e.id or view.ipam.get(f"{net.name}/{e.ip}") != e.id:
            out.skipped[e.id] = f"MAC {e.mac} / address {e.ip} on {net.name} is not claimed in the IPAM"
            continue
        if h.vtep in facts.unroutable:
            unroutable.add(h.vtep)
            continue
        owner[("mac", e.mac)] = owner[("ip", e.ip)] = e.id
        ent.fdb[e.mac] = h.vtep
        ent.neigh[e.ip] = e.mac
        vteps.add(h.vtep)
    ent.flood = sorted(vteps)
    if unroutable:
        out.errors[net.vni] = f"VTEP {', '.join(sorted(unroutable))} not reached through the uplink"
    return ent
