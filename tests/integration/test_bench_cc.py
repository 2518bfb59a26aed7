"""bench.run --cc: every sandbox's default congestion control for the run, in two namespaces
this test creates, and the host's settings as they were afterwards. iperf3's -C, used
before, switched sockets from BBR after BBR's init had turned on the kernel's internal
pacing, which cubic never turns off (docs/BENCHMARKS.md, "--cc")."""

import pytest

from bench import baselines
from dataplane.kernel import netlink
from tests.conftest import require_privileges

NS = ("dpl-cc-a", "dpl-cc-b")


@pytest.fixture
def sandboxes():
    require_privileges()
    try:
        for ns in NS:
            netlink.ns_create(ns)
        yield {"mode": [{"name": ns} for ns in NS]}
    finally:
        for ns in NS:
            netlink.ns_delete(ns)


def cc(ns: str) -> str:
    return netlink.sysctl_get(ns, baselines.CC)


def test_every_sandbox_defaults_to_the_algorithm_for_the_block_and_the_host_is_restored(sandboxes):
    allowed = netlink.sysctl_get(None, baselines.ALLOWED)
    host = cc(None)
    other = "cubic" if host != "cubic" else "reno"
    assert other not in allowed.split(), f"{other} is allowed already: the test would not add it ({allowed})"
    with baselines.congestion_control(sandboxes, other):
        assert [cc(ns) for ns in NS] == [other, other]
    assert [cc(ns) for ns in NS] == [host, host]
    assert netlink.sysctl_get(None, baselines.ALLOWED) == allowed
    with pytest.raises(RuntimeError):
        with baselines.congestion_control(sandboxes, other):
            raise RuntimeError("a failed run")
    assert [cc(ns) for ns in NS] == [host, host]
    assert netlink.sysctl_get(None, baselines.ALLOWED) == allowed
