"""The network MTU follows the underlay (issue 16, item 2): on a 9000-byte lab
underlay a registry network made by `up --vni` gets 8950, every host serves it
with 8950, sandboxes get 8950, and an 8950-byte DF ping crosses hosts whole."""

import pytest

from dataplane.agent import client
from dataplane.kernel import netlink
from dataplane.node import Node
from dataplane.registry import open_registry
from lab import topology as lab
from tests.integration.conftest import make_lab, sandbox, wait_for


@pytest.fixture(scope="module")
def info():
    yield from make_lab(2, [256], per_host=1, registry="sqlite", mtu=9000)


def test_a_jumbo_underlay_gives_jumbo_networks(info):
    reg = open_registry(lab.registry_url("sqlite"))
    try:
        assert reg.network_by_vni(256).mtu == 8950
    finally:
        reg.close()
    for h in ("dpl-h1", "dpl-h2"):
        assert Node(h).state().networks[256].mtu == 8950
    a, b = sandbox(info, "h1", 256), sandbox(info, "h2", 256)
    assert netlink.link_info(a["netns"], "eth0")["mtu"] == 8950
    r = netlink.ns_exec(a["netns"], ["ping", "-c", "2", "-i", "0.2", "-M", "do", "-s", str(8950 - 28), "-W", "1",
                                     b["ip"]], capture_output=True, text=True)
    assert " 0% packet loss" in r.stdout, r.stdout + r.stderr


def test_a_network_the_underlay_cannot_carry_is_refused_and_said(info):
    """Lower h2's uplink to 1500 (as a host with no jumbo frames) and bring it up
    again: the 8950 networks are not served there, and `agent status` says why
    (before: served with the MTU silently cut to 1450, so its sandboxes and the
    other host's disagreed). Runs last: h2 keeps no sandbox."""
    reg = open_registry(lab.registry_url("sqlite"))
    try:
        reg.network_create("wide", 300, mtu=8950)
        assert wait_for(lambda: 300 in Node("dpl-h1").state().networks)
        lab.run_checked(["ip", "-n", "dpl-h2", "link", "set", lab.UPLINK, "mtu", "1500"])
        lab.run_checked(["ip", "-n", lab.UNDERLAY_NS, "link", "set", "ul-h2", "mtu", "1500"])
        from dataplane.agent import process
        process.stop("dpl-h2")
        from dataplane.node import vtep
        vtep.down(Node("dpl-h2"))
        errors = None
        try:
            vtep.up(Node("dpl-h2"), [], underlay=lab.UPLINK, local_ip=lab.vtep_ip(2), registry=lab.registry_url("sqlite"),
                    host_name=lab.host_name(2), quiet=True)
            process.spawn("dpl-h2", "dpl-h2", lab.registry_url("sqlite"), lab.host_name(2), 10, quiet=True)
            assert wait_for(lambda: "300" in client.call("dpl-h2", "status")["vni_errors"])
            errors = client.call("dpl-h2", "status")["vni_errors"]
        finally:
            reg.network_rm("wide")
        assert "carries at most 1450" in errors["300"], errors
        gone = wait_for(lambda: "300" not in client.call("dpl-h2", "status")["vni_errors"])
        assert gone, "a network that left the registry takes its error along"
        assert 300 not in Node("dpl-h2").state().networks
        assert "carries at most 1450" in errors.get("256", ""), "VNI 256 (8950) as well"
    finally:
        reg.close()


def test_up_refuses_a_network_its_uplink_cannot_carry(info):
    """`up --vni N` for a registry network of 8950 on h2 (uplink 1500 since the test above)
    fails in one line, exit 2, and the node stays as it was."""
    from tests.integration.conftest import dp
    url = lab.registry_url("sqlite")
    reg = open_registry(url)
    try:
        reg.network_create("wide2", 301, mtu=8950)
        before = sorted(Node("dpl-h2").state().networks)
        r = dp("--netns", "dpl-h2", "up", "--vni", "301", "--registry", url, "--no-agent", check=False)
        assert r.returncode == 2 and "carries at most 1450" in r.stderr, r.stderr
        assert sorted(Node("dpl-h2").state().networks) == before
        assert reg.network_by_vni(301) is not None, "an existing network is not removed"
    finally:
        reg.network_rm("wide2")
        reg.close()
