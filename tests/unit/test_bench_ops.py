"""bench.ops's table, without a lab: a row per command with the medians of both phases, the
agent's idle CPU as a percentage, and the command line that reproduces the run."""

import pytest

from bench import ops

MACHINE = {"kernel": "6.18", "cpus": 2, "cpu_model": "AMD EPYC", "date": "2026-12-06 11:00:00 UTC"}


def phase(status: list[float], cpu: float) -> dict:
    return {"status": status, "stats": [0.1, 0.3, 0.2], "endpoint ls": [0.2] * 3, "fdb ls": [0.25] * 3,
            "scrape": [0.02, 0.01, 0.03], "agent_cpu": cpu, "agent_restart": [1.5, 1.2, 1.3],
            "agent_rss_mib": 60.4 if cpu < 0.01 else 81.6}


def test_each_command_has_both_phases_medians():
    md = ops.table({"machine": MACHINE, "args": {"local": 1000, "repeats": 3},
                    "one": phase([0.3, 0.25, 0.27], 0.004), "many": phase([1.2, 1.1, 0.9], 0.031), "down_s": 17.63,
                    "adds": [0.05] * 60 + [0.04] * 50 + [0.09] * 99 + [0.2] * 2})
    assert "`.venv/bin/python -m bench.ops --local 1000 --repeats 3`" in md
    assert "| h1 | 1 endpoint per host | 1000 endpoints per host |" in md
    assert "| `dataplane status -o json`, s | 0.270 | 1.100 |" in md
    assert "| `dataplane stats -o json`, s | 0.200 | 0.200 |" in md
    assert "| Prometheus scrape of the agent, s | 0.020 | 0.020 |" in md
    assert "| agent CPU while idle, % of a CPU | 0.4 | 3.1 |" in md
    assert "| agent killed and started again, s to its first sync | 1.30 | 1.30 |" in md
    assert "| `dataplane down`, s | - | 17.6 |" in md
    assert "| agent's resident memory, MiB | 60 | 82 |" in md
    assert "| an endpoint added through the agent, ms (the first 100 adds; the last 100) | 50 | 90 |" in md


def test_a_short_run_takes_the_first_and_the_last_half_of_its_adds():
    res = {"machine": MACHINE, "args": {"local": 7, "repeats": 3}, "one": phase([0.3], 0.004),
           "many": phase([1.2], 0.031), "down_s": 1.0, "adds": [0.04, 0.05, 0.04, 0.09, 0.08, 0.07]}
    assert "| an endpoint added through the agent, ms (the first 3 adds; the last 3) | 40 | 80 |" in ops.table(res)


@pytest.mark.parametrize("argv", [["--local", "1"], ["--local", "1025"], ["--repeats", "0"]])
def test_arguments_out_of_range_are_refused(argv):
    with pytest.raises(SystemExit) as e:
        ops.main(argv)
    assert e.value.code == 2
