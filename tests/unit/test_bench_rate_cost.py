"""bench.rate_cost's table, without a lab: one row per offered rate, the programs' ns per run
and each mode's round trip, '-' where a mode has none (the generator's row)."""

from bench import rate_cost

MACHINE = {"kernel": "6.18", "cpus": 2, "cpu_model": "AMD EPYC", "date": "2026-12-06 06:39:22 UTC"}


def test_the_table_has_a_row_per_rate_and_a_round_trip_per_mode():
    med = [{"offered": rate_cost.label(1.0), "from_endpoint": 10477.2, "from_overlay": 7397.0,
            "rtt_routing": 74.4, "rtt_vxlan": 96.0, "rtt_dataplane": 97.1},
           {"offered": rate_cost.label(None), "from_endpoint": 494.0, "from_overlay": 191.4,
            "rtt_routing": None, "rtt_vxlan": None, "rtt_dataplane": None}]
    md = rate_cost.table({"machine": MACHINE, "args": {"rounds": 3}, "median": med})
    assert "round trip avg, us: routing, vxlan, dataplane" in md
    assert "| 1 echo requests/s | 10477 | 7397 | 74, 96, 97 |" in md
    assert "| 64-byte generator, full rate | 494 | 191 | -, -, - |" in md
    assert "--rounds 3" in md


def test_the_table_says_when_the_macs_were_static():
    md = rate_cost.table({"machine": MACHINE, "args": {"rounds": 3, "owned": True}, "median": []})
    assert "`.venv/bin/python -m bench.rate_cost --rounds 3 --owned`" in md
    assert "--owned" not in rate_cost.table({"machine": MACHINE, "args": {"rounds": 3}, "median": []})
