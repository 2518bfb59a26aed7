"""The ABI parser reads bpf/dp_abi.h as C lays it out (no root needed).
tests/bpf/test_abi.py checks the same layouts against what bcc compiled."""

import ctypes

import pytest

from dataplane.core import abi


def test_structs_have_c_sizes():
    s = abi.load().structs
    assert ctypes.sizeof(s["dp_mac_key"]) == 12
    assert ctypes.sizeof(s["dp_config"]) == 72
    assert s["dp_config"].storm_burst_ns.offset == 32
    assert ctypes.sizeof(s["dp_nexthop"]) == 32
    assert s["dp_config"].fdb_age_ns.offset == 16


def test_the_layouts_nodes_have_pinned_stay_and_the_parts_are_read():
    """A pinned map whose layout changes makes `up` refuse until `dataplane down`, so on an upgraded
    host the unit's `up --restore` failed until someone took the node down: new settings and state
    go into maps of their own (dp_abi_meters.h, included by dp_abi.h and read in place). dp_meters
    may grow: it is made anew (kernel/maps.py MapSpec.remade, tests/bpf/test_remade_maps.py)."""
    s = abi.load().structs
    assert ctypes.sizeof(s["dp_config"]) == 72 and ctypes.sizeof(s["dp_stats"]) == 12 * 8 + 32 * 8
    assert ctypes.sizeof(s["dp_network"]) == 16 and ctypes.sizeof(s["dp_endpoint"]) == 24
    assert ctypes.sizeof(s["dp_net_meter"]) == 24
    assert ctypes.sizeof(s["dp_meters"]) == 64


def test_drop_names_follow_the_enum():
    names = abi.drop_names()
    assert names[0] == "unspec" and "unknown_vni" in names and "spoof_ip" in names
    assert len(names) == abi.load().constants["DP_DROP_MAX"]
    assert len(names) <= abi.load().constants["DP_DROP_SLOTS"]


def test_parser_refuses_what_it_does_not_understand():
    with pytest.raises(abi.AbiError):
        abi.Abi("struct x {\n\tint *p;\n};\n")
    with pytest.raises(abi.AbiError):
        abi.Abi("enum e {\n\tA = foo(1),\n};\n")


def test_parser_handles_enum_references_in_array_sizes():
    a = abi.Abi("enum e {\n\tX_A = 0,\n\tX_B,\n\tX_MAX,\n};\nstruct s {\n\t__u64 v[X_MAX];\n};\n")
    assert ctypes.sizeof(a.structs["s"]) == 16
