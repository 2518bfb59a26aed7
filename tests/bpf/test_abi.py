"""The Python view of every map (dataplane/maps.py, from dp_abi.h) matches
the layout bcc generated when it compiled the programs: sizes and offsets."""

import ctypes

import pytest

from dataplane.kernel.maps import SPECS


def _layout(t):
    if not hasattr(t, "_fields_"):
        return [("", 0, ctypes.sizeof(t))]
    return [(n, getattr(t, n).offset, ctypes.sizeof(ft)) for n, ft in t._fields_]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_map_layout_matches_bcc(harness, name):
    table = harness.loaded._bpf[name.encode()]
    spec = SPECS[name]
    if spec.kind == "ringbuf":  # no key or value: records are struct dp_punt, proved by test_punt.py
        assert type(table).__name__ == "RingBuf"
        return
    assert ctypes.sizeof(table.Key) == ctypes.sizeof(spec.key)
    leaf = getattr(table, "sLeaf", table.Leaf)  # per-CPU tables: sLeaf is one CPU's value
    assert ctypes.sizeof(leaf) == ctypes.sizeof(spec.value)
    if hasattr(spec.value, "_fields_"):
        assert [n for n, *_ in _layout(leaf)] == [n for n, *_ in _layout(spec.value)]
        assert _layout(leaf) == _layout(spec.value)
    if hasattr(spec.key, "_fields_"):
        assert _layout(table.Key) == _layout(spec.key)


def test_pinned_maps_have_expected_entries(harness):
    from dataplane.kernel import bpfsys
    for name, spec in SPECS.items():
        info = bpfsys.map_info(harness.maps.__getattr__(name).fd)
        assert info.max_entries == spec.max_entries({}), name
        assert info.type == bpfsys.MAP_TYPES[spec.kind], name


def test_batch_count_agrees_with_iteration(harness):
    """Map.count (BPF_MAP_LOOKUP_BATCH, what the metrics read) equals walking the keys, past one chunk."""
    import ctypes
    m = harness.maps.dp_learned
    keys = [harness.mac_key(9, f"02:00:00:00:{i >> 8:02x}:{i & 0xff:02x}") for i in range(5000)]
    try:
        m.put_many((k, harness.S["dp_fdb_entry"](vtep=1)) for k in keys)
        assert m.count() == len(m.keys()) >= 5000
        assert harness.maps.dp_config.count() == 1
    finally:
        m.delete_many(keys)
    assert ctypes.sizeof(harness.S["dp_mac_key"]) == 12
