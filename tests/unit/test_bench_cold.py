"""bench.cold's and bench.cold_lab's tables and arguments, without BPF or a lab."""

import argparse

import pytest

from bench import cold, cold_lab

MACHINE = {"kernel": "6.18", "cpus": 2, "cpu_model": "AMD EPYC", "date": "2026-12-06 08:00:00 UTC"}


def test_the_cold_table_has_a_row_per_path_and_program_and_a_dash_where_a_case_is_not_run():
    med = {"encap, owned MAC": {"ours": {"cold": 5618.0, "TLB only": 741.0, "after another frame": 1633.0,
                                         "warm": 321.0},
                                "lean": {"cold": 2343.0, "TLB only": 310.0, "warm": 241.0}}}
    md = cold.table({"machine": MACHINE, "args": {"rounds": 300}, "median": med})
    assert "`.venv/bin/python -m bench.cold --rounds 300`" in md
    assert "| path | program | cold | TLB only | after another frame | warm |" in md
    assert "| encap, owned MAC | ours | 5,618 | 741 | 1,633 | 321 |" in md
    assert "| encap, owned MAC | lean | 2,343 | 310 | - | 241 |" in md


def test_the_warming_frame_is_another_mac_and_address_than_any_measured_frame_uses():
    # "after another frame" means something only if the warming frame takes other per-key entries
    from tests.bpf import conftest as c
    assert set(cold.PATHS) <= set(cold.progcost.PATHS)
    assert cold.OTHER_MAC not in (c.EP_MAC, c.EP2_MAC, c.REMOTE_MAC, cold.progcost.LEARNED_MAC)
    assert cold.OTHER_IP not in (c.EP_IP, c.EP2_IP, c.REMOTE_IP, cold.progcost.LEARNED_IP)


def test_the_cold_lab_table_names_its_variants_in_the_command():
    med = [{"rate": 20, "program": "ours", "from_endpoint": 9452.4, "from_overlay": 6288.0, "rtt_us": 88.2},
           {"rate": 20, "program": "lean", "from_endpoint": 4384.0, "from_overlay": 967.0, "rtt_us": 83.0}]
    md = cold_lab.table({"machine": MACHINE, "args": {"rounds": 4, "variant": ["no-copies=-DDP_NO_COPIES"]},
                         "median": med})
    assert "`.venv/bin/python -m bench.cold_lab --rounds 4 --variant no-copies=-DDP_NO_COPIES`" in md
    assert "| 20 | ours | 9,452 | 6,288 | 88 |" in md
    assert "| 20 | lean | 4,384 | 967 | 83 |" in md


@pytest.mark.parametrize("text", ["nocflags", "=-DDP_X", "lean=-DDP_X", "ours=", "x=-O0", "x=-DDP_A -fno-x"])
def test_a_variant_must_be_a_new_name_and_dp_flags_only(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cold_lab.variant(text)


def test_a_variant_splits_into_its_name_and_flags():
    assert cold_lab.variant("no-copies=-DDP_NO_COPIES -DDP_NO_MONITOR") == \
        ("no-copies", "-DDP_NO_COPIES -DDP_NO_MONITOR")
