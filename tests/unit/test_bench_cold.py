"""bench.cold's, bench.cold_lab's and bench.owned's tables and arguments, without BPF or a lab."""

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


def test_the_warming_frame_takes_other_entries_than_any_measured_frame():
    # "after another frame" means something only if the warming frame's per-key entries are elsewhere
    from tests.bpf import conftest as c
    assert set(cold.PATHS) <= set(cold.progcost.PATHS)
    for mac, ip in ((cold.OTHER_MAC, cold.OTHER_IP), (cold.OTHER_EP_MAC, cold.OTHER_EP_IP)):
        assert mac not in (c.EP_MAC, c.EP2_MAC, c.REMOTE_MAC, cold.progcost.LEARNED_MAC)
        assert ip not in (c.EP_IP, c.EP2_IP, c.REMOTE_IP, cold.progcost.LEARNED_IP)
    # endpoint copies are indexed by ifindex: half the map away, no shared line or page
    slots = cold.abi.load().constants["DP_MAP_LOCAL_COPIES"]
    distance = (cold.other_ifindex() - c.EP_IFINDEX) % slots
    assert min(distance, slots - distance) == slots // 2


def _turn(fe, fo, rtt):
    return {"from_endpoint": fe, "from_overlay": fo, "rtt_us": rtt}


def test_the_cold_lab_medians_leave_out_turns_without_a_figure_and_count_those_without_a_reply():
    med = cold_lab.medians({"100 ours": [_turn(1.0, 2.0, 80.0), _turn(3.0, None, None), _turn(5.0, 4.0, 90.0)],
                            "20 lean": [_turn(None, None, None)]})
    assert [(r["rate"], r["program"]) for r in med] == [(20, "lean"), (100, "ours")]
    assert med[1] == {"rate": 100, "program": "ours", "turns": 3, "no_reply": 1, "from_endpoint": 3.0,
                      "from_overlay": 3.0, "rtt_us": 85.0}
    assert med[0]["from_endpoint"] is None and med[0]["no_reply"] == 1


def test_the_cold_lab_table_reproduces_the_command_and_marks_what_is_missing():
    args = {"rounds": 4, "owned": True, "out": "cold_lab-owned",
            "variant": ["no-copies=-DDP_NO_COPIES", "two=-DDP_A -DDP_B"]}
    med = [{"rate": 20, "program": "ours", "turns": 4, "no_reply": 0, "from_endpoint": 9452.4,
            "from_overlay": 6288.0, "rtt_us": 88.2},
           {"rate": 20, "program": "lean", "turns": 4, "no_reply": 4, "from_endpoint": 4384.0,
            "from_overlay": 967.0, "rtt_us": None}]
    md = cold_lab.table({"machine": MACHINE, "args": args, "median": med})
    assert ("`.venv/bin/python -m bench.cold_lab --rounds 4 --owned --variant no-copies=-DDP_NO_COPIES "
            "--variant 'two=-DDP_A -DDP_B' --out cold_lab-owned`") in md
    assert "| 20 | ours | 9,452 | 6,288 | 88 |" in md
    assert "| 20 | lean | 4,384 | 967 | - (4 of 4 turns without a reply) |" in md
    assert "--out" not in cold_lab.command({"rounds": 4, "variant": [], "out": "cold_lab"})


@pytest.mark.parametrize("text", ["nocflags", "=-DDP_X", "lean=-DDP_X", "ours=-DDP_X", "x=", "x= ", "x=-O0",
                                  "x=-DDP_A -fno-x", "a b=-DDP_X"])
def test_a_variant_must_be_a_new_name_and_dp_flags_only(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cold_lab.variant(text)


def test_a_variant_splits_into_its_name_and_flags():
    assert cold_lab.variant("no-copies=-DDP_NO_COPIES -DDP_NO_MONITOR") == \
        ("no-copies", "-DDP_NO_COPIES -DDP_NO_MONITOR")


def test_the_owned_table_gives_each_figure_and_the_ratio_with_its_interval():
    from bench import owned
    keys = [k for k, *_ in owned.ROWS]
    samples = {"learned": {k: [100.0, 110.0, 120.0] for k in keys}, "owned": {k: [90.0, 92.0, 94.0] for k in keys}}
    med = {m: {k: sorted(v)[1] for k, v in d.items()} for m, d in samples.items()}
    md = owned.table({"machine": MACHINE, "args": {"rounds": 3, "seconds": 3.0}, "samples": samples, "median": med})
    assert "`.venv/bin/python -m bench.owned --rounds 3 --seconds 3`" in md
    assert "| from_endpoint, ns per run | 110 | 92 | 0.84x (0.75-0.94) |" in md
    assert md.count("| ") >= len(keys) + 2
