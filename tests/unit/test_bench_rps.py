"""bench.rps writes rps_cpus as the kernel parses a CPU mask: hex in 32-bit groups, commas
between them (a mask of more than 8 hex digits without commas is refused)."""

from bench.rps import cpumask


def test_cpu_masks_are_grouped_by_32_bits():
    assert [cpumask(n) for n in (1, 2, 32, 33, 64, 65)] == \
        ["1", "3", "ffffffff", "1,ffffffff", "ffffffff,ffffffff", "1,ffffffff,ffffffff"]
