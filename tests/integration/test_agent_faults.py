"""An agent under faults of its inputs: a VNI that cannot be served in full
never stops the others, and the agent still syncs and says which VNI failed."""

from __future__ import annotations

import time

import pytest

from dataplane.agent import client, process
from dataplane.core.errors import Conflict
from dataplane.kernel import netlink
from dataplane.node import Node, readout
from dataplane.registry import Host, open_registry
from lab import topology as lab
from lab.traffic import ping
from tests.integration.conftest import dp, make_lab, sandbox, wait_for

GHOST_VTEP = "203.0.113.5"   # TEST-NET-3: made unroutable on every lab host below, so nothing is ever sent to it


@pytest.fixture(scope="module")
def info():
    yield from make_lab(2, [256], per_host=1, registry="sqlite")


def test_a_vni_with_an_unroutable_peer_fails_alone(info):
    for i in (1, 2):
        dp_ip = ["ip", "-n", lab.host_ns(i), "route", "add", "unreachable", "203.0.113.0/24"]
        lab.run_checked(dp_ip)
    url = lab.registry_url("sqlite")
    reg = open_registry(url)
    try:
        reg.network_create("far", 257, subnet="10.1.1.0/24")
        lease = reg.kv.lease_grant(600)
        reg.host_register(Host.make("ghost", GHOST_VTEP), lease)
        reg.endpoint_create("dpl-ghost1", "far", "ghost")
        # A restart makes the agent take it all in one snapshot: it must still sync.
        process.stop("dpl-h1")
        process.spawn("dpl-h1", "dpl-h1", url, lab.host_name(1), 10, quiet=True)
        st = client.call("dpl-h1", "status")
        assert st["synced"]
        assert GHOST_VTEP in st["vni_errors"].get("257", ""), st["vni_errors"]
        assert "256" not in st["vni_errors"]
        assert 257 in Node("dpl-h1").state().networks, "the VNI is served, without the unroutable peer"
        assert not [r for r in readout.fdb(Node("dpl-h1")) if r["where"] == GHOST_VTEP]
        a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
        assert ping(a["name"], b["ip"])[0] == 3, "the other VNI forwards as before"
        # A new endpoint on VNI 256 still reaches h1 through the watch.
        dp("--netns", "dpl-h2", "endpoint", "add", "dpl-late", "--vni", "256")
        late = next(e for e in client.call("dpl-h2", "endpoint_list") if e["id"] == "dpl-late")
        assert wait_for(lambda: any(r["mac"] == late["mac"] for r in readout.fdb(Node("dpl-h1"))))
    finally:
        reg.close()


def test_a_duplicate_host_name_is_refused_and_harms_nobody(info):
    """h2's agent started under h1's name must not start, and must not adopt
    (and so remove) h1's endpoints as if they were its own."""
    url = lab.registry_url("sqlite")
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    mine = lambda: sorted(e["id"] for e in client.call("dpl-h1", "endpoint_list") if e["host"] == "h1")  # noqa: E731
    before = mine()
    assert a["name"] in before
    process.stop("dpl-h2")
    try:
        with pytest.raises(Conflict) as e:
            process.spawn("dpl-h2", "dpl-h2", url, lab.host_name(1), 10, quiet=True)
        assert lab.vtep_ip(1) in str(e.value) and lab.vtep_ip(2) in str(e.value), str(e.value)
        time.sleep(1.0)
        assert mine() == before, "h1's endpoints are still registered"
        assert netlink.ns_exists(a["name"]), "h1's sandbox is still there"
        assert ping(b["name"], a["ip"])[0] == 3, "and still reachable"
    finally:
        process.spawn("dpl-h2", "dpl-h2", url, lab.host_name(2), 10, quiet=True)
