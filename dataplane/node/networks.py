"""The VNIs a node serves: their dp_networks entries, counter slots, local
ports and flood lists. The only writer of dp_networks, dp_local_ports,
dp_flood, dp_vteps and dp_stats, and of dp_net_meters besides the fast path
(zeroed with the slot)."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import time

from dataplane.core import abi, model
from dataplane.core.errors import Conflict, NotFound, UsageError
from dataplane.core.keys import be32, ip_key, ip_str, slot_key
from dataplane.core.state import NodeState, ServedNetwork
from dataplane.kernel.maps import NodeMaps
from dataplane.node import nexthops
from dataplane.node.base import Node

_S = abi.load().structs
_C = abi.load().constants
# A VTEP that leaves a VNI's registry peers (its host's lease lapsed: an agent restart slower than
# the TTL looks the same) keeps being accepted by the peer check this long: forwarding must not
# stop because an agent is away, while a host that is really gone is refused after it.
PARTED_GRACE_S = 60.0


def boot_s() -> float:
    """Seconds since boot, suspend included: when a parted peer's grace ends. The node's state
    lives in /run and goes with a reboot, so this clock serves it; wall time stepped back by
    NTP (an early boot's clock ahead) kept a peer admitted that much longer, and stepped forward
    ended every grace at once."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def grace_ends(until: float, now: float) -> float:
    """A parted peer's grace end on the boot clock: an older version's, written in wall time
    (past any boot-clock value of a grace running now), taken over as the wall time left."""
    return until - time.time() + now if until > now + PARTED_GRACE_S else until


def flood_list(st: NodeState, vni: int) -> list[str]:
    """Static peers (--peer) first, then the VTEPs the agent learned from the registry."""
    out = list(st.peers.get(vni, []))
    out += [ip for ip in st.registry_peers.get(vni, []) if ip not in out]
    return out


def members(st: NodeState) -> dict[int, tuple[int, int]]:
    """Each served VNI's broadcast members: (VTEPs, local endpoints), counted in one pass."""
    local = collections.Counter(e.vni for e in st.endpoints.values() if e.phase == "ready")
    return {vni: (len(flood_list(st, vni)), local[vni]) for vni in st.networks}


BACKLOG_SYSCTL = "/proc/sys/net/core/netdev_max_backlog"


def backlog_limit() -> int | None:
    """Packets one CPU's input backlog holds (a host-wide sysctl), None if unreadable."""
    try:
        with open(BACKLOG_SYSCTL) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def over_limit(st: NodeState, backlog: int | None = None) -> list[str]:
    """What the fast path's broadcast cannot reach: members past DP_MAX_FLOOD / DP_MAX_LOCAL,
    and VNIs whose broadcast makes more copies than a CPU's backlog holds (backlog: the
    sysctl's value, read when not given). Never silent: `agent status` and `dataplane
    stats` show it. (The peer check still admits every VTEP: dp_vteps holds them all.)"""
    out = []
    backlog = backlog_limit() if backlog is None else backlog
    for vni, (n, k) in sorted(members(st).items()):
        if n > _C["DP_MAX_FLOOD"]:
            out.append(f"VNI {vni}: {n} VTEPs, broadcast and unknown frames reach the first {_C['DP_MAX_FLOOD']}")
        if k > _C["DP_MAX_LOCAL"]:
            out.append(f"VNI {vni}: {k} local endpoints, broadcast reaches the first {_C['DP_MAX_LOCAL']}")
        # Every copy, local or to a VTEP, is a veth transmit queued on the sending CPU's backlog
        # before any is taken off it: past the backlog's length, copies are dropped (`redirect`).
        copies = min(k, _C["DP_MAX_LOCAL"]) + min(n, _C["DP_MAX_FLOOD"])
        if backlog and copies > backlog:
            out.append(f"VNI {vni}: a broadcast makes up to {copies} copies on one CPU, more than its backlog holds "
                       f"(net.core.netdev_max_backlog = {backlog}): the rest are dropped and counted as redirect; "
                       f"raise net.core.netdev_max_backlog above {copies}")
    return out


def serve(m: NodeMaps, st: NodeState, vni: int, subnet=None, mtu: int | None = None) -> ServedNetwork:
    """Serve a VNI (new: a counter slot, zeroed), then write its entries."""
    net = st.networks.get(vni)
    if net is None:
        mtu_max = max_mtu(st)
        if mtu and mtu > mtu_max:
            raise UsageError(f"VNI {vni} has MTU {mtu}, but {st.config.underlay} (MTU {st.uplink.mtu}) carries at most "
                             f"{mtu_max} plus the {model.ENCAP_LEN}-byte encapsulation: raise the underlay's MTU "
                             "or give the network a smaller one")
        slot = free_slot(st)
        net = ServedNetwork(vni=vni, subnet=str(subnet or model.default_subnet(vni)), mtu=mtu or mtu_max, slot=slot)
        m.dp_stats.put(ctypes.c_uint32(slot), m.dp_stats.zero())  # a reused slot starts at zero
        with contextlib.suppress(NotFound):    # and so do its meters (pins of an older version have none yet)
            m.dp_net_meters.put(ctypes.c_uint32(slot), m.dp_net_meters.zero())
        forget_refusals(m, vni)
        st.networks[vni] = net
        st.peers.setdefault(vni, [])
    sync(m, st, vni)
    return net


def max_mtu(st: NodeState) -> int:
    """The largest endpoint MTU this node's uplink carries: its MTU less the encapsulation."""
    return min(st.uplink.mtu - model.ENCAP_LEN, model.MTU_MAX)


def ensure_served(node: Node, vni: int, subnet: str, mtu: int | None = None) -> ServedNetwork:
    """Serve a registry network's VNI unless this node does already (maps only:
    the programs are loaded). The subnet must agree with the one served."""
    have = node.require_up(shared=True).networks.get(vni)
    if have and have.subnet == str(subnet):
        return have              # served: no lock, and no save of an unchanged state (5 ms at 1,000 endpoints)
    with node.changing() as (st, m):
        have = st.networks.get(vni)
        if have and have.subnet != str(subnet):
            raise Conflict(f"VNI {vni} is up with subnet {have.subnet}, the registry says {subnet}")
        return have or serve(m, st, vni, subnet, mtu)


def is_served(node: Node, vni: int) -> bool:
    return vni in node.require_up().networks


def free_slot(st: NodeState) -> int:
    """The lowest dp_stats slot no network holds; 0 belongs to 'no VNI'."""
    used = {n.slot for n in st.networks.values()}
    size = st.map_sizes.get("DP_MAP_NETWORKS", _C["DP_MAP_NETWORKS"])
    slot = next((i for i in range(1, size) if i not in used), None)
    if slot is None:
        raise UsageError(f"this node already serves {size - 1} networks, the most its maps hold "
                         "(DP_MAP_NETWORKS)")
    return slot


def peer_meters(m: NodeMaps):
    """dp_peer_meters, or None on pins of an older version: no such map, or one in another layout
    (MapSpec.remade), until `up` makes it anew."""
    try:
        peers = m.dp_peer_meters
        return peers if peers.layout_is_ours() else None
    except NotFound:
        return None


def forget_refusals(m: NodeMaps, vni: int) -> None:
    """A VNI served anew starts with no peer's refusals: dp_peer_meters (an LRU keyed by VNI and
    peer that nothing else clears) brought an earlier serving's back into `stats` and the metrics
    as current ones. Nothing on pins of an older version without the map, or in another layout."""
    peers = peer_meters(m)
    if peers is None:
        return
    key_t = peers.spec.key
    ksz = ctypes.sizeof(key_t)
    peers.delete_packed(b"".join(keys[i:i + ksz] for keys, _ in peers.raw_chunks() for i in range(0, len(keys), ksz)
                                 if key_t.from_buffer_copy(keys, i).vni == vni))


def sync(m: NodeMaps, st: NodeState, vni: int) -> None:
    """Rewrite the VNI's entry, its local-port and flood slots from the state.
    Slots are written before the counts grow and removed after they shrink."""
    ports = [e.ifindex for e in st.local_endpoints(vni)][: _C["DP_MAX_LOCAL"]]
    vteps = flood_list(st, vni)      # all are peers (dp_vteps); the first DP_MAX_FLOOD get copies
    flood = vteps[: _C["DP_MAX_FLOOD"]]
    old = m.dp_networks.get(ctypes.c_uint32(vni))
    if ports:        # one batch: a slot a call was 1,000 calls per endpoint added at 1,000
        m.dp_local_ports.put_many((slot_key(vni, i), ctypes.c_uint32(ifx)) for i, ifx in enumerate(ports))
    if vteps:       # peers before flood slots; one batch, as each write retires the fast path's copies
        m.dp_vteps.put_many((ip_key(vni, ip), ctypes.c_uint32(i)) for i, ip in enumerate(vteps))
    if flood:
        m.dp_flood.put_many((slot_key(vni, i), ctypes.c_uint32(be32(ip))) for i, ip in enumerate(flood))
    net = st.networks[vni]
    m.dp_networks.put(ctypes.c_uint32(vni), _S["dp_network"](mtu=net.mtu, slot=net.slot, n_local=len(ports),
                                                             n_flood=len(flood)))
    if old is not None:
        for i in range(len(ports), old.n_local):
            m.dp_local_ports.delete(slot_key(vni, i))
        for i in range(len(flood), old.n_flood):
            m.dp_flood.delete(slot_key(vni, i))
    parted = st.parted.setdefault(vni, {})
    for ip in vteps:
        parted.pop(ip, None)
    for ip in st.flooded.get(vni, []):
        if ip in vteps:
            continue
        if st.registry and st.registry_peers.get(vni) is not None and ip not in st.peers.get(vni, []):
            parted[ip] = boot_s() + PARTED_GRACE_S       # still a peer for a while: see prune_parted
        else:
            m.dp_vteps.delete(ip_key(vni, ip))
    if not parted:
        st.parted.pop(vni, None)
    st.flooded[vni] = vteps


def forget_stray_peers(m: NodeMaps, st: NodeState) -> list[str]:
    """At start-up, after every VNI's sync: dp_vteps entries the state does not account for
    (a VNI's flood list, or a parted peer's grace), removed. set_registry_peers writes a new
    peer before it primes its next hop (up to 0.2 s) and the state after that: a crash in
    between left the peer in dp_vteps, not in st.flooded, which sync removes peers from, and
    it stayed admitted by the peer check for good (its host gone from the registry too)."""
    keep = {(vni, ip) for vni in st.networks
            for ip in list(st.flooded.get(vni, [])) + list(st.parted.get(vni, {}))}
    doomed = [k for k, _ in m.dp_vteps.items() if (k.vni, ip_str(k.ip)) not in keep]
    if doomed:
        m.dp_vteps.delete_many(doomed)
    return [f"peer {ip_str(k.ip)} of VNI {k.vni}: in dp_vteps, not in the state; removed" for k in doomed]


def prune_parted(node: Node) -> int:
    """Forget parted peers whose grace is over: their frames are refused from now on."""
    now = boot_s()
    st = node.state()
    if st is None or not any(grace_ends(u, now) <= now for parted in st.parted.values() for u in parted.values()):
        return 0                            # nothing due: no lock taken, no state written
    with node.changing() as (st, m):
        gone = 0
        for vni, parted in list(st.parted.items()):
            for ip, until in list(parted.items()):
                if grace_ends(until, now) <= now and ip not in st.flooded.get(vni, []):
                    m.dp_vteps.delete(ip_key(vni, ip))
                    del parted[ip]
                    gone += 1
            if not parted:
                del st.parted[vni]
        return gone


def drop(m: NodeMaps, st: NodeState, vni: int) -> None:
    """Stop serving a VNI whose endpoints are gone already."""
    st.peers[vni] = []
    st.registry_peers.pop(vni, None)
    sync(m, st, vni)
    for ip in st.parted.pop(vni, {}):
        m.dp_vteps.delete(ip_key(vni, ip))
    del st.peers[vni]
    st.flooded.pop(vni, None)
    del st.networks[vni]
    m.dp_networks.delete(ctypes.c_uint32(vni))  # its slot is zeroed when a network takes it next


def set_registry_peers(node: Node, vni: int, ips: list[str]) -> None:
    """The VTEPs the registry says share this VNI: the flood list's second half."""
    with node.changing() as (st, m):
        new = [ip for ip in ips if ip not in st.registry_peers.get(vni, [])]
        st.registry_peers[vni] = list(ips)
        sync(m, st, vni)
        for ip in new:
            nexthops.prime(m, st, node.netns, ip, timeout=0.2)


def vnis_of(st: NodeState, vnis) -> list[int]:
    """The VNIs named (all the node serves if none), each checked to be served."""
    if not vnis:
        return sorted(st.networks)
    out = []
    for v in vnis:
        v = model.parse_vni(v)
        if v not in st.networks:
            raise NotFound(f"VNI {v} is not up on this node")
        out.append(v)
    return out
