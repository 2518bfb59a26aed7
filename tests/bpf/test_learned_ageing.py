"""The control plane's passes over dp_learned (node/fdb.py): ageing, at every
housekeeping tick, and forgetting the VTEPs of hosts that left. Real maps in the
kernel, filled past one batch read (4,096 entries) and across VNIs; the frames'
side of a deleted entry is tests/bpf/test_learned_copies.py's."""

import ctypes

import pytest

from dataplane.kernel import bpfsys, maps as kmaps
from dataplane.node import fdb
from tests.bpf.conftest import OTHER_PEER_IP, PEER_IP, VNI, be32

NOW = 10**13               # a clock well past the age: CI may have booted minutes ago
AGE = 300 * 10**9
N = 10_000


def mac(i: int) -> str:
    return "02:42:" + ":".join(f"{b:02x}" for b in i.to_bytes(4, "big"))


def fill(hx, seen, vtep):
    """N learned entries in two VNIs; entry i last seen at seen(i), behind vtep(i)."""
    S = hx.S
    keys = (S["dp_mac_key"] * N)(*(hx.mac_key(VNI + i % 2, mac(i)) for i in range(N)))
    vals = (S["dp_fdb_entry"] * N)(*(S["dp_fdb_entry"](vtep=be32(vtep(i)), last_seen_ns=seen(i)) for i in range(N)))
    for off in range(0, N, 4096):
        n = min(4096, N - off)
        bpfsys.update_batch(hx.maps.dp_learned.fd, (S["dp_mac_key"] * n).from_buffer(keys, off * ctypes.sizeof(keys[0])),
                            (S["dp_fdb_entry"] * n).from_buffer(vals, off * ctypes.sizeof(vals[0])), n)
    assert hx.maps.dp_learned.count() == N


def left(hx) -> set[tuple[int, str]]:
    return {(k.vni, bytes(k.mac).hex(":")) for k, _ in hx.maps.dp_learned.items()}


def test_ageing_removes_exactly_the_entries_past_their_age(hx):
    # Every third entry is past the age; one a tick ahead of the clock (the fast path's coarse
    # stamp) and one exactly at the age stay, as the fast path still uses them.
    def seen(i):
        if i == 1:
            return NOW + 4_000_000
        if i == 2:
            return NOW - AGE
        return NOW - AGE - 1 if i % 3 == 0 else NOW - 10**9
    fill(hx, seen, lambda i: PEER_IP)
    assert fdb.age_learned(hx.maps, AGE, NOW) == len(range(0, N, 3))
    assert left(hx) == {(VNI + i % 2, mac(i)) for i in range(N) if i % 3}
    assert fdb.age_learned(hx.maps, AGE, NOW) == 0


def test_a_full_pass_deletes_in_batches_and_retires_the_copies_once(hx, monkeypatch):
    """Before, each aged entry was a delete call of its own and a new generation of its own
    (160 ms for 30,000 of 60,000 entries, in the main loop, every tick): now batch calls and one
    generation. Nothing aged: no generation at all, so the fast path's copies stay."""
    fill(hx, lambda i: NOW - AGE - 1 if i % 2 else NOW, lambda i: PEER_IP)
    singles, generations = [], []
    real_delete, real_gen = bpfsys.delete, kmaps.new_generation
    monkeypatch.setattr(bpfsys, "delete", lambda fd, key: singles.append(key) or real_delete(fd, key))
    monkeypatch.setattr(kmaps, "new_generation", lambda fd, name: generations.append(name) or real_gen(fd, name))
    assert fdb.age_learned(hx.maps, AGE, NOW) == N // 2
    assert singles == [] and generations == ["dp_local_gen"]
    generations.clear()
    assert fdb.age_learned(hx.maps, AGE, NOW) == 0
    assert generations == []


def test_forgetting_vteps_counts_and_removes_only_theirs(hx):
    vteps = [PEER_IP, OTHER_PEER_IP, "198.18.0.9"]
    fill(hx, lambda i: NOW, lambda i: vteps[i % 3])
    counts = fdb.forget_learned_vteps(hx.maps, {PEER_IP, "198.18.0.9", "198.18.0.77"})
    assert counts == {PEER_IP: len(range(0, N, 3)), "198.18.0.9": len(range(2, N, 3))}
    assert left(hx) == {(VNI + i % 2, mac(i)) for i in range(1, N, 3)}
    assert fdb.forget_learned_vteps(hx.maps, {PEER_IP}) == {}


@pytest.mark.parametrize("n", [0, 1])
def test_small_maps(hx, n):
    if n:
        hx.maps.dp_learned.put(hx.mac_key(VNI, mac(7)), hx.S["dp_fdb_entry"](vtep=be32(PEER_IP), last_seen_ns=1))
    assert fdb.age_learned(hx.maps, AGE, NOW) == n
    assert fdb.forget_learned_vteps(hx.maps, {PEER_IP}) == {}
    assert left(hx) == set()


def test_a_batch_delete_goes_on_past_keys_already_gone(hx, monkeypatch):
    """The kernel stops a batch at the first key already gone (an LRU map evicts exactly the old
    entries ageing deletes): the rest used to be deleted one call at a time."""
    keys = [hx.mac_key(VNI, mac(i)) for i in range(12)]
    for k in keys:
        hx.maps.dp_learned.put(k, hx.S["dp_fdb_entry"](vtep=be32(PEER_IP), last_seen_ns=1))
    for i in (0, 5, 6, 11):
        bpfsys.delete(hx.maps.dp_learned.fd, keys[i])
    singles = []
    real = bpfsys.delete
    monkeypatch.setattr(bpfsys, "delete", lambda fd, key: singles.append(key) or real(fd, key))
    arr = (hx.S["dp_mac_key"] * len(keys))(*keys)
    assert bpfsys.delete_batch(hx.maps.dp_learned.fd, arr, len(keys)) == 8
    assert hx.maps.dp_learned.count() == 0 and singles == []
