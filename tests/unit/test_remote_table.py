"""RemoteTable's flood lists (node/fdb.py): kept as a count of entries per VTEP
and updated by each patch, they must always equal the set of VTEPs the VNI's
entries point at, whatever order of whole applies and single patches. The
maps here are dictionaries: this is the table's bookkeeping, not the kernel's
(tests/integration check the real maps against the registry)."""

from __future__ import annotations

import ctypes
import random

from dataplane.node.fdb import RemoteTable


class FakeMap:
    def __init__(self):
        self.d = {}

    def put_many(self, pairs):
        for k, v in pairs:
            self.d[bytes(k)] = bytes(v)

    def delete_many(self, keys):
        for k in keys:
            self.d.pop(bytes(k), None)

    def delete(self, key):
        return self.d.pop(bytes(key), None) is not None

    def get(self, key):
        return self.d.get(bytes(key))

    def raw_chunks(self, chunk: int = 5):
        """As Map.raw_chunks, in chunks of 5 (mixing VNIs within a chunk and across chunks)."""
        items = list(self.d.items())
        for i in range(0, len(items), chunk):
            part = items[i:i + chunk]
            yield b"".join(k for k, _ in part), b"".join(v for _, v in part)


class FakeMaps:
    def __init__(self):
        self.dp_fdb, self.dp_neigh, self.dp_learned = FakeMap(), FakeMap(), FakeMap()


def flood(t: RemoteTable, vni: int) -> list[str]:
    return sorted(set(t.fdb.get(vni, {}).values()))


def test_patched_flood_lists_always_equal_the_entries_vteps():
    rnd = random.Random(7)
    vteps = [f"198.18.0.{i}" for i in range(1, 6)]
    macs = [f"02:00:00:00:00:{i:02x}" for i in range(1, 40)]
    maps = FakeMaps()
    t = RemoteTable(maps, set())
    for step in range(600):
        vni = rnd.choice((256, 257))
        if step % 50 == 0:          # a whole apply (a snapshot, a host change) now and then
            fdb = {m: rnd.choice(vteps) for m in rnd.sample(macs, rnd.randrange(len(macs)))}
            t.apply(vni, fdb, {f"10.0.0.{macs.index(m) + 2}": m for m in fdb})
            continue
        fdb = {m: (rnd.choice(vteps) if rnd.random() < 0.6 else None) for m in rnd.sample(macs, rnd.randrange(1, 4))}
        got = t.patch(vni, fdb, {f"10.0.0.{macs.index(m) + 2}": (m if v else None) for m, v in fdb.items()})
        assert got == flood(t, vni), f"step {step}"
    # and a table read back from the same maps agrees with the one that wrote them
    again = RemoteTable(maps, set())
    assert again.fdb == {v: e for v, e in t.fdb.items() if e}
    assert again.neigh == {v: e for v, e in t.neigh.items() if e}


def test_the_read_back_leaves_this_nodes_own_neighbour_entries_out():
    """local_neigh: the {VNI, IP} of this node's endpoints, whose entries are the node's."""
    maps = FakeMaps()
    RemoteTable(maps, set()).apply(256, {"02:00:00:00:00:01": "198.18.0.3"}, {"10.0.0.1": "02:00:00:00:00:01"})
    RemoteTable(maps, set()).apply(257, {}, {"10.0.1.1": "02:00:00:00:01:01", "10.0.1.2": "02:00:00:00:01:02"})
    t = RemoteTable(maps, {(256, "10.0.0.1"), (257, "10.0.1.2"), (258, "10.0.2.1")})
    assert t.fdb == {256: {"02:00:00:00:00:01": "198.18.0.3"}}
    assert t.neigh == {257: {"10.0.1.1": "02:00:00:00:01:01"}}


def test_a_patch_right_after_an_apply_counts_from_the_entries_before_it():
    """The count is built lazily: it must be built from the entries as they were
    before the patch, or a removal is counted twice (h3 fell out of the flood
    list while it still had an endpoint: found by test_etcd_cluster)."""
    t = RemoteTable(FakeMaps(), set())
    t.apply(256, {"02:00:00:00:00:01": "198.18.0.3", "02:00:00:00:00:02": "198.18.0.3",
                  "02:00:00:00:00:03": "198.18.0.2"}, {})
    assert t.patch(256, {"02:00:00:00:00:01": None}, {}) == ["198.18.0.2", "198.18.0.3"]


def test_ctypes_layout_is_what_the_table_decodes():
    from dataplane.core import abi
    s = abi.load().structs
    assert ctypes.sizeof(s["dp_mac_key"]) == 12 and ctypes.sizeof(s["dp_ip_key"]) == 8
