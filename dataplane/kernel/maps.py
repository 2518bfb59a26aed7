"""Typed access to the pinned maps of one node. Layouts come from dp_abi.h
(via abi.py); which struct each map uses is listed once, here, and
tests/bpf/test_abi.py proves it against what bcc compiled."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from dataplane.core import abi
from dataplane.kernel import bpfsys
from dataplane.core.errors import ToolchainError

_S = abi.load().structs
_C = abi.load().constants
u32 = ctypes.c_uint32


@dataclass(frozen=True)
class MapSpec:
    name: str
    kind: str
    key: type | None         # None: no key/value (ring buffer)
    value: type | None
    size_const: str | None   # the DP_MAP_* constant sizing it, or None for fixed sizes
    fixed_size: int = 0
    # What it holds is made again without loss that matters: settings `up` writes whole after every
    # load, or the fast path's own caches and meter state (dp_peer_meters' refusal counts start at 0).
    # Pinned with another layout, it is made anew.
    remade: bool = False

    def max_entries(self, overrides: dict[str, int]) -> int:
        if self.size_const is None:
            return self.fixed_size
        return overrides.get(self.size_const, _C[self.size_const])

    def layout(self, overrides: dict[str, int]) -> tuple[int, int, int, int]:
        """(map type, key size, value size, entries) as the kernel reports them."""
        return (bpfsys.MAP_TYPES[self.kind], ctypes.sizeof(self.key) if self.key else 0,
                ctypes.sizeof(self.value) if self.value else 0, self.max_entries(overrides))


SPECS = {s.name: s for s in (
    MapSpec("dp_config", "array", u32, _S["dp_config"], None, 1),
    MapSpec("dp_agent", "array", u32, _S["dp_agent"], None, 1),
    MapSpec("dp_networks", "hash", u32, _S["dp_network"], "DP_MAP_NETWORKS"),
    MapSpec("dp_endpoints", "hash", u32, _S["dp_endpoint"], "DP_MAP_ENDPOINTS"),
    MapSpec("dp_local_macs", "hash", _S["dp_mac_key"], u32, "DP_MAP_ENDPOINTS"),
    MapSpec("dp_local_ports", "hash", _S["dp_slot_key"], u32, "DP_MAP_ENDPOINTS"),
    MapSpec("dp_fdb", "hash", _S["dp_mac_key"], _S["dp_fdb_entry"], "DP_MAP_FDB"),
    MapSpec("dp_learned", "lru_hash", _S["dp_mac_key"], _S["dp_fdb_entry"], "DP_MAP_LEARNED"),
    MapSpec("dp_neigh", "hash", _S["dp_ip_key"], _S["dp_mac"], "DP_MAP_NEIGH"),
    MapSpec("dp_flood", "hash", _S["dp_slot_key"], u32, "DP_MAP_VTEPS"),
    MapSpec("dp_vteps", "hash", _S["dp_ip_key"], u32, "DP_MAP_VTEPS"),
    MapSpec("dp_nexthops", "hash", u32, _S["dp_nexthop"], "DP_MAP_NEXTHOPS"),
    MapSpec("dp_nh_cache", "percpu_array", u32, _S["dp_nexthop"], "DP_MAP_NH_CACHE", remade=True),
    MapSpec("dp_local_gen", "array", u32, ctypes.c_uint64, None, 1),
    MapSpec("dp_ep_copies", "percpu_array", u32, _S["dp_ep_copy"], "DP_MAP_LOCAL_COPIES", remade=True),
    MapSpec("dp_mac_copies", "percpu_array", u32, _S["dp_mac_copy"], "DP_MAP_LOCAL_COPIES", remade=True),
    MapSpec("dp_net_copies", "percpu_array", u32, _S["dp_net_copy"], "DP_MAP_LOCAL_COPIES", remade=True),
    MapSpec("dp_fdb_gen", "array", u32, ctypes.c_uint64, None, 1),
    MapSpec("dp_fdb_copies", "percpu_array", u32, _S["dp_fdb_copy"], "DP_MAP_LOCAL_COPIES", remade=True),
    MapSpec("dp_learn_copies", "percpu_array", u32, _S["dp_learn_copy"], "DP_MAP_LOCAL_COPIES", remade=True),
    MapSpec("dp_dst_copies", "percpu_array", u32, _S["dp_dst_copy"], "DP_MAP_LOCAL_COPIES", remade=True),
    MapSpec("dp_vtep_copies", "percpu_array", u32, _S["dp_vtep_copy"], "DP_MAP_LOCAL_COPIES", remade=True),
    MapSpec("dp_storm", "lru_hash", u32, ctypes.c_uint64, "DP_MAP_ENDPOINTS", remade=True),
    MapSpec("dp_meters", "array", u32, _S["dp_meters"], None, 1, remade=True),
    MapSpec("dp_net_meters", "array", u32, _S["dp_net_meter"], "DP_MAP_NETWORKS"),
    MapSpec("dp_peer_meters", "lru_hash", _S["dp_ip_key"], _S["dp_peer_meter"], "DP_MAP_VTEPS", remade=True),
    MapSpec("dp_tail", "prog", u32, u32, None, _C["DP_TAIL_MAX"]),
    MapSpec("dp_stats", "percpu_array", u32, _S["dp_stats"], "DP_MAP_NETWORKS"),
    MapSpec("dp_punts", "ringbuf", None, None, None, _C["DP_PUNT_RING_BYTES"]),
    MapSpec("dp_events", "ringbuf", None, None, None, _C["DP_EVENT_RING_BYTES"]),
    MapSpec("dp_mon_meter", "array", u32, ctypes.c_uint64, None, 1),
)}

# Pins of maps an earlier version had and this one does not use: removed at load. 8389aaf's overlay
# storm state, which moved into dp_net_meters.
RETIRED = ("dp_overlay_storm",)

SIZE_CONSTS = sorted({s.size_const for s in SPECS.values() if s.size_const})
# Maps the fast path reads through per-CPU copies (bpf/lib/local.h), and the map of the
# generation that the copies were made under: every write to one of them is followed by a
# new random value there, which retires those copies.
COPIED = {"dp_endpoints": "dp_local_gen", "dp_local_macs": "dp_local_gen", "dp_networks": "dp_local_gen",
          "dp_learned": "dp_local_gen", "dp_vteps": "dp_local_gen", "dp_fdb": "dp_fdb_gen"}


def check_pinned_layout(pin_dir: str, overrides: dict[str, int]) -> list[str]:
    """Refuse to reuse pinned maps whose layout differs from this version's
    (bcc would silently bind to them). The fix is `dataplane down` first. A map
    whose content is made again without loss (MapSpec.remade) is not refused:
    its name is returned, for unpin() to take away just before the load makes it
    anew. Programs still attached keep the old one until they are replaced."""
    remake = []
    for spec in SPECS.values():
        path = os.path.join(pin_dir, spec.name)
        if not os.path.exists(path):
            continue
        fd = bpfsys.obj_get(path)
        try:
            info = bpfsys.map_info(fd)
        finally:
            os.close(fd)
        want = spec.layout(overrides)
        have = (info.type, info.key_size, info.value_size, info.max_entries)
        if have != want and spec.remade:
            remake.append(spec.name)
        elif have != want:
            raise ToolchainError(
                f"pinned map {path} has type/key/value/entries {have}, this version needs {want}: "
                "run `dataplane down` before upgrading across a layout change")
    return remake


def unpin(pin_dir: str, names: list[str]) -> None:
    for name in names:
        try:
            os.unlink(os.path.join(pin_dir, name))
        except FileNotFoundError:
            pass


def new_generation(fd: int, name: str) -> None:
    """A new value in a generation map (dp_local_gen, dp_fdb_gen): never 0 (0: no copies);
    random, not a counter: two processes writing at once must not both write the same next value."""
    gen = int.from_bytes(os.urandom(8), "little") or 1
    bpfsys.update(fd, ctypes.c_uint32(0), ctypes.c_uint64(gen), bpfsys.BPF_ANY, what=name)


def new_generations(pin_dir: str) -> None:
    """Every generation map anew: at load, so copies work before the first write (a node with
    no registry never writes dp_fdb) and none made by older programs survives a reload."""
    for name in sorted(set(COPIED.values())):
        fd = bpfsys.obj_get(os.path.join(pin_dir, name))
        try:
            new_generation(fd, name)
        finally:
            os.close(fd)


class Map:
    """One pinned map, opened by path; keys and values are the ABI's ctypes."""

    def __init__(self, pin_dir: str, name: str):
        self.spec = SPECS[name]
        self.path = os.path.join(pin_dir, name)
        self.fd = bpfsys.obj_get(self.path)
        self.percpu = self.spec.kind.startswith("percpu")
        self._gen_fd = bpfsys.obj_get(os.path.join(pin_dir, COPIED[name])) if name in COPIED else -1

    def close(self) -> None:
        for fd in (self.fd, self._gen_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self._gen_fd = -1

    def _changed(self) -> None:
        """After a write to a COPIED map: a new generation (new_generation)."""
        if self._gen_fd >= 0:
            new_generation(self._gen_fd, COPIED[self.spec.name])

    def zero(self):
        """A zeroed value; for per-CPU maps, one per possible CPU."""
        if self.percpu:
            return (self.spec.value * bpfsys.possible_cpus())()
        return self.spec.value()

    def get(self, key):
        val = self.zero()
        return val if bpfsys.lookup(self.fd, key, val) else None

    def put(self, key, value, flags: int = bpfsys.BPF_ANY) -> None:
        try:
            bpfsys.update(self.fd, key, value, flags, what=self.spec.name)
        finally:
            self._changed()

    def delete(self, key) -> bool:
        """False if there was no such entry; then no copy can stand for it, and the
        generation stays (the agent deletes learned entries of MACs that mostly have none)."""
        gone = bpfsys.delete(self.fd, key)
        if gone:
            self._changed()
        return gone

    def put_many(self, pairs) -> None:
        """Write (key, value) pairs with one BPF_MAP_UPDATE_BATCH call."""
        pairs = list(pairs)
        keys = (self.spec.key * len(pairs))(*(k for k, _ in pairs))
        vals = (self.spec.value * len(pairs))(*(v for _, v in pairs))
        try:
            bpfsys.update_batch(self.fd, keys, vals, len(pairs), what=self.spec.name)
        finally:
            self._changed()

    def delete_many(self, keys) -> None:
        keys = list(keys)
        arr = (self.spec.key * len(keys))(*keys)
        try:
            bpfsys.delete_batch(self.fd, arr, len(keys), what=self.spec.name)
        finally:
            self._changed()

    def delete_packed(self, keys: bytes) -> None:
        """delete_many for keys packed back to back as bytes (raw_chunks' form): a batch
        call, and one new generation for all of them."""
        n = len(keys) // ctypes.sizeof(self.spec.key)
        if not n:
            return
        arr = (self.spec.key * n).from_buffer_copy(keys)
        try:
            bpfsys.delete_batch(self.fd, arr, n, what=self.spec.name)
        finally:
            self._changed()

    def layout_is_ours(self) -> bool:
        """Its key and value sizes are this version's: False for a map an older version pinned in
        another layout (MapSpec.remade), until the next `up` makes it anew."""
        info = bpfsys.map_info(self.fd)
        return (info.key_size, info.value_size) == (ctypes.sizeof(self.spec.key), ctypes.sizeof(self.spec.value))

    def count(self) -> int:
        """Entries in use (a hash map's; for arrays, their size)."""
        if self.spec.kind not in ("hash", "lru_hash"):
            return bpfsys.map_info(self.fd).max_entries
        return bpfsys.count(self.fd, ctypes.sizeof(self.spec.key), ctypes.sizeof(self.spec.value))

    def keys(self):
        out = []
        cur = None
        while True:
            nxt = self.spec.key()
            if not bpfsys.next_key(self.fd, cur, nxt):
                return out
            out.append(nxt)
            cur = nxt

    def raw_chunks(self):
        """(keys bytes, values bytes) of a hash map, 4096 entries at most each, one syscall each."""
        return bpfsys.dump_chunks(self.fd, ctypes.sizeof(self.spec.key), ctypes.sizeof(self.spec.value))

    def items(self):
        if self.spec.kind in ("hash", "lru_hash"):
            yield from bpfsys.dump(self.fd, self.spec.key, self.spec.value)
            return
        for k in self.keys():
            v = self.get(k)
            if v is not None:
                yield k, v


class NodeMaps:
    """All maps of one node, opened lazily."""

    def __init__(self, pin_dir: str):
        self.pin_dir = pin_dir
        self._open: dict[str, Map] = {}

    def __getattr__(self, name: str) -> Map:
        if name.startswith("_") or name not in SPECS:
            raise AttributeError(name)
        if name not in self._open:
            self._open[name] = Map(self.pin_dir, name)
        return self._open[name]

    def close(self) -> None:
        for m in self._open.values():
            m.close()
        self._open.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
