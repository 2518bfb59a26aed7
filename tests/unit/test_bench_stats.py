"""bench/run's ratio interval and table: the figures the README quotes."""

import random

import pytest

from bench import run


def test_interval_brackets_the_ratio_and_is_reproducible():
    rng = random.Random(7)
    ours = [rng.gauss(27.0, 2.5) for _ in range(27)]
    theirs = [rng.gauss(27.0, 2.5) for _ in range(27)]
    lo, hi = run.ratio_ci(ours, theirs)
    assert lo < 1.0 < hi
    assert (lo, hi) == run.ratio_ci(ours, theirs), "a fixed seed: one result file, one interval"
    assert hi - lo < 0.2


def test_interval_excludes_one_when_the_sets_differ():
    rng = random.Random(8)
    ours = [rng.gauss(25.0, 1.0) for _ in range(27)]
    theirs = [rng.gauss(28.0, 1.0) for _ in range(27)]
    lo, hi = run.ratio_ci(ours, theirs)
    assert hi < 0.95 and lo > 0.8


def test_wider_with_fewer_samples():
    rng = random.Random(9)
    pool = [rng.gauss(27.0, 3.0) for _ in range(60)]
    few = run.ratio_ci(pool[:5], pool[30:35])
    many = run.ratio_ci(pool[:30], pool[30:])
    assert few[1] - few[0] > many[1] - many[0]


def test_table_shows_each_ratio_with_its_interval():
    samples = {m: {k: [v] * 3 for k, v in vals.items()} for m, vals in {
        "routing": {k: 2.0 for k, *_ in run.METRICS},
        "vxlan": {k: 1.0 for k, *_ in run.METRICS},
        "dataplane": {k: 2.0 for k, *_ in run.METRICS}}.items()}
    med = {m: {k: v[0] for k, v in d.items()} for m, d in samples.items()}
    res = {"machine": {"kernel": "k", "cpus": 2, "cpu_model": "c", "mem_gib": 1, "date": "d"},
           "args": {"rounds": 1, "tcp_repeats": 3, "gso_max_size": 65536}, "median": med,
           "ratios": {f"vs_{m}": {k: 2.0 / med[m][k] for k in med[m]} for m in ("vxlan", "routing")},
           "ratio_ci95": {f"vs_{m}": {k: run.ratio_ci(samples["dataplane"][k], samples[m][k]) for k in med[m]}
                          for m in ("vxlan", "routing")}}
    line = next(l for l in run.table(res).splitlines() if l.startswith("| single-stream"))
    assert line.endswith("| 2.00x (2.00-2.00) | 1.00x (1.00-1.00) |")
    assert "| UDP round trip p50 with both ends on one CPU, us (lower is better) | 2.0 | 1.0 | 2.0 |" in run.table(res)


def test_a_result_from_before_a_row_renders_without_it():
    old = [k for k, *_ in run.METRICS if not k.startswith("lat1_")]
    med = {m: {k: 1.0 for k in old} for m in ("routing", "vxlan", "dataplane")}
    res = {"machine": {"kernel": "k", "cpus": 2, "cpu_model": "c", "mem_gib": 1, "date": "d"},
           "args": {"rounds": 1, "gso_max_size": 65536}, "median": med,
           "ratios": {f"vs_{m}": {k: 1.0 for k in old} for m in ("vxlan", "routing")}}
    text = run.table(res)
    assert "one CPU" not in text and text.count("\n| ") == len(old) + 1


def test_bad_counts_are_refused():
    with pytest.raises(SystemExit):
        run.main(["--tcp-repeats", "0"])


def test_modes_take_turns_run_by_run():
    calls = []
    got = run.turns(("a", "b", "c"), 3, lambda m: calls.append(m) or len(calls))
    assert calls == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert got == {"a": [1, 6, 7], "b": [2, 5, 8], "c": [3, 4, 9]}
