"""A parted peer's grace (node/networks.py) on the boot clock, and one an older version wrote
in wall time taken over as the time it had left, neither cut short nor kept for good."""

import time

from dataplane.node import networks


def test_a_grace_on_the_boot_clock_is_kept_as_it_is():
    now = networks.boot_s()
    until = now + networks.PARTED_GRACE_S
    assert networks.grace_ends(until, now) == until
    assert networks.grace_ends(now - 1, now) == now - 1, "over"


def test_an_older_versions_wall_time_grace_keeps_what_it_had_left():
    now = networks.boot_s()
    left = networks.grace_ends(time.time() + 30, now) - now
    assert 29 < left <= 30
    assert networks.grace_ends(time.time() - 5, now) < now, "an older grace that is over is over"
