"""MAC and neighbour entries: the only writer of dp_local_macs, dp_fdb,
dp_learned and dp_neigh.

This node's endpoints: {VNI, MAC} -> veth and {VNI, IP} -> MAC (ARP answered
in the fast path). Endpoints on other hosts, installed by the agent: static
FDB entries ({VNI, MAC} -> VTEP) and neighbour entries, kept as a diff
against what is in the maps, so a resync or an agent restart rewrites nothing
that is already right. And the ageing of what traffic taught (dp_learned)."""

from __future__ import annotations

import collections
import ctypes
import socket

from dataplane.core import abi, model
from dataplane.core.keys import be32, ip_key, ip_str, mac_key, mac_value
from dataplane.core.state import LocalEndpoint, NodeState
from dataplane.kernel.bpfsys import MapFull
from dataplane.kernel.maps import NodeMaps
from dataplane.node import readback

_S = abi.load().structs
_FDB_STATIC = int(abi.load().enums["dp_fdb_flag"].DP_FDB_STATIC)
_LOCAL_ROUTER = abi.load().constants["DP_LOCAL_ROUTER"]
_LOCAL_ALIAS = abi.load().constants["DP_LOCAL_ALIAS"]


def static_entry(vni: int, mac: str, vtep: str):
    """dp_fdb's key and value for {vni, mac} at vtep, a static entry (never aged)."""
    return mac_key(vni, mac), _S["dp_fdb_entry"](vtep=be32(vtep), flags=_FDB_STATIC)


def local_add(m: NodeMaps, ep: LocalEndpoint) -> None:
    local_put(m, ep.vni, ep.mac, ep.ip, ep.ifindex)


def local_put(m: NodeMaps, vni: int, mac: str, ip: str, value: int) -> None:
    """A MAC and address of this node: value is the port's ifindex (| DP_LOCAL_ROUTER for a gateway's)."""
    m.dp_local_macs.put(mac_key(vni, mac), ctypes.c_uint32(value))
    # The fast path skips its MAC-conflict check for a fresh learned entry: the MAC is ours now.
    m.dp_learned.delete(mac_key(vni, mac))
    m.dp_neigh.put(ip_key(vni, ip), mac_value(mac))


def local_remove(m: NodeMaps, ep: LocalEndpoint) -> None:
    local_drop(m, ep.vni, ep.mac, ep.ip)


def local_drop(m: NodeMaps, vni: int, mac: str, ip: str) -> None:
    m.dp_local_macs.delete(mac_key(vni, mac))
    m.dp_neigh.delete(ip_key(vni, ip))


def local_present(m: NodeMaps, ep: LocalEndpoint) -> bool:
    return (m.dp_local_macs.get(mac_key(ep.vni, ep.mac)) is not None
            and m.dp_neigh.get(ip_key(ep.vni, ep.ip)) is not None)


def forget_local_strays(m: NodeMaps, st: NodeState, neigh_too: bool) -> list[str]:
    """Local MAC entries (and, without a registry, neighbour entries: then every
    one is local) that no endpoint of the state holds: what a crash left."""
    ready = {(e.vni, e.mac): e.ifindex for e in st.endpoints.values() if e.phase == "ready"}
    ready |= {(g.vni, g.mac): g.ifindex | _LOCAL_ROUTER for g in st.gateways.values()}
    ready |= {(v, model.mac_for_ip(ip)): g.ifindex | _LOCAL_ROUTER | _LOCAL_ALIAS
              for v, g in st.gateways.items() if (ip := st.router_ip(v))}
    gone = []
    for k, v in list(m.dp_local_macs.items()):
        if ready.get((k.vni, model.mac_str(k.mac))) != v.value:
            m.dp_local_macs.delete(k)
            gone.append(f"dp_local_macs[{k.vni} {model.mac_str(k.mac)}]")
    if neigh_too:
        ips = local_neigh_keys(st)
        for k, _ in list(m.dp_neigh.items()):
            if (k.vni, ip_str(k.ip)) not in ips:
                m.dp_neigh.delete(k)
                gone.append(f"dp_neigh[{k.vni} {ip_str(k.ip)}]")
    return gone


class RemoteTable:
    def __init__(self, maps: NodeMaps, local_neigh: set[tuple[int, str]]):
        """Read back what the maps hold; local_neigh are the {VNI, IP} of this
        host's own endpoints, which belong to the node, not to us."""
        self.maps = maps
        self.fdb: dict[int, dict[str, str]] = readback.fdb(maps)      # vni -> mac -> vtep
        self.neigh: dict[int, dict[str, str]] = readback.neigh(maps)  # vni -> ip -> mac
        for n, ip in local_neigh:
            have = self.neigh.get(n)
            if have is not None:
                have.pop(ip, None)
                if not have:
                    del self.neigh[n]
        self.map_full = 0
        self.last_error = ""
        self.short: set[int] = set()                 # VNIs with entries a full map refused: retried whole
        self.freed = False                           # entries removed since room_made(): room made
        self._local = 0                              # the node's own entries at the last room_made()
        self._refs: dict[int, collections.Counter] = {}   # vni -> VTEP -> entries (see _vtep_refs)

    def vnis(self) -> set[int]:
        return set(self.fdb) | set(self.neigh)

    def apply(self, vni: int, fdb: dict[str, str], neigh: dict[str, str],
              local_ips: frozenset[str] = frozenset()) -> tuple[int, int]:
        """Make the VNI's entries equal fdb/neigh. (written, removed). local_ips:
        addresses of this node's endpoints, whose neighbour entries are the node's
        (local_add): one that was remote and became local (a move here) is let go
        of, not deleted under the endpoint that now owns it."""
        self._refs.pop(vni, None)
        have_fdb = self.fdb.setdefault(vni, {})
        have_neigh = self.neigh.setdefault(vni, {})
        for ip in local_ips & have_neigh.keys():
            del have_neigh[ip]
        if have_fdb == fdb and have_neigh == neigh:      # a resync that finds all in place: one C-level compare
            self.short.discard(vni)
            if not have_fdb:
                self.fdb.pop(vni, None)
            if not have_neigh:
                self.neigh.pop(vni, None)
            return 0, 0
        put_fdb = {m: v for m, v in fdb.items() if have_fdb.get(m) != v}
        put_neigh = {i: m for i, m in neigh.items() if have_neigh.get(i) != m}
        del_fdb = [m for m in have_fdb if m not in fdb]
        del_neigh = [i for i in have_neigh if i not in neigh]
        # Removals first: they make room in a map that is near full.
        self.freed = self.freed or bool(del_fdb or del_neigh)
        if del_fdb:
            self.maps.dp_fdb.delete_many(mac_key(vni, m) for m in del_fdb)
            for m in del_fdb:
                del have_fdb[m]
                self.maps.dp_learned.delete(mac_key(vni, m))   # what traffic taught goes too
        if del_neigh:
            self.maps.dp_neigh.delete_many(ip_key(vni, i) for i in del_neigh)
            for i in del_neigh:
                del have_neigh[i]
        self._put(self.maps.dp_fdb, have_fdb, put_fdb,
                  lambda m, v: static_entry(vni, m, v))
        self._put(self.maps.dp_neigh, have_neigh, put_neigh, lambda i, m: (ip_key(vni, i), mac_value(m)))
        self._note_short(vni, have_fdb, fdb, have_neigh, neigh)
        if not have_fdb:
            self.fdb.pop(vni, None)
        if not have_neigh:
            self.neigh.pop(vni, None)
        # A static entry now overrides; drop what was learned for the same MAC.
        for m in put_fdb:
            self.maps.dp_learned.delete(mac_key(vni, m))
        return len(put_fdb) + len(put_neigh), len(del_fdb) + len(del_neigh)

    def patch(self, vni: int, fdb: dict, neigh: dict, local_ips: frozenset[str] = frozenset()) -> list[str]:
        """Set (value) or remove (None) single entries of the VNI; the flood list
        they imply (the VTEPs the VNI's entries point at), sorted."""
        have_fdb = self.fdb.setdefault(vni, {})
        have_neigh = self.neigh.setdefault(vni, {})
        refs = self._vtep_refs(vni)              # as the entries are now, before this patch
        before = {m: have_fdb.get(m) for m in fdb}
        for ip in local_ips & have_neigh.keys():
            del have_neigh[ip]                   # the node's now (see apply)
        del_fdb = [m for m, v in fdb.items() if v is None and m in have_fdb]
        del_neigh = [i for i, m in neigh.items() if m is None and i in have_neigh and i not in local_ips]
        self.freed = self.freed or bool(del_fdb or del_neigh)
        if del_fdb:
            self.maps.dp_fdb.delete_many(mac_key(vni, m) for m in del_fdb)
            for m in del_fdb:
                del have_fdb[m]
                self.maps.dp_learned.delete(mac_key(vni, m))
        if del_neigh:
            self.maps.dp_neigh.delete_many(ip_key(vni, i) for i in del_neigh)
            for i in del_neigh:
                del have_neigh[i]
        put_fdb = {m: v for m, v in fdb.items() if v is not None and have_fdb.get(m) != v}
        put_neigh = {i: m for i, m in neigh.items() if m is not None and have_neigh.get(i) != m}
        self._put(self.maps.dp_fdb, have_fdb, put_fdb,
                  lambda m, v: static_entry(vni, m, v))
        self._put(self.maps.dp_neigh, have_neigh, put_neigh, lambda i, m: (ip_key(vni, i), mac_value(m)))
        for m in put_fdb:
            self.maps.dp_learned.delete(mac_key(vni, m))
        if any(have_fdb.get(m) != v for m, v in put_fdb.items()) or \
                any(have_neigh.get(i) != m for i, m in put_neigh.items()):
            self.short.add(vni)
        for m, old in before.items():
            new = have_fdb.get(m)
            if old != new:
                if old is not None:
                    refs[old] -= 1
                    if not refs[old]:
                        del refs[old]
                if new is not None:
                    refs[new] += 1
        return sorted(refs)

    def _vtep_refs(self, vni: int) -> collections.Counter:
        """How many of the VNI's entries point at each VTEP (the flood list is its keys):
        kept up to date by patch(), so one endpoint's change does not walk 100,000
        entries; rebuilt after anything else wrote the VNI."""
        refs = self._refs.get(vni)
        if refs is None:
            refs = self._refs[vni] = collections.Counter(self.fdb.get(vni, {}).values())
        return refs

    def _note_short(self, vni: int, have_fdb: dict, fdb: dict, have_neigh: dict, neigh: dict) -> None:
        """After a whole-VNI apply (which removed every entry not wanted): did everything fit?"""
        if have_fdb != fdb or have_neigh != neigh:
            self.short.add(vni)
        else:
            self.short.discard(vni)

    def repair(self, vni: int, mac: str, vtep: str, ip: str) -> bool:
        """A punt says the fast path missed an entry we believe installed
        (deleted behind our back, or never fitted): write it again. True if
        it was missing."""
        if self.fdb.get(vni, {}).get(mac) != vtep or self.neigh.get(vni, {}).get(ip) != mac:
            return False          # not ours to install (yet): apply() decides
        missing = (self.maps.dp_fdb.get(mac_key(vni, mac)) is None
                   or self.maps.dp_neigh.get(ip_key(vni, ip)) is None)
        if missing:
            self._refs.pop(vni, None)
            del self.fdb[vni][mac]
            del self.neigh[vni][ip]
            self._put(self.maps.dp_fdb, self.fdb[vni], {mac: vtep},
                      lambda m, v: static_entry(vni, m, v))
            self._put(self.maps.dp_neigh, self.neigh[vni], {ip: mac}, lambda i, m: (ip_key(vni, i), mac_value(m)))
        return missing

    def _put(self, m, have: dict, todo: dict, encode) -> None:
        if not todo:
            return
        try:
            m.put_many(encode(k, v) for k, v in todo.items())
            have.update(todo)
        except MapFull as e:
            # Some went in, some did not: learn which, count the rest, retry later.
            self.map_full += 1
            self.last_error = str(e)
            for k, v in todo.items():
                key, _ = encode(k, v)
                if m.get(key) is not None:
                    have[k] = v

    def room_made(self, local: int) -> bool:
        """Was room made since the last call, that a short VNI may now fit in: entries of ours
        removed, or fewer of the node's own (local: its endpoints and gateways, whose neighbour
        entries endpoints.py writes and removes, whoever removed them)?"""
        made = self.freed or local < self._local
        self.freed, self._local = False, local
        return made

    def counts(self) -> dict:
        return {"fdb": sum(map(len, self.fdb.values())), "neigh": sum(map(len, self.neigh.values())),
                "map_full": self.map_full}


_LEARNED = readback.layout("dp_fdb_entry", ("vtep", "4s"), ("last_seen_ns", "Q"))


def _drop_learned(maps: NodeMaps, pick) -> int:
    """Delete the learned entries that pick(rows) names, rows being one chunk's (vtep bytes,
    last_seen_ns) in map order and its answer their indexes; how many. A batch read per 4,096
    entries, the values decoded as columns, then one batch delete and one new generation for
    all: 20-35 ms for 60,000 entries, where an entry at a time with a generation per deletion
    took 160 ms when half of them went (DESIGN, "Costs per registry event at 100,000 records").
    The fast path may refresh an entry between the read and the delete; the next frame from
    that MAC learns it again (the new generation retires the copies that would skip it)."""
    m = maps.dp_learned
    size = ctypes.sizeof(m.spec.key)
    doomed = []
    for kb, vb in m.raw_chunks():
        doomed += [kb[i * size:(i + 1) * size] for i in pick(_LEARNED.iter_unpack(vb))]
    m.delete_packed(b"".join(doomed))
    return len(doomed)


def age_learned(maps: NodeMaps, age_ns: int, now_ns: int) -> int:
    """Delete learned entries older than age_ns (the fast path already ignores them)."""
    cutoff = now_ns - age_ns
    return _drop_learned(maps, lambda rows: [i for i, (_, seen) in enumerate(rows) if seen < cutoff])


def forget_learned_vteps(maps: NodeMaps, vteps: set[str]) -> dict[str, int]:
    """Delete what was learned behind VTEPs that left (their hosts died), in one pass over
    dp_learned; {vtep: entries dropped}."""
    packed = {socket.inet_aton(v): v for v in vteps}
    counts: collections.Counter = collections.Counter()

    def pick(rows):
        out = [(i, vtep) for i, (vtep, _) in enumerate(rows) if vtep in packed]
        counts.update(packed[vtep] for _, vtep in out)
        return [i for i, _ in out]
    _drop_learned(maps, pick)
    return dict(counts)


def local_neigh_keys(st: NodeState) -> set[tuple[int, str]]:
    """The node's own neighbour entries: its endpoints' and its gateways' (node/gateway.py)."""
    return {(e.vni, e.ip) for e in st.endpoints.values() if e.phase == "ready"} | \
        {(g.vni, g.ip) for g in st.gateways.values()} | {(v, ip) for v in st.gateways if (ip := st.router_ip(v))}

