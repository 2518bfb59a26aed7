"""bench.lean's outer template and bench.against's table, without a lab."""

import sys

from bench import against, lean
from dataplane.core import cwire


def test_outer_template_leaves_the_per_frame_fields_to_the_program():
    outer, words = lean.outer_template("02:00:00:00:00:aa", "02:00:00:00:00:bb", "198.18.0.1", "198.18.0.2", 256)
    want = cwire.encap(bytes(64), smac="02:00:00:00:00:aa", dmac="02:00:00:00:00:bb", src="198.18.0.1",
                       dst="198.18.0.2", vni=256)
    assert len(outer) == 50
    for lo, hi in ((16, 18), (24, 26), (34, 36), (38, 40)):   # IPv4 length and checksum, UDP port and length
        assert outer[lo:hi] == b"\0\0"
    assert outer[:16] + outer[18:24] + outer[26:34] + outer[36:38] + outer[40:] == \
        want[:16] + want[18:24] + want[26:34] + want[36:38] + want[40:50]
    # The program adds the length to the words and folds: that must give the reference checksum.
    tot_len = int.from_bytes(want[16:18], "big")
    s = words + int.from_bytes(tot_len.to_bytes(2, "big"), sys.byteorder)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    assert (~s & 0xFFFF).to_bytes(2, sys.byteorder) == want[24:26]


def _run(bpf, cpu):
    return {"median": {"dataplane": {"bpf_ns": bpf, "from_endpoint_ns": bpf * 0.6, "from_overlay_ns": bpf * 0.4,
                                     "cpu_ns": cpu}, "routing": {"cpu_ns": 4000.0}}}


def test_against_table_gives_each_run_and_the_ratio_of_medians():
    res = {"machine": {"kernel": "k", "cpus": 2, "cpu_model": "m", "date": "d"},
           "args": {"commit": "abc1234", "pairs": 2, "rounds": 2, "seconds": 3.0}, "head": "def5678",
           "old": [_run(1000, 5000), _run(1100, 5200)], "new": [_run(700, 4500), _run(800, 4300)]}
    md = against.table(res)
    assert "`.venv/bin/python -m bench.against abc1234 --pairs 2 --rounds 2 --seconds 3`" in md
    assert "| our programs, ns per frame | 1000, 1100 | 700, 800 | 0.71x |" in md
    assert "| busy CPU per frame, routing, ns | 4000, 4000 | 4000, 4000 | 1.00x |" in md
    res["old"][0]["median"]["dataplane"]["from_overlay_ns"] = None      # a run where it did not run
    assert "from_overlay" not in against.table(res)


def test_lean_table_in_tcp_mode_gives_the_tcp_rows_and_its_command():
    samples = {"routing": {"tcp_gbps": [10.0, 10.0], "cpu_ms_per_gbit": [100.0, 100.0]},
               "dataplane": {"tcp_gbps": [10.0, 10.0], "cpu_ms_per_gbit": [110.0, 110.0]},
               "lean": {"tcp_gbps": [11.0, 11.0], "cpu_ms_per_gbit": [100.0, 100.0]}}
    res = {"machine": {"kernel": "k", "cpus": 2, "cpu_model": "m", "date": "d"},
           "args": {"tcp": True, "rounds": 2, "seconds": 4.0, "paced_gbps": 4.0, "flows": 64},
           "samples": samples, "median": {m: {k: v[0] for k, v in d.items()} for m, d in samples.items()}}
    md = lean.table(res)
    assert "`.venv/bin/python -m bench.lean --tcp --rounds 2 --seconds 4 --paced-gbps 4`" in md
    row = ("| single-stream TCP, Gbit/s | 10.00 | 10.00 | 11.00 | 0.91x (0.91-0.91) | 1.00x (1.00-1.00) "
           "| 1.10x (1.10-1.10) |")
    assert row in md
    assert "kpps" not in md and "BPF statistics" not in md
